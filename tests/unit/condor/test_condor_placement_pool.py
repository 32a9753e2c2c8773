"""Packing by expected runtime through the pool stand-in: jobs submitted with the hook land where ``pack`` puts them.

The stand-in (``standin.py``) matches with real ClassAds but takes machines in name order and ignores ranks. Here
it is given, in a subclass, what the placement needs of the daemons and nothing more, driven by the expressions
the rendered configurations hold (read back by the ``htcondor2`` bindings):

- the negotiator: of the slots that match both ways, the one with the highest ``NEGOTIATOR_PRE_JOB_RANK``
  (ties: the first by name, as the plain stand-in);
- the startd: a dynamic slot gets ``JobStart`` and the job's ``STARTD_JOB_ATTRS``; the partitionable slot the
  evaluated ``ChildCloudPaaSExpectedEnd`` of its dynamic slots and ``CloudPaaSJobsEnd``, refreshed at once (a
  real startd publishes them at its update interval).

Not emulated: claim reuse (``CLAIM_WORKLIFE = 0`` turns it off anyway), several matches of one partitionable
slot per cycle, the negotiator's submitter order. Where ranks decide, the stand-in's clock is the real one, as
``time()`` in the expressions is.
"""

from __future__ import annotations

import time

import classad2
import pytest
from unit.condor.standin import StandInPool

from airflow_cloud_paas.hooks.htcondor import HTCondorHook
from airflow_cloud_paas.scaling.packing import EstimatePlacement, JobInfo
from airflow_cloud_paas.services.condor import placement
from airflow_cloud_paas.services.condor.config import CondorPoolSettings, load_params, render_config
from airflow_cloud_paas.services.condor.probe import HTCondorProbe

PACK = CondorPoolSettings("cm.standin", "pool-pack.cloud-paas", placement="pack")


class PackingPool(StandInPool):
    """The stand-in pool with the negotiator's pre-job rank and the startd's expected-end rollup (module docstring).

    :param config: the placement's configuration values, as the bindings read them
    :param kwargs: the stand-in's own arguments
    """

    def __init__(self, config: dict[str, str], **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.config = config

    def add_execute_node(self, machine: str, **kwargs: object) -> classad2.ClassAd:
        """Start an execute node publishing ``CloudPaaSJobsEnd``.

        :param machine: the machine's name
        :param kwargs: the stand-in's own arguments
        """
        attributes = {placement.JOBS_END: classad2.ExprTree(self.config[placement.JOBS_END])}
        return super().add_execute_node(machine, attributes=attributes, **kwargs)

    def negotiate(self) -> int:
        """Match each idle job to the matching slot with the highest pre-job rank; return how many started."""
        rank = classad2.ExprTree(self.config["NEGOTIATOR_PRE_JOB_RANK"])
        started = 0
        with self.lock:
            for job in self.schedd_.idle_jobs():
                matching = [m for m in sorted(self.machines.values(), key=lambda m: m.name)
                            if not (m.draining or m.retiring) and job.ad.symmetricMatch(m.pslot)]
                if not matching:
                    continue
                best = max(matching, key=lambda m: rank.eval(m.pslot, job.ad))
                self.schedd_.start(job, self._carve(best, job.ad), best.address)
                started += 1
        return started

    def _carve(self, machine, job: classad2.ClassAd) -> str:
        name = super()._carve(machine, job)
        dslot = machine.dynamic[name]
        dslot["JobStart"] = int(self.clock())
        for attribute in self.config["STARTD_JOB_ATTRS"].split():
            if attribute in job:
                dslot[attribute] = job.lookup(attribute)
        dslot[placement.EXPECTED_END] = classad2.ExprTree(self.config[placement.EXPECTED_END])
        self._roll_up(machine)
        return name

    def release_slot(self, machine_name: str, slot: str) -> None:
        """Free a dynamic slot and publish the node's new expected end.

        :param machine_name: the machine
        :param slot: the dynamic slot's name
        """
        super().release_slot(machine_name, slot)
        if machine_name in self.machines:
            self._roll_up(self.machines[machine_name])

    def _roll_up(self, machine) -> None:
        ends = [d.eval(placement.EXPECTED_END) for d in machine.dynamic.values()]
        ends = [e for e in ends if not isinstance(e, classad2.Value)]  # undefined: a slot running nothing
        child = f"Child{placement.EXPECTED_END}"
        if ends:
            machine.pslot[child] = ends
        elif child in machine.pslot:
            del machine.pslot[child]


@pytest.fixture(scope="module")
def config() -> dict[str, str]:
    """Return the placement's configuration values, read back from the rendered files by the bindings."""
    return {**load_params(render_config(PACK, "execute"),
                          ["STARTD_JOB_ATTRS", placement.EXPECTED_END, placement.JOBS_END]),
            **load_params(render_config(PACK, "central_manager"), ["NEGOTIATOR_PRE_JOB_RANK"])}


@pytest.fixture
def packing_pool(credentials, config) -> PackingPool:
    """Three empty 4-core execute nodes."""
    pool = PackingPool(config, trust_domain=credentials.trust_domain, pool_password=credentials.pool_password,
                       administrators=[credentials.identity], clock=time.time, run_ticks=1000)
    for name in ("wn1", "wn2", "wn3"):
        pool.add_execute_node(f"{name}.standin", cpus=4, memory_mb=8192)
    return pool


def test_jobs_land_on_the_node_whose_jobs_end_closest_after_them(packing_pool, connection) -> None:
    hook = HTCondorHook(htcondor_conn_id=connection, clients=packing_pool)

    def submit(runtime: dict[str, str], machine: str | None = None) -> int:
        description = {"executable": "/bin/sleep", "arguments": "3600", "request_cpus": "1",
                       "request_memory": "128MB", **runtime}
        if machine:
            description["requirements"] = f'TARGET.Machine == "{machine}"'
        cluster = hook.submit(description)
        assert packing_pool.negotiate() == 1
        return cluster

    def node_of(cluster: int) -> str:
        ad = packing_pool.schedd_.query(f"ClusterId == {cluster}", ["RemoteHost"])[0]
        return str(ad["RemoteHost"]).split("@", 1)[1].split(".")[0]

    # wn1 is expected to empty in 10 minutes, wn2 in an hour; wn3 runs nothing
    assert node_of(submit({"+MaxRuntime": "600"}, "wn1.standin")) == "wn1"
    assert node_of(submit({"+AllowedExecuteDuration": "3600"}, "wn2.standin")) == "wn2"
    ends = {n: packing_pool.machines[f"{n}.standin"].pslot.eval(placement.JOBS_END) for n in ("wn1", "wn2", "wn3")}
    assert ends["wn1"] < ends["wn2"] and isinstance(ends["wn3"], classad2.Value)

    # the plain stand-in would put each on wn1 (name order); pack: after the job, closest; else the latest
    assert node_of(submit({"+MaxRuntime": "300"})) == "wn1", "5 minutes: wn1 ends soonest after it"
    assert node_of(submit({"+MaxWallTimeMins": "50"})) == "wn2", "50 minutes: only wn2 ends after it"
    assert node_of(submit({"+MaxRuntime": "7200"})) == "wn2", "2 hours: ends after both, wn2 is extended least"
    assert node_of(submit({})) == "wn2", "no request: the default hour; wn2, now ending in 2 hours, ends after it"
    # wn2 is full now (4 jobs): a 5-minute job still goes to wn1, a 4-core one to the empty wn3 (the only fit)
    assert node_of(submit({"+MaxRuntime": "300"})) == "wn1"
    assert node_of(submit({"+MaxRuntime": "300", "request_cpus": "4"})) == "wn3"


def test_the_round_writes_idle_jobs_expected_runtimes_learned_from_their_campaign(credentials, connection,
                                                                                 config) -> None:
    clock = [1_800_000_000.0]
    pool = PackingPool(config, trust_domain=credentials.trust_domain, pool_password=credentials.pool_password,
                       administrators=[credentials.identity], clock=lambda: clock[0])
    pool.add_execute_node("wn1.standin", cpus=4, memory_mb=8192)
    hook = HTCondorHook(htcondor_conn_id=connection, clients=pool)
    probe = HTCondorProbe(hook=hook, placement="pack")
    sleep = {"executable": "/bin/sleep", "request_cpus": "1", "request_memory": "128MB", "+MaxRuntime": "3600"}
    hook.submit({**sleep, "batch_name": "camp"}, count=4)
    assert pool.negotiate() == 4
    clock[0] += 600  # they asked for an hour and ran 10 minutes
    pool.tick()
    assert len(pool.schedd_.history("JobStatus == 4")) == 4
    waiting = hook.submit({**sleep, "batch_name": "camp"}, count=2)
    other = hook.submit({**sleep, "batch_name": "other", "+MaxRuntime": "7200"})

    done = probe.place(clock[0])
    learned = EstimatePlacement()
    for i in range(4):
        learned.finished(JobInfo(i, 1, 1_800_000_000.0, "camp", 3600.0), "", clock[0], 600.0)
    camp = round(learned.expected_runtime(JobInfo(-1, 1, clock[0], "camp", 3600.0)))
    fresh = round(learned.expected_runtime(JobInfo(-1, 1, clock[0], "other", 7200.0)))
    assert done == {"learned_from": 4, "refused": 0, "expected_runtime_s": {
        f"{waiting}.0": camp, f"{waiting}.1": camp, f"{other}.0": fresh}}
    assert camp < 1200 and camp < fresh < 7200, "a campaign that ran a sixth of its requests is expected short"
    ads = pool.schedd_.query("JobStatus == 1", ["ClusterId", placement.EXPECTED_RUNTIME])
    assert sorted(int(a.eval(placement.EXPECTED_RUNTIME)) for a in ads) == sorted([camp, camp, fresh])
    assert probe.place(clock[0])["expected_runtime_s"] == {}, "a second round edits nothing"
    assert HTCondorProbe(hook=hook).place(clock[0]) is None, "placement is asked for, never a default"
