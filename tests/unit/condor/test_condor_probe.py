"""The elastic scaler's HTCondor probe on the pool stand-in (htcondor2/classad2 objects at the bindings' edge)."""

from __future__ import annotations

from airflow_cloud_paas.backends.base import Resource, ResourceState
from airflow_cloud_paas.hooks.htcondor import HTCondorHook
from airflow_cloud_paas.scaling.policy import Snapshot, Worker, WorkerState, policy_from_name
from airflow_cloud_paas.services.condor.probe import HTCondorProbe


def _vm(index: int, hostname: str) -> Resource:
    return Resource("pool1", "condor_execute", index, "aws", f"i-{index}", ResourceState.RUNNING,
                    {"private_address": f"10.0.0.{index + 10}", "hostname": hostname})


def test_idle_jobs_and_execute_nodes_become_a_snapshot_the_policy_acts_on(pool, connection) -> None:
    hook = HTCondorHook(htcondor_conn_id=connection, clients=pool)
    probe = HTCondorProbe(hook=hook)
    hook.submit({"executable": "/bin/sleep", "arguments": "600", "request_cpus": "2", "request_memory": "512MB"},
                count=4)
    pool.negotiate()  # wn1 (4 cpus) takes two jobs, wn2 (2 cpus) one; one stays idle
    workers = [_vm(0, "wn1.standin"), _vm(1, "wn2"), _vm(2, "wn3.standin")]  # wn3 has not booted yet
    seen = probe.observe(workers, 1_800_000_100.0)
    assert [job.cpus for job in seen.queued] == [2]
    assert seen.workers[0].state is WorkerState.BUSY and seen.workers[0].used_cores == 4
    assert seen.workers[1].used_cores == 2 and 2 not in seen.workers
    policy = policy_from_name("clues", max_nodes=8, node_cores=4)  # what the scaler asks
    snapshot = Snapshot(1_800_000_100.0, seen.queued, tuple(
        Worker(f"w{i}", v.state, v.cores, v.used_cores) for i, v in seen.workers.items()))
    assert policy.decide(snapshot).add == 1  # the idle 2-cpu job needs a node: none is booting


def test_drain_stops_new_jobs_on_the_node_before_it_is_retired(pool, connection) -> None:
    hook = HTCondorHook(htcondor_conn_id=connection, clients=pool)
    probe = HTCondorProbe(hook=hook)
    worker = _vm(1, "wn2.standin")
    probe.drain(worker)
    assert probe.observe([worker], 1_800_000_100.0).workers[1].state is WorkerState.DRAINING
    hook.submit({"executable": "/bin/true", "request_cpus": "1"}, count=1)
    pool.negotiate()
    assert probe.observe([worker], 1_800_000_100.0).workers[1].used_cores == 0  # a draining node takes nothing
