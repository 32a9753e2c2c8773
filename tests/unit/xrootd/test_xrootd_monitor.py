"""Access records: g-stream packets, the UDP listener on a real socket, the SQLite access log, the hook's form.

The packets here are built to XRootD's g-stream layout (monitoring header, stream header, JSON records
separated by newlines and ended by NUL), standing in for a live cache, which tests/integration/xcache runs.
"""

from __future__ import annotations

import csv
import json
import socket
import struct
import time
from pathlib import Path

import pytest

from airflow_cloud_paas.services.xcache.monitor import (
    AccessLog,
    AccessLogError,
    AccessRecord,
    CacheDirectory,
    MonitorError,
    PfcMonitor,
    parse_gstream_packet,
)


def packet(*events: dict, code: bytes = b"g") -> bytes:
    """Return a g-stream packet holding ``events`` (XrdXrootdMonHeader + XrdXrootdMonGS + JSON lines)."""
    body = b"\n".join(json.dumps(e).encode() for e in events) + b"\0"
    header = struct.pack(">cBHI", code, 1, 24 + len(body), 1795562762)
    stream = struct.pack(">II", 1795562770, 1795562771) + b"C" + bytes(7)
    return header + stream + body


def file_close(lfn: str, n: int, hit: int, miss: int, size: int = 1000) -> dict:
    return {"event": "file_close", "lfn": lfn, "size": size, "blk_size": 65536, "n_blks": 1, "n_blks_done": 1,
            "access_cnt": n, "attach_t": 1795562700 + n, "detach_t": 1795562710 + n, "remotes": [],
            "b_hit": hit, "b_miss": miss, "b_bypass": 0, "n_cks_errs": 0}


def test_a_packet_gives_its_file_close_records() -> None:
    data = packet(file_close("/store/a", 1, 0, 1000), {"event": "something_else"}, file_close("/store/b", 2, 1000, 0))
    records = parse_gstream_packet(data, cache="root://c:1")
    assert [(r.path, r.bytes_hit, r.bytes_missed, r.access_no, r.time_s, r.attach_s) for r in records] == [
        ("/store/a", 0, 1000, 1, 1795562711.0, 1795562701.0),
        ("/store/b", 1000, 0, 2, 1795562712.0, 1795562702.0),
    ]
    assert {r.cache for r in records} == {"root://c:1"} and {r.source for r in records} == {"gstream"}
    assert parse_gstream_packet(packet(file_close("/x", 1, 0, 1), code=b"u")) == []  # not a g-stream
    assert parse_gstream_packet(b"g" + bytes(10)) == []
    assert parse_gstream_packet(packet({"event": "file_close", "lfn": "/no/size"})) == []


def test_a_record_key_identifies_the_access_not_the_route() -> None:
    streamed = AccessRecord(10.0, "/f", 5, 5, 0, attach_s=3.0, access_no=2, source="gstream", cache="c")
    from_cinfo = AccessRecord(10.0, "/f", 5, 5, 0, attach_s=3.0, access_no=2, source="cinfo", cache="c")
    assert streamed.key == from_cinfo.key
    assert streamed.key != AccessRecord(10.0, "/f", 5, 5, 0, attach_s=3.0, access_no=3, cache="c").key
    assert streamed.key != AccessRecord(10.0, "/f", 5, 5, 0, attach_s=3.0, access_no=2, cache="other").key
    # a file evicted and cached again restarts its access numbers: the attach time tells them apart
    assert streamed.key != AccessRecord(99.0, "/f", 5, 5, 0, attach_s=90.0, access_no=2, cache="c").key
    assert streamed.hit_ratio == 1.0 and AccessRecord(1.0, "/f", 0, 0, 0).hit_ratio is None


def test_the_listener_receives_packets_on_a_real_socket(tmp_path: Path) -> None:
    log = AccessLog(tmp_path / "a.db")
    with PfcMonitor(on_record=log.append, cache="root://c:1") as monitor:
        assert monitor.address == f"127.0.0.1:{monitor.port}"
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            sender.sendto(packet(file_close("/store/a", 1, 0, 1000)), ("127.0.0.1", monitor.port))
            sender.sendto(b"garbage", ("127.0.0.1", monitor.port))
            sender.sendto(packet(file_close("/store/a", 2, 1000, 0)), ("127.0.0.1", monitor.port))
        records = monitor.wait_for(lambda rs: len(rs) >= 2, timeout=5)
        assert [r.access_no for r in records] == [1, 2]
        deadline = time.monotonic() + 5
        while log.count() < 2:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert monitor.packets == 3
        with pytest.raises(MonitorError, match="did not come in"):
            monitor.wait_for(lambda rs: len(rs) >= 3, timeout=0.3)
    assert monitor._thread is None  # stopped
    log.close()


def test_a_failing_sink_does_not_stop_the_listener() -> None:
    calls = []

    def sink(records):
        calls.append(records)
        if len(calls) == 1:
            raise RuntimeError("database down")

    with PfcMonitor(on_record=sink) as monitor, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        for n in (1, 2):
            sender.sendto(packet(file_close("/f", n, 0, 1)), ("127.0.0.1", monitor.port))
        monitor.wait_for(lambda rs: len(rs) == 2, timeout=5)
        deadline = time.monotonic() + 5
        while len(calls) < 2:
            assert time.monotonic() < deadline
            time.sleep(0.02)
    assert monitor.callback_errors == 1


def test_a_port_in_use_is_a_typed_error() -> None:
    with PfcMonitor() as first:
        with pytest.raises(MonitorError, match=f"cannot listen on UDP 127.0.0.1:{first.port}"):
            PfcMonitor(first.port).start()


def test_the_sqlite_access_log(tmp_path: Path) -> None:
    def rec(n, path="/store/a", t=None):
        return AccessRecord(time_s=t or 100.0 + n, path=path, size=10, bytes_hit=n, bytes_missed=10 - n,
                            attach_s=(t or 100.0 + n) - 5, access_no=n, source="cinfo", cache="c")

    log = AccessLog(str(tmp_path / "log.db"))  # a bare path is a SQLite file
    assert log.append([]) == 0
    assert log.append([rec(1), rec(2), rec(2)]) == 2
    assert log.append([rec(1), rec(3, "/store/b", t=90.0)]) == 1
    assert log.count() == 3 and log.count(since=101.5) == 1
    assert [r.access_no for r in log.since(0)] == [3, 1, 2]  # by time
    assert log.since(0, path="/store/a", limit=1) == [rec(1)]
    assert log.since(0, cache="other") == []
    assert log.totals(since=100.0) == {"records": 2, "bytes_hit": 3, "bytes_missed": 17, "bytes_bypassed": 0}
    assert log.write_trace(tmp_path / "trace.csv") == 3
    with open(tmp_path / "trace.csv", newline="") as f:  # the simulator's format: sorted, one row per access
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["time_s", "path", "size_bytes"]
    assert [r["path"] for r in rows] == ["/store/b", "/store/a", "/store/a"]
    assert [float(r["time_s"]) for r in rows] == [85.0, 96.0, 97.0]
    log.close()
    assert AccessLog(f"sqlite:///{tmp_path}/log.db").count() == 3  # the table stays


def test_a_bad_access_log_url_is_a_typed_error() -> None:
    with pytest.raises(AccessLogError, match="not a SQLAlchemy URL"):
        AccessLog("postgresql+psycopg2://user:hunter2@host:notaport/db")


def test_the_cache_directory_keeps_paths_inside(tmp_path: Path) -> None:
    directory = CacheDirectory(tmp_path)
    assert directory.data_path("/store/a.root") == tmp_path / "store" / "a.root"
    assert directory.cinfo_path("/store/a.root") == tmp_path / "store" / "a.root.cinfo"
    assert directory.data_path("/../../etc/passwd") == tmp_path / "etc" / "passwd"  # normalized under the root
    with pytest.raises(MonitorError, match="not a file path"):
        directory.data_path("/")
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / "a.root").write_bytes(b"x" * 5000)
    usage = directory.usage()
    assert usage.files == 1 and usage.used_bytes >= 5000 and usage.total_bytes > usage.free_bytes > 0
    assert directory.remove("/store/a.root") is True and directory.remove("/store/a.root") is False
    with pytest.raises(MonitorError, match="does not exist"):
        CacheDirectory(tmp_path / "missing").usage()


def test_the_hook_declares_its_connection_type() -> None:
    from airflow_cloud_paas.hooks.xrootd import CONNECTION_TYPE, XRootDHook

    assert (XRootDHook.conn_type, XRootDHook.default_conn_name, XRootDHook.conn_name_attr) == (
        "xrootd", "xrootd_default", "xrootd_conn_id")
    assert CONNECTION_TYPE["connection-type"] == "xrootd"
    assert CONNECTION_TYPE["hook-class-name"] == f"{XRootDHook.__module__}.{XRootDHook.__name__}"
    behaviour = XRootDHook.get_ui_field_behaviour()
    assert "password" in behaviour["hidden_fields"] and behaviour["placeholders"]["port"] == "1094"
    assert XRootDHook.connection_extra({"cache_dir": "/c", "origin": "127.0.0.1:5"}) == {
        "cache_dir": "/c", "origin": "root://127.0.0.1:5"}


def test_the_hook_reads_its_connection(monkeypatch) -> None:
    from airflow_cloud_paas.hooks.xrootd import XRootDError, XRootDHook

    monkeypatch.setenv("AIRFLOW_CONN_XRD_UNIT", json.dumps(
        {"conn_type": "xrootd", "host": "cache.example.org", "port": 2094, "extra": {"cache_dir": "/c"}}))
    hook = XRootDHook("xrd_unit")
    assert hook.url == "root://cache.example.org:2094"
    assert hook.cache_directory.root == Path("/c") and hook.cache_directory.cache == hook.url
    monkeypatch.setenv("AIRFLOW_CONN_XRD_NOHOST", json.dumps({"conn_type": "xrootd"}))
    with pytest.raises(XRootDError, match="has no Host"):
        _ = XRootDHook("xrd_nohost").url
