"""A ToscaDag with candidate providers: the first cannot be used, the deployment falls back."""

from __future__ import annotations

from airflow_cloud_paas import ToscaDag

with ToscaDag(
    "templates/hosts_only.yaml",
    dag_id="test_provider_fallback",
    schedule=None,
    providers=["openstack:no_such_connection", "local:site-b"],
    placement={"max_providers_retry": 2},
) as dag:
    pass
