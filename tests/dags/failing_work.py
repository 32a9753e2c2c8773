"""A deployment whose work fails: the teardown must still delete everything."""

from __future__ import annotations

from airflow.providers.standard.operators.bash import BashOperator

from airflow_cloud_paas import ToscaDag

with ToscaDag("templates/hosts_only.yaml", dag_id="test_failing_work", schedule=None) as dag:
    dag.tosca.wrap(BashOperator(task_id="work_fails", bash_command="exit 3"))
