"""``cloud-paas scale-sim`` as the CLI wires it (``add_scale_sim_parser`` + ``run_scale_sim``) and as a module."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

from airflow_cloud_paas.scaling.cli import add_scale_sim_parser

REPO = Path(__file__).resolve().parents[3]
TWO_JOBS = "submit_s,runtime_s,cpus\n0,50,2\n10,30,2\n"


def run(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="cloud-paas")
    add_scale_sim_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["scale-sim", *argv])
    return args.func(args)


@pytest.fixture
def two_jobs(tmp_path: Path) -> Path:
    trace = tmp_path / "two.csv"
    trace.write_text(TWO_JOBS)
    return trace


def test_json_figures_match_the_hand_computed_replay(two_jobs, capsys):
    # one 2-core worker up at t=100: the jobs wait 100 and 140 s, the worker is up 0-180 s
    rc = run("--trace", str(two_jobs), "--policy", "static:1", "--node-cores", "2", "--boot-s", "100", "--json")
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["policy"] == "static:1" and out["jobs"] == 2
    assert out["node_hours"] == pytest.approx(0.05, abs=1e-3)
    assert out["bound_node_hours"] == pytest.approx(80 / 3600, abs=1e-3)
    assert out["ratio"] == pytest.approx(2.25, abs=1e-3)
    assert (out["mean_wait_s"], out["p95_wait_s"]) == (120, 140)
    assert out["replay_s"] >= 0 and out["node_cores"] == 2 and out["boot_s"] == 100


def test_text_output_is_a_table(two_jobs, capsys):
    assert run("--trace", str(two_jobs), "--policy", "clues") == 0
    text = capsys.readouterr().out
    for key in ("policy", "node_hours", "bound_node_hours", "ratio", "mean_wait", "p95_wait", "replay"):
        assert any(line.startswith(key) for line in text.splitlines()), key
    assert "clues" in text


def test_pack_placement_and_the_tolerance_knob_on_a_trace_with_estimates(tmp_path, capsys):
    # two 2-core workers (boot 0): the long jobs share one, the short ones the other, which clues powers off at the
    # first decision after they end (120 s): 1000 + 120 worker-seconds instead of fcfs' 2 x 1000
    trace = tmp_path / "est.csv"
    trace.write_text("submit_s,runtime_s,cpus,group,estimate_s\n0,1000,1,a,1000\n0,100,1,a,100\n"
                     "0,1000,1,a,1000\n0,100,1,a,100\n")
    common = ("--trace", str(trace), "--policy", "clues", "--idle-time-s", "0", "--node-cores", "2", "--boot-s", "0",
              "--json")
    assert run(*common, "--placement", "pack") == 0
    pack = json.loads(capsys.readouterr().out)
    assert run(*common) == 0
    fcfs = json.loads(capsys.readouterr().out)
    assert (pack["placement"], fcfs["placement"]) == ("pack", "fcfs") and pack["estimates"] == 4
    assert pack["node_hours"] == pytest.approx(1120 / 3600, abs=1e-3)
    assert fcfs["node_hours"] == pytest.approx(2000 / 3600, abs=1e-3)
    assert run("--trace", str(trace), "--placement", "pack", "--tolerance-fraction", "0.3") == 0
    text = capsys.readouterr().out
    assert "smart (tolerance_fraction 0.3)" in text and "pack (4 of 4 jobs with an estimate)" in text
    # pack's own default knob, where the benchmark meets its wait targets; fcfs keeps smart's
    assert run("--trace", str(trace), "--placement", "pack") == 0
    assert "smart (tolerance_fraction 0.15)" in capsys.readouterr().out
    assert run("--trace", str(trace)) == 0
    assert "smart (tolerance_fraction 0.2)" in capsys.readouterr().out


def test_header_only_trace_replays_to_nothing(tmp_path, capsys):
    trace = tmp_path / "empty.csv"
    trace.write_text("submit_s,runtime_s,cpus\n")
    assert run("--trace", str(trace), "--json") == 0
    out = json.loads(capsys.readouterr().out)
    assert out["jobs"] == 0 and out["ratio"] is None
    assert run("--trace", str(trace)) == 0
    assert "n/a (no work)" in capsys.readouterr().out


def test_decisions_are_written_with_their_reasons(two_jobs, tmp_path, capsys):
    log = tmp_path / "decisions.jsonl"
    assert run("--trace", str(two_jobs), "--policy", "smart", "--decisions", str(log), "--json") == 0
    entries = [json.loads(line) for line in log.read_text().splitlines()]
    assert entries and entries[0]["add"] == 1 and entries[0]["time_s"] == 0
    assert all(e["reasons"] for e in entries)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--policy", "fastest"], "PolicyError: unknown policy 'fastest'"),
        (["--policy", "smart", "--min-nodes", "5", "--max-nodes", "2"], "PolicyError: limits"),
        (["--policy", "smart", "--node-cores", "1"], "SimulationError: job 1 (submitted at 0 s) requests 2 cpus"),
        (["--policy", "smart", "--interval-s", "0"], "SimulationError: need boot_s >= 0 and interval_s > 0"),
        (["--placement", "tetris"], "PolicyError: unknown placement 'tetris'; expected one of fcfs, pack"),
        (["--policy", "clues", "--tolerance-fraction", "0.1"], "PolicyError: policy 'clues': tolerance_fraction is a"),
        (["--tolerance-fraction", "-1"], "PolicyError: smart policy: tolerance_cores and tolerance_fraction must not"),
    ],
)
def test_bad_options_exit_2_with_one_line(two_jobs, capsys, argv, message):
    assert run("--trace", str(two_jobs), *argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err


def test_bad_trace_exits_2_naming_line_and_column(tmp_path, capsys):
    trace = tmp_path / "bad.csv"
    trace.write_text("submit_s,runtime_s,cpus\n0,50,1\n10,soon,1\n")
    assert run("--trace", str(trace)) == 2
    err = capsys.readouterr().err
    assert f"TraceError: {trace}:3, column 'runtime_s': 'soon' is not a number" in err


def test_module_entry_point(tmp_path, two_jobs):
    missing = tmp_path / "nope.csv"
    bad = subprocess.run([sys.executable, "-m", "airflow_cloud_paas.scaling.cli", "--trace", str(missing)],
                         capture_output=True, text=True, cwd=REPO, timeout=60)
    assert bad.returncode == 2 and "TraceError" in bad.stderr and "nope.csv" in bad.stderr
    assert "Traceback" not in bad.stderr
    good = subprocess.run([sys.executable, "-m", "airflow_cloud_paas.scaling.cli", "--trace", str(two_jobs),
                           "--policy", "static:1", "--node-cores", "2", "--json"],
                          capture_output=True, text=True, cwd=REPO, timeout=60)
    assert good.returncode == 0, good.stderr
    assert json.loads(good.stdout)["jobs"] == 2
