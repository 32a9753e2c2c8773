"""A real origin and XCache on loopback: copy through the cache, prefetch, evict, monitoring, disk usage.

The cache's disk is the judge: data files and their ``.cinfo`` (read with ``xrdpfc_print``), file sizes
and blocks. Monitoring records are the live cache's UDP g-stream, received by :class:`PfcMonitor` and
stored by :class:`AccessLog` in SQLite (and PostgreSQL, below).
"""

from __future__ import annotations

import csv
import math
import os
import time
from pathlib import Path

import pytest
from conftest import BLOCK, Loopback, Service

from airflow_cloud_paas.hooks.xrootd import XRootDError, XRootDHook, XRootDNotFoundError
from airflow_cloud_paas.services.xcache.monitor import AccessLog, CacheDirectory, ingest_cinfo, read_cinfo

pytestmark = pytest.mark.integration


def on_disk(service: Service, path: str) -> tuple[Path, Path]:
    data = service.cache_dir / path.lstrip("/")
    return data, data.with_name(data.name + ".cinfo")


def test_a_file_is_copied_through_the_cache(service: Service, tmp_path: Path) -> None:
    path, content = service.put("copied.bin", 3 * BLOCK + 1000)
    data, cinfo = on_disk(service, path)
    assert not data.exists() and not cinfo.exists()
    hook = XRootDHook(service.conn_id)
    assert hook.stat(path).size == len(content)
    assert hook.stat(path, at_origin=True).size == len(content)

    copied = hook.copy(path, tmp_path / "copy.bin")

    assert copied.read_bytes() == content
    # the cache fetched the file from the origin and keeps it on its own disk
    info = read_cinfo(cinfo, cache_dir=service.cache_dir)
    assert info.path == path and info.file_size == len(content) and info.block_size == BLOCK
    assert info.n_blocks == math.ceil(len(content) / BLOCK)
    assert data.read_bytes()[: len(content)] == content


def test_prefetch_puts_the_whole_file_on_the_cache_disk(service: Service) -> None:
    path, content = service.put("prefetched.bin", 40 * BLOCK + 12345)
    data, cinfo = on_disk(service, path)
    hook = XRootDHook(service.conn_id)
    assert hook.cached_file(path) is None

    cached = hook.prefetch(path)

    assert cached is not None and cached.complete
    assert cached.info.blocks_done == cached.info.n_blocks == math.ceil(len(content) / BLOCK)
    assert cached.cached_bytes == len(content)
    assert data.stat().st_size == len(content) and cached.bytes_on_disk >= len(content)
    assert data.read_bytes() == content
    assert cinfo.exists()
    assert path in [f.path for f in hook.cached_files()]


def test_a_partial_read_leaves_a_partial_file(service: Service) -> None:
    path, content = service.put("partial.bin", 32 * BLOCK)
    hook = XRootDHook(service.conn_id)

    assert hook.read(path, offset=0, size=1000) == content[:1000]

    deadline = time.monotonic() + 60  # a condition, not a sleep: generous for a loaded machine
    # the .cinfo exists from the open; the cache writes its block map when the access ends
    while (cached := hook.cached_file(path)) is None or cached.info is None or cached.info.n_accesses < 1:
        assert time.monotonic() < deadline, "the cache did not record the access"
        time.sleep(0.1)
    assert not cached.complete
    assert 1 <= cached.info.blocks_done < cached.info.n_blocks == 32
    assert cached.bytes_on_disk < len(content)


def test_evict_removes_the_file_from_the_cache_disk(service: Service) -> None:
    path, content = service.put("evicted.bin", 8 * BLOCK)
    data, cinfo = on_disk(service, path)
    hook = XRootDHook(service.conn_id)
    hook.prefetch(path)
    assert data.exists() and cinfo.exists()

    assert hook.evict(path) is True

    assert not data.exists() and not cinfo.exists()
    assert hook.cached_file(path) is None
    assert hook.evict(path) is False  # nothing left to evict
    assert hook.read(path) == content  # still served: fetched from the origin again
    assert hook.prefetch(path).complete


def test_evict_without_cache_commands_removes_the_files_on_disk(loopback: Loopback, monkeypatch) -> None:
    origin = loopback.origin()
    cache = loopback.xcache(origin, allow_commands=False)
    (Path(origin.attributes["data_dir"]) / "store" / "f.bin").write_bytes(os.urandom(4 * BLOCK))
    monkeypatch.setenv("AIRFLOW_CONN_NOCMD", (
        f'{{"conn_type": "xrootd", "host": "127.0.0.1", "port": {cache.attributes["port"]}, '
        f'"extra": {{"cache_dir": "{cache.attributes["cache_dir"]}"}}}}'
    ))
    hook = XRootDHook("nocmd")
    assert hook.prefetch("/store/f.bin").complete
    assert not hook._command("remove_file/ /store/f.bin", "/store/f.bin")  # the cache refuses commands

    assert hook.evict("/store/f.bin") is True
    assert hook.cached_file("/store/f.bin") is None
    assert not (Path(cache.attributes["cache_dir"]) / "store" / "f.bin").exists()


def test_monitoring_records_reach_the_access_log(service: Service) -> None:
    path, content = service.put("monitored.bin", 16 * BLOCK)
    hook = XRootDHook(service.conn_id)
    started = time.time() - 1

    def records(count: int) -> list:
        # a file re-opened before the cache closed it continues the same access: wait for each one's record
        return [r for r in service.monitor.wait_for(lambda rs: sum(r.path == path for r in rs) >= count, timeout=90)
                if r.path == path]

    assert hook.read(path) == content  # a miss: fetched from the origin
    (miss,) = records(1)
    assert hook.read(path) == content  # a hit: served from the cache's disk
    hit = records(2)[1]
    assert (miss.bytes_hit, miss.bytes_missed) == (0, len(content))
    assert (hit.bytes_hit, hit.bytes_missed) == (len(content), 0)
    assert miss.size == hit.size == len(content) and miss.source == "gstream"
    assert miss.access_no < hit.access_no and started <= miss.time_s <= hit.time_s <= time.time() + 1
    assert miss.cache == hook.url

    deadline = time.monotonic() + 60  # the listener's thread stores them just after they arrive
    while len(stored := service.access_log.since(started, path=path)) < 2:
        assert time.monotonic() < deadline, "the records did not land in the access log"
        time.sleep(0.05)
    assert {(r.bytes_hit, r.bytes_missed) for r in stored} >= {(0, len(content)), (len(content), 0)}
    assert service.access_log.totals(started)["bytes_hit"] >= len(content)
    assert service.monitor.callback_errors == 0


def test_cinfo_ingestion_is_idempotent_and_matches_the_stream(service: Service, tmp_path: Path) -> None:
    path, content = service.put("ingested.bin", 8 * BLOCK)
    hook = XRootDHook(service.conn_id)
    for count in (1, 2, 3):  # three accesses, each ended (recorded) before the next
        assert hook.read(path) == content
        service.monitor.wait_for(lambda rs, n=count: sum(r.path == path for r in rs) >= n, timeout=90)

    log = AccessLog(tmp_path / "cinfo.db")
    try:
        added = ingest_cinfo(log, service.cache_dir, cache=hook.url)
        mine = log.since(0, path=path)
        assert [(r.access_no, r.bytes_missed > 0, r.source) for r in mine] == [
            (1, True, "cinfo"), (2, False, "cinfo"), (3, False, "cinfo")
        ]
        assert sum(r.bytes_hit + r.bytes_missed for r in mine) == 3 * len(content)
        assert added >= 3
        assert ingest_cinfo(log, service.cache_dir, cache=hook.url) == 0  # re-reading stores nothing twice
        # the stream's records of the same accesses have the same keys: the cinfo adds nothing for them
        streamed = [r for r in service.monitor.records if r.path == path]
        assert log.append(streamed) == 0
        assert {r.key for r in streamed} <= {r.key for r in mine}
        # the log exports a trace the cache simulator replays
        assert log.write_trace(tmp_path / "trace.csv") == log.count()
        with open(tmp_path / "trace.csv", newline="") as f:
            assert [row["path"] for row in csv.DictReader(f)].count(path) == 3
    finally:
        log.close()


def test_disk_usage_counts_the_cached_files(service: Service) -> None:
    path, _ = service.put("counted.bin", 20 * BLOCK)
    hook = XRootDHook(service.conn_id)
    before = hook.disk_usage()
    hook.prefetch(path)

    after = hook.disk_usage()

    files = list(p for p in service.cache_dir.rglob("*") if p.is_file())
    assert after.used_bytes == sum(p.stat().st_blocks * 512 for p in files)
    assert after.used_bytes - before.used_bytes >= 20 * BLOCK
    assert after.files == before.files + 1 == len([p for p in files if p.suffix != ".cinfo"])
    assert 0 < after.free_bytes < after.total_bytes
    assert CacheDirectory(service.cache_dir).usage().used_bytes == after.used_bytes


def test_errors_name_the_path(service: Service, monkeypatch) -> None:
    hook = XRootDHook(service.conn_id)
    with pytest.raises(XRootDNotFoundError, match="/store/missing.bin") as caught:
        hook.stat("/store/missing.bin")
    assert caught.value.errno == 3011 and caught.value.url == hook.url
    with pytest.raises(XRootDError, match="absolute path"):
        hook.read("store/x")
    monkeypatch.setenv("AIRFLOW_CONN_NODISK", '{"conn_type": "xrootd", "host": "127.0.0.1", "port": 1}')
    with pytest.raises(XRootDError, match="no cache_dir extra"):
        XRootDHook("nodisk").disk_usage()
    started = time.monotonic()
    with pytest.raises(XRootDError, match="/store/x.bin at root://127.0.0.1:1"):
        XRootDHook("nodisk", timeout=5).stat("/store/x.bin")  # nothing listens: fails fast, not in minutes
    assert time.monotonic() - started < 20


def test_only_loopback_clients_are_admitted(service: Service) -> None:
    import psutil

    from airflow_cloud_paas.services.xcache.local import xrootd_ping

    port = service.cache.attributes["port"]
    assert xrootd_ping("127.0.0.1", port) and xrootd_ping("::1", port)
    others = [a.address for addrs in psutil.net_if_addrs().values() for a in addrs
              if a.family.name == "AF_INET" and not a.address.startswith("127.")]
    if not others:
        pytest.skip("this machine has no non-loopback IPv4 address to connect from")
    assert not xrootd_ping(others[0], port)  # xrootd listens on it, but refuses the client


def test_a_dead_cache_is_restarted_by_a_retried_create(loopback: Loopback) -> None:
    import signal

    import psutil

    from airflow_cloud_paas.backends.base import ResourceState
    from airflow_cloud_paas.services.xcache.local import xrootd_ping

    origin = loopback.origin()
    cache = loopback.xcache(origin)
    (xrootd,) = [p for p in psutil.Process(cache.attributes["pid"]).children() if p.name() == "xrootd"]
    xrootd.send_signal(signal.SIGKILL)  # a crash: the wrapper cleans the instance's directory up and ends
    psutil.wait_procs([xrootd, psutil.Process(cache.attributes["pid"])], timeout=10)
    assert not Path(cache.attributes["runtime_dir"]).exists()
    (dead,) = loopback.backend.describe(loopback.deployment, "cache")
    assert dead.state == ResourceState.STOPPED

    again = loopback.xcache(origin)  # what a retried task does

    assert again.state == ResourceState.RUNNING and again.attributes["pid"] != cache.attributes["pid"]
    assert again.attributes["port"] == cache.attributes["port"]  # same address for its clients
    assert xrootd_ping("127.0.0.1", again.attributes["port"])
    assert Path(again.attributes["cache_dir"]).is_dir()
