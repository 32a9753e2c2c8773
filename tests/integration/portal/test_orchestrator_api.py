"""The orchestrator-compatible API inside a real Airflow (standalone), with tokens from a real OIDC provider:
alice deploys a Spark cluster shared with her group, bob (another group) can neither see nor change it, carol
(alice's group) and an admin see it, alice scales and deletes it; bad tokens are refused and nothing leaks."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
import requests
from oidc_fixtures import ADMIN_GROUP, AUDIENCE, OTHER_AUDIENCE, oidc_provider  # noqa: F401 - the fixture
from waiting import free_port, until

from airflow_cloud_paas.cli import AirflowApi
from airflow_cloud_paas.standalone import LocalAirflow

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[3]
TEMPLATE = (REPO / "airflow_cloud_paas" / "templates" / "spark_cluster.yaml").read_text()
PLANTED = "planted-S3cret-value-7f3a"


@pytest.fixture(scope="module")
def airflow(tmp_path_factory, oidc_provider):  # noqa: F811
    home = tmp_path_factory.mktemp("standalone")
    server = LocalAirflow(home, free_port(), dags_folder=REPO / "dags")
    server.env.update({"AIRFLOW_CLOUD_PAAS_OIDC_ISSUER": oidc_provider.issuer,
                       "AIRFLOW_CLOUD_PAAS_OIDC_AUDIENCE": AUDIENCE,
                       "AIRFLOW_CLOUD_PAAS_OIDC_ADMIN_GROUP": ADMIN_GROUP})
    with server:
        yield server


class Client:
    """requests against the orchestrator API with one Bearer token; every answer kept to look for leaks."""

    seen: list[str] = []

    def __init__(self, base: str, token: str | None) -> None:
        self.base = f"{base}/cloud-paas/orchestrator"
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}

    def __call__(self, method: str, path: str, **kwargs) -> requests.Response:
        resp = requests.request(method, f"{self.base}{path}", headers=self.headers, timeout=30, **kwargs)
        Client.seen.append(resp.text)
        return resp


def _forged(token: str, **claims) -> str:
    """Return the token with its payload changed and the original signature kept."""
    header, payload, signature = token.split(".")
    data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    data.update(claims)
    body = base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()
    return f"{header}.{body}.{signature}"


def _wait_for_dags(server: LocalAirflow, dag_ids: list[str]) -> None:
    user, password = server.credentials()
    token = requests.post(f"{server.url}/auth/token", json={"username": user, "password": password},
                          timeout=10).json()["access_token"]

    def parsed() -> bool:
        return all(requests.get(f"{server.url}/api/v2/dags/{d}", headers={"Authorization": f"Bearer {token}"},
                                timeout=10).status_code == 200 for d in dag_ids)

    until(f"DAGs {dag_ids} to be parsed", parsed, 180, interval=2)


def _status(client: Client, deployment_id: str) -> str | None:
    resp = client("get", f"/deployments/{deployment_id}")
    return resp.json()["status"] if resp.status_code == 200 else None


def test_bad_tokens_get_401_and_nothing_happens(airflow, oidc_provider):  # noqa: F811
    alice = oidc_provider.password_token("alice")
    for token in (None, "garbage", _forged(alice, sub="bob"), oidc_provider.password_token("alice", OTHER_AUDIENCE)):
        client = Client(airflow.url, token)
        assert client("get", "/deployments").status_code == 401
        refused = client("post", "/deployments", json={"template": TEMPLATE, "parameters": {"worker_count": 0}})
        assert refused.status_code == 401, refused.text
    audience = Client(airflow.url, oidc_provider.password_token("alice", OTHER_AUDIENCE))("get", "/deployments")
    assert "not for this API" in audience.json()["detail"]
    forged = Client(airflow.url, _forged(alice, sub="bob"))("get", "/deployments")
    assert "signature" in forged.json()["detail"]
    assert Client(airflow.url, alice)("get", "/deployments").json()["content"] == []  # nothing was created


def test_bad_parameters_are_400_naming_the_input_before_anything_runs(airflow, oidc_provider):  # noqa: F811
    alice = Client(airflow.url, oidc_provider.password_token("alice"))
    out_of_range = alice("post", "/deployments", json={"template": TEMPLATE, "parameters": {"worker_count": 99}})
    assert out_of_range.status_code == 400, out_of_range.text
    assert "worker_count" in json.dumps(out_of_range.json()["detail"])
    unknown = alice("post", "/deployments", json={"template": TEMPLATE, "parameters": {"db_password": PLANTED}})
    assert unknown.status_code == 400 and "db_password" in unknown.text and PLANTED not in unknown.text
    other_group = alice("post", "/deployments", json={"template": TEMPLATE, "userGroup": "biology"})
    assert other_group.status_code == 403
    assert alice("get", "/deployments").json()["content"] == []


def test_isolation_between_users_and_groups(airflow, oidc_provider):  # noqa: F811
    _wait_for_dags(airflow, ["spark_cluster_service", "cloud_paas_scale_deployment", "cloud_paas_delete_deployment"])
    alice = Client(airflow.url, oidc_provider.password_token("alice"))
    bob = Client(airflow.url, oidc_provider.password_token("bob"))
    carol = Client(airflow.url, oidc_provider.password_token("carol"))
    admin = Client(airflow.url, oidc_provider.password_token("admin"))

    created = alice("post", "/deployments",
                    json={"template": TEMPLATE, "parameters": {"worker_count": 1}, "userGroup": "physics"})
    assert created.status_code == 201, created.text
    deployment_id = created.json()["uuid"]
    until("CREATE_COMPLETE", lambda: _status(alice, deployment_id) in ("CREATE_COMPLETE", "CREATE_FAILED"), 300, 2)
    shown = alice("get", f"/deployments/{deployment_id}").json()
    assert shown["status"] == "CREATE_COMPLETE", alice("get", f"/deployments/{deployment_id}/log").text
    # the owner is the token's subject, who triggered the DAG run
    assert shown["createdBy"]["subject"] == "alice" and shown["userGroup"] == "physics"
    assert shown["outputs"]["spark_webui_url"].startswith("http://")

    mine = alice("get", "/deployments", params={"createdBy": "me", "size": 1})
    assert mine.json()["page"]["totalElements"] == 1 and mine.json()["content"][0]["uuid"] == deployment_id
    resources = alice("get", f"/deployments/{deployment_id}/resources").json()["content"]
    assert {r["toscaNodeName"] for r in resources} >= {"spark_master", "spark_worker"}
    assert "worker_count" in alice("get", f"/deployments/{deployment_id}/template").text
    assert "created" in alice("get", f"/deployments/{deployment_id}/log").text

    # bob: another group, not an admin: nothing to see, nothing to change
    assert bob("get", "/deployments").json()["content"] == []
    for method, path, body in (("get", "", None), ("get", "/resources", None), ("get", "/template", None),
                               ("get", "/log", None), ("put", "", {"parameters": {"worker_count": 2}}),
                               ("delete", "", None)):
        answer = bob(method, f"/deployments/{deployment_id}{path}", json=body)
        assert answer.status_code in (403, 404), (method, path, answer.status_code)
        assert "worker_count" not in answer.text
    assert _status(alice, deployment_id) == "CREATE_COMPLETE"
    assert len(alice("get", f"/deployments/{deployment_id}/resources").json()["content"]) == len(resources)

    # carol shares the group physics; the admin sees everything
    assert [d["uuid"] for d in carol("get", "/deployments").json()["content"]] == [deployment_id]
    assert carol("get", "/deployments", params={"createdBy": "me"}).json()["content"] == []
    assert admin("get", f"/deployments/{deployment_id}").status_code == 200

    # an Airflow user who is not its owner triggers the delete DAG in Airflow directly: the run is refused
    user, password = airflow.credentials()
    api = AirflowApi(airflow.url, username=user, password=password)
    run_id = api.trigger("cloud_paas_delete_deployment", {"deployment_id": deployment_id})["dag_run_id"]
    until("the direct delete run to end", lambda: api.run_state("cloud_paas_delete_deployment", run_id)
          in ("success", "failed"), 300, 2)
    assert api.run_state("cloud_paas_delete_deployment", run_id) == "failed"
    assert "may not delete deployment" in json.dumps(api.failed_tasks("cloud_paas_delete_deployment", run_id))
    assert _status(alice, deployment_id) == "CREATE_COMPLETE"

    # carol (group physics) scales it through the API, which grants her run (an update while one runs is a 409)
    scaled = carol("put", f"/deployments/{deployment_id}", json={"parameters": {"worker_count": 2}})
    assert scaled.status_code == 202, scaled.text
    until("UPDATE_IN_PROGRESS or done", lambda: _status(alice, deployment_id) != "CREATE_COMPLETE", 120, 0.5)
    if _status(alice, deployment_id) == "UPDATE_IN_PROGRESS":
        busy = alice("put", f"/deployments/{deployment_id}", json={"parameters": {"worker_count": 3}})
        assert busy.status_code == 409
    until("UPDATE_COMPLETE", lambda: _status(alice, deployment_id) in ("UPDATE_COMPLETE", "UPDATE_FAILED"), 300, 2)
    assert _status(alice, deployment_id) == "UPDATE_COMPLETE"
    workers = [r for r in alice("get", f"/deployments/{deployment_id}/resources").json()["content"]
               if r["toscaNodeName"] == "spark_worker"]
    assert len(workers) == 2
    log = alice("get", f"/deployments/{deployment_id}/log").text
    assert "authorized: update by carol (the owner or a member of its group) in run orchestrator__update__" in log

    assert alice("delete", f"/deployments/{deployment_id}").status_code == 204
    until("DELETE_COMPLETE", lambda: _status(alice, deployment_id) in ("DELETE_COMPLETE", "DELETE_FAILED"), 300, 2)
    assert _status(alice, deployment_id) == "DELETE_COMPLETE"


def test_openapi_is_served_and_no_answer_holds_a_secret(airflow):
    spec = requests.get(f"{airflow.url}/cloud-paas/orchestrator/openapi.json", timeout=10).json()
    assert {"/deployments", "/deployments/{deployment_id}", "/deployments/{deployment_id}/resources",
            "/deployments/{deployment_id}/template", "/deployments/{deployment_id}/log"} <= set(spec["paths"])
    assert Client.seen and not [text for text in Client.seen if PLANTED in text]
