"""The Galaxy container template maps to the community image on the docker and the kubernetes backends, its
admin key a secret input that reaches only the container's environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from airflow_cloud_paas import packaged_template
from airflow_cloud_paas.backends.containers import ContainerRequirements
from airflow_cloud_paas.backends.local import LocalBackend
from airflow_cloud_paas.deployer import Deployer
from airflow_cloud_paas.exceptions import ToscaInputError
from airflow_cloud_paas.request import DeploymentRequest
from airflow_cloud_paas.store import DeploymentStore
from airflow_cloud_paas.tosca import load_topology

KEY = "0123456789abcdef0123456789abcdef"


@pytest.fixture(scope="module")
def topology():
    return load_topology(packaged_template("galaxy_docker.yaml"))


def test_the_admin_key_is_a_secret_input_without_a_default(topology) -> None:
    secret = {name for name, spec in topology.inputs.items() if spec.is_secret}
    assert secret == {"admin_api_key"} and not topology.inputs["admin_api_key"].has_default
    assert topology.nodes["galaxy"].is_a("tosca.nodes.Container.Application")


@pytest.mark.parametrize("provider", ["docker", "kubernetes"])
def test_the_portal_maps_to_the_galaxy_image_with_its_admin_port_and_volume(topology, tmp_path: Path,
                                                                           provider: str) -> None:
    store = DeploymentStore(f"sqlite:///{tmp_path}/store.db")
    request = DeploymentRequest.build(topology, "galaxy-c", {"admin_api_key": KEY, "admin_email": "a@b.org",
                                                            "cpus": 1.5, "memory_mb": 3072})
    deployer = Deployer(request, store, LocalBackend(tmp_path / "w"))
    wanted = ContainerRequirements.from_spec(deployer.spec("galaxy", 0, with_requirements=False), provider=provider)
    assert (wanted.kind, wanted.image) == ("container", "quay.io/bgruening/galaxy:24.1")
    assert [p.key for p in wanted.ports] == ["80/tcp"] and wanted.public
    assert (wanted.cpus, wanted.mem_mb, wanted.data_path) == (1.5, 3072.0, "/export")
    env = wanted.environment
    assert (env["GALAXY_DEFAULT_ADMIN_EMAIL"], env["GALAXY_CONFIG_ADMIN_USERS"]) == ("a@b.org", "a@b.org")
    assert env["GALAXY_DEFAULT_ADMIN_KEY"] == KEY
    assert not wanted.warnings


def test_a_malformed_admin_key_is_refused_naming_the_input(topology) -> None:
    with pytest.raises(ToscaInputError, match="admin_api_key") as caught:
        DeploymentRequest.build(topology, "galaxy-c", {"admin_api_key": "short key!"})
    assert "short key!" not in str(caught.value)  # a secret's value is never shown
