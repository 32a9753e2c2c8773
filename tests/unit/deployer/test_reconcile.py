"""A worker killed at each step of create, scale and delete, then recovered: nothing leaked, nothing stuck.

The local backend runs real processes; ``killed_step.py`` runs one action in a child process that SIGKILLs
itself at its Nth backend call (before it or after it returned). ``reconcile`` then takes over, since the
lease's process is dead, and must leave the record true to the backend.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from airflow_cloud_paas.backends.base import ResourceState
from airflow_cloud_paas.backends.local import Launch, LocalBackend, LocalDriver
from airflow_cloud_paas.deployer import Deployer
from airflow_cloud_paas.exceptions import DeploymentBusyError
from airflow_cloud_paas.reconcile import reconcile
from airflow_cloud_paas.request import DeploymentRequest
from airflow_cloud_paas.store import DeploymentStatus, DeploymentStore
from airflow_cloud_paas.store.lease import holder_dead
from airflow_cloud_paas.tosca import load_topology

CHILD = Path(__file__).with_name("killed_step.py")
TEMPLATE = Path(__file__).with_name("data_flaky.yaml")
DEPLOYMENT = "dep-killed"
#: mutating backend calls of each action (see killed_step.py): creates 2 hosts + 2 apps; scale-out 2 -> 3
#: re-creates (idempotently) indices 0..2 of both members; scale-in 3 -> 1 deletes 2 and 1, re-creates 0;
#: delete: app, hosts, then the tag sweep
CALLS = {"create": 4, "scale-out": 6, "scale-in": 6, "delete": 3}
CASES = [(action, n, "after") for action, calls in CALLS.items() for n in range(1, calls + 1)]
CASES += [(action, 1, "before") for action in CALLS]


class Sleeper(LocalDriver):
    def command(self, spec, work_dir, ports):
        return Launch(argv=(sys.executable, "-c", "import time; time.sleep(600)"))

    def ready(self, record):
        return True



@pytest.fixture
def env(tmp_path):
    url = f"sqlite:///{tmp_path}/store.db"
    store, backend = DeploymentStore(url), LocalBackend(tmp_path / "work", drivers={"test.nodes.Flaky": Sleeper()})
    yield url, store, backend
    backend.delete(DEPLOYMENT)


def _live(backend: LocalBackend) -> set[str]:
    return {f"{r.node_name}[{r.index}]" for r in backend.describe(DEPLOYMENT) if r.state != ResourceState.DELETED}


def _pids(backend: LocalBackend) -> set[int]:
    return {r.attributes["pid"] for r in backend.describe(DEPLOYMENT) if r.attributes.get("pid")}


def _run_killed(url: str, backend: LocalBackend, action: str, kill_at: int, when: str) -> int:
    done = subprocess.run([sys.executable, str(CHILD), url, str(backend.work_root), action, str(kill_at), when],
                          capture_output=True, text=True, timeout=300)
    return done.returncode


@pytest.mark.parametrize(("action", "kill_at", "when"), CASES)
def test_a_worker_killed_at_each_step_is_recovered(env, action, kill_at, when):
    url, store, backend = env
    if action != "create":  # a deployment to scale or delete, made by an earlier run
        setup = Deployer(DeploymentRequest.build(load_topology(TEMPLATE), DEPLOYMENT,
                                                 {"count": 2 if action == "scale-out" else 3}, actor="run-setup"),
                         store, backend)
        setup.create_all()
    pids_before = _pids(backend)

    assert _run_killed(url, backend, action, kill_at, when) == -9  # SIGKILLed where it was told
    stuck = store.get(DEPLOYMENT)
    # what a dead worker leaves: an action nobody will finish, leased to a process that is gone
    assert stuck.status.in_progress and stuck.actor == f"run-{action}" and holder_dead(stuck.lease_holder)

    findings = reconcile(store, lambda record: backend)
    assert [f.deployment_id for f in findings] == [DEPLOYMENT]
    finding, record = findings[0], store.get(DEPLOYMENT)
    assert (finding.before, finding.after) == (stuck.status.value, record.status.value)
    assert "is dead" in finding.why and finding.error is None
    rows = {f"{r.node_name}[{r.index}]" for r in record.resources}
    assert not record.status.in_progress and rows == _live(backend)  # the store tells the truth
    if action == "create":  # undone: nothing left running
        assert record.status is DeploymentStatus.CREATE_FAILED and _live(backend) == set()
        assert "undone" in record.status_reason
    elif action == "delete":  # finished
        assert record.status is DeploymentStatus.DELETE_COMPLETE and _live(backend) == set()
    else:  # the interrupted scale: failed, the store lists exactly what runs
        assert record.status is DeploymentStatus.UPDATE_FAILED and _live(backend)
    # no process left behind that no record accounts for
    leaked = {p for p in pids_before | _pids(backend) if psutil.pid_exists(p)} - _pids(backend)
    assert not {p for p in leaked if psutil.Process(p).status() != psutil.STATUS_ZOMBIE}
    assert any(e.kind == "reconciled" for e in record.events)
    assert any(e.kind == "lease_expired" for e in record.events)
    assert reconcile(store, lambda record: backend) == []  # done once: nothing is stale any more


def test_a_live_holder_is_never_taken_over(env):
    url, store, backend = env
    d = Deployer(DeploymentRequest.build(load_topology(TEMPLATE), DEPLOYMENT, {"count": 1}, actor="run-1"),
                 store, backend)
    d.begin_create()  # the step ended: the run keeps the action for its next task
    assert reconcile(store, lambda record: backend) == []
    with pytest.raises(DeploymentBusyError):
        Deployer(DeploymentRequest.build(load_topology(TEMPLATE), DEPLOYMENT, {"count": 1}, actor="run-2"),
                 store, backend).begin_create()
    d.deploy_node("hosts")
    d.deploy_node("app")
    assert d.complete_create() and store.get(DEPLOYMENT).status is DeploymentStatus.CREATE_COMPLETE


def test_a_delete_complete_record_with_resource_rows_is_cleaned(env):
    url, store, backend = env
    setup = Deployer(DeploymentRequest.build(load_topology(TEMPLATE), DEPLOYMENT, {"count": 1}, actor="run-1"),
                     store, backend)
    setup.create_all()
    store.begin(DEPLOYMENT, "DELETE", actor="run-1")
    store.finish(DEPLOYMENT, "DELETE", ok=True)  # what an older release left: DELETE_COMPLETE, rows RUNNING
    assert store.get(DEPLOYMENT).resources and _live(backend)
    [finding] = reconcile(store, lambda record: backend)
    assert finding.after == "DELETE_COMPLETE" and set(finding.deleted) == {"app[0]", "hosts[0]"}
    assert store.get(DEPLOYMENT).resources == () and _live(backend) == set()


def test_a_dead_worker_of_a_run_that_is_still_going_is_left_to_that_runs_retry(env):
    """The run will retry its task (or tear down): reconcile must not undo what the retry would finish."""
    url, store, backend = env
    assert _run_killed(url, backend, "create", 3, "after") == -9
    going = {"run-create"}
    assert reconcile(store, lambda record: backend, holder_active=lambda actor: actor in going) == []
    assert store.get(DEPLOYMENT).status.in_progress and _live(backend)  # untouched
    retry = Deployer(DeploymentRequest.build(load_topology(TEMPLATE), DEPLOYMENT, {"count": 2}, actor="run-create"),
                     store, backend)
    retry.create_all()  # the run's retry resumes what its killed attempt made
    assert store.get(DEPLOYMENT).status is DeploymentStatus.CREATE_COMPLETE and len(_live(backend)) == 4
    going.clear()  # and once the run has ended, there is nothing stale to reconcile either
    assert reconcile(store, lambda record: backend, holder_active=lambda actor: actor in going) == []


def test_an_action_held_between_two_tasks_of_a_run_that_has_ended_is_taken_over_at_once(env):
    """The run was marked failed (or its worker lost) between two of its tasks: no next task will come."""
    url, store, backend = env
    d = Deployer(DeploymentRequest.build(load_topology(TEMPLATE), DEPLOYMENT, {"count": 1}, actor="run-1"),
                 store, backend)
    d.begin_create()
    d.deploy_node("hosts")  # the step ended: the action is kept for the run's next task (30 minutes)
    held = store.get(DEPLOYMENT)
    assert held.lease_holder is None and held.status is DeploymentStatus.CREATE_IN_PROGRESS
    ended: set[str] = set()
    assert reconcile(store, lambda record: backend, run_ended=lambda actor: actor in ended) == []  # still going
    ended.add("run-1")
    [finding] = reconcile(store, lambda record: backend, run_ended=lambda actor: actor in ended)
    assert finding.after == "CREATE_FAILED" and list(finding.deleted) == ["hosts[0]"]
    assert any(e.kind == "run_ended" for e in store.get(DEPLOYMENT).events)
    assert store.get(DEPLOYMENT).resources == () and _live(backend) == set()
