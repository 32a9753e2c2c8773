"""Inputs read from Airflow connections at run time (conn://<conn_id>/<field>): resolved, masked, never stored."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from airflow.sdk import BaseHook
from unit.backends.local_drivers import SleeperDriver

from airflow_cloud_paas.backends.local import LocalBackend
from airflow_cloud_paas.deployer import Deployer
from airflow_cloud_paas.exceptions import ToscaInputError
from airflow_cloud_paas.request import DeploymentRequest
from airflow_cloud_paas.secrets import connection_refs, resolve_connection_refs
from airflow_cloud_paas.store import DeploymentStore
from airflow_cloud_paas.tosca import load_topology

TEMPLATE = Path(__file__).parent / "cloudinit" / "data" / "webapp.yaml"
SECRET = "pool-pa$$word with 'quotes'"



@pytest.fixture
def pool_connection(monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_HTCONDOR_DEP7", json.dumps({
        "conn_type": "htcondor", "host": "cm.example.org", "password": SECRET,
        "extra": {"trust_domain": "dep7.cloud-paas", "nested": {"key": "v"}}}))


def test_references_resolve_per_deployment_and_field(pool_connection) -> None:
    inputs = {"db_password": "conn://htcondor_{deployment_id}/password", "domain": "conn://htcondor_dep7/extra.trust_domain",
              "nested": "conn://htcondor_dep7/extra.nested.key", "plain": "value"}
    assert set(connection_refs(inputs)) == {"db_password", "domain", "nested"}
    resolved = resolve_connection_refs(inputs, "dep7", BaseHook.get_connection)
    assert resolved == {"db_password": SECRET, "domain": "dep7.cloud-paas", "nested": "v", "plain": "value"}


@pytest.mark.parametrize(("ref", "words"), [
    ("conn://htcondor_dep7/passwd", "is not a connection reference"),
    ("conn://no_such_conn/password", "connection 'no_such_conn', which cannot be read"),
    ("conn://htcondor_dep7/login", "has no login"),
])
def test_bad_references_name_the_input_and_connection(pool_connection, ref, words) -> None:
    with pytest.raises(ToscaInputError, match=words) as caught:
        resolve_connection_refs({"db_password": ref}, "dep7", BaseHook.get_connection)
    assert caught.value.field == "inputs.db_password"
    assert SECRET not in str(caught.value)


def test_the_store_keeps_the_reference_and_the_vm_gets_the_secret(pool_connection, tmp_path, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    ref = "conn://htcondor_{deployment_id}/password"
    store = DeploymentStore(f"sqlite:///{tmp_path}/store.db")
    topology = load_topology(TEMPLATE)
    backend = LocalBackend(tmp_path / "work", drivers={t: SleeperDriver() for t in (
        "test.nodes.Database", "test.nodes.WebServer", "test.nodes.App")})
    deployer = Deployer(DeploymentRequest.build(topology, "dep7", {"db_password": ref}, actor="dag/run",
                                                get_connection=BaseHook.get_connection), store, backend)
    user_data = deployer.spec("vm", 0, with_requirements=False).user_data
    assert json.dumps(SECRET)[1:-1] in user_data  # the VM is configured with the connection's password
    try:
        deployer.create_all()
    finally:
        backend.delete("dep7")
    record = store.get("dep7")
    assert record.status == "CREATE_COMPLETE"
    assert record.inputs["db_password"] == ref
    raw = Path(tmp_path / "store.db").read_bytes()
    assert SECRET.encode() not in raw
    assert SECRET not in caplog.text
