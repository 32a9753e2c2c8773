"""``deferrable`` defaults to Airflow's ``[operators] default_deferrable`` setting, as in the official providers.

The default is read when the module is imported (the official providers' idiom), so the setting is checked in a
fresh interpreter with ``AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE=true`` in its environment.
"""

from __future__ import annotations

import importlib
import inspect
import json
import os
import pkgutil
import subprocess
import sys
from pathlib import Path

from airflow.sdk import BaseOperator, conf

TEMPLATE = Path(__file__).resolve().parents[2] / "dags" / "templates" / "hosts_only.yaml"

#: every class of the package taking a ``deferrable`` argument
DEFERRABLE = [
    "airflow_cloud_paas.operators.deployment.CloudPaaSDeployNodeOperator",
    "airflow_cloud_paas.operators.galaxy.CloudPaaSGalaxyRunWorkflowOperator",
    "airflow_cloud_paas.operators.deepaas.CloudPaaSDEEPaaSTrainOperator",
    "airflow_cloud_paas.operators.htcondor.CloudPaaSHTCondorSubmitJobOperator",
    "airflow_cloud_paas.operators.slurm.CloudPaaSSlurmSubmitJobOperator",
    "airflow_cloud_paas.sensors.deployment.CloudPaaSDeploymentStateSensor",
    "airflow_cloud_paas.sensors.galaxy._GalaxySensor",
    "airflow_cloud_paas.sensors.scaling.CloudPaaSQueueDemandSensor",
    "airflow_cloud_paas.sensors.slurm.CloudPaaSSlurmQueueSensor",
    "airflow_cloud_paas.converter.ToscaTaskGroup",
    "airflow_cloud_paas.converter.ToscaDag",
]

_PROBE = """
import importlib, inspect, json, sys
from airflow_cloud_paas import ToscaDag

paths, template = json.loads(sys.argv[1]), sys.argv[2]
defaults = {}
for path in paths:
    module, _, name = path.rpartition(".")
    cls = getattr(importlib.import_module(module), name)
    defaults[path] = inspect.signature(cls.__init__).parameters["deferrable"].default


def deploy_tasks(**kwargs):
    dag = ToscaDag(template, dag_id="default_deferrable_probe", schedule=None, **kwargs)
    return {t.task_id: t.deferrable for t in dag.tasks if t.task_id.startswith("deployment.deploy_")}


compact = ToscaDag(template, dag_id="default_deferrable_compact", schedule=None, node_tasks=False)
print(json.dumps({"defaults": defaults, "by_default": deploy_tasks(), "said_false": deploy_tasks(deferrable=False),
                  "compact": sorted(t.task_id for t in compact.tasks)}))
"""


def _import(path: str) -> type:
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def _probe(setting: str) -> dict:
    env = {**os.environ, "AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE": setting}
    out = subprocess.run([sys.executable, "-c", _PROBE, json.dumps(DEFERRABLE), str(TEMPLATE)], env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_every_deferrable_class_is_checked() -> None:
    """A new operator or sensor with a ``deferrable`` argument must join DEFERRABLE (and take the setting)."""
    found = set()
    for package in (importlib.import_module("airflow_cloud_paas.operators"),
                    importlib.import_module("airflow_cloud_paas.sensors")):
        for info in pkgutil.walk_packages(package.__path__, f"{package.__name__}."):
            for _, cls in inspect.getmembers(importlib.import_module(info.name), inspect.isclass):
                if (cls.__module__ == info.name and issubclass(cls, BaseOperator)
                        and "deferrable" in inspect.signature(cls.__init__).parameters):
                    found.add(f"{cls.__module__}.{cls.__qualname__}")
    assert found == {p for p in DEFERRABLE if ".converter." not in p}


def test_the_defaults_follow_the_setting_in_this_process() -> None:
    setting = conf.getboolean("operators", "default_deferrable", fallback=False)
    for path in DEFERRABLE:
        assert inspect.signature(_import(path).__init__).parameters["deferrable"].default is setting, path


def test_default_deferrable_true_makes_every_wait_deferrable() -> None:
    result = _probe("true")
    assert result["defaults"] == dict.fromkeys(DEFERRABLE, True)
    assert result["by_default"] and all(result["by_default"].values())
    # an explicit False wins over the setting, down to the deploy-node tasks
    assert result["said_false"].keys() == result["by_default"].keys() and not any(result["said_false"].values())
    # a DAG without node tasks has nothing the setting applies to: it is built, not refused
    assert result["compact"] == ["deployment.create", "deployment.delete"]


def test_default_deferrable_false_keeps_waits_in_the_worker() -> None:
    result = _probe("false")
    assert result["defaults"] == dict.fromkeys(DEFERRABLE, False)
    assert result["by_default"] and not any(result["by_default"].values())
