"""Every 10 minutes, recover deployments whose worker died (a stuck ``*_IN_PROGRESS`` with an expired lease)."""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import DAG

from airflow_cloud_paas.operators.deployment import CloudPaaSReconcileOperator

# [START howto_operator_cloud_paas_reconcile]
with DAG(
    dag_id="cloud_paas_reconcile",
    schedule=timedelta(minutes=10),
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["cloud-paas"],
) as dag:
    CloudPaaSReconcileOperator(task_id="reconcile", execution_timeout=timedelta(minutes=30))
# [END howto_operator_cloud_paas_reconcile]
