"""The deployment store: deployments, their resources and their history, in their own database."""

from __future__ import annotations

import enum
import json
import logging
import os
import uuid
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.engine import URL
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from airflow_cloud_paas.exceptions import (
    DeploymentBusyError,
    DeploymentNotFoundError,
    InvalidStatusTransitionError,
)
from airflow_cloud_paas.store.engine import READ_ONLY, get_engine, mask_url, serial_lock, to_url
from airflow_cloud_paas.store.errors import DeploymentConflictError, DeploymentStoreError
from airflow_cloud_paas.store.lease import LEASE_S, STEP_GAP_S, lease_expired, this_process
from airflow_cloud_paas.store.masking import mask_secret_inputs
from airflow_cloud_paas.store.models import DeploymentRow, EventRow, ResourceRow, utcnow
from airflow_cloud_paas.store.records import DeploymentRecord, Event, ResourceRecord, ResourceUpdate
from airflow_cloud_paas.store.status import (
    Action,
    DeploymentStatus,
    as_action,
    as_status,
    check_transition,
)

log = logging.getLogger(__name__)

#: how often a change that lost a race with another process is re-evaluated before giving up
_RACE_RETRIES = 5


def _jsonable(value: Any, what: str) -> Any:
    """Return a JSON round-trip of ``value`` (tuples become lists), so records equal what is read back."""
    try:
        return json.loads(json.dumps(value))
    except (TypeError, ValueError) as err:
        raise TypeError(f"{what} must be JSON-serializable (str, numbers, bool, None, lists, dicts): {err}") from None


def _status_value(value: Any) -> str:
    return value.value if isinstance(value, enum.Enum) else str(value)


def _not_found(deployment_id: str) -> DeploymentNotFoundError:
    err = DeploymentNotFoundError(
        f"no deployment '{deployment_id}' in the deployment store; check the id "
        "(DeploymentStore.list() shows the known ones) and that the task uses the same store connection"
    )
    err.deployment_id = deployment_id
    return err


def _busy(deployment_id: str, status: DeploymentStatus, holder: str | None, action: Action) -> DeploymentBusyError:
    by = f" by '{holder}'" if holder else ""
    err = DeploymentBusyError(
        f"deployment '{deployment_id}' is {status.value}{by}: cannot start {action.value} now; wait until it "
        "finishes (it is taken over once its holder is gone: 'cloud-paas reconcile --wait'), or if that run died, "
        f"'cloud-paas delete {deployment_id} --force' (DeploymentStore.set_status('{deployment_id}', "
        f"'{status.action.value}_FAILED', reason) in Python) and retry"
    )
    err.deployment_id, err.status, err.actor = deployment_id, status, holder
    return err


def _resource(row: ResourceRow) -> ResourceRecord:
    return ResourceRecord(
        deployment_id=row.deployment_id,
        node_name=row.node_name,
        index=row.index,
        resource_id=row.resource_id,
        state=row.state,
        attributes=dict(row.attributes or {}),
        updated_at=row.updated_at,
    )


def _event(row: EventRow) -> Event:
    return Event(
        id=row.id,
        deployment_id=row.deployment_id,
        at=row.at,
        kind=row.kind,
        message=row.message,
        data=dict(row.data) if row.data is not None else None,
    )


def _deployment(
    row: DeploymentRow, resources: Iterable[ResourceRecord] = (), events: Iterable[Event] = ()
) -> DeploymentRecord:
    return DeploymentRecord(
        id=row.id,
        template=row.template,
        template_hash=row.template_hash,
        inputs=dict(row.inputs or {}),
        owner=row.owner,
        backend=row.backend,
        status=DeploymentStatus(row.status),
        status_reason=row.status_reason,
        outputs=dict(row.outputs or {}),
        dag_id=row.dag_id,
        run_id=row.run_id,
        created_at=row.created_at,
        updated_at=row.updated_at,
        resources=tuple(resources),
        events=tuple(events),
        actor=row.actor,
        version=row.version,
        lease_expires_at=row.lease_expires_at,
        lease_holder=row.lease_holder,
        user_group=row.user_group,
    )


class DeploymentStore:
    """Record deployments, their resources and their history; enforce the INDIGO status lifecycle.

    The store has its own database (never Airflow's metadata DB) and creates its tables itself.
    Secret inputs (named like a secret, see :func:`airflow_cloud_paas.secrets.is_secret_name`, plus any listed
    in ``secret_inputs``) are stored as ``"***"``: their values never reach the database.
    Every status change and every resource change adds an event to the deployment's history.
    Instances are cheap: engines are cached per URL and process.

    :param url: a SQLAlchemy URL (``postgresql+psycopg2://user:pw@host/db``, ``sqlite:////path/x.db``),
        a SQLite file path, or None for ``$AIRFLOW_HOME/cloud_paas/deployments.db``
    """

    def __init__(self, url: str | URL | os.PathLike[str] | None = None) -> None:
        self._url = to_url(url)
        try:
            self.engine = get_engine(self._url)
        except OperationalError as err:
            cause = str(err.orig or err).strip()
            if self._url.password:  # drivers may echo connection parameters
                cause = cause.replace(str(self._url.password), "***")
            # `from None`: the chained driver error would show the connection arguments again.
            raise DeploymentStoreError(
                f"cannot open the deployment store at {self.url}: {cause}; check the URL "
                "(the cloud_paas connection), that the server runs and that the database exists"
            ) from None
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._readers = sessionmaker(self.engine.execution_options(**{READ_ONLY: True}), expire_on_commit=False)
        #: seconds a working process's lease on a running action lasts without renewal
        self.lease_s = LEASE_S
        #: seconds a run's action stays held between two of its tasks
        self.step_gap_s = STEP_GAP_S

    @property
    def url(self) -> str:
        """Return the store URL with its password hidden."""
        return mask_url(self._url)

    def __repr__(self) -> str:
        return f"DeploymentStore({self.url!r})"

    @contextmanager
    def _tx(self) -> Iterator[Session]:
        with serial_lock(self.engine), self._sessions.begin() as session:
            yield session

    @contextmanager
    def _read(self) -> Iterator[Session]:
        """Open a transaction that only reads: on SQLite a snapshot that waits for no writer (see engine)."""
        with serial_lock(self.engine), self._readers.begin() as session:
            yield session

    # ---------------------------------------------------------------- deployments
    def create_deployment(
        self,
        id: str,
        template: str,
        template_hash: str,
        inputs: Mapping[str, Any] | None,
        owner: str | None,
        backend: str,
        dag_id: str | None = None,
        run_id: str | None = None,
        secret_inputs: Iterable[str] = (),
        *,
        actor: str | None = None,
        user_group: str | None = None,
    ) -> DeploymentRecord:
        """Record a new deployment in CREATE_IN_PROGRESS, or return it if it exists with the same template.

        Idempotent: the same id and template hash again returns the stored record (whatever its
        status). A different hash raises DeploymentConflictError.

        :param id: the deployment id (unique in the store)
        :param template: the TOSCA template text
        :param template_hash: the template's content hash
        :param inputs: the input values; secret ones are stored as ``"***"``
        :param owner: who owns the deployment
        :param backend: where it runs (local, aws, ...)
        :param dag_id: the DAG that makes it
        :param run_id: the DAG run that makes it
        :param secret_inputs: input names to mask besides those named like a secret
        :param actor: who runs the creation (see :meth:`begin`); None leaves it for ``begin`` to claim
        :param user_group: the group the owner shares it with (its members see and act on it)
        """
        if not id or not isinstance(id, str):
            raise ValueError(f"deployment id must be a non-empty string, got {id!r}")
        stored_inputs = _jsonable(mask_secret_inputs(inputs, secret_inputs), f"inputs of deployment '{id}'")
        for _attempt in range(_RACE_RETRIES):
            try:
                with self._tx() as s:
                    row = s.get(DeploymentRow, id)
                    if row is not None:
                        if row.template_hash != template_hash:
                            err = DeploymentConflictError(
                                f"deployment '{id}' already exists with template hash {row.template_hash}, "
                                f"not {template_hash}: choose a new deployment id, or update or delete "
                                "the existing deployment first"
                            )
                            err.deployment_id = id
                            raise err
                        return self._load(s, row)
                    now = utcnow()
                    status = Action.CREATE.in_progress
                    row = DeploymentRow(
                        id=id,
                        template=template,
                        template_hash=template_hash,
                        inputs=stored_inputs,
                        owner=owner,
                        user_group=user_group,
                        backend=backend,
                        status=status.value,
                        status_reason="deployment requested",
                        actor=actor,
                        outputs={},
                        dag_id=dag_id,
                        run_id=run_id,
                        created_at=now,
                        updated_at=now,
                        version=1,
                    )
                    s.add(row)
                    s.flush()  # the deployment row first: events reference it
                    self._log_event(
                        s,
                        id,
                        "created",
                        f"deployment recorded (backend {backend})",
                        {"owner": owner, "user_group": user_group, "backend": backend,
                         "template_hash": template_hash},
                    )
                    self._log_status(s, id, None, status, "deployment requested", actor)
                    return self._load(s, row)
            except IntegrityError:
                # Another process inserted the same id between our read and our insert: read it back.
                log.debug("deployment %s was created concurrently; re-reading it", id)
        raise DeploymentBusyError(f"deployment '{id}' keeps changing concurrently; retry later")

    def get(self, id: str) -> DeploymentRecord:
        """Return a deployment with its resources and full history.

        :param id: the deployment id
        """
        with self._read() as s:
            return self._load(s, self._row(s, id))

    def list(
        self,
        owner: str | None = None,
        status: DeploymentStatus | str | Iterable[DeploymentStatus | str] | None = None,
        limit: int = 100,
        groups: Iterable[str] | None = None,
    ) -> list[DeploymentRecord]:
        """Return deployments, newest first, with their resources but without their events (use get()).

        With both ``owner`` and ``groups``: what that user sees, their own and their groups' deployments.

        :param owner: only this owner's
        :param status: only with this status (or any of these statuses)
        :param limit: at most this many
        :param groups: only those shared with one of these groups (``user_group``)
        """
        query = select(DeploymentRow)
        visible = []
        if owner is not None:
            visible.append(DeploymentRow.owner == owner)
        if groups is not None:
            visible.append(DeploymentRow.user_group.in_(sorted(set(groups))))
        if visible:
            query = query.where(or_(*visible))
        if status is not None:
            wanted = [status] if isinstance(status, str | DeploymentStatus) else list(status)
            query = query.where(DeploymentRow.status.in_([as_status(v).value for v in wanted]))
        query = query.order_by(DeploymentRow.created_at.desc(), DeploymentRow.id).limit(int(limit))
        with self._read() as s:
            rows = s.scalars(query).all()
            by_deployment: dict[str, list[ResourceRecord]] = defaultdict(list)
            if rows:
                resources = s.scalars(
                    select(ResourceRow)
                    .where(ResourceRow.deployment_id.in_([r.id for r in rows]))
                    .order_by(ResourceRow.node_name, ResourceRow.index)
                )
                for res in resources:
                    by_deployment[res.deployment_id].append(_resource(res))
            return [_deployment(r, by_deployment.get(r.id, ())) for r in rows]

    def outputs_unchecked(self, limit: int = 500) -> list[DeploymentRecord]:
        """Return deployments, oldest first, whose outputs an older release stored without masking them.

        :param limit: at most this many (each call of :func:`~airflow_cloud_paas.reconcile.mask_stored_outputs`
            checks the next ones)
        """
        query = (select(DeploymentRow).where(DeploymentRow.outputs_checked.is_(None))
                 .order_by(DeploymentRow.created_at, DeploymentRow.id).limit(int(limit)))
        with self._read() as s:
            return [_deployment(r, ()) for r in s.scalars(query).all()]

    def mark_outputs_checked(self, id: str) -> None:
        """Record that the deployment's outputs hold nothing built from a secret, as stored.

        :param id: the deployment id
        """
        with self._tx() as s:
            self._row(s, id)
            s.execute(update(DeploymentRow).where(DeploymentRow.id == id).values(outputs_checked=True)
                      .execution_options(synchronize_session=False))

    def count(self) -> int:
        """Return how many deployments the store holds."""
        with self._read() as s:
            return s.scalar(select(func.count()).select_from(DeploymentRow)) or 0

    def delete_record(self, id: str, force: bool = False) -> None:
        """Forget a deployment, its resources and its history (the cloud resources are not touched).

        :param id: the deployment id
        :param force: also while an action is in progress
        """
        with self._tx() as s:
            row = self._row(s, id)
            status = DeploymentStatus(row.status)
            if status.in_progress and not force:
                raise _busy(id, status, row.actor, Action.DELETE)
            # Children first: SQLite only cascades with foreign keys on, which a foreign tool may not set.
            s.execute(delete(EventRow).where(EventRow.deployment_id == id))
            s.execute(delete(ResourceRow).where(ResourceRow.deployment_id == id))
            s.execute(delete(DeploymentRow).where(DeploymentRow.id == id))

    # ---------------------------------------------------------------- lifecycle
    def begin(
        self, deployment_id: str, action: Action | str, reason: str | None = None, actor: str | None = None
    ) -> DeploymentRecord:
        """Start an action: move the deployment to ``<ACTION>_IN_PROGRESS``, atomically.

        A deployment already ``<ACTION>_IN_PROGRESS`` held by the same ``actor`` (e.g. a retried task
        with the same DAG run) is a retry: nothing changes. One held by nobody (just created) is
        claimed. Any other action in progress raises DeploymentBusyError (the orchestrator's 409);
        a status the lifecycle does not allow raises InvalidStatusTransitionError. Without an actor
        a retry cannot be recognized and the second ``begin`` is refused as busy.

        :param deployment_id: the deployment
        :param action: CREATE, UPDATE or DELETE
        :param reason: why (kept as the status reason)
        :param actor: who acts, stable across task retries (e.g. ``dag_id/run_id``)
        """
        action = as_action(action)
        target = action.in_progress
        # An anonymous caller gets a unique token, so two anonymous begins can never both succeed.
        holder = actor if actor is not None else f"anonymous:{uuid.uuid4().hex}"
        for _attempt in range(_RACE_RETRIES):
            with self._tx() as s:
                row = self._row(s, deployment_id)
                current = DeploymentStatus(row.status)
                if current == target and actor is not None and row.actor == actor:
                    self._log_event(
                        s,
                        deployment_id,
                        "retry",
                        f"{target.value} resumed by {actor}",
                        {"status": target.value, "actor": actor, "reason": reason},
                    )
                    self._lease(s, deployment_id, self.lease_s, this_process())
                    return self._load(s, self._row(s, deployment_id))
                if current == target and row.actor is None:
                    pass  # recorded by create_deployment and not yet claimed by anyone: claim it
                elif current.in_progress and action is Action.DELETE and actor is not None and row.actor == actor:
                    # The same run's teardown after its own setup died without recording a failure
                    # (killed, timed out): deleting what it made must not be refused as "busy".
                    self._log_event(
                        s,
                        deployment_id,
                        "interrupted",
                        f"{current.value} by {actor} did not finish; its teardown takes over",
                        {"status": current.value, "actor": actor},
                    )
                elif current.in_progress:
                    gone = lease_expired(row.lease_expires_at, row.lease_holder, row.updated_at, gap=self.step_gap_s)
                    if gone is None:
                        raise _busy(deployment_id, current, row.actor, action)
                    # Its holder is gone: record its action as failed, then start this one as from there.
                    why = f"{current.value} by {row.actor} interrupted: {gone}"
                    if self._swap(s, row, current, current.action.failed, why, None):
                        self._log_event(s, deployment_id, "lease_expired", f"{why}; taken over by {holder}",
                                        {"status": current.value, "actor": row.actor, "by": holder})
                    continue
                else:
                    check_transition(deployment_id, current, target)
                if self._swap(s, row, current, target, reason, holder):
                    return self._load(s, self._row(s, deployment_id))
            # Lost the race against another process: look again (it will usually be busy now).
        raise DeploymentBusyError(f"deployment '{deployment_id}' keeps changing concurrently; retry later")

    def renew(self, deployment_id: str, actor: str | None, seconds: float | None = None,
              holder: str | None = "this process") -> bool:
        """Extend the lease of ``actor``'s running action; return False if it holds none any more.

        :param deployment_id: the deployment
        :param actor: who holds the action
        :param seconds: how long from now (default :attr:`lease_s`)
        :param holder: the process working on it (default this one); None between two steps of a run
        """
        holder = this_process() if holder == "this process" else holder
        with self._tx() as s:
            row = s.get(DeploymentRow, deployment_id, populate_existing=True)
            if row is None or not DeploymentStatus(row.status).in_progress or row.actor != actor:
                return False
            if holder is not None and row.lease_holder not in (None, holder):
                # the same run's next try (or a sibling task) steps in: say so if the process it follows died
                gone = lease_expired(row.lease_expires_at, row.lease_holder, row.updated_at, gap=self.step_gap_s)
                if gone is not None:
                    self._log_event(s, deployment_id, "retry", f"{row.status} resumed by {actor} in {holder}: {gone}",
                                    {"status": row.status, "actor": actor, "after": row.lease_holder})
            self._lease(s, deployment_id, self.lease_s if seconds is None else seconds, holder)
            return True

    def release(self, deployment_id: str, actor: str | None) -> bool:
        """End a step of a run whose action goes on in its next task: keep it held for :attr:`step_gap_s`.

        :param deployment_id: the deployment
        :param actor: who holds the action
        """
        return self.renew(deployment_id, actor, self.step_gap_s, holder=None)

    def between_steps(self) -> list[DeploymentRecord]:
        """Return the actions in progress that no process works on now: held for their run's next task."""
        in_progress = [st.value for st in DeploymentStatus if st.in_progress]
        now = utcnow()
        with self._read() as s:
            rows = s.scalars(select(DeploymentRow).where(DeploymentRow.status.in_(in_progress))
                             .where(DeploymentRow.lease_holder.is_(None)).where(DeploymentRow.lease_expires_at > now))
            return [self._load(s, r) for r in rows]

    def stale(self) -> list[DeploymentRecord]:
        """Return what needs reconciling: actions whose holder is gone, and deleted deployments with resources.

        The first are ``*_IN_PROGRESS`` with an expired lease; the second ``DELETE_COMPLETE`` records that still
        list resource rows.
        """
        in_progress = [st.value for st in DeploymentStatus if st.in_progress]
        with self._read() as s:
            rows = list(s.scalars(select(DeploymentRow).where(DeploymentRow.status.in_(in_progress))))
            gap = self.step_gap_s
            stuck = [r for r in rows if lease_expired(r.lease_expires_at, r.lease_holder, r.updated_at, gap=gap)]
            deleted_with_rows = s.scalars(
                select(DeploymentRow)
                .where(DeploymentRow.status == DeploymentStatus.DELETE_COMPLETE.value)
                .where(DeploymentRow.id.in_(select(ResourceRow.deployment_id).distinct()))
            )
            return [self._load(s, r) for r in [*stuck, *deleted_with_rows]]

    def finish(
        self,
        deployment_id: str,
        action: Action | str,
        ok: bool,
        reason: str | None = None,
        actor: str | None = None,
    ) -> DeploymentRecord:
        """End an action: ``<ACTION>_IN_PROGRESS`` -> ``<ACTION>_COMPLETE`` or ``<ACTION>_FAILED``.

        Finishing again with the same outcome changes nothing (a retried task).

        :param deployment_id: the deployment
        :param action: CREATE, UPDATE or DELETE
        :param ok: whether the action succeeded
        :param reason: why (the error message after a failure)
        :param actor: if given, the action must be held by this actor (else DeploymentBusyError)
        """
        action = as_action(action)
        target = action.complete if ok else action.failed
        for _attempt in range(_RACE_RETRIES):
            with self._tx() as s:
                row = self._row(s, deployment_id)
                current = DeploymentStatus(row.status)
                if current == target:
                    return self._load(s, row)
                if current != action.in_progress:
                    err = InvalidStatusTransitionError(
                        f"deployment '{deployment_id}' cannot go from {current.value} to {target.value}: "
                        f"no {action.value} is in progress; "
                        f"call begin('{deployment_id}', '{action.value}') first"
                    )
                    err.deployment_id, err.current, err.target = deployment_id, current, target
                    raise err
                if actor is not None and row.actor not in (None, actor):
                    raise _busy(deployment_id, current, row.actor, action)
                if self._swap(s, row, current, target, reason, None):
                    return self._load(s, self._row(s, deployment_id))
        raise DeploymentBusyError(f"deployment '{deployment_id}' keeps changing concurrently; retry later")

    def set_status(
        self,
        id: str,
        status: DeploymentStatus | str,
        reason: str | None = None,
        actor: str | None = None,
    ) -> DeploymentRecord:
        """Move a deployment to ``status`` if the lifecycle allows it (also to recover a dead run).

        :param id: the deployment id
        :param status: the new status
        :param reason: why
        :param actor: who acts; kept while the new status is in progress
        """
        target = as_status(status)
        for _attempt in range(_RACE_RETRIES):
            with self._tx() as s:
                row = self._row(s, id)
                current = DeploymentStatus(row.status)
                if current == target and target.in_progress and actor is not None and row.actor == actor:
                    return self._load(s, row)  # the same actor again: a retry
                check_transition(id, current, target)
                holder = actor if target.in_progress else None
                if self._swap(s, row, current, target, reason, holder):
                    return self._load(s, self._row(s, id))
        raise DeploymentBusyError(f"deployment '{id}' keeps changing concurrently; retry later")

    def set_outputs(self, id: str, outputs: Mapping[str, Any]) -> DeploymentRecord:
        """Replace the deployment's TOSCA outputs, already masked by the caller where built from a secret.

        :param id: the deployment id
        :param outputs: output name -> value (JSON-serializable)
        """
        values = _jsonable(dict(outputs or {}), f"outputs of deployment '{id}'")
        with self._tx() as s:
            self._row(s, id)
            s.execute(
                update(DeploymentRow)
                .where(DeploymentRow.id == id)
                .values(outputs=values, outputs_checked=True, updated_at=utcnow(), version=DeploymentRow.version + 1)
                .execution_options(synchronize_session=False)
            )
            self._log_event(
                s,
                id,
                "outputs",
                f"outputs set: {', '.join(sorted(values)) or '(none)'}",
                {"names": sorted(values)},
            )
            return self._load(s, self._row(s, id))

    def set_backend(self, id: str, backend: str, reason: str | None = None) -> DeploymentRecord:
        """Record which backend (provider) the deployment now runs on (provider fallback).

        :param id: the deployment id
        :param backend: the backend's name or provider label
        :param reason: why it changed
        """
        with self._tx() as s:
            row = self._row(s, id)
            previous = row.backend
            s.execute(
                update(DeploymentRow)
                .where(DeploymentRow.id == id)
                .values(backend=backend, updated_at=utcnow(), version=DeploymentRow.version + 1)
                .execution_options(synchronize_session=False)
            )
            self._log_event(
                s, id, "provider", f"backend {previous} -> {backend}" + (f": {reason}" if reason else ""),
                {"from": previous, "to": backend, "reason": reason},
            )
            return self._load(s, self._row(s, id))

    # ---------------------------------------------------------------- resources
    def upsert_resource(
        self,
        id: str,
        node_name: str,
        index: int,
        resource_id: str | None,
        state: str,
        attributes: Mapping[str, Any] | None = None,
    ) -> ResourceRecord:
        """Record (or update) what a backend made for one instance of one node; log it if it changed.

        :param id: the deployment id
        :param node_name: the node template
        :param index: the instance index
        :param resource_id: the backend's id of the resource
        :param state: its normalized state (a ResourceState or its value)
        :param attributes: what the backend reported (JSON-serializable)
        """
        return self.upsert_resources(id, [ResourceUpdate(node_name, index, resource_id, state, attributes)])[0]

    def upsert_resources(self, id: str, updates: Iterable[ResourceUpdate]) -> list[ResourceRecord]:
        """Record (or update) many instances of a deployment in one transaction; log each one that changed.

        One transaction whatever the count, so recording a node of a hundred instances costs one write, not a
        hundred (concurrent deployments on SQLite otherwise queue on its single writer lock).

        :param id: the deployment id
        :param updates: what a backend reported, one entry per (node, index)
        """
        wanted: dict[tuple[str, int], tuple[str | None, str, Any]] = {}
        for u in updates:
            key = (u.node_name, int(u.index))
            attrs = _jsonable(dict(u.attributes or {}), f"attributes of {id}/{u.node_name}[{u.index}]")
            wanted[key] = (u.resource_id, _status_value(u.state), attrs)
        if not wanted:
            return []
        nodes = sorted({node for node, _ in wanted})
        for _attempt in range(_RACE_RETRIES):
            try:
                with self._tx() as s:
                    self._row(s, id)
                    rows = {(r.node_name, r.index): r for r in s.scalars(select(ResourceRow).where(
                        ResourceRow.deployment_id == id, ResourceRow.node_name.in_(nodes)))}
                    done = []
                    for (node_name, index), (resource_id, state_value, attrs) in wanted.items():
                        row = rows.get((node_name, index))
                        data = {"node": node_name, "index": index, "resource_id": resource_id, "state": state_value}
                        if row is None:
                            row = ResourceRow(deployment_id=id, node_name=node_name, index=index,
                                              resource_id=resource_id, state=state_value, attributes=attrs,
                                              updated_at=utcnow())
                            s.add(row)
                            self._log_event(s, id, "resource", f"{node_name}[{index}] {state_value} ({resource_id})",
                                            data)
                        elif (row.resource_id, row.state, row.attributes) != (resource_id, state_value, attrs):
                            data["previous_state"] = row.state
                            row.resource_id, row.state, row.attributes = resource_id, state_value, attrs
                            row.updated_at = utcnow()
                            self._log_event(s, id, "resource",
                                            f"{node_name}[{index}] {data['previous_state']} -> {state_value}", data)
                        done.append(row)
                    s.flush()
                    return [_resource(row) for row in done]
            except IntegrityError:
                # an instance was inserted concurrently (or the deployment vanished): look again
                log.debug("resources of %s changed concurrently; retrying", id)
        raise DeploymentBusyError(f"the resources of {id} keep changing concurrently; retry later")

    def remove_resource(self, id: str, node_name: str, index: int) -> bool:
        """Forget one instance of one node; return whether it was recorded.

        :param id: the deployment id
        :param node_name: the node template
        :param index: the instance index
        """
        return bool(self.remove_resources(id, [(node_name, index)]))

    def remove_resources(self, id: str, instances: Iterable[tuple[str, int]]) -> int:
        """Forget many instances of a deployment in one transaction; return how many were recorded.

        :param id: the deployment id
        :param instances: (node name, index) pairs
        """
        wanted = sorted({(node, int(index)) for node, index in instances})
        if not wanted:
            return 0
        with self._tx() as s:
            self._row(s, id)
            rows = {(r.node_name, r.index): r for r in s.scalars(select(ResourceRow).where(
                ResourceRow.deployment_id == id, ResourceRow.node_name.in_(sorted({n for n, _ in wanted}))))}
            removed = 0
            for node_name, index in wanted:
                row = rows.get((node_name, index))
                if row is None:
                    continue
                s.delete(row)
                removed += 1
                self._log_event(s, id, "resource_removed", f"{node_name}[{index}] removed",
                                {"node": node_name, "index": index})
            s.flush()
            return removed

    def resources(self, id: str) -> list[ResourceRecord]:
        """Return a deployment's resources by node name and index.

        :param id: the deployment id
        """
        with self._read() as s:
            self._row(s, id)
            return self._resources(s, id)

    # ---------------------------------------------------------------- history
    def add_event(self, id: str, kind: str, message: str, data: Mapping[str, Any] | None = None) -> Event:
        """Append an entry to a deployment's history.

        :param id: the deployment id
        :param kind: a short machine-readable kind (``node_created``, ``scaled``, ...)
        :param message: human-readable text
        :param data: structured details (JSON-serializable)
        """
        with self._tx() as s:
            self._row(s, id)
            return self._log_event(s, id, kind, message, data)

    def events(self, id: str) -> list[Event]:
        """Return a deployment's history, oldest first.

        :param id: the deployment id
        """
        with self._read() as s:
            self._row(s, id)
            return self._events(s, id)

    # ---------------------------------------------------------------- helpers
    def _row(self, s: Session, id: str) -> DeploymentRow:
        row = s.get(DeploymentRow, id, populate_existing=True)
        if row is None:
            raise _not_found(id)
        return row

    def _resources(self, s: Session, id: str) -> list[ResourceRecord]:
        rows = s.scalars(
            select(ResourceRow)
            .where(ResourceRow.deployment_id == id)
            .order_by(ResourceRow.node_name, ResourceRow.index)
        )
        return [_resource(r) for r in rows]

    def _events(self, s: Session, id: str) -> list[Event]:
        rows = s.scalars(select(EventRow).where(EventRow.deployment_id == id).order_by(EventRow.id))
        return [_event(r) for r in rows]

    def _load(self, s: Session, row: DeploymentRow) -> DeploymentRecord:
        return _deployment(row, self._resources(s, row.id), self._events(s, row.id))

    def _log_event(self, s: Session, id: str, kind: str, message: str, data: Mapping[str, Any] | None = None) -> Event:
        row = EventRow(
            deployment_id=id,
            at=utcnow(),
            kind=kind,
            message=message,
            data=_jsonable(dict(data), f"data of event '{kind}'") if data is not None else None,
        )
        s.add(row)
        s.flush()
        return _event(row)

    def _log_status(
        self,
        s: Session,
        id: str,
        current: DeploymentStatus | None,
        target: DeploymentStatus,
        reason: str | None,
        actor: str | None,
    ) -> None:
        origin = current.value if current else "(new)"
        if current == target:  # an unclaimed action taken over by its first actor
            kind, message = "claim", f"{target.value} taken by {actor}"
        else:
            kind, message = "status", f"{origin} -> {target.value}"
        self._log_event(
            s,
            id,
            kind,
            message + (f": {reason}" if reason else ""),
            {
                "from": current.value if current else None,
                "to": target.value,
                "reason": reason,
                "actor": actor,
            },
        )

    def _lease(self, s: Session, id: str, seconds: float, holder: str | None) -> None:
        """Set the lease of the running action (no version bump: a renewal never races a status change)."""
        s.execute(
            update(DeploymentRow)
            .where(DeploymentRow.id == id)
            .values(lease_expires_at=utcnow() + timedelta(seconds=seconds), lease_holder=holder)
            .execution_options(synchronize_session=False)
        )

    def _swap(
        self,
        s: Session,
        row: DeploymentRow,
        current: DeploymentStatus,
        target: DeploymentStatus,
        reason: str | None,
        actor: str | None,
    ) -> bool:
        """Change the status only if nobody changed the row since it was read; log it if done."""
        result = s.execute(
            update(DeploymentRow)
            .where(
                DeploymentRow.id == row.id,
                DeploymentRow.status == current.value,
                DeploymentRow.version == row.version,
            )
            .values(
                status=target.value,
                status_reason=reason,
                actor=actor,
                version=row.version + 1,
                updated_at=utcnow(),
                # an action starting is held by this process for a lease; one that ended is held by nobody
                lease_expires_at=utcnow() + timedelta(seconds=self.lease_s) if target.in_progress else None,
                lease_holder=this_process() if target.in_progress else None,
            )
            .execution_options(synchronize_session=False)
        )
        if result.rowcount != 1:
            return False
        self._log_status(s, row.id, current, target, reason, actor)
        return True


__all__ = [
    "DeploymentBusyError",
    "DeploymentConflictError",
    "DeploymentNotFoundError",
    "DeploymentStore",
    "DeploymentStoreError",
    "InvalidStatusTransitionError",
]
