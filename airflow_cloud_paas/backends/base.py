"""The backend protocol: one small driver interface over every cloud and the local machine.

Modelled on Apache Libcloud: a normalized state enum with a per-driver state map, and one
contract test suite (tests/unit/backends/contract.py) that every backend must pass.
"""

from __future__ import annotations

import abc
import contextlib
import enum
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

#: Tag keys every backend puts on every resource, so a retry finds what it made and a delete finds all.
TAG_DEPLOYMENT = "cloud-paas-deployment"
TAG_NODE = "cloud-paas-node"
TAG_INDEX = "cloud-paas-index"

#: the TOSCA types a VM cloud makes machines and disks of
COMPUTE_TYPE = "tosca.nodes.Compute"
BLOCK_STORAGE_TYPES = ("tosca.nodes.BlockStorage", "tosca.nodes.Storage.BlockStorage")


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
    :param user_data: for a compute node, the cloud-init user data that configures the software it
        hosts (see :mod:`airflow_cloud_paas.cloudinit`); it may hold secrets, so it is left out of ``repr``
    """

    deployment_id: str
    node_name: str
    index: int
    node_type: str
    type_hierarchy: tuple[str, ...] = ()
    properties: Mapping[str, Any] = field(default_factory=dict)
    capabilities: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    requirements: Mapping[str, tuple[Resource, ...]] = field(default_factory=dict)
    user_data: str | None = field(default=None, repr=False)

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
    #: the provider's limit on a VM's user data, in bytes as sent (None: the backend boots no VMs)
    max_user_data_bytes: ClassVar[int | None] = None
    #: whether the provider wants the user data base64-encoded by the caller (its size limit counts that)
    user_data_base64: ClassVar[bool] = False

    #: a time.monotonic() limit on waiting for creates (one provider attempt's time limit), or None
    deadline: float | None = None

    def wait_budget(self, timeout: float) -> float:
        """Return how long a create may still wait: ``timeout``, cut to what is left before :attr:`deadline`.

        Deletes and cleanups never use it: a timed-out attempt must still be removed completely.

        :param timeout: the backend's own create timeout, in seconds
        """
        if self.deadline is None:
            return timeout
        return max(0.0, min(timeout, self.deadline - time.monotonic()))

    def check_user_data(self, spec: ResourceSpec) -> None:
        """Raise :class:`UnsupportedNodeError` if a node's user data is over the provider's limit.

        :param spec: the resource wanted
        """
        if not spec.user_data or self.max_user_data_bytes is None:
            return
        size = len(spec.user_data.encode("utf-8"))
        if self.user_data_base64:
            size = 4 * ((size + 2) // 3)
        if size > self.max_user_data_bytes:
            from airflow_cloud_paas.exceptions import UnsupportedNodeError

            raise UnsupportedNodeError(
                f"the user data of node '{spec.node_name}' (its own user_data plus the configuration of the "
                f"software it hosts) is {size} bytes, over {self.name}'s limit of {self.max_user_data_bytes}: "
                "move large scripts to URLs fetched at boot",
                provider=self.name, resource=f"{spec.deployment_id}/{spec.node_name}")

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


def required_resources(spec: ResourceSpec, provider: str, kind: str) -> list[Resource]:
    """Return the resources of one kind, on this provider, that a node instance requires (same index).

    E.g. the disks a VM must attach, or the VM a disk must be attached to.

    :param spec: the resource wanted
    :param provider: the backend's name
    :param kind: the ``kind`` attribute wanted (``disk``, ``instance``...)
    """
    return [r for resources in spec.requirements.values() for r in resources
            if r.backend == provider and r.attributes.get("kind") == kind and r.index == spec.index]


def machine_or_disk(spec: ResourceSpec, provider: str, title: str, machine: tuple[str, str],
                    disk: tuple[str, str]) -> str:
    """Return the kind of a node on a VM cloud: ``machine[0]`` for a Compute, ``disk[0]`` for BlockStorage.

    Anything else raises :class:`UnsupportedNodeError` (software is hosted on a Compute node).

    :param spec: the resource wanted
    :param provider: the backend's name
    :param title: the cloud's name in messages
    :param machine: (kind, what the provider calls it), e.g. ("instance", "instances")
    :param disk: (kind, what the provider calls it), e.g. ("disk", "persistent disks")
    """
    from airflow_cloud_paas.exceptions import UnsupportedNodeError

    if spec.is_a(COMPUTE_TYPE):
        return machine[0]
    if any(spec.is_a(t) for t in BLOCK_STORAGE_TYPES):
        return disk[0]
    raise UnsupportedNodeError(
        f"node '{spec.node_name}' of type '{spec.node_type}' cannot be deployed on {title}: only "
        f"{COMPUTE_TYPE} ({machine[1]}) and {BLOCK_STORAGE_TYPES[0]} ({disk[1]}) and their subtypes are; "
        "host it on a Compute node or use another backend",
        provider=provider, resource=f"{spec.deployment_id}/{spec.node_name}",
    )


@contextlib.contextmanager
def undo_on_failure(
    provider: str,
    spec: ResourceSpec,
    label: str,
    undo: UndoSteps,
    log: Any,
    *,
    api_error: type[Exception],
    hint: Callable[[Any], str] = lambda err: "",
    failed: tuple[type[Exception], ...] = (),
    failed_prefix: str = "",
    tolerate: tuple[type[BaseException], ...] = (),
) -> Iterator[None]:
    """Undo what a create made if the block fails, and raise one error that says what happened.

    - ``failed`` (the resource went to an error state): ResourceCreateError, cleanup reported;
    - a timeout: the ResourceTimeoutError again, saying whether the cleanup worked;
    - ``api_error`` (the provider refused): ResourceCreateError with the provider's message and ``hint``;
    - any other BackendError: undone, then raised as it is.

    :param provider: the backend's name
    :param spec: the resource wanted
    :param label: the provider-side resource, e.g. ``instance web-0``
    :param undo: the undo steps, appended to by the block as it makes things
    :param log: the backend's logger
    :param api_error: the provider's API error type (has ``message``)
    :param hint: how to fix an API error, or ""
    :param failed: exception types meaning "the resource went to an error state"
    :param failed_prefix: put before such an error's text
    :param tolerate: more exception types an undo step may raise (BackendError always is)
    """
    from airflow_cloud_paas.exceptions import BackendError, ResourceTimeoutError

    tolerated = (BackendError, *tolerate)
    try:
        yield
    except failed as err:
        raise create_failure(provider, spec, label, f"{failed_prefix}{err}", run_undo(undo, tolerated, log)) from None
    except ResourceTimeoutError as err:
        problems = run_undo(undo, tolerated, log)
        suffix = f" (cleanup also failed: {'; '.join(problems)})" if problems else " (what was made is removed)"
        raise ResourceTimeoutError(err.message + suffix, provider=provider, resource=label) from err
    except api_error as err:
        raise create_failure(provider, spec, label, err.message, run_undo(undo, tolerated, log), hint(err)) from err
    except BackendError:
        run_undo(undo, tolerated, log)
        raise
