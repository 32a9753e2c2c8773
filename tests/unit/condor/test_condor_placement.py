"""Packing by expected runtime in an HTCondor pool, checked with real ClassAd evaluation (``classad2``).

The expressions are those the rendered configurations hold, as the ``htcondor2`` bindings read them back. What
the daemons would do around them is emulated here, and only that: the startd copies ``STARTD_JOB_ATTRS`` from
the job into its dynamic slot with ``JobStart``, and rolls the dynamic slots' evaluated ``CloudPaaSExpectedEnd``
up into the partitionable slot's ``ChildCloudPaaSExpectedEnd`` list (as HTCondor 8.8.9+ publishes
``STARTD_PARTITIONABLE_SLOT_ATTRS``); the negotiator keeps the slots that match both ways and takes the one
with the highest ``NEGOTIATOR_PRE_JOB_RANK`` (MY: the slot, TARGET: the job). No daemon runs.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field

import classad2
import pytest

from airflow_cloud_paas.scaling.packing import EstimatePlacement, JobInfo
from airflow_cloud_paas.services.condor import placement
from airflow_cloud_paas.services.condor.config import CondorPoolSettings, load_params, render_config, validate_config
from airflow_cloud_paas.services.condor.errors import CondorConfigError

PACK = CondorPoolSettings("cm.example.org", "pool-pack.cloud-paas", placement="pack")
#: how a job states its runtime: the attribute, and seconds -> its value
KINDS = {"AllowedExecuteDuration": lambda s: s, "MaxRuntime": lambda s: s, "MaxWallTimeMins": lambda s: s // 60,
         "AllowedJobDuration": lambda s: s, None: None}


@pytest.fixture(scope="module")
def params() -> dict[str, str]:
    """Return the placement's expressions as the bindings read them from the rendered configurations."""
    execute = load_params(render_config(PACK, "execute"),
                          ["STARTD_JOB_ATTRS", "STARTD_PARTITIONABLE_SLOT_ATTRS", "STARTD_ATTRS", "CLAIM_WORKLIFE",
                           placement.EXPECTED_END, placement.JOBS_END])
    central = load_params(render_config(PACK, "central_manager"), ["NEGOTIATOR_PRE_JOB_RANK"])
    return {**execute, **central}


@dataclass
class Running:
    """A job running on a node."""

    start: int
    runtime: int
    kind: str | None = "MaxRuntime"


@dataclass
class Node:
    """An execute node: its cores and running one-core jobs."""

    name: str
    cores: int = 4
    jobs: list[Running] = field(default_factory=list)


def job_ad(runtime: int | None, kind: str | None, cpus: int = 1, **extra: object) -> classad2.ClassAd:
    """Return a job ad as condor_submit makes it, its runtime stated as ``kind`` says."""
    ad = classad2.ClassAd({"MyType": "Job", "TargetType": "Machine", "RequestCpus": cpus, "RequestMemory": 128,
                           "Owner": "alice", **extra})
    ad["Requirements"] = classad2.ExprTree("(TARGET.Cpus >= RequestCpus) && (TARGET.Memory >= RequestMemory)")
    if kind is not None and runtime is not None:
        ad[kind] = KINDS[kind](runtime)
    return ad


def startd_ad(node: Node, params: dict[str, str], now: int) -> classad2.ClassAd:
    """Return the node's partitionable slot ad as its startd would publish it (see the module's docstring)."""
    copied = params["STARTD_JOB_ATTRS"].split()
    ends = []
    for running in node.jobs:
        job = job_ad(running.runtime, running.kind)
        dslot = classad2.ClassAd({"JobStart": running.start, "RemoteOwner": "alice@pool", "Cpus": 1})
        for name in copied:
            if name in job:
                dslot[name] = job.lookup(name)
        dslot[placement.EXPECTED_END] = classad2.ExprTree(params[placement.EXPECTED_END])
        ends.append(dslot.eval(placement.EXPECTED_END))
    pslot = classad2.ClassAd({"MyType": "Machine", "TargetType": "Job", "Name": f"slot1@{node.name}",
                              "Machine": node.name, "PartitionableSlot": True, "State": "Unclaimed",
                              "Cpus": node.cores - len(node.jobs), "Memory": 8192, "START": True})
    pslot["Requirements"] = classad2.ExprTree("START && (TARGET.RequestCpus <= MY.Cpus)")
    if ends:
        pslot[f"Child{placement.EXPECTED_END}"] = ends
    pslot[placement.JOBS_END] = classad2.ExprTree(params[placement.JOBS_END])
    pslot[placement.EXPECTED_END] = classad2.ExprTree(params[placement.EXPECTED_END])  # STARTD_ATTRS: every slot
    return pslot


def negotiator_choice(job: classad2.ClassAd, nodes: list[Node], params: dict[str, str], now: int) -> set[str]:
    """Return the nodes the negotiator would match the job to (several when their pre-job ranks tie)."""
    rank = classad2.ExprTree(params["NEGOTIATOR_PRE_JOB_RANK"])
    ranked = {}
    for node in nodes:
        ad = startd_ad(node, params, now)
        if job.symmetricMatch(ad):
            ranked[node.name] = rank.eval(ad, job)
    best = max(ranked.values(), default=None)
    return {name for name, value in ranked.items() if value == best}


@dataclass
class _Slot:
    name: str
    cores: int
    used: int
    stamp: int


def packing_choice(runtime: int | None, nodes: list[Node], now: int, ends: dict[str, float] | None = None
                   ) -> str | None:
    """Return the node the simulator's ``pack`` placement chooses for a one-core job of this requested runtime.

    :param ends: filled with when each node's jobs are expected to end, as the simulator sees it
    """
    pack = EstimatePlacement()
    index = 0
    for node in nodes:
        for running in node.jobs:
            index += 1
            pack.started(JobInfo(index, 1, running.start, None, running.runtime), node.name, running.start)
    slots = [_Slot(n.name, n.cores, len(n.jobs), i) for i, n in enumerate(nodes) if n.cores > len(n.jobs)]
    chosen = pack.assign(now, [JobInfo(0, 1, now, None, runtime)], slots)
    if ends is not None:
        ends.update({n.name: pack.node_end(n.name, now) for n in nodes})
    return chosen[0][1].name if chosen else None


def test_the_configurations_load_and_publish_the_placement(params) -> None:
    for role in ("central_manager", "submit", "execute"):
        validate_config(render_config(PACK, role), role, PACK)
    assert set(placement.RUNTIME_ATTRS) <= set(params["STARTD_JOB_ATTRS"].split())
    assert params["STARTD_PARTITIONABLE_SLOT_ATTRS"].split() == [placement.EXPECTED_END]
    assert {placement.EXPECTED_END, placement.JOBS_END} <= set(params["STARTD_ATTRS"].split())
    assert str(params["CLAIM_WORKLIFE"]) == "0"
    assert params["NEGOTIATOR_PRE_JOB_RANK"] == placement.negotiator_pre_job_rank()
    # the default placement renders none of it, and a pack configuration without it is refused
    assert "NEGOTIATOR_PRE_JOB_RANK" not in render_config(CondorPoolSettings("cm", "pool-x"), "central_manager")
    text = render_config(PACK, "execute").replace("CLAIM_WORKLIFE = 0\n", "")
    with pytest.raises(CondorConfigError, match="CLAIM_WORKLIFE.*placement=pack"):
        validate_config(text, "execute", PACK)
    with pytest.raises(CondorConfigError, match="placement 'best' is not one of fcfs, pack"):
        CondorPoolSettings("cm", "pool-x", placement="best")


def test_the_negotiator_ranks_nodes_as_the_simulators_pack_placement(params) -> None:
    rng = random.Random(18)
    kinds = list(KINDS)
    agreed = 0
    for case in range(250):
        now = int(time.time())
        nodes = []
        for n in range(rng.randint(2, 6)):
            jobs = []
            for _ in range(rng.choice((0, 0, 1, 2, 3, 4))):
                runtime = 60 * rng.randint(5, 240)
                # started so that it is expected to end in 2 minutes or more, 15 s off the minute (no ties below)
                start = now - 60 * rng.randint(0, runtime // 60 - 2) - 15
                jobs.append(Running(start, runtime, rng.choice([k for k in kinds if k is not None])))
            nodes.append(Node(f"wn{n}", 4, jobs))
        kind = rng.choice(kinds)
        runtime = None if kind is None else 60 * rng.randint(1, 300) + (0 if kind == "MaxWallTimeMins" else 30)
        job = job_ad(runtime, kind)
        ends: dict[str, float] = {}
        expected = packing_choice(runtime if kind else None, nodes, now, ends)
        chosen = negotiator_choice(job, nodes, params, now)
        if expected is None:
            assert chosen == set(), f"case {case}: no node has room, none may match"
            continue
        # nodes whose jobs end together tie in the negotiator (the simulator takes the first such, or, among empty
        # nodes, the one empty longest): any of them is the same choice
        assert expected in chosen, f"case {case}: pack chose {expected}, the negotiator {sorted(chosen)}"
        assert {ends[n] for n in chosen} == {ends[expected]}, f"case {case}: {sorted(chosen)} do not tie"
        agreed += 1
    assert agreed > 200


def test_the_tiers_on_a_small_pool(params) -> None:
    now = int(time.time())
    nodes = [Node("soon", jobs=[Running(now - 600, 1200)]),        # ends in 10 minutes
             Node("later", jobs=[Running(now - 600, 4200)]),       # ends in an hour
             Node("empty"),
             Node("full", jobs=[Running(now - 60, 600)] * 4)]      # no room
    cases = {300: "soon", 1800: "later", 3000: "later", 7200: "later"}  # after, closest; else before, latest
    for runtime, node in cases.items():
        assert negotiator_choice(job_ad(runtime, "MaxRuntime"), nodes, params, now) == {node}
        assert packing_choice(runtime, nodes, now) == node
    # the engine's (or the user's) CloudPaaSExpectedRuntime wins over the request: a 2-hour request expected
    # to run 5 minutes goes where a 5-minute job goes
    ad = job_ad(7200, "MaxRuntime", CloudPaaSExpectedRuntime=300)
    assert negotiator_choice(ad, nodes, params, now) == {"soon"}
    # a 4-core job fits only the empty node; a 5-core job nowhere
    assert negotiator_choice(job_ad(300, "MaxRuntime", cpus=4), nodes, params, now) == {"empty"}
    assert negotiator_choice(job_ad(300, "MaxRuntime", cpus=5), nodes, params, now) == set()


def test_a_job_that_outran_its_request_keeps_its_node_busy(params) -> None:
    now = int(time.time())
    slot = startd_ad(Node("late", jobs=[Running(now - 4000, 1000)]), params, now)  # 50 minutes over
    end = slot.eval(placement.JOBS_END)
    assert now + 1990 <= end <= now + 2010, "expected to end after half as long again as it has run"
    pack = EstimatePlacement()
    pack.started(JobInfo(1, 1, now - 4000, None, 1000), "late", now - 4000)
    assert pack.node_end("late", now) > now, "the simulator also expects it to end later, not now"
    empty = startd_ad(Node("idle"), params, now)
    assert isinstance(empty.eval(placement.JOBS_END), classad2.Value), "undefined: it runs nothing"


def test_a_jobs_own_rank_gives_the_same_order(params) -> None:
    now = int(time.time())
    nodes = [Node("soon", jobs=[Running(now - 600, 1200)]), Node("later", jobs=[Running(now - 600, 4200)]),
             Node("empty")]
    rank = classad2.ExprTree(placement.job_rank())
    for runtime, node in {300: "soon", 1800: "later", 9000: "later"}.items():
        job = job_ad(runtime, "AllowedExecuteDuration")
        values = {n.name: rank.eval(job, startd_ad(n, params, now)) for n in nodes}
        assert max(values, key=values.get) == node
        assert min(values, key=values.get) == "empty"
