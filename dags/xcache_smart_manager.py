"""The smart XCache manager: the access log feeds the popularity model, the model runs the cache.

Three DAGs per cache (here the ``xrootd_default`` connection; copy the file for more caches):

* ``xcache_ingest_access_log``: every 10 minutes, the accesses the cache's ``.cinfo`` files remember and
  the opens its admission library bypassed, into the access log (outlet: the access-log Asset);
* ``xcache_train_model``: scheduled on that Asset, teaches the popularity model the new accesses (online:
  each run reads only what was stored since the last; inlet: the access log, outlet: the model Asset), so
  lineage shows which accesses fed which model;
* ``xcache_apply_model``: every 15 minutes, evicts the least valuable files, tells the cache which datasets
  to write on a miss (an XCache deployed with ``admission: model``) and prefetches the files that tasks in
  progress read next (inlet: the model).
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import DAG

from airflow_cloud_paas.operators.xcache import (
    CloudPaaSXCacheApplyModelOperator,
    CloudPaaSXCacheIngestAccessLogOperator,
    CloudPaaSXCacheTrainModelOperator,
    access_log_asset,
)

CACHE = "xrootd_default"

# [START howto_operator_cloud_paas_xcache_manager]
with DAG(dag_id="xcache_ingest_access_log", schedule=timedelta(minutes=10), catchup=False, max_active_runs=1,
         tags=["cloud-paas", "xcache"], doc_md=__doc__):
    CloudPaaSXCacheIngestAccessLogOperator(task_id="ingest", xrootd_conn_id=CACHE)

with DAG(dag_id="xcache_train_model", schedule=[access_log_asset(CACHE)], catchup=False, max_active_runs=1,
         tags=["cloud-paas", "xcache"], doc_md=__doc__):
    CloudPaaSXCacheTrainModelOperator(task_id="train", xrootd_conn_id=CACHE, window_days=60)

with DAG(dag_id="xcache_apply_model", schedule=timedelta(minutes=15), catchup=False, max_active_runs=1,
         tags=["cloud-paas", "xcache"], doc_md=__doc__):
    CloudPaaSXCacheApplyModelOperator(task_id="apply", xrootd_conn_id=CACHE, target_fraction=0.9,
                                      prefetch_budget="50g")
# [END howto_operator_cloud_paas_xcache_manager]
