"""A real SLURM cluster on loopback: jobs pend beyond capacity, a worker is added, the probe sees demand and states,
a busy worker's drain keeps its job, an idle worker is removed, and teardown leaves no SLURM process.

munged, slurmctld and slurmd run for real (Debian's ``slurm-wlm`` and ``munge``; ``make system-deps``); the tests
skip, saying so, without them. Each cluster has its own munge key and socket in its directory (/etc/munge is not
used) and is stopped by PID in the fixture's finally.
"""

from __future__ import annotations

import json
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from slurm_processes import cluster_processes
from waiting import until

from airflow_cloud_paas.backends.base import Resource, ResourceState
from airflow_cloud_paas.hooks.slurm import SlurmHook
from airflow_cloud_paas.scaling.policy import WorkerState
from airflow_cloud_paas.scaling.probe import make_probe, queued_demand
from airflow_cloud_paas.services.slurm.cluster import LocalSlurmCluster
from airflow_cloud_paas.services.slurm.config import ClusterSpec
from airflow_cloud_paas.services.slurm.errors import (
    SlurmClusterError,
    SlurmCommandError,
    SlurmConfigError,
    SlurmJobNotFoundError,
    SlurmNodeBusyError,
)

pytestmark = pytest.mark.integration



def worker(index: int, node: str) -> Resource:
    """Return the resource a backend would report for the worker ``node``."""
    return Resource("slurm1", "slurm_wn", index, "local", f"slurmd-{node}", ResourceState.RUNNING,
                    {"slurm_node": node})


@pytest.fixture
def work_dir() -> Iterator[Path]:
    """Return a short directory for one cluster (munge's socket path must stay under 108 bytes)."""
    try:
        LocalSlurmCluster.executables()
    except SlurmClusterError as err:
        pytest.skip(str(err))
    work = Path(tempfile.mkdtemp(prefix="slurm-test-"))
    try:
        yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)


@pytest.fixture
def cluster(work_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalSlurmCluster]:
    """Start a cluster of up to 3 one-CPU workers, 1 running, jobs up to 30 minutes; ``slurm_test`` names it."""
    running = LocalSlurmCluster(ClusterSpec(work_dir, max_workers=3, max_time=30), register_timeout=20)
    try:
        running.start(workers=1)
        monkeypatch.setenv("AIRFLOW_CONN_SLURM_TEST", json.dumps(
            {"conn_type": "slurm", "extra": running.connection_extras()}))
        yield running
    finally:
        running.stop()
        left = cluster_processes(work_dir)
        for process in left:  # never leave a daemon behind, but fail the test whose teardown did
            process.kill()
        assert not left, f"stop() left {[(p.pid, p.name()) for p in left]}"


def test_jobs_pend_a_worker_is_added_all_finish_and_workers_drain_and_go(cluster: LocalSlurmCluster,
                                                                         work_dir: Path) -> None:
    hook = SlurmHook(slurm_conn_id="slurm_test", timeout=15)
    probe = make_probe("slurm", "slurm_test")
    w1, w2, w3 = worker(0, "worker1"), worker(1, "worker2"), worker(2, "worker3")
    out = work_dir / "out"
    out.mkdir()

    jobs = [hook.submit(wrap=f"sleep 2; echo job {i} on $SLURMD_NODENAME", cpus=1, time_limit="0:50",
                        job_name=f"short{i}", output=f"{out}/%j.txt") for i in range(5)]
    array = hook.submit("#!/bin/sh\necho task $SLURM_ARRAY_TASK_ID\n", array="0-2", time_limit=2,
                        job_name="arr", output=f"{out}/%A_%a.txt")

    # one 1-CPU worker: at most one job runs, the rest pend with their requests
    pending = until("jobs pending beyond the one worker's capacity", lambda: len(hook.queue()) >= 6 and hook.queue())
    assert {p.job_id for p in pending} >= {f"{array}_{t}" for t in range(3)}
    assert {(p.cpus, p.time_limit_min) for p in pending} <= {(1, 1), (1, 2)}
    seen = until("worker1 busy with a job", lambda: (s := probe.observe([w1, w2, w3], now=0.0)).workers
                 and s.workers[0].state is WorkerState.BUSY and s)
    assert len(hook.jobs(states=("RUNNING",))) <= 1
    assert len(seen.queued) >= 5 and all(q.cpus == 1 and q.submitted_s for q in seen.queued)
    assert seen.workers[0].used_cores == 1
    assert set(seen.workers) == {0}, "worker2 and worker3 are not started: booting"
    assert queued_demand("slurm", "slurm_test") >= 4

    assert cluster.add_worker() == "worker2"
    assert cluster.workers == ["worker1", "worker2"]
    until("every job and array task to finish", lambda: all(hook.job_state(j).finished for j in
                                                            [*jobs, *(f"{array}_{t}" for t in range(3))]), 60)
    ran_on = set()
    for i, job in enumerate(jobs):
        state = hook.job_state(job)
        assert (state.state, state.exit_code, state.name) == ("COMPLETED", 0, f"short{i}")
        text = hook.job_output(job)
        assert text.startswith(f"job {i} on worker")
        ran_on.add(text.split()[-1])
    assert ran_on == {"worker1", "worker2"}, "the added worker took jobs"
    assert [hook.job_output(f"{array}_{t}") for t in range(3)] == [f"task {t}\n" for t in range(3)]

    idle = until("both workers idle", lambda: (s := probe.observe([w1, w2], now=0.0)).workers
                 and all(v.state is WorkerState.IDLE for v in s.workers.values()) and s)
    assert idle.queued == () and {i: (v.cores, v.used_cores) for i, v in idle.workers.items()} == {0: (1, 0),
                                                                                                     1: (1, 0)}

    # a busy worker: its drain keeps the job running, removal refuses, the job finishes on it
    long_job = hook.submit(wrap="sleep 3; echo survived", time_limit=1, output=f"{out}/%j.txt",
                           nodelist=["worker2"])
    until("the job to run on worker2", lambda: hook.job_state(long_job).state == "RUNNING")
    assert probe.observe([w1, w2], now=0.0).workers[1].state is WorkerState.BUSY
    probe.drain(w2)
    assert probe.observe([w1, w2], now=0.0).workers[1].state is WorkerState.DRAINING
    with pytest.raises(SlurmNodeBusyError, match="worker2"):
        cluster.remove_worker("worker2")
    assert "worker2" in cluster.workers and hook.job_state(long_job).state == "RUNNING"
    until("the drained worker's job to finish", lambda: hook.job_state(long_job).finished, 30)
    assert (hook.job_state(long_job).state, hook.job_output(long_job)) == ("COMPLETED", "survived\n")

    # idle now: removed, its slot hidden again, its slurmd gone
    cluster.remove_worker("worker2", timeout=10)
    assert cluster.workers == ["worker1"]
    assert [n.name for n in hook.nodes()] == ["worker1"]
    assert not [p for p in cluster_processes(work_dir) if "worker2" in " ".join(p.cmdline())]
    assert set(probe.observe([w1, w2], now=0.0).workers) == {0}

    # the slot can be used again
    assert cluster.add_worker() == "worker2"
    doomed = hook.submit(wrap="sleep 30", time_limit=1, workdir=str(out))
    hook.cancel(doomed)
    assert until("the cancelled job to end", lambda: hook.job_state(doomed).finished and hook.job_state(doomed),
                 15).state == "CANCELLED"
    with pytest.raises(SlurmJobNotFoundError):
        hook.job_state(999999)


def test_a_connection_by_host_and_port_reaches_the_controller(cluster: LocalSlurmCluster, work_dir: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_SLURM_HOSTPORT", json.dumps({
        "conn_type": "slurm", "host": "127.0.0.1", "port": cluster.controller_port,
        "extra": {"munge_socket": str(cluster.spec.munge_socket), "cluster_name": cluster.spec.cluster_name}}))
    hook = SlurmHook(slurm_conn_id="slurm_hostport", timeout=15)
    assert hook.slurm_conf != cluster.spec.slurm_conf and hook.test_connection() == (True, "slurmctld is UP")
    assert [(n.name, n.cpus) for n in hook.nodes()] == [("worker1", 1)]
    job = hook.submit(wrap="echo via host and port", output=f"{work_dir}/%j.out")
    until("the job to finish", lambda: hook.job_state(job).finished, 30)
    assert hook.job_output(job) == "via host and port\n"
    with pytest.raises(SlurmConfigError, match="time_limit"):
        hook.submit(wrap="true", time_limit="25:61:00")  # outside SLURM's rules: sbatch never runs
    with pytest.raises(SlurmCommandError, match="sbatch .*--time=0-01:00:00.*time limit"):
        hook.submit(wrap="true", time_limit=60)  # over the partition's MaxTime: sbatch refuses it


def test_a_worker_that_cannot_register_is_reported_and_stopped(cluster: LocalSlurmCluster) -> None:
    with socket.socket() as taken:  # worker3's port is in use: its slurmd cannot listen
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        taken.bind(("127.0.0.1", cluster.slurmd_ports["worker3"]))
        taken.listen()
        with pytest.raises(SlurmClusterError, match="worker3.*exited with status 1 before registering"):
            cluster.add_worker("worker3")
    assert cluster.workers == ["worker1"]


def test_stop_leaves_no_daemon_step_daemon_or_job(work_dir: Path) -> None:
    cluster = LocalSlurmCluster(ClusterSpec(work_dir, max_workers=1))
    try:
        cluster.start(workers=1)
        job = cluster.client.submit(wrap="sleep 60", time_limit=2, workdir=str(work_dir))
        until("the job to run", lambda: cluster.client.job(job).state == "RUNNING")
        stepds = until("its slurmstepd", lambda: [p for p in cluster_processes(work_dir) if p.name() == "slurmstepd"])
        sleeps = [c for p in stepds for c in p.children(recursive=True)]
        assert sleeps, "the job's processes run under its slurmstepd"
    finally:
        cluster.stop()
    assert cluster_processes(work_dir) == []
    assert not [p for p in sleeps if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
