"""The backend protocol: one small driver interface over every cloud and the local machine.

Modelled on Apache Libcloud: a normalized state enum with a per-driver state map, and one
contract test suite (tests/unit/backends/contract.py) that every backend must pass.
"""

from __future__ import annotations

import abc
import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

#: Tag keys every backend puts on every resource, so a retry finds what it made and a delete finds all.
TAG_DEPLOYMENT = "cloud-paas-deployment"
TAG_NODE = "cloud-paas-node"
TAG_INDEX = "cloud-paas-index"


class ResourceState(str, enum.Enum):
    """Normalized state of one backend resource."""

    PENDING = "PENDING"  # accepted, not yet started
    CREATING = "CREATING"  # booting / starting
    RUNNING = "RUNNING"  # ready for use
    STOPPED = "STOPPED"  # exists but not running (process exited, VM stopped)
    DELETING = "DELETING"
    DELETED = "DELETED"
    ERROR = "ERROR"
    UNKNOWN = "UNKNOWN"


@dataclass(frozen=True)
class Resource:
    """What a backend made for one instance (index) of one node template of one deployment."""

    deployment_id: str
    node_name: str
    index: int
    backend: str
    resource_id: str
    state: ResourceState
    attributes: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serializable form (for XCom, the store and triggers)."""
        return {
            "deployment_id": self.deployment_id,
            "node_name": self.node_name,
            "index": self.index,
            "backend": self.backend,
            "resource_id": self.resource_id,
            "state": self.state.value,
            "attributes": dict(self.attributes),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Resource:
        """Rebuild a resource from :meth:`to_dict` output.

        :param data: the dict
        """
        return cls(
            deployment_id=data["deployment_id"],
            node_name=data["node_name"],
            index=int(data["index"]),
            backend=data["backend"],
            resource_id=data["resource_id"],
            state=ResourceState(data["state"]),
            attributes=dict(data.get("attributes") or {}),
        )


@dataclass(frozen=True)
class ResourceSpec:
    """Everything a backend needs to create one instance of one node template.

    :param deployment_id: the deployment's id
    :param node_name: the node template's name
    :param index: the instance index (0..count-1) within the node's group
    :param node_type: the node's TOSCA type
    :param type_hierarchy: the type and all its ancestors, most specific first
    :param properties: the node's properties, inputs resolved
    :param capabilities: capability name -> its properties, inputs resolved
    :param requirements: requirement name -> the resources of the target node already created
        (for `host`, only the host instance with the same index)
    """

    deployment_id: str
    node_name: str
    index: int
    node_type: str
    type_hierarchy: tuple[str, ...] = ()
    properties: Mapping[str, Any] = field(default_factory=dict)
    capabilities: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    requirements: Mapping[str, tuple[Resource, ...]] = field(default_factory=dict)

    @property
    def tags(self) -> dict[str, str]:
        """Return the tags that identify this resource on any provider."""
        return {TAG_DEPLOYMENT: self.deployment_id, TAG_NODE: self.node_name, TAG_INDEX: str(self.index)}

    def is_a(self, type_name: str) -> bool:
        """Return whether the node is of this TOSCA type or derives from it.

        :param type_name: a TOSCA type name
        """
        return type_name == self.node_type or type_name in self.type_hierarchy


class Backend(abc.ABC):
    """Create, describe, scale and delete the resources a node needs, idempotently.

    Idempotency is by (deployment id, node name, index): ``create`` of an existing resource returns
    it; ``delete`` finds every resource of a deployment through its tags, even after a crash.
    """

    #: short name (local, aws, gcp, azure, openstack, docker, kubernetes)
    name: ClassVar[str]
    #: provider-native state -> normalized state
    state_map: ClassVar[Mapping[str, ResourceState]] = {}
    #: how many instances of one node may be created at once (backends whose clients are thread-safe)
    max_parallel_creates: ClassVar[int] = 1

    def normalize_state(self, native: str) -> ResourceState:
        """Map a provider-native state to :class:`ResourceState`.

        :param native: the provider's state string
        """
        return self.state_map.get(native, ResourceState.UNKNOWN)

    @abc.abstractmethod
    def check(self, spec: ResourceSpec) -> None:
        """Raise :class:`UnsupportedNodeError` if this node cannot be deployed here; touch nothing.

        :param spec: the resource wanted (requirements may be empty at validation time)
        """

    @abc.abstractmethod
    def create(self, spec: ResourceSpec) -> Resource:
        """Create the resource (or return the existing one) and wait until it is RUNNING.

        On failure, clean up what was partially made and raise :class:`ResourceCreateError`.

        :param spec: the resource wanted
        """

    def request(self, spec: ResourceSpec) -> Resource:
        """Start creating the resource and return at once (its state may be CREATING).

        For deferrable waits: the caller polls :meth:`describe` (from a trigger) until RUNNING.
        Backends that cannot split creation from waiting keep this default, which waits.

        :param spec: the resource wanted
        """
        return self.create(spec)

    @abc.abstractmethod
    def describe(self, deployment_id: str, node_name: str | None = None) -> list[Resource]:
        """Return the live resources of a deployment (optionally of one node), sorted by node, index.

        :param deployment_id: the deployment's id
        :param node_name: only this node's resources
        """

    @abc.abstractmethod
    def delete(self, deployment_id: str, node_name: str | None = None, index: int | None = None) -> list[Resource]:
        """Delete resources (all of a deployment, of one node, or one instance); return what was deleted.

        Deleting what does not exist is not an error.

        :param deployment_id: the deployment's id
        :param node_name: only this node's resources
        :param index: only this instance
        """

    def scale(self, spec_for_index: Callable[[int], ResourceSpec], count: int) -> list[Resource]:
        """Make exactly ``count`` instances of a node exist; return the resulting resources.

        Missing indices below ``count`` are created; indices at or above it are deleted, highest first.

        :param spec_for_index: builds the spec of instance ``index``
        :param count: the wanted number of instances
        """
        if count < 0:
            raise ValueError(f"count must be >= 0, got {count}")
        probe = spec_for_index(0)
        existing = {r.index: r for r in self.describe(probe.deployment_id, probe.node_name)}
        for index in sorted((i for i in existing if i >= count), reverse=True):
            self.delete(probe.deployment_id, probe.node_name, index)
        for index in range(count):
            if index not in existing:
                self.create(spec_for_index(index))
        return self.describe(probe.deployment_id, probe.node_name)


#: undo steps of a half-made resource: (what, how), run newest first
UndoSteps = list[tuple[str, Callable[[], None]]]


def run_undo(steps: UndoSteps, tolerate: tuple[type[BaseException], ...], log: Any) -> list[str]:
    """Run undo steps newest first; return what failed (logged, never raised: the cause matters more).

    :param steps: (what, callable) pairs in the order they were made
    :param tolerate: the exception types a failed step may raise (anything else propagates)
    :param log: the backend's logger
    """
    problems = []
    for what, step in reversed(steps):
        try:
            step()
        except tolerate as err:
            log.warning("Cleanup of %s failed: %s", what, err)
            problems.append(f"{what}: {getattr(err, 'message', err)}")
    return problems


def create_failure(provider: str, spec: ResourceSpec, label: str, cause: str, problems: list[str],
                   hint: str = "") -> Exception:
    """Return the ResourceCreateError for a failed create, saying whether its cleanup worked.

    :param provider: the backend's name
    :param spec: the resource wanted
    :param label: the provider-side resource (e.g. ``instance web-0``)
    :param cause: what went wrong
    :param problems: what the cleanup could not undo (from :func:`run_undo`)
    :param hint: how to fix it
    """
    from airflow_cloud_paas.exceptions import ResourceCreateError

    message = f"cannot create {label} for node '{spec.node_name}' #{spec.index}: {cause}"
    if hint:
        message += f"; {hint}"
    if problems:
        message += f" (cleanup also failed, delete the deployment to retry it: {'; '.join(problems)})"
    else:
        message += " (what was made has been removed)"
    return ResourceCreateError(message, provider=provider, resource=label)
