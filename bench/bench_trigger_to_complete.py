"""Time from trigger to CREATE_COMPLETE for the Spark template through the real scheduler.

Starts Airflow standalone (scheduler, dag-processor, triggerer, API server, LocalExecutor) on
127.0.0.1, triggers the spark_cluster_service DAG through the REST API RUNS times, and splits
each run's time into: the backend (creating resources and waiting for Spark to be ALIVE, timed
inside the deployer), task overhead (the rest of the time some deployment task was running:
process start, imports, store writes) and Airflow scheduling (no deployment task running:
scheduling, queueing, hops between dependent tasks). Each deployment is deleted after.
Run: .venv/bin/python bench/bench_trigger_to_complete.py
"""

from __future__ import annotations

import os
import socket
import statistics
import sys
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
RUNS = int(os.environ.get("BENCH_RUNS", "3"))
DAG = "spark_cluster_service"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def ts(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def union(intervals: list[tuple[float, float]]) -> float:
    total, end = 0.0, None
    for a, b in sorted(intervals):
        if end is None or a > end:
            total += b - a
            end = b
        elif b > end:
            total += b - end
            end = b
    return total


def main() -> None:
    from airflow_cloud_paas.cli import AirflowApi
    from airflow_cloud_paas.standalone import LocalAirflow
    from airflow_cloud_paas.store import DeploymentStore

    home = Path(tempfile.mkdtemp(prefix="bench_trigger_"))
    rows = []
    with LocalAirflow(home, free_port()) as server:
        user, password = server.credentials()
        api = AirflowApi(server.url, user, password)
        while api.session.get(f"{server.url}/api/v2/dags/{DAG}", timeout=10).status_code != 200:
            time.sleep(1)
        store = DeploymentStore(f"sqlite:///{home}/cloud_paas/deployments.db")
        for _ in range(RUNS):
            deployment_id = f"bench-{uuid.uuid4().hex[:8]}"
            t0 = time.time()
            run = api.trigger(DAG, {"deployment_id": deployment_id, "worker_count": 1})
            while True:
                try:
                    record = store.get(deployment_id)
                except Exception:
                    record = None
                if record is not None and record.status in ("CREATE_COMPLETE", "CREATE_FAILED"):
                    break
                time.sleep(0.2)
            assert record.status == "CREATE_COMPLETE", record.status_reason
            done = max(e.at.timestamp() for e in store.events(deployment_id)
                       if (e.data or {}).get("status") == "CREATE_COMPLETE" or "CREATE_COMPLETE" in e.message)
            while api.run_state(DAG, run["dag_run_id"]) not in ("success", "failed"):
                time.sleep(0.5)
            tis = api.session.get(
                f"{server.url}/api/v2/dags/{DAG}/dagRuns/{run['dag_run_id']}/taskInstances", timeout=10
            ).json()["task_instances"]
            intervals = [(ts(t["start_date"]), min(ts(t["end_date"]), done)) for t in tis
                         if t["start_date"] and t["end_date"] and ts(t["start_date"]) < done]
            backend = sum((e.data or {}).get("backend_seconds", 0) for e in store.events(deployment_id)
                          if e.kind == "node_created")
            total = done - t0
            in_tasks = union(intervals)
            rows.append((total, backend, in_tasks - backend, total - in_tasks))
            api.trigger("cloud_paas_delete_deployment", {"deployment_id": deployment_id})
            while store.get(deployment_id).status not in ("DELETE_COMPLETE", "DELETE_FAILED"):
                time.sleep(0.5)
    print(f"Trigger -> CREATE_COMPLETE, Spark template (master + 1 worker), {RUNS} runs, seconds")
    print(f"{'run':>4} {'total':>7} {'backend':>8} {'task ovh':>9} {'scheduling':>11}")
    for i, (total, backend, task, sched) in enumerate(rows, 1):
        print(f"{i:>4} {total:>7.1f} {backend:>8.1f} {task:>9.1f} {sched:>11.1f}")
    med = [statistics.median(col) for col in zip(*rows, strict=True)]
    print(f"{'med':>4} {med[0]:>7.1f} {med[1]:>8.1f} {med[2]:>9.1f} {med[3]:>11.1f}")


if __name__ == "__main__":
    main()
