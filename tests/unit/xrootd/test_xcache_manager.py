"""The smart manager's online learning, plan and model storage (the live cache is in tests/integration/xcache)."""

from __future__ import annotations

import pytest

from airflow_cloud_paas.services.xcache.manager import (
    MODEL_TABLE,
    CacheManagerError,
    ModelStore,
    SavedModel,
    model_config,
    plan_cache,
    update_model,
)
from airflow_cloud_paas.services.xcache.model import ModelConfig, PopularityModel
from airflow_cloud_paas.services.xcache.monitor import AccessLog, AccessRecord

MB = 1 << 20
HOUR = 3600.0
T0 = 1_700_000_000.0


def _task(dataset: str, files: range, start: float, *, cache: str = "c1", hit: bool = False) -> list[AccessRecord]:
    """One analysis task reading files of a dataset in name order, a minute apart."""
    return [AccessRecord(start + 60 * i, f"{dataset}/{n:03d}.root", MB, MB if hit else 0, 0 if hit else MB,
                         attach_s=start + 60 * i - 30, access_no=1, source="cinfo", cache=cache)
            for i, n in enumerate(files)]


@pytest.fixture
def access_log(tmp_path):
    log = AccessLog(f"sqlite:///{tmp_path}/access.db")
    yield log
    log.close()


def _reads(model: PopularityModel) -> dict[str, int]:
    return {name: st.reads for name, st in model.datasets.items()}


def test_the_model_learns_online_each_record_once_whatever_order_they_were_stored_in(access_log):
    hot, cold = "/store/mc/HOT", "/store/data/COLD"
    late = _task(hot, range(0, 5), T0)
    access_log.append(_task(hot, range(0, 5), T0 + 2 * HOUR) + _task(cold, range(0, 3), T0 + HOUR))
    saved = SavedModel("c1", PopularityModel())
    assert update_model(saved, access_log, now=T0 + 3 * HOUR) == 8
    first_id = saved.last_id
    assert update_model(saved, access_log, now=T0 + 3 * HOUR) == 0  # nothing new: nothing fed twice
    access_log.append(late)  # an earlier task's records, stored after (a .cinfo read when its file closed)
    assert update_model(saved, access_log, now=T0 + 3 * HOUR) == 5 and saved.last_id > first_id
    assert saved.records == 13
    once = PopularityModel()
    once.observe_many(sorted(late + _task(hot, range(0, 5), T0 + 2 * HOUR) + _task(cold, range(0, 3), T0 + HOUR),
                             key=lambda r: r.time_s))
    assert _reads(saved.model) == _reads(once) == {hot: 10, cold: 3}
    assert saved.model.datasets[hot].tasks == 2 and saved.model.datasets[cold].tasks == 1
    # another cache's records are not this model's
    access_log.append(_task("/store/other", range(3), T0, cache="c2"))
    assert update_model(saved, access_log, now=T0 + 3 * HOUR) == 0


def test_a_first_run_reads_only_the_window(access_log):
    access_log.append(_task("/old", range(3), T0) + _task("/new", range(3), T0 + 10 * 86400))
    saved = SavedModel("c1", PopularityModel())
    assert update_model(saved, access_log, now=T0 + 11 * 86400, window_days=5) == 3
    assert set(saved.model.datasets) == {"/new"}


def test_the_managers_prefetch_reads_are_writes_not_accesses(access_log):
    dataset = "/store/mc/DS"
    access_log.append(_task(dataset, range(3), T0))
    # the manager read 003.root into the cache: the cache's .cinfo then holds an access for it
    access_log.record_prefetch(f"{dataset}/003.root", T0 + 500, T0 + 502, MB, cache="c1")
    access_log.append([AccessRecord(T0 + 540, f"{dataset}/003.root", MB, 0, MB, attach_s=T0 + 500.5, access_no=1,
                                    source="cinfo", cache="c1")])
    # a user's read of the same file later is an access
    access_log.append([AccessRecord(T0 + 900, f"{dataset}/003.root", MB, MB, 0, attach_s=T0 + 880, access_no=2,
                                    source="cinfo", cache="c1")])
    saved = SavedModel("c1", PopularityModel())
    assert update_model(saved, access_log, now=T0 + 1000) == 4
    model = saved.model
    assert model.datasets[dataset].files[f"{dataset}/003.root"][1] == 1  # one read: the user's
    assert model.bytes_written == 4 * MB  # three misses the cache wrote, and the prefetch


def test_bypassed_opens_teach_popularity_but_wrote_nothing(access_log):
    access_log.append([AccessRecord(T0 + i, f"/store/cold/{i}.root", MB, 0, 0, bytes_bypassed=MB, source="bypass",
                                    cache="c1") for i in range(3)])
    saved = SavedModel("c1", PopularityModel())
    assert update_model(saved, access_log, now=T0 + 10) == 3
    assert saved.model.datasets["/store/cold"].reads == 3
    assert saved.model.bytes_written == 0 and saved.model.bytes_missed == 3 * MB  # missed: earns write budget


def test_the_plan_evicts_the_cold_dataset_and_prefetches_what_a_running_task_reads_next():
    model = PopularityModel()
    hot, cold = "/store/mc/HOT", "/store/data/COLD"
    model.observe_many(_task(hot, range(0, 8), T0))  # a task read the whole hot dataset
    model.observe_many(_task(hot, range(0, 4), T0 + 8 * HOUR))  # a second one is half way
    model.observe_many(_task(cold, range(0, 4), T0 + 8 * HOUR + 30))  # one task on the cold one
    now = T0 + 8 * HOUR + 600
    cached = {f"{hot}/{n:03d}.root": MB for n in range(4)} | {f"{cold}/{n:03d}.root": MB for n in range(4)}
    plan = plan_cache(model, cached, capacity_bytes=8 * MB, now=now, target_fraction=0.75,
                      prefetch_budget_bytes=2 * MB)
    assert set(plan.evict) >= {f"{cold}/{n:03d}.root" for n in range(2)}
    assert not any(p.startswith(hot) for p in plan.evict)
    assert [p for p, _ in plan.prefetch] == [f"{hot}/004.root", f"{hot}/005.root"]  # next in the scan, budget 2
    assert len(plan.reasons) == len(plan.evict) + len(plan.prefetch)
    assert plan.to_dict()["prefetch"] == [f"{hot}/004.root", f"{hot}/005.root"]
    with pytest.raises(CacheManagerError, match="capacity_bytes > 0"):
        plan_cache(model, cached, capacity_bytes=0)


def test_models_are_saved_per_cache_and_read_back(tmp_path, access_log):
    store = ModelStore(f"sqlite:///{tmp_path}/models.db")
    try:
        with pytest.raises(CacheManagerError, match="run the training first"):
            store.load("c1")
        fresh = store.load_or_new("c1", ModelConfig(half_life_days=5))
        assert fresh.last_id == 0 and fresh.model.config.half_life_days == 5
        access_log.append(_task("/store/mc/DS", range(3), T0))
        update_model(fresh, access_log, now=T0 + HOUR)
        store.save(fresh)
        again = store.load("c1")
        assert (again.last_id, again.records) == (fresh.last_id, 3)
        assert again.model.state_dict() == fresh.model.state_dict()
        assert store.load_or_new("c1").model.config.half_life_days == 5  # its own settings are kept
        assert store.load_or_new("c1", ModelConfig(half_life_days=9)).model.config.half_life_days == 9
        from sqlalchemy import text

        with store._engine.begin() as connection:
            connection.execute(text(f"UPDATE {MODEL_TABLE} SET body = :b"), {"b": '{"cache": "c1", "datasets": {}}'})
        with pytest.raises(CacheManagerError, match="another version"):
            store.load("c1")
    finally:
        store.close()


def test_model_settings_are_checked():
    assert model_config(None) is None
    assert model_config({"half_life_days": 3}).half_life_days == 3
    with pytest.raises(CacheManagerError, match="unknown model setting.*nope"):
        model_config({"nope": 1})
    with pytest.raises(CacheManagerError, match="half_life_days"):
        model_config({"half_life_days": -1})
