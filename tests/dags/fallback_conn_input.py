"""A ToscaDag with candidate providers whose input is read from a connection (conn://): the fallback resolves it."""

from __future__ import annotations

from airflow_cloud_paas import ToscaDag

with ToscaDag(
    "templates/conn_input.yaml",
    dag_id="test_fallback_conn_input",
    schedule=None,
    providers=["openstack:no_such_connection", "local:site-b"],
    placement={"max_providers_retry": 2},
) as dag:
    pass
