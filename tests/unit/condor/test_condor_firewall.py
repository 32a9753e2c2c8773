"""The port range of an HTCondor pool (LOWPORT-HIGHPORT) opens on every VM of the pool, and only there.

The daemons' ``daemons`` capability (``cloud_paas.capabilities.htcondor.DaemonPorts``, a
``tosca.capabilities.Endpoint``) is assigned by ``htcondor_pool.yaml`` on the software nodes; the
deployer gives it to the VM that hosts them, and the VM's security rules open it to the pool's private
network. The last test deploys the template on a real moto server process and reads the security groups
back with its own boto3 client.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from unit.backends.aws_fixtures import MotoServer, aws_connection, moto_server  # noqa: F401 - fixture

from airflow_cloud_paas.backends.local import LocalBackend
from airflow_cloud_paas.backends.mapping import PRIVATE_RANGES, Rule, security_rules
from airflow_cloud_paas.deployer import Deployer
from airflow_cloud_paas.exceptions import ToscaValidationError
from airflow_cloud_paas.request import DeploymentRequest
from airflow_cloud_paas.services.condor.config import CondorPoolSettings, template_inputs
from airflow_cloud_paas.services.condor.credentials import generate_pool_credentials, pool_inputs
from airflow_cloud_paas.store import DeploymentStore
from airflow_cloud_paas.tosca import load_topology
from airflow_cloud_paas.tosca.imports import default_import_map

PACKAGE = Path(__file__).resolve().parents[3] / "airflow_cloud_paas"
TYPES_URL = "https://raw.githubusercontent.com/airflow-cloud-paas/tosca-types/main/htcondor_types.yaml"
IMPORTS = {} if TYPES_URL in default_import_map() else {TYPES_URL: str(PACKAGE / "tosca/types/htcondor_types.yaml")}
HOSTS = ("condor_cm_host", "condor_submit_host", "condor_execute_hosts")
CONN_ID = "aws_condor_firewall_test"


@pytest.fixture(scope="module")
def vm_pool():
    return load_topology(PACKAGE / "templates/htcondor_pool.yaml", import_map=IMPORTS, use_cache=False)


@pytest.fixture(scope="module")
def credentials():
    return generate_pool_credentials("dep-fw")


def pool_inputs_with(credentials, low: int, high: int, **more) -> dict:
    """The template's inputs as the HTCondor operators make them, with this LOWPORT/HIGHPORT."""
    settings = CondorPoolSettings("cm", credentials.trust_domain, deployment_id="dep-fw")
    return {**template_inputs(settings), **pool_inputs(credentials), "low_port": low, "high_port": high, **more}


def deployer(topology, tmp_path: Path, backend, inputs: dict, deployment: str = "dep-fw") -> Deployer:
    return Deployer(DeploymentRequest.build(topology, deployment, inputs, actor="dag/run"),
                    DeploymentStore(f"sqlite:///{tmp_path}/store.db"), backend)


def test_every_pool_vm_opens_the_range_to_the_private_network(vm_pool, credentials, tmp_path) -> None:
    made = deployer(vm_pool, tmp_path, LocalBackend(tmp_path / "w"), pool_inputs_with(credentials, 9700, 9800))
    rules = {host: security_rules(made.spec(host, 0, with_requirements=False)) for host in HOSTS}
    daemons = {Rule(9700, "tcp", cidr, 9800) for cidr in PRIVATE_RANGES}
    shared_port = {Rule(9618, "tcp", cidr) for cidr in PRIVATE_RANGES}
    # the central manager: the collector open to all (its host's own endpoint, with a public IP), the range private
    found, public = rules["condor_cm_host"]
    assert set(found) == {Rule(9618, "tcp", "0.0.0.0/0")} | daemons and public is True
    for host in ("condor_submit_host", "condor_execute_hosts"):
        found, public = rules[host]
        assert set(found) == daemons | shared_port and public is False, host


def test_any_port_opens_no_range(vm_pool, credentials, tmp_path) -> None:
    made = deployer(vm_pool, tmp_path, LocalBackend(tmp_path / "w"), pool_inputs_with(credentials, 0, 0))
    found, _ = security_rules(made.spec("condor_execute_hosts", 0, with_requirements=False))
    assert set(found) == {Rule(9618, "tcp", cidr) for cidr in PRIVATE_RANGES}
    found, _ = security_rules(made.spec("condor_cm_host", 0, with_requirements=False))
    assert found == (Rule(9618, "tcp"),)


# ---------------------------------------------------------------------------- on EC2 (moto)
@pytest.fixture
def aws(moto_server: MotoServer):  # noqa: F811
    pytest.importorskip("airflow.providers.amazon", reason="the AWS backend needs the 'aws' extra")
    from airflow_cloud_paas.backends.aws import AWSBackend

    aws_connection(CONN_ID, moto_server.url)
    return AWSBackend(CONN_ID, wait_timeout=30, poll_interval=0.05), moto_server.boto3_client()


def _groups(ec2, deployment: str, node: str) -> list[dict]:
    return ec2.describe_security_groups(Filters=[{"Name": "tag:cloud-paas-deployment", "Values": [deployment]},
                                                 {"Name": "tag:cloud-paas-node", "Values": [node]}])["SecurityGroups"]


def _ingress(group: dict) -> set[tuple[str, int, int, str]]:
    return {(p["IpProtocol"], p["FromPort"], p["ToPort"], r["CidrIp"])
            for p in group["IpPermissions"] for r in p["IpRanges"]}


@pytest.mark.parametrize(("low", "high", "message"), [(9800, 9700, "starts above its end"),
                                                     (9700, 0, "only one bound at 0")])
def test_a_bad_range_is_refused_before_anything_is_made(aws, vm_pool, credentials, tmp_path, low, high,
                                                         message) -> None:
    backend, ec2 = aws
    deployment = f"fw-{uuid.uuid4().hex[:8]}"
    made = deployer(vm_pool, tmp_path, backend, pool_inputs_with(credentials, low, high), deployment)
    with pytest.raises(ToscaValidationError, match=message) as caught:
        made.begin_create()
    assert caught.value.node == "condor_cm" and caught.value.field == "capabilities.daemons.port_range"
    assert caught.value.file == vm_pool.source
    assert made.store.list() == []
    assert backend.describe(deployment) == []
    assert ec2.describe_security_groups(
        Filters=[{"Name": "tag:cloud-paas-deployment", "Values": [deployment]}])["SecurityGroups"] == []


def test_the_pool_on_ec2_opens_9700_to_9800_on_the_execute_vms(aws, vm_pool, credentials, tmp_path) -> None:
    backend, ec2 = aws
    deployment = f"fw-{uuid.uuid4().hex[:8]}"
    made = deployer(vm_pool, tmp_path, backend, pool_inputs_with(credentials, 9700, 9800, execute_count=2),
                    deployment)
    try:
        made.create_all()
        (vpc,) = ec2.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"]
        pool = vpc["CidrBlock"]  # the rule's source: the VPC the instances are in, not the internet
        (group,) = _groups(ec2, deployment, "condor_execute_hosts")
        assert _ingress(group) == {("tcp", 9700, 9800, pool), ("tcp", 9618, 9618, pool)}
        executes = backend.describe(deployment, "condor_execute_hosts")
        assert len(executes) == 2
        assert all(r.attributes["security_groups"] == [group["GroupId"]] for r in executes)
        (submit,) = _groups(ec2, deployment, "condor_submit_host")
        assert _ingress(submit) == {("tcp", 9700, 9800, pool), ("tcp", 9618, 9618, pool)}
        (cm,) = _groups(ec2, deployment, "condor_cm_host")
        assert _ingress(cm) == {("tcp", 9700, 9800, pool), ("tcp", 9618, 9618, "0.0.0.0/0")}
    finally:
        backend.delete(deployment)
    assert backend.describe(deployment) == []
    assert _groups(ec2, deployment, "condor_execute_hosts") == []
