"""A real Spark standalone cluster on the local backend, without Airflow.

Master and one worker come up, a PySpark job runs on the worker's executor and its result is
checked, the workers scale 1 -> 3 -> 1 (the master's ``/json/`` is the judge), and deleting the
deployment leaves no process behind. Timings are printed (run with ``-s`` to see them).
"""

from __future__ import annotations

import shutil
import time
import uuid
from pathlib import Path

import psutil
import pytest

from airflow_cloud_paas.backends.base import Resource, ResourceSpec, ResourceState
from airflow_cloud_paas.backends.local import LocalBackend
from airflow_cloud_paas.services.spark import master_status, submit_sum_of_squares

pytest.importorskip("pyspark")
pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("java") is None, reason="Spark needs Java (apt-get install openjdk-17-jre)"),
]

COMPUTE = ("cloud_paas.nodes.Compute", "tosca.nodes.Compute", "tosca.nodes.Root")
MASTER = ("cloud_paas.nodes.spark.Master", "tosca.nodes.SoftwareComponent", "tosca.nodes.Root")
WORKER = ("cloud_paas.nodes.spark.Worker", "tosca.nodes.SoftwareComponent", "tosca.nodes.Root")


def our_processes(path: Path) -> list[psutil.Process]:
    """Return live processes whose cwd or command line mentions ``path``."""
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:
                continue
            if str(path) in proc.cwd() or any(str(path) in arg for arg in proc.info["cmdline"] or ()):
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def java_descendants() -> set[tuple[int, float]]:
    """Return (pid, start time) of the java processes this test process started (any depth)."""
    found = set()
    for proc in psutil.Process().children(recursive=True):
        try:
            if proc.name() == "java" and proc.status() != psutil.STATUS_ZOMBIE:
                found.add((proc.pid, proc.create_time()))
        except psutil.NoSuchProcess:
            continue
    return found


def still_running(processes: set[tuple[int, float]]) -> list[int]:
    alive = []
    for pid, started in processes:
        try:
            proc = psutil.Process(pid)
            if proc.create_time() == started and proc.status() != psutil.STATUS_ZOMBIE:
                alive.append(pid)
        except psutil.NoSuchProcess:
            continue
    return alive


def test_spark_cluster_lifecycle(tmp_path: Path) -> None:
    backend = LocalBackend(tmp_path / "work", ready_timeout=120, stop_timeout=15)
    dep = f"spark-{uuid.uuid4().hex[:6]}"
    timings: dict[str, float] = {}
    started_java: set[tuple[int, float]] = set()

    def timed(name: str, func, *args):
        start = time.monotonic()
        result = func(*args)
        timings[name] = round(time.monotonic() - start, 2)
        started_java.update(java_descendants())
        return result

    def host_spec(node: str, index: int) -> ResourceSpec:
        return ResourceSpec(dep, node, index, COMPUTE[0], COMPUTE)

    def worker_spec(index: int) -> ResourceSpec:
        (host,) = [r for r in backend.describe(dep, "spark_worker_hosts") if r.index == index]
        return ResourceSpec(
            dep,
            "spark_worker",
            index,
            WORKER[0],
            WORKER,
            properties={"cores": 1, "memory": "512m"},
            requirements={"host": (host,), "master": (master,)},
        )

    def alive_workers() -> list[dict]:
        return master_status(master.attributes["webui_url"])["alive_workers"]

    try:
        master_host = backend.create(host_spec("spark_master_host", 0))
        master = timed(
            "master_start_s",
            backend.create,
            ResourceSpec(
                dep,
                "spark_master",
                0,
                MASTER[0],
                MASTER,
                properties={"port": 0, "webui_port": 0},
                requirements={"host": (master_host,)},
            ),
        )
        assert master.state == ResourceState.RUNNING
        assert master.attributes["spark_url"].startswith("spark://127.0.0.1:")
        assert master.attributes["webui_port"] != 8080
        status = master_status(master.attributes["webui_url"])
        assert status["status"] == "ALIVE" and status["url"] == master.attributes["spark_url"]

        backend.create(host_spec("spark_worker_hosts", 0))
        worker = timed("worker_start_s", backend.create, worker_spec(0))
        assert [w["id"] for w in alive_workers()] == [worker.attributes["worker_id"]]
        assert backend.create(worker_spec(0)).resource_id == worker.resource_id  # retry starts nothing
        assert len(alive_workers()) == 1

        n = 100_000
        result = timed("job_s", submit_sum_of_squares, master.attributes["spark_url"], n, 4)
        assert result["sum_of_squares"] == n * (n + 1) * (2 * n + 1) // 6
        assert result["worker_pids"] and result["driver_pid"] not in result["worker_pids"]

        def scale(count: int) -> list[Resource]:
            if count > len(backend.describe(dep, "spark_worker_hosts")):  # hosts first out, last in
                backend.scale(lambda i: host_spec("spark_worker_hosts", i), count)
                return backend.scale(worker_spec, count)
            workers = backend.scale(worker_spec, count)
            backend.scale(lambda i: host_spec("spark_worker_hosts", i), count)
            return workers

        workers = timed("scale_1_to_3_s", scale, 3)
        assert [w.index for w in workers] == [0, 1, 2]
        assert sorted(w["id"] for w in alive_workers()) == sorted(w.attributes["worker_id"] for w in workers)
        assert len(alive_workers()) == 3

        workers = timed("scale_3_to_1_s", scale, 1)
        assert [w.resource_id for w in workers] == [worker.resource_id]
        assert [w["id"] for w in alive_workers()] == [worker.attributes["worker_id"]]
        # the two removed workers were decommissioned gracefully before they were stopped
        master_log = Path(master.attributes["log_file"]).read_text()
        assert master_log.count("Decommissioning worker") == 2
        assert len(backend.describe(dep, "spark_worker_hosts")) == 1

        deleted = timed("delete_s", backend.delete, dep)
        assert sorted((r.node_name, r.index) for r in deleted) == [
            ("spark_master", 0),
            ("spark_master_host", 0),
            ("spark_worker", 0),
            ("spark_worker_hosts", 0),
        ]
        assert backend.describe(dep) == []
        assert not (tmp_path / "work" / dep).exists()
        assert our_processes(tmp_path / "work") == []
        assert len(started_java) >= 4  # master and 3 workers (executors come and go with the job)
        assert still_running(started_java) == [], "a java process started by this test survived the delete"
    finally:
        backend.delete(dep)
        print(f"\nspark on the local backend, seconds: {timings}")
