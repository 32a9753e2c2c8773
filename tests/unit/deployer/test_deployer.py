"""The deployment engine on a real store and the real local backend: retries, crashes, scaling, secrets."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from airflow_cloud_paas.backends.local import Launch, LocalBackend, LocalDriver, register_local_driver
from airflow_cloud_paas.deployer import Deployer, sweep_delete
from airflow_cloud_paas.exceptions import (
    DeploymentBusyError,
    InvalidStatusTransitionError,
    ResourceCreateError,
    ToscaInputError,
)
from airflow_cloud_paas.request import DeploymentRequest
from airflow_cloud_paas.store import DeploymentStore
from airflow_cloud_paas.tosca import load_topology

TEMPLATE = Path(__file__).with_name("data_flaky.yaml")
FLAG = {"fail": False}


class FlakyDriver(LocalDriver):
    """A real sleeping process; raises while FLAG['fail'] is set (a transient provider error)."""

    def command(self, spec, work_dir, ports):
        if FLAG["fail"]:
            raise RuntimeError("transient provider error")
        return Launch(argv=(sys.executable, "-c", "import time; time.sleep(600)"))

    def ready(self, record):
        return True


register_local_driver("test.nodes.Flaky", FlakyDriver())


@pytest.fixture
def env(tmp_path):
    FLAG["fail"] = False
    store = DeploymentStore(f"sqlite:///{tmp_path}/store.db")
    backend = LocalBackend(tmp_path / "work")
    topology = load_topology(TEMPLATE)
    made = []

    def deployer(actor="dag/run1", deployment_id="dep1", inputs=None):
        d = Deployer(DeploymentRequest.build(topology, deployment_id, inputs or {}, actor=actor), store, backend)
        made.append(d)
        return d

    yield store, backend, deployer
    for d in made:
        backend.delete(d.deployment_id)


def _pids(backend, deployment_id):
    return sorted(r.attributes.get("pid") for r in backend.describe(deployment_id, "app"))


def test_a_retried_node_task_completes_the_deployment(env):
    store, backend, deployer = env
    d = deployer()
    d.begin_create()
    d.deploy_node("hosts")
    FLAG["fail"] = True
    with pytest.raises(ResourceCreateError):
        d.deploy_node("app")
    assert store.get("dep1").status == "CREATE_FAILED"
    assert backend.describe("dep1", "app") == []  # the failed create left nothing behind
    FLAG["fail"] = False
    retry = deployer()  # the retried task: a new process, same run
    retry.deploy_node("app")
    pids = _pids(backend, "dep1")
    retry.deploy_node("app")  # and once more: idempotent, no second process
    assert _pids(backend, "dep1") == pids and len(pids) == 2
    outputs = retry.complete_create()
    assert store.get("dep1").status == "CREATE_COMPLETE" and outputs == {"first_host": ["127.0.0.1", "127.0.0.1"]}


def test_teardown_of_a_killed_setup_is_not_refused(env):
    store, backend, deployer = env
    d = deployer()
    d.begin_create()
    d.deploy_node("hosts")
    d.deploy_node("app")  # then the task is SIGKILLed: nothing records a failure
    assert store.get("dep1").status == "CREATE_IN_PROGRESS"
    other = deployer(actor="dag/run2")
    with pytest.raises(DeploymentBusyError):
        other.begin_delete()  # another run may not barge in
    teardown = deployer()
    teardown.begin_delete()
    teardown.delete_all()
    teardown.complete_delete()
    assert store.get("dep1").status == "DELETE_COMPLETE" and backend.describe("dep1") == []
    assert any(e.kind == "interrupted" for e in store.events("dep1"))


def test_nothing_is_deployed_for_a_deleted_deployment(env):
    store, backend, deployer = env
    d = deployer()
    d.create_all()
    d.begin_delete()
    d.delete_all()
    d.complete_delete()
    with pytest.raises(InvalidStatusTransitionError):
        deployer().deploy_node("hosts")  # a cleared task of a finished run
    assert backend.describe("dep1") == []


def test_scale_out_and_in_keeps_hosted_nodes_with_their_hosts(env):
    store, backend, deployer = env
    deployer().create_all()
    scaler = deployer(actor="scale/run1")
    scaler.scale("app", 4)  # a hosted node scales its host group
    assert [r.index for r in backend.describe("dep1", "hosts")] == [0, 1, 2, 3]
    assert len(_pids(backend, "dep1")) == 4
    deployer(actor="scale/run2").scale("hosts", 1)
    assert [r.index for r in backend.describe("dep1", "app")] == [0]
    assert store.get("dep1").status == "UPDATE_COMPLETE"
    assert sorted((r.node_name, r.index) for r in store.get("dep1").resources) == [("app", 0), ("hosts", 0)]
    with pytest.raises(ToscaInputError, match="outside the allowed range"):
        deployer(actor="scale/run3").scale("hosts", 5)  # max_instances 4, refused before touching anything
    assert len(backend.describe("dep1", "hosts")) == 1


def test_a_scale_interrupted_mid_way_is_completed_by_its_retry(env):
    store, backend, deployer = env
    deployer().create_all()
    FLAG["fail"] = True
    with pytest.raises(ResourceCreateError):
        deployer(actor="scale/run1").scale("hosts", 3)
    assert store.get("dep1").status == "UPDATE_FAILED"
    FLAG["fail"] = False
    deployer(actor="scale/run1").scale("hosts", 3)
    assert len(_pids(backend, "dep1")) == 3 and store.get("dep1").status == "UPDATE_COMPLETE"


def test_secret_inputs_are_never_stored(env):
    store, backend, deployer = env
    deployer(inputs={"admin_password": "hunter2", "count": 1}).create_all()
    record = store.get("dep1")
    assert record.inputs["admin_password"] == "***"
    assert "hunter2" not in str(record.to_dict())


def test_sweep_delete_needs_no_template(env):
    store, backend, deployer = env
    deployer().create_all()
    assert len(backend.describe("dep1")) == 4
    sweep_delete(store, backend, "dep1", actor="cli/x")
    assert backend.describe("dep1") == [] and store.get("dep1").status == "DELETE_COMPLETE"
    assert store.get("dep1").resources == ()


def test_parallel_creates_record_every_instance(tmp_path):
    class ParallelLocal(LocalBackend):  # a backend that declares thread-safe creation
        max_parallel_creates = 4

    store = DeploymentStore(f"sqlite:///{tmp_path}/store.db")
    backend = ParallelLocal(tmp_path / "work")
    d = Deployer(DeploymentRequest.build(load_topology(TEMPLATE), "par", {"count": 4}, actor="dag/run1"), store,
                 backend)
    try:
        d.begin_create()
        d.deploy_node("hosts")
        made = d.deploy_node("app")
        assert sorted(r.index for r in made) == [0, 1, 2, 3]
        assert sorted(r.index for r in store.get("par").resources if r.node_name == "app") == [0, 1, 2, 3]
        assert len(set(_pids(backend, "par"))) == 4
    finally:
        backend.delete("par")


def test_a_deployer_without_an_actor_holds_its_own_steps(env):
    store, backend, deployer = env
    d = deployer(actor=None)  # a script or a notebook: nobody to name
    d.begin_create()
    d.deploy_node("hosts")  # its own next step is not "busy"
    with pytest.raises(DeploymentBusyError):
        deployer(actor=None).deploy_node("app")  # another anonymous caller still is
    d.deploy_node("app")
    d.complete_create()
    record = store.get("dep1")
    assert record.status == "CREATE_COMPLETE" and len(_pids(backend, "dep1")) == 2
    assert (record.dag_id, record.run_id) == (None, None)  # the stand-in token names no DAG run
    scaler = deployer(actor=None)
    scaler.scale("hosts", 1)
    assert store.get("dep1").status == "UPDATE_COMPLETE" and len(_pids(backend, "dep1")) == 1



def test_scaling_to_an_absurd_count_is_refused_before_anything_is_made(tmp_path):
    from airflow_cloud_paas.tosca.resolve import MAX_INSTANCES

    template = tmp_path / "huge.yaml"  # a template that allows a billion hosts
    template.write_text(TEMPLATE.read_text().replace("max_instances: 4", "max_instances: 1000000000"))
    store = DeploymentStore(f"sqlite:///{tmp_path}/store.db")
    backend = LocalBackend(tmp_path / "work")
    request = DeploymentRequest.build(load_topology(template), "huge", {"count": 1}, actor="dag/run1")
    try:
        Deployer(request, store, backend).create_all()
        with pytest.raises(ToscaInputError, match=rf"outside the allowed range \[0, {MAX_INSTANCES}\]"):
            Deployer(request, store, backend).scale("hosts", 10**9)
        assert store.get("huge").status == "CREATE_COMPLETE" and len(_pids(backend, "huge")) == 1
    finally:
        backend.delete("huge")
