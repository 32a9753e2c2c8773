"""The smart manager's training, plan and model storage (the live cache is in tests/integration/xcache)."""

from __future__ import annotations

import pytest

from airflow_cloud_paas.services.xcache.manager import (
    CacheManagerError,
    ModelStore,
    SmartCacheManager,
    TrainedModel,
    train,
)
from airflow_cloud_paas.services.xcache.monitor import AccessRecord

MB = 1 << 20


def _reads(paths, times, size=MB):
    return [AccessRecord(t, p, size, 0, size) for t in times for p in paths]


def test_a_dataset_read_by_many_tasks_is_worth_more_than_one_read_once():
    hot = [f"/store/mc/HOT/{i}.root" for i in range(4)]
    cold = [f"/store/data/COLD/{i}.root" for i in range(4)]
    model = train(_reads(hot, [0, 10 * 3600, 20 * 3600]) + _reads(cold, [5 * 3600]), "c1")
    assert model.records == 16 and set(model.files) == set(hot + cold)
    assert model.value(hot[0]) > model.value(cold[0]) > 0
    assert model.value("/store/other/NEVER/x.root") == 0.0


def test_plan_evicts_the_least_valuable_and_prefetches_only_what_is_worth_keeping():
    model = TrainedModel("c1", 0.0, 10, {"/h": 3.0, "/w": 2.0, "/c": 1.0},
                         {"/h/1": MB, "/h/2": MB, "/w/1": MB, "/c/1": MB, "/c/2": MB})
    manager = SmartCacheManager(model, capacity_bytes=4 * MB, target_fraction=0.5, prefetch_budget_bytes=8 * MB)
    plan = manager.plan({"/h/1": MB, "/c/1": MB, "/c/2": MB, "/w/1": MB})
    assert plan.evict == ("/c/1", "/c/2")  # down to 2 MB, the cold dataset first
    assert plan.prefetch == ("/h/2",)  # worth at least the least valuable file kept (/w/1); /c/* are not
    assert len(plan.reasons) == 3
    tight = SmartCacheManager(model, capacity_bytes=2 * MB, target_fraction=1.0, prefetch_budget_bytes=8 * MB)
    assert tight.plan({"/h/1": MB, "/w/1": MB}).prefetch == ()  # no room: the next round makes it
    with pytest.raises(CacheManagerError, match="capacity_bytes > 0"):
        SmartCacheManager(model, capacity_bytes=0)


def test_models_are_saved_per_cache_and_read_back(tmp_path):
    store = ModelStore(f"sqlite:///{tmp_path}/models.db")
    try:
        with pytest.raises(CacheManagerError, match="run the training first"):
            store.load("c1")
        model = TrainedModel("c1", 123.0, 2, {"/h": 1.5}, {"/h/1": 7})
        store.save(model)
        store.save(TrainedModel("c1", 456.0, 3, {"/h": 2.5}, {"/h/1": 7}))  # replaces it
        again = store.load("c1")
        assert (again.trained_at, again.records, again.datasets) == (456.0, 3, {"/h": 2.5})
    finally:
        store.close()
