"""The smart manager's DAG (dag.test) against the live cache: it evicts the cold dataset, prefetches the hot one.

The access log is fed from the cache's own ``.cinfo`` files; the model's and the log's Assets get their
events, which is the lineage the UI shows.
"""

from __future__ import annotations

import os

import pytest
from integration.xcache.conftest import BLOCK, Service

from airflow_cloud_paas.hooks.xrootd import XRootDHook

pytestmark = pytest.mark.integration

CONN = "AIRFLOW_CONN_XCACHE_MANAGER_E2E"


def test_the_manager_dag_keeps_the_hot_dataset_and_drops_the_cold_one(service: Service, airflow_db) -> None:
    from airflow.dag_processing.dagbag import DagBag

    os.makedirs(service.data_dir / "store" / "hot", exist_ok=True)
    os.makedirs(service.data_dir / "store" / "cold", exist_ok=True)
    for sub in ("hot", "cold"):
        (service.data_dir / "store" / sub).chmod(0o755)
    hot = [service.put(f"hot/h{i}.root", 50 * BLOCK // 32) for i in range(3)]  # 100 kB each
    cold = [service.put(f"cold/c{i}.root", 50 * BLOCK // 32) for i in range(2)]
    os.environ[CONN] = os.environ[f"AIRFLOW_CONN_{service.conn_id.upper()}"]
    hook = XRootDHook("xcache_manager_e2e")
    try:
        for round_ in range(3):  # the hot dataset is read again and again, the cold one once
            for path, content in hot + (cold if round_ == 0 else []):
                assert hook.read(path) == content
            service.monitor.wait_for(lambda rs, n=round_: sum(r.path == hot[0][0] for r in rs) > n, timeout=15)
        assert {f.path for f in hook.cached_files()} == {p for p, _ in hot + cold}

        bag = DagBag(dag_folder=os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
        assert bag.import_errors == {}, bag.import_errors
        dag = bag.dags["test_xcache_smart_manager"]

        # round 1: 500 kB cached, capacity 400 kB, target 90 %: the cold dataset goes, the hot one stays
        run = dag.test()
        assert run.state == "success", {ti.task_id: ti.state for ti in run.get_task_instances()}
        assert {f.path for f in hook.cached_files()} == {p for p, _ in hot}
        for path, _ in cold:
            assert not (service.cache_dir / path.lstrip("/")).exists()
        plan = run.get_task_instance("apply").xcom_pull(task_ids="apply")
        assert sorted(plan["evicted"]) == sorted(p for p, _ in cold) and plan["prefetched"] == []

        # round 2: a hot file was dropped meanwhile; the model knows it from the log: it comes back in full
        assert hook.evict(hot[2][0])
        run = dag.test()
        assert run.state == "success", {ti.task_id: ti.state for ti in run.get_task_instances()}
        after = {f.path: f for f in hook.cached_files()}
        assert set(after) == {p for p, _ in hot} and after[hot[2][0]].complete
        plan = run.get_task_instance("apply").xcom_pull(task_ids="apply")
        assert plan["evicted"] == [] and plan["prefetched"] == [hot[2][0]]

        from airflow.models.asset import AssetEvent
        from airflow.utils.session import create_session

        with create_session() as session:
            uris = {e.asset.uri for e in session.query(AssetEvent).all()}
        assert {"xcache://xcache_manager_e2e/access-log", "xcache://xcache_manager_e2e/popularity-model"} <= uris
    finally:
        os.environ.pop(CONN, None)
        for path, _ in hot + cold:
            hook.evict(path)
