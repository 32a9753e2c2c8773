"""``get_attribute`` of the attributes every TOSCA node has, on a real local deployment."""

from __future__ import annotations

import time
from pathlib import Path

from airflow_cloud_paas.backends.local import LocalBackend
from airflow_cloud_paas.deployer import Deployer
from airflow_cloud_paas.request import DeploymentRequest
from airflow_cloud_paas.store import DeploymentStore
from airflow_cloud_paas.tosca import load_topology

TEMPLATE = Path(__file__).with_name("data_tosca_attributes.yaml")


def test_outputs_read_the_normative_state_name_and_id_of_a_node(tmp_path: Path) -> None:
    store = DeploymentStore(f"sqlite:///{tmp_path}/store.db")
    backend = LocalBackend(tmp_path / "work")
    request = DeploymentRequest.build(load_topology(TEMPLATE, use_cache=False), "attrs", {}, actor="dag/run1")
    try:
        outputs = Deployer(request, store, backend).create_all(deadline=time.monotonic() + 60)
        [server] = backend.describe("attrs", "server")
        assert outputs == {"server_state": "started", "server_name": "server", "server_id": server.resource_id}
    finally:
        backend.delete("attrs")
