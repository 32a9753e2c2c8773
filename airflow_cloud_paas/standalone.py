"""``make run``: Airflow standalone on this machine with the example DAGs and the local backend.

SQLite metadata, LocalExecutor sized to the machine's cores, examples off, API/UI on 127.0.0.1.
Airflow runs in its own process group; Ctrl-C stops that group and every local-backend service
its runs left behind.
"""

from __future__ import annotations

import json
import os
import secrets
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def task_slots(cpus: int | None = None) -> int:
    """Return how many tasks Airflow runs at once here: two per core, at least 4, at most Airflow's default 32.

    On Linux the LocalExecutor forks that many worker processes when the first task comes, so Airflow's
    default (32) on a 2-core machine is 32 idle processes; most of our tasks wait on I/O (a JVM starting,
    an API), so two per core keeps the cores busy.

    :param cpus: the machine's cores (default: ``os.cpu_count()``)
    """
    cpus = cpus or os.cpu_count() or 1
    return max(4, min(32, 2 * cpus))


def environment(home: Path, port: int = 8080) -> dict[str, str]:
    """Return the environment for a local Airflow with this package's DAGs and the local backend.

    The task slots (``AIRFLOW__CORE__PARALLELISM``, which is also the LocalExecutor's worker processes)
    follow the machine's cores (:func:`task_slots`) unless the environment already sets them.

    :param home: AIRFLOW_HOME
    :param port: the API server's port
    """
    work_root = home / "cloud_paas" / "work"
    store = home / "cloud_paas" / "deployments.db"
    conn = {"conn_type": "cloud_paas", "extra": {"store_url": f"sqlite:///{store}", "backend": "local",
                                                  "work_root": str(work_root)}}
    env = dict(os.environ)
    env.update({
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
        "AIRFLOW_CONN_CLOUD_PAAS_DEFAULT": json.dumps(conn),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    })
    env.setdefault("AIRFLOW__CORE__PARALLELISM", str(task_slots()))
    return env


#: what ``airflow standalone`` runs; :class:`LocalAirflow` runs them itself with another auth manager
COMPONENTS = ("scheduler", "dag-processor", "triggerer", "api-server")


class LocalAirflow:
    """Run Airflow standalone in the background (tests, benchmarks); stop its whole process group.

    ``airflow standalone`` always uses the simple auth manager: with another one (``auth_manager``), the
    metadata DB is migrated (``airflow db migrate``, which migrates FAB's tables too when the FAB provider is
    installed) and each of ``components`` runs as its own ``airflow`` command, all in one process group.

    :param home: AIRFLOW_HOME (created)
    :param port: the API server's port on 127.0.0.1
    :param dags_folder: the DAGs folder (default: this repository's dags/)
    :param start_timeout: seconds to wait for the API server
    :param auth_manager: ``[core] auth_manager``'s class path (default: ``airflow standalone`` with the simple one)
    :param webserver_config: the text of FAB's ``webserver_config.py``, written to AIRFLOW_HOME (FAB only)
    :param components: the Airflow commands run with ``auth_manager`` (default: those of standalone)
    """

    def __init__(self, home: Path, port: int, dags_folder: Path | None = None, start_timeout: float = 180,
                 auth_manager: str | None = None, webserver_config: str | None = None,
                 components: tuple[str, ...] = COMPONENTS) -> None:
        self.home = Path(home)
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.env = environment(self.home, port)
        if dags_folder is not None:
            self.env["AIRFLOW__CORE__DAGS_FOLDER"] = str(dags_folder)
        self.env["AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL"] = "5"
        self.env.pop("AIRFLOW__CORE__UNIT_TEST_MODE", None)
        self.start_timeout = start_timeout
        self.auth_manager = auth_manager
        self.webserver_config = webserver_config
        self.components = tuple(components)
        if auth_manager is not None:
            if "api-server" not in self.components:
                raise ValueError("components must include api-server (what the start waits for)")
            self.env["AIRFLOW__CORE__AUTH_MANAGER"] = auth_manager
            # the processes share their secrets through the environment (standalone writes them once in airflow.cfg)
            self.env.setdefault("AIRFLOW__API__SECRET_KEY", secrets.token_urlsafe(32))
            self.env.setdefault("AIRFLOW__API_AUTH__JWT_SECRET", secrets.token_urlsafe(32))
        self.proc: subprocess.Popen | None = None

    def _command(self) -> list[str]:
        if self.auth_manager is None:
            return [sys.executable, "-m", "airflow", "standalone"]
        airflow = f"{shlex.quote(sys.executable)} -m airflow"
        script = f"{airflow} db migrate || exit 1\n"
        script += "".join(f"{airflow} {shlex.quote(c)} &\n" for c in self.components) + "wait\n"
        return ["bash", "-c", script]

    def _ready(self) -> bool:
        import requests

        try:
            healthy = requests.get(f"{self.url}/api/v2/monitor/health", timeout=2).status_code == 200
        except requests.RequestException:
            return False
        return healthy and (self.auth_manager is not None or self.password_file.exists())

    def __enter__(self) -> LocalAirflow:
        self.home.mkdir(parents=True, exist_ok=True)
        if self.webserver_config is not None:
            config = self.home / "webserver_config.py"
            config.write_text(self.webserver_config)
            self.env["AIRFLOW__FAB__CONFIG_FILE"] = str(config)
        log = open(self.home / "standalone.log", "ab")  # noqa: SIM115 - closed by the child's exit
        self.proc = subprocess.Popen(self._command(), env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"airflow exited early; see {self.home / 'standalone.log'}")
            if self._ready():
                return self
            time.sleep(1)
        self.__exit__(None, None, None)
        raise TimeoutError(f"airflow did not answer on {self.url} in {self.start_timeout} s")

    @property
    def password_file(self) -> Path:
        """Return the file where standalone writes the generated admin password."""
        return self.home / "simple_auth_manager_passwords.json.generated"

    def credentials(self) -> tuple[str, str]:
        """Return the admin user and its generated password (the simple auth manager's)."""
        users = json.loads(self.password_file.read_text())
        user = "admin" if "admin" in users else next(iter(users))
        return user, users[user]

    def __exit__(self, *exc: object) -> None:
        if self.proc is None:
            return
        for sig, grace in ((signal.SIGTERM, 20), (signal.SIGKILL, 5)):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline and self.proc.poll() is None:
                time.sleep(0.2)
        try:  # children may outlive the leader
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc = None


def stop_local_services(home: Path) -> int:
    """Delete every local-backend deployment under this AIRFLOW_HOME; return how many were stopped.

    :param home: AIRFLOW_HOME
    """
    from airflow_cloud_paas.backends import get_backend
    from airflow_cloud_paas.deployer import sweep_delete
    from airflow_cloud_paas.exceptions import CloudPaaSError
    from airflow_cloud_paas.store import DeploymentStore

    work_root = home / "cloud_paas" / "work"
    if not work_root.is_dir():
        return 0
    backend = get_backend("local", work_root=str(work_root))
    store = DeploymentStore(f"sqlite:///{home / 'cloud_paas' / 'deployments.db'}")
    stopped = 0
    for folder in sorted(p for p in work_root.iterdir() if p.is_dir()):
        try:  # delete and record it, so the store never lists a deployment that no longer runs
            deleted = sweep_delete(store, backend, folder.name, actor="make-run-shutdown")
        except CloudPaaSError:  # no record, or a state that cannot move to DELETE: still stop it
            deleted = backend.delete(folder.name)
        stopped += bool(deleted)
    return stopped


def main() -> int:
    """Start Airflow standalone and stop everything on Ctrl-C."""
    home = Path(os.environ.get("AIRFLOW_HOME") or ROOT / ".airflow").resolve()
    home.mkdir(parents=True, exist_ok=True)
    port = int(os.environ.get("CLOUD_PAAS_PORT", "8080"))
    env = environment(home, port)
    print(f"Airflow home {home}; UI on http://127.0.0.1:{port} (user admin, password in "
          f"{home}/simple_auth_manager_passwords.json.generated); {env['AIRFLOW__CORE__PARALLELISM']} task "
          "slots. Ctrl-C stops everything.", flush=True)
    proc = subprocess.Popen([sys.executable, "-m", "airflow", "standalone"], env=env, start_new_session=True)

    def stop(*_):
        raise KeyboardInterrupt

    # SIGINT explicitly too: a launcher started in the background inherits SIGINT ignored
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        print("\nStopping Airflow and local services...", flush=True)
        return 0
    finally:
        for sig, grace in ((signal.SIGTERM, 20), (signal.SIGKILL, 5)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline and proc.poll() is None:
                time.sleep(0.2)
            if proc.poll() is not None:
                try:  # children may outlive the leader; sweep the group once more
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                break
        os.environ.update({k: v for k, v in env.items() if k.startswith("AIRFLOW")})
        n = stop_local_services(home)
        if n:
            print(f"Stopped {n} local deployment(s).", flush=True)


if __name__ == "__main__":
    sys.exit(main())
