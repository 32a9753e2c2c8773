"""Reading SLURM 22.05's ``squeue --json``/``sinfo --json`` answers, and the probe's view built from them."""

from __future__ import annotations

from airflow_cloud_paas.backends.base import Resource, ResourceState
from airflow_cloud_paas.scaling.policy import WorkerState
from airflow_cloud_paas.services.slurm.client import PendingJob, SlurmNode, parse_jobs, parse_nodes
from airflow_cloud_paas.services.slurm.probe import SlurmProbe

# trimmed from a real 22.05.8 answer (openapi/v0.0.38): a running task, the pending rest of its array, a plain job
SQUEUE = {"meta": {}, "errors": [], "jobs": [
    {"job_id": 7, "name": "arr", "job_state": "RUNNING", "state_reason": "None", "cpus": 1, "time_limit": 5,
     "submit_time": 1000, "start_time": 1001, "nodes": "worker1", "exit_code": 0, "array_job_id": 4,
     "array_task_id": 0, "array_task_string": ""},
    {"job_id": 4, "name": "arr", "job_state": "PENDING", "state_reason": "Resources", "cpus": 1, "time_limit": 5,
     "submit_time": 1000, "start_time": 0, "nodes": "", "exit_code": 0, "array_job_id": 4,
     "array_task_id": None, "array_task_string": "1-3"},
    {"job_id": 9, "name": "big", "job_state": "PENDING", "state_reason": "Priority", "cpus": 2,
     "time_limit": 4294967294, "submit_time": 1002, "start_time": 0, "nodes": "", "exit_code": 0,
     "array_job_id": 0, "array_task_id": None, "array_task_string": ""},
]}
SINFO = {"meta": {}, "errors": [], "nodes": [
    {"name": "worker1", "state": "allocated", "state_flags": [], "cpus": 2, "alloc_cpus": 1, "reason": "",
     "partitions": ["main"]},
    {"name": "worker2", "state": "idle", "state_flags": ["DRAIN"], "cpus": 2, "alloc_cpus": 0,
     "reason": "retire", "partitions": ["main"]},
    {"name": "worker3", "state": "idle", "state_flags": [], "cpus": 2, "alloc_cpus": 0, "reason": "",
     "partitions": ["main"]},
    {"name": "worker4", "state": "down", "state_flags": ["NOT_RESPONDING"], "cpus": 2, "alloc_cpus": 0,
     "reason": "", "partitions": ["main"]},
]}


def test_each_array_task_is_a_job_and_infinite_is_none() -> None:
    jobs = {j.job_id: j for j in parse_jobs(SQUEUE)}
    assert sorted(jobs) == ["4_0", "4_1", "4_2", "4_3", "9"]
    assert jobs["4_0"].state == "RUNNING" and jobs["4_0"].nodes == ("worker1",) and jobs["4_0"].reason is None
    assert jobs["4_2"].state == "PENDING" and jobs["4_2"].array_task_id == 2 and jobs["4_2"].time_limit_min == 5
    assert jobs["9"].time_limit_min is None and jobs["9"].cpus == 2 and not jobs["9"].finished


def test_nodes_keep_their_flags() -> None:
    nodes = {n.name: n for n in parse_nodes(SINFO)}
    assert nodes["worker1"].busy and not nodes["worker1"].draining
    assert nodes["worker2"].draining and not nodes["worker2"].busy and nodes["worker2"].reason == "retire"
    assert not nodes["worker4"].responding


class _Answers:
    """The hook's two reads, answered from the recorded JSON (the live probe is tested in tests/integration/slurm)."""

    def __init__(self) -> None:
        self.drained: list[str] = []

    def queue(self) -> list[PendingJob]:
        return [PendingJob(j.job_id, j.name, j.cpus, j.time_limit_min, j.submitted_s, j.reason)
                for j in parse_jobs(SQUEUE) if j.state == "PENDING"]

    def nodes(self) -> list[SlurmNode]:
        return parse_nodes(SINFO)

    def drain(self, name: str, reason: str) -> None:
        self.drained.append(name)


def _worker(index: int, **attributes: str) -> Resource:
    return Resource("d1", "wn", index, "local", f"r{index}", ResourceState.RUNNING, attributes)


def test_the_probe_reads_demand_and_worker_states() -> None:
    hook = _Answers()
    probe = SlurmProbe(hook=hook)
    workers = [_worker(0, slurm_node="worker1"), _worker(1, slurm_node="worker2"),
               _worker(2, hostname="worker3.cluster.local"), _worker(3, slurm_node="worker4"),
               _worker(4, slurm_node="worker5")]
    seen = probe.observe(workers, now=2000.0)
    assert [(q.cpus, q.submitted_s) for q in seen.queued] == [(1, 1000.0)] * 3 + [(2, 1002.0)]
    assert seen.workers[0].state is WorkerState.BUSY and seen.workers[0].used_cores == 1
    assert seen.workers[1].state is WorkerState.DRAINING
    assert seen.workers[2].state is WorkerState.IDLE and seen.workers[2].cores == 2
    assert 3 not in seen.workers and 4 not in seen.workers  # not responding, not registered: booting
    probe.drain(workers[2])
    probe.drain(workers[1])  # already draining: left alone
    assert hook.drained == ["worker3"]
