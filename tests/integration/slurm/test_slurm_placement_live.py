"""Packing by expected runtime on a real SLURM cluster: the elastic round sets node weights, jobs land by them.

munged, slurmctld and three slurmd run for real on loopback (as in test_slurm_cluster_live); the weights are read
back with ``scontrol show node`` and the jobs' nodes from squeue. Skipped, saying so, without SLURM and munge.
"""

from __future__ import annotations

import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from slurm_processes import cluster_processes
from waiting import until

from airflow_cloud_paas.scaling.probe import make_probe
from airflow_cloud_paas.services.slurm.cluster import LocalSlurmCluster
from airflow_cloud_paas.services.slurm.config import ClusterSpec
from airflow_cloud_paas.services.slurm.errors import SlurmClusterError

pytestmark = pytest.mark.integration


@pytest.fixture
def cluster() -> Iterator[LocalSlurmCluster]:
    """Start a cluster of three 4-CPU workers, jobs up to an hour; stop it, and every process it made, by PID."""
    try:
        LocalSlurmCluster.executables()
    except SlurmClusterError as err:
        pytest.skip(str(err))
    work = Path(tempfile.mkdtemp(prefix="slurm-pack-"))
    running = LocalSlurmCluster(ClusterSpec(work, max_workers=3, cpus_per_worker=4, max_time=60),
                                register_timeout=20)
    try:
        running.start(workers=3)
        yield running
    finally:
        running.stop()
        left = cluster_processes(work)
        for process in left:  # never leave a daemon behind, but fail the test whose teardown did
            process.kill()
        shutil.rmtree(work, ignore_errors=True)
        assert not left, f"stop() left {[(p.pid, p.name()) for p in left]}"


def weights(cluster: LocalSlurmCluster) -> dict[str, int]:
    """Return each node's weight as ``scontrol show node`` prints it."""
    out = cluster.client.run("scontrol", "--oneliner", "show", "node")
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"NodeName=(\S+).*?\bWeight=(\d+)", out)}


def node_of(cluster: LocalSlurmCluster, job_id: str) -> str:
    """Return the node a job runs on, once it runs."""
    return until(f"job {job_id} to run", lambda: (j := cluster.client.job(job_id)).state == "RUNNING"
                 and j.nodes and j.nodes[0], 30)


def test_weights_follow_expected_ends_and_the_next_job_lands_where_pack_would_put_it(
        cluster: LocalSlurmCluster) -> None:
    client = cluster.client
    probe = make_probe("slurm", str(cluster.spec.slurm_conf), placement="pack")
    out = cluster.spec.work_dir / "out"
    out.mkdir()

    def submit(minutes: int, **kwargs: object) -> str:
        return client.submit(wrap="sleep 900", time_limit=minutes, workdir=str(out), **kwargs)

    assert set(weights(cluster).values()) == {1}, "slurm.conf's default weight before any round"
    # SLURM alone (all weights 1) would put the hour job below on worker2 (measured: it fills a busy node first)
    ten = submit(10, nodelist=["worker2"], job_name="ten")        # worker2: expected empty in 10 minutes
    thirty = submit(30, nodelist=["worker3"], job_name="thirty")  # worker3: in 30; worker1 runs nothing
    assert (node_of(cluster, ten), node_of(cluster, thirty)) == ("worker2", "worker3")

    # nothing pends: the weights are for a job of the typical runtime (an hour before any job ended), which ends
    # after both busy nodes: pack puts it on the one it extends least (worker3, ending last), an empty node last
    plan = probe.place(time.time())
    assert plan["reference"] == "typical" and plan["reference_runtime_s"] == 3600
    assert weights(cluster) == {"worker3": 1, "worker2": 2, "worker1": 3} == plan["weights"]
    assert plan["node_ends"]["worker2"] < plan["node_ends"]["worker3"] and "worker1" not in plan["node_ends"]
    assert probe.place(time.time())["changed"] == {}, "a second round sets nothing again"
    hour = submit(60, job_name="hour")
    assert node_of(cluster, hour) == "worker3", "SLURM gave it the lowest weight that fits"

    # a 5-minute job waits (the partition is down): the next round orders the nodes for it, the one whose jobs
    # end soonest after it first (worker2, in 10 minutes), then worker3 (in an hour), then the empty worker1
    client.run("scontrol", "update", "partitionname=main", "state=down")
    five = submit(5, job_name="five")
    until("the 5-minute job to pend", lambda: client.job(five).state == "PENDING", 15)
    plan = probe.place(time.time())
    assert (plan["reference"], plan["reference_runtime_s"]) == (five, 300)
    assert weights(cluster) == {"worker2": 1, "worker3": 2, "worker1": 3} == plan["weights"]
    assert plan["changed"] == {"worker2": 1, "worker3": 2}
    client.run("scontrol", "update", "partitionname=main", "state=up")
    # the previous round's weights (worker3 first) would have put it on worker3
    assert node_of(cluster, five) == "worker2", "the packed node, not the empty one nor the one ending last"

    # placement off: the probe leaves the weights alone
    assert make_probe("slurm", str(cluster.spec.slurm_conf)).place(time.time()) is None  # the default
    for job in (ten, thirty, hour, five):
        client.cancel(job)

    # what ended is learned (cancelled jobs are not): a job that asked for 10 minutes and ran a second makes the
    # typical job short; squeue still shows it for MinJobAge, there is no accounting to ask later
    quick = client.submit(wrap="true", time_limit=10, workdir=str(out), job_name="quick")
    until("the quick job to complete", lambda: client.job(quick).state == "COMPLETED", 30)
    plan = probe.place(time.time())
    assert plan["reference"] == "typical" and plan["reference_runtime_s"] < 60
