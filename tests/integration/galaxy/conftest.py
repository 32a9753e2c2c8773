"""A real Galaxy for the Galaxy tests, deployed once per session through the local backend (templates/galaxy.yaml),
and a real local Tool Shed (galaxy-tool-shed, same virtual environment) holding one repository it may install.

Galaxy runs from its own virtual environment (``make galaxy-runtime``); without it these tests skip, saying so.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import tarfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from waiting import until


@dataclass(frozen=True)
class GalaxyAdmin:
    """A deployed Galaxy and its admin's key."""

    url: str
    api_key: str = field(repr=False)
    deployment_id: str
    work_dir: str
    log_file: str


@dataclass(frozen=True)
class ToolShed:
    """A local Tool Shed and the repository it serves."""

    url: str
    owner: str
    name: str
    revision: str
    tool_id: str


def galaxy_installed() -> bool:
    """Return whether Galaxy's virtual environment is there."""
    from airflow_cloud_paas.services.galaxy.config import galaxy_web

    return galaxy_web() is not None


def delete_deployment(deployer) -> None:
    """Delete a deployment through the Deployer (so later scaling rounds skip it)."""
    deployer.begin_delete()
    deployer.delete_all()
    deployer.complete_delete()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def tool_shed(tmp_path_factory):
    """Run a Tool Shed on loopback, publish the repository ``cloud_paas_reverse`` (one tool) in it; stop it by PID.

    Its flavour ``shed-text`` (that repository at its revision) is on ``CLOUD_PAAS_GALAXY_FLAVOURS`` for the session.
    """
    import requests

    from airflow_cloud_paas.services.galaxy.config import venv_dir

    if not galaxy_installed() or not (venv_dir() / "bin" / "hg").exists():
        pytest.skip("Galaxy is not installed: run `make galaxy-runtime`")
    work = tmp_path_factory.mktemp("tool_shed")
    port, boot = _free_port(), secrets.token_hex(16)
    (work / "tool_shed.yml").write_text(
        f"tool_shed:\n  database_connection: sqlite:///{work}/ts.sqlite?isolation_level=IMMEDIATE\n"
        f"  file_path: {work}/repos\n  hgweb_config_dir: {work}\n  new_file_path: {work}/tmp\n"
        f"  bootstrap_admin_api_key: {boot}\n  admin_users: shed@example.org\n")
    for folder in ("repos", "tmp"):
        (work / folder).mkdir()
    venv = venv_dir()
    log = (work / "tool_shed.log").open("wb")
    process = subprocess.Popen(
        [str(venv / "bin" / "uvicorn"), "--factory", "tool_shed.webapp.fast_factory:factory",
         "--host", "127.0.0.1", "--port", str(port)],
        cwd=work, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        env={**os.environ, "TOOL_SHED_CONFIG_FILE": str(work / "tool_shed.yml"),
             "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}"})
    url = f"http://127.0.0.1:{port}"
    try:
        def answers() -> bool:
            assert process.poll() is None, (work / "tool_shed.log").read_text()[-2000:]
            try:
                return requests.get(f"{url}/api/version", timeout=5).ok
            except requests.RequestException:
                return False

        until("the Tool Shed answers", answers, timeout=240)
        headers = {"x-api-key": boot}
        user = requests.post(f"{url}/api/users", headers=headers, timeout=30,
                             json={"email": "shed@example.org", "username": "cloudpaas",
                                   "password": secrets.token_urlsafe(16)}).json()
        key = requests.post(f"{url}/api/users/{user['id']}/api_key", headers=headers, timeout=30).json()
        headers = {"x-api-key": key}
        category = requests.post(f"{url}/api/categories", headers=headers, timeout=30,
                                 json={"name": "Text Manipulation", "description": "text tools"}).json()
        repo = requests.post(f"{url}/api/repositories", headers=headers, timeout=30,
                             json={"name": "cloud_paas_reverse", "synopsis": "Reverse a text's lines",
                                   "type": "unrestricted", "category_ids": category["id"]}).json()
        archive = work / "reverse.tar.gz"
        with tarfile.open(archive, "w:gz") as tar:
            tar.add(Path(__file__).with_name("data") / "reverse.xml", arcname="reverse.xml")
        with archive.open("rb") as handle:
            answer = requests.post(f"{url}/api/repositories/{repo['id']}/changeset_revision", headers=headers,
                                   timeout=60, files={"file": ("reverse.tar.gz", handle)},
                                   data={"commit_message": "cloud_paas_reverse 1.0.0"})
        assert answer.ok, answer.text
        revisions = requests.get(f"{url}/api/repositories/get_ordered_installable_revisions", timeout=30,
                                 params={"name": "cloud_paas_reverse", "owner": "cloudpaas"}).json()
        assert revisions, "the Tool Shed lists no installable revision"
        flavours_dir = work / "flavours"
        flavours_dir.mkdir()
        (flavours_dir / "shed-text.yml").write_text(
            "description: one Tool Shed repository from the tests' local Tool Shed\n"
            f"tools:\n  - {{name: cloud_paas_reverse, owner: cloudpaas, tool_shed_url: '{url}/', "
            f"revisions: ['{revisions[-1]}'], tool_panel_section_label: Shed tools}}\n")
        previous = os.environ.get("CLOUD_PAAS_GALAXY_FLAVOURS")
        os.environ["CLOUD_PAAS_GALAXY_FLAVOURS"] = str(flavours_dir)
        yield ToolShed(url=f"{url}/", owner="cloudpaas", name="cloud_paas_reverse", revision=revisions[-1],
                       tool_id=f"127.0.0.1:{port}/repos/cloudpaas/cloud_paas_reverse/cloud_paas_reverse/1.0.0")
        if previous is None:
            os.environ.pop("CLOUD_PAAS_GALAXY_FLAVOURS", None)
        else:
            os.environ["CLOUD_PAAS_GALAXY_FLAVOURS"] = previous
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)
        log.close()


@pytest.fixture(scope="session")
def galaxy_admin(store_url, airflow_home, tool_shed):
    """Deploy Galaxy (flavour cloud-paas-text; the local Tool Shed allowed) with a random admin key; yield it."""
    if not galaxy_installed():
        pytest.skip("Galaxy is not installed: run `make galaxy-runtime`")
    import psutil

    from airflow_cloud_paas import packaged_template
    from airflow_cloud_paas.backends.local import LocalBackend
    from airflow_cloud_paas.deployer import Deployer
    from airflow_cloud_paas.request import DeploymentRequest
    from airflow_cloud_paas.store import DeploymentStore
    from airflow_cloud_paas.tosca import load_topology

    store = DeploymentStore(store_url)
    backend = LocalBackend(airflow_home / "cloud_paas" / "work", ready_timeout=240)
    key = secrets.token_hex(16)
    deployment = f"galaxy-{uuid.uuid4().hex[:6]}"
    request = DeploymentRequest.build(load_topology(packaged_template("galaxy.yaml")), deployment,
                                      {"admin_api_key": key, "flavor": "cloud-paas-text",
                                       "tool_sheds": [tool_shed.url]}, actor="test")
    deployer = Deployer(request, store, backend)
    try:
        outputs = deployer.create_all()
        portal = backend.describe(deployment, "galaxy")[0]
        yield GalaxyAdmin(url=outputs["galaxy_url"], api_key=key, deployment_id=deployment,
                          work_dir=portal.attributes["work_dir"], log_file=portal.attributes["log_file"])
    finally:
        pid = next((r.attributes.get("pid") for r in backend.describe(deployment, "galaxy")), None)
        delete_deployment(Deployer(request, store, backend))
        if pid:
            until("Galaxy stopped", lambda: _gone(psutil, pid), timeout=120)


def _gone(psutil, pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE  # stopped, not reaped yet
    except psutil.NoSuchProcess:
        return True
