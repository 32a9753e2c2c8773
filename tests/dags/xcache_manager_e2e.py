"""The smart XCache manager's three steps in one run, against the live cache the test names.

The cache is tiny (800 kB) and the test's history short, so the write threshold is lowered
(``write_cost``): what a written byte must earn is relative to how fast the cache turns over.
"""

from __future__ import annotations

from airflow.sdk import DAG

from airflow_cloud_paas.operators.xcache import (
    CloudPaaSXCacheApplyModelOperator,
    CloudPaaSXCacheIngestAccessLogOperator,
    CloudPaaSXCacheTrainModelOperator,
)

CACHE = "xcache_manager_e2e"  # the test points this connection at its cache
SETTINGS = {"write_cost": 0.05}

with DAG(dag_id="test_xcache_smart_manager", schedule=None, catchup=False):
    ingest = CloudPaaSXCacheIngestAccessLogOperator(task_id="ingest", xrootd_conn_id=CACHE)
    train = CloudPaaSXCacheTrainModelOperator(task_id="train", xrootd_conn_id=CACHE, capacity="800k",
                                              model_settings=SETTINGS)
    apply = CloudPaaSXCacheApplyModelOperator(task_id="apply", xrootd_conn_id=CACHE, capacity="800k",
                                              target_fraction=0.9, prefetch_budget="200k")
    ingest >> train >> apply
