"""cloud-paas deploy/scale/delete trigger DAGs through the REST API of a real Airflow (standalone:
real scheduler, dag-processor, API server, LocalExecutor) and the deployment really changes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
import requests
from waiting import free_port, until

from airflow_cloud_paas.standalone import LocalAirflow

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def airflow(tmp_path_factory):
    home = tmp_path_factory.mktemp("standalone")
    server = LocalAirflow(home, free_port(), dags_folder=REPO / "dags")
    # bob: a user of the simple auth manager's "user" role (may run DAGs), not an admin
    server.env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"] = "admin:admin,bob:user"
    with server:
        yield server


def _cli(server: LocalAirflow, *args: str, user: str | None = None) -> subprocess.CompletedProcess:
    """Run cloud-paas logged in as ``user`` (default: the admin)."""
    if user is None:
        user, password = server.credentials()
    else:
        password = json.loads(server.password_file.read_text())[user]
    env = {k: v for k, v in server.env.items()}
    env.update({"CLOUD_PAAS_API_URL": server.url, "CLOUD_PAAS_API_USER": user, "CLOUD_PAAS_API_PASSWORD": password})
    exe = Path(sys.executable).with_name("cloud-paas")
    return subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=400, env=env)


def _wait_for_dags(server: LocalAirflow, dag_ids: list[str], timeout: float = 180) -> None:
    user, password = server.credentials()
    token = requests.post(f"{server.url}/auth/token", json={"username": user, "password": password},
                          timeout=10).json()["access_token"]
    headers = {"Authorization": f"Bearer {token}"}

    def parsed() -> bool:
        return all(requests.get(f"{server.url}/api/v2/dags/{d}", headers=headers, timeout=10).status_code == 200
                   for d in dag_ids)

    until(f"DAGs {dag_ids} to be parsed", parsed, timeout, interval=2)


def _alive_workers(webui: str) -> int:
    return len([w for w in requests.get(f"{webui}/json/", timeout=10).json()["workers"] if w["state"] == "ALIVE"])


def test_deploy_scale_delete_through_the_rest_api(airflow):
    _wait_for_dags(airflow, ["spark_cluster_service", "cloud_paas_scale_deployment", "cloud_paas_delete_deployment"])
    out = _cli(airflow, "deploy", "spark_cluster_service", "--input", "worker_count=1", "--wait", "--timeout", "300")
    assert out.returncode == 0, out.stdout + out.stderr
    deployment_id = json.loads(out.stdout.splitlines()[0])["deployment_id"]
    assert json.loads(out.stdout.splitlines()[-1])["status"] == "CREATE_COMPLETE"

    shown = _cli(airflow, "show", deployment_id, "--json")
    record = json.loads(shown.stdout)
    webui = record["outputs"]["spark_webui_url"]
    assert _alive_workers(webui) == 1

    out = _cli(airflow, "scale", deployment_id, "spark_worker", "2", "--wait", "--timeout", "300")
    assert out.returncode == 0, out.stdout + out.stderr
    assert _alive_workers(webui) == 2
    # a second scale must wait for its own run, not return on the first one's UPDATE_COMPLETE
    out = _cli(airflow, "scale", deployment_id, "spark_worker", "3", "--wait", "--timeout", "300")
    assert out.returncode == 0, out.stdout + out.stderr
    assert json.loads(out.stdout.splitlines()[-1])["dag_run_state"] == "success"
    assert _alive_workers(webui) == 3

    # the plugin's API answers inside Airflow's API server, to logged-in users only, secrets masked
    user, password = airflow.credentials()
    token = requests.post(f"{airflow.url}/auth/token", json={"username": user, "password": password},
                          timeout=10).json()["access_token"]
    api = f"{airflow.url}/cloud-paas/api/deployments/{deployment_id}"
    assert requests.get(api, timeout=10).status_code == 401
    shown = requests.get(api, headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert shown.status_code == 200 and shown.json()["status"] == "UPDATE_COMPLETE"

    listed = json.loads(_cli(airflow, "list", "--json").stdout)
    assert {"id": deployment_id, "status": "UPDATE_COMPLETE"}.items() <= next(
        d for d in listed if d["id"] == deployment_id).items()

    # bob, another user, logged in to the CLI: not his deployment, so not listed, not shown, not deleted
    assert deployment_id not in _cli(airflow, "list", "--json", user="bob").stdout
    hidden = _cli(airflow, "show", deployment_id, user="bob")
    assert hidden.returncode == 2 and "not found among the deployments the user logged in as 'bob'" in hidden.stderr
    assert webui not in hidden.stdout + hidden.stderr
    refused = _cli(airflow, "delete", deployment_id, "--wait", "--timeout", "300", user="bob")
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert json.loads(refused.stdout.splitlines()[-1])["dag_run_state"] == "failed"
    assert "may not delete deployment" in refused.stderr, refused.stderr
    assert json.loads(_cli(airflow, "show", deployment_id, "--json").stdout)["status"] == "UPDATE_COMPLETE"
    assert _alive_workers(webui) == 3

    out = _cli(airflow, "delete", deployment_id, "--wait", "--timeout", "300")
    assert out.returncode == 0, out.stdout + out.stderr
    assert json.loads(_cli(airflow, "show", deployment_id, "--json").stdout)["status"] == "DELETE_COMPLETE"
    work = airflow.home / "cloud_paas" / "work" / deployment_id
    left = [p for p in psutil.process_iter(["cmdline"]) if str(work) in " ".join(p.info["cmdline"] or [])]
    assert not left


def test_unknown_dag_is_a_clear_error(airflow):
    out = _cli(airflow, "deploy", "no_such_dag")
    assert out.returncode == 2 and "no_such_dag" in out.stderr and "404" in out.stderr
    _, password = airflow.credentials()
    assert password not in out.stdout + out.stderr


def test_a_misspelt_input_fails_the_run_and_the_cli_says_why(airflow):
    """A run refused before its deployment is recorded: the CLI shows the task's error, not a store hint."""
    _wait_for_dags(airflow, ["spark_cluster_service"])
    out = _cli(airflow, "deploy", "spark_cluster_service", "--input", "workers=3", "--wait", "--timeout", "300")
    assert out.returncode == 1, out.stdout + out.stderr
    assert json.loads(out.stdout.splitlines()[-1])["dag_run_state"] == "failed"
    assert "unknown key(s) workers" in out.stderr and "worker_count" in out.stderr, out.stderr
    assert "deployment.create" in out.stderr and "store this command reads" not in out.stderr, out.stderr


def test_a_deployment_whose_worker_died_is_recovered_by_cloud_paas_reconcile(airflow):
    """A create killed mid-way (SIGKILL after its 3rd backend call) is undone by the reconcile DAG in Airflow."""
    from airflow_cloud_paas.backends.local import LocalBackend
    from airflow_cloud_paas.store import DeploymentStore

    _wait_for_dags(airflow, ["cloud_paas_reconcile"])
    store_url = json.loads(airflow.env["AIRFLOW_CONN_CLOUD_PAAS_DEFAULT"])["extra"]["store_url"]
    work = airflow.home / "cloud_paas" / "work"
    killed = subprocess.run([sys.executable, str(REPO / "tests" / "unit" / "deployer" / "killed_step.py"), store_url,
                             str(work), "create", "3"], capture_output=True, text=True, timeout=300)
    assert killed.returncode == -9, killed.stderr
    store = DeploymentStore(store_url)
    assert store.get("dep-killed").status == "CREATE_IN_PROGRESS"
    pids = [r.attributes["pid"] for r in LocalBackend(work).describe("dep-killed") if r.attributes.get("pid")]
    running = [psutil.Process(pid) for pid in pids]
    assert running  # what it made goes on running with nobody to account for it

    out = _cli(airflow, "reconcile", "--wait", "--timeout", "300")
    assert out.returncode == 0, out.stdout + out.stderr
    record = store.get("dep-killed")
    assert record.status == "CREATE_FAILED" and "undone" in record.status_reason and record.resources == ()
    assert any(e.kind == "reconciled" and "is dead" in e.message for e in record.events)
    assert not [p for p in running if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
