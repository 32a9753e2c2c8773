"""One request, one plan: every entry point builds a deployment the same way (regressions of the drifted paths)."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from airflow_cloud_paas.backends.base import Backend
from airflow_cloud_paas.backends.factory import backend_from_hook
from airflow_cloud_paas.backends.local import Launch, LocalBackend, LocalDriver
from airflow_cloud_paas.deployer import Deployer
from airflow_cloud_paas.exceptions import (
    DeploymentNotFoundError,
    ResourceTimeoutError,
    ToscaInputError,
    ToscaValidationError,
)
from airflow_cloud_paas.request import DeploymentRequest
from airflow_cloud_paas.store import DeploymentStore
from airflow_cloud_paas.tosca import load_topology

REPO = Path(__file__).resolve().parents[3]
HOSTS = REPO / "tests" / "dags" / "templates" / "hosts_only.yaml"
POOL = REPO / "airflow_cloud_paas" / "templates" / "htcondor_pool.yaml"
FLAKY = Path(__file__).with_name("data_flaky.yaml")


class NeverReady(LocalDriver):
    """A real process whose service never becomes ready: a VM that never boots."""

    def command(self, spec, work_dir, ports):
        return Launch(argv=(sys.executable, "-c", "import time; time.sleep(600)"))

    def ready(self, record):
        return False


def _context(dag_id: str, topology, conf: dict | None = None, run_id: str = "run1") -> dict:
    from airflow.sdk import DAG

    from airflow_cloud_paas.converter import topology_params

    dag = DAG(dag_id, schedule=None, params=topology_params(topology))
    conf = dict(conf or {})
    params = {**{k: v.value if hasattr(v, "value") else v for k, v in dag.params.items()}, **conf}
    return {"dag": dag, "run_id": run_id, "params": params, "dag_run": SimpleNamespace(conf=conf)}


def test_an_unknown_key_in_the_runs_conf_is_refused_naming_the_inputs(store_url) -> None:
    from airflow_cloud_paas.operators.deployment import CloudPaaSCreateDeploymentOperator

    topology = load_topology(HOSTS)
    op = CloudPaaSCreateDeploymentOperator(task_id="begin", template=str(HOSTS), nodes=[], deployment_id="typo-dep")
    with pytest.raises(ToscaInputError) as caught:
        op.execute(_context("typo_dag", topology, {"workers": 3}))
    message = str(caught.value)
    assert "workers" in message and "host_count" in message and "typo_dag" in message
    with pytest.raises(DeploymentNotFoundError):  # refused before anything is recorded
        DeploymentStore(store_url).get("typo-dep")


def test_node_tasks_reach_the_backend_recorded_on_the_deployment(store_url) -> None:
    from airflow_cloud_paas.hooks.store import CloudPaaSStoreHook
    from airflow_cloud_paas.operators.deployment import (
        CloudPaaSCreateDeploymentOperator,
        CloudPaaSDeleteDeploymentOperator,
        CloudPaaSDeployNodeOperator,
    )

    topology = load_topology(HOSTS)
    context = _context("recorded_backend", topology, {"host_count": 1})
    deployment = "recorded-backend-dep"
    CloudPaaSCreateDeploymentOperator(task_id="begin", template=str(HOSTS), nodes=[], deployment_id=deployment,
                                      backend="local:elsewhere").execute(context)
    assert DeploymentStore(store_url).get(deployment).backend == "local:elsewhere"
    hook = CloudPaaSStoreHook()
    try:
        for node in ("head", "workers"):  # no backend given: the tasks must not fall back to the connection's
            CloudPaaSDeployNodeOperator(task_id=f"deploy_{node}", template=str(HOSTS), node_name=node,
                                        deployment_id=deployment, deferrable=True).execute(context)
        assert {r.node_name for r in backend_from_hook(hook, "local:elsewhere").describe(deployment)} == \
            {"head", "workers"}
        assert backend_from_hook(hook, "local").describe(deployment) == []
    finally:
        CloudPaaSDeleteDeploymentOperator(task_id="delete", deployment_id=deployment).execute(context)
    assert backend_from_hook(hook, "local:elsewhere").describe(deployment) == []
    assert DeploymentStore(store_url).get(deployment).status == "DELETE_COMPLETE"


def test_validate_checks_the_endpoints_of_hosted_software() -> None:
    """A bad port range on software hosted on a VM is refused by validate, as by a create."""
    from airflow_cloud_paas.cli import main

    args = ["validate", str(POOL), "-i", "pool_password=x", "-i", "execute_secret=y"]
    assert main([*args, "-i", "low_port=9700", "-i", "high_port=9800"]) == 0
    assert main([*args, "-i", "low_port=9800", "-i", "high_port=9700"]) == 2


def test_a_bad_hosted_port_range_is_a_typed_error_before_anything_exists(tmp_path: Path) -> None:
    request = DeploymentRequest.build(load_topology(POOL), "bad-range", {
        "pool_password": "x", "execute_secret": "y", "low_port": 9800, "high_port": 9700})
    with pytest.raises(ToscaValidationError) as caught:
        request.plan  # noqa: B018
    assert caught.value.node == "condor_cm" and caught.value.field == "capabilities.daemons.port_range"


def test_every_node_is_resolved_once_per_plan(monkeypatch: pytest.MonkeyPatch) -> None:
    """Compiling resolves each node once; specs of every instance reuse it (cloud-init included)."""
    import airflow_cloud_paas.cloudinit as cloudinit
    import airflow_cloud_paas.plan as plan_module
    from airflow_cloud_paas.tosca import resolve

    calls: list[str] = []
    original = resolve.resolved_node

    def counting(topology, node_name, inputs):
        calls.append(node_name)
        return original(topology, node_name, inputs)

    for module in (plan_module, cloudinit, resolve):
        monkeypatch.setattr(module, "resolved_node", counting)
    topology = load_topology(POOL)
    request = DeploymentRequest.build(topology, "once", {"pool_password": "x", "execute_secret": "y",
                                                         "max_execute": 4, "min_execute": 0, "execute_count": 3})
    plan = request.plan
    for name in plan.order:
        for index in range(plan.node(name).count):
            assert plan.spec("once", name, index).node_name == name
    assert sorted(calls) == sorted(topology.plan), calls


def test_a_deadline_is_an_argument_and_cuts_a_boot_wait_short(tmp_path: Path) -> None:
    assert not hasattr(Backend, "wait_budget") and "deadline" not in vars(Backend)
    store = DeploymentStore(f"sqlite:///{tmp_path}/store.db")
    backend = LocalBackend(tmp_path / "work", drivers={"test.nodes.Flaky": NeverReady()}, ready_timeout=600)
    deployer = Deployer(DeploymentRequest.build(load_topology(FLAKY), "slow", {"count": 2}, actor="dag/run1"),
                        store, backend)
    started = time.monotonic()
    try:
        with pytest.raises(ResourceTimeoutError):
            deployer.create_all(deadline=time.monotonic() + 2)
        assert time.monotonic() - started < 60  # the 2 s limit, not the 600 s ready timeout
        assert store.get("slow").status == "CREATE_FAILED"
    finally:
        deployer.delete_all()
    assert backend.describe("slow") == [] and store.resources("slow") == []


def test_stored_secret_inputs_must_be_given_again_to_change_a_deployment(tmp_path: Path) -> None:
    store = DeploymentStore(f"sqlite:///{tmp_path}/store.db")
    backend = LocalBackend(tmp_path / "work", drivers={"test.nodes.Flaky": NeverReady()})
    topology = load_topology(FLAKY)
    inputs = {"admin_password": "s3cret-admin", "count": 1}
    Deployer(DeploymentRequest.build(topology, "secrets", inputs, backend="local:x"), store, backend).begin_create()
    record = store.get("secrets")
    assert "s3cret-admin" not in str(record.inputs) and record.backend == "local:x"
    with pytest.raises(ToscaInputError, match="admin_password"):
        DeploymentRequest.build(topology, "secrets", {}, record=record)
    again = DeploymentRequest.build(topology, "secrets", inputs, record=record, backend="local:other")
    assert again.inputs["admin_password"] == "s3cret-admin" and again.backend == "local:x"  # the record's backend
    relaxed = DeploymentRequest.build(topology, "secrets", {}, record=record, need_secrets=False)
    assert relaxed.inputs["admin_password"] == "***"  # withheld: a delete reads no input


def test_a_stored_template_cannot_read_another_stored_template() -> None:
    """Templates reloaded from deployment records each have a folder of their own: a sibling is out of reach."""
    import hashlib

    from airflow_cloud_paas.tosca_text import load_topology_text

    data = REPO / "tests" / "unit" / "cloudinit" / "data" / "webapp.yaml"
    other = data.read_text().replace("description:", "description: another deployment's template,", 1)
    load_topology_text(other)
    digest = hashlib.sha256(other.encode()).hexdigest()
    for sibling in (f"{digest}.yaml", f"../{digest}/template.yaml"):  # where it lay before, where it lies now
        text = data.read_text().replace("create: scripts/install_db.sh", f"create: {sibling}")
        assert sibling in text
        with pytest.raises(ToscaValidationError, match=digest):
            DeploymentRequest.build(load_topology_text(text), "reads-sibling", {}).plan  # noqa: B018


SCALED_SECRETS = """\
tosca_definitions_version: tosca_simple_yaml_1_0
imports:
  - cloud_paas: https://raw.githubusercontent.com/airflow-cloud-paas/tosca-types/main/cloud_paas_types.yaml
node_types:
  test.nodes.Head:
    derived_from: cloud_paas.nodes.Compute
    properties: {admin_credential: {type: string}}
  test.nodes.Joiner:
    derived_from: cloud_paas.nodes.Compute
    properties: {token: {type: string}}
topology_template:
  inputs:
    db_password: {type: string, required: true, metadata: {secret: true}}
    join_token: {type: string, required: true, metadata: {secret: true}}
  node_templates:
    head:
      type: test.nodes.Head
      properties:
        admin_credential: {get_input: db_password}
    workers:
      type: cloud_paas.nodes.Compute
      capabilities:
        scalable: {properties: {count: 1, max_instances: 5}}
    agent:
      type: tosca.nodes.SoftwareComponent
      properties:
        component_version: {get_property: [head, admin_credential]}
      requirements:
        - host: workers
    joiner:
      type: test.nodes.Joiner
      capabilities:
        scalable: {properties: {count: 1, max_instances: 5}}
      properties:
        token: {get_input: join_token}
"""


def test_a_scale_needs_again_only_the_secrets_its_new_instances_read(tmp_path: Path) -> None:
    template = tmp_path / "scaled.yaml"
    template.write_text(SCALED_SECRETS)
    topology = load_topology(template)
    store = DeploymentStore(f"sqlite:///{tmp_path}/store.db")
    backend = LocalBackend(tmp_path / "work", drivers={"tosca.nodes.SoftwareComponent": NeverReady()})
    inputs = {"db_password": "pw-planted-1", "join_token": "tok-planted-2"}
    Deployer(DeploymentRequest.build(topology, "scaled", inputs, backend="local"), store, backend).begin_create()
    record = store.get("scaled")
    assert "planted" not in str(record.to_dict())
    # a group that reads nothing secret is scaled with no secret given again; hosted nodes count, and so does
    # what they read through another node's property (agent -> head.admin_credential -> db_password)
    with pytest.raises(ToscaInputError, match=r"\['db_password'\].*new instances of agent"):
        DeploymentRequest.build(topology, "scaled", {}, record=record, need_secrets=["agent"])
    only_joiner = DeploymentRequest.build(topology, "scaled", {"db_password": "pw-planted-1"}, record=record,
                                          need_secrets=["workers"])
    assert only_joiner.inputs["join_token"] == "***"  # never read by what the scale makes: it stays withheld
    with pytest.raises(ToscaInputError, match=r"\['join_token'\].*conn://"):
        DeploymentRequest.build(topology, "scaled", {}, record=record, need_secrets=["joiner"])
