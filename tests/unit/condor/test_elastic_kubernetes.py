"""The elastic scaler grows and shrinks the execute containers of an HTCondor pool on the Kubernetes backend.

The pool is the packaged ``htcondor_pool_docker.yaml`` (htcondor/cm, submit and execute images), deployed
through the real Deployer, store and Kubernetes backend; each scaling round is built as
``CloudPaaSElasticScaleOperator`` builds it (deployer from the stored record, secrets read again from the
pool's connection, ``make_probe``/``probe_address``, ``policy_from_name``) and runs
:meth:`ElasticScaler.run_once`.

Two stand-ins, where nothing real can run here:

- the Kubernetes API server is kmock's emulator (``unit.backends.kubernetes_fixtures``). It runs no
  controller and no kubelet, so the test writes what they would: a Deployment's ready status and its
  running pod (:func:`_kubelet_runs`);
- the HTCondor daemons are :class:`StandInPool` at the ``htcondor2`` bindings' boundary. When an execute
  pod "runs", its startd joins the stand-in under the pod's hostname, the machine name a startd in that
  pod reports, and leaves it when its Deployment is deleted.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from unit.backends.kubernetes_fixtures import KubernetesApiEmulator
from unit.condor.standin import RUNNING, StandInPool

from airflow_cloud_paas.backends.base import TAG_DEPLOYMENT, TAG_INDEX, TAG_NODE
from airflow_cloud_paas.backends.docker import MANAGED_BY, MANAGED_BY_LABEL
from airflow_cloud_paas.backends.kubernetes import KubernetesBackend
from airflow_cloud_paas.deployer import Deployer
from airflow_cloud_paas.exceptions import DeploymentBusyError
from airflow_cloud_paas.hooks.htcondor import HTCondorHook, use_clients
from airflow_cloud_paas.request import DeploymentRequest
from airflow_cloud_paas.scaling.elastic import SCALE_EVENT, ElasticScaler, ElasticTarget, probe_address
from airflow_cloud_paas.scaling.policy import policy_from_name
from airflow_cloud_paas.scaling.probe import make_probe
from airflow_cloud_paas.services.condor.config import CondorPoolSettings, template_inputs
from airflow_cloud_paas.store import DeploymentStore
from airflow_cloud_paas.tosca import load_topology

TEMPLATE = Path(__file__).resolve().parents[3] / "airflow_cloud_paas" / "templates" / "htcondor_pool_docker.yaml"
NAMESPACE = "condor-pool"
START = 1_800_000_000.0
#: the explicit limits of the rounds (the container template has no ElasticScaling policy of its own)
LIMITS = {"min_nodes": 1, "max_nodes": 4, "idle_time_s": 300.0, "node_cores": 1}


@pytest.fixture(scope="module")
def api() -> Iterator[KubernetesApiEmulator]:
    emulator = KubernetesApiEmulator().start()
    yield emulator
    emulator.stop()


class Pool:
    """One deployed pool: its store, backend, stand-in HTCondor pool and the shared clock."""

    def __init__(self, api: KubernetesApiEmulator, tmp_path: Path, credentials, monkeypatch, deployment_id: str):
        from airflow.sdk import BaseHook

        self.api, self.deployment_id, self.credentials = api, deployment_id, credentials
        self.now = [START]
        self.conn_id = f"htcondor_{deployment_id}"  # where probe_address looks for the pool's connection
        monkeypatch.setenv(f"AIRFLOW_CONN_{self.conn_id.upper()}", json.dumps({
            "conn_type": "htcondor", "host": "cm.standin", "port": 9618, "password": credentials.pool_password,
            "extra": {"trust_domain": credentials.trust_domain, "token": credentials.token,
                      "execute_token": credentials.execute_token, "security_mode": credentials.security_mode},
        }))
        self.condor = StandInPool(trust_domain=credentials.trust_domain, pool_password=credentials.pool_password,
                                  administrators=[credentials.identity], clock=lambda: self.now[0])
        self.store = DeploymentStore(f"sqlite:///{tmp_path}/store.db")
        # no controller writes a status: "accepted by the API server" is RUNNING (the backend's documented rule)
        self.backend = KubernetesBackend(conn_id=None, config_dict=api.kubeconfig(NAMESPACE), wait_for_ready=False)
        self.get_connection = BaseHook.get_connection
        # on Kubernetes the other containers reach the collector at the central manager's Service
        settings = CondorPoolSettings(KubernetesBackend.object_name(deployment_id, "cm", 0), credentials.trust_domain,
                                      ccb=True, execute_cpus=1, execute_memory_mb=1024)
        topology = load_topology(TEMPLATE, use_cache=False)
        inputs = {**template_inputs(settings, container=True), "execute_count": 1,
                  # the secrets as the htcondor_pool DAG passes them: references to the pool's connection
                  "pool_password": f"conn://{self.conn_id}/password",
                  "execute_secret": f"conn://{self.conn_id}/extra.execute_token"}
        Deployer(DeploymentRequest.build(topology, deployment_id, inputs, actor="htcondor_pool/setup",
                                         get_connection=self.get_connection), self.store, self.backend).create_all()

    def deployer(self, actor: str, backend: KubernetesBackend | None = None) -> Deployer:
        """Return a deployer built from the stored record, as a scaling task in a new process builds it."""
        from airflow_cloud_paas.tosca_text import load_topology_text

        record = self.store.get(self.deployment_id)
        request = DeploymentRequest.build(load_topology_text(record.template), self.deployment_id, record=record,
                                          actor=actor, get_connection=self.get_connection)
        return Deployer(request, self.store, backend or self.backend)

    def scaler(self, actor: str, backend: KubernetesBackend | None = None) -> ElasticScaler:
        """Return one round's scaler, built as CloudPaaSElasticScaleOperator builds it."""
        deployer = self.deployer(actor, backend)
        target = ElasticTarget(self.deployment_id, "execute", "htcondor", "clues", LIMITS)
        address = probe_address(target, self.store.get(self.deployment_id).outputs)
        return ElasticScaler(deployer, "execute", make_probe("htcondor", address),
                             policy_from_name(target.policy, **target.limits), clock=lambda: self.now[0])

    def hook(self) -> HTCondorHook:
        """Return a hook on the pool's connection (the test's own view of the schedd)."""
        return HTCondorHook(htcondor_conn_id=self.conn_id, clients=self.condor)

    def deployments(self) -> dict[int, dict]:
        """Return the execute Deployments the API server holds, by instance index."""
        return {int(d["metadata"]["labels"][TAG_INDEX]): d for d in self.api.objects("deployments", NAMESPACE)
                if d["metadata"]["labels"].get(TAG_DEPLOYMENT) == self.deployment_id
                and d["metadata"]["labels"].get(TAG_NODE) == "execute"}

    def hostname(self, index: int) -> str:
        """Return the hostname the backend reports for an execute instance."""
        (found,) = [r for r in self.backend.describe(self.deployment_id, "execute") if r.index == index]
        return found.attributes["hostname"]

    def execute_runs(self, index: int) -> str:
        """Stand in for the controller and kubelet, then for the startd the pod starts; return its machine name."""
        _kubelet_runs(self.api, self.deployments()[index])
        machine = self.hostname(index)
        self.condor.add_execute_node(machine, cpus=1, memory_mb=1024)
        return machine

    def decisions(self) -> list[dict]:
        """Return the data of the deployment's scale_decision events, oldest first."""
        return [e.data for e in self.store.events(self.deployment_id) if e.kind == SCALE_EVENT]


def _kubelet_runs(api: KubernetesApiEmulator, deployment: dict) -> None:
    """Write what the deployment controller and the kubelet would: one ready replica, its pod running.

    The pod gets a generated name, as a ReplicaSet's pods do, and the hostname of its template.
    """
    from kubernetes import client

    name = deployment["metadata"]["name"]
    api.set_status(NAMESPACE, name, {"replicas": 1, "readyReplicas": 1, "availableReplicas": 1,
                                     "observedGeneration": 1})
    template = deployment["spec"]["template"]
    pod = {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": f"{name}-6d8f9c7b5-x2k4q", "namespace": NAMESPACE,
                     "labels": template["metadata"]["labels"]},
        "spec": template["spec"],
        "status": {"phase": "Running", "containerStatuses": [{
            "name": "main", "image": template["spec"]["containers"][0]["image"], "imageID": "", "ready": True,
            "restartCount": 0, "state": {"running": {"startedAt": "2027-01-15T08:00:00Z"}}}]},
    }
    configuration = client.Configuration()
    configuration.host = api.url
    with client.ApiClient(configuration) as http:
        client.CoreV1Api(http).create_namespaced_pod(NAMESPACE, pod)


def _garbage_collect(api: KubernetesApiEmulator, deployment_id: str) -> int:
    """Delete the pods whose Deployment is gone, as Kubernetes' garbage collector would; return how many."""
    from kubernetes import client

    alive = {d["metadata"]["name"] for d in api.objects("deployments", NAMESPACE)}
    orphans = [p["metadata"]["name"] for p in api.objects("pods", NAMESPACE)
               if (p["metadata"].get("labels") or {}).get(TAG_DEPLOYMENT) == deployment_id
               and p["metadata"]["name"].rsplit("-", 2)[0] not in alive]
    configuration = client.Configuration()
    configuration.host = api.url
    with client.ApiClient(configuration) as http:
        for name in orphans:
            client.CoreV1Api(http).delete_namespaced_pod(name, NAMESPACE)
    return len(orphans)


@pytest.fixture
def pool(api, tmp_path, credentials, monkeypatch) -> Iterator[Pool]:
    made = Pool(api, tmp_path, credentials, monkeypatch, "condor-k8s")
    try:
        with use_clients(made.condor):  # every hook built in the round (make_probe's) talks to the stand-in
            yield made
    finally:
        made.backend.delete(made.deployment_id)
        _garbage_collect(api, made.deployment_id)


def test_rounds_add_execute_deployments_for_idle_jobs_and_retire_idle_ones_down_to_min(pool: Pool) -> None:
    assert sorted(pool.deployments()) == [0]
    first = pool.execute_runs(0)
    # the machine name is the pod's hostname: the Deployment's name, not the pod's generated one
    assert first == pool.deployments()[0]["metadata"]["name"] == \
        pool.deployments()[0]["spec"]["template"]["spec"]["hostname"]
    hook = pool.hook()
    hook.submit({"executable": "/bin/sleep", "arguments": "3600", "request_cpus": "1", "+StandInRunTicks": "50"})
    pool.condor.negotiate()  # the long job takes the one execute node
    hook.submit({"executable": "/bin/sleep", "arguments": "60", "request_cpus": "1"}, count=2)
    assert pool.condor.negotiate() == 0  # no free core: two idle jobs

    # 1. the queue asks for two more execute nodes: two new Deployments, labelled, with the pool's credential
    decision = pool.scaler("cloud_paas_elastic_scaling/round1").run_once()
    assert decision.add == 2, decision
    made = pool.deployments()
    assert sorted(made) == [0, 1, 2]
    for index in (1, 2):
        meta, pod_spec = made[index]["metadata"], made[index]["spec"]["template"]["spec"]
        assert meta["labels"] == {TAG_DEPLOYMENT: "condor-k8s", TAG_NODE: "execute", TAG_INDEX: str(index),
                                  MANAGED_BY_LABEL: MANAGED_BY}
        assert meta["name"] == KubernetesBackend.object_name("condor-k8s", "execute", index) == pod_spec["hostname"]
        (container,) = pod_spec["containers"]
        assert container["image"] == "htcondor/execute:25.0-el9"
        env = {e["name"]: e["value"] for e in container["env"]}
        # read again from the pool's connection by this round, never the store's mask
        assert env["CLOUD_PAAS_EXECUTE_SECRET"] == pool.credentials.execute_token
        assert env["CONDOR_HOST"] == KubernetesBackend.object_name("condor-k8s", "cm", 0)
    (event,) = pool.decisions()
    assert event["service"] == "htcondor" and event["policy"] == "CluesPolicy"
    assert event["applied"]["added"] == [1, 2]
    assert event["snapshot"]["queued_jobs"] == 2 and event["snapshot"]["workers"] == {"execute-0": "busy"}
    assert any("queued job" in r for r in event["reasons"]), event["reasons"]
    assert pool.store.get("condor-k8s").status == "UPDATE_COMPLETE"

    # 2. while their startds have not joined, the new instances are booting: nothing more is asked for
    pool.now[0] += 30
    assert pool.scaler("cloud_paas_elastic_scaling/round2").run_once().add == 0
    assert sorted(pool.deployments()) == [0, 1, 2]
    assert pool.decisions()[-1]["snapshot"]["workers"] == {"execute-0": "busy", "execute-1": "booting",
                                                          "execute-2": "booting"}

    # their pods run and their startds join the pool under the pods' hostnames; the idle jobs start there
    machines = {index: pool.execute_runs(index) for index in (1, 2)}
    assert {r.index: r.attributes["native_state"] for r in pool.backend.describe("condor-k8s", "execute")} == {
        0: "available", 1: "available", 2: "available"}
    assert pool.condor.negotiate() == 2
    pool.condor.tick()  # the two short jobs end; the long one runs on
    assert [(int(a["JobStatus"]), a["RemoteHost"].split("@")[1]) for a in pool.condor.schedd_.query()] == [
        (RUNNING, first)]

    # 3. idle, but not for idle_time_s yet: kept
    pool.now[0] += 60
    assert pool.scaler("cloud_paas_elastic_scaling/round3").run_once().retire == ()
    assert sorted(pool.deployments()) == [0, 1, 2]

    # 4. idle for idle_time_s: drained first, then their Deployments deleted; the busy worker stays
    pool.now[0] += LIMITS["idle_time_s"] + 1
    decision = pool.scaler("cloud_paas_elastic_scaling/round4").run_once()
    assert sorted(decision.retire) == ["execute-1", "execute-2"], decision
    for machine in machines.values():  # the stand-in saw the graceful drain before the deletion
        assert pool.condor.machines[machine].draining
        assert pool.condor.machines[machine].pslot["DrainReason"] == "retired by the cloud-paas elastic scaler"
    assert not pool.condor.machines[first].draining  # the busy one was never drained
    assert sorted(pool.deployments()) == [0]
    assert [r.index for r in pool.backend.describe("condor-k8s", "execute")] == [0]
    assert pool.decisions()[-1]["applied"] == {"added": [], "retired": [1, 2], "count": 1}
    assert [int(a["JobStatus"]) for a in pool.condor.schedd_.query()] == [RUNNING]  # its job was not touched
    assert _garbage_collect(pool.api, "condor-k8s") == 2  # their pods go with them
    for machine in machines.values():  # and so do their startds' ads
        pool.condor.machines.pop(machine)

    # 5. the last job ends: the worker left is idle, but min_nodes=1 keeps it, undrained
    pool.condor.tick(50)
    assert pool.condor.schedd_.query() == []
    pool.now[0] += 10
    pool.scaler("cloud_paas_elastic_scaling/round5").run_once()
    pool.now[0] += LIMITS["idle_time_s"] + 1
    decision = pool.scaler("cloud_paas_elastic_scaling/round6").run_once()
    assert decision.retire == () and any("min_nodes=1" in r for r in decision.reasons), decision
    assert sorted(pool.deployments()) == [0] and not pool.condor.machines[first].draining
    assert len(pool.decisions()) == 6


def test_a_concurrent_second_rescale_is_refused_while_the_first_waits_for_its_pod(pool: Pool) -> None:
    pool.execute_runs(0)
    hook = pool.hook()
    hook.submit({"executable": "/bin/sleep", "arguments": "3600", "request_cpus": "1", "+StandInRunTicks": "50"},
                count=2)
    pool.condor.negotiate()
    # this round's backend waits for the new Deployment's ready replica, which only the test writes
    waiting = KubernetesBackend(conn_id=None, config_dict=pool.api.kubeconfig(NAMESPACE), poll_interval=0.02,
                                ready_timeout=30)
    outcome: dict = {}

    def first_round() -> None:
        try:
            outcome["decision"] = pool.scaler("cloud_paas_elastic_scaling/a", waiting).run_once()
        except BaseException as err:  # handed to the test thread
            outcome["error"] = err

    worker = threading.Thread(target=first_round)
    worker.start()
    try:
        deadline = time.monotonic() + 20
        while 1 not in pool.deployments():
            assert worker.is_alive() and time.monotonic() < deadline, outcome
            time.sleep(0.02)
        assert worker.is_alive()  # waiting for its pod
        with pytest.raises(DeploymentBusyError):
            pool.deployer("cloud_paas_scale_deployment/b").rescale("execute", add=1, reason="by hand")
        assert sorted(pool.deployments()) == [0, 1]  # the refused one made nothing
    finally:
        if 1 in pool.deployments():
            _kubelet_runs(pool.api, pool.deployments()[1])
        worker.join(30)
    assert not worker.is_alive() and "error" not in outcome, outcome
    assert outcome["decision"].add == 1
    assert pool.decisions()[-1]["applied"]["added"] == [1]
    assert pool.store.get("condor-k8s").status == "UPDATE_COMPLETE"


def test_a_deployment_made_without_a_pod_hostname_is_matched_by_its_pod_name(api, credentials, connection) -> None:
    """A Deployment made before the backend set the pod's hostname: inside, the hostname is the pod's name."""
    from kubernetes import client

    from airflow_cloud_paas.scaling.policy import WorkerState
    from airflow_cloud_paas.services.condor.probe import HTCondorProbe

    backend = KubernetesBackend(conn_id=None, config_dict=api.kubeconfig(NAMESPACE), wait_for_ready=False)
    labels = {TAG_DEPLOYMENT: "legacy", TAG_NODE: "execute", TAG_INDEX: "0", MANAGED_BY_LABEL: MANAGED_BY}
    deployment = {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "cp-legacy-execute-0", "namespace": NAMESPACE, "labels": labels},
        "spec": {"replicas": 1, "selector": {"matchLabels": labels}, "template": {
            "metadata": {"labels": labels},
            "spec": {"containers": [{"name": "main", "image": "htcondor/execute:25.0-el9"}]}}},
    }
    configuration = client.Configuration()
    configuration.host = api.url
    with client.ApiClient(configuration) as http:
        client.AppsV1Api(http).create_namespaced_deployment(NAMESPACE, deployment)
    try:
        (before,) = backend.describe("legacy", "execute")
        assert "hostname" not in before.attributes  # no pod yet: no name to match, the instance is booting
        _kubelet_runs(api, next(d for d in api.objects("deployments", NAMESPACE)
                                 if d["metadata"]["name"] == "cp-legacy-execute-0"))
        (resource,) = backend.describe("legacy", "execute")
        assert resource.attributes["hostname"] == "cp-legacy-execute-0-6d8f9c7b5-x2k4q"
        condor = StandInPool(trust_domain=credentials.trust_domain, pool_password=credentials.pool_password,
                             administrators=[credentials.identity], clock=lambda: START)
        condor.add_execute_node("cp-legacy-execute-0-6d8f9c7b5-x2k4q", cpus=2)
        probe = HTCondorProbe(hook=HTCondorHook(htcondor_conn_id=connection, clients=condor))
        assert probe.observe([resource], START).workers[0].state is WorkerState.IDLE
    finally:
        backend.delete("legacy")
        _garbage_collect(api, "legacy")
