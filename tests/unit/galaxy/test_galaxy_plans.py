"""The Galaxy templates and INDIGO's Galaxy examples plan on the local backend; bad input is refused by the check,
before any record or process exists (the admin key never shown)."""

from __future__ import annotations

from pathlib import Path

import pytest

from airflow_cloud_paas import packaged_template
from airflow_cloud_paas.backends.local import LocalBackend
from airflow_cloud_paas.deployer import Deployer
from airflow_cloud_paas.exceptions import UnsupportedNodeError
from airflow_cloud_paas.request import DeploymentRequest
from airflow_cloud_paas.services.galaxy import local as galaxy_local
from airflow_cloud_paas.services.galaxy.config import VENV_ENV
from airflow_cloud_paas.services.galaxy.errors import GalaxyConfigError
from airflow_cloud_paas.store import DeploymentStore
from airflow_cloud_paas.tosca import indigo_import_map, load_topology

KEY = "0123456789abcdef0123456789abcdef"
EXAMPLES = (Path(__file__).resolve().parents[3] / ".." / "shared" / "tosca" / "examples").resolve()
#: INDIGO's Galaxy examples whose every node has a local driver (the ELIXIR-IT ones also need BlockStorage)
LOCAL_EXAMPLES = ("galaxy_cluster.yaml", "galaxy_elastic_cluster.yaml")
ALL_EXAMPLES = sorted(p.name for p in EXAMPLES.glob("*galaxy*.y*ml")) if EXAMPLES.is_dir() else []


@pytest.fixture
def galaxy_venv(tmp_path: Path, monkeypatch) -> Path:
    """A stand-in Galaxy venv (an executable galaxy-web), so the check runs where Galaxy is not installed."""
    launcher = tmp_path / "venv" / "bin" / "galaxy-web"
    launcher.parent.mkdir(parents=True)
    launcher.write_text("#!/bin/sh\nexit 1\n")
    launcher.chmod(0o755)
    monkeypatch.setenv(VENV_ENV, str(launcher.parent.parent))
    return launcher.parent.parent


def _deployer(tmp_path: Path, topology, inputs) -> Deployer:
    store = DeploymentStore(f"sqlite:///{tmp_path}/store.db")
    request = DeploymentRequest.build(topology, "galaxy-plan", inputs, actor="test")
    return Deployer(request, store, LocalBackend(tmp_path / "work"))


@pytest.mark.parametrize("template", ["galaxy.yaml", "galaxy_slurm_cluster.yaml"])
def test_the_packaged_templates_plan_and_check(tmp_path: Path, galaxy_venv: Path, template: str) -> None:
    deployer = _deployer(tmp_path, load_topology(packaged_template(template)), {"admin_api_key": KEY})
    deployer.check()
    assert deployer.plan.node("galaxy").node.properties["flavor"] == "cloud-paas-text"
    assert not (tmp_path / "work").exists() or not any((tmp_path / "work").iterdir())


@pytest.mark.parametrize("inputs, error, field", [
    ({"admin_api_key": "short"}, GalaxyConfigError, "admin_api_key"),
    ({"admin_api_key": KEY, "flavor": "galaxy-rna-workbench"}, GalaxyConfigError, "flavor"),
    ({"admin_api_key": KEY, "admin_email": "root"}, GalaxyConfigError, "admin_email"),
])
def test_bad_input_is_refused_before_anything_runs(tmp_path: Path, galaxy_venv: Path, inputs, error, field) -> None:
    deployer = _deployer(tmp_path, load_topology(packaged_template("galaxy.yaml")), inputs)
    with pytest.raises(error) as caught:
        deployer.check()
    assert caught.value.field == field
    assert "short" not in str(caught.value) or field != "admin_api_key"


def test_storage_encryption_is_refused_here_saying_why(tmp_path: Path, galaxy_venv: Path, monkeypatch) -> None:
    monkeypatch.setattr(galaxy_local, "encryption_unavailable", lambda: "no device-mapper (planted)")
    deployer = _deployer(tmp_path, load_topology(packaged_template("galaxy.yaml")),
                         {"admin_api_key": KEY, "storage_encryption": True, "encryption_passphrase": "pl4nted-pass"})
    with pytest.raises(UnsupportedNodeError) as caught:
        deployer.check()
    assert "storage_encryption" in str(caught.value) and "no device-mapper (planted)" in str(caught.value)
    assert "pl4nted-pass" not in str(caught.value) and KEY not in str(caught.value)


def test_this_machine_says_why_it_cannot_encrypt() -> None:
    reason = galaxy_local.encryption_unavailable()
    misc = Path("/proc/misc").read_text() if Path("/proc/misc").exists() else ""
    assert (reason is None) == ("device-mapper" in misc or galaxy_local.DEVICE_MAPPER.exists())
    if reason:
        assert "device-mapper" in reason and "VM" in reason


def test_without_galaxy_the_check_says_how_to_install_it(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv(VENV_ENV, str(tmp_path / "nowhere"))
    deployer = _deployer(tmp_path, load_topology(packaged_template("galaxy.yaml")), {"admin_api_key": KEY})
    with pytest.raises(UnsupportedNodeError, match="make galaxy-runtime"):
        deployer.check()


@pytest.mark.parametrize("name", ALL_EXAMPLES)
def test_indigo_galaxy_examples_load_and_plan(name: str, shared_dir: Path) -> None:
    import_map = indigo_import_map(shared_dir / "tosca" / "indigo-types")
    topology = load_topology(EXAMPLES / name, import_map=import_map)
    inputs = {"admin_api_key": KEY} if "admin_api_key" in topology.inputs else {}
    request = DeploymentRequest.build(topology, "indigo-plan", inputs, actor="test")
    assert sorted(request.plan.nodes) == sorted(topology.nodes)


@pytest.mark.parametrize("name", LOCAL_EXAMPLES)
def test_indigo_galaxy_examples_check_on_the_local_backend(tmp_path: Path, galaxy_venv: Path, shared_dir: Path,
                                                           name: str) -> None:
    import_map = indigo_import_map(shared_dir / "tosca" / "indigo-types")
    topology = load_topology(EXAMPLES / name, import_map=import_map)
    _deployer(tmp_path, topology, {"admin_api_key": KEY}).check()
    # INDIGO's own default admin key is public: refused, and never shown
    with pytest.raises(GalaxyConfigError, match="public default key") as caught:
        _deployer(tmp_path, topology, {}).check()
    assert "not_very_secret_api_key" not in str(caught.value)
