"""Deferrable waits on AWS (moto server process): request returns at launch, the trigger polls EC2."""

from __future__ import annotations

import asyncio
import uuid

from unit.backends.aws_fixtures import MotoServer, aws_connection, moto_server  # noqa: F401 - fixture

from airflow_cloud_paas.backends.aws import AWSBackend
from airflow_cloud_paas.backends.base import ResourceSpec, ResourceState
from airflow_cloud_paas.triggers.deployment import CloudPaaSNodeReadyTrigger

COMPUTE = ("tosca.nodes.indigo.Compute", "tosca.nodes.Compute", "tosca.nodes.Root")
CONN_ID = "aws_deferrable_test"


def _spec(dep: str, index: int) -> ResourceSpec:
    return ResourceSpec(dep, "vm", index, COMPUTE[0], COMPUTE, capabilities={
        "host": {"num_cpus": 1, "mem_size": "1 GB"}, "os": {"distribution": "ubuntu", "version": "16.04"}})


def test_request_returns_at_launch_and_the_trigger_sees_the_instances_run(moto_server: MotoServer):  # noqa: F811
    aws_connection(CONN_ID, moto_server.url)
    backend = AWSBackend(CONN_ID, wait_timeout=30, poll_interval=0.05)
    dep = f"defer-{uuid.uuid4().hex[:8]}"
    try:
        launched = [backend.request(_spec(dep, i)) for i in range(2)]
        # moto launches instances straight into "running" (real EC2 says "pending"): either is fine here
        assert {r.state for r in launched} <= {ResourceState.CREATING, ResourceState.RUNNING}
        again = backend.request(_spec(dep, 0))  # a retried task finds the instance it launched
        assert again.resource_id == launched[0].resource_id
        trigger = CloudPaaSNodeReadyTrigger(dep, "vm", 2, f"aws:{CONN_ID}", poll_interval=0.1, timeout=30)

        async def first():
            async for event in trigger.run():
                return event.payload

        event = asyncio.run(first())
        assert event["status"] == "success"
        assert sorted(event["states"]) == [(0, "RUNNING"), (1, "RUNNING")]
        path, kwargs = trigger.serialize()
        assert CloudPaaSNodeReadyTrigger(**kwargs).serialize() == (path, kwargs)
    finally:
        backend.delete(dep)
    assert backend.describe(dep) == []


def test_a_deferred_node_is_launched_in_one_call_and_a_retry_launches_only_what_is_missing(
        moto_server: MotoServer):  # noqa: F811
    aws_connection(CONN_ID, moto_server.url)
    backend = AWSBackend(CONN_ID, wait_timeout=30, poll_interval=0.05)
    dep = f"defer-{uuid.uuid4().hex[:8]}"
    try:
        before = backend.api_calls()
        launched = backend.request_group([_spec(dep, i) for i in (4, 0, 2, 1, 3)])
        calls = {k: n - before.get(k, 0) for k, n in backend.api_calls().items() if n > before.get(k, 0)}
        assert [r.index for r in launched] == [0, 1, 2, 3, 4]
        assert {r.state for r in launched} <= {ResourceState.CREATING, ResourceState.RUNNING}
        assert calls["RunInstances"] == 1 and calls["DescribeInstances"] == 2, calls  # what exists; the launch
        backend.delete(dep, "vm", 3)  # lost behind the deployment's back
        before = backend.api_calls()
        again = backend.request_group([_spec(dep, i) for i in range(5)])
        assert backend.api_calls()["RunInstances"] - before["RunInstances"] == 1
        assert [r.resource_id for r in again if r.index != 3] == [r.resource_id for r in launched if r.index != 3]
        assert again[3].resource_id != launched[3].resource_id
        assert len({r.resource_id for r in backend.describe(dep, "vm")}) == 5
    finally:
        backend.delete(dep)
    assert backend.describe(dep) == []


LEASE_TEMPLATE = """\
tosca_definitions_version: tosca_simple_yaml_1_0
imports:
  - cloud_paas: https://raw.githubusercontent.com/airflow-cloud-paas/tosca-types/main/cloud_paas_types.yaml
topology_template:
  node_templates:
    vm:
      type: cloud_paas.nodes.Compute
      capabilities:
        host: {properties: {num_cpus: 1, mem_size: 1 GB}}
        os: {properties: {distribution: ubuntu, version: "16.04"}}
"""


def test_a_deferred_node_wait_holds_the_deployments_lease_for_the_whole_wait(
    moto_server: MotoServer, tmp_path, store_url, airflow_db  # noqa: F811
):
    """No process works on the action while the triggerer waits: the lease must outlast the wait, or the reconcile
    job would take a healthy deployment for a dead one and undo it. The VM stays ``pending`` (rewritten on its way
    back from moto), so the node task defers for real."""
    from datetime import UTC, datetime, timedelta
    from types import SimpleNamespace

    import pytest
    from airflow.exceptions import TaskDeferred
    from airflow.sdk import DAG
    from unit.backends.aws_fixtures import FaultyEC2Endpoint, still_booting

    from airflow_cloud_paas.operators.deployment import (
        CloudPaaSCreateDeploymentOperator,
        CloudPaaSDeleteDeploymentOperator,
        CloudPaaSDeployNodeOperator,
    )
    from airflow_cloud_paas.store import DeploymentStore

    proxy = FaultyEC2Endpoint(moto_server.url, rewrites=[still_booting])
    aws_connection("aws_lease_test", proxy.start())
    template = tmp_path / "vm.yaml"
    template.write_text(LEASE_TEMPLATE)
    deployment = f"lease-{uuid.uuid4().hex[:8]}"
    context = {"dag": DAG("deferred_lease", schedule=None), "run_id": "run1", "params": {},
               "dag_run": SimpleNamespace(conf={})}
    common = {"template": str(template), "deployment_id": deployment, "backend": "aws:aws_lease_test"}
    try:
        CloudPaaSCreateDeploymentOperator(task_id="begin", nodes=[], **common).execute(context)
        wait = CloudPaaSDeployNodeOperator(task_id="deploy_vm", node_name="vm", deferrable=True, wait_timeout=7200,
                                           **common)
        with pytest.raises(TaskDeferred):
            wait.execute(context)
        store = DeploymentStore(store_url)
        record = store.get(deployment)
        assert record.status == "CREATE_IN_PROGRESS" and record.lease_holder is None
        assert record.lease_expires_at > datetime.now(UTC) + timedelta(seconds=7200)
        assert deployment not in {r.id for r in store.stale()}
    finally:
        proxy.rewrites.clear()
        CloudPaaSDeleteDeploymentOperator(task_id="delete", **common).execute(context)
        proxy.stop()
