"""The live smart manager's cost: online learning from an access log, planning, and the saved model's size.

Generates gen_access_trace.py's trace (shared/workloads, seed 1, its defaults), stores its first --requests
requests in a SQLite access log as cinfo-like records (a miss each), then plays the manager's DAG cadence:
every --interval-s of trace time the new records are fed to the saved model (:func:`update_model`, load
and save through :class:`ModelStore` included) and a plan is made for a cache holding the most recently read
files up to --capacity (:func:`plan_cache`), and the admission policy is derived. Prints the medians over
--repeat runs of: seconds per learning round and per plan, records learned per second, and the saved
model's size at the end.

Run: .venv/bin/python bench/bench_xcache_manager.py [--requests 200000] [--capacity 25TB] [--repeat 3]
"""

from __future__ import annotations

import argparse
import csv
import statistics
import subprocess
import sys
import tempfile
import time
from collections import OrderedDict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from airflow_cloud_paas.services.xcache.admission import policy_from_model  # noqa: E402
from airflow_cloud_paas.services.xcache.manager import ModelStore, plan_cache, update_model  # noqa: E402
from airflow_cloud_paas.services.xcache.monitor import AccessLog, AccessRecord  # noqa: E402
from airflow_cloud_paas.services.xcache.sim import parse_capacity  # noqa: E402

GENERATOR = REPO.parent / "shared" / "workloads" / "gen_access_trace.py"
EPOCH = 1_700_000_000.0


def load_requests(workdir: Path, n: int) -> list[tuple[float, str, int]]:
    trace = workdir / "trace_seed1.csv"
    subprocess.run([sys.executable, str(GENERATOR), "--seed", "1", "--out", str(trace)], check=True,
                   capture_output=True)
    out = []
    with open(trace) as f:
        for row in csv.DictReader(f):
            out.append((float(row["time_s"]), row["path"], int(row["size_bytes"])))
            if len(out) >= n:
                break
    return out


def run_once(requests: list[tuple[float, str, int]], workdir: Path, capacity: int, interval_s: float) -> dict:
    db = workdir / f"log-{time.time_ns()}.db"
    log = AccessLog(db)
    store = ModelStore(str(db))
    recent: OrderedDict[str, int] = OrderedDict()
    learn_s, plan_s, learned = [], [], 0
    i, t_end = 0, requests[0][0] + interval_s
    try:
        while i < len(requests):
            batch = []
            while i < len(requests) and requests[i][0] < t_end:
                t, path, size = requests[i]
                batch.append(AccessRecord(EPOCH + t, path, size, 0, size, attach_s=EPOCH + t, access_no=i,
                                          source="cinfo", cache="bench"))
                recent[path] = size
                recent.move_to_end(path)
                i += 1
            log.append(batch)
            now = EPOCH + t_end
            start = time.perf_counter()
            saved = store.load_or_new("bench")
            learned += update_model(saved, log, now=now, window_days=3650, capacity_bytes=capacity)
            store.save(saved)
            learn_s.append(time.perf_counter() - start)
            cached, used = {}, 0
            for path in reversed(recent):  # the cache: the latest files read, up to its capacity
                if used + recent[path] > capacity:
                    break
                cached[path] = recent[path]
                used += recent[path]
            start = time.perf_counter()
            plan_cache(saved.model, cached, capacity, now=now, prefetch_budget_bytes=capacity // 100)
            policy_from_model(saved.model, now, cached=cached)
            plan_s.append(time.perf_counter() - start)
            t_end += interval_s
        size = len(saved.to_body())
    finally:
        store.close()
        log.close()
    return {"rounds": len(learn_s), "learned": learned, "learn_s_total": sum(learn_s),
            "learn_s_median": statistics.median(learn_s), "plan_s_median": statistics.median(plan_s),
            "plan_s_max": max(plan_s), "model_bytes": size, "datasets": len(saved.model.datasets)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=200_000)
    ap.add_argument("--capacity", default="25TB")
    ap.add_argument("--interval-s", type=float, default=6 * 3600.0, help="trace seconds between DAG runs")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    capacity = parse_capacity(args.capacity)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        requests = load_requests(workdir, args.requests)
        runs = [run_once(requests, workdir, capacity, args.interval_s) for _ in range(args.repeat)]
    med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    span_days = (requests[-1][0] - requests[0][0]) / 86400
    print(f"{len(requests)} requests over {span_days:.1f} days, a DAG round every {args.interval_s / 3600:g} h of "
          f"trace time ({med['rounds']:.0f} rounds), capacity {args.capacity}, median of {args.repeat} runs:")
    print(f"  learning: {med['learned']:.0f} records, {med['learn_s_total']:.1f} s in all "
          f"({med['learned'] / med['learn_s_total']:.0f} records/s, store load and save included), "
          f"{med['learn_s_median'] * 1000:.0f} ms per round")
    print(f"  plan + admission policy: {med['plan_s_median'] * 1000:.0f} ms per round (max {med['plan_s_max']:.2f} s)")
    print(f"  saved model: {med['model_bytes'] / 1e6:.2f} MB for {med['datasets']:.0f} datasets")
    return 0


if __name__ == "__main__":
    sys.exit(main())
