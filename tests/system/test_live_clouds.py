"""Live-cloud system tests: deploy one VM, check it, delete it, check nothing is left.

Skipped unless the provider's Airflow connection is given in the environment, e.g.
``AIRFLOW_CONN_CLOUD_PAAS_SYSTEM_AWS='{"conn_type": "aws", "login": ..., "password": ..., "extra":
{"region_name": "eu-west-1"}}'``. They cost money and take minutes: run them by hand,
``pytest tests/system``.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from airflow_cloud_paas.backends import get_backend
from airflow_cloud_paas.deployer import Deployer
from airflow_cloud_paas.request import DeploymentRequest
from airflow_cloud_paas.store import DeploymentStore
from airflow_cloud_paas.tosca import load_topology

pytestmark = pytest.mark.system
TEMPLATE = Path(__file__).parent / "data" / "one_vm.yaml"
PROVIDERS = ["aws", "gcp", "azure", "openstack", "docker", "kubernetes"]


@pytest.mark.parametrize("provider", PROVIDERS)
def test_deploy_and_delete_one_vm(provider, tmp_path):
    conn_id = f"cloud_paas_system_{provider}"
    if f"AIRFLOW_CONN_{conn_id.upper()}" not in os.environ:
        pytest.skip(f"no live {provider} credentials: set AIRFLOW_CONN_{conn_id.upper()} to run this test")
    store = DeploymentStore(f"sqlite:///{tmp_path}/store.db")
    backend = get_backend(provider, conn_id=conn_id)
    deployment_id = f"system-{uuid.uuid4().hex[:8]}"
    deployer = Deployer(DeploymentRequest.build(load_topology(TEMPLATE), deployment_id, {}, actor="system-test"),
                        store, backend)
    try:
        outputs = deployer.create_all()
        assert store.get(deployment_id).status == "CREATE_COMPLETE"
        assert outputs["address"], outputs
        assert [r.state.value for r in backend.describe(deployment_id)] == ["RUNNING"]
    finally:
        deployer.begin_delete()
        deployer.delete_all()
        deployer.complete_delete()
    assert backend.describe(deployment_id) == []
