"""What a new user hits first, run as they run it: the real ``cloud-paas`` program in a subprocess.

The deployment store the CLI reads is the one ``make run`` writes with no setup; log lines never reach
stdout; an API that refuses names the options to set; ``show`` reads well.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from airflow_cloud_paas.store import DeploymentStore

EXE = Path(sys.executable).with_name("cloud-paas")


def _clean_env(home: Path, **extra: str) -> dict[str, str]:
    """A new user's environment: no AIRFLOW_* (the test session sets some), no CLOUD_PAAS_*, their own HOME."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "CLOUD_PAAS_", "_AIRFLOW"))}
    env["HOME"] = str(home)
    env.update(extra)
    return env


def _run(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([str(EXE), *args], capture_output=True, text=True, timeout=120, cwd=cwd, env=env)


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A checkout after ``make run``: ``.airflow/airflow.cfg`` and the store Airflow's tasks write to."""
    root = tmp_path / "checkout"
    (root / ".airflow").mkdir(parents=True)
    (root / ".airflow" / "airflow.cfg").write_text("[core]\nload_examples = False\n")
    (root / "dags").mkdir()
    store = DeploymentStore(f"sqlite:///{root / '.airflow' / 'cloud_paas' / 'deployments.db'}")
    store.create_deployment("dep-made-by-make-run", "tosca: x", "h", {"n": 1}, "admin", "local")
    (tmp_path / "home").mkdir()
    return root


def test_the_cli_reads_the_store_make_run_writes_with_no_airflow_home(checkout: Path):
    home = checkout.parent / "home"
    env = _clean_env(home)
    for where in (checkout, checkout / "dags"):  # from the checkout or any folder under it
        out = _run("list", "--json", cwd=where, env=env)
        assert out.returncode == 0, out.stderr
        assert [d["id"] for d in json.loads(out.stdout)] == ["dep-made-by-make-run"]
    # -v says which Airflow home and store were used, and why
    out = _run("-v", "show", "dep-made-by-make-run", cwd=checkout, env=env)
    assert out.returncode == 0, out.stderr
    store_file = checkout / ".airflow" / "cloud_paas" / "deployments.db"
    assert f"Airflow home {checkout / '.airflow'}" in out.stderr and str(store_file) in out.stderr
    assert "airflow.cfg found" in out.stderr
    assert not (home / "airflow").exists(), "the CLI made an Airflow home of its own in ~/airflow"


def test_an_explicit_airflow_home_or_store_url_wins(checkout: Path, tmp_path: Path):
    other = tmp_path / "other_home"
    out = _run("list", cwd=checkout, env=_clean_env(tmp_path / "home", AIRFLOW_HOME=str(other)))
    assert out.returncode == 0 and out.stdout == ""
    # an empty list says which store was read, so a user sees it is not the one they meant
    assert f"no deployments in the deployment store sqlite:///{other}/cloud_paas/deployments.db" in out.stderr
    assert "AIRFLOW_HOME is set" in out.stderr

    url = f"sqlite:///{tmp_path / 'explicit.db'}"
    DeploymentStore(url).create_deployment("dep-explicit", "tosca: x", "h", {}, "bob", "local")
    out = _run("list", "--json", "--store-url", url, cwd=checkout, env=_clean_env(tmp_path / "home"))
    assert out.returncode == 0, out.stderr
    assert [d["id"] for d in json.loads(out.stdout)] == ["dep-explicit"]
    out = _run("list", "--json", cwd=checkout, env=_clean_env(tmp_path / "home", CLOUD_PAAS_STORE_URL=url))
    assert [d["id"] for d in json.loads(out.stdout)] == ["dep-explicit"]


def test_a_missing_deployment_names_the_store_read(checkout: Path):
    out = _run("show", "nope", cwd=checkout, env=_clean_env(checkout.parent / "home"))
    assert out.returncode == 2 and "nope" in out.stderr
    assert str(checkout / ".airflow" / "cloud_paas" / "deployments.db") in out.stderr


def test_list_json_stays_parsable_with_logging_at_info(checkout: Path):
    """The store hook logs at INFO when it falls back to the default store: on stderr, never in the JSON."""
    env = _clean_env(checkout.parent / "home", AIRFLOW__LOGGING__LOGGING_LEVEL="INFO")
    for args in (["list", "--json"], ["-v", "list", "--json"], ["list", "--json", "-vv"]):
        out = _run(*args, cwd=checkout, env=env)
        assert out.returncode == 0, out.stderr
        assert [d["id"] for d in json.loads(out.stdout)] == ["dep-made-by-make-run"], out.stdout
        assert "No connection 'cloud_paas_default'" in out.stderr  # logged, to stderr


# ------------------------------------------------------------------------------- the REST API refuses
class _Airflow(BaseHTTPRequestHandler):
    """An API server that answers each (method, path prefix) as the test says; the peer, not our code."""

    routes: dict[tuple[str, str], tuple[int, dict]] = {}

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        code, body = next((answer for (method, prefix), answer in self.routes.items()
                           if method == self.command and self.path.startswith(prefix)),
                          (401, {"detail": "Not authenticated"}))
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PATCH = _answer

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def api():
    """Start the stand-in API on 127.0.0.1; yield (url, routes)."""
    routes: dict[tuple[str, str], tuple[int, dict]] = {}
    handler = type("Handler", (_Airflow,), {"routes": routes})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", routes
    server.shutdown()
    server.server_close()


AUTH_WORDS = ("--username", "CLOUD_PAAS_API_USER", "CLOUD_PAAS_API_PASSWORD", "CLOUD_PAAS_API_TOKEN", "--api-url")


def _assert_auth_help(out: subprocess.CompletedProcess, code: str) -> None:
    assert out.returncode == 2, out.stdout + out.stderr
    assert "Traceback" not in out.stderr and f"HTTP {code}" in out.stderr
    for word in AUTH_WORDS:
        assert word in out.stderr, (word, out.stderr)


def test_a_refused_login_names_what_to_set(api, tmp_path: Path):
    url, _routes = api  # every request: 401
    env = _clean_env(tmp_path, CLOUD_PAAS_API_PASSWORD="s3cret-pw")
    out = _run("--api-url", url, "deploy", "spark_cluster", "--username", "bob", cwd=tmp_path, env=env)
    _assert_auth_help(out, "401")
    assert "login as 'bob'" in out.stderr and "s3cret-pw" not in out.stdout + out.stderr


def test_a_refused_trigger_names_what_to_set(api, tmp_path: Path):
    url, routes = api
    env = _clean_env(tmp_path, CLOUD_PAAS_API_URL=url, CLOUD_PAAS_API_TOKEN="expired.jwt.token")
    out = _run("deploy", "spark_cluster", cwd=tmp_path, env=env)  # no credentials: 401
    _assert_auth_help(out, "401")
    assert "Triggering DAG spark_cluster" in out.stderr
    routes[("POST", "/api/v2/dags/")] = (403, {"detail": "Forbidden"})
    out = _run("scale", "dep-1", "spark_worker", "2", cwd=tmp_path, env=env)
    assert out.returncode == 2 and "HTTP 403" in out.stderr and "may not" in out.stderr
    assert "CLOUD_PAAS_API_TOKEN" in out.stderr


def test_a_refused_run_state_is_an_error_not_a_traceback(api, tmp_path: Path):
    """The token expires while ``--wait`` polls the run: say so, as for the trigger."""
    url, routes = api
    routes[("PATCH", "/api/v2/dags/")] = (200, {})
    routes[("POST", "/api/v2/dags/spark_cluster/dagRuns")] = (200, {"dag_run_id": "manual__1"})
    # the run's GET falls through to 401
    home = tmp_path / "airflow_home"
    home.mkdir()
    (home / "simple_auth_manager_passwords.json.generated").write_text('{"admin": "pw"}')
    env = _clean_env(tmp_path, CLOUD_PAAS_API_URL=url, CLOUD_PAAS_API_TOKEN="t", AIRFLOW_HOME=str(home))
    out = _run("deploy", "spark_cluster", "--wait", "--timeout", "30", cwd=tmp_path, env=env)
    _assert_auth_help(out, "401")
    assert "Reading run manual__1 of DAG spark_cluster" in out.stderr and "HTTPError" not in out.stderr
    # after `make run`, where the admin password is
    assert str(home / "simple_auth_manager_passwords.json.generated") in out.stderr


def test_an_unreachable_api_names_api_url(tmp_path: Path):
    out = _run("deploy", "spark_cluster", "--api-url", "http://127.0.0.1:9", cwd=tmp_path, env=_clean_env(tmp_path))
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "cannot reach the Airflow API at http://127.0.0.1:9" in out.stderr and "--api-url" in out.stderr


# ------------------------------------------------------------------------------------------- show
@pytest.fixture
def shown_store(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'show.db'}"
    store = DeploymentStore(url)
    store.create_deployment("dep-s", "tosca: x", "h", {"workers": 2, "admin_password": "hunter2"}, "alice", "local")
    store.upsert_resource("dep-s", "master", 0, "pid-11", "RUNNING", {"url": "http://127.0.0.1:8080"})
    store.upsert_resource("dep-s", "worker", 0, "pid-12", "RUNNING", {"api_token": "tok-123"})
    store.set_outputs("dep-s", {"webui": "http://127.0.0.1:8080", "db_url": "postgresql://u:dbpass@h/db",
                                "admin_password": "out-secret"})
    for i in range(15):
        store.add_event("dep-s", "note", f"note number {i}")
    store.set_status("dep-s", "CREATE_FAILED", reason="worker 1 did not register")
    return url


def test_show_prints_a_readable_summary(shown_store: str, tmp_path: Path):
    out = _run("--store-url", shown_store, "show", "dep-s", cwd=tmp_path, env=_clean_env(tmp_path))
    assert out.returncode == 0, out.stderr
    text = out.stdout
    for line in ("deployment dep-s", "status:   CREATE_FAILED", "reason:   worker 1 did not register",
                 "backend:  local", "owner:    alice", "created:  ", "updated:  ", "webui: http://127.0.0.1:8080",
                 "master[0]  RUNNING", "worker[0]  RUNNING", "workers: 2"):
        assert line in text, (line, text)
    for secret in ("hunter2", "out-secret", "dbpass", "tok-123"):
        assert secret not in text
    assert "postgresql://u:***@h/db" in text
    # the latest 10 events only, oldest first; the last is the failure
    assert "note number 14" in text and "note number 5" not in text and "last 10 of" in text
    assert text.rstrip().splitlines()[-1].endswith("worker 1 did not register")


def test_show_json_is_the_whole_record_masked(shown_store: str, tmp_path: Path):
    out = _run("show", "dep-s", "--json", "--store-url", shown_store, cwd=tmp_path, env=_clean_env(tmp_path))
    assert out.returncode == 0, out.stderr
    record = json.loads(out.stdout)
    assert record["status"] == "CREATE_FAILED" and record["inputs"]["workers"] == 2
    assert len(record["events"]) >= 17 and {r["node_name"] for r in record["resources"]} == {"master", "worker"}
    for secret in ("hunter2", "out-secret", "dbpass", "tok-123"):
        assert secret not in out.stdout


def test_wait_names_the_store_when_the_deployment_is_not_in_it(api, tmp_path: Path):
    """`deploy --wait` once printed ``status: null`` and exit 1, silently: it read another store than Airflow's."""
    url, routes = api
    routes[("PATCH", "/api/v2/dags/")] = (200, {})
    routes[("POST", "/api/v2/dags/spark_cluster/dagRuns")] = (200, {"dag_run_id": "manual__2"})
    routes[("GET", "/api/v2/dags/spark_cluster/dagRuns/manual__2")] = (200, {"state": "success"})
    store = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    env = _clean_env(tmp_path, CLOUD_PAAS_API_URL=url, CLOUD_PAAS_API_TOKEN="t")
    out = _run("deploy", "spark_cluster", "--wait", "--store-url", store, cwd=tmp_path, env=env)
    assert out.returncode == 1
    assert json.loads(out.stdout.splitlines()[-1])["status"] is None
    assert f"not in the deployment store this command reads: {store} (from --store-url)" in out.stderr
    assert "AIRFLOW_HOME" in out.stderr


def test_a_logged_in_user_reads_through_the_deployments_api(api, shown_store: str, tmp_path: Path):
    """With a login, list/show ask the plugin's API (which decides what the user sees): the record round-trips
    and another user's deployment is "not found" (tests/integration/cli/test_cli_rest.py runs it in Airflow)."""
    url, routes = api
    record = DeploymentStore(shown_store).get("dep-s").to_dict()
    routes[("GET", "/cloud-paas/api/deployments/dep-s")] = (200, record)
    routes[("GET", "/cloud-paas/api/deployments/")] = (404, {"detail": "deployment 'dep-b' not found"})
    routes[("GET", "/cloud-paas/api/deployments")] = (200, [record])
    env = _clean_env(tmp_path, CLOUD_PAAS_API_URL=url, CLOUD_PAAS_API_TOKEN="t")
    out = _run("show", "dep-s", cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr
    for line in ("status:   CREATE_FAILED", "owner:    alice", "master[0]  RUNNING", "last 10 of"):
        assert line in out.stdout
    assert "hunter2" not in out.stdout and "postgresql://u:***@h/db" in out.stdout
    listed = _run("list", "--json", cwd=tmp_path, env=env)
    assert [d["id"] for d in json.loads(listed.stdout)] == ["dep-s"]
    hidden = _run("show", "dep-b", cwd=tmp_path, env=env)
    assert hidden.returncode == 2
    assert "'dep-b' not found among the deployments the user logged in with the JWT" in hidden.stderr
    # a store named by URL is read directly: the operator's view (the store's credentials)
    direct = _run("--store-url", shown_store, "show", "dep-s", cwd=tmp_path, env=env)
    assert direct.returncode == 0 and "owner:    alice" in direct.stdout


def test_show_tells_a_running_action_from_one_whose_run_is_gone(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'held.db'}"
    store = DeploymentStore(url)
    for name in ("dep-live", "dep-gone"):
        store.create_deployment(name, "tosca: x", "h", {}, "alice", "local")
        store.begin(name, "CREATE", actor=f"spark/{name}")  # held by this (living) test process
    store.renew("dep-gone", "spark/dep-gone", seconds=-1, holder=None)  # its run ended between two tasks
    env = _clean_env(tmp_path)
    live = _run("--store-url", url, "show", "dep-live", cwd=tmp_path, env=env)
    assert "running:  spark/dep-live" in live.stdout, live.stdout
    gone = _run("--store-url", url, "show", "dep-gone", cwd=tmp_path, env=env)
    assert "  running:  " not in gone.stdout, gone.stdout
    assert "held by:  spark/dep-gone, no longer running: its lease expired at" in gone.stdout
    assert "cloud-paas reconcile" in gone.stdout
