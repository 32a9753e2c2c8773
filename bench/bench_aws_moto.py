"""Deploy and delete a 20-node TOSCA template on a moto EC2 server, 10 deployments at once, through Airflow.

Starts a real ``moto_server`` and a real Airflow standalone (scheduler, dag-processor, triggerer, API
server, LocalExecutor), both on 127.0.0.1. The DAGs folder (a temp dir) holds one generated template
(one ``cloud_paas.nodes.Compute`` node scaled to 20, 1 CPU / 1 GB, Ubuntu 16.04) and a DAG file that
renders it with ``ToscaDag(backend="aws:<conn>", teardown=True)``, so each run deploys then deletes.
Each repetition (on a fresh moto) triggers 10 runs through the REST API at once and times first trigger
-> last run end; then checks that no instance is left on moto and every deployment is DELETE_COMPLETE in
the store. Then the baseline, a plain boto3 script doing the same EC2 work with 10 threads: per
deployment, run_instances (20), wait running, terminate, wait terminated. Figures: medians of BENCH_REPS.

Each fresh moto is warmed with one DescribeImages before the clock starts: moto loads its AMI catalogue on the
first one (10-15 s when ten deployments ask at once), which a real EC2 never does.

Run: .venv/bin/python bench/bench_aws_moto.py
Env: BENCH_REPS (3), BENCH_DEPLOYMENTS (10), BENCH_NODES (20),
BENCH_LAYOUT (``count``: one node scaled to N; ``nodes``: N node templates),
BENCH_NODE_TASKS (1: a task per node to deploy and to delete it, the default DAG shape; 0: ``node_tasks=False``,
the whole deployment in one create and one delete task), BENCH_DB (``sqlite``: Airflow's metadata and the
deployment store in SQLite files, as ``make run``; ``postgres``: both in fresh databases of the local PostgreSQL,
as a production Airflow has them), BENCH_KEEP_HOME=1 (keep logs).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

REPS = int(os.environ.get("BENCH_REPS", "3"))
DEPLOYMENTS = int(os.environ.get("BENCH_DEPLOYMENTS", "10"))
NODES = int(os.environ.get("BENCH_NODES", "20"))
LAYOUT = os.environ.get("BENCH_LAYOUT", "count")
NODE_TASKS = os.environ.get("BENCH_NODE_TASKS", "1") != "0"
DB = os.environ.get("BENCH_DB", "sqlite")
DAG_ID = "bench_aws_moto"
CONN_ID = "bench_aws_moto"
REGION = "us-east-1"
#: Airflow standalone's log servers bind these on 0.0.0.0 (not configurable): one Airflow at a time
LOG_SERVER_PORTS = (8793, 8794)
LIVE_STATES = ["pending", "running", "shutting-down", "stopping", "stopped"]
TAG_DEPLOYMENT = "cloud-paas-deployment"


def free_port() -> int:
    """Return a free TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_busy(port: int) -> bool:
    """Return whether something listens on ``port`` (any address)."""
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def wait_log_ports_free(timeout: float = 900) -> None:
    """Wait until no other Airflow holds the standalone log server ports (another session may run one)."""
    deadline = time.monotonic() + timeout
    while busy := [p for p in LOG_SERVER_PORTS if port_busy(p)]:
        if time.monotonic() > deadline:
            raise RuntimeError(f"ports {busy} still busy after {timeout:.0f} s (another Airflow standalone?)")
        print(f"ports {busy} busy (another Airflow?); waiting...", flush=True)
        time.sleep(10)


def ts(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


class Moto:
    """A ``moto_server`` process on 127.0.0.1, stopped by its PID (process group)."""

    def __init__(self, log: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        binary = Path(sys.executable).parent / "moto_server"
        with log.open("ab") as out:
            self.proc = subprocess.Popen([str(binary), "-H", "127.0.0.1", "-p", str(self.port)], stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 30
        while not port_busy(self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"moto_server did not start: {log.read_text()[-2000:]}")
            time.sleep(0.1)

    def client(self):
        import boto3

        # a session per caller: boto3's default session is not thread-safe
        return boto3.session.Session().client("ec2", endpoint_url=self.url, region_name=REGION,
                                              aws_access_key_id="testing", aws_secret_access_key="testing")

    def stop(self) -> None:
        for sig, grace in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.proc.wait(timeout=grace)
                break
            except subprocess.TimeoutExpired:
                continue


def template_text(nodes: int, layout: str, version: str = "16.04", cloud: str = "EC2") -> str:
    """Return a TOSCA template with ``nodes`` compute instances (one scaled node, or that many nodes).

    :param nodes: the instances
    :param layout: ``count`` (one node scaled to ``nodes``) or ``nodes`` (that many node templates)
    :param version: the Ubuntu version of the ``os`` capability (an image the cloud has)
    :param cloud: what the description calls the instances' cloud
    """
    host = "        host:\n          properties:\n            num_cpus: 1\n            mem_size: 1 GB\n"
    os_cap = ("        os:\n          properties:\n            distribution: ubuntu\n"
              f"            version: \"{version}\"\n")
    head = textwrap.dedent(f"""\
        tosca_definitions_version: tosca_simple_yaml_1_0

        imports:
          - cloud_paas: https://raw.githubusercontent.com/airflow-cloud-paas/tosca-types/main/cloud_paas_types.yaml

        description: Benchmark - {nodes} {cloud} instances (1 CPU, 1 GB, Ubuntu {version}).

        topology_template:
          node_templates:
        """)
    if layout == "count":
        body = ("    vms:\n      type: cloud_paas.nodes.Compute\n      capabilities:\n"
                f"        scalable:\n          properties:\n            count: {nodes}\n" + host + os_cap)
    elif layout == "nodes":
        body = "".join(f"    vm{i:02d}:\n      type: cloud_paas.nodes.Compute\n      capabilities:\n" + host + os_cap
                       for i in range(nodes))
    else:
        raise SystemExit(f"BENCH_LAYOUT must be 'count' or 'nodes', not {layout!r}")
    return head + body


DAG_FILE = '''\
"""Generated by bench/{bench}."""

from airflow_cloud_paas.converter import ToscaDag

dag = ToscaDag(
    "{template}",
    dag_id="{dag_id}",
    backend="{backend}:{conn_id}",
    teardown=True,
    schedule=None,
    max_active_runs={runs},
    max_active_tasks=64,
    node_tasks={node_tasks},
)
'''


def instances(ec2, filters: list[dict]) -> list[dict]:
    """Return every instance matching ``filters`` (all pages: moto pages by 100 reservations)."""
    pages = ec2.get_paginator("describe_instances").paginate(Filters=filters)
    return [i for page in pages for r in page["Reservations"] for i in r["Instances"]]


def moto_leftovers(moto: Moto, ids: list[str]) -> dict[str, int]:
    """Return what moto holds of these deployments: instances made, instances live, tagged security groups.

    :param moto: the moto server
    :param ids: the deployments' ids
    """
    ec2 = moto.client()
    made = instances(ec2, [{"Name": f"tag:{TAG_DEPLOYMENT}", "Values": ids}])
    live = instances(ec2, [{"Name": "instance-state-name", "Values": LIVE_STATES}])
    groups = ec2.describe_security_groups(Filters=[{"Name": f"tag:{TAG_DEPLOYMENT}", "Values": ids}])
    return {"made": len(made), "live": len(live), "groups": len(groups["SecurityGroups"])}


#: the deployer's log line at the end of each step (see Deployer._leased): its API calls and, where measured, their time
STEP_LINE = re.compile(r"step \w+ took [\d.]+ s, \d+ \w+ API call\(s\) in ([\d.]+) s")


def api_seconds(logs: Path, dag_id: str, run_id: str) -> float | None:
    """Return the seconds a run's steps spent in provider API calls, from its task logs (None: not measured).

    :param logs: Airflow's logs folder
    :param dag_id: the DAG
    :param run_id: the run
    """
    found = [float(m.group(1)) for f in (logs / f"dag_id={dag_id}" / f"run_id={run_id}").glob("task_id=*/*.log")
             for m in STEP_LINE.finditer(f.read_text(errors="replace"))]
    return sum(found) if found else None


def run_airflow_rep(api, store, moto: Moto | None, rep: int, dag_id: str = DAG_ID,
                    leftovers: Callable[[list[str]], dict[str, int]] | None = None, logs: Path | None = None) -> dict:
    """Trigger DEPLOYMENTS runs at once, wait for all; return timings and the checks' results.

    :param api: the Airflow REST API client
    :param store: the deployment store
    :param moto: the moto server the leftovers are read from (unless ``leftovers``)
    :param rep: the repetition's number
    :param dag_id: the DAG to trigger
    :param leftovers: reads the cloud for the deployments' ids: ``made``, ``live`` (instances) and ``groups`` (and
        any other count) as :func:`moto_leftovers` returns them
    :param logs: Airflow's logs folder, to read how long each run's steps spent in API calls
    """
    ids = [f"bench-{rep}-{i}-{uuid.uuid4().hex[:6]}" for i in range(DEPLOYMENTS)]
    t0 = time.time()
    runs = [api.trigger(dag_id, {"deployment_id": dep}) for dep in ids]
    t_triggered = time.time()
    url = api.url
    states: dict[str, dict] = {}
    deadline = time.monotonic() + 1800
    while True:
        for run in runs:
            run_id = run["dag_run_id"]
            if states.get(run_id, {}).get("state") in ("success", "failed"):
                continue
            resp = api.session.get(f"{url}/api/v2/dags/{dag_id}/dagRuns/{run_id}", timeout=30)
            resp.raise_for_status()
            states[run_id] = resp.json()
        if all(s["state"] in ("success", "failed") and s.get("end_date") for s in states.values()):
            break
        if time.monotonic() > deadline:
            raise TimeoutError(f"runs not finished after 30 min: {[s['state'] for s in states.values()]}")
        time.sleep(1)
    wall = max(ts(s["end_date"]) for s in states.values()) - t0
    failed = [rid for rid, s in states.items() if s["state"] != "success"]
    for rid in failed:
        tis = api.session.get(f"{url}/api/v2/dags/{dag_id}/dagRuns/{rid}/taskInstances", timeout=30).json()
        bad = [(t["task_id"], t["state"]) for t in tis["task_instances"] if t["state"] != "success"]
        print(f"  run {rid} {states[rid]['state']}: {bad}", flush=True)
    per_run = sorted(ts(s["end_date"]) - ts(s["start_date"]) for s in states.values() if s.get("start_date"))
    # a run's time inside its task processes (start-up, DAG parse, the step) against between them (scheduling)
    in_tasks, in_api = [], []
    for rid in states:
        tis = api.session.get(f"{url}/api/v2/dags/{dag_id}/dagRuns/{rid}/taskInstances", timeout=30).json()
        in_tasks.append(sum(t.get("duration") or 0 for t in tis["task_instances"]))
        seconds = api_seconds(logs, dag_id, rid) if logs is not None else None
        if seconds is not None:
            in_api.append(seconds)

    found = leftovers(ids) if leftovers is not None else moto_leftovers(moto, ids)
    statuses, backend_seconds, cloud_seconds, api_calls = {}, [], [], []
    for dep in ids:
        try:
            statuses[dep] = str(store.get(dep).status.value)
            events = [e for e in store.events(dep) if e.kind in ("node_created", "node_deleted")]
            backend_seconds += [(e.data or {}).get("backend_seconds", 0) for e in events if e.kind == "node_created"]
            # what one deployment spent in EC2 calls (its create and delete steps) and how many calls it made
            cloud_seconds.append(sum((e.data or {}).get("backend_seconds", 0) for e in events))
            api_calls.append(sum((e.data or {}).get("api_calls_total", 0) for e in events))
        except Exception as err:  # a missing record is a finding to print, not a crash
            statuses[dep] = f"{type(err).__name__}"
    return {
        "wall": wall,
        "trigger": t_triggered - t0,
        "run_median": statistics.median(per_run) if per_run else float("nan"),
        "in_tasks": statistics.median(in_tasks) if in_tasks else float("nan"),
        "in_api": statistics.median(in_api) if in_api else float("nan"),
        "failed": len(failed),
        "backend": statistics.median(backend_seconds) if backend_seconds else float("nan"),
        "cloud": statistics.median(cloud_seconds) if cloud_seconds else float("nan"),
        "calls": statistics.median(api_calls) if api_calls else float("nan"),
        **found,
        "not_deleted": {d: s for d, s in statuses.items() if s != "DELETE_COMPLETE"},
    }


def boto3_deployment(moto: Moto, image_id: str, instance_type: str, tag: str) -> None:
    """Create NODES instances, wait running, terminate them, wait terminated (what one deployment does)."""
    ec2 = moto.client()
    reply = ec2.run_instances(ImageId=image_id, InstanceType=instance_type, MinCount=NODES, MaxCount=NODES,
                              TagSpecifications=[{"ResourceType": "instance",
                                                  "Tags": [{"Key": "bench-boto3", "Value": tag}]}])
    ids = [i["InstanceId"] for i in reply["Instances"]]
    fast = {"Delay": 1, "MaxAttempts": 120}
    ec2.get_waiter("instance_running").wait(InstanceIds=ids, WaiterConfig=fast)
    ec2.terminate_instances(InstanceIds=ids)
    ec2.get_waiter("instance_terminated").wait(InstanceIds=ids, WaiterConfig=fast)


def run_boto3_rep(moto: Moto, image_id: str, instance_type: str, rep: int) -> dict:
    """Run DEPLOYMENTS plain-boto3 deployments on as many threads; return wall time and leftovers."""
    tags = [f"boto3-{rep}-{i}" for i in range(DEPLOYMENTS)]
    t0 = time.time()
    with ThreadPoolExecutor(DEPLOYMENTS) as pool:
        list(pool.map(lambda tag: boto3_deployment(moto, image_id, instance_type, tag), tags))
    wall = time.time() - t0
    ec2 = moto.client()
    made = instances(ec2, [{"Name": "tag:bench-boto3", "Values": tags}])
    live = instances(ec2, [{"Name": "instance-state-name", "Values": LIVE_STATES}])
    return {"wall": wall, "made": len(made), "live": len(live)}


def use_database(server, home: Path) -> tuple[str, Callable[[], None]]:
    """Point a LocalAirflow's metadata DB and its deployment store at BENCH_DB; return the store URL and a cleanup.

    :param server: the LocalAirflow, before it starts
    :param home: the bench's home (the SQLite files' folder)
    """
    if DB == "sqlite":
        return f"sqlite:///{home / 'airflow' / 'cloud_paas' / 'deployments.db'}", lambda: None
    if DB != "postgres":
        raise SystemExit(f"BENCH_DB must be sqlite or postgres, not {DB!r}")
    from bench_celery_load import PG, pg_admin, pg_user

    user, tag = pg_user(), uuid.uuid4().hex[:8]
    meta, store = f"bench_meta_{tag}", f"bench_store_{tag}"
    for name in (meta, store):
        pg_admin(user, f"CREATE DATABASE {name}")
    store_url = f"postgresql+psycopg2://{user}@{PG}/{store}"
    server.env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = f"postgresql+psycopg2://{user}@{PG}/{meta}"
    conn = json.loads(server.env["AIRFLOW_CONN_CLOUD_PAAS_DEFAULT"])
    conn["extra"]["store_url"] = store_url
    server.env["AIRFLOW_CONN_CLOUD_PAAS_DEFAULT"] = json.dumps(conn)

    def drop() -> None:
        from airflow_cloud_paas.store import dispose_engines

        dispose_engines()
        for name in (meta, store):
            pg_admin(user, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    return store_url, drop


def tune_server(server) -> None:
    """Give a LocalAirflow room for every run's tasks at once (defaults: 32 / 16).

    :param server: the LocalAirflow, before it starts
    """
    # LocalExecutor parallelism follows core's
    server.env["AIRFLOW__CORE__PARALLELISM"] = str(max(32, 4 * DEPLOYMENTS))
    server.env["AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG"] = str(max(16, 4 * DEPLOYMENTS))
    server.env["AIRFLOW__CORE__MAX_ACTIVE_RUNS_PER_DAG"] = str(max(16, DEPLOYMENTS))


def wait_dag_parsed(api, url: str, dag_id: str, timeout: float = 300) -> None:
    """Wait until the API server knows ``dag_id``; raise with the stack trace of a DAG import error.

    :param api: the Airflow REST API client
    :param url: the API server's URL
    :param dag_id: the DAG
    :param timeout: seconds to wait
    """
    deadline = time.monotonic() + timeout
    while api.session.get(f"{url}/api/v2/dags/{dag_id}", timeout=10).status_code != 200:
        errors = api.session.get(f"{url}/api/v2/importErrors", timeout=10).json()
        if errors.get("import_errors"):
            raise RuntimeError(f"DAG import error: {errors['import_errors'][0]['stack_trace'][-2000:]}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"DAG {dag_id} not parsed after {timeout:.0f} s")
        time.sleep(1)


def check_rows(airflow_rows: list[dict], sdk_rows: list[dict], sdk: str = "boto3") -> list[str]:
    """Return the problems of the repetitions: failed runs, instances not all made, anything left, not deleted.

    :param airflow_rows: :func:`run_airflow_rep`'s rows
    :param sdk_rows: the plain-SDK baseline's rows (``made``, ``live``)
    :param sdk: what the baseline is called
    """
    problems = []
    if busy := [p for p in LOG_SERVER_PORTS if port_busy(p)]:
        problems.append(f"ports {busy} still listening after Airflow stopped")
    for i, row in enumerate(airflow_rows, 1):
        expected = DEPLOYMENTS * NODES
        if row["failed"] or row["made"] != expected or row["live"] or row["groups"] or row.get("volumes") \
                or row["not_deleted"]:
            volumes = f", volumes {row['volumes']}" if "volumes" in row else ""
            problems.append(f"airflow rep {i}: failed runs {row['failed']}, made {row['made']}/{expected}, "
                            f"live {row['live']}, groups {row['groups']}{volumes}, not deleted {row['not_deleted']}")
    for i, row in enumerate(sdk_rows, 1):
        if row["made"] != DEPLOYMENTS * NODES or row["live"]:
            problems.append(f"{sdk} rep {i}: made {row['made']}, live {row['live']}")
    return problems


def print_report(airflow_rows: list[dict], sdk_rows: list[dict], problems: list[str], cloud: str = "EC2",
                 where: str = "moto", sdk: str = "boto3") -> None:
    """Print the table of the repetitions, their medians, the split of a median run, the ratio and the problems.

    :param airflow_rows: :func:`run_airflow_rep`'s rows
    :param sdk_rows: the plain-SDK baseline's rows (``wall``, ``live``)
    :param problems: :func:`check_rows`'s findings
    :param cloud: what the cloud's instances and API are called
    :param where: what serves that API
    :param sdk: what the baseline is called (its column's title: 7 characters at most)
    """
    print()
    print(f"{DEPLOYMENTS} deployments x {NODES} {cloud} instances on {where}, deploy + delete, "
          f"node_tasks={NODE_TASKS}, {DB}, wall seconds "
          f"(Airflow: first trigger -> last run end; {sdk}: {DEPLOYMENTS} threads)")
    print(f"{'rep':>4} {'airflow':>8} {'run med':>8} {'in ' + cloud:>7} {'cloud':>6} {'calls':>6} {sdk:>7} "
          f"{'ratio':>7} {'live':>5} {'deleted':>8}")
    for i, (a, b) in enumerate(zip(airflow_rows, sdk_rows, strict=True), 1):
        deleted = DEPLOYMENTS - len(a["not_deleted"])
        print(f"{i:>4} {a['wall']:>8.1f} {a['run_median']:>8.1f} {a['backend']:>7.1f} {a['cloud']:>6.1f} "
              f"{a['calls']:>6.0f} {b['wall']:>7.2f} {a['wall'] / b['wall']:>7.1f} "
              f"{a['live'] + b['live']:>5} {deleted:>5}/{DEPLOYMENTS}")
    med_a = statistics.median(r["wall"] for r in airflow_rows)
    med_b = statistics.median(r["wall"] for r in sdk_rows)
    med_run = statistics.median(r["run_median"] for r in airflow_rows)
    med_in = statistics.median(r["backend"] for r in airflow_rows)
    med_cloud = statistics.median(r["cloud"] for r in airflow_rows)
    med_calls = statistics.median(r["calls"] for r in airflow_rows)
    print(f"{'med':>4} {med_a:>8.1f} {med_run:>8.1f} {med_in:>7.1f} {med_cloud:>6.1f} {med_calls:>6.0f} {med_b:>7.2f} "
          f"{med_a / med_b:>7.1f}")
    print(f"run med: median run duration; in {cloud}: median seconds one deploy task spent creating its instances; "
          f"cloud: median seconds one deployment's create and delete steps spent in the backend; calls: median {cloud} "
          "API calls of one deployment's create and delete steps (the deployer's node_created/node_deleted events)")
    med_tasks = statistics.median(r["in_tasks"] for r in airflow_rows)
    print(f"split of a median run ({med_run:.1f} s): {med_cloud:.1f} s in the backend's create and delete steps "
          f"({cloud} calls and waits), {med_tasks - med_cloud:.1f} s elsewhere in its tasks (process start-up, DAG "
          f"parse, check, store, outputs), {med_run - med_tasks:.1f} s between its tasks (Airflow scheduling and "
          "queueing)")
    med_api = statistics.median(r.get("in_api", float("nan")) for r in airflow_rows)
    if med_api == med_api:  # measured (the step log lines carry the API time): every step, not only create/delete
        print(f"of the time in its tasks ({med_tasks:.1f} s), {med_api:.1f} s were inside {cloud} API calls (every "
              f"step's) and {med_tasks - med_api:.1f} s the rest (sleeps between polls, task start-up, DAG parse, "
              "store, plan)")
    print(f"ratio (median Airflow wall / median {sdk} wall): {med_a / med_b:.1f}x")
    print("problems: " + ("; ".join(problems) if problems else "none"))


def main() -> int:
    from airflow_cloud_paas.cli import AirflowApi
    from airflow_cloud_paas.standalone import LocalAirflow
    from airflow_cloud_paas.store import DeploymentStore

    home = Path(tempfile.mkdtemp(prefix="bench_aws_moto_"))
    dags = home / "dags"
    dags.mkdir()
    (dags / "aws_bench.yaml").write_text(template_text(NODES, LAYOUT))
    (dags / "aws_bench_dag.py").write_text(DAG_FILE.format(
        bench="bench_aws_moto.py", template="aws_bench.yaml", dag_id=DAG_ID, backend="aws", conn_id=CONN_ID,
        runs=DEPLOYMENTS, node_tasks=NODE_TASKS))
    print(f"home {home}; {DEPLOYMENTS} deployments x {NODES} instances (layout {LAYOUT}, node_tasks={NODE_TASKS}), "
          f"{REPS} reps", flush=True)

    moto = Moto(home / "moto.log")
    airflow_rows: list[dict] = []
    boto3_rows: list[dict] = []
    try:
        wait_log_ports_free()
        server = LocalAirflow(home / "airflow", free_port(), dags_folder=dags)
        server.env[f"AIRFLOW_CONN_{CONN_ID.upper()}"] = json.dumps({
            "conn_type": "aws", "login": "testing", "password": "testing",  # dummy keys: moto accepts any
            "extra": {"region_name": REGION, "endpoint_url": moto.url},
        })
        server.env["AWS_EC2_METADATA_DISABLED"] = "true"  # never probe an instance metadata service
        tune_server(server)
        store_url, drop_databases = use_database(server, home)
        t_start = time.monotonic()
        with server:
            print(f"airflow up in {time.monotonic() - t_start:.0f} s at {server.url} ({DB})", flush=True)
            user, password = server.credentials()
            api = AirflowApi(server.url, user, password)
            wait_dag_parsed(api, server.url, DAG_ID)
            store = DeploymentStore(store_url)
            for rep in range(1, REPS + 1):
                if rep > 1:
                    # a fresh moto per repetition (same port, so the connection stands): moto filters tags
                    # by scanning every instance it ever made, which would slow each repetition down
                    moto.stop()
                    moto = Moto(home / "moto.log", port=moto.port)
                moto.client().describe_images(Filters=[{"Name": "name", "Values": ["*ubuntu*16.04*"]}])  # warm it
                row = run_airflow_rep(api, store, moto, rep, logs=home / "airflow" / "logs")
                airflow_rows.append(row)
                print(f"airflow rep {rep}: wall {row['wall']:.1f} s, runs failed {row['failed']}, instances made "
                      f"{row['made']}, live {row['live']}, tagged groups left {row['groups']}, not DELETE_COMPLETE "
                      f"{row['not_deleted'] or 0}", flush=True)
                # the same image and type as the backend chose, on the same moto, right after
                made = instances(moto.client(), [{"Name": "tag-key", "Values": [TAG_DEPLOYMENT]}])
                image_id, instance_type = ((made[0]["ImageId"], made[0]["InstanceType"]) if made
                                           else ("ami-785db401", "t2.micro"))
                row = run_boto3_rep(moto, image_id, instance_type, rep)
                boto3_rows.append(row)
                print(f"boto3 rep {rep}: wall {row['wall']:.2f} s ({instance_type}, {image_id}), instances made "
                      f"{row['made']}, live {row['live']}", flush=True)
        drop_databases()
    finally:
        moto.stop()

    time.sleep(2)
    problems = check_rows(airflow_rows, boto3_rows)
    print_report(airflow_rows, boto3_rows, problems)
    if os.environ.get("BENCH_KEEP_HOME") == "1":
        print(f"logs kept in {home}")
    else:
        shutil.rmtree(home, ignore_errors=True)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
