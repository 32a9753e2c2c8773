"""The popularity model (learning, decisions, persistence) and the smart policy that uses it."""

from __future__ import annotations

import json

import pytest

from airflow_cloud_paas.services.xcache.errors import ModelStateError
from airflow_cloud_paas.services.xcache.model import DAY, ModelConfig, PopularityModel, dataset_of
from airflow_cloud_paas.services.xcache.policies import SmartPolicy
from airflow_cloud_paas.services.xcache.sim import TB, replay
from airflow_cloud_paas.services.xcache.trace import Trace

GB = 1024**3
HOT = "/store/mc/DS000001/NANOAOD"
COLD = "/store/data/DS000002/NANOAOD"


def _task(start: float, dataset: str, files: range, step: float = 60.0, size: int = GB) -> list[tuple]:
    return [(start + k * step, f"{dataset}/{i:05d}.root", size) for k, i in enumerate(files)]


def _history() -> list[tuple]:
    """Three scans of HOT a few hours apart, one of COLD: sorted by time."""
    rows = _task(0, HOT, range(10)) + _task(4 * 3600, HOT, range(10)) + _task(8 * 3600, HOT, range(10))
    rows += _task(2 * 3600, COLD, range(10))
    return sorted(rows)


def test_dataset_is_the_parent_directory():
    assert dataset_of("/store/mc/DS1/NANOAOD/00001.root") == "/store/mc/DS1/NANOAOD"
    assert dataset_of("plain.root") == ""


def test_model_counts_tasks_and_ranks_datasets():
    model = PopularityModel()
    assert model.observe_many(_history()) == 40
    hot, cold = model.datasets[HOT], model.datasets[COLD]
    assert (hot.tasks, hot.reads, len(hot.files), hot.bytes) == (3, 30, 10, 10 * GB)
    assert (cold.tasks, cold.reads) == (1, 10)
    now = 9 * 3600
    assert model.rate(HOT, now) > model.rate(COLD, now) > 0
    assert model.rate("/never/seen", now) == 0.0
    # with no new task, a dataset's rate falls as the days go by
    assert model.rate(HOT, now + 10 * DAY) < model.rate(HOT, now) / 2
    # one task is not enough to write a dataset's files
    assert model.should_admit(f"{HOT}/00003.root", GB, now)
    assert not model.should_admit(f"{COLD}/00003.root", GB, now)
    assert not model.should_admit(f"{HOT}/00003.root", GB, now, floor_value=model.rate(HOT, now))


def test_observe_many_takes_access_records():
    class Record:  # the attributes of monitor.AccessRecord
        def __init__(self, time_s, path, size, bytes_hit, bytes_missed):
            self.time_s, self.path, self.size = time_s, path, size
            self.bytes_hit, self.bytes_missed = bytes_hit, bytes_missed

    model = PopularityModel(ModelConfig(write_fraction=0.5))
    model.observe_many([Record(0.0, f"{HOT}/1.root", 100, 0, 100), Record(5.0, f"{HOT}/1.root", 100, 100, 0)])
    model.observe_many([(9.0, f"{HOT}/2.root", 50, 10, 40)])
    assert model.datasets[HOT].tasks == 2 and model.bytes_hit == 110 and model.bytes_missed == 140
    assert model.budget_bytes == pytest.approx(70.0)
    with pytest.raises(ModelStateError, match="2 values"):
        model.observe_many([(1.0, "/a/b")])


def test_scan_prefetch_proposes_the_rest_of_the_run_a_task_is_reading():
    model = PopularityModel(ModelConfig(min_scan_reads=2))
    model.observe_many(_task(0, HOT, range(20)) + _task(3 * DAY, HOT, range(20)))  # a 2-task dataset, 20 files
    now = 6 * DAY
    model.observe_many(_task(now, HOT, range(8, 12), step=10))  # a third task reads 00008-00011
    cached = {f"{HOT}/00009.root"}
    cands = model.prefetch_candidates(now + 60, cached)
    paths = [p for _, p, _ in cands]
    # the run is widened by the mean gap between the files read (1) plus one on each side
    assert paths == [f"{HOT}/{i:05d}.root" for i in (6, 7, 12, 13)]
    assert all(size == GB for _, _, size in cands)
    assert cands[0][0] == pytest.approx(model.rate(HOT, now + 60) + model.config.prefetch_boost)
    # once the task is over, nothing is proposed
    assert model.prefetch_candidates(now + 7 * 3600, cached) == []


def test_write_threshold_rises_when_writes_outrun_the_budget():
    model = PopularityModel(ModelConfig(write_fraction=0.1), capacity_bytes=100 * GB)
    assert model.write_threshold(0.0) == 0.0  # nothing written yet: no turnover to pay for
    model.record_write(10 * GB, 0.0)
    spent = model.write_threshold(1.0)
    model.observe(2.0, f"{HOT}/1.root", GB, 0, 500 * GB)  # a big miss earns budget
    assert 0 < model.write_threshold(3.0) < spent


def test_plan_evicts_the_least_valuable_and_prefetches_within_capacity():
    model = PopularityModel(capacity_bytes=11 * GB)
    model.observe_many(sorted(_task(0, HOT, range(20)) + _task(DAY / 2, COLD, range(10)) + _task(DAY, HOT, range(20))))
    now = 3 * DAY
    model.observe_many(_task(now, HOT, range(4), step=10))  # a third task on HOT reads 00000-00003
    cold = [f"{COLD}/{i:05d}.root" for i in range(6)]
    cached = dict.fromkeys(cold, GB) | {f"{HOT}/{i:05d}.root": GB for i in range(4)}
    plan = model.plan(cached, now + 60)
    # the run read so far is widened by two files: 00004 fits, 00005 displaces COLD's least recently read file
    assert plan.prefetch == [(f"{HOT}/00004.root", GB), (f"{HOT}/00005.root", GB)]
    assert plan.evict == [cold[0]] and plan.evict_bytes == GB
    assert sum(cached.values()) - plan.evict_bytes + plan.prefetch_bytes <= 11 * GB
    # a tighter target evicts the less popular dataset first, least recently read first
    tight = model.plan(cached, now + 60, target_bytes=5 * GB, prefetch_budget_bytes=0)
    assert tight.prefetch == [] and tight.evict == cold[:5]
    with pytest.raises(ModelStateError, match="target_bytes"):
        PopularityModel().plan(cached, now)


def test_state_round_trips_through_json_and_bytes():
    rows = _history()
    model = PopularityModel(ModelConfig(prior_days=2.0), capacity_bytes=50 * GB)
    model.observe_many(rows[:25])
    model.record_write(3 * GB, rows[24][0])
    state = json.loads(json.dumps(model.state_dict()))
    again = PopularityModel().load_state(state)
    blob = PopularityModel.from_bytes(model.to_bytes())
    # both copies and the original learn the rest of the log and must agree on everything
    for m in (model, again, blob):
        m.observe_many(rows[25:])
    now = 9 * 3600
    for m in (again, blob):
        assert m.config == model.config and m.capacity_bytes == model.capacity_bytes
        assert m.state_dict() == model.state_dict()
        assert m.rate(HOT, now) == model.rate(HOT, now) and m.write_threshold(now) == model.write_threshold(now)
        cached = {f"{COLD}/00001.root": GB}
        assert m.plan(cached, now) == model.plan(cached, now)
    assert len(model.to_bytes()) < len(json.dumps(model.state_dict()))


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"not a model", "bad header"),
        (b"XCPM1" + b"\x00garbage", "corrupt"),
    ],
)
def test_bad_saved_model_is_a_typed_error(data, words):
    with pytest.raises(ModelStateError, match=words):
        PopularityModel.from_bytes(data)


def test_bad_state_dict_is_a_typed_error():
    state = PopularityModel().state_dict()
    with pytest.raises(ModelStateError, match="version"):
        PopularityModel().load_state({**state, "version": 99})
    with pytest.raises(ModelStateError, match="not valid"):
        PopularityModel().load_state({**state, "datasets": {"/d": [0.0]}})
    with pytest.raises(ModelStateError, match="prior_days"):
        PopularityModel().load_state({**state, "config": {**state["config"], "prior_days": 0}})


def test_prune_forgets_idle_datasets():
    model = PopularityModel(ModelConfig(forget_after_days=10))
    model.observe_many(_history())
    model.observe(20 * DAY, f"{HOT}/00001.root", GB)
    assert model.prune(25 * DAY) == 1 and set(model.datasets) == {HOT}


# ------------------------------------------------------------------------------------ smart policy
def test_smart_is_causal(small_trace):
    """The decisions at request i do not depend on any request after i (the trace cut, or changed, after i)."""
    n = 40_000
    head = small_trace.head(n)
    full = SmartPolicy(5 * TB, log=True)
    replay(head, full)
    assert any(d[2] for d in full.decisions) and any(d[4] for d in full.decisions)  # it admits and prefetches
    for cut in (9_999, 25_000):
        short = SmartPolicy(5 * TB, log=True)
        replay(head.head(cut + 1), short)
        assert short.decisions == full.decisions[: cut + 1]
    # a different future (the requests after the cut shuffled to other files) changes nothing before it
    cut = 20_000
    other = Trace(head.times, head.paths[: cut + 1] + [p + ".x" for p in head.paths[cut + 1:]], head.sizes)
    changed = SmartPolicy(5 * TB, log=True)
    replay(other, changed)
    assert changed.decisions[: cut + 1] == full.decisions[: cut + 1]
    assert changed.decisions[cut + 1:] != full.decisions[cut + 1:]


def test_smart_beats_lru_and_writes_less_on_a_generated_trace(small_trace):
    lru = replay(small_trace, "lru", "10TB")
    smart = replay(small_trace, "smart", "10TB")
    assert smart.byte_hit_ratio > lru.byte_hit_ratio + 0.1
    assert smart.bytes_written < 0.3 * lru.bytes_written
    assert smart.replay_s < 30


def test_smart_uses_and_updates_a_given_model(small_trace):
    model = PopularityModel()
    policy = SmartPolicy(5 * TB, model)
    assert model.capacity_bytes == 5 * TB
    replay(small_trace.head(20_000), policy)
    assert model.bytes_written == policy.bytes_written > 0
    assert model.bytes_missed + model.bytes_hit == sum(small_trace.sizes[:20_000])
    assert policy.used == sum(policy.cached().values()) <= 5 * TB


def _three_scans() -> Trace:
    """A 10-file dataset scanned three times a day apart, one file every 10 minutes."""
    return Trace.from_rows(sorted(_task(0, HOT, range(10), 600.0) + _task(DAY, HOT, range(10), 600.0)
                                  + _task(2 * DAY, HOT, range(10), 600.0)))


@pytest.mark.parametrize(("speed", "hits", "prefetched"), [(None, 18, 8), (1.25e9, 17, 8), (1.0, 10, 0)])
def test_smart_prefetches_a_scan_once_its_files_arrive(speed, hits, prefetched):
    policy = SmartPolicy(TB, prefetch_bytes_per_s=speed, log=True)
    result = replay(_three_scans(), policy)
    decisions = {d[0]: d for d in policy.decisions}
    # the first scan writes nothing; the second one's first two misses are admitted (two tasks now)
    assert not any(decisions[i][2] or decisions[i][4] for i in range(10))
    assert decisions[10][2] and decisions[11][2]
    assert (result.hits, policy.bytes_prefetched) == (hits, prefetched * GB)
    if prefetched:
        # at file 2's read the run 0-1 seen so far, widened, brings 2 and 3 in; then one file ahead each time
        assert [p[-10:] for p in decisions[12][4]] == ["00002.root", "00003.root"]
        # with a real link, file 2 is still on its way when it is read: a miss; with an instant one, a hit
        assert decisions[12][1] is (speed is None)
    else:  # a link too slow for one file per interval prefetches nothing: the misses are admitted
        assert all(decisions[i][2] for i in range(10, 20))
    assert all(decisions[i][1] for i in range(20, 30))  # the third scan hits everything


def test_select_evictions_and_prefetch_answer_one_question_each():
    model = PopularityModel()
    model.observe_many(sorted(_task(0, HOT, range(20)) + _task(DAY / 2, COLD, range(10)) + _task(DAY, HOT, range(20))))
    now = 3 * DAY
    model.observe_many(_task(now, HOT, range(6, 10), step=10))
    cached = {f"{COLD}/{i:05d}.root": GB for i in range(3)} | {f"{HOT}/{i:05d}.root": 2 * GB for i in range(2)}
    assert model.select_evictions(cached, 4 * GB, now) == [f"{COLD}/{i:05d}.root" for i in range(3)]
    assert model.select_evictions(cached, 7 * GB, now) == []
    # the run 6-9, widened by two: 4, 5, 10, 11; a budget of 3 files takes the first three in name order
    assert model.select_prefetch(cached, 3 * GB, now + 60) == [(f"{HOT}/{i:05d}.root", GB) for i in (4, 5, 10)]
    assert PopularityModel().select_prefetch(cached, GB) == []
