"""The deployment-state trigger and the deferrable sensor, against a real SQLite store."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid

import pytest

from airflow_cloud_paas.store import DeploymentStore
from airflow_cloud_paas.triggers.deployment import CloudPaaSDeploymentStateTrigger


@pytest.fixture
def store(store_url):
    return DeploymentStore(store_url)


def _new(store) -> str:
    deployment_id = f"trg-{uuid.uuid4().hex[:8]}"
    store.create_deployment(deployment_id, "tosca: x", "h", {}, "me", "local")
    store.begin(deployment_id, "CREATE", actor="t")
    return deployment_id


def test_trigger_serializes_to_its_installed_class_path():
    trigger = CloudPaaSDeploymentStateTrigger("d", ["CREATE_COMPLETE"], ["CREATE_FAILED"], poll_interval=0.5)
    path, kwargs = trigger.serialize()
    assert path == "airflow_cloud_paas.triggers.deployment.CloudPaaSDeploymentStateTrigger"
    rebuilt = CloudPaaSDeploymentStateTrigger(**kwargs)
    assert rebuilt.serialize() == (path, kwargs)


def _first_event(trigger):
    async def run():
        async for event in trigger.run():
            return event.payload

    return asyncio.run(asyncio.wait_for(run(), timeout=20))


def test_trigger_fires_when_the_deployment_completes(store):
    deployment_id = _new(store)
    finisher = threading.Timer(1.0, lambda: store.finish(deployment_id, "CREATE", ok=True))
    finisher.start()
    started = time.monotonic()
    event = _first_event(
        CloudPaaSDeploymentStateTrigger(deployment_id, ["CREATE_COMPLETE"], ["CREATE_FAILED"], poll_interval=0.2)
    )
    assert event == {"status": "success", "deployment_id": deployment_id, "state": "CREATE_COMPLETE"}
    assert time.monotonic() - started >= 0.9  # it really waited for the change


def test_trigger_reports_failure_and_timeout(store):
    deployment_id = _new(store)
    store.finish(deployment_id, "CREATE", ok=False, reason="quota exceeded")
    event = _first_event(
        CloudPaaSDeploymentStateTrigger(deployment_id, ["CREATE_COMPLETE"], ["CREATE_FAILED"], poll_interval=0.1)
    )
    assert event["status"] == "failed" and event["message"] == "quota exceeded"
    other = _new(store)
    event = _first_event(
        CloudPaaSDeploymentStateTrigger(other, ["CREATE_COMPLETE"], [], poll_interval=0.1, timeout=0.5)
    )
    assert event["status"] == "timeout" and event["state"] == "CREATE_IN_PROGRESS"


def test_trigger_reports_unknown_deployment(store):
    event = _first_event(CloudPaaSDeploymentStateTrigger("nope", ["CREATE_COMPLETE"], [], poll_interval=0.1))
    assert event["status"] == "error" and "nope" in event["message"]


def test_sensor_defers_while_in_progress_and_resumes(store):
    from airflow.sdk.exceptions import TaskDeferred

    from airflow_cloud_paas.exceptions import CloudPaaSError
    from airflow_cloud_paas.sensors.deployment import CloudPaaSDeploymentStateSensor

    deployment_id = _new(store)
    sensor = CloudPaaSDeploymentStateSensor(task_id="wait", deployment_id=deployment_id, poke_interval=1,
                                            deferrable=True)
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute({})
    assert isinstance(deferred.value.trigger, CloudPaaSDeploymentStateTrigger)
    assert deferred.value.method_name == "execute_complete"
    assert sensor.execute_complete({}, {"status": "success", "deployment_id": deployment_id,
                                        "state": "CREATE_COMPLETE"}) == deployment_id
    with pytest.raises(CloudPaaSError, match="CREATE_FAILED"):
        sensor.execute_complete({}, {"status": "failed", "deployment_id": deployment_id, "state": "CREATE_FAILED"})
    store.finish(deployment_id, "CREATE", ok=False, reason="boom")
    with pytest.raises(CloudPaaSError, match="boom"):
        sensor.execute({})
