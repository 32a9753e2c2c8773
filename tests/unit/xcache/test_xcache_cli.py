"""``cache-sim`` as the ``cloud-paas`` command runs it: parsed, replayed, printed; bad input exits 2."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import pytest

from airflow_cloud_paas.services.xcache.cli import add_cache_sim_parser, run_cache_sim

GB = 1024**3


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cloud-paas")
    add_cache_sim_parser(parser.add_subparsers(dest="command", required=True))
    return parser


def _run(*argv: str) -> int:
    args = _parser().parse_args(["cache-sim", *argv])
    return args.func(args)


@pytest.fixture()
def trace_file(tmp_path):
    path = tmp_path / "trace.csv"
    rows = ["time_s,path,size_bytes"]
    for k, f in enumerate("a b a c b a d a".split()):  # 8 requests of 1 GiB files
        rows.append(f"{k * 10},/store/mc/DS1/NANOAOD/{f}.root,{GB}")
    path.write_text("\n".join(rows) + "\n")
    return path


@pytest.mark.parametrize(("policy", "hits"), [("lru", 2), ("lfu", 3), ("lru2", 2), ("belady", 4)])
def test_cache_sim_json(trace_file, capsys, policy, hits):
    assert _run("--trace", str(trace_file), "--capacity", "2GB", "--policy", policy, "--json") == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])  # the JSON is the last line
    assert out["policy"] == policy and out["capacity_bytes"] == 2 * GB and out["requests"] == 8
    assert out["hit_ratio"] == pytest.approx(hits / 8) and out["byte_hit_ratio"] == pytest.approx(hits / 8)
    if policy in ("lru", "lfu"):  # they write every miss
        assert out["bytes_written"] == out["bytes_requested"] - out["bytes_hit"]
    assert out["bytes_written_tb"] == pytest.approx(out["bytes_written"] / 1024**4)
    assert out["replay_s"] >= 0


def test_cache_sim_text_and_default_policy(trace_file, capsys):
    assert _run("--trace", str(trace_file), "--capacity", "1TiB") == 0
    out = capsys.readouterr().out
    assert out.startswith("smart on ") and "byte_hit_ratio" in out and "8 requests" in out


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["--capacity", "lots"], ["CapacityError", "lots"]),
        (["--capacity", "25XB"], ["CapacityError", "unknown unit"]),
        (["--capacity", "2GB", "--policy", "arc"], ["PolicyError", "'arc'", "belady"]),
    ],
)
def test_cache_sim_bad_arguments_exit_2(trace_file, capsys, argv, words):
    assert _run("--trace", str(trace_file), *argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err
    for word in words:
        assert word in err


def test_cache_sim_bad_trace_exits_2_naming_the_line(tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("time_s,path,size_bytes\n0,/a/1,10\n1,/a/2,ten\n")
    assert _run("--trace", str(bad), "--capacity", "1TB") == 2
    err = capsys.readouterr().err
    assert "TraceError" in err and "bad.csv" in err and "line 3" in err and "size_bytes" in err
    assert _run("--trace", str(tmp_path / "missing.csv"), "--capacity", "1TB") == 2
    assert "missing.csv" in capsys.readouterr().err


def test_cache_sim_runs_in_a_fresh_interpreter_without_airflow(trace_file):
    code = (
        "import sys, argparse\n"
        "from airflow_cloud_paas.services.xcache.cli import add_cache_sim_parser\n"
        "p = argparse.ArgumentParser(prog='cloud-paas')\n"
        "add_cache_sim_parser(p.add_subparsers(dest='command', required=True))\n"
        "args = p.parse_args(sys.argv[1:])\n"
        "rc = args.func(args)\n"
        "assert not any(m == 'airflow' or m.startswith('airflow.') for m in sys.modules), 'airflow imported'\n"
        "sys.exit(rc)\n"
    )
    ok = subprocess.run([sys.executable, "-c", code, "cache-sim", "--trace", str(trace_file), "--capacity", "2GB",
                         "--policy", "belady", "--json"], capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["hit_ratio"] == pytest.approx(0.5)
    bad = subprocess.run([sys.executable, "-c", code, "cache-sim", "--trace", str(trace_file), "--capacity=-1TB"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "CapacityError" in bad.stderr and "Traceback" not in bad.stderr


def test_run_cache_sim_takes_a_plain_namespace(trace_file, capsys):
    args = argparse.Namespace(trace=str(trace_file), capacity="3GB", policy="lru", json=True)
    assert run_cache_sim(args) == 0
    assert json.loads(capsys.readouterr().out)["hit_ratio"] == pytest.approx(4 / 8)


def test_cloud_paas_cache_sim_is_wired(tmp_path, capsys) -> None:
    import json

    from airflow_cloud_paas.cli import main

    trace = tmp_path / "t.csv"
    trace.write_text("time_s,path,size_bytes\n0,/s/d/a,100\n1,/s/d/a,100\n2,/s/d/b,50\n")
    assert main(["cache-sim", "--trace", str(trace), "--capacity", "1KB", "--policy", "lru", "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])  # the JSON is the last line
    assert (out["requests"], out["hit_ratio"], out["bytes_written"]) == (3, 1 / 3, 150)
    assert main(["cache-sim", "--trace", str(trace), "--capacity", "lots", "--policy", "lru"]) == 2
    assert "error:" in capsys.readouterr().err
