"""Benchmark DAG: create a one-host deployment on the local backend, then delete it (bench_celery_load.py)."""

from __future__ import annotations

from pathlib import Path

from airflow.sdk import DAG, Param

from airflow_cloud_paas.operators.deployment import (
    CloudPaaSCreateDeploymentOperator,
    CloudPaaSDeleteDeploymentOperator,
)

TEMPLATE = str(Path(__file__).resolve().parent.parent / "templates" / "one_host.yaml")

with DAG(
    dag_id="bench_celery_create_delete",
    schedule=None,
    catchup=False,
    tags=["cloud-paas", "bench"],
    params={"deployment_id": Param(type="string", description="The deployment to create and delete")},
) as dag:
    create = CloudPaaSCreateDeploymentOperator(
        task_id="create", template=TEMPLATE, deployment_id="{{ params.deployment_id }}", backend="local"
    )
    delete = CloudPaaSDeleteDeploymentOperator(
        task_id="delete", template=TEMPLATE, deployment_id="{{ params.deployment_id }}"
    )
    create >> delete
