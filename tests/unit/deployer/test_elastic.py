"""The elastic scaler on a real store and real local processes; the service is a probe reading a dict.

``DictProbe`` stands in for the service's queue (a Spark master or an HTCondor schedd): it is the
narrowest boundary, the one the real probes read over HTTP or the bindings.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from unit.backends.local_drivers import SleeperDriver

from airflow_cloud_paas.backends.local import LocalBackend
from airflow_cloud_paas.deployer import Deployer
from airflow_cloud_paas.exceptions import DeploymentBusyError, ToscaInputError
from airflow_cloud_paas.request import DeploymentRequest
from airflow_cloud_paas.scaling.elastic import SCALE_EVENT, ElasticScaler, elastic_targets
from airflow_cloud_paas.scaling.policy import QueuedJob, WorkerState, policy_from_name
from airflow_cloud_paas.scaling.probe import ClusterProbe, Observation, WorkerView
from airflow_cloud_paas.store import DeploymentStore
from airflow_cloud_paas.tosca import load_topology

TEMPLATE = Path(__file__).with_name("data_flaky.yaml")



class DictProbe(ClusterProbe):
    """The service's view, set by the test: queued cpus and, per instance index, used cores."""

    service = "test"

    def __init__(self) -> None:
        self.queued: list[int] = []
        self.used: dict[int, int] = {}
        self.busy_after_drain: set[int] = set()
        self.drained: list[int] = []

    def observe(self, workers, now):
        views = {r.index: WorkerView(WorkerState.BUSY if self.used.get(r.index) else WorkerState.IDLE, 2,
                                     self.used.get(r.index, 0)) for r in workers}
        return Observation(tuple(QueuedJob(c, now) for c in self.queued), views)

    def drain(self, worker):
        self.drained.append(worker.index)
        if worker.index in self.busy_after_drain:
            self.used[worker.index] = 1


@pytest.fixture
def env(tmp_path):
    store = DeploymentStore(f"sqlite:///{tmp_path}/store.db")
    backend = LocalBackend(tmp_path / "work", drivers={"test.nodes.Flaky": SleeperDriver()})
    deployer = Deployer(DeploymentRequest.build(load_topology(TEMPLATE), "dep1", {"count": 2}, actor="dag/run1"),
                        store, backend)
    deployer.create_all()
    yield store, backend, deployer
    backend.delete("dep1")


def _indices(backend, node="app"):
    return sorted(r.index for r in backend.describe("dep1", node))


def test_rescale_retires_exactly_the_named_instances_and_fills_the_lowest_free_index(env):
    store, backend, deployer = env
    assert deployer.rescale("app", retire=[0], reason="idle") == {"added": [], "retired": [0], "count": 1}
    assert _indices(backend) == [1] and _indices(backend, "hosts") == [1]
    assert deployer.rescale("app", add=2, reason="queue")["added"] == [0, 2]
    assert _indices(backend) == [0, 1, 2]
    assert store.get("dep1").status == "UPDATE_COMPLETE"
    with pytest.raises(ToscaInputError, match="outside the allowed range"):
        deployer.rescale("app", add=2)  # max_instances 4
    with pytest.raises(ToscaInputError, match="cannot retire instances"):
        deployer.rescale("app", retire=[7])


def test_a_second_concurrent_update_is_refused(env):
    store, backend, deployer = env
    store.begin("dep1", "UPDATE", reason="someone else's scale", actor="other/run")
    with pytest.raises(DeploymentBusyError):
        deployer.rescale("app", add=1)
    assert _indices(backend) == [0, 1]


def test_rounds_add_for_the_queue_retire_idle_workers_and_keep_state_in_the_history(env):
    store, backend, deployer = env
    probe, now = DictProbe(), [1000.0]

    def scaler():  # a new scaler per round, as each scheduled run is a new process
        policy = policy_from_name("clues", min_nodes=1, max_nodes=4, idle_time_s=60, node_cores=2)
        return ElasticScaler(deployer, "app", probe, policy, clock=lambda: now[0])

    probe.used = {0: 2, 1: 2}
    probe.queued = [2, 2]
    decision = scaler().run_once()
    assert decision.add == 2 and _indices(backend) == [0, 1, 2, 3]

    probe.queued, probe.used = [], {0: 2}
    scaler().run_once()  # 1, 2, 3 idle from now on: not long enough yet
    assert _indices(backend) == [0, 1, 2, 3]
    now[0] += 61
    probe.busy_after_drain = {2}  # picks up work while being drained: must survive
    scaler().run_once()
    assert _indices(backend) == [0, 2]
    assert sorted(probe.drained) == [1, 2, 3]
    events = [e for e in store.events("dep1") if e.kind == SCALE_EVENT]
    assert len(events) == 3
    last = events[-1].data
    assert last["applied"]["retired"] == [1, 3]
    assert any("picked up work while draining, kept" in r for r in last["reasons"])
    assert set(last["state"]["idle_since"]) >= {"app-1", "app-3"}
    assert events[0].data["decision"]["add"] == 2 and "queued" in " ".join(events[0].data["reasons"])


def test_a_booting_worker_counts_with_the_cores_a_new_worker_has(env):
    """A worker the service does not know yet (booting) offers the policy's node_cores when its host reports none:
    counted as 1 core, it could not take the queued 2-core job and CLUES added another worker for it."""
    store, backend, deployer = env

    class Booting(DictProbe):
        def observe(self, workers, now):
            seen = super().observe(workers, now)
            return Observation(seen.queued, {i: v for i, v in seen.workers.items() if i != 1})  # 1 boots

    probe = Booting()
    probe.used, probe.queued = {0: 2}, [2]
    policy = policy_from_name("clues", min_nodes=1, max_nodes=4, idle_time_s=60, node_cores=2)
    scaler = ElasticScaler(deployer, "app", probe, policy)
    snapshot = scaler.snapshot({})[0]
    assert [(w.name, w.state, w.cores) for w in snapshot.workers] == [
        ("app-0", WorkerState.BUSY, 2), ("app-1", WorkerState.BOOTING, 2)]
    assert scaler.run_once().add == 0  # the booting worker will take the queued job
    assert _indices(backend) == [0, 1]


def test_busy_workers_are_never_retired(env):
    store, backend, deployer = env
    probe = DictProbe()
    probe.used = {0: 1, 1: 2}
    policy = policy_from_name("clues", min_nodes=0, idle_time_s=0, node_cores=2)
    assert not ElasticScaler(deployer, "app", probe, policy).run_once().retire
    assert _indices(backend) == [0, 1]


def test_targets_come_from_elastic_scaling_policies(tmp_path):
    from airflow_cloud_paas import packaged_template

    store = DeploymentStore(f"sqlite:///{tmp_path}/store.db")
    text = Path(packaged_template("spark_elastic_cluster.yaml")).read_text()
    plain = Path(packaged_template("spark_cluster.yaml")).read_text()
    store.create_deployment("up", template=text, template_hash="h1", inputs={"scaling_policy": "clues"},
                            owner="me", backend="local")
    store.create_deployment("plain", template=plain, template_hash="h2", inputs={}, owner="me", backend="local")
    store.create_deployment("new", template=text, template_hash="h3", inputs={}, owner="me", backend="local")
    for dep in ("up", "plain"):
        store.begin(dep, "CREATE", actor="a")
        store.finish(dep, "CREATE", ok=True)
    (target,) = elastic_targets(store)
    assert (target.deployment_id, target.node_name, target.service, target.policy) == (
        "up", "spark_worker", "spark", "clues")
    assert target.limits == {"min_nodes": 1, "max_nodes": 4, "idle_time_s": 600.0, "node_cores": 1}
