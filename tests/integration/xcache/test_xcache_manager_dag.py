"""The smart manager's DAG (dag.test) against a live XCache whose admission the model controls.

A real origin and XCache (with the project's XrdPfc decision library) on loopback. The access log holds
yesterday's task over the whole hot dataset (records a previous ingestion stored); today a second task has
read half of it, and one task read the cold dataset. The DAG then, for real: evicts the cold files to make
room, prefetches the hot files the running task reads next, and tells the cache to admit the hot dataset
and bypass the cold one; a cold read afterwards is served from the origin and not written, and the next run
ingests it from the bypass log. The log's and model's Assets get their events (the lineage the UI shows).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from integration.xcache.conftest import BLOCK, make_loopback, stop_all

from airflow_cloud_paas.hooks.xrootd import XRootDHook
from airflow_cloud_paas.services.xcache.admission import AdmissionPolicy
from airflow_cloud_paas.services.xcache.monitor import AccessLog, AccessRecord, PfcMonitor

pytestmark = pytest.mark.integration

CONN_ID = "xcache_manager_e2e"
CONN = f"AIRFLOW_CONN_{CONN_ID.upper()}"
SIZE = 50 * BLOCK // 32  # 100 kB


@pytest.fixture
def managed_cache(tmp_path: Path, runtime_root: Path) -> Iterator[dict]:
    """An origin and an XCache whose admission follows the manager's policy file, with a monitor."""
    loopback = make_loopback(tmp_path, runtime_root)
    monitor = PfcMonitor(on_record=lambda records: None).start()
    try:
        origin = loopback.origin()
        cache = loopback.xcache(origin, monitor=monitor.address, monitor_flush_s=1, prefetch=0, admission="model")
        extra = XRootDHook.connection_extra(cache.attributes)
        extra["origin"] = origin.attributes["root_url"]
        os.environ[CONN] = json.dumps({"conn_type": "xrootd", "host": "127.0.0.1", "port": cache.attributes["port"],
                                       "extra": extra})
        yield {"origin": origin, "cache": cache, "monitor": monitor, "extra": extra}
    finally:
        os.environ.pop(CONN, None)
        monitor.stop()
        stop_all(loopback)


def _put(data_dir: Path, name: str) -> tuple[str, bytes]:
    target = data_dir / "store" / name
    target.parent.mkdir(parents=True, exist_ok=True)
    target.parent.chmod(0o755)
    content = os.urandom(SIZE)
    target.write_bytes(content)
    target.chmod(0o644)
    return f"/store/{name}", content


def test_the_manager_dag_evicts_prefetches_and_sets_admission(managed_cache: dict, airflow_db) -> None:
    from airflow.dag_processing.dagbag import DagBag

    data_dir = Path(managed_cache["origin"].attributes["data_dir"])
    hot = [_put(data_dir, f"hot/h{i}.root") for i in range(8)]
    cold = [_put(data_dir, f"cold/c{i}.root") for i in range(3)]
    hook = XRootDHook(CONN_ID)
    monitor = managed_cache["monitor"]

    # yesterday's task read the whole hot dataset (stored by an earlier ingestion)
    store_url = json.loads(os.environ["AIRFLOW_CONN_CLOUD_PAAS_DEFAULT"])["extra"]["store_url"]
    log = AccessLog(store_url)
    yesterday = time.time() - 86400
    log.append([AccessRecord(yesterday + 60 * i, path, SIZE, 0, SIZE, attach_s=yesterday + 60 * i - 5, access_no=1,
                             source="cinfo", cache=CONN_ID) for i, (path, _) in enumerate(hot)])
    # today: no policy file yet, so the cache admits everything; a task reads h0-h3, another the cold files
    for path, content in hot[:4] + cold:
        assert hook.read(path) == content
    monitor.wait_for(lambda rs: {r.path for r in rs} >= {p for p, _ in hot[:4] + cold}, timeout=90)
    assert {f.path for f in hook.cached_files()} == {p for p, _ in hot[:4] + cold}

    bag = DagBag(dag_folder=os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
    assert bag.import_errors == {}, bag.import_errors
    dag = bag.dags["test_xcache_smart_manager"]
    try:
        run = dag.test()
        assert run.state == "success", {ti.task_id: ti.state for ti in run.get_task_instances()}
        learned = run.get_task_instance("train").xcom_pull(task_ids="train")
        assert learned["records"] == 8 + 7 and learned["datasets"] == 2
        plan = run.get_task_instance("apply").xcom_pull(task_ids="apply")
        # 700 kB cached, target 720 kB: the two prefetches (h4, h5: next in the running task's scan) displace
        # two cold files (one task on them, worth less)
        assert plan["prefetched"] == [hot[4][0], hot[5][0]]
        assert len(plan["evicted"]) == 2 and set(plan["evicted"]) <= {p for p, _ in cold}
        on_disk = {f.path: f for f in hook.cached_files()}
        assert set(on_disk) == {p for p, _ in hot[:6]} | ({p for p, _ in cold} - set(plan["evicted"]))
        assert on_disk[hot[4][0]].complete and on_disk[hot[5][0]].complete
        policy = AdmissionPolicy.parse(Path(managed_cache["extra"]["admission_policy"]).read_text())
        assert policy.decide(hot[7][0]) and not policy.decide(cold[0][0]) and not policy.default_admit
        assert plan["admission"] == {"default": "bypass", "admitted_datasets": 1, "bypassed_datasets": 1}

        # the live cache follows it: an evicted cold file is read from the origin and not written; a hot one is
        gone = next(p for p, c in cold if p in plan["evicted"])
        assert hook.read(gone) == dict(cold)[gone]
        assert hook.read(hot[6][0]) == hot[6][1]
        monitor.wait_for(lambda rs: any(r.path == hot[6][0] for r in rs), timeout=90)
        assert hook.cached_file(gone) is None
        assert hook.cached_file(hot[6][0]) is not None

        # the next run learns the bypassed read from the library's log, and still runs nothing twice
        run = dag.test()
        assert run.state == "success", {ti.task_id: ti.state for ti in run.get_task_instances()}
        ingested = run.get_task_instance("ingest").xcom_pull(task_ids="ingest")
        assert ingested["bypassed"] == 1
        bypassed = [r for r in log.since(0, path=gone) if r.source == "bypass"]
        assert len(bypassed) == 1 and bypassed[0].bytes_bypassed == SIZE
        # new: the bypassed read and the h6 read; the prefetches' reads are writes, not accesses
        assert run.get_task_instance("train").xcom_pull(task_ids="train")["records"] == 2

        from airflow.models.asset import AssetEvent
        from airflow.utils.session import create_session

        with create_session() as session:
            uris = {e.asset.uri for e in session.query(AssetEvent).all()}
        assert {f"xcache://{CONN_ID}/access-log", f"xcache://{CONN_ID}/popularity-model"} <= uris
    finally:
        for path, _ in hot + cold:
            hook.evict(path)
        log.close()
        from sqlalchemy import create_engine, text

        engine = create_engine(store_url)
        with engine.begin() as connection:  # the next run of this test starts a new model
            connection.execute(text("DELETE FROM cloud_paas_xcache_model WHERE cache = :c"), {"c": CONN_ID})
        engine.dispose()
