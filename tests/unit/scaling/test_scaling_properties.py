"""Property-based tests: whatever the cluster looks like, no policy's decision breaks the limits.

Invariants: never above max_nodes or max_booting when adding, never below min_nodes when
retiring, only workers that run nothing are retired, no name twice, never add and retire at once,
every change has a reason; the smart policy's state survives a JSON round trip unchanged in effect;
and replays of random traces keep their books straight.
"""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from airflow_cloud_paas.scaling import (
    Job,
    Limits,
    Policy,
    QueuedJob,
    ScaleDecision,
    SmartPolicy,
    Snapshot,
    Worker,
    WorkerState,
    policy_from_name,
    simulate,
)

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def limits(draw) -> Limits:
    min_nodes = draw(st.integers(0, 6))
    return Limits(
        min_nodes=min_nodes,
        max_nodes=draw(st.integers(min_nodes, min_nodes + 30)),
        max_booting=draw(st.integers(1, 12)),
        idle_time_s=draw(st.sampled_from([0.0, 60.0, 300.0, 600.0, 3600.0])),
        spare_nodes=draw(st.integers(0, 3)),
        node_cores=draw(st.sampled_from([1, 2, 4, 8, 16])),
    )


@st.composite
def snapshots(draw, lim: Limits, now: float | None = None) -> Snapshot:
    now = draw(st.floats(0, 1e6)) if now is None else now
    workers = []
    for i in range(draw(st.integers(0, 24))):
        cores = draw(st.sampled_from([lim.node_cores, max(1, lim.node_cores // 2), lim.node_cores * 2]))
        state = draw(st.sampled_from(list(WorkerState)))
        used = 0
        if state is WorkerState.BUSY:
            used = draw(st.integers(0, cores))  # 0 too: a state reported ahead of its core count
        elif state is WorkerState.DRAINING:
            used = draw(st.integers(0, cores))
        idle_since = now - draw(st.floats(0, 5000)) if state in (WorkerState.IDLE, WorkerState.DRAINING) else None
        boot_started = now - draw(st.floats(0, 5000)) if draw(st.booleans()) else None
        workers.append(Worker(f"w{i}", state, cores, used, idle_since, boot_started))
    queued = tuple(QueuedJob(draw(st.integers(1, lim.node_cores)),
                             now - draw(st.floats(0, 3000)) if draw(st.booleans()) else None)
                   for _ in range(draw(st.integers(0, 40))))
    return Snapshot(now, queued, tuple(workers))


def policies(lim: Limits):
    return st.sampled_from(["static:0", "static:3", "static:12", "clues", "smart"]).map(
        lambda name: policy_from_name(name, **{k: getattr(lim, k) for k in Limits.__dataclass_fields__}))


def check(policy: Policy, snap: Snapshot) -> None:
    lim = policy.limits
    decision = policy.decide(snap)
    total = len(snap.workers)
    booting = sum(1 for w in snap.workers if w.state is WorkerState.BOOTING)
    retirable = {w.name for w in snap.workers if w.state in (WorkerState.IDLE, WorkerState.DRAINING)
                 and w.used_cores == 0}
    assert decision.add >= 0
    if decision.add:
        assert total + decision.add <= lim.max_nodes
        assert booting + decision.add <= lim.max_booting
        assert not decision.retire
    if total < lim.min_nodes:  # below min: fill up as far as max_booting allows
        room = max(0, min(lim.max_nodes - total, lim.max_booting - booting))
        assert decision.add >= min(lim.min_nodes - total, room)
    if decision.retire:
        assert total - len(decision.retire) >= lim.min_nodes
    assert set(decision.retire) <= retirable
    assert len(set(decision.retire)) == len(decision.retire)
    if decision.changes:
        assert decision.reasons and all(isinstance(r, str) and r for r in decision.reasons)
    json.dumps(decision.to_dict())


@SETTINGS
@given(data=st.data())
def test_no_decision_breaks_the_limits(data):
    lim = data.draw(limits())
    policy = data.draw(policies(lim))
    check(policy, data.draw(snapshots(lim)))


class AnyWish(Policy):
    """A test policy proposing an arbitrary decision: the guard alone must keep the limits."""

    name = "any-wish"

    def __init__(self, lim: Limits, wish: ScaleDecision) -> None:
        super().__init__(lim)
        self.wish = wish

    def propose(self, snapshot: Snapshot) -> ScaleDecision:
        return self.wish


@SETTINGS
@given(data=st.data())
def test_the_guard_keeps_the_limits_whatever_is_proposed(data):
    lim = data.draw(limits())
    snap = data.draw(snapshots(lim))
    names = [w.name for w in snap.workers] + ["ghost"]
    wish = ScaleDecision(add=data.draw(st.integers(-5, 100)),
                         retire=tuple(data.draw(st.lists(st.sampled_from(names), max_size=30))))
    check(AnyWish(lim, wish), snap)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_smart_with_history_keeps_the_limits(data):
    lim = data.draw(limits())
    smart = SmartPolicy(lim)
    now = data.draw(st.floats(0, 1e5))
    for _ in range(data.draw(st.integers(1, 4))):
        now += data.draw(st.floats(0, 600))
        check(smart, data.draw(snapshots(lim, now=now)))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_smart_state_survives_a_json_round_trip(data):
    # a live deployment persists the state between runs: each decision of a policy rebuilt from
    # the JSON state equals the one the same long-lived policy makes
    lim = data.draw(limits())
    live = SmartPolicy(lim)
    state = live.state_dict()
    now = 0.0
    for _ in range(data.draw(st.integers(1, 5))):
        now += data.draw(st.floats(1, 300))
        snap = data.draw(snapshots(lim, now=now))
        rebuilt = SmartPolicy(lim)
        rebuilt.load_state(json.loads(json.dumps(state)))
        assert rebuilt.decide(snap) == live.decide(snap)
        state = rebuilt.state_dict()
        assert state == live.state_dict()


@st.composite
def traces(draw) -> list[Job]:
    t = 0.0
    jobs = []
    for _ in range(draw(st.integers(1, 25))):
        t += draw(st.floats(0, 900))
        jobs.append(Job(t, draw(st.floats(1, 7200)), draw(st.integers(1, 4))))
    return jobs


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(jobs=traces(), name=st.sampled_from(["static:2", "clues", "smart"]), boot=st.sampled_from([0.0, 60.0, 180.0]),
       interval=st.sampled_from([15.0, 60.0]), every_event=st.booleans(), data=st.data())
def test_replays_keep_their_books(jobs, name, boot, interval, every_event, data):
    lim = {"node_cores": 4, "max_booting": data.draw(st.integers(1, 5)), "idle_time_s": data.draw(
        st.sampled_from([0.0, 120.0, 600.0]))}
    policy = policy_from_name(name, **lim)
    result = simulate(jobs, policy, boot_s=boot, interval_s=interval, every_event=every_event, record=True)
    assert result.jobs == len(jobs) and len(result.waits) == len(jobs)
    assert all(w >= 0 for w in result.waits)
    assert result.node_hours >= result.bound_node_hours * (1 - 1e-9)  # nothing beats perfect packing
    assert result.p95_wait_s <= result.max_wait_s
    if name == "static:2":  # booted at t=0, never retired: exactly the pool size times the makespan
        assert abs(result.node_hours - 2 * result.makespan_s / 3600) < 1e-9
    for entry in result.log:
        assert not (entry["add"] and entry["retire"]) and entry["reasons"]
