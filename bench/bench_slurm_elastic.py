"""Elastic SLURM on real daemons against the simulator: burst -> first job on a new worker, queue empty -> released.

Each run deploys the packaged ``slurm_elastic_cluster`` template on the local backend (real munged, slurmctld and
one slurmd per worker), with one worker; submits a burst of JOBS one-CPU jobs of RUNTIME_S seconds at once; and
runs the shared elastic engine (``ElasticScaler.run_once``, what the scaling DAGs' task runs) every INTERVAL_S
seconds until the extra workers are released. It measures:

- ``first_new_s``: from the burst to the first job that starts on a worker added by the engine, split into
  ``decide_s`` (burst -> the round that adds workers), ``boot_s`` (that round -> the new slurmd registered) and the
  rest (SLURM scheduling the pending job on it);
- ``release_s``: from the last job's end (queue empty, nothing running) to the extra workers deleted;
- ``node_s``: worker-seconds used, and the jobs' mean wait.

The same burst is then replayed by ``cloud-paas scale-sim`` (the simulator behind it, same policy, limits,
decision interval, with the boot time measured live) and both are printed side by side: where they differ is
where the simulator's model of a scheduler differs from SLURM's (SLURM starts jobs within its 1 s scheduling
pass; ``started_s`` has 1 s resolution). Medians of REPEATS runs. The scaling loop here is the engine's round on
a timer, not Airflow's scheduler: the scheduled DAG adds its own schedule interval (5 minutes by default) and
task start-up to ``decide_s``; ``bench_trigger_to_complete.py`` measures those.

Run: .venv/bin/python bench/bench_slurm_elastic.py [--jobs 12] [--runtime-s 15] [--repeats 3]
     [--policies clues,smart] [--interval-s 5] [--json]
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from airflow_cloud_paas import packaged_template  # noqa: E402
from airflow_cloud_paas.backends.local import LocalBackend  # noqa: E402
from airflow_cloud_paas.deployer import Deployer  # noqa: E402
from airflow_cloud_paas.request import DeploymentRequest  # noqa: E402
from airflow_cloud_paas.scaling import load_trace, policy_from_name, simulate  # noqa: E402
from airflow_cloud_paas.scaling.elastic import ElasticScaler  # noqa: E402
from airflow_cloud_paas.scaling.probe import make_probe  # noqa: E402
from airflow_cloud_paas.services.slurm.client import SlurmClient  # noqa: E402
from airflow_cloud_paas.store import DeploymentStore  # noqa: E402
from airflow_cloud_paas.tosca import load_topology  # noqa: E402


def live_run(work: Path, policy: str, args: argparse.Namespace) -> dict:
    """Deploy, burst, scale until released, delete; return the figures of one run."""
    store = DeploymentStore(f"sqlite:///{work}/store.db")
    backend = LocalBackend(work / "w")
    deployment = f"bench-{uuid.uuid4().hex[:6]}"
    limits = {"min_nodes": 1, "max_nodes": args.max_workers, "idle_time_s": args.idle_time_s, "node_cores": 1}
    request = DeploymentRequest.build(
        load_topology(packaged_template("slurm_elastic_cluster.yaml")), deployment,
        {"worker_count": 1, "max_workers": args.max_workers, "scaling_policy": policy,
         "idle_time_s": args.idle_time_s, "min_workers": 1}, actor="bench")
    deployer = Deployer(request, store, backend)
    deployer.create_all()
    try:
        client = SlurmClient(store.get(deployment).outputs["slurm_conf"], timeout=15)
        scaler = ElasticScaler(deployer, "slurm_worker", make_probe("slurm", str(client.slurm_conf)),
                               policy_from_name(policy, **limits))
        out = work / "out"
        out.mkdir(exist_ok=True)
        burst = time.time()
        jobs = [client.submit(wrap=f"sleep {args.runtime_s}", time_limit=10, output=f"{out}/%j.txt",
                              job_name=f"b{i}") for i in range(args.jobs)]
        added_at = first_new_at = None
        ready_at: dict[int, float] = {}

        def first_on_a_new_worker() -> float | None:
            running = client.jobs(states=["RUNNING"])  # squeue's start times are whole seconds: poll instead
            return time.time() if any(j.nodes and j.nodes[0] != "worker1" for j in running) else None

        node_s, last = 0.0, time.time()
        all_done_at = released_at = None
        while released_at is None:
            tick = time.time()
            decision = scaler.run_once()
            if decision.add and added_at is None:
                added_at = tick
            for resource in backend.describe(deployment, "slurm_worker"):
                record = backend.record(deployment, "slurm_worker", resource.index)
                if record and record.ready_at and resource.index and resource.index not in ready_at:
                    ready_at[resource.index] = record.ready_at
            states = [client.job(j) for j in jobs]
            now = time.time()
            workers = len(backend.describe(deployment, "slurm_worker"))
            node_s += workers * (now - last)
            last = now
            if all_done_at is None and all(s.finished for s in states):  # (if it ended during the round)
                all_done_at = time.time()
                waits = [s.started_s - int(burst) for s in states if s.started_s]
            if all_done_at is not None and workers <= 1:
                released_at = now
                break
            if now - burst > args.timeout_s:
                raise TimeoutError(f"{policy}: not released within {args.timeout_s} s")
            while time.time() - tick < args.interval_s:  # between rounds, watch closely what a round would not
                if first_new_at is None and added_at is not None:
                    first_new_at = first_on_a_new_worker()
                if all_done_at is None and first_new_at is not None:
                    states = [client.job(j) for j in jobs]
                    if all(s.finished for s in states):
                        all_done_at = time.time()
                        waits = [s.started_s - int(burst) for s in states if s.started_s]
                time.sleep(0.1 if first_new_at is None and added_at is not None else 0.3)
        return {
            "first_new_s": None if first_new_at is None else first_new_at - burst,
            "decide_s": None if added_at is None else added_at - burst,
            "boot_s": statistics.median(t - added_at for t in ready_at.values()) if ready_at and added_at else None,
            "release_s": released_at - all_done_at,
            "node_s": node_s,
            "mean_wait_s": statistics.fmean(max(0.0, w) for w in waits),
            "workers_added": len(ready_at),
        }
    finally:
        backend.delete(deployment)


def sim_run(work: Path, policy: str, args: argparse.Namespace, boot_s: float) -> dict:
    """Replay the same burst with the simulator (and print the scale-sim command's own summary)."""
    trace = work / "burst.csv"
    with open(trace, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["submit_s", "runtime_s", "cpus"])
        for _ in range(args.jobs):
            writer.writerow([0, args.runtime_s, 1])
    cli = [sys.executable, "-m", "airflow_cloud_paas.scaling.cli", "--trace", str(trace), "--policy", policy,
           "--node-cores", "1", "--boot-s", f"{boot_s:.2f}", "--interval-s", str(args.interval_s),
           "--min-nodes", "1", "--max-nodes", str(args.max_workers), "--idle-time-s", str(args.idle_time_s),
           "--initial-nodes", "1", "--until-released", "--json"]
    summary = json.loads(subprocess.run(cli, check=True, capture_output=True, text=True, cwd=REPO).stdout)
    limits = {"min_nodes": 1, "max_nodes": args.max_workers, "idle_time_s": args.idle_time_s, "node_cores": 1}
    # the same replay in-process, for what the command does not print: each job's wait and the decisions' times
    result = simulate(load_trace(trace), policy_from_name(policy, **limits), boot_s=boot_s,
                      interval_s=args.interval_s, record=True, initial_nodes=1, until_released=True)
    waits = sorted(w for w in result.waits if w > 0)  # the jobs that did not start on the first worker at once
    retire_times = [e["time_s"] for e in result.log if e.get("retire")]
    last_end = max(w + args.runtime_s for w in result.waits)
    return {
        "first_new_s": waits[0] if waits else None,
        "release_s": (max(retire_times) - last_end) if retire_times else None,
        "node_s": summary["node_hours"] * 3600,
        "mean_wait_s": summary["mean_wait_s"],
        "command": " ".join(["cloud-paas", "scale-sim", *cli[3:]]),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=12)
    parser.add_argument("--runtime-s", type=int, default=15)
    parser.add_argument("--max-workers", type=int, default=4)
    parser.add_argument("--idle-time-s", type=float, default=10.0)
    parser.add_argument("--interval-s", type=float, default=5.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--policies", default="clues,smart")
    parser.add_argument("--timeout-s", type=float, default=600.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    report = {}
    for policy in args.policies.split(","):
        runs = []
        for _ in range(args.repeats):
            with tempfile.TemporaryDirectory(prefix="bslurm-") as tmp:
                runs.append(live_run(Path(tmp), policy, args))
        live = {k: statistics.median(r[k] for r in runs if r[k] is not None)
                for k in ("first_new_s", "decide_s", "boot_s", "release_s", "node_s", "mean_wait_s")}
        with tempfile.TemporaryDirectory(prefix="bslurm-sim-") as tmp:
            sim = sim_run(Path(tmp), policy, args, boot_s=live["boot_s"])
        report[policy] = {"live_median": live, "live_runs": runs, "sim": sim}
    if args.json:
        print(json.dumps(report, indent=2, default=str))
        return 0
    print(f"burst of {args.jobs} x {args.runtime_s} s one-CPU jobs on 1 worker (max {args.max_workers}), "
          f"a round every {args.interval_s:g} s, idle_time {args.idle_time_s:g} s; live = median of {args.repeats}")
    print(f"{'policy':<7} {'figure':<14} {'live':>9} {'scale-sim':>10}")
    for policy, row in report.items():
        live, sim = row["live_median"], row["sim"]
        for key in ("first_new_s", "release_s", "node_s", "mean_wait_s"):
            sim_value = sim.get(key)
            print(f"{policy:<7} {key:<14} {live[key]:>9.1f} {'n/a' if sim_value is None else f'{sim_value:10.1f}':>10}")
        print(f"{policy:<7} {'decide_s':<14} {live['decide_s']:>9.1f}")
        print(f"{policy:<7} {'boot_s':<14} {live['boot_s']:>9.2f}  (given to scale-sim as --boot-s)")
        print(f"        sim: {sim['command']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
