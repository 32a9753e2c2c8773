"""Secrets by declaration, by name and by flow: an output built from a secret is hidden in every sink."""

from __future__ import annotations

import json
import sqlite3
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from airflow_cloud_paas.exceptions import ToscaValidationError
from airflow_cloud_paas.secrets import MASK, is_secret_name
from airflow_cloud_paas.store import DeploymentStore
from airflow_cloud_paas.tosca import load_topology
from airflow_cloud_paas.tosca.flow import secret_outputs

TYPES = "https://raw.githubusercontent.com/airflow-cloud-paas/tosca-types/main/cloud_paas_types.yaml"

# (a) a secret-named input, (b) innocent names declared secret (metadata flag, credential datatypes),
# (c) an innocent name given as conn://; each echoed by an output, directly and inside a concat
TEMPLATE = f"""\
tosca_definitions_version: tosca_simple_yaml_1_0
imports:
  - cloud_paas: {TYPES}
data_types:
  site.Login:
    derived_from: tosca.datatypes.Credential
topology_template:
  inputs:
    admin_password: {{ type: string }}
    seed: {{ type: string, metadata: {{ secret: true }} }}
    login: {{ type: tosca.datatypes.Credential }}
    site_login: {{ type: site.Login }}
    upstream: {{ type: string }}
    bypass_cache: {{ type: boolean, default: true }}
    host_count: {{ type: integer, default: 1 }}
  node_templates:
    head:
      type: cloud_paas.nodes.Compute
    workers:
      type: cloud_paas.nodes.Compute
      capabilities:
        scalable:
          properties:
            count: {{ get_input: host_count }}
            max_instances: 3
  outputs:
    first: {{ value: {{ get_input: admin_password }} }}
    admin_url: {{ value: {{ concat: [ "https://admin:", {{ get_input: admin_password }}, "@host" ] }} }}
    seed_out: {{ value: {{ get_input: seed }} }}
    seed_url: {{ value: {{ concat: [ "s=", {{ concat: [ {{ get_input: seed }}, "/x" ] }} ] }} }}
    login_out: {{ value: {{ get_input: login }} }}
    site_out: {{ value: {{ get_input: site_login }} }}
    upstream_out: {{ value: {{ get_input: upstream }} }}
    upstream_url: {{ value: {{ concat: [ "db://u:", {{ get_input: upstream }}, "@db" ] }} }}
    head_address: {{ value: {{ get_attribute: [ head, public_address ] }} }}
    cache: {{ value: {{ get_input: bypass_cache }} }}
"""
SECRET_OUTPUTS = {"first", "admin_url", "seed_out", "seed_url", "login_out", "site_out", "upstream_out", "upstream_url"}


@pytest.mark.parametrize(("name", "secret"), [
    # secrets under many names
    ("password", True), ("admin_password", True), ("adminPassword", True), ("adminpassword", True),
    ("DB_PASSWD", True), ("db_pw", True), ("user-pwd", True), ("db_pass", True), ("passphrase", True),
    ("client_secret", True), ("AWS_SECRET_ACCESS_KEY", True), ("access_key", True), ("accessKey", True),
    ("aws_access_key_id", True), ("apikey", True), ("api_key", True), ("x-api-key", True), ("APIKey", True),
    ("ssh_key", True), ("private_key", True), ("privateKey", True), ("tls_key", True), ("cert_key", True),
    ("token", True), ("auth_token", True), ("refreshToken", True), ("jwt", True), ("aws_creds", True),
    ("credentials", True), ("db_credential", True), ("mysecret", True), ("bearer", True),
    # not secrets: a secret word inside another word, a key that is not a secret, what describes a secret
    ("bypass_cache", False), ("compass", False), ("passenger_count", False), ("tokenizer", False),
    ("keyboard", False), ("monkey", False), ("key_count", False), ("key_name", False), ("ssh_public_key", False),
    ("public_key", False), ("max_tokens", False), ("password_length", False), ("ssh_key_name", False),
    ("private_key_path", False), ("token_url", False), ("secret_name", False), ("host_count", False),
    ("passive", False), ("surpass", False), ("", False),
])
def test_the_name_rule(name: str, secret: bool) -> None:
    assert is_secret_name(name) is secret


def _template(tmp_path: Path) -> Path:
    path = tmp_path / "secret_flow.yaml"
    path.write_text(TEMPLATE)
    return path


def test_declared_inputs_and_the_outputs_built_from_secrets(tmp_path: Path) -> None:
    topology = load_topology(_template(tmp_path))
    assert {n for n, d in topology.inputs.items() if d.is_secret} == {"admin_password", "seed", "login", "site_login"}
    assert {n for n, d in topology.inputs.items() if d.declared_secret} == {"seed", "login", "site_login"}
    secret = [n for n, d in topology.inputs.items() if d.is_secret]
    assert set(secret_outputs(topology, secret)) == SECRET_OUTPUTS - {"upstream_out", "upstream_url"}
    assert set(secret_outputs(topology, [*secret, "upstream"])) == SECRET_OUTPUTS


def test_a_secret_flag_that_is_not_a_boolean_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(TEMPLATE.replace("secret: true", "secret: yes please"))
    with pytest.raises(ToscaValidationError, match="must be true or false") as caught:
        load_topology(path)
    assert caught.value.node == "seed"


def test_an_output_reading_a_property_given_by_a_secret_is_secret(tmp_path: Path) -> None:
    path = tmp_path / "prop.yaml"
    path.write_text(f"""\
tosca_definitions_version: tosca_simple_yaml_1_0
imports:
  - cloud_paas: {TYPES}
topology_template:
  inputs:
    db_pw: {{ type: string }}
  node_templates:
    db:
      type: tosca.nodes.Database
      properties: {{ name: app, password: {{ get_input: db_pw }} }}
      requirements: [ {{ host: dbms }} ]
    dbms:
      type: tosca.nodes.DBMS
      requirements: [ {{ host: vm }} ]
    vm:
      type: cloud_paas.nodes.Compute
  outputs:
    via_property: {{ value: {{ get_property: [ db, password ] }} }}
    name: {{ value: {{ get_property: [ db, name ] }} }}
""")
    topology = load_topology(path)
    assert secret_outputs(topology, ["db_pw"]) == ("via_property",)


# ------------------------------------------------------------------ a real deployment, every sink checked
class RecordingTI:
    """Stands in for Airflow's task instance, the boundary the operators push XCom through."""

    def __init__(self) -> None:
        self.pushed: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.pushed[key] = value


def _context(topology, dag_id: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    from airflow.sdk import DAG

    from airflow_cloud_paas.converter import topology_params

    dag = DAG(dag_id, schedule=None, params=topology_params(topology))
    return {"dag": dag, "run_id": "run1", "params": dict(params or {}), "dag_run": SimpleNamespace(conf={}),
            "ti": RecordingTI()}


def _viewer_client():
    """Return a client of the plugin's API logged in as a Viewer (a JWT from Airflow's auth manager).

    The viewer is the deployments' owner (the operators' default owner, ``airflow``): a viewer sees its own.
    """
    from airflow.api_fastapi.app import create_auth_manager
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser
    from fastapi.testclient import TestClient

    from airflow_cloud_paas.plugin.api import create_app

    token = create_auth_manager().generate_jwt(SimpleAuthManagerUser(username="airflow", role="viewer"))
    return TestClient(create_app(), headers={"Authorization": f"Bearer {token}"})


def test_a_secret_reaches_no_store_xcom_api_or_cli(tmp_path, store_url, airflow_db, monkeypatch, capsys) -> None:
    from airflow_cloud_paas.cli import main
    from airflow_cloud_paas.operators.deployment import (
        CloudPaaSCompleteDeploymentOperator,
        CloudPaaSCreateDeploymentOperator,
        CloudPaaSDeleteDeploymentOperator,
        CloudPaaSDeployNodeOperator,
        CloudPaaSScaleNodeGroupOperator,
    )

    token = f"s3cr3t-{uuid.uuid4().hex}"
    values = {"admin_password": f"{token}-a", "seed": f"{token}-b", "login": {"user": "u", "token": f"{token}-c"}}
    monkeypatch.setenv("AIRFLOW_CONN_SECRET_FLOW_DB", json.dumps({"conn_type": "generic", "password": f"{token}-e"}))
    # a credential input given as a whole connection: its login and password become the credential
    monkeypatch.setenv("AIRFLOW_CONN_SECRET_FLOW_LOGIN", json.dumps({"conn_type": "generic", "login": "v",
                                                                     "password": f"{token}-d"}))
    given = {**values, "site_login": "conn://secret_flow_login", "upstream": "conn://secret_flow_db/password"}
    template = _template(tmp_path)
    topology = load_topology(template)
    deployment = f"secret-flow-{uuid.uuid4().hex[:8]}"
    context = _context(topology, "secret_flow", given)
    common = {"template": str(template), "deployment_id": deployment}

    CloudPaaSCreateDeploymentOperator(task_id="begin", nodes=[], **common).execute(context)
    try:
        for node in ("head", "workers"):
            CloudPaaSDeployNodeOperator(task_id=f"deploy_{node}", node_name=node, **common).execute(context)
        returned = CloudPaaSCompleteDeploymentOperator(task_id="outputs", **common).execute(context)
        # the same deployment scaled with no secret given again (the workers read none), the outputs evaluated
        # and stored again
        CloudPaaSScaleNodeGroupOperator(task_id="scale", node_name="workers", count=2,
                                        template=str(template), deployment_id=deployment).execute(
            _context(topology, "secret_flow", {}))
        assert len(DeploymentStore(store_url).get(deployment).resources) == 3

        record = DeploymentStore(store_url).get(deployment)
        assert {k for k, v in record.outputs.items() if v == MASK} == SECRET_OUTPUTS
        assert record.outputs["cache"] is True and record.outputs["head_address"]  # the rest stays readable
        assert record.inputs["upstream"] == "conn://secret_flow_db/password"
        assert record.inputs["site_login"] == "conn://secret_flow_login"
        assert {k for k, v in record.inputs.items() if v == MASK} == set(values)
        assert {k for k, v in returned.items() if v == MASK} == SECRET_OUTPUTS
        assert context["ti"].pushed == returned

        sinks = {"store": json.dumps(record.to_dict(), default=str), "xcom": json.dumps(context["ti"].pushed)}
        client = _viewer_client()
        monkeypatch.setenv("CLOUD_PAAS_STORE_URL", store_url)
        api = client.get(f"/api/deployments/{deployment}")
        assert api.status_code == 200, api.text
        assert api.json()["outputs"]["first"] == MASK and api.json()["outputs"]["cache"] is True
        sinks["api"] = api.text
        listed = client.get("/api/deployments")
        assert deployment in {d["id"] for d in listed.json()}, listed.text
        sinks["api list"] = listed.text
        for args in (["show", deployment], ["show", "--json", deployment]):
            assert main(["--store-url", store_url, *args]) == 0
            sinks[" ".join(args)] = capsys.readouterr().out
        assert json.loads(sinks[f"show --json {deployment}"])["outputs"]["admin_url"] == MASK
        for sink, text in sinks.items():
            assert token not in text, sink

        from airflow.sdk.log import _secrets_masker

        # the values the tasks held are registered with Airflow's masker: a task log hides them
        assert token not in str(_secrets_masker().redact(f"url https://admin:{token}-a@host and {token}-e"))
    finally:
        CloudPaaSDeleteDeploymentOperator(task_id="delete", deployment_id=deployment).execute(context)


def test_an_input_named_like_bypass_cache_needs_nothing_to_scale(tmp_path, store_url) -> None:
    from airflow_cloud_paas.operators.deployment import (
        CloudPaaSCreateDeploymentOperator,
        CloudPaaSDeleteDeploymentOperator,
        CloudPaaSScaleNodeGroupOperator,
    )

    path = tmp_path / "plain.yaml"
    path.write_text(f"""\
tosca_definitions_version: tosca_simple_yaml_1_0
imports:
  - cloud_paas: {TYPES}
topology_template:
  inputs:
    bypass_cache: {{ type: boolean }}
    compass: {{ type: string }}
    passenger_count: {{ type: integer }}
    tokenizer: {{ type: string }}
  node_templates:
    workers:
      type: cloud_paas.nodes.Compute
      capabilities:
        scalable:
          properties: {{ count: 1, max_instances: 3 }}
""")
    topology = load_topology(path)
    deployment = f"plain-{uuid.uuid4().hex[:8]}"
    given = {"bypass_cache": True, "compass": "north", "passenger_count": 3, "tokenizer": "bpe"}
    CloudPaaSCreateDeploymentOperator(task_id="create", template=str(path), deployment_id=deployment).execute(
        _context(topology, "plain", given))
    try:
        assert DeploymentStore(store_url).get(deployment).inputs == given
        # the scale DAG's task: template and inputs from the record, nothing given again
        CloudPaaSScaleNodeGroupOperator(task_id="scale", node_name="workers", count=2,
                                        deployment_id=deployment).execute(_context(topology, "plain"))
        record = DeploymentStore(store_url).get(deployment)
        assert record.status == "UPDATE_COMPLETE"
        assert len([r for r in record.resources if r.node_name == "workers"]) == 2
    finally:
        CloudPaaSDeleteDeploymentOperator(task_id="delete", deployment_id=deployment).execute(
            _context(topology, "plain"))


def test_xcom_of_a_dag_run_holds_no_secret(tmp_path, store_url, airflow_db, monkeypatch) -> None:
    """A whole DAG run through dag.test(): every XCom row in Airflow's metadata DB is free of the secret."""
    from airflow.models.xcom import XComModel
    from airflow.sdk import DAG, task
    from airflow.utils.session import create_session

    from airflow_cloud_paas.converter import ToscaTaskGroup, topology_params

    token = f"s3cr3t-{uuid.uuid4().hex}"
    monkeypatch.setenv("AIRFLOW_CONN_SECRET_FLOW_DB", json.dumps({"conn_type": "generic", "password": f"{token}-e"}))
    # credential-typed inputs left out: the DAG Param of a datatype input is still typed as a string
    template = tmp_path / "no_credentials.yaml"
    template.write_text("".join(line for line in TEMPLATE.splitlines(keepends=True)
                                if not any(w in line.lower() for w in ("login", "data_types", "derived_from"))))
    seen: dict[str, Any] = {}
    with DAG("secret_flow_run", schedule=None, params=topology_params(load_topology(template))) as dag:
        group = ToscaTaskGroup(template)

        @task
        def consume(first: Any, upstream_url: Any, cache: Any) -> None:
            seen.update(first=first, upstream_url=upstream_url, cache=cache)

        group.wrap(consume(group.output("first"), group.output("upstream_url"), group.output("cache")))
    # dag.test() runs only DAGs written to the metadata DB: write this one as the DAG processor would
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import DagBag, sync_bag_to_db

    DagBundlesManager().sync_bundles_to_db()
    (tmp_path / "no_dags").mkdir()
    bag = DagBag(dag_folder=str(tmp_path / "no_dags"))
    bag.bag_dag(dag)
    sync_bag_to_db(bag, "dags-folder", None)
    deployment = f"secret-run-{uuid.uuid4().hex[:8]}"
    run = dag.test(run_conf={
        "deployment_id": deployment, "admin_password": f"{token}-a", "seed": f"{token}-b",
        "upstream": "conn://secret_flow_db/password"})
    assert run.state == "success", {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert seen == {"first": MASK, "upstream_url": MASK, "cache": True}
    with create_session() as session:
        rows = session.query(XComModel).filter_by(dag_id=dag.dag_id, run_id=run.run_id).all()
        pushed = {f"{r.task_id}:{r.key}": r.value for r in rows}
    assert pushed["deployment.outputs:first"] == MASK, pushed  # the outputs were pushed, masked
    assert token not in json.dumps(pushed, default=str)
    assert DeploymentStore(store_url).get(deployment).status == "DELETE_COMPLETE"


def test_outputs_an_older_release_stored_in_clear_are_masked_by_the_reconcile_job(tmp_path) -> None:
    from airflow_cloud_paas.reconcile import mask_stored_outputs

    store = DeploymentStore(f"sqlite:///{tmp_path}/old.db")
    planted = f"planted-{uuid.uuid4().hex}"
    store.create_deployment("old", TEMPLATE, "h", {"upstream": "conn://db/password", "host_count": 1}, "alice",
                            "local")
    store.set_outputs("old", {name: f"{planted}-{name}" for name in [*SECRET_OUTPUTS, "cache", "head_address"]})
    store.create_deployment("clean", TEMPLATE, "h", {"host_count": 1}, "bob", "local")
    store.set_outputs("clean", {"cache": True, "head_address": "10.0.0.1"})
    assert store.outputs_unchecked() == []  # outputs set by this release are masked by their writer
    with sqlite3.connect(tmp_path / "old.db") as db:  # as an older release left them: never checked
        db.execute("UPDATE deployments SET outputs_checked = NULL")
    assert mask_stored_outputs(store) == ["old"]
    record = store.get("old")
    assert {k for k, v in record.outputs.items() if v == MASK} == SECRET_OUTPUTS
    assert record.outputs["head_address"] == f"{planted}-head_address"  # not built from a secret: kept
    assert record.events[-1].kind == "outputs_masked"
    assert mask_stored_outputs(store) == []  # once is enough
    assert store.outputs_unchecked() == []  # and the next runs read nothing
