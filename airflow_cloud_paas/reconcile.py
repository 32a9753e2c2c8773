"""Recover deployments whose worker died: take the stuck action over, compare store and backend, finish or undo.

An action in progress holds a lease (:mod:`airflow_cloud_paas.store.lease`). When its holder is gone (a
killed task, a lost worker), :func:`reconcile` takes the action over and makes the record true again:

- an interrupted CREATE is undone: what the backend has, found by the deployment's tags, is deleted, and
  the record ends ``CREATE_FAILED`` with no resource rows;
- an interrupted UPDATE (a scale) ends ``UPDATE_FAILED`` with the store's rows made equal to what the
  backend reports (instances it made are recorded, instances it lost are forgotten);
- an interrupted DELETE is finished: ``DELETE_COMPLETE`` with nothing left and no rows;
- a ``DELETE_COMPLETE`` record that still lists resources (a delete cut short at the terminate call by an
  older release) has them deleted and forgotten.

Each deployment's finding is recorded as a ``reconciled`` event. :func:`mask_stored_outputs` masks the outputs
older releases stored in clear though built from a secret. The periodic DAG ``cloud_paas_reconcile`` runs both;
so can anyone with the store and the backends.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from airflow_cloud_paas.backends.base import Backend, ResourceState
from airflow_cloud_paas.deployer import delete_and_forget, mark_failed
from airflow_cloud_paas.exceptions import DeploymentBusyError
from airflow_cloud_paas.store import DeploymentRecord, DeploymentStatus, DeploymentStore
from airflow_cloud_paas.store.lease import Heartbeat, lease_expired

log = logging.getLogger(__name__)

#: the actor the reconcile job acts as (a DAG passes ``<dag_id>/<run_id>``)
RECONCILE_ACTOR = "reconcile"


@dataclass(frozen=True)
class Finding:
    """What reconciling one deployment found and did.

    :param deployment_id: the deployment
    :param before: its status when found
    :param after: its status when done (unchanged if it could not be taken over)
    :param why: why it needed reconciling (whose lease expired and how)
    :param untracked: ``node[index]`` the backend has and the store did not record
    :param lost: ``node[index]`` the store recorded and the backend no longer has
    :param deleted: ``node[index]`` deleted on the backend
    :param error: what went wrong, if the reconciliation itself failed
    """

    deployment_id: str
    before: str
    after: str
    why: str
    untracked: tuple[str, ...] = ()
    lost: tuple[str, ...] = ()
    deleted: tuple[str, ...] = ()
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serializable form."""
        return {"deployment_id": self.deployment_id, "before": self.before, "after": self.after, "why": self.why,
                "untracked": list(self.untracked), "lost": list(self.lost), "deleted": list(self.deleted),
                "error": self.error}


@dataclass
class _Diff:
    untracked: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)


def _key(node_name: str, index: int) -> str:
    return f"{node_name}[{index}]"


def reconcile(
    store: DeploymentStore,
    backend_for: Callable[[DeploymentRecord], Backend],
    *,
    actor: str = RECONCILE_ACTOR,
    deployment_ids: set[str] | None = None,
    holder_active: Callable[[str], bool] | None = None,
    run_ended: Callable[[str], bool] | None = None,
) -> list[Finding]:
    """Reconcile every stale deployment (see :meth:`DeploymentStore.stale`); return what was found and done.

    A deployment another reconciler took first is skipped. An error on one deployment is recorded in its
    finding and in its history; the others go on.

    :param store: the deployment store
    :param backend_for: the backend a record runs on (by its ``backend`` reference)
    :param actor: who acts (kept in the history)
    :param deployment_ids: only these deployments
    :param holder_active: whether the actor holding an action (a DAG run, ``dag_id/run_id``) is still going: its
        own retries and teardown come first, so a dead worker of a run that will retry is left to that run
    :param run_ended: whether the actor holding an action is a DAG run known to have ended: an action it holds
        between two of its tasks (no process on it, its lease kept for the next task) then waits for a task that
        will never come, and is taken over at once rather than when that lease runs out
    """
    findings = []
    candidates = store.stale()
    for record in store.between_steps() if run_ended is not None else ():
        if record.actor and run_ended(record.actor):
            log.info("Deployment %s: %s held by %s between two tasks, but that run has ended: taken over",
                     record.id, record.status.value, record.actor)
            store.add_event(record.id, "run_ended", f"{record.status.value} was held by {record.actor} for its next "
                            "task, but that run has ended: its lease ends now", {"actor": record.actor})
            store.renew(record.id, record.actor, -1, holder=None)  # no next task will come
            candidates.append(store.get(record.id))
    for record in candidates:
        if deployment_ids is not None and record.id not in deployment_ids:
            continue
        if record.status.in_progress and record.actor and holder_active is not None and holder_active(record.actor):
            log.info("Deployment %s: %s by %s, whose run is still going (its retries come first): left to it",
                     record.id, record.status.value, record.actor)
            continue
        try:
            finding = reconcile_one(store, record, backend_for(record), actor=actor)
        except DeploymentBusyError:
            log.info("Deployment %s was taken over by someone else: skipped", record.id)
            continue
        except Exception as err:  # one broken deployment must not stop the others
            log.exception("Could not reconcile deployment %s", record.id)
            finding = Finding(record.id, record.status.value, store.get(record.id).status.value,
                              "reconciliation failed", error=f"{type(err).__name__}: {err}")
            store.add_event(record.id, "reconciled", f"reconciliation failed: {finding.error}", finding.to_dict())
        findings.append(finding)
    return findings


def reconcile_one(store: DeploymentStore, record: DeploymentRecord, backend: Backend, *,
                  actor: str = RECONCILE_ACTOR) -> Finding:
    """Take over one stale deployment and make its record match its backend (see the module's description).

    :param store: the deployment store
    :param record: the deployment as :meth:`DeploymentStore.stale` returned it
    :param backend: the backend it runs on
    :param actor: who acts
    """
    before = record.status
    if before is DeploymentStatus.DELETE_COMPLETE:
        why = f"DELETE_COMPLETE with {len(record.resources)} resource row(s) left"
        deleted = delete_and_forget(store, backend, record.id, forget_missing=True)
        return _report(store, record.id, before, why, _Diff(), deleted)
    why = lease_expired(record.lease_expires_at, record.lease_holder, record.updated_at, gap=store.step_gap_s)
    if why is None:
        raise DeploymentBusyError(f"deployment '{record.id}': its action is held again")
    why = f"{before.value} by {record.actor}: {why}"
    action = before.action
    # begin() records the interrupted action as failed (its lease expired), then starts ours from there
    store.begin(record.id, action, reason=f"reconcile: {why}", actor=actor)
    with Heartbeat(lambda: store.renew(record.id, actor), store.lease_s / 4):
        try:
            diff = _compare(store, backend, record.id)
            if action.value == "UPDATE":
                _adopt(store, backend, record.id)
                store.finish(record.id, action, ok=False,
                             reason=f"interrupted ({why}); the store now lists what the backend has")
                return _report(store, record.id, before, why, diff, [])
            deleted = delete_and_forget(store, backend, record.id, forget_missing=True)
            left = [r for r in backend.describe(record.id) if r.state != ResourceState.DELETED]
            if left:
                names = ", ".join(_key(r.node_name, r.index) for r in left)
                store.finish(record.id, action, ok=False, reason=f"reconcile: resources still present: {names}")
            elif action.value == "DELETE":
                store.finish(record.id, action, ok=True, reason=f"finished by reconcile ({why})")
            else:  # CREATE: undone
                store.finish(record.id, action, ok=False,
                             reason=f"interrupted ({why}); undone: {len(deleted)} resource(s) deleted")
            return _report(store, record.id, before, why, diff, deleted)
        except BaseException as err:
            mark_failed(store, record.id, action.value, f"reconcile: {err}")
            raise


def mask_stored_outputs(store: DeploymentStore, limit: int = 500) -> list[str]:
    """Mask the outputs that older releases stored in clear though built from a secret; return the ids changed.

    Which outputs are secret is worked out from each record's template and inputs, as a deployment does now
    (:attr:`DeploymentRequest.secret_outputs`). Only records not checked yet are read (at most ``limit``, oldest
    first), and each is marked checked, so a periodic run costs nothing once the store is clean; a record whose
    template no longer loads stays unchecked (logged at each run: its outputs may hold a secret).

    :param store: the deployment store
    :param limit: check at most this many records
    """
    from airflow_cloud_paas.exceptions import ToscaError
    from airflow_cloud_paas.secrets import MASK, connection_refs, mask_outputs
    from airflow_cloud_paas.tosca.flow import secret_outputs
    from airflow_cloud_paas.tosca_text import load_topology_text

    topologies: dict[str, Any] = {}
    changed = []
    for record in store.outputs_unchecked(limit):
        if not record.outputs or all(v == MASK for v in record.outputs.values()):
            store.mark_outputs_checked(record.id)
            continue
        if record.template_hash not in topologies:
            try:
                topologies[record.template_hash] = load_topology_text(record.template)
            except ToscaError as err:
                log.warning("Deployment %s: its template no longer loads (%s); outputs not checked", record.id, err)
                topologies[record.template_hash] = None
        topology = topologies[record.template_hash]
        if topology is None:
            continue
        secret_inputs = {n for n, d in topology.inputs.items() if d.is_secret}
        secret_inputs |= set(connection_refs(record.inputs)) | {k for k, v in record.inputs.items() if v == MASK}
        masked = mask_outputs(record.outputs, secret_outputs(topology, secret_inputs))
        if masked == record.outputs:
            store.mark_outputs_checked(record.id)
            continue
        store.set_outputs(record.id, masked)
        hidden = sorted(k for k in masked if masked[k] != record.outputs[k])
        store.add_event(record.id, "outputs_masked", f"outputs built from a secret masked: {', '.join(hidden)}",
                        {"names": hidden})
        changed.append(record.id)
    return changed


def _compare(store: DeploymentStore, backend: Backend, deployment_id: str) -> _Diff:
    live = {_key(r.node_name, r.index) for r in backend.describe(deployment_id) if r.state != ResourceState.DELETED}
    rows = {_key(r.node_name, r.index) for r in store.resources(deployment_id)}
    return _Diff(untracked=sorted(live - rows), lost=sorted(rows - live))


def _adopt(store: DeploymentStore, backend: Backend, deployment_id: str) -> None:
    """Make the store's resource rows those the backend reports."""
    live = [r for r in backend.describe(deployment_id) if r.state != ResourceState.DELETED]
    keys = {(r.node_name, r.index) for r in live}
    for r in live:
        store.upsert_resource(deployment_id, r.node_name, r.index, resource_id=r.resource_id, state=r.state.value,
                              attributes=dict(r.attributes))
    for row in store.resources(deployment_id):
        if (row.node_name, row.index) not in keys:
            store.remove_resource(deployment_id, row.node_name, row.index)


def _report(store: DeploymentStore, deployment_id: str, before: DeploymentStatus, why: str, diff: _Diff,
            deleted: list[Any]) -> Finding:
    after = store.get(deployment_id).status
    finding = Finding(deployment_id, before.value, after.value, why, tuple(diff.untracked), tuple(diff.lost),
                      tuple(sorted(_key(r.node_name, r.index) for r in deleted)))
    parts = [f"{before.value} -> {after.value}: {why}"]
    if diff.untracked:
        parts.append(f"untracked on the backend: {', '.join(diff.untracked)}")
    if diff.lost:
        parts.append(f"recorded but gone: {', '.join(diff.lost)}")
    if deleted:
        parts.append(f"deleted: {', '.join(finding.deleted)}")
    store.add_event(deployment_id, "reconciled", "; ".join(parts), finding.to_dict())
    log.warning("Reconciled deployment %s: %s", deployment_id, "; ".join(parts))
    return finding


__all__ = ["RECONCILE_ACTOR", "Finding", "mask_stored_outputs", "reconcile", "reconcile_one"]
