"""The Docker backend against a FAKE Docker Engine (tests/unit/backends/docker_fixtures.py).

No Docker engine can run here: the docker SDK (through the provider's DockerHook) talks HTTP to a
stand-in for dockerd's Engine API on 127.0.0.1, and the probe reads that stand-in's state directly.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from unit.backends.contract import BackendContract, Probe, SpecFactory
from unit.backends.docker_fixtures import FakeDockerEngine

from airflow_cloud_paas.backends import get_backend
from airflow_cloud_paas.backends.base import TAG_DEPLOYMENT, Resource, ResourceSpec, ResourceState
from airflow_cloud_paas.backends.docker import DockerBackend
from airflow_cloud_paas.exceptions import BackendError, ResourceCreateError, UnsupportedNodeError
from airflow_cloud_paas.tosca.loader import load_topology
from airflow_cloud_paas.tosca.resolve import resolved_node

TEMPLATE = Path(__file__).resolve().parents[3] / "airflow_cloud_paas" / "templates" / "docker_app.yaml"
CONTAINER = ("cloud_paas.nodes.Container", "tosca.nodes.Container.Application", "tosca.nodes.Root")
COMPUTE = ("tosca.nodes.Compute", "tosca.nodes.Root")
WEB_IMAGE = "nginx:1.27"
CRASHING_IMAGE = "cloud-paas-test/crashing:1"


def container_spec(deployment_id: str, node_name: str, index: int = 0, **properties) -> ResourceSpec:
    endpoint = properties.pop("endpoint", {"port": 80, "protocol": "tcp", "network_name": "PRIVATE"})
    return ResourceSpec(
        deployment_id,
        node_name,
        index,
        CONTAINER[0],
        CONTAINER,
        properties={"image": WEB_IMAGE, **properties},
        capabilities={"endpoint": endpoint},
    )


class DockerSpecs(SpecFactory):
    def compute(self, deployment_id: str, node_name: str, index: int = 0) -> ResourceSpec:
        return ResourceSpec(
            deployment_id,
            node_name,
            index,
            COMPUTE[0],
            COMPUTE,
            capabilities={"host": {"num_cpus": 1, "mem_size": "1 GB"}},
        )

    def service(self, deployment_id: str, node_name: str, index: int = 0) -> ResourceSpec:
        return container_spec(deployment_id, node_name, index, data_path="/data")

    def failing(self, deployment_id: str, node_name: str, index: int = 0) -> ResourceSpec:
        return container_spec(deployment_id, node_name, index, image=CRASHING_IMAGE, data_path="/data")


class EngineProbe(Probe):
    """Reads the fake engine's own state, never the backend."""

    def __init__(self, engine: FakeDockerEngine) -> None:
        self.engine = engine

    def exists(self, resource: Resource) -> bool:
        return any(c.id == resource.resource_id for c in self.engine.running())

    def count(self, deployment_id: str) -> int:
        return len(self.engine.running({TAG_DEPLOYMENT: deployment_id}))

    def tags(self, resource: Resource) -> dict[str, str]:
        return self.engine.containers[resource.resource_id].labels

    def stop_behind_backend(self, resource: Resource) -> None:
        self.engine.kill(resource.resource_id)

    @contextlib.contextmanager
    def slow_boot(self, seconds: float) -> Iterator[None]:
        self.engine.start_seconds = seconds  # started containers report health "starting" that long
        try:
            yield
        finally:
            self.engine.start_seconds = 0.0


@pytest.fixture(scope="module")
def engine() -> Iterator[FakeDockerEngine]:
    fake = FakeDockerEngine(
        images=["busybox:stable"], registry=[WEB_IMAGE, CRASHING_IMAGE], crashing=[CRASHING_IMAGE]
    ).start()
    yield fake
    fake.stop()


@pytest.fixture
def docker(engine: FakeDockerEngine) -> DockerBackend:
    return DockerBackend(docker_url=engine.url, poll_interval=0.01, ready_timeout=5)


class TestDockerBackendContract(BackendContract):
    @pytest.fixture
    def backend(self, docker: DockerBackend) -> DockerBackend:
        return docker

    @pytest.fixture
    def specs(self) -> SpecFactory:
        return DockerSpecs()

    @pytest.fixture
    def probe(self, engine: FakeDockerEngine) -> Probe:
        return EngineProbe(engine)


# ---------------------------------------------------------------------- docker specifics
def test_container_gets_limits_labels_volume_network_and_loopback_port(
    docker: DockerBackend, engine: FakeDockerEngine
) -> None:
    resource = docker.create(
        container_spec(
            "dk1",
            "web",
            2,
            cpus=0.5,
            memory="256 MB",
            data_path="/srv/data",
            environment={"MODE": "prod"},
            command="nginx -g 'daemon off;'",
        )
    )
    made = engine.containers[resource.resource_id]
    host = made.host_config
    assert host["NanoCpus"] == 500_000_000
    assert host["Memory"] == 256 * 1024**2
    assert host["PortBindings"] == {"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": ""}]}
    assert host["Binds"] == ["cp-dk1-web-2-data:/srv/data:rw"]
    assert made.config["Cmd"] == ["nginx", "-g", "daemon off;"]
    assert "MODE=prod" in made.config["Env"]
    assert made.labels["cloud-paas-index"] == "2" and made.labels["cloud-paas-node"] == "web"
    assert made.networks == ["cp-dk1"]
    assert engine.volumes["cp-dk1-web-2-data"]["Labels"]["cloud-paas-deployment"] == "dk1"
    assert [n["Name"] for n in engine.networks.values() if n["Labels"].get(TAG_DEPLOYMENT) == "dk1"] == ["cp-dk1"]
    assert resource.attributes["endpoint"] == "127.0.0.1:" + made.ports["80/tcp"][0]["HostPort"]
    assert resource.attributes["private_address"].startswith("172.18.")

    docker.delete("dk1")
    assert "cp-dk1-web-2-data" not in engine.volumes
    assert not any(n["Labels"].get(TAG_DEPLOYMENT) == "dk1" for n in engine.networks.values())


def test_public_endpoint_is_published_on_every_address(docker: DockerBackend, engine: FakeDockerEngine) -> None:
    spec = container_spec("dk2", "web", endpoint={"port": 8080, "network_name": "PUBLIC"})
    resource = docker.create(spec)
    assert engine.containers[resource.resource_id].host_config["PortBindings"] == {
        "8080/tcp": [{"HostIp": "0.0.0.0", "HostPort": ""}]
    }
    docker.delete("dk2")


def test_network_is_kept_while_another_node_uses_it(docker: DockerBackend, engine: FakeDockerEngine) -> None:
    docker.create(container_spec("dk3", "a"))
    docker.create(container_spec("dk3", "b"))
    docker.delete("dk3", "a")
    assert any(n["Name"] == "cp-dk3" for n in engine.networks.values())
    docker.delete("dk3")
    assert not any(n["Name"] == "cp-dk3" for n in engine.networks.values())


def test_unknown_image_fails_before_making_anything(docker: DockerBackend, engine: FakeDockerEngine) -> None:
    with pytest.raises(ResourceCreateError, match="cannot pull image 'nobody/nothing:9'.*repository does not exist"):
        docker.create(container_spec("dk4", "web", image="nobody/nothing:9", data_path="/data"))
    assert not [c for c in engine.containers.values() if c.labels.get(TAG_DEPLOYMENT) == "dk4"]
    assert not [v for v in engine.volumes.values() if v["Labels"].get(TAG_DEPLOYMENT) == "dk4"]
    assert not any(n["Name"] == "cp-dk4" for n in engine.networks.values())


def test_crashing_container_error_has_exit_code_and_log_and_leaves_nothing(
    docker: DockerBackend, engine: FakeDockerEngine
) -> None:
    with pytest.raises(ResourceCreateError) as err:
        docker.create(container_spec("dk5", "app", image=CRASHING_IMAGE, data_path="/data"))
    assert "exit code 3" in str(err.value) and "boom: cannot read /etc/app.conf" in str(err.value)
    assert err.value.resource == "dk5/app/0"
    assert not [c for c in engine.containers.values() if c.labels.get(TAG_DEPLOYMENT) == "dk5"]
    assert not [v for v in engine.volumes.values() if v["Labels"].get(TAG_DEPLOYMENT) == "dk5"]
    assert not any(n["Name"] == "cp-dk5" for n in engine.networks.values())


def test_check_refuses_more_cpus_or_memory_than_the_engine_has(docker: DockerBackend, engine: FakeDockerEngine) -> None:
    before = len(engine.containers), len(engine.volumes), len(engine.networks)
    with pytest.raises(UnsupportedNodeError, match="asks for 64 CPUs; the engine has 4"):
        docker.check(container_spec("dk6", "big", cpus=64))
    with pytest.raises(UnsupportedNodeError, match="asks for 65536 MB"):
        docker.check(container_spec("dk6", "big", memory="64 GB"))
    with pytest.raises(UnsupportedNodeError, match="needs an 'image' property"):
        docker.check(container_spec("dk6", "noimage", image=""))
    with pytest.raises(UnsupportedNodeError, match="outside 1-65535"):
        docker.check(container_spec("dk6", "port", endpoint={"port": 70000, "network_name": "PRIVATE"}))
    assert (len(engine.containers), len(engine.volumes), len(engine.networks)) == before


def test_unreachable_engine_is_a_backend_error_naming_the_url() -> None:
    backend = DockerBackend(docker_url="tcp://127.0.0.1:9", timeout=2)
    with pytest.raises(BackendError, match="cannot reach the Docker Engine at tcp://127.0.0.1:9") as err:
        backend.describe("any")
    assert err.value.provider == "docker"


def test_registry_builds_it_by_name(engine: FakeDockerEngine) -> None:
    backend = get_backend("docker", docker_url=engine.url)
    assert isinstance(backend, DockerBackend) and backend.describe("nobody") == []


def test_packaged_template_deploys_with_its_endpoint_output(docker: DockerBackend, engine: FakeDockerEngine) -> None:
    topology = load_topology(TEMPLATE, use_cache=False)
    node = resolved_node(topology, "docker_app", {"cpus": 0.25, "memory": "128 MB"})
    spec = ResourceSpec(
        "dk7",
        "docker_app",
        0,
        node.type,
        node.type_hierarchy,
        dict(node.properties),
        {k: dict(v) for k, v in node.capabilities.items()},
    )
    resource = docker.create(spec)
    assert resource.state == ResourceState.RUNNING
    made = engine.containers[resource.resource_id]
    assert made.config["Image"] == "nginx:1.27"
    assert made.host_config["NanoCpus"] == 250_000_000 and made.host_config["Memory"] == 128 * 1024**2
    (volume,) = made.volumes
    assert engine.volumes[volume]["Labels"]["cloud-paas-node"] == "docker_app"
    assert made.host_config["Binds"][0].endswith(":/data:rw")
    assert resource.attributes["endpoint"].startswith("127.0.0.1:")
    assert topology.outputs["endpoint"].value == {"get_attribute": ["docker_app", "endpoint"]}
    docker.delete("dk7")
