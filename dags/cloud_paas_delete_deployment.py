"""Delete any deployment (every resource found by its tags); what ``cloud-paas delete`` triggers."""

from __future__ import annotations

from airflow.sdk import DAG, Param

from airflow_cloud_paas.operators.deployment import CloudPaaSDeleteDeploymentOperator

# [START howto_operator_cloud_paas_delete]
with DAG(
    dag_id="cloud_paas_delete_deployment",
    schedule=None,
    catchup=False,
    tags=["cloud-paas"],
    params={
        "deployment_id": Param(type="string", description="The deployment to delete"),
        "force": Param(
            False, type="boolean", description="Also delete when another run that died left it *_IN_PROGRESS"
        ),
    },
) as dag:
    CloudPaaSDeleteDeploymentOperator(
        task_id="delete", deployment_id="{{ params.deployment_id }}", force="{{ params.force }}"
    )
# [END howto_operator_cloud_paas_delete]
