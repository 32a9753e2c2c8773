"""Elastic scaling on 14-day job traces: node-hours against perfect packing, waits, replay time.

Generates the traces of the given seeds with the shared generator (../shared/workloads/
gen_job_trace.py, default 14 days) into a temporary directory, replays each through static pools,
CLUES-like and smart scaling (180 s boot, 8-core workers, a decision every 60 s), and prints per
seed: node_hours, bound_node_hours (core-hours / 8), their ratio, mean and p95 wait, and the
median replay time (trace load plus simulation) of REPEATS runs. Target for ``smart``: ratio
<= 1.40, mean wait <= 60 s, p95 <= 300 s, replay <= 30 s.

The ``floor`` row is a reference, not a policy one could deploy: CLUES with instant boot,
instant power-off and a decision after every event. It shows what fragmentation alone costs when
running jobs are never moved (by a runtime-blind dispatcher).

With ``--with-estimates`` the traces also carry each job's campaign and requested wall time (the
first three columns are the same), and three more rows replay ``smart`` with the ``pack``
placement (longest expected runtime first, onto the worker whose jobs end closest after it, from
the estimates corrected online by finished jobs) at three settings of the wait against
node-hours knob, ``tolerance_fraction`` (0.10, 0.15, 0.20; ``smart``'s default is 0.20). Target
for ``pack tf=0.15``: ratio <= 1.45 (stretch 1.35), mean wait <= 60 s, p95 <= 300 s on every seed.
``pack truth`` (``--truth``) is a reference: the same placement given the true runtimes as
estimates, what runtime-aware placement reaches with perfect knowledge.

Run: .venv/bin/python bench/bench_scale_sim.py [--seeds 1,2,3] [--days 14] [--repeats 3] [--with-estimates]
[--truth] [--json]
"""

from __future__ import annotations

import argparse
import dataclasses
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
from airflow_cloud_paas.scaling.packing import EstimatePlacement, placement_from_name  # noqa: E402

GENERATOR = REPO.parent / "shared" / "workloads" / "gen_job_trace.py"
RUNS = [
    # (row label, policy, limits, simulate options)
    ("static:20", "static:20", {}, {}),
    ("static:30", "static:30", {}, {}),
    ("clues", "clues", {"idle_time_s": 600}, {}),
    ("smart", "smart", {}, {}),
    ("floor", "clues", {"idle_time_s": 0}, {"boot_s": 0.0, "every_event": True}),
]
PACK_RUNS = [
    ("pack tf=0.10", "smart", {"tolerance_fraction": 0.10}, {"placement": "pack"}),
    ("pack tf=0.15", "smart", {"tolerance_fraction": 0.15}, {"placement": "pack"}),
    ("pack tf=0.20", "smart", {"tolerance_fraction": 0.20}, {"placement": "pack"}),
]
TRUTH_RUN = ("pack truth", "smart", {"tolerance_fraction": 0.15}, {"placement": "pack", "truth": True})
TARGET = {"ratio": 1.40, "mean_wait_s": 60.0, "p95_wait_s": 300.0, "replay_s": 30.0}
PACK_TARGET = ("pack tf=0.15", {"ratio": 1.45, "mean_wait_s": 60.0, "p95_wait_s": 300.0, "replay_s": 30.0}, 1.35)


def generate(seed: int, days: int, out: Path, *, with_estimates: bool = False) -> Path:
    """Write the trace of ``seed`` with the shared generator and return its path.

    :param seed: the generator's seed
    :param days: trace length
    :param out: directory to write to
    :param with_estimates: add the columns group,estimate_s
    """
    path = out / f"jobs_seed{seed}_{days}d.csv"
    extra = ["--with-estimates"] if with_estimates else []
    subprocess.run([sys.executable, str(GENERATOR), "--seed", str(seed), "--days", str(days), "--out", str(path),
                    *extra], check=True, capture_output=True)
    return path


def replay(path: Path, policy: str, limits: dict, options: dict, repeats: int) -> dict:
    """Replay a trace ``repeats`` times; return the figures and the median replay seconds.

    :param path: the trace
    :param policy: the policy name
    :param limits: ``Limits`` fields
    :param options: ``simulate`` keyword arguments beyond the defaults; ``placement`` a placement name, ``truth``
        replaces every estimate with the true runtime (a reference, not a deployable setting)
    :param repeats: how many timed replays
    """
    options = dict(options)
    place, truth = options.pop("placement", "fcfs"), options.pop("truth", False)
    times, result = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        jobs = load_trace(path)
        placement = placement_from_name(place)
        if truth:
            jobs = [dataclasses.replace(job, estimate_s=job.runtime_s) for job in jobs]
            if isinstance(placement, EstimatePlacement):
                placement = EstimatePlacement(prior_jobs=1e9)  # the estimates are exact: learn no correction
        result = simulate(jobs, policy_from_name(policy, node_cores=8, **limits), placement=placement,
                          **{"boot_s": 180.0, "interval_s": 60.0, **options})
        times.append(time.perf_counter() - started)
    return {**result.to_dict(), "replay_s": statistics.median(times)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default=os.environ.get("BENCH_SEEDS", "1,2,3"))
    parser.add_argument("--days", type=int, default=14)
    parser.add_argument("--repeats", type=int, default=int(os.environ.get("BENCH_REPEATS", "3")))
    parser.add_argument("--with-estimates", action="store_true",
                        help="traces with group,estimate_s columns, and the pack placement rows")
    parser.add_argument("--truth", action="store_true",
                        help="with --with-estimates: also the pack placement given the true runtimes (a reference)")
    parser.add_argument("--json", action="store_true", help="print one JSON object per row instead of a table")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    runs = RUNS + (PACK_RUNS + ([TRUTH_RUN] if args.truth else []) if args.with_estimates else [])
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_scale_sim_") as tmp:
        for seed in seeds:
            path = generate(seed, args.days, Path(tmp), with_estimates=args.with_estimates)
            for label, policy, limits, options in runs:
                row = {"seed": seed, "row": label, **replay(path, policy, limits, options, args.repeats)}
                rows.append(row)
                if args.json:
                    print(json.dumps(row), flush=True)
                else:
                    if label == RUNS[0][0]:
                        print(f"\nseed {seed}: {row['jobs']} jobs over {args.days} days, bound "
                              f"{row['bound_node_hours']:.0f} node-hours (8-core workers, 180 s boot, decisions "
                              f"every 60 s)")
                        print(f"  {'policy':<12} {'node_h':>8} {'ratio':>6} {'mean_s':>7} {'p95_s':>7} {'max_s':>7} "
                              f"{'boots':>6} {'replay_s':>8}")
                    print(f"  {label:<12} {row['node_hours']:>8.0f} {row['ratio']:>6.3f} {row['mean_wait_s']:>7.1f} "
                          f"{row['p95_wait_s']:>7.1f} {row['max_wait_s']:>7.0f} {row['boots']:>6} "
                          f"{row['replay_s']:>8.2f}", flush=True)
    smart = [r for r in rows if r["row"] == "smart"]
    misses = [f"seed {r['seed']} {k}={r[k]:.3g} > {v:g}" for r in smart for k, v in TARGET.items() if r[k] > v]
    summary = "smart meets every target" if not misses else "smart misses: " + "; ".join(misses)
    if args.with_estimates:
        label, target, stretch = PACK_TARGET
        pack = [r for r in rows if r["row"] == label]
        misses = [f"seed {r['seed']} {k}={r[k]:.3g} > {v:g}" for r in pack for k, v in target.items() if r[k] > v]
        worst = max(r["ratio"] for r in pack)
        summary += (f"; {label} " + (f"meets every target (worst ratio {worst:.3f}; stretch {stretch:g} "
                                     f"{'met' if worst <= stretch else 'missed'})" if not misses
                                     else "misses: " + "; ".join(misses)))
    print(json.dumps({"summary": summary}) if args.json else f"\n{summary}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
