"""The Kubernetes backend against kmock's KubernetesEmulator (tests/unit/backends/kubernetes_fixtures.py).

No real API server can run here. The backend talks to the emulator through the cncf-kubernetes
provider's KubernetesHook and the official client, given a kubeconfig that points at 127.0.0.1; the
probe reads what the emulator holds. The emulator runs no controllers, so the contract runs with
``wait_for_ready=False`` ("accepted by the API server" is RUNNING); the readiness rules of
``wait_for_ready=True`` are tested by writing a controller's status / a kubelet's pod by hand.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from unit.backends.contract import BackendContract, Probe, SpecFactory
from unit.backends.kubernetes_fixtures import KubernetesApiEmulator

from airflow_cloud_paas.backends import get_backend
from airflow_cloud_paas.backends.base import TAG_DEPLOYMENT, Resource, ResourceSpec, ResourceState
from airflow_cloud_paas.backends.kubernetes import KubernetesBackend
from airflow_cloud_paas.exceptions import ResourceCreateError, ResourceTimeoutError, UnsupportedNodeError
from airflow_cloud_paas.tosca.loader import load_topology
from airflow_cloud_paas.tosca.resolve import resolved_node

NAMESPACE = "cloud-paas"
TEMPLATE = Path(__file__).resolve().parents[3] / "airflow_cloud_paas" / "templates" / "docker_app.yaml"
CONTAINER = ("cloud_paas.nodes.Container", "tosca.nodes.Container.Application", "tosca.nodes.Root")
COMPUTE = ("tosca.nodes.Compute", "tosca.nodes.Root")
OVER_QUOTA_IMAGE = "cloud-paas-test/over-quota:1"


def container_spec(deployment_id: str, node_name: str, index: int = 0, **properties) -> ResourceSpec:
    endpoint = properties.pop("endpoint", {"port": 80, "protocol": "tcp", "network_name": "PRIVATE"})
    return ResourceSpec(
        deployment_id,
        node_name,
        index,
        CONTAINER[0],
        CONTAINER,
        properties={"image": "nginx:1.27", **properties},
        capabilities={"endpoint": endpoint},
    )


class KubernetesSpecs(SpecFactory):
    def compute(self, deployment_id: str, node_name: str, index: int = 0) -> ResourceSpec:
        return ResourceSpec(
            deployment_id,
            node_name,
            index,
            COMPUTE[0],
            COMPUTE,
            capabilities={"host": {"num_cpus": 2, "mem_size": "1 GB"}},
        )

    def service(self, deployment_id: str, node_name: str, index: int = 0) -> ResourceSpec:
        return container_spec(deployment_id, node_name, index, data_path="/data")

    def failing(self, deployment_id: str, node_name: str, index: int = 0) -> ResourceSpec:
        # the claim is made, then the Deployment is refused (an exceeded quota): create must clean up
        return container_spec(deployment_id, node_name, index, image=OVER_QUOTA_IMAGE, data_path="/data")


def labelled(items: list[dict], deployment_id: str) -> list[dict]:
    return [i for i in items if (i["metadata"].get("labels") or {}).get(TAG_DEPLOYMENT) == deployment_id]


class ApiServerProbe(Probe):
    """Reads what the emulated API server holds, never the backend."""

    def __init__(self, api: KubernetesApiEmulator, backend: KubernetesBackend | None = None) -> None:
        self.api = api
        self.backend = backend

    def _deployment(self, resource: Resource) -> dict | None:
        name = resource.resource_id.split("/", 1)[1]
        return next((d for d in self.api.objects("deployments", NAMESPACE) if d["metadata"]["name"] == name), None)

    def exists(self, resource: Resource) -> bool:
        found = self._deployment(resource)
        return found is not None and found["spec"].get("replicas", 1) >= 1

    def count(self, deployment_id: str) -> int:
        return sum(d["spec"].get("replicas", 1) for d in labelled(self.api.objects("deployments"), deployment_id))

    def tags(self, resource: Resource) -> dict[str, str]:
        return self._deployment(resource)["metadata"]["labels"]

    def stop_behind_backend(self, resource: Resource) -> None:
        # someone runs `kubectl scale --replicas=0` behind the backend's back
        from kubernetes import client

        configuration = client.Configuration()
        configuration.host = self.api.url
        with client.ApiClient(configuration) as api:
            client.AppsV1Api(api).patch_namespaced_deployment(
                resource.resource_id.split("/", 1)[1], NAMESPACE, {"spec": {"replicas": 0}}
            )

    @contextlib.contextmanager
    def slow_boot(self, seconds: float) -> Iterator[None]:
        # the emulator runs no controller: a backend that waits for readyReplicas waits for ever
        assert self.backend is not None
        self.backend.wait_for_ready = True
        try:
            yield
        finally:
            self.backend.wait_for_ready = False


@pytest.fixture(scope="module")
def api() -> Iterator[KubernetesApiEmulator]:
    emulator = KubernetesApiEmulator().start()
    emulator.reject_creates(OVER_QUOTA_IMAGE, 403, 'deployments "x" is forbidden: exceeded quota: compute')
    yield emulator
    emulator.stop()


@pytest.fixture
def kube(api: KubernetesApiEmulator) -> KubernetesBackend:
    return KubernetesBackend(
        conn_id=None, config_dict=api.kubeconfig(NAMESPACE), wait_for_ready=False, poll_interval=0.01, ready_timeout=5
    )


class TestKubernetesBackendContract(BackendContract):
    @pytest.fixture
    def backend(self, kube: KubernetesBackend) -> KubernetesBackend:
        return kube

    @pytest.fixture
    def specs(self) -> SpecFactory:
        return KubernetesSpecs()

    @pytest.fixture
    def probe(self, api: KubernetesApiEmulator, kube: KubernetesBackend) -> Probe:
        return ApiServerProbe(api, kube)


# ---------------------------------------------------------------------- kubernetes specifics
def test_objects_carry_image_limits_claim_and_service(kube: KubernetesBackend, api: KubernetesApiEmulator) -> None:
    resource = kube.create(
        container_spec("k1", "web", 1, cpus=0.5, memory="256 MB", data_path="/srv", environment={"MODE": "prod"})
    )
    assert kube.namespace == NAMESPACE  # from the kubeconfig's context, through the hook
    (deployment,) = labelled(api.objects("deployments", NAMESPACE), "k1")
    assert deployment["metadata"]["name"] == "cp-k1-web-1" == resource.attributes["deployment"]
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    assert deployment["spec"]["selector"]["matchLabels"] == {
        "cloud-paas-deployment": "k1",
        "cloud-paas-node": "web",
        "cloud-paas-index": "1",
    }
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == "nginx:1.27"
    assert container["resources"]["limits"] == {"cpu": "500m", "memory": "256Mi"}
    assert container["env"] == [{"name": "MODE", "value": "prod"}]
    assert container["volumeMounts"] == [{"name": "data", "mountPath": "/srv"}]
    (claim,) = labelled(api.objects("persistentvolumeclaims", NAMESPACE), "k1")
    assert pod["volumes"][0]["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "1Gi"
    (service,) = labelled(api.objects("services", NAMESPACE), "k1")
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["ports"][0]["port"] == 80 and service["spec"]["ports"][0]["targetPort"] == 80
    assert resource.attributes["endpoint"] == f"cp-k1-web-1.{NAMESPACE}.svc:80"

    kube.delete("k1")
    for plural in ("deployments", "services", "persistentvolumeclaims"):
        assert labelled(api.objects(plural), "k1") == [], f"{plural} left behind"


def test_public_endpoint_gets_a_load_balancer(kube: KubernetesBackend, api: KubernetesApiEmulator) -> None:
    kube.create(container_spec("k2", "web", endpoint={"port": 8080, "network_name": "PUBLIC"}))
    (service,) = labelled(api.objects("services", NAMESPACE), "k2")
    assert service["spec"]["type"] == "LoadBalancer"
    kube.delete("k2")


def test_failed_create_removes_what_the_api_server_kept(kube: KubernetesBackend, api: KubernetesApiEmulator) -> None:
    with pytest.raises(ResourceCreateError, match="403 .*exceeded quota") as err:
        kube.create(container_spec("k3", "app", image=OVER_QUOTA_IMAGE, data_path="/data"))
    assert err.value.provider == "kubernetes" and err.value.resource == "k3/app/0"
    for plural in ("deployments", "services", "persistentvolumeclaims"):
        assert labelled(api.objects(plural), "k3") == [], f"{plural} left behind"


def test_waits_for_ready_replicas_when_asked(api: KubernetesApiEmulator) -> None:
    backend = KubernetesBackend(
        conn_id=None, config_dict=api.kubeconfig(NAMESPACE), poll_interval=0.02, ready_timeout=20
    )
    result: dict = {}
    worker = threading.Thread(target=lambda: result.update(r=backend.create(container_spec("k4", "web"))))
    worker.start()
    try:
        worker.join(0.5)
        assert worker.is_alive(), "create returned before the Deployment was ready"
        (found,) = backend.describe("k4")
        assert found.state == ResourceState.CREATING and found.attributes["native_state"] == "accepted"
        api.set_status(NAMESPACE, "cp-k4-web-0", {"replicas": 1, "readyReplicas": 1, "observedGeneration": 1})
        worker.join(10)
        assert not worker.is_alive()
        assert result["r"].state == ResourceState.RUNNING and result["r"].attributes["ready_replicas"] == 1
    finally:
        worker.join(10)
        backend.delete("k4")


def test_image_pull_backoff_fails_create_and_cleans_up(api: KubernetesApiEmulator) -> None:
    backend = KubernetesBackend(
        conn_id=None, config_dict=api.kubeconfig(NAMESPACE), poll_interval=0.02, ready_timeout=20
    )
    errors: list[BaseException] = []

    def create() -> None:
        try:
            backend.create(container_spec("k5", "web", image="nobody/nothing:9"))
        except BaseException as err:  # handed to the test thread
            errors.append(err)

    worker = threading.Thread(target=create)
    worker.start()
    while not labelled(api.objects("deployments", NAMESPACE), "k5"):
        assert worker.is_alive(), errors
    api.add_pod(
        NAMESPACE,
        "cp-k5-web-0-abc12",
        {"cloud-paas-deployment": "k5", "cloud-paas-node": "web", "cloud-paas-index": "0"},
        "ImagePullBackOff",
    )
    worker.join(10)
    assert not worker.is_alive()
    (err,) = errors
    assert isinstance(err, ResourceCreateError) and "ImagePullBackOff" in str(err)
    assert labelled(api.objects("deployments"), "k5") == [] and labelled(api.objects("services"), "k5") == []


def test_not_ready_in_time_is_a_timeout_and_leaves_nothing(api: KubernetesApiEmulator) -> None:
    backend = KubernetesBackend(
        conn_id=None, config_dict=api.kubeconfig(NAMESPACE), poll_interval=0.02, ready_timeout=0.3
    )
    with pytest.raises(ResourceTimeoutError, match="wait_for_ready=False"):
        backend.create(container_spec("k6", "web"))
    assert labelled(api.objects("deployments"), "k6") == []


def test_check_refuses_names_that_are_not_label_values(kube: KubernetesBackend, api: KubernetesApiEmulator) -> None:
    with pytest.raises(UnsupportedNodeError, match="not a Kubernetes label value"):
        kube.check(container_spec("k7", "web server"))
    with pytest.raises(UnsupportedNodeError, match="needs an 'image' property"):
        kube.check(container_spec("k7", "web", image=None))
    assert labelled(api.objects("deployments"), "k7") == []


def test_long_names_stay_valid_and_distinct(kube: KubernetesBackend) -> None:
    long = "n" * 60
    a = kube.object_name("dep", long + "_a", 0)
    b = kube.object_name("dep", long + "-a", 0)
    assert len(a) <= 63 and len(b) <= 63 and a != b


def test_registry_builds_it_by_name(api: KubernetesApiEmulator) -> None:
    backend = get_backend("kubernetes", conn_id=None, config_dict=api.kubeconfig(NAMESPACE))
    assert isinstance(backend, KubernetesBackend) and backend.describe("nobody") == []


@pytest.mark.parametrize("given", ["kube_config", "kube_config_path", "namespace"])
def test_namespace_follows_the_connection(api: KubernetesApiEmulator, tmp_path, monkeypatch, given: str) -> None:
    import json

    config = json.dumps(api.kubeconfig(NAMESPACE))
    extra = {
        "kube_config": {"kube_config": config},
        "kube_config_path": {"kube_config_path": str(tmp_path / "config")},
        # the connection's own namespace wins over its kubeconfig context's
        "namespace": {"kube_config": json.dumps(api.kubeconfig("elsewhere")), "namespace": NAMESPACE},
    }[given]
    (tmp_path / "config").write_text(config)
    monkeypatch.setenv("AIRFLOW_CONN_K8S_EMULATOR", json.dumps({"conn_type": "kubernetes", "extra": extra}))
    backend = KubernetesBackend(conn_id="k8s_emulator", wait_for_ready=False)
    backend.create(container_spec("k10", "web"))
    try:
        assert backend.namespace == NAMESPACE
        assert [d["metadata"]["name"] for d in labelled(api.objects("deployments", NAMESPACE), "k10")] == [
            "cp-k10-web-0"]
    finally:
        backend.delete("k10")
    assert labelled(api.objects("deployments"), "k10") == []


def test_packaged_template_deploys(kube: KubernetesBackend, api: KubernetesApiEmulator) -> None:
    topology = load_topology(TEMPLATE, use_cache=False)
    node = resolved_node(topology, "docker_app", {"cpus": 2, "memory": "1 GB", "port": 8080})
    spec = ResourceSpec(
        "k8",
        "docker_app",
        0,
        node.type,
        node.type_hierarchy,
        dict(node.properties),
        {k: dict(v) for k, v in node.capabilities.items()},
    )
    resource = kube.create(spec)
    assert resource.state == ResourceState.RUNNING
    (deployment,) = labelled(api.objects("deployments", NAMESPACE), "k8")
    assert deployment["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"] == {
        "cpu": "2000m",
        "memory": "1024Mi",
    }
    assert resource.attributes["endpoint"].endswith(".svc:8080")
    kube.delete("k8")


def test_request_returns_before_the_deployment_is_ready(api: KubernetesApiEmulator) -> None:
    backend = KubernetesBackend(
        conn_id=None, config_dict=api.kubeconfig(NAMESPACE), poll_interval=0.02, ready_timeout=20
    )
    try:
        started = time.monotonic()
        requested = backend.request(container_spec("k9", "web"))
        assert time.monotonic() - started < 5  # create would wait up to ready_timeout: no controller runs
        assert requested.state == ResourceState.CREATING
        assert backend.request(container_spec("k9", "web")).resource_id == requested.resource_id  # a retry
        api.set_status(NAMESPACE, "cp-k9-web-0", {"replicas": 1, "readyReplicas": 1, "observedGeneration": 1})
        (found,) = backend.describe("k9")
        assert found.state == ResourceState.RUNNING  # what the trigger polls
    finally:
        backend.delete("k9")
    assert backend.describe("k9") == []
