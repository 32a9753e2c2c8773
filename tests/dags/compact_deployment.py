"""A ToscaDag that makes the whole deployment in one task and deletes it in one (``node_tasks=False``)."""

from __future__ import annotations

from airflow.sdk import task

from airflow_cloud_paas import ToscaDag

with ToscaDag("templates/hosts_only.yaml", dag_id="test_compact_deployment", schedule=None, node_tasks=False) as dag:

    @task
    def use(address: str) -> str:
        """Stand for the work that uses the deployment: it reads an output of the create task."""
        return address

    dag.tosca.wrap(use(dag.tosca.output("head_address")))
