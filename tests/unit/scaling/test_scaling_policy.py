"""Policies on hand-built snapshots: what each decides, why, and the guard every decision goes through."""

from __future__ import annotations

import json

import pytest

from airflow_cloud_paas.scaling import (
    CluesPolicy,
    Limits,
    Policy,
    PolicyError,
    QueuedJob,
    ScaleDecision,
    SmartPolicy,
    Snapshot,
    StaticPolicy,
    Worker,
    WorkerState,
    pack_nodes,
    policy_from_name,
)

BOOTING, IDLE, BUSY, DRAINING = WorkerState.BOOTING, WorkerState.IDLE, WorkerState.BUSY, WorkerState.DRAINING


def busy(name: str, used: int = 8, cores: int = 8) -> Worker:
    return Worker(name, BUSY, cores, used)


def idle(name: str, since: float, cores: int = 8) -> Worker:
    return Worker(name, IDLE, cores, 0, idle_since_s=since)


def queue(n: int, at: float = 0.0, cpus: int = 1) -> tuple[QueuedJob, ...]:
    return tuple(QueuedJob(cpus, at) for _ in range(n))


# --------------------------------------------------------------------------------------- by name
def test_policy_from_name():
    assert isinstance(policy_from_name("static:4"), StaticPolicy)
    assert policy_from_name(" Static:4 ").label == "static:4"
    assert isinstance(policy_from_name("clues", idle_time_s=300), CluesPolicy)
    smart = policy_from_name("smart", min_nodes=1, max_nodes=9, node_cores=4)
    assert isinstance(smart, SmartPolicy) and smart.limits == Limits(min_nodes=1, max_nodes=9, node_cores=4)
    assert policy_from_name("static:4", min_nodes=0, max_nodes=2).limits.max_nodes == 4


@pytest.mark.parametrize(
    ("name", "limits", "message"),
    [
        ("bogus", {}, "unknown policy 'bogus'; expected one of static:N, clues, smart"),
        ("static", {}, "static needs a pool size"),
        ("static:x", {}, "static needs a pool size"),
        ("static:-1", {}, "must not be negative"),
        ("clues:3", {}, "clues takes no argument"),
        ("smart", {"max_nodes": 2, "min_nodes": 3}, "min_nodes <= max_nodes"),
        ("smart", {"max_booting": 0}, "max_booting must be at least 1"),
        ("smart", {"node_cores": 0}, "node_cores must be at least 1"),
        ("smart", {"idle_time_s": -1}, "must not be negative"),
        ("smart", {"colour": "red"}, "unknown limit"),
    ],
)
def test_bad_names_and_limits_are_policy_errors(name, limits, message):
    with pytest.raises(PolicyError, match=message):
        policy_from_name(name, **limits)


def test_bad_workers_are_rejected():
    with pytest.raises(PolicyError, match="unknown state 'gone'"):
        Worker("w", "gone", 8)
    with pytest.raises(PolicyError, match="used_cores"):
        Worker("w", BUSY, 8, 9)
    with pytest.raises(PolicyError, match="booting worker cannot run jobs"):
        Worker("w", BOOTING, 8, 2)
    assert Worker("w", "idle", 8).state is IDLE


def test_pack_nodes_first_fit_decreasing():
    assert pack_nodes([1] * 9, [], 8) == 2
    assert pack_nodes([4, 4, 4], [4], 8) == 1
    assert pack_nodes([3, 3, 3], [], 4) == 3
    assert pack_nodes([2, 1, 1], [], 4) == 1
    assert pack_nodes([6, 2, 2], [], 8) == 2  # the 6 leaves room for one 2
    assert pack_nodes([], [8], 8) == 0
    with pytest.raises(PolicyError, match="requests 9 cpus"):
        pack_nodes([9], [], 8)


# --------------------------------------------------------------------------------------- static
def test_static_fills_the_pool_and_never_retires():
    policy = policy_from_name("static:3", max_booting=2)
    first = policy.decide(Snapshot(0))
    assert first.add == 3 and "static pool of 3" in first.reasons[0]
    later = policy.decide(Snapshot(9999, workers=(idle("a", 0), idle("b", 0), idle("c", 0))))
    assert later == ScaleDecision()


# --------------------------------------------------------------------------------------- clues
def test_clues_boots_for_queued_demand_beyond_the_booting_capacity():
    policy = CluesPolicy(Limits())
    snap = Snapshot(100, queue(20), (busy("a"), Worker("b", BOOTING, 8, boot_started_s=50)))
    decision = policy.decide(snap)
    assert decision.add == 2  # 20 queued cpus, 8 on the booting worker: 12 more need 2 workers
    assert "20 queued job(s)" in decision.reasons[0]


def test_clues_powers_off_after_idle_time_longest_idle_first_keeping_spares():
    policy = CluesPolicy(Limits(idle_time_s=600, spare_nodes=1))
    workers = (idle("a", 0), idle("b", 100), idle("c", 950), busy("d"))
    decision = policy.decide(Snapshot(1000, (), workers))
    # a (1000 s) and b (900 s) expired; c keeps the one spare
    assert decision.retire == ("a", "b")
    assert all("idle_time_s=600" in r for r in decision.reasons)


def test_clues_keeps_spare_nodes_booted():
    decision = CluesPolicy(Limits(spare_nodes=2)).decide(Snapshot(0, (), (busy("a"),)))
    assert decision.add == 2 and "spare_nodes=2" in decision.reasons[0]


# --------------------------------------------------------------------------------------- smart
def test_smart_boots_for_the_campaign_it_sees_starting():
    # t=0: one full worker. t=60: 30 jobs queued -> demand grew by 30 cores in 60 s (0.5/s). Over
    # the boot time (180 s, the guess) plus an interval (60 s) 120 more cores are expected:
    # need = 8 used + 30 queued + 120 = 158, less a tolerance of min(8, 4 + 0.2 * 8) = 5.6,
    # against 8 cores: ceil(144.4 / 8) = 19 workers. CLUES asks for 4.
    smart = SmartPolicy(Limits())
    assert smart.decide(Snapshot(0, (), (busy("a"),))) == ScaleDecision()
    snap = Snapshot(60, queue(30, at=30), (busy("a"),))
    decision = smart.decide(snap)
    assert decision.add == 19
    assert "growing 30.0 cpus/min" in decision.reasons[0]
    assert CluesPolicy(Limits()).decide(snap).add == 4


def test_smart_leaves_a_small_queue_to_the_cores_running_jobs_free():
    workers = tuple(busy(f"w{i}") for i in range(5))
    smart = SmartPolicy(Limits())
    assert smart.decide(Snapshot(0, (), workers)).add == 0
    # 2 queued, demand grew by 2 in 60 s: 2 + 2 * 240 / 60 = 10 cores, within the tolerance
    # min(40, 4 + 0.2 * 40) = 12; CLUES boots a worker for them
    assert smart.decide(Snapshot(60, queue(2, at=50), workers)).add == 0
    assert CluesPolicy(Limits()).decide(Snapshot(60, queue(2, at=50), workers)).add == 1
    # 3 more a minute later: 5 + 3 * 240 / 60 = 17 > 12: boot ceil(5 / 8) = 1
    decision = smart.decide(Snapshot(120, queue(5, at=100), workers))
    assert decision.add == 1 and "tolerating 12 queued" in decision.reasons[0]


def test_smart_boots_at_once_when_nothing_runs():
    decision = SmartPolicy(Limits()).decide(Snapshot(0, queue(1)))
    assert decision.add == 1


def test_smart_retires_an_unneeded_idle_worker_before_the_idle_time():
    # 6 cores used on a: the need is 6, b's 8 cores are not needed beyond 6 - 4 + 2
    smart = SmartPolicy(Limits(idle_time_s=600))
    decision = smart.decide(Snapshot(1000, (), (busy("a", used=6), idle("b", 970))))
    assert decision.retire == ("b",)
    assert "idle 30 s" in decision.reasons[0]
    assert CluesPolicy(Limits(idle_time_s=600)).decide(Snapshot(1000, (), (busy("a", used=6), idle("b", 970)))) \
        == ScaleDecision()


def test_smart_keeps_the_last_idle_worker_until_the_idle_time():
    # nothing runs: retiring w would leave no free core, less than the 2-core hysteresis
    smart = SmartPolicy(Limits(idle_time_s=600))
    assert smart.decide(Snapshot(1000, (), (idle("w", 970),))).retire == ()
    late = smart.decide(Snapshot(1600, (), (idle("w", 970),)))
    assert late.retire == ("w",) and "idle 630 s >= idle_time_s=600" in late.reasons[0]


def test_smart_multicore_job_that_fits_nowhere_gets_a_worker():
    # 4 free cores in total, but scattered 2 + 2: a 4-core job cannot start anywhere
    workers = (busy("a", used=6), busy("b", used=6))
    decision = SmartPolicy(Limits()).decide(Snapshot(0, queue(1, cpus=4), workers))
    assert decision.add == 1


def test_smart_learns_the_boot_time():
    smart = SmartPolicy(Limits())
    for t in (0, 60, 120, 180):
        smart.decide(Snapshot(t, (), (Worker("w", BOOTING, 8, boot_started_s=0),)))
    smart.decide(Snapshot(240, (), (Worker("w", BUSY, 8, 8, boot_started_s=0),)))
    # up some time in (180, 240]: the middle, 210 s, is the first sample
    assert smart.state_dict()["boot_s"] == 210
    assert smart.state_dict()["interval_s"] == 60


def test_smart_state_round_trips_through_json():
    smart = SmartPolicy(Limits())
    smart.decide(Snapshot(0, (), (busy("a"),)))
    state = json.loads(json.dumps(smart.state_dict()))
    restored = SmartPolicy(Limits())
    restored.load_state(state)
    snap = Snapshot(60, queue(30, at=30), (busy("a"),))
    assert restored.decide(snap) == smart.decide(snap)
    assert restored.decide(snap).add == 19  # the history matters: without it no growth is seen
    assert SmartPolicy(Limits()).decide(snap).add == 4


def test_smart_rejects_a_foreign_state():
    with pytest.raises(PolicyError, match="unknown keys"):
        SmartPolicy().load_state({"nonsense": 1})
    with pytest.raises(PolicyError, match="keeps no state"):
        CluesPolicy().load_state({"x": 1})


# --------------------------------------------------------------------------------------- guard
class Rogue(Policy):
    """A test policy that proposes whatever it is given, to exercise the guard."""

    name = "rogue"

    def __init__(self, wish: ScaleDecision, limits: Limits) -> None:
        super().__init__(limits)
        self.wish = wish

    def propose(self, snapshot: Snapshot) -> ScaleDecision:
        return self.wish


def test_guard_retires_only_workers_that_run_nothing():
    workers = (busy("b"), Worker("boot", BOOTING, 8), idle("i", 0), Worker("d", DRAINING, 8, 0),
               Worker("d2", DRAINING, 8, 3), Worker("zero", BUSY, 8, 0))
    wish = ScaleDecision(retire=("b", "boot", "i", "i", "ghost", "d", "d2", "zero"), reasons=("wish",))
    decision = Rogue(wish, Limits()).decide(Snapshot(10, (), workers))
    assert decision.retire == ("i", "d")
    for name in ("b", "boot", "ghost", "d2", "zero"):
        assert any(r.startswith(f"keep {name}:") for r in decision.reasons)


def test_guard_caps_additions_at_max_nodes_and_max_booting():
    limits = Limits(max_nodes=10, max_booting=3)
    snap = Snapshot(0, (), (busy("a"), Worker("b", BOOTING, 8)))
    decision = Rogue(ScaleDecision(add=50), limits).decide(snap)
    assert decision.add == 2 and "max_booting" in decision.reasons[-1]
    near_max = Snapshot(0, (), tuple(busy(f"w{i}") for i in range(9)))
    decision = Rogue(ScaleDecision(add=50), limits).decide(near_max)
    assert decision.add == 1 and "max_nodes" in decision.reasons[-1]


def test_guard_keeps_min_nodes_and_never_adds_and_retires_at_once():
    limits = Limits(min_nodes=2)
    workers = (idle("a", 0), idle("b", 0), idle("c", 0))
    assert Rogue(ScaleDecision(retire=("a", "b", "c")), limits).decide(Snapshot(9, (), workers)).retire == ("a",)
    mixed = Rogue(ScaleDecision(add=1, retire=("a",)), Limits()).decide(Snapshot(9, (), workers))
    assert mixed.add == 1 and mixed.retire == ()
    below = Rogue(ScaleDecision(), Limits(min_nodes=4)).decide(Snapshot(9, (), workers))
    assert below.add == 1 and "min_nodes=4" in below.reasons[0]


def test_guard_shrinks_through_idle_workers_when_max_nodes_was_lowered():
    workers = (busy("a"), idle("b", 50), idle("c", 10), idle("d", 30))
    decision = Rogue(ScaleDecision(), Limits(max_nodes=2)).decide(Snapshot(100, (), workers))
    assert decision.retire == ("c", "d")  # longest idle first; the busy one stays


def test_decision_to_dict_is_json():
    decision = ScaleDecision(add=2, reasons=("why",))
    assert json.loads(json.dumps(decision.to_dict())) == {"add": 2, "retire": [], "reasons": ["why"]}


def test_smart_retires_a_drained_worker_once_empty():
    workers = (busy("a", used=8), Worker("d", DRAINING, 8, 0, idle_since_s=990), Worker("e", DRAINING, 8, 2))
    decision = SmartPolicy(Limits()).decide(Snapshot(1000, (), workers))
    assert decision.retire == ("d",) and decision.reasons == ("retire d: drained and empty",)


def test_smart_survives_a_clock_that_steps_back():
    smart = SmartPolicy(Limits())
    smart.decide(Snapshot(100, queue(2), (busy("a"),)))
    assert smart.decide(Snapshot(40, queue(2), (busy("a"),))).add == 0
    smart.load_state({**smart.state_dict(), "demand_history": []})
    # no history, no growth: 8 used + 20 queued - 5.6 tolerated - 8 cores = 14.4 cores: 2 workers
    assert smart.decide(Snapshot(100, queue(20), (busy("a"),))).add == 2
