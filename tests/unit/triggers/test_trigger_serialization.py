"""Every trigger of the package survives the triggerer's round trip: serialize, store, import its class, rebuild.

The triggers are found by walking ``airflow_cloud_paas.triggers``, so a new trigger without a sample here fails
:func:`test_every_trigger_has_a_sample` (model: the amazon provider's ``triggers/test_serialization.py``).
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from typing import Any

import pytest
from airflow.triggers.base import BaseTrigger

import airflow_cloud_paas.triggers

#: class path -> keyword arguments of one instance (non-default values, so a field left out shows)
SAMPLES: dict[str, dict[str, Any]] = {
    "airflow_cloud_paas.triggers.galaxy.GalaxyApiTrigger": {
        "galaxy_conn_id": "galaxy_x", "url": "http://127.0.0.1:8090", "require_admin": True,
        "poll_interval": 3.0, "timeout": None,
    },
    "airflow_cloud_paas.triggers.galaxy.GalaxyInvocationTrigger": {
        "invocation_id": "f2db41e1fa331b3e", "galaxy_conn_id": "galaxy_x", "url": "http://127.0.0.1:8090",
        "poll_interval": 2.0, "timeout": 90.0,
    },
    "airflow_cloud_paas.triggers.deepaas.DEEPaaSTrainingTrigger": {
        "uuid": "5a1f0c2e9b7d4e3a8c6b2d1f0e9a8b7c", "model": "imgclas", "deepaas_conn_id": "deepaas_x",
        "url": "http://127.0.0.1:5000", "poll_interval": 2.0, "timeout": 600.0,
    },
    "airflow_cloud_paas.triggers.deployment.CloudPaaSDeploymentStateTrigger": {
        "deployment_id": "dep-1", "target_statuses": ["CREATE_COMPLETE"], "failure_statuses": ["CREATE_FAILED"],
        "cloud_paas_conn_id": "paas_x", "poll_interval": 2.5, "timeout": 60.0,
    },
    "airflow_cloud_paas.triggers.deployment.CloudPaaSNodeReadyTrigger": {
        "deployment_id": "dep-1", "node_name": "worker", "count": 3, "backend": "aws:aws_x",
        "cloud_paas_conn_id": "paas_x", "poll_interval": 1.5, "timeout": 600.0,
    },
    "airflow_cloud_paas.triggers.htcondor.CloudPaaSHTCondorJobCompleteTrigger": {
        "cluster_id": 42, "htcondor_conn_id": "htcondor_x", "poll_interval": 3.0, "timeout": None,
        "fail_on_hold": False,
    },
    "airflow_cloud_paas.triggers.scaling.CloudPaaSQueueDemandTrigger": {
        "targets": [{"deployment_id": "dep-1", "node_name": "worker", "service": "spark",
                     "address": "http://127.0.0.1:8080"}],
        "poll_interval": 7.0, "timeout": 120.0,
    },
    "airflow_cloud_paas.triggers.slurm.SlurmJobTrigger": {
        "job_id": "4242", "slurm_conn_id": "slurm_x", "poll_interval": 2.0, "timeout": 90.0,
    },
    "airflow_cloud_paas.triggers.slurm.SlurmQueueDemandTrigger": {
        "slurm_conn_id": "slurm_x", "min_pending": 3, "demand_only": True, "poll_interval": 4.0, "timeout": None,
    },
}


def _triggers() -> dict[str, type[BaseTrigger]]:
    """Return every concrete trigger class defined in the package's ``triggers``, by class path."""
    package = airflow_cloud_paas.triggers
    found = {}
    for info in pkgutil.walk_packages(package.__path__, f"{package.__name__}."):
        module = importlib.import_module(info.name)
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ == module.__name__ and issubclass(cls, BaseTrigger) and not inspect.isabstract(cls):
                found[f"{cls.__module__}.{cls.__qualname__}"] = cls
    return found


def _import(path: str) -> type[BaseTrigger]:
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def test_every_trigger_has_a_sample() -> None:
    found = _triggers()
    assert found, "no trigger found: is airflow_cloud_paas.triggers installed from the triggers/ folder?"
    assert sorted(found) == sorted(SAMPLES), "add a sample for each new trigger (and drop removed ones) in SAMPLES"


@pytest.mark.parametrize("path", sorted(SAMPLES))
def test_the_trigger_round_trips(path: str) -> None:
    trigger = _import(path)(**SAMPLES[path])
    classpath, kwargs = trigger.serialize()
    assert classpath == path  # the installed class path, which the triggerer imports
    assert kwargs == SAMPLES[path]  # every argument given, and nothing else
    rebuilt = _import(classpath)(**kwargs)
    assert rebuilt.serialize() == (classpath, kwargs)


@pytest.mark.parametrize("path", sorted(SAMPLES))
def test_the_trigger_survives_the_trigger_table(path: str) -> None:
    """The row the scheduler writes (serde-encoded kwargs) rebuilds the same trigger in the triggerer."""
    from airflow.models.trigger import Trigger

    trigger = _import(path)(**SAMPLES[path])
    row = Trigger.from_object(trigger)
    rebuilt = _import(row.classpath)(**row.kwargs)
    assert rebuilt.serialize() == trigger.serialize()
