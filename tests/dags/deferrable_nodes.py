"""A ToscaDag whose deploy-node tasks request instances and wait through CloudPaaSNodeReadyTrigger."""

from __future__ import annotations

from airflow_cloud_paas import ToscaDag

with ToscaDag("templates/hosts_only.yaml", dag_id="test_deferrable_nodes", schedule=None, deferrable=True) as dag:
    pass
