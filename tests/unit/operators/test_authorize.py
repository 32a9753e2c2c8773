"""Who may scale or delete a deployment through the DAGs: its owner, a listed admin, or a run the API granted.

The operators' check runs on a real store; the DAG run is given as the task context carries it (its
``triggering_user_name`` is what Airflow records for a run a user triggered).
"""

from __future__ import annotations

import uuid
from types import SimpleNamespace

import pytest

from airflow_cloud_paas.exceptions import DeploymentAccessError
from airflow_cloud_paas.operators.deployment import (
    CloudPaaSDeleteDeploymentOperator,
    CloudPaaSScaleNodeGroupOperator,
    served_slot,
)
from airflow_cloud_paas.store import GRANT_EVENT, PROMOTED_EVENT, DeploymentStore


@pytest.fixture
def deployment(tmp_path, monkeypatch) -> tuple[DeploymentStore, str]:
    store = DeploymentStore(f"sqlite:///{tmp_path}/store.db")
    deployment_id = f"dep-{uuid.uuid4().hex[:8]}"
    store.create_deployment(deployment_id, "tpl", "h", {}, "alice", "local")
    monkeypatch.setattr(CloudPaaSDeleteDeploymentOperator, "hook", SimpleNamespace(store=store))
    monkeypatch.setattr(CloudPaaSScaleNodeGroupOperator, "hook", SimpleNamespace(store=store))
    return store, deployment_id


def _context(deployment_id: str, user: str | None, run_id: str = "manual__1") -> dict:
    return {"dag_run": SimpleNamespace(triggering_user_name=user, conf={}), "run_id": run_id,
            "params": {"deployment_id": deployment_id}}


@pytest.mark.parametrize("operator", [CloudPaaSDeleteDeploymentOperator, CloudPaaSScaleNodeGroupOperator])
def test_only_the_owner_an_admin_or_a_granted_run_may_act(deployment, operator, monkeypatch) -> None:
    store, deployment_id = deployment
    task = operator(task_id="t", node_name="n", count=1) if operator is CloudPaaSScaleNodeGroupOperator \
        else operator(task_id="t")
    task._authorize(_context(deployment_id, "alice"), "delete")  # the owner
    task._authorize(_context(deployment_id, None), "delete")  # a scheduled run acts as the DAG
    with pytest.raises(DeploymentAccessError, match=rf"bob may not delete deployment '{deployment_id}'"):
        task._authorize(_context(deployment_id, "bob"), "delete")
    monkeypatch.setenv("AIRFLOW_CLOUD_PAAS_ADMINS", "root, bob")
    task._authorize(_context(deployment_id, "bob"), "delete")
    monkeypatch.delenv("AIRFLOW_CLOUD_PAAS_ADMINS")
    # the orchestrator API grants one run, after checking the caller's groups: only that run
    store.add_event(deployment_id, GRANT_EVENT, "delete by carol", {"run_id": "orchestrator__delete__x", "by": "carol"})
    task._authorize(_context(deployment_id, "carol", "orchestrator__delete__x"), "delete")
    with pytest.raises(DeploymentAccessError):
        task._authorize(_context(deployment_id, "carol", "manual__2"), "delete")
    assert store.get(deployment_id).status.value == "CREATE_IN_PROGRESS"  # nothing changed


def test_only_a_deployment_that_served_the_slot_is_the_slots_to_retire(deployment) -> None:
    """A scheduled run's deployment (no user) that served a slot may be replaced by a user's run of that slot; a
    deployment id merely found in the slot's Variable, or one that served another slot, needs the usual access."""
    store, deployment_id = deployment
    assert not served_slot(store, deployment_id, "deepaas-imgclas")
    store.add_event(deployment_id, PROMOTED_EVENT, "current of another", {"slot": "other", "run_id": "r0"})
    assert not served_slot(store, deployment_id, "deepaas-imgclas")
    store.add_event(deployment_id, PROMOTED_EVENT, "current of the slot", {"slot": "deepaas-imgclas", "run_id": "r1"})
    assert served_slot(store, deployment_id, "deepaas-imgclas")
