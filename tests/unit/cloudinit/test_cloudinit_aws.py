"""Hosted software's cloud-init user data reaches the instance on EC2 (a real moto server process)."""

from __future__ import annotations

import base64
import uuid
from pathlib import Path

import pytest
from unit.backends.aws_fixtures import MotoServer, aws_connection, moto_server  # noqa: F401 - fixture
from unit.cloudinit.test_cloudinit import DATA, _variant

from airflow_cloud_paas.backends.aws import AWSBackend
from airflow_cloud_paas.deployer import Deployer
from airflow_cloud_paas.exceptions import UnsupportedNodeError
from airflow_cloud_paas.request import DeploymentRequest
from airflow_cloud_paas.store import DeploymentStore
from airflow_cloud_paas.tosca import load_topology

CONN_ID = "aws_cloudinit_test"


@pytest.fixture
def aws(moto_server: MotoServer):  # noqa: F811
    aws_connection(CONN_ID, moto_server.url)
    backend = AWSBackend(CONN_ID, wait_timeout=30, poll_interval=0.05)
    yield backend, backend.client


def _user_data(ec2, instance_id: str) -> str | None:
    value = ec2.describe_instance_attribute(InstanceId=instance_id, Attribute="userData")["UserData"].get("Value")
    return base64.b64decode(value).decode() if value else None


def test_the_vm_boots_with_its_softwares_configuration(aws, tmp_path: Path) -> None:
    backend, ec2 = aws
    store = DeploymentStore(f"sqlite:///{tmp_path}/store.db")
    deployment = f"ci-{uuid.uuid4().hex[:8]}"
    deployer = Deployer(DeploymentRequest.build(load_topology(DATA / "webapp.yaml"), deployment, {}, actor="dag/run"),
                        store, backend)
    try:
        deployer.create_all()
        resources = {(r.node_name, r.attributes.get("kind")): r for r in backend.describe(deployment)}
        vm, bare = resources[("vm", "instance")], resources[("bare_vm", "instance")]
        sent = _user_data(ec2, vm.resource_id)
        assert sent == deployer.spec("vm", 0).user_data
        assert sent.startswith("#cloud-config\n") and "/opt/cloud-paas/db/configure.sh" in sent
        assert _user_data(ec2, bare.resource_id) is None  # nothing hosted, no user data of its own
        assert {("db", "software"), ("web", "software"), ("app", "software")} <= set(resources)
    finally:
        backend.delete(deployment)
    assert backend.describe(deployment) == []


def test_user_data_over_the_ec2_limit_is_refused_before_any_instance(aws, tmp_path: Path) -> None:
    backend, ec2 = aws
    path = _variant(tmp_path, "create: scripts/install_db.sh", "create: scripts/big.sh")
    (tmp_path / "scripts/big.sh").write_text("#!/bin/bash\n" + "echo padding-padding-padding\n" * 800)
    store = DeploymentStore(f"sqlite:///{tmp_path}/store.db")
    deployment = f"ci-{uuid.uuid4().hex[:8]}"
    deployer = Deployer(DeploymentRequest.build(load_topology(path, use_cache=False), deployment, {}, actor="dag/run"),
                        store, backend)
    with pytest.raises(UnsupportedNodeError, match="over aws's limit of 16384") as caught:
        deployer.begin_create()
    assert caught.value.provider == "aws"
    assert backend.describe(deployment) == []
    assert store.list() == []


def test_validate_with_a_backend_checks_what_a_create_checks(aws, tmp_path: Path, capsys) -> None:
    """``cloud-paas validate --backend`` compiles the same plan a create runs: the user data limit is enforced."""
    from airflow_cloud_paas.cli import main

    backend, ec2 = aws
    path = _variant(tmp_path, "create: scripts/install_db.sh", "create: scripts/big.sh")
    (tmp_path / "scripts/big.sh").write_text("#!/bin/bash\n" + "echo padding-padding-padding\n" * 800)
    before = ec2.describe_instances()["Reservations"]
    assert main(["validate", str(path), "--backend", f"aws:{CONN_ID}"]) == 2
    assert "over aws's limit of 16384" in capsys.readouterr().err
    assert ec2.describe_instances()["Reservations"] == before  # nothing made
    assert main(["validate", str(DATA / "webapp.yaml"), "--backend", f"aws:{CONN_ID}"]) == 0
