"""The smart XCache manager's three steps in one run, against the live cache the test names."""

from __future__ import annotations

from airflow.sdk import DAG

from airflow_cloud_paas.operators.xcache import (
    CloudPaaSXCacheApplyModelOperator,
    CloudPaaSXCacheIngestAccessLogOperator,
    CloudPaaSXCacheTrainModelOperator,
)

CACHE = "xcache_manager_e2e"  # the test points this connection at its cache

with DAG(dag_id="test_xcache_smart_manager", schedule=None, catchup=False):
    ingest = CloudPaaSXCacheIngestAccessLogOperator(task_id="ingest", xrootd_conn_id=CACHE)
    train = CloudPaaSXCacheTrainModelOperator(task_id="train", xrootd_conn_id=CACHE)
    apply = CloudPaaSXCacheApplyModelOperator(task_id="apply", xrootd_conn_id=CACHE, capacity="400k",
                                              target_fraction=0.9, prefetch_budget="1m")
    ingest >> train >> apply
