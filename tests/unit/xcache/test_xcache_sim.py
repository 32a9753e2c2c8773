"""Trace loading, capacity parsing and replay of the cache simulator."""

from __future__ import annotations

import pytest

from airflow_cloud_paas.services.xcache.errors import CapacityError, PolicyError, TraceError
from airflow_cloud_paas.services.xcache.sim import TB, SimResult, parse_capacity, replay
from airflow_cloud_paas.services.xcache.trace import Trace, load_trace

GB = 1024**3


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("25TB", 25 * 1024**4),
        ("25tb", 25 * 1024**4),
        ("10TiB", 10 * 1024**4),
        ("500GB", 500 * GB),
        ("500 GiB", 500 * GB),
        ("1.5T", int(1.5 * 1024**4)),
        ("2PB", 2 * 1024**5),
        ("4096", 4096),
        ("64k", 64 * 1024),
        (" 3 MB ", 3 * 1024**2),
        (7 * GB, 7 * GB),
    ],
)
def test_capacity_units_are_binary(text, expected):
    assert parse_capacity(text) == expected


@pytest.mark.parametrize(
    "text", ["", "TB", "25XB", "-5TB", "0TB", "0", "twenty TB", "25 T B", "1e3GB", True, -3, float("nan"), float("inf")]
)
def test_bad_capacity_is_a_typed_error(text):
    with pytest.raises(CapacityError) as err:
        parse_capacity(text)
    assert "capacity" in str(err.value)


def _write(tmp_path, text: str):
    path = tmp_path / "trace.csv"
    path.write_text(text)
    return path


def test_load_trace_reads_requests_and_shares_paths(tmp_path):
    path = _write(tmp_path, "time_s,path,size_bytes\n0,/s/a/1.root,10\n5,/s/a/2.root,20\n5,/s/a/1.root,10\n\n")
    trace = load_trace(path)
    assert len(trace) == 3
    assert trace.times == [0.0, 5.0, 5.0] and trace.sizes == [10, 20, 10]
    assert trace.paths[0] == trace.paths[2] and trace.paths[0] is trace.paths[2]
    assert trace.head(2).paths == ["/s/a/1.root", "/s/a/2.root"]


@pytest.mark.parametrize(
    ("text", "line", "column", "words"),
    [
        ("time,path,size\n", 1, None, ["header"]),
        ("", 1, None, ["empty"]),
        ("time_s,path,size_bytes\n0,/a/1,10\nsoon,/a/2,10\n", 3, "time_s", ["soon"]),
        ("time_s,path,size_bytes\n0,/a/1,10\n1,/a/2,big\n", 3, "size_bytes", ["big"]),
        ("time_s,path,size_bytes\n0,/a/1,10\n1,/a/2,-3\n", 3, "size_bytes", ["negative"]),
        ("time_s,path,size_bytes\n0,/a/1,10\n1,,3\n", 3, "path", ["empty"]),
        ("time_s,path,size_bytes\n0,/a/1,10\n1,/a/2\n", 3, "size_bytes", ["3 values"]),
        ("time_s,path,size_bytes\n9,/a/1,10\n1,/a/2,5\n", 3, "time_s", ["sort"]),
        ("time_s,path,size_bytes\n0,/a/1,10\n1,/a/2,5,7\n", 3, "size_bytes", ["3 values"]),
        ("time_s,path,size_bytes\n0,/a/1,10\nnan,/a/2,5\n", 3, "time_s", ["finite"]),
    ],
)
def test_bad_trace_names_line_and_column(tmp_path, text, line, column, words):
    path = _write(tmp_path, text)
    with pytest.raises(TraceError) as err:
        load_trace(path)
    assert err.value.line == line and err.value.column == column
    message = str(err.value)
    assert str(path) in message and f"line {line}" in message
    for word in words:
        assert word in message


def test_missing_trace_is_a_trace_error(tmp_path):
    with pytest.raises(TraceError, match="cannot open"):
        load_trace(tmp_path / "nope.csv")
    with pytest.raises(TraceError, match="cannot open"):
        load_trace(tmp_path)


def test_binary_trace_is_a_trace_error(tmp_path):
    path = tmp_path / "trace.csv"
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(TraceError, match="not a text file"):
        load_trace(path)


def test_replay_counts_hits_bytes_and_writes():
    trace = Trace.from_rows([(0, "/d/a", 4), (1, "/d/b", 4), (2, "/d/a", 4), (3, "/d/c", 6), (4, "/d/a", 4)])
    result = replay(trace, "lru", 10)
    assert isinstance(result, SimResult)
    # a miss, b miss, a hit, c miss (evicts b), a hit
    assert (result.requests, result.hits, result.bytes_hit) == (5, 2, 8)
    assert result.bytes_requested == 22 and result.bytes_written == 14
    assert result.hit_ratio == pytest.approx(2 / 5) and result.byte_hit_ratio == pytest.approx(8 / 22)
    out = result.to_dict()
    assert out["bytes_written_tb"] == pytest.approx(14 / TB) and out["policy"] == "lru"
    assert out["capacity_bytes"] == 10 and out["replay_s"] >= 0


def test_replay_by_name_needs_a_known_policy_and_capacity():
    trace = Trace.from_rows([(0, "/d/a", 1)])
    with pytest.raises(PolicyError, match="unknown cache policy 'fifo'.*belady"):
        replay(trace, "fifo", "1TB")
    with pytest.raises(CapacityError):
        replay(trace, "lru", "lots")


def test_trace_from_rows_checks_values():
    with pytest.raises(TraceError) as err:
        Trace.from_rows([(0, "/d/a", 1), (1, "/d/b", "x")], source="rows")
    assert err.value.line == 2 and err.value.column == "size_bytes"
