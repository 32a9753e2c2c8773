"""What the store hands out: frozen, JSON-friendly snapshots, never live ORM objects."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

from airflow_cloud_paas.store.status import DeploymentStatus


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _parse(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value is not None else None


class ResourceUpdate(NamedTuple):
    """What to record of one instance (see :meth:`~airflow_cloud_paas.store.DeploymentStore.upsert_resources`).

    :param node_name: the node template
    :param index: the instance index within the node's group
    :param resource_id: the backend's id of the resource
    :param state: its normalized state (a ResourceState or its value)
    :param attributes: what the backend reported (JSON-serializable)
    """

    node_name: str
    index: int
    resource_id: str | None
    state: Any
    attributes: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class ResourceRecord:
    """One instance (index) of one node template of a deployment, as last recorded.

    :param deployment_id: the deployment
    :param node_name: the node template
    :param index: the instance index within the node's group
    :param resource_id: the backend's id of the resource (VM id, PID, pod name, ...)
    :param state: its normalized state (a :class:`~airflow_cloud_paas.backends.base.ResourceState` value)
    :param attributes: what the backend reported (addresses, ports, ...)
    :param updated_at: when it was last changed (UTC)
    """

    deployment_id: str
    node_name: str
    index: int
    resource_id: str | None
    state: str
    attributes: dict[str, Any]
    updated_at: datetime

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serializable form (datetimes in ISO 8601)."""
        return {
            "deployment_id": self.deployment_id,
            "node_name": self.node_name,
            "index": self.index,
            "resource_id": self.resource_id,
            "state": self.state,
            "attributes": dict(self.attributes),
            "updated_at": _iso(self.updated_at),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ResourceRecord:
        """Return the record :meth:`to_dict` gave (e.g. read back from the plugin's API)."""
        return cls(deployment_id=data["deployment_id"], node_name=data["node_name"], index=int(data["index"]),
                   resource_id=data.get("resource_id"), state=data["state"],
                   attributes=dict(data.get("attributes") or {}), updated_at=_parse(data["updated_at"]))


@dataclass(frozen=True)
class Event:
    """One entry of a deployment's history.

    :param id: increasing id (orders events of one deployment)
    :param deployment_id: the deployment
    :param at: when it happened (UTC)
    :param kind: what happened: ``created``, ``status``, ``retry``, ``resource``, ``resource_removed``,
        ``outputs`` or any kind a caller records
    :param message: human-readable text
    :param data: structured details (``from``/``to`` for status changes, ...)
    """

    id: int
    deployment_id: str
    at: datetime
    kind: str
    message: str
    data: dict[str, Any] | None

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serializable form (datetimes in ISO 8601)."""
        return {
            "id": self.id,
            "deployment_id": self.deployment_id,
            "at": _iso(self.at),
            "kind": self.kind,
            "message": self.message,
            "data": self.data,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Event:
        """Return the event :meth:`to_dict` gave."""
        return cls(id=int(data["id"]), deployment_id=data["deployment_id"], at=_parse(data["at"]), kind=data["kind"],
                   message=data["message"], data=data.get("data"))


#: the event kind that lets one DAG run act on a deployment its triggering user does not own (``data``: run_id, by,
#: action); written by the orchestrator API after checking the caller's groups or admin role
GRANT_EVENT = "authorized"
#: the event kind of a deployment made the current one of a slot (``data``: slot, run_id, replaces); its run's
#: teardown keeps it (see :class:`~airflow_cloud_paas.operators.deployment.CloudPaaSPromoteDeploymentOperator`)
PROMOTED_EVENT = "promoted"


@dataclass(frozen=True)
class DeploymentRecord:
    """A deployment as stored. Secret inputs read ``"***"``: they are never persisted.

    :param id: the deployment id
    :param template: the TOSCA template text
    :param template_hash: the template's content hash (idempotency key with the id)
    :param inputs: the input values, secret ones replaced by ``"***"``
    :param owner: who owns it
    :param backend: where it runs (local, aws, ...)
    :param status: its lifecycle status
    :param status_reason: why it has that status (the error message after a failure)
    :param outputs: the evaluated TOSCA outputs
    :param dag_id: the DAG that made it, if any
    :param run_id: the DAG run that made it, if any
    :param created_at: creation time (UTC)
    :param updated_at: last change of the deployment row (UTC)
    :param resources: its resources, by node name and index
    :param events: its history, oldest first (empty in :meth:`DeploymentStore.list` results)
    :param actor: who holds the running action (set while ``*_IN_PROGRESS``)
    :param version: optimistic-locking counter, bumped by every change of the row
    :param lease_expires_at: until when the running action's holder keeps it without renewing (UTC)
    :param lease_holder: the process working on the running action now (``host:pid:start``), if any
    :param user_group: the group its owner shares it with (members see and act on it), if any
    """

    id: str
    template: str
    template_hash: str
    inputs: dict[str, Any]
    owner: str | None
    backend: str
    status: DeploymentStatus
    status_reason: str | None
    outputs: dict[str, Any]
    dag_id: str | None
    run_id: str | None
    created_at: datetime
    updated_at: datetime
    resources: tuple[ResourceRecord, ...] = ()
    events: tuple[Event, ...] = ()
    actor: str | None = None
    version: int = 1
    lease_expires_at: datetime | None = None
    lease_holder: str | None = None
    user_group: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serializable form (datetimes in ISO 8601, status as its name)."""
        return {
            "id": self.id,
            "template": self.template,
            "template_hash": self.template_hash,
            "inputs": dict(self.inputs),
            "owner": self.owner,
            "backend": self.backend,
            "status": self.status.value,
            "status_reason": self.status_reason,
            "outputs": dict(self.outputs),
            "dag_id": self.dag_id,
            "run_id": self.run_id,
            "created_at": _iso(self.created_at),
            "updated_at": _iso(self.updated_at),
            "resources": [r.to_dict() for r in self.resources],
            "events": [e.to_dict() for e in self.events],
            "actor": self.actor,
            "version": self.version,
            "lease_expires_at": _iso(self.lease_expires_at),
            "lease_holder": self.lease_holder,
            "user_group": self.user_group,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DeploymentRecord:
        """Return the record :meth:`to_dict` gave (e.g. read back from the plugin's API as JSON).

        :param data: a :meth:`to_dict` result
        """
        return cls(
            id=data["id"], template=data.get("template") or "", template_hash=data.get("template_hash") or "",
            inputs=dict(data.get("inputs") or {}), owner=data.get("owner"), backend=data["backend"],
            status=DeploymentStatus(data["status"]), status_reason=data.get("status_reason"),
            outputs=dict(data.get("outputs") or {}), dag_id=data.get("dag_id"), run_id=data.get("run_id"),
            created_at=_parse(data["created_at"]), updated_at=_parse(data["updated_at"]),
            resources=tuple(ResourceRecord.from_dict(r) for r in data.get("resources") or ()),
            events=tuple(Event.from_dict(e) for e in data.get("events") or ()),
            actor=data.get("actor"), version=int(data.get("version") or 1),
            lease_expires_at=_parse(data.get("lease_expires_at")), lease_holder=data.get("lease_holder"),
            user_group=data.get("user_group"),
        )
