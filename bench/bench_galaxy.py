"""Galaxy on an elastic SLURM cluster, for real: deploy-to-first-job, and workflow throughput against SLURM workers.

Each run deploys the packaged ``galaxy_slurm_cluster`` template on the local backend (a real Galaxy 26.1.1 whose
jobs go through sbatch, a real slurmctld/munged and one slurmd per worker) and measures:

- ``deploy_s``: the deployment (SLURM controller, Galaxy answering with its admin and flavour, one worker);
- ``first_job_s``: from the deployment's end to the first tool job's output ``ok`` (an upload, then a sort job
  that runs as a SLURM job): ``deploy_to_first_job_s`` is their sum;
- for each worker count W (the cluster rescaled to W one-CPU workers): N concurrent invocations of a 2-step
  workflow (upper case -> line count, 2N SLURM jobs), from the first invoke to the last invocation done:
  ``makespan_s`` and ``per_min`` (invocations per minute), and per job (medians) ``job_life_s`` (created ->
  finished in Galaxy) against ``job_run_s`` (the tool's command itself, Galaxy's ``runtime_seconds`` metric).

Medians of REPEATS runs (this machine is shared and noisy). Galaxy's own work per job (staging, metadata, the
job script's start, its 1 s job-state polls) is the floor that more workers do not remove: on 2 cores Galaxy and
the jobs compete for the same CPUs.

Run: .venv/bin/python bench/bench_galaxy.py [--invocations 4] [--workers 1,2,4] [--repeats 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import secrets
import statistics
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
from airflow_cloud_paas.services.galaxy.client import GalaxyClient  # noqa: E402
from airflow_cloud_paas.services.galaxy.config import galaxy_web  # noqa: E402
from airflow_cloud_paas.services.slurm.client import SlurmClient  # noqa: E402
from airflow_cloud_paas.store import DeploymentStore  # noqa: E402
from airflow_cloud_paas.tosca import load_topology  # noqa: E402

WORKFLOW = {
    "class": "GalaxyWorkflow", "label": "upper then count", "inputs": {"text": {"type": "data"}},
    "outputs": {"count": {"outputSource": "count/output"}},
    "steps": {"upper": {"tool_id": "cloud_paas_upper", "in": {"input": "text"}},
              "count": {"tool_id": "cloud_paas_line_count", "in": {"input": "upper/output"}}},
}


def _wait_invocations(galaxy: GalaxyClient, invocations: list[str], timeout: float = 900.0) -> None:
    deadline = time.monotonic() + timeout
    pending = set(invocations)
    while pending:
        for invocation in list(pending):
            status = galaxy.invocation_status(invocation)
            if status["failed"]:
                raise RuntimeError(f"invocation {invocation} failed: {galaxy.failure_detail(invocation)}")
            if status["done"]:
                pending.discard(invocation)
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(pending)} invocation(s) not done after {timeout:.0f} s")
        time.sleep(0.5)


def _job_times(galaxy: GalaxyClient, invocations: list[str]) -> tuple[list[float], list[float]]:
    """Return each job's life in Galaxy (created -> finished) and its command's own run time (Galaxy's metric)."""
    from datetime import datetime

    lifetimes, runtimes = [], []
    for invocation in invocations:
        for job in galaxy.gi.jobs.get_jobs(invocation_id=invocation):
            shown = galaxy.gi.jobs.show_job(job["id"], full_details=True)
            created = datetime.fromisoformat(shown["create_time"])
            updated = datetime.fromisoformat(shown["update_time"])
            lifetimes.append((updated - created).total_seconds())
            metrics = {m["name"]: m.get("raw_value") for m in shown.get("job_metrics") or []}
            runtimes.append(float(metrics.get("runtime_seconds") or 0.0))
    return lifetimes, runtimes


def one_run(work: Path, args: argparse.Namespace) -> dict:
    """Deploy, run the first job, then the workflow batches per worker count; delete; return the figures."""
    store = DeploymentStore(f"sqlite:///{work}/store.db")
    backend = LocalBackend(work / "w", ready_timeout=300)
    key = secrets.token_hex(16)
    deployment = f"bench-galaxy-{uuid.uuid4().hex[:6]}"
    request = DeploymentRequest.build(
        load_topology(packaged_template("galaxy_slurm_cluster.yaml")), deployment,
        {"admin_api_key": key, "worker_count": 1, "max_workers": max(args.workers), "min_workers": 1,
         "scaling_policy": f"static:{max(args.workers)}"}, actor="bench")
    deployer = Deployer(request, store, backend)
    figures: dict = {}
    try:
        started = time.monotonic()
        outputs = deployer.create_all()
        deployed = time.monotonic()
        galaxy = GalaxyClient(outputs["galaxy_url"], key)
        history = galaxy.create_history("bench")
        dataset = galaxy.upload(history, content="b\na\nc\n", name="in.txt", file_type="txt")
        galaxy.wait_dataset(dataset, interval=0.25)
        job = galaxy.run_tool(history, "cloud_paas_sort", {"input": {"src": "hda", "id": dataset}})
        galaxy.wait_dataset(job["outputs"][0]["id"], interval=0.25)
        first = time.monotonic()
        figures.update(deploy_s=deployed - started, first_job_s=first - deployed, deploy_to_first_job_s=first - started)

        workflow = galaxy.import_workflow(WORKFLOW)
        slurm = SlurmClient(backend.describe(deployment, "slurm_controller")[0].attributes["slurm_conf"], timeout=15)
        for workers in args.workers:
            current = len(backend.describe(deployment, "slurm_worker"))
            if workers > current:
                deployer.rescale("slurm_worker", add=workers - current, reason="bench")
            elif workers < current:
                indices = sorted(r.index for r in backend.describe(deployment, "slurm_worker"))
                deployer.rescale("slurm_worker", retire=indices[workers:], reason="bench")
            assert len(slurm.nodes()) == workers, slurm.nodes()
            t0 = time.monotonic()
            invocations = [galaxy.invoke(workflow, history, {"text": dataset}) for _ in range(args.invocations)]
            _wait_invocations(galaxy, invocations)
            makespan = time.monotonic() - t0
            lifetimes, runtimes = _job_times(galaxy, invocations)
            figures[f"w{workers}"] = {"makespan_s": makespan, "per_min": args.invocations * 60.0 / makespan,
                                      "job_life_s": statistics.median(lifetimes),
                                      "job_run_s": statistics.median(runtimes)}
    finally:
        deployer.begin_delete()
        deployer.delete_all()
        deployer.complete_delete()
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--invocations", type=int, default=4)
    parser.add_argument("--workers", default="1,2,4", help="SLURM worker counts, comma-separated")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    args.workers = [int(w) for w in args.workers.split(",")]
    if galaxy_web() is None:
        print("Galaxy is not installed: run `make galaxy-runtime`", file=sys.stderr)
        return 1
    runs = []
    for i in range(args.repeats):
        with tempfile.TemporaryDirectory(prefix="bench-galaxy-") as tmp:
            runs.append(one_run(Path(tmp), args))
        print(f"run {i + 1}/{args.repeats}: {json.dumps(runs[-1], default=lambda x: round(x, 2))}", file=sys.stderr)

    def med(path: list[str]) -> float:
        values = []
        for run in runs:
            value = run
            for part in path:
                value = value[part]
            values.append(value)
        return statistics.median(values)

    summary = {k: med([k]) for k in ("deploy_s", "first_job_s", "deploy_to_first_job_s")}
    summary["workflows"] = {w: {k: med([f"w{w}", k]) for k in ("makespan_s", "per_min", "job_life_s", "job_run_s")}
                            for w in args.workers}
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    print(f"Galaxy on elastic SLURM, medians of {args.repeats} run(s)")
    print(f"  deploy {summary['deploy_s']:.1f} s + first job {summary['first_job_s']:.1f} s "
          f"= deploy-to-first-job {summary['deploy_to_first_job_s']:.1f} s")
    print(f"  {args.invocations} concurrent 2-step workflow invocations ({2 * args.invocations} SLURM jobs):")
    for workers, figures in summary["workflows"].items():
        print(f"    {workers} worker(s): makespan {figures['makespan_s']:.1f} s, "
              f"{figures['per_min']:.2f} invocations/min; a job lives {figures['job_life_s']:.1f} s in Galaxy, "
              f"its command runs {figures['job_run_s']:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
