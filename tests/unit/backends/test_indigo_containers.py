"""INDIGO container applications (Marathon services, Chronos jobs on a Container.Runtime) on Docker and Kubernetes.

The templates are INDIGO's own examples in ../shared/tosca/examples, their types the local copies of
custom_types.yaml. The Docker backend talks to the FAKE Docker Engine (tests/unit/backends/docker_fixtures.py),
the Kubernetes backend to kmock's API-server emulator (tests/unit/backends/kubernetes_fixtures.py); deployments go
through the real Deployer and a SQLite store, so outputs are evaluated as a DAG run evaluates them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from unit.backends.docker_fixtures import FakeDockerEngine
from unit.backends.kubernetes_fixtures import KubernetesApiEmulator

from airflow_cloud_paas.backends.base import ResourceSpec
from airflow_cloud_paas.backends.docker import DockerBackend
from airflow_cloud_paas.backends.kubernetes import KubernetesBackend
from airflow_cloud_paas.deployer import Deployer
from airflow_cloud_paas.exceptions import ResourceCreateError, UnsupportedNodeError
from airflow_cloud_paas.request import DeploymentRequest
from airflow_cloud_paas.store import DeploymentStore
from airflow_cloud_paas.tosca import indigo_import_map, load_topology
from airflow_cloud_paas.tosca.model import Topology

SHARED = (Path(__file__).resolve().parents[3] / ".." / "shared" / "tosca").resolve()
EXAMPLES = SHARED / "examples"
CONTAINER_EXAMPLES = (
    "rstudio.yaml",
    "indigo_marathon_app.yaml",
    "deep-plants-classification.yaml",
    "indigo_job_onedata.yaml",
    "indigo_job_output_upload_swift.yaml",
    "indigo_job_output_upload_web.yaml",
)
NAMESPACE = "cloud-paas"
JOB_IMAGE = "cloud-paas-test/job:1"
UPLOAD_IMAGE = "indigodatacloud/chronos-job-upload"
FAILING_JOB_IMAGE = "cloud-paas-test/failing-job:1"
#: a value for each required input without a default, by its TOSCA type (a job's image: one that exits 0)
PLACEHOLDERS = {"string": "placeholder", "list": ["http://example.org/input.txt"], "integer": 1, "float": 1.0}


def load(name: str) -> Topology:
    return load_topology(EXAMPLES / name, import_map=indigo_import_map(SHARED / "indigo-types"), use_cache=False)


def placeholder_inputs(topology: Topology) -> dict:
    values = {name: PLACEHOLDERS[d.type] for name, d in topology.inputs.items() if d.required and d.default is None}
    if "docker_image" in topology.inputs:
        values["docker_image"] = JOB_IMAGE
    return values


@pytest.fixture(scope="module")
def engine() -> Iterator[FakeDockerEngine]:
    fake = FakeDockerEngine(
        registry=["rocker/rstudio", JOB_IMAGE, UPLOAD_IMAGE, FAILING_JOB_IMAGE, "busybox:stable"],
        finishing=[JOB_IMAGE, UPLOAD_IMAGE],
        crashing=[FAILING_JOB_IMAGE],
    ).start()
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def api() -> Iterator[KubernetesApiEmulator]:
    emulator = KubernetesApiEmulator().start()
    yield emulator
    emulator.stop()


@pytest.fixture
def docker(engine: FakeDockerEngine) -> DockerBackend:
    return DockerBackend(docker_url=engine.url, poll_interval=0.01, ready_timeout=5, job_timeout=5)


@pytest.fixture
def kubernetes(api: KubernetesApiEmulator) -> KubernetesBackend:
    return KubernetesBackend(conn_id=None, config_dict=api.kubeconfig(NAMESPACE), wait_for_ready=False,
                             poll_interval=0.05, ready_timeout=10, job_timeout=10)


@pytest.fixture
def store(tmp_path: Path) -> DeploymentStore:
    return DeploymentStore(f"sqlite:///{tmp_path}/store.db")


# ---------------------------------------------------------------------- planning
@pytest.mark.parametrize("backend_name", ["docker", "kubernetes"])
@pytest.mark.parametrize("name", CONTAINER_EXAMPLES)
def test_every_indigo_container_example_plans(name: str, backend_name: str, request: pytest.FixtureRequest) -> None:
    topology = load(name)
    backend = request.getfixturevalue(backend_name)
    plan = DeploymentRequest.build(topology, "validate", placeholder_inputs(topology)).plan
    plan.check(backend)  # what `cloud-paas validate --backend` runs: raises if a node cannot be deployed
    assert any(plan.node(n).node.is_a("tosca.nodes.indigo.Container.Runtime.Docker") for n in plan.order)


def test_runtime_envelope_and_application_are_read_as_indigo_defines_them(docker: DockerBackend) -> None:
    topology = load("rstudio.yaml")
    plan = DeploymentRequest.build(topology, "r", {"rstudio_password": "pw"}).plan
    runtime = docker.requirements(plan.spec("r", "docker_runtime", 0))
    assert runtime.kind == "record" and runtime.cpus == 1.0 and runtime.mem_mb == 1024
    assert [(p.container_port, p.protocol, p.host_port) for p in runtime.ports] == [(8787, "tcp", None)]
    assert [(v.name, v.path, v.read_only) for v in runtime.volumes] == [("marathon", "/home/rstudio", False)]
    assert any("dvdi:rexray" in w for w in runtime.warnings)
    app = docker.requirements(plan.spec("r", "marathon", 0))
    assert (app.kind, app.image, app.force_pull, app.environment) == ("container", "rocker/rstudio", True,
                                                                     {"PASSWORD": "pw"})


# ---------------------------------------------------------------------- RStudio, a Marathon service
def test_rstudio_deploys_on_docker_with_its_endpoint_output(docker: DockerBackend, engine: FakeDockerEngine,
                                                            store: DeploymentStore) -> None:
    request = DeploymentRequest.build(load("rstudio.yaml"), "rs-docker", {"rstudio_password": "s3cret"}, actor="t/1")
    outputs = Deployer(request, store, docker).create_all()

    (container,) = engine.running({"cloud-paas-deployment": "rs-docker"})
    assert container.config["Image"] == "rocker/rstudio"
    assert container.labels["cloud-paas-node"] == "marathon" and container.labels["cloud-paas-host"] == "docker_runtime"
    assert "PASSWORD=s3cret" in container.config["Env"]
    host = container.host_config
    assert host["NanoCpus"] == 1_000_000_000 and host["Memory"] == 1024**3  # the runtime's envelope
    assert host["RestartPolicy"] == {"Name": "unless-stopped"}
    assert host["Binds"] == ["cp-rs-docker-marathon-0-marathon:/home/rstudio:rw"]
    port = container.ports["8787/tcp"][0]["HostPort"]
    assert outputs == {"label": "RStudio", "endpoint": f"http://127.0.0.1:{port}"}
    assert store.get("rs-docker").outputs["endpoint"] == f"http://127.0.0.1:{port}"
    unhonoured = [e.message for e in store.get("rs-docker").events if e.kind == "not_honoured"]
    assert len(unhonoured) == 1
    assert "docker: node 'docker_runtime' field 'capabilities.host.volumes[0]'" in unhonoured[0]
    assert "cp-rs-docker-docker_runtime-0" in engine.volumes or any(
        v["Labels"].get("cloud-paas-node") == "docker_runtime" for v in engine.volumes.values())

    Deployer(request, store, docker).delete_all()
    assert not engine.running({"cloud-paas-deployment": "rs-docker"})
    assert not [v for v in engine.volumes.values() if v["Labels"].get("cloud-paas-deployment") == "rs-docker"]


def test_rstudio_deploys_on_kubernetes_with_its_endpoint_output(kubernetes: KubernetesBackend,
                                                                api: KubernetesApiEmulator,
                                                                store: DeploymentStore) -> None:
    request = DeploymentRequest.build(load("rstudio.yaml"), "rs-k8s", {"rstudio_password": "s3cret"}, actor="t/1")
    outputs = Deployer(request, store, kubernetes).create_all()

    (deployment,) = [d for d in api.objects("deployments", NAMESPACE)
                     if d["metadata"]["name"] == "cp-rs-k8s-marathon-0"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "rocker/rstudio" and container["imagePullPolicy"] == "Always"
    assert container["resources"]["limits"] == {"cpu": "1000m", "memory": "1024Mi"}
    assert {"name": "PASSWORD", "value": "s3cret"} in container["env"]
    assert container["volumeMounts"] == [{"name": "marathon", "mountPath": "/home/rstudio"}]
    (service,) = [s for s in api.objects("services", NAMESPACE) if s["metadata"]["name"] == "cp-rs-k8s-marathon-0"]
    assert service["spec"]["ports"][0]["port"] == 8787 and service["spec"]["type"] == "ClusterIP"
    records = [c for c in api.objects("configmaps", NAMESPACE) if c["metadata"]["name"] == "cp-rs-k8s-docker_runtime-0"
               or c["metadata"].get("labels", {}).get("cloud-paas-node") == "docker_runtime"]
    assert len(records) == 1
    address = kubernetes.describe("rs-k8s", "marathon")[0].attributes["load_balancer_ips"][0]
    assert address in ("cp-rs-k8s-marathon-0.cloud-paas.svc", service["spec"].get("clusterIP"))
    assert outputs == {"label": "RStudio", "endpoint": f"http://{address}:8787"}

    Deployer(request, store, kubernetes).delete_all()
    assert not [o for kind in ("deployments", "services", "configmaps", "persistentvolumeclaims")
                for o in api.objects(kind, NAMESPACE) if o["metadata"].get("labels", {}).get(
                    "cloud-paas-deployment") == "rs-k8s"]


# ---------------------------------------------------------------------- Chronos jobs
WEB_JOB_INPUTS = {"input_urls": ["http://example.org/in.txt"], "output_endpoint": "http://example.org/up",
                  "output_path": "out", "output_username": "u", "output_password": "p", "output_filenames": "a.txt",
                  "docker_image": JOB_IMAGE}


def test_chronos_jobs_run_to_completion_on_docker_parent_first(docker: DockerBackend, engine: FakeDockerEngine,
                                                               store: DeploymentStore) -> None:
    request = DeploymentRequest.build(load("indigo_job_output_upload_web.yaml"), "job-docker", WEB_JOB_INPUTS,
                                      actor="t/1")
    assert request.plan.order.index("chronos_job") < request.plan.order.index("chronos_job_upload")
    outputs = Deployer(request, store, docker).create_all()
    assert outputs == {}  # the template declares none

    jobs = {c.labels["cloud-paas-node"]: c for c in engine.containers.values()
            if c.labels.get("cloud-paas-deployment") == "job-docker"}
    assert set(jobs) == {"chronos_job", "chronos_job_upload"}
    assert jobs["chronos_job"].config["Cmd"] == ["/bin/sh", "-c", "/bin/bash run.sh"]
    assert jobs["chronos_job"].host_config["RestartPolicy"] == {"Name": "on-failure", "MaximumRetryCount": 3}
    assert jobs["chronos_job"].host_config["Privileged"] is True  # the Chronos type's default
    assert "ONEDATA_SPACE=" in jobs["chronos_job"].config["Env"]  # the Onedata record has no space: empty, warned
    described = {r.node_name: r for r in docker.describe("job-docker")}
    assert described["chronos_job"].attributes["job_state"] == "COMPLETE"
    assert described["chronos_job_upload"].attributes["exit_code"] == 0
    assert store.get("job-docker").status == "CREATE_COMPLETE"
    Deployer(request, store, docker).delete_all()


def test_a_job_that_exits_non_zero_fails_the_deployment_on_docker(docker: DockerBackend, engine: FakeDockerEngine,
                                                                  store: DeploymentStore) -> None:
    inputs = {**WEB_JOB_INPUTS, "docker_image": FAILING_JOB_IMAGE}
    request = DeploymentRequest.build(load("indigo_job_output_upload_web.yaml"), "job-fail", inputs, actor="t/1")
    with pytest.raises(ResourceCreateError, match="FAILED: exit code 3.*boom") as err:
        Deployer(request, store, docker).create_all()
    assert err.value.resource == "job-fail/chronos_job/0"
    assert store.get("job-fail").status == "CREATE_FAILED"
    assert not [c for c in engine.containers.values() if c.labels.get("cloud-paas-node") == "chronos_job_upload"
                and c.labels.get("cloud-paas-deployment") == "job-fail"]  # the child job never ran
    Deployer(request, store, docker).delete_all()


def _controller(api: KubernetesApiEmulator, deployment_id: str, statuses: dict[str, dict],
                stop: threading.Event) -> None:
    """Stand in for the job controller: write each node's Job's final status once the Job exists."""
    while not stop.is_set() and statuses:
        for job in api.objects("jobs", NAMESPACE):
            labels = job["metadata"].get("labels") or {}
            if labels.get("cloud-paas-deployment") == deployment_id and labels.get("cloud-paas-node") in statuses:
                api.set_job_status(NAMESPACE, job["metadata"]["name"], statuses.pop(labels["cloud-paas-node"]))
        time.sleep(0.05)


def test_chronos_jobs_complete_on_kubernetes(kubernetes: KubernetesBackend, api: KubernetesApiEmulator,
                                             store: DeploymentStore) -> None:
    kubernetes.wait_for_ready = True  # a Job is done only when the (stand-in) controller says it succeeded
    done = {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}
    stop = threading.Event()
    controller = threading.Thread(target=_controller, args=(api, "job-k8s", {"chronos_job": dict(done),
                                                                             "chronos_job_upload": dict(done)}, stop))
    controller.start()
    try:
        request = DeploymentRequest.build(load("indigo_job_output_upload_web.yaml"), "job-k8s", WEB_JOB_INPUTS,
                                          actor="t/1")
        Deployer(request, store, kubernetes).create_all()
    finally:
        stop.set()
        controller.join(5)
    jobs = {j["metadata"]["labels"]["cloud-paas-node"]: j for j in api.objects("jobs", NAMESPACE)
            if j["metadata"]["labels"].get("cloud-paas-deployment") == "job-k8s"}
    spec = jobs["chronos_job"]["spec"]
    assert spec["backoffLimit"] == 3 and spec["template"]["spec"]["restartPolicy"] == "Never"
    assert spec["template"]["spec"]["containers"][0]["args"] == ["/bin/sh", "-c", "/bin/bash run.sh"]
    described = {r.node_name: r for r in kubernetes.describe("job-k8s")}
    assert described["chronos_job_upload"].attributes["job_state"] == "COMPLETE"
    assert store.get("job-k8s").status == "CREATE_COMPLETE"
    Deployer(request, store, kubernetes).delete_all()
    assert not [j for j in api.objects("jobs", NAMESPACE)
                if j["metadata"]["labels"].get("cloud-paas-deployment") == "job-k8s"]


def test_a_failed_job_is_a_typed_error_on_kubernetes(kubernetes: KubernetesBackend, api: KubernetesApiEmulator,
                                                     store: DeploymentStore) -> None:
    kubernetes.wait_for_ready = True
    failed = {"failed": 4, "conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                                           "message": "Job has reached the specified backoff limit"}]}
    stop = threading.Event()
    controller = threading.Thread(target=_controller, args=(api, "job-k8s-fail", {"chronos_job": failed}, stop))
    controller.start()
    try:
        request = DeploymentRequest.build(load("indigo_job_output_upload_web.yaml"), "job-k8s-fail", WEB_JOB_INPUTS,
                                          actor="t/1")
        with pytest.raises(ResourceCreateError, match="Job cp-job-k8s-fail-chronos-job-0-.* FAILED: BackoffLimit"):
            Deployer(request, store, kubernetes).create_all()
    finally:
        stop.set()
        controller.join(5)
    assert store.get("job-k8s-fail").status == "CREATE_FAILED"
    assert not [j for j in api.objects("jobs", NAMESPACE)
                if j["metadata"]["labels"].get("cloud-paas-node") == "chronos_job"
                and j["metadata"]["labels"].get("cloud-paas-deployment") == "job-k8s-fail"]  # cleaned up
    Deployer(request, store, kubernetes).delete_all()


# ---------------------------------------------------------------------- what cannot be honoured
INDIGO_APP = ("tosca.nodes.indigo.Container.Application.Docker.Chronos",
              "tosca.nodes.indigo.Container.Application.Docker", "tosca.nodes.Container.Application.Docker",
              "tosca.nodes.Container.Application", "tosca.nodes.Root")


@pytest.mark.parametrize("backend_name", ["docker", "kubernetes"])
def test_mesos_only_fields_are_warnings_naming_node_and_field(backend_name: str, request: pytest.FixtureRequest,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    backend = request.getfixturevalue(backend_name)
    spec = ResourceSpec("w", "nightly", 0, INDIGO_APP[0], INDIGO_APP,
                        properties={"command": "run", "constraints": [["hostname", "UNIQUE"]],
                                    "schedule": "R/2026-01-01T00:00:00Z/PT24H"},
                        artifacts={"image": {"file": "busybox:stable",
                                             "type": "tosca.artifacts.Deployment.Image.Container.Docker"}})
    with caplog.at_level(logging.WARNING, logger="airflow_cloud_paas.backends.containers"):
        returned = backend.check(spec)
    text = caplog.text
    assert "node 'nightly' field 'constraints[0]'" in text and "['hostname', 'UNIQUE'] is not honoured" in text
    assert f"{backend_name}: node 'nightly' field 'schedule'" in text
    assert set(returned) == {line for line in returned if line in text} and len(returned) >= 2  # what validate lists


def test_a_host_path_volume_is_a_typed_error(docker: DockerBackend) -> None:
    runtime = ResourceSpec("v", "docker_runtime", 0, "tosca.nodes.indigo.Container.Runtime.Docker",
                           ("tosca.nodes.indigo.Container.Runtime.Docker", "tosca.nodes.Root"),
                           capabilities={"host": {"volumes": ["/etc:/host-etc:ro"]}})
    with pytest.raises(UnsupportedNodeError, match=r"node 'docker_runtime'.*volumes\[0\].*binds a path of the host"):
        docker.check(runtime)
