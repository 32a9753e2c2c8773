"""A node task SIGKILLed mid-step and the whole of Airflow restarted mid-run: the run's retries finish the deployment.

Real Airflow (standalone: scheduler, dag-processor, API server, LocalExecutor) runs ``test_kill_recovery``; its app
node's driver holds the start of instance 1 in the task process (see tests/dags/kill_recovery.py), the test
SIGKILLs that process there, stops Airflow, starts it again on the same home, and the run must end with the
deployment made (each instance once) and torn down, nothing left running.
"""

from __future__ import annotations

import os
import signal
import uuid
from pathlib import Path

import psutil
import pytest
from waiting import free_port, until

from airflow_cloud_paas.backends.local import LocalBackend
from airflow_cloud_paas.cli import AirflowApi
from airflow_cloud_paas.standalone import LocalAirflow
from airflow_cloud_paas.store import DeploymentStore

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[3]
DAG_ID = "test_kill_recovery"


def _api(server: LocalAirflow) -> AirflowApi:
    user, password = server.credentials()
    return AirflowApi(server.url, username=user, password=password)


def _dag_parsed(api: AirflowApi) -> bool:
    return api._send("get", f"/api/v2/dags/{DAG_ID}").status_code == 200


def test_a_killed_task_and_a_restarted_airflow_are_recovered_by_the_retries(tmp_path, monkeypatch):
    # a task whose process vanished is found by the scheduler after this many seconds without a heartbeat
    monkeypatch.setenv("AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT", "15")
    home, port = tmp_path / "home", free_port()
    work_root = home / "cloud_paas" / "work"
    hold = work_root / "hold"
    hold.mkdir(parents=True)
    deployment_id = f"killed-{uuid.uuid4().hex[:8]}"

    with LocalAirflow(home, port, dags_folder=REPO / "tests" / "dags") as server:
        api = _api(server)
        until("the DAG to be parsed", lambda: _dag_parsed(api), 240)
        run_id = api.trigger(DAG_ID, {"deployment_id": deployment_id})["dag_run_id"]
        pid_file = until("the app task to hold instance 1", lambda: next(hold.glob("*.pid"), None), 300)
        task = psutil.Process(int(pid_file.read_text()))
        store = DeploymentStore(f"sqlite:///{home / 'cloud_paas' / 'deployments.db'}")
        held = store.get(deployment_id)
        assert held.status == "CREATE_IN_PROGRESS" and held.lease_holder.split(":")[1] == str(task.pid)
        os.kill(task.pid, signal.SIGKILL)  # the worker is lost between two instances of the node
        task.wait(timeout=30)
    # Airflow stopped mid-run with the deployment CREATE_IN_PROGRESS and instance 0 running
    assert store.get(deployment_id).status == "CREATE_IN_PROGRESS"
    made_before = {r.index: r.attributes["pid"] for r in LocalBackend(work_root).describe(deployment_id, "app")}
    assert list(made_before) == [0]
    (hold / "release").touch()

    with LocalAirflow(home, port, dags_folder=REPO / "tests" / "dags") as server:
        api = _api(server)
        state = until("the run to end", lambda: (s := api.run_state(DAG_ID, run_id)) in ("success", "failed") and s,
                       420)
        assert state == "success", api.failed_tasks(DAG_ID, run_id)

    record = store.get(deployment_id)
    assert record.status == "DELETE_COMPLETE" and record.resources == ()
    # the killed try's next try (same run, same actor) resumed the create where it stood: no takeover by
    # another actor, no teardown of a half-made deployment
    actor = f"{DAG_ID}/{run_id}"
    resumed = [e for e in record.events if e.kind == "retry" and e.data["status"] == "CREATE_IN_PROGRESS"]
    assert len(resumed) == 1, [(e.kind, e.message) for e in record.events]
    assert resumed[0].data["actor"] == actor and resumed[0].data["after"].split(":")[1] == str(task.pid)
    assert "is dead" in resumed[0].message
    assert not [e for e in record.events if e.kind in ("lease_expired", "interrupted")]
    created = [e for e in record.events if e.kind == "node_created" and e.data and e.data.get("node") == "app"]
    assert len(created) == 1  # the retry completed the node once: instance 0 was kept, instance 1 made
    assert LocalBackend(work_root).describe(deployment_id) == []
    assert not [p for p in made_before.values() if psutil.pid_exists(p)
                and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]


def test_a_task_whose_worker_is_killed_stops_at_once_and_records_its_action_failed(tmp_path):
    """SIGKILL the LocalExecutor worker that runs a task mid-node: the task gets SIGTERM from the kernel
    (PR_SET_PDEATHSIG) and stops there, instead of making the node's next instances for a run nobody follows."""
    home, port = tmp_path / "home", free_port()
    work_root = home / "cloud_paas" / "work"
    hold = work_root / "hold"
    hold.mkdir(parents=True)
    deployment_id = f"orphaned-{uuid.uuid4().hex[:8]}"

    with LocalAirflow(home, port, dags_folder=REPO / "tests" / "dags") as server:
        api = _api(server)
        until("the DAG to be parsed", lambda: _dag_parsed(api), 240)
        api.trigger(DAG_ID, {"deployment_id": deployment_id})
        pid_file = until("the app task to hold instance 1", lambda: next(hold.glob("*.pid"), None), 300)
        task = psutil.Process(int(pid_file.read_text()))
        worker = task.parent()
        assert worker is not None and worker.pid != os.getpid()
        os.kill(worker.pid, signal.SIGKILL)
        task.wait(timeout=60)  # without the stop it would hold forever (nobody releases the hold here)
        store = DeploymentStore(f"sqlite:///{home / 'cloud_paas' / 'deployments.db'}")
        # (a retry of the task may already have resumed the create: look at the history, not the status now)
        failed = [e for e in store.get(deployment_id).events
                  if e.kind == "status" and (e.data or {}).get("to") == "CREATE_FAILED"]
        assert failed and "stopped (SIGTERM)" in failed[0].message, [e.message for e in failed]
