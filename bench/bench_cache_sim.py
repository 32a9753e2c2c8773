"""Cache policies on generated HEP access traces: byte-hit, hit, writes and replay speed.

Generates the traces of gen_access_trace.py (shared/workloads, its default settings) for each seed into a
temporary directory, replays them through every policy at each capacity, and prints per seed and capacity:
byte-hit and hit ratios, byte-hit as a fraction of Belady's, the part of the LRU-to-Belady byte-hit gap
closed, bytes written (TB and as a fraction of LRU's) and replay seconds. Then checks the targets of
``smart`` (byte-hit >= 0.90 x Belady's, gap closed >= 0.5, writes <= 0.30 x LRU's at every point) and
times the replay of the first 1,000,000 requests of the first seed's trace (one core, median of
--repeat runs).

Run: .venv/bin/python bench/bench_cache_sim.py [--seeds 1,2,3] [--capacities 10,25,50] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from airflow_cloud_paas.services.xcache.policies import POLICIES  # noqa: E402
from airflow_cloud_paas.services.xcache.sim import TB, replay  # noqa: E402
from airflow_cloud_paas.services.xcache.trace import load_trace  # noqa: E402

GENERATOR = REPO.parent / "shared" / "workloads" / "gen_access_trace.py"
TARGET_BELADY, TARGET_GAP, TARGET_WRITES = 0.90, 0.5, 0.30


def generate(seed: int, workdir: Path) -> Path:
    """Write the trace of ``seed`` (generator defaults) and return its path."""
    out = workdir / f"trace_seed{seed}.csv"
    if not out.exists():
        start = time.perf_counter()
        done = subprocess.run([sys.executable, str(GENERATOR), "--seed", str(seed), "--out", str(out)],
                              capture_output=True, text=True, check=True)
        print(f"seed {seed}: {done.stderr.strip()} ({time.perf_counter() - start:.0f} s)", flush=True)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="1,2,3")
    ap.add_argument("--capacities", default="10,25,50", help="TB (1024**4 bytes)")
    ap.add_argument("--policies", default=",".join(POLICIES))
    ap.add_argument("--workdir", help="keep the traces here (default: a temporary directory)")
    ap.add_argument("--timing-requests", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=1, help="timing runs per policy (median reported)")
    ap.add_argument("--json", help="also write every result to this JSON file")
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    capacities = [float(c) for c in args.capacities.split(",")]
    policies = [p.strip() for p in args.policies.split(",")]
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="bench_cache_sim_"))
    workdir.mkdir(parents=True, exist_ok=True)

    results: list[dict] = []
    failures: list[str] = []
    header = (f"{'seed':>4} {'TB':>4} {'policy':<7} {'byte-hit':>8} {'hit':>7} {'/belady':>7} {'gap':>6} "
              f"{'written TB':>10} {'/lru':>6} {'replay s':>8}")
    first_trace = None
    for seed in seeds:
        start = time.perf_counter()
        trace = load_trace(generate(seed, workdir))
        print(f"seed {seed}: {len(trace)} requests loaded in {time.perf_counter() - start:.1f} s", flush=True)
        if first_trace is None:
            first_trace = trace
        print(header)
        for cap in capacities:
            rows = {p: replay(trace, p, int(cap * TB)) for p in policies}
            lru, belady = rows.get("lru"), rows.get("belady")
            for name, r in rows.items():
                to_belady = r.byte_hit_ratio / belady.byte_hit_ratio if belady else float("nan")
                gap = ((r.byte_hit_ratio - lru.byte_hit_ratio) / (belady.byte_hit_ratio - lru.byte_hit_ratio)
                       if lru and belady and belady.byte_hit_ratio > lru.byte_hit_ratio else float("nan"))
                writes = r.bytes_written / lru.bytes_written if lru and lru.bytes_written else float("nan")
                print(f"{seed:>4} {cap:>4g} {name:<7} {r.byte_hit_ratio:>8.4f} {r.hit_ratio:>7.4f} {to_belady:>7.3f} "
                      f"{gap:>6.3f} {r.bytes_written_tb:>10.1f} {writes:>6.3f} {r.replay_s:>8.1f}", flush=True)
                results.append({"seed": seed, "capacity_tb": cap, **r.to_dict(), "to_belady": to_belady,
                                "gap_closed": gap, "writes_vs_lru": writes})
                if name == "smart" and lru and belady:
                    for ok, what in ((to_belady >= TARGET_BELADY, f"byte-hit {to_belady:.3f} x Belady"),
                                     (gap >= TARGET_GAP, f"gap closed {gap:.3f}"),
                                     (writes <= TARGET_WRITES, f"writes {writes:.3f} x LRU")):
                        if not ok:
                            failures.append(f"seed {seed} at {cap:g} TB: {what}")
    if "smart" in policies and "lru" in policies and "belady" in policies:
        print("smart targets (>= 0.90 x Belady, >= half the LRU-Belady gap, <= 0.30 x LRU writes): "
              + ("all met" if not failures else "MISSED: " + "; ".join(failures)))

    timings = {}
    if first_trace is not None and args.timing_requests:
        head = first_trace.head(min(args.timing_requests, len(first_trace)))
        print(f"replay of the first {len(head)} requests of seed {seeds[0]} at 25 TB, median of {args.repeat}:")
        for name in policies:
            runs = [replay(head, name, 25 * TB).replay_s for _ in range(args.repeat)]
            timings[name] = statistics.median(runs)
            print(f"  {name:<7} {timings[name]:6.1f} s  ({len(head) / timings[name] / 1000:.0f} k requests/s)",
                  flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"results": results, "timing_s": timings, "failures": failures},
                                              indent=2))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
