"""Elastic scaling on 14-day job traces: node-hours against perfect packing, waits, replay time.

Generates the traces of the given seeds with the shared generator (../shared/workloads/
gen_job_trace.py, default 14 days) into a temporary directory, replays each through static pools,
CLUES-like and smart scaling (180 s boot, 8-core workers, a decision every 60 s), and prints per
seed: node_hours, bound_node_hours (core-hours / 8), their ratio, mean and p95 wait, and the
median replay time (trace load plus simulation) of REPEATS runs. Target for ``smart``: ratio
<= 1.40, mean wait <= 60 s, p95 <= 300 s, replay <= 30 s.

The ``floor`` row is a reference, not a policy one could deploy: CLUES with instant boot,
instant power-off and a decision after every event. It shows what fragmentation alone costs when
running jobs are never moved.

Run: .venv/bin/python bench/bench_scale_sim.py [--seeds 1,2,3] [--days 14] [--repeats 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from airflow_cloud_paas.scaling import load_trace, policy_from_name, simulate  # noqa: E402

GENERATOR = REPO.parent / "shared" / "workloads" / "gen_job_trace.py"
RUNS = [
    # (row label, policy, limits, simulate options)
    ("static:20", "static:20", {}, {}),
    ("static:30", "static:30", {}, {}),
    ("clues", "clues", {"idle_time_s": 600}, {}),
    ("smart", "smart", {}, {}),
    ("floor", "clues", {"idle_time_s": 0}, {"boot_s": 0.0, "every_event": True}),
]
TARGET = {"ratio": 1.40, "mean_wait_s": 60.0, "p95_wait_s": 300.0, "replay_s": 30.0}


def generate(seed: int, days: int, out: Path) -> Path:
    """Write the trace of ``seed`` with the shared generator and return its path.

    :param seed: the generator's seed
    :param days: trace length
    :param out: directory to write to
    """
    path = out / f"jobs_seed{seed}_{days}d.csv"
    subprocess.run([sys.executable, str(GENERATOR), "--seed", str(seed), "--days", str(days), "--out", str(path)],
                   check=True, capture_output=True)
    return path


def replay(path: Path, policy: str, limits: dict, options: dict, repeats: int) -> dict:
    """Replay a trace ``repeats`` times; return the figures and the median replay seconds.

    :param path: the trace
    :param policy: the policy name
    :param limits: ``Limits`` fields
    :param options: ``simulate`` keyword arguments beyond the defaults
    :param repeats: how many timed replays
    """
    times, result = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        jobs = load_trace(path)
        result = simulate(jobs, policy_from_name(policy, node_cores=8, **limits),
                          **{"boot_s": 180.0, "interval_s": 60.0, **options})
        times.append(time.perf_counter() - started)
    return {**result.to_dict(), "replay_s": statistics.median(times)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default=os.environ.get("BENCH_SEEDS", "1,2,3"))
    parser.add_argument("--days", type=int, default=14)
    parser.add_argument("--repeats", type=int, default=int(os.environ.get("BENCH_REPEATS", "3")))
    parser.add_argument("--json", action="store_true", help="print one JSON object per row instead of a table")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_scale_sim_") as tmp:
        for seed in seeds:
            path = generate(seed, args.days, Path(tmp))
            for label, policy, limits, options in RUNS:
                row = {"seed": seed, "row": label, **replay(path, policy, limits, options, args.repeats)}
                rows.append(row)
                if args.json:
                    print(json.dumps(row), flush=True)
                else:
                    if label == RUNS[0][0]:
                        print(f"\nseed {seed}: {row['jobs']} jobs over {args.days} days, bound "
                              f"{row['bound_node_hours']:.0f} node-hours (8-core workers, 180 s boot, decisions "
                              f"every 60 s)")
                        print(f"  {'policy':<10} {'node_h':>8} {'ratio':>6} {'mean_s':>7} {'p95_s':>7} {'max_s':>7} "
                              f"{'boots':>6} {'replay_s':>8}")
                    print(f"  {label:<10} {row['node_hours']:>8.0f} {row['ratio']:>6.3f} {row['mean_wait_s']:>7.1f} "
                          f"{row['p95_wait_s']:>7.1f} {row['max_wait_s']:>7.0f} {row['boots']:>6} "
                          f"{row['replay_s']:>8.2f}", flush=True)
    smart = [r for r in rows if r["row"] == "smart"]
    misses = [f"seed {r['seed']} {k}={r[k]:.3g} > {v:g}" for r in smart for k, v in TARGET.items() if r[k] > v]
    summary = "smart meets every target" if not misses else "smart misses: " + "; ".join(misses)
    print(json.dumps({"summary": summary}) if args.json else f"\n{summary}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
