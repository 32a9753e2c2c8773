"""Scale one node group of any deployment; what ``cloud-paas scale`` and scaling jobs trigger."""

from __future__ import annotations

from airflow.sdk import DAG, Param

from airflow_cloud_paas.operators.deployment import CloudPaaSScaleNodeGroupOperator

# [START howto_operator_cloud_paas_scale]
with DAG(
    dag_id="cloud_paas_scale_deployment",
    schedule=None,
    catchup=False,
    max_active_runs=4,
    tags=["cloud-paas"],
    render_template_as_native_obj=True,
    params={
        "deployment_id": Param(type="string", description="The deployment to scale"),
        "node": Param(type="string", description="A scalable node (or a node hosted on one)"),
        "count": Param(1, type="integer", minimum=0, description="Wanted number of instances"),
    },
) as dag:
    CloudPaaSScaleNodeGroupOperator(
        task_id="scale",
        deployment_id="{{ params.deployment_id }}",
        node_name="{{ params.node }}",
        count="{{ params.count }}",
    )
# [END howto_operator_cloud_paas_scale]
