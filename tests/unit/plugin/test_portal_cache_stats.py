"""The portal's XCache plot data: a deployment's cache accesses from the access log, in time buckets.

The access log is the real table (:class:`AccessLog`, in the deployment store's database as the XCache
operators write it); the records are what a cache's ``.cinfo`` files or monitoring stream give.
"""

from __future__ import annotations

import json

import pytest

from airflow_cloud_paas.plugin.portal import auto_bucket, cache_labels, cache_series, cache_stats, xcache_instances
from airflow_cloud_paas.services.xcache.monitor import AccessLog, AccessRecord
from airflow_cloud_paas.store import DeploymentStore

CACHE = {"root_url": "root://127.0.0.1:32001", "endpoint": "127.0.0.1:32001", "cache_dir": "/srv/xcache/c0",
         "origin": "root://127.0.0.1:32000"}


def _access(t: float, hit: int, missed: int, *, cache: str, path: str = "/store/f.root", bypassed: int = 0):
    return AccessRecord(time_s=t, path=path, size=hit + missed + bypassed, bytes_hit=hit, bytes_missed=missed,
                        bytes_bypassed=bypassed, attach_s=t - 1, access_no=int(t), source="cinfo", cache=cache)


def test_a_files_first_access_is_all_missed_and_written_whatever_xcaches_read_ahead_counted():
    # XCache's own record of a cold 2 MiB read: its read-ahead blocks counted as hits
    first = AccessRecord(time_s=10, path="/a", size=2 << 20, bytes_hit=1_638_400, bytes_missed=458_752,
                         access_no=1, cache="c")
    again = AccessRecord(time_s=20, path="/a", size=2 << 20, bytes_hit=2 << 20, bytes_missed=0, access_no=2, cache="c")
    (bucket,) = cache_series([first, again], [], 60)
    assert (bucket["bytes_hit"], bucket["bytes_missed"], bucket["bytes_written"]) == (2 << 20, 2 << 20, 2 << 20)
    assert bucket["byte_hit_ratio"] == 0.5


def test_buckets_sum_bytes_and_give_the_byte_hit_ratio_and_bytes_written():
    records = [_access(1000, 0, 400, cache="c"), _access(1010, 300, 100, cache="c"),
               _access(1075, 800, 0, cache="c", bypassed=200)]
    prefetches = [("/store/g.root", 1070.0, 1079.0, 1000), ("/store/h.root", 1190.0, 1200.0, 50)]
    series = cache_series(records, prefetches, 60)
    assert [(b["start_s"], b["accesses"]) for b in series] == [(960, 2), (1020, 1), (1200, 0)]
    first, second, third = series
    assert first["bytes_written"] == 500 and first["byte_hit_ratio"] == pytest.approx(300 / 800)
    # a bypassed read is read through the cache but never written to it; a prefetch is a write
    assert second["bytes_written"] == 1000 and second["byte_hit_ratio"] == pytest.approx(0.8)
    assert third["bytes_written"] == 50 and third["byte_hit_ratio"] is None
    with pytest.raises(ValueError, match="more than 0"):
        cache_series([], [], 0)


def test_a_deployments_cache_is_found_by_its_connection_directory_endpoint_or_its_own_labels():
    caches = [{"node": "xcache", "index": 0, **CACHE}]
    connections = [("xrootd_default", "other", 1094, {"cache_dir": "/srv/xcache/c0/"}),
                   ("by_endpoint", "127.0.0.1", 32001, {}),
                   ("someone_else", "127.0.0.1", 1094, {"cache_dir": "/srv/other"})]
    assert cache_labels("dep", caches, connections) == [
        "by_endpoint", "dep", "root://127.0.0.1:32001", "xrootd_default"]


@pytest.fixture
def store(tmp_path):
    store = DeploymentStore(f"sqlite:///{tmp_path}/store.db")
    store.create_deployment("xc", template="x", template_hash="h", inputs={}, owner="me", backend="local")
    store.upsert_resource("xc", "xrootd_origin", 0, "o", "RUNNING", {"root_url": "root://127.0.0.1:32000"})
    store.upsert_resource("xc", "xcache", 0, "c", "RUNNING", CACHE)
    store.create_deployment("plain", template="x", template_hash="h2", inputs={}, owner="me", backend="local")
    return store


def test_stats_come_from_the_access_log_in_the_stores_database(store):
    record = store.get("xc")
    assert [(c["node"], c["cache_dir"]) for c in xcache_instances(record)] == [("xcache", "/srv/xcache/c0")]
    t0 = record.created_at.timestamp()
    log = AccessLog(store.engine.url.render_as_string(hide_password=False))
    log.append([_access(t0 + 5, 0, 1000, cache="xrootd_default"), _access(t0 + 20, 1000, 0, cache="xrootd_default"),
                _access(t0 + 70, 500, 500, cache="root://127.0.0.1:32001", path="/store/b.root"),
                _access(t0 + 30, 999, 0, cache="another_cache"),  # not this deployment's cache
                _access(t0 - 3600, 999, 0, cache="xrootd_default")])  # before the deployment existed
    log.record_prefetch("/store/c.root", t0 + 80, t0 + 90, 2000, cache="xrootd_default")
    log.close()
    connections = [("xrootd_default", None, None, {"cache_dir": CACHE["cache_dir"]})]
    stats = cache_stats(store, record, 60, connections=connections)
    assert stats["labels"] == ["root://127.0.0.1:32001", "xc", "xrootd_default"]
    assert sum(b["accesses"] for b in stats["buckets"]) == 3
    assert sum(b["bytes_hit"] for b in stats["buckets"]) == 1500
    assert sum(b["bytes_written"] for b in stats["buckets"]) == 1000 + 500 + 2000
    assert cache_stats(store, store.get("plain"), 60, connections=[]) == {
        "caches": [], "labels": [], "bucket_s": 60, "buckets": []}
    # without a width, the buckets cut the accesses' span (85 s) into a few dozen at most
    assert cache_stats(store, record, connections=connections)["bucket_s"] == 5


def test_the_bucket_width_follows_the_span():
    assert [auto_bucket(s) for s in (0, 20, 25, 600, 86_400, 10**9)] == [1, 1, 2, 30, 3600, 86400]


def test_the_endpoint_answers_the_owner_and_hides_others_deployments(store, airflow_db, monkeypatch):
    from airflow.api_fastapi.app import create_auth_manager
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser
    from fastapi.testclient import TestClient

    from airflow_cloud_paas.plugin.portal import create_app

    monkeypatch.setenv("CLOUD_PAAS_STORE_URL", str(store.engine.url))
    connection = {"conn_type": "xrootd", "extra": {"cache_dir": CACHE["cache_dir"]}}
    monkeypatch.setenv("AIRFLOW_CONN_XC_CACHE", json.dumps(connection))
    t0 = store.get("xc").created_at.timestamp()
    log = AccessLog(str(store.engine.url))
    log.append([_access(t0 + 1, 250, 750, cache="xc_cache")])
    log.close()

    def client(user: str) -> TestClient:
        token = create_auth_manager().generate_jwt(SimpleAuthManagerUser(username=user, role="viewer"))
        return TestClient(create_app(), headers={"Authorization": f"Bearer {token}"})

    answer = client("me").get("/api/deployments/xc/cache-stats", params={"bucket_s": 60})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert "xc_cache" in body["labels"] and body["buckets"][0]["byte_hit_ratio"] == pytest.approx(0.25)
    assert client("me").get("/api/deployments/xc/cache-stats", params={"bucket_s": 0}).status_code == 422
    assert client("me").get("/api/deployments/nope/cache-stats").status_code == 404
    assert client("mallory").get("/api/deployments/xc/cache-stats").status_code == 404
