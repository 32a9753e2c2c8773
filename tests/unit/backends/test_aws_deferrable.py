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
