"""Load: N deployments through the CeleryExecutor with PostgreSQL and Redis, from trigger to DELETE_COMPLETE.

Starts, on 127.0.0.1 with a fresh temporary AIRFLOW_HOME: ``airflow db migrate``, the API server, the
scheduler, the DAG processor and ``airflow celery worker`` (CeleryExecutor; broker Redis 127.0.0.1:6379 on
a dedicated db number, flushed at start and end; result backend and Airflow metadata on a fresh PostgreSQL
database; the deployment store on a second fresh PostgreSQL database, both dropped at the end). Triggers
RUNS runs of ``bench/dags/bench_celery_create_delete.py`` (a one-host deployment on the local backend:
create, then delete) through the REST API as fast as it answers, waits until every run has finished, and
prints: runs succeeded/failed, deployments reaching CREATE_COMPLETE and DELETE_COMPLETE (from the store),
p50/p95/max time from trigger to CREATE_COMPLETE (the store's event), where the time went (DAG run queued,
task queued -> started, task duration), the wall time and throughput, and the count of lock errors in every
log (scheduler, worker, API server, DAG processor, task logs). Exits non-zero when a run failed or was lost,
or a lock error was logged.

Needs the ``celery`` and ``postgres`` extras (``make install`` has both; the lock pins celery below 5.7, whose
``celery.backends.database`` lacks the ``retry`` the Celery provider imports). Per-task start-up can be inspected
with AIRFLOW__LOGGING__LOGGING_LEVEL=DEBUG (task logs then say "Loading N plugin(s) took ... ms") and --keep-home.

Run: .venv/bin/python bench/bench_celery_load.py --runs 200     (--runs 20 for a quick try)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from bench_trigger_to_complete import free_port

BENCH = Path(__file__).resolve().parent
DAG = "bench_celery_create_delete"
PG = "127.0.0.1:5432"
LOCK_PATTERNS = ("deadlock", "database is locked", "could not obtain lock", "LockNotAvailable",
                 "SerializationFailure")
LOCK_RE = re.compile("|".join(re.escape(p) for p in LOCK_PATTERNS), re.IGNORECASE)


# ---------------------------------------------------------------- PostgreSQL and Redis
def pg_user() -> str:
    """Return a PostgreSQL superuser that trust auth lets in (postgres, else root)."""
    import psycopg2

    for user in ("postgres", "root"):
        try:
            psycopg2.connect(host="127.0.0.1", port=5432, user=user, dbname="postgres").close()
            return user
        except psycopg2.OperationalError:
            continue
    raise SystemExit(f"PostgreSQL at {PG} does not let in user postgres or root")


def pg_admin(user: str, sql: str) -> None:
    import psycopg2

    conn = psycopg2.connect(host="127.0.0.1", port=5432, user=user, dbname="postgres")
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(sql)
    finally:
        conn.close()


def pg_rows(user: str, db: str, sql: str, args: tuple = ()) -> list[tuple]:
    import psycopg2

    conn = psycopg2.connect(host="127.0.0.1", port=5432, user=user, dbname=db)
    try:
        with conn.cursor() as cur:
            cur.execute(sql, args)
            return cur.fetchall()
    finally:
        conn.close()


def redis_flush(db: int) -> int:
    """FLUSHDB the bench's own Redis db number; return how many keys it held."""
    import redis

    client = redis.Redis(host="127.0.0.1", port=6379, db=db)
    keys = client.dbsize()
    client.flushdb()
    client.close()
    return keys


# ---------------------------------------------------------------- Airflow processes
class Processes:
    """Airflow components, each in its own process group, all stopped by PID (group) on exit."""

    def __init__(self, home: Path, env: dict[str, str]) -> None:
        self.home = home
        self.env = env
        self.procs: dict[str, subprocess.Popen] = {}

    def log(self, name: str) -> Path:
        return self.home / f"{name}.log"

    def start(self, name: str, *args: str, env: dict[str, str] | None = None) -> None:
        with open(self.log(name), "ab") as log:
            self.procs[name] = subprocess.Popen([sys.executable, "-m", "airflow", *args], env=env or self.env,
                                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                                cwd=self.home)

    def check(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode}; see {self.log(name)}")

    def cpu_seconds(self) -> dict[str, float]:
        """Return the CPU seconds each component used so far, its live descendants and reaped children included."""
        import psutil

        used = {}
        for name, proc in self.procs.items():
            total = 0.0
            try:
                leader = psutil.Process(proc.pid)
                for p in [leader, *leader.children(recursive=True)]:
                    try:
                        t = p.cpu_times()
                        total += t.user + t.system + t.children_user + t.children_system
                    except psutil.NoSuchProcess:
                        pass
            except psutil.NoSuchProcess:
                pass
            used[name] = total
        return used

    def stop(self) -> None:
        for sig, grace in ((signal.SIGTERM, 30), (signal.SIGKILL, 5)):
            for proc in self.procs.values():
                try:
                    os.killpg(proc.pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline and any(p.poll() is None for p in self.procs.values()):
                time.sleep(0.2)
        for proc in self.procs.values():  # children may outlive their leader
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.procs.clear()


def bench_env(home: Path, port: int, user: str, meta_db: str, store_db: str, redis_db: int, concurrency: int,
              runs: int) -> dict[str, str]:
    """Return the Airflow environment: the project's local one, switched to Celery, PostgreSQL and Redis."""
    from airflow_cloud_paas.standalone import environment

    env = environment(home, port)
    store_url = f"postgresql+psycopg2://{user}@{PG}/{store_db}"
    conn = {"conn_type": "cloud_paas", "extra": {"store_url": store_url, "backend": "local",
                                                  "work_root": str(home / "cloud_paas" / "work")}}
    passwords = home / "passwords.json"
    passwords.write_text(json.dumps({"bench": secrets.token_hex(8)}))
    env.update({
        "AIRFLOW__CORE__DAGS_FOLDER": str(BENCH / "dags"),
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"postgresql+psycopg2://{user}@{PG}/{meta_db}",
        "AIRFLOW__CELERY__BROKER_URL": f"redis://127.0.0.1:6379/{redis_db}",
        "AIRFLOW__CELERY__RESULT_BACKEND": f"db+postgresql+psycopg2://{user}@{PG}/{meta_db}",
        "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(concurrency),
        "AIRFLOW_CONN_CLOUD_PAAS_DEFAULT": json.dumps(conn),
        # the executor keeps twice the worker's slots queued in Redis, so a freed slot never waits on the scheduler
        "AIRFLOW__CORE__PARALLELISM": str(2 * concurrency),
        "AIRFLOW__CORE__MAX_ACTIVE_RUNS_PER_DAG": str(max(16, runs)),
        "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": str(2 * concurrency),
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        "AIRFLOW__SCHEDULER__MAX_TIS_PER_QUERY": "64",
        "AIRFLOW__API__WORKERS": "2",
        "AIRFLOW__API__MAXIMUM_PAGE_LIMIT": "1000",
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
        "AIRFLOW__API__SECRET_KEY": secrets.token_hex(32),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "bench:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
    })
    env.pop("AIRFLOW__CORE__UNIT_TEST_MODE", None)
    return env


def wait_for(what: str, ok, timeout: float, procs: Processes | None = None, every: float = 0.5) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if procs is not None:
            procs.check()
        try:
            if ok():
                return
        except Exception:  # not up yet
            pass
        time.sleep(every)
    raise TimeoutError(f"{what} not ready in {timeout:.0f} s")


# ---------------------------------------------------------------- figures
def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def spread(values: list[float]) -> str:
    if not values:
        return "n/a"
    return (f"p50 {statistics.median(values):7.1f}  p95 {pct(values, 95):7.1f}  max {max(values):7.1f}"
            f"  (n={len(values)})")


def machine_busy() -> float:
    """Return the CPU seconds this machine has been busy (all processes, all cores)."""
    import psutil

    t = psutil.cpu_times()
    return t.user + t.nice + t.system + t.irq + t.softirq + getattr(t, "steal", 0.0)


def task_phases(home: Path) -> dict[str, tuple[list[float], list[float]]]:
    """Return, per task id, the seconds from a task process's first log line to its DAG being loaded (start-up:
    the supervisor's /run call, the listener plugins loaded) and from there to its last line (parse, execute)."""
    phases: dict[str, tuple[list[float], list[float]]] = {}
    for path in (home / "logs").glob(f"dag_id={DAG}/*/task_id=*/*.log"):
        stamps, loaded = [], None
        for line in path.read_text(errors="replace").splitlines():
            try:
                rec = json.loads(line)
                at = datetime.fromisoformat(rec["timestamp"].replace("Z", "+00:00")).timestamp()
            except (ValueError, KeyError, TypeError):
                continue
            stamps.append(at)
            if loaded is None and str(rec.get("event", "")).startswith("DAG bundles loaded"):
                loaded = at
        if stamps and loaded is not None:
            start, run = phases.setdefault(path.parent.name.split("=", 1)[1], ([], []))
            start.append(loaded - stamps[0])
            run.append(stamps[-1] - loaded)
    return phases


def workload_seconds(worker_log: Path) -> list[float]:
    """Return each Celery workload's duration (supervisor start to task process reaped) from the worker log."""
    found = re.findall(r"Workload finished.*?duration=([\d.]+)", worker_log.read_text(errors="replace"))
    return [float(d) for d in found]


def scan_logs(home: Path) -> tuple[int, int, list[str]]:
    """Return (files scanned, lock-error lines, the first of those lines with their file)."""
    files = [p for p in home.rglob("*") if p.is_file() and (p.suffix == ".log" or "logs" in p.parts)]
    count, seen = 0, []
    for path in files:
        with open(path, errors="replace") as fh:
            for line in fh:
                if LOCK_RE.search(line):
                    count += 1
                    if len(seen) < 20:
                        seen.append(f"{path.relative_to(home)}: {line.strip()[:400]}")
    return len(files), count, seen


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=200, help="DAG runs (deployments) to trigger")
    parser.add_argument("--concurrency", type=int, default=8, help="Celery worker concurrency")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds to wait for every run after triggering")
    parser.add_argument("--redis-db", type=int, default=13, help="the Redis db number used (flushed) as broker")
    parser.add_argument("--keep-home", action="store_true", help="keep AIRFLOW_HOME (logs) instead of deleting it")
    args = parser.parse_args()

    from airflow_cloud_paas.cli import AirflowApi
    from airflow_cloud_paas.store import DeploymentStore

    wall0 = time.time()
    home = Path(tempfile.mkdtemp(prefix="bench_celery_"))
    user = pg_user()
    tag = f"{os.getpid()}"
    meta_db, store_db = f"cloud_paas_bench_meta_{tag}", f"cloud_paas_bench_store_{tag}"
    port = free_port()
    procs: Processes | None = None
    created_dbs: list[str] = []
    triggered: dict[str, tuple[float, str]] = {}  # deployment id -> (trigger time, run id)
    trigger_errors: list[str] = []
    figures: dict[str, Any] = {}
    try:
        for db in (meta_db, store_db):
            pg_admin(user, f'CREATE DATABASE "{db}"')
            created_dbs.append(db)
        stale = redis_flush(args.redis_db)
        if stale:
            print(f"warning: Redis db {args.redis_db} held {stale} keys; flushed", flush=True)
        env = bench_env(home, port, user, meta_db, store_db, args.redis_db, args.concurrency, args.runs)
        print(f"AIRFLOW_HOME {home}; metadata DB {meta_db}, store DB {store_db}, Redis db {args.redis_db}, "
              f"API 127.0.0.1:{port}, worker concurrency {args.concurrency}", flush=True)
        t = time.time()
        with open(home / "db-migrate.log", "ab") as log:
            subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], env=env, stdout=log,
                           stderr=subprocess.STDOUT, check=True, timeout=900, cwd=home)
        print(f"airflow db migrate: {time.time() - t:.1f} s", flush=True)
        store = DeploymentStore(f"postgresql+psycopg2://{user}@{PG}/{store_db}")  # creates the store's tables

        t = time.time()
        procs = Processes(home, env)
        procs.start("api-server", "api-server", "--host", "127.0.0.1", "--port", str(port), "--workers", "2")
        procs.start("scheduler", "scheduler", "--skip-serve-logs")
        procs.start("dag-processor", "dag-processor")
        procs.start("worker", "celery", "worker", "--concurrency", str(args.concurrency), "--skip-serve-logs")

        import requests

        url = f"http://127.0.0.1:{port}"
        wait_for("API server", lambda: requests.get(f"{url}/api/v2/monitor/health", timeout=2).ok, 300, procs)
        password = json.loads((home / "passwords.json").read_text())["bench"]
        api = AirflowApi(url, "bench", password)
        wait_for(f"DAG {DAG}", lambda: api.session.get(f"{url}/api/v2/dags/{DAG}", timeout=5).ok, 300, procs)
        wait_for("Celery worker", lambda: b" ready." in procs.log("worker").read_bytes(), 300, procs)
        figures["startup"] = time.time() - t
        print(f"Airflow up (API, scheduler, DAG processor, Celery worker): {figures['startup']:.1f} s", flush=True)

        # ---- trigger every run, as fast as the API answers
        figures["cpu0"] = procs.cpu_seconds()
        figures["machine_cpu0"] = machine_busy()
        t_first = time.time()
        for i in range(args.runs):
            deployment_id = f"bench-{tag}-{i:04d}"
            t0 = time.time()
            try:
                run = api.trigger(DAG, {"deployment_id": deployment_id})
                triggered[deployment_id] = (t0, run["dag_run_id"])
            except Exception as err:  # counted and reported
                trigger_errors.append(f"{deployment_id}: {err}")
        figures["trigger_s"] = time.time() - t_first
        print(f"triggered {len(triggered)} runs in {figures['trigger_s']:.1f} s "
              f"({len(trigger_errors)} trigger errors)", flush=True)

        # ---- wait until every run has finished
        deadline = time.monotonic() + args.timeout
        last_print = 0.0
        while True:
            procs.check()
            states = dict(pg_rows(user, meta_db, "SELECT state, count(*) FROM dag_run WHERE dag_id = %s "
                                  "GROUP BY state", (DAG,)))
            done = states.get("success", 0) + states.get("failed", 0)
            if time.monotonic() - last_print > 30 or done >= len(triggered):
                statuses = dict(pg_rows(user, store_db, "SELECT status, count(*) FROM deployments GROUP BY status"))
                print(f"  t+{time.time() - t_first:6.0f} s  runs {states}  deployments {statuses}  "
                      f"load {os.getloadavg()[0]:.1f}", flush=True)
                last_print = time.monotonic()
            if done >= len(triggered):
                break
            if time.monotonic() > deadline:
                print(f"TIMEOUT after {args.timeout:.0f} s waiting for the runs", flush=True)
                break
            time.sleep(2)
        figures["t_end"] = time.time()
        figures["cpu"] = procs.cpu_seconds()
        figures["machine_cpu"] = machine_busy() - figures["machine_cpu0"]

        # ---- figures from the metadata DB and the store
        runs = {r[0]: r[1:] for r in pg_rows(
            user, meta_db, "SELECT run_id, state, queued_at, start_date, end_date FROM dag_run WHERE dag_id = %s",
            (DAG,))}
        tis = pg_rows(user, meta_db, "SELECT task_id, state, queued_dttm, start_date, end_date FROM task_instance "
                      "WHERE dag_id = %s", (DAG,))
        figures["runs"] = runs
        figures["tis"] = tis
        records = {}
        for deployment_id in triggered:
            try:
                records[deployment_id] = store.get(deployment_id)
            except Exception:  # a lost deployment
                records[deployment_id] = None
        figures["records"] = records
    finally:
        if procs is not None:
            procs.stop()
        lock_files, lock_count, lock_lines = scan_logs(home)
        if (home / "logs").is_dir():
            figures["task_phases"] = task_phases(home)
            figures["workloads"] = workload_seconds(home / "worker.log")
        for db in created_dbs:
            try:
                pg_admin(user, f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
            except Exception as err:  # reported
                print(f"could not drop database {db}: {err}", flush=True)
        try:
            redis_flush(args.redis_db)
        except Exception as err:  # reported
            print(f"could not flush Redis db {args.redis_db}: {err}", flush=True)
        if not args.keep_home and "records" in figures:
            shutil.rmtree(home, ignore_errors=True)
        else:
            print(f"AIRFLOW_HOME kept: {home}", flush=True)
    return report(args, figures, triggered, trigger_errors, (lock_files, lock_count, lock_lines), wall0)


def report(args: argparse.Namespace, figures: dict[str, Any], triggered: dict[str, tuple[float, str]],
           trigger_errors: list[str], locks: tuple[int, int, list[str]], wall0: float) -> int:
    runs, tis, records = figures["runs"], figures["tis"], figures["records"]
    by_run = {run_id: dep for dep, (_, run_id) in triggered.items()}
    succeeded = sum(1 for r in by_run if runs.get(r, ("?",))[0] == "success")
    failed = [r for r in by_run if runs.get(r, ("?",))[0] == "failed"]
    unfinished = [r for r in by_run if runs.get(r, ("?",))[0] not in ("success", "failed")]
    created, to_create, ended_deleted, lost = 0, [], 0, []
    for dep, record in records.items():
        if record is None:
            lost.append(f"{dep}: no record in the store")
            continue
        complete = [e.at.timestamp() for e in record.events
                    if e.kind == "status" and (e.data or {}).get("to") == "CREATE_COMPLETE"]
        if complete:
            created += 1
            to_create.append(min(complete) - triggered[dep][0])
        if record.status == "DELETE_COMPLETE":
            ended_deleted += 1
        else:
            lost.append(f"{dep}: ends {record.status} ({record.status_reason})")

    def secs(a: datetime | None, b: datetime | None) -> float | None:
        return (b - a).total_seconds() if a and b else None

    run_queued = [s for _, q, st, _ in runs.values() if (s := secs(q, st)) is not None]
    run_total = [s for _, _, st, en in runs.values() if (s := secs(st, en)) is not None]
    phases = {}
    for task in ("create", "delete"):
        rows = [t for t in tis if t[0] == task]
        phases[task] = ([s for t in rows if (s := secs(t[2], t[3])) is not None],
                        [s for t in rows if (s := secs(t[3], t[4])) is not None])
    ends = [en.timestamp() for _, _, _, en in runs.values() if en]
    t_first = min(t for t, _ in triggered.values()) if triggered else 0.0
    span = (max(ends) - t_first) if ends else float("nan")
    lock_files, lock_count, lock_lines = locks

    print()
    print(f"Celery load: {args.runs} deployments (one local host each), create -> delete, CeleryExecutor "
          f"(worker concurrency {args.concurrency}), PostgreSQL metadata + store, Redis broker; "
          f"{os.cpu_count()} cores")
    print(f"runs triggered            {len(triggered)} (trigger errors {len(trigger_errors)}; "
          f"{figures['trigger_s']:.1f} s to trigger all)")
    print(f"runs succeeded / failed   {succeeded} / {len(failed)} (unfinished {len(unfinished)})")
    print(f"CREATE_COMPLETE reached   {created}")
    print(f"ended DELETE_COMPLETE     {ended_deleted}")
    print(f"lost (no DELETE_COMPLETE) {len(lost)}")
    print(f"trigger -> CREATE_COMPLETE s   {spread(to_create)}")
    print(f"run queued -> running s        {spread(run_queued)}")
    print(f"run running -> finished s      {spread(run_total)}")
    for task, (wait, took) in phases.items():
        print(f"task {task:<6} queued -> start s {spread(wait)}")
        print(f"task {task:<6} duration s        {spread(took)}")
    for task, (start, run) in sorted(figures.get("task_phases", {}).items()):
        print(f"task {task:<6} process start-up s {spread(start)}   (first log line -> DAG loaded)")
        print(f"task {task:<6} parse+execute s    {spread(run)}   (DAG loaded -> last log line)")
    print(f"celery workload (supervisor) s  {spread(figures.get('workloads', []))}")
    window = figures["t_end"] - t_first if triggered else 0.0
    cpu = {k: v - figures["cpu0"].get(k, 0.0) for k, v in figures["cpu"].items()}
    print(f"CPU s from first trigger to the end ({window:.0f} s wall, {os.cpu_count()} cores = "
          f"{window * (os.cpu_count() or 1):.0f} CPU s): machine busy {figures['machine_cpu']:.0f}; "
          + ", ".join(f"{k} {v:.0f}" for k, v in cpu.items()))
    print(f"first trigger -> last run end  {span:.1f} s; throughput {len(ends) / span * 60:.1f} runs/min "
          f"({2 * len(ends) / span:.2f} tasks/s)" if ends else "no run finished")
    print(f"Airflow start-up {figures['startup']:.1f} s; total wall time {time.time() - wall0:.1f} s")
    print(f"lock errors in logs       {lock_count} ({lock_files} log files scanned for "
          f"{', '.join(LOCK_PATTERNS)})")
    for line in lock_lines:
        print(f"  {line}")
    for line in (trigger_errors + [f"run {r} ({by_run[r]}) failed" for r in failed] + lost)[:20]:
        print(f"  {line}")
    ok = (not trigger_errors and succeeded == args.runs and not lost and lock_count == 0)
    print("OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
