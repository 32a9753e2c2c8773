"""A ToscaTaskGroup inside a plain DAG, and a deferrable sensor waiting for CREATE_COMPLETE."""

from __future__ import annotations

from airflow.sdk import DAG, Param

from airflow_cloud_paas import ToscaTaskGroup
from airflow_cloud_paas.sensors.deployment import CloudPaaSDeploymentStateSensor

with DAG(
    dag_id="test_deferrable_sensor",
    schedule=None,
    params={"deployment_id": Param("sensor-test", type="string"), "host_count": Param(1, type="integer")},
) as dag:
    hosts = ToscaTaskGroup("templates/hosts_only.yaml", group_id="hosts")
    sensor = CloudPaaSDeploymentStateSensor(
        task_id="wait_complete", deployment_id="{{ params.deployment_id }}", deferrable=True, poke_interval=1
    )
    hosts.wrap(sensor)

with DAG(dag_id="test_sensor_defers", schedule=None, params={"deployment_id": Param("x", type="string")}) as dag2:
    CloudPaaSDeploymentStateSensor(
        task_id="wait_complete", deployment_id="{{ params.deployment_id }}", deferrable=True, poke_interval=1,
        timeout=120,
    )
