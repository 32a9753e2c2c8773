"""The backend protocol: one small driver interface over every cloud and the local machine.

Modelled on Apache Libcloud: a normalized state enum with a per-driver state map, and one
contract test suite (tests/unit/backends/contract.py) that every backend must pass.
"""

from __future__ import annotations

import abc
import contextlib
import enum
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

if TYPE_CHECKING:
    from airflow_cloud_paas.exceptions import ResourceCreateError

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
    :param artifacts: artifact name -> its definition (``file``, ``type``), inputs resolved (a container's
        image is the ``file`` of its ``tosca.artifacts.Deployment.Image.Container.Docker`` artifact)
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
    artifacts: Mapping[str, Any] = field(default_factory=dict)

    @property
    def tags(self) -> dict[str, str]:
        """Return the tags that identify this resource on any provider."""
        return {TAG_DEPLOYMENT: self.deployment_id, TAG_NODE: self.node_name, TAG_INDEX: str(self.index)}

    def is_a(self, type_name: str) -> bool:
        """Return whether the node is of this TOSCA type or derives from it.

        :param type_name: a TOSCA type name
        """
        return type_name == self.node_type or type_name in self.type_hierarchy


def group_create_error(node_name: str, failed: Mapping[int, str], kept: Iterable[int], *, provider: str,
                       resource: str, what: str = "instance",
                       cleanup: str = "what was launched for them has been removed") -> ResourceCreateError:
    """Return the one error of a group create that made fewer instances than asked: each missing index and why.

    Indices that failed for the same reason (one launch's refusal) share a line.

    :param node_name: the node
    :param failed: missing index -> why
    :param kept: the indices that run and are kept
    :param provider: the provider
    :param resource: where (deployment/node)
    :param what: what the cloud calls an instance (instance, server, VM)
    :param cleanup: what became of what was made for the missing indices
    """
    from airflow_cloud_paas.exceptions import ResourceCreateError

    by_reason: dict[str, list[int]] = {}
    for index, reason in sorted(failed.items()):
        by_reason.setdefault(reason, []).append(index)
    lines = "; ".join(f"#{', #'.join(map(str, indices))}: {reason}" for reason, indices in by_reason.items())
    kept = sorted(kept)
    return ResourceCreateError(
        f"cannot create {what}(s) {sorted(failed)} of node '{node_name}': {lines} ({cleanup}; the {len(kept)} "
        f"running {what}(s) {kept} are kept, so a retry launches only the missing ones)",
        provider=provider, resource=resource)


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
    def check(self, spec: ResourceSpec) -> tuple[str, ...] | None:
        """Raise :class:`UnsupportedNodeError` if this node cannot be deployed here; touch nothing.

        Return what will be deployed but not honoured (warnings naming the node and the field, e.g. a Mesos
        placement constraint on a container engine); None or ``()`` when everything is.

        :param spec: the resource wanted (requirements may be empty at validation time)
        """
        return ()

    @abc.abstractmethod
    def create(self, spec: ResourceSpec, *, deadline: float | None = None) -> Resource:
        """Create the resource (or return the existing one) and wait until it is RUNNING.

        On failure, clean up what was partially made and raise :class:`ResourceCreateError`; a wait cut
        short raises :class:`ResourceTimeoutError`, also after cleaning up.

        :param spec: the resource wanted
        :param deadline: a ``time.monotonic()`` limit on this create's waits (one provider attempt's time
            limit), over the backend's own timeouts; the cleanup of a failed create never uses it
        """

    def create_group(self, specs: Sequence[ResourceSpec], *, deadline: float | None = None) -> list[Resource]:
        """Create several instances of one node (or return the existing ones), RUNNING; return them sorted by index.

        This default creates them one by one, lowest index first, with :meth:`create`, stopping at the first
        failure (what was made before it stays, as with separate creates). A backend whose API makes many machines
        in one call
        overrides it: the node's shared resources (security group, key pair) once, one launch for the missing
        indices, one wait over all of them; a failure names each index that was not made.

        :param specs: the instances wanted, all of the same deployment and node (distinct indices)
        :param deadline: a ``time.monotonic()`` limit on the waits (see :meth:`create`); no instance is started
            after it
        """
        made = []
        for spec in sorted(specs, key=lambda s: s.index):
            if deadline is not None and time.monotonic() >= deadline:
                from airflow_cloud_paas.exceptions import ResourceTimeoutError

                raise ResourceTimeoutError(
                    f"the provider attempt ran past its time limit (provider_timeout_mins) before instance "
                    f"{spec.index} of node '{spec.node_name}'", provider=self.name,
                    resource=f"{spec.deployment_id}/{spec.node_name}")
            made.append(self.create(spec, deadline=deadline))
        return made

    def checked_group(self, specs: Sequence[ResourceSpec]) -> list[ResourceSpec]:
        """Return a group's specs sorted by index, each checked by :meth:`check` before anything is made.

        Raise ValueError for specs of several nodes or a repeated index (a caller's bug, not the user's input).

        :param specs: the instances wanted (see :meth:`create_group`)
        """
        specs = sorted(specs, key=lambda s: s.index)
        if len({(s.deployment_id, s.node_name) for s in specs}) > 1 or len({s.index for s in specs}) != len(specs):
            raise ValueError("create_group takes distinct indices of one deployment's node")
        for spec in specs:
            self.check(spec)
        return specs

    def api_calls(self) -> dict[str, int]:
        """Return how many provider API calls this backend has made so far, by operation (empty: not counted).

        The deployer records the difference over each step, so the cost of a deployment is visible in its events.
        """
        return {}

    def request_group(self, specs: Sequence[ResourceSpec]) -> list[Resource]:
        """Start creating several instances of one node and return at once (see :meth:`request`), sorted by index.

        This default requests them one by one; a backend whose API launches many machines in one call overrides it
        as it does :meth:`create_group` (without the wait).

        :param specs: the instances wanted, distinct indices of one deployment's node
        """
        return [self.request(spec) for spec in sorted(specs, key=lambda s: s.index)]

    def api_seconds(self) -> float | None:
        """Return the seconds this backend has spent waiting on provider API calls so far (None: not measured)."""
        return None

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

    def scale(self, spec_for_index: Callable[[int], ResourceSpec], count: int, *,
              deadline: float | None = None) -> list[Resource]:
        """Make exactly ``count`` instances of a node exist; return the resulting resources.

        Missing indices below ``count`` are created; indices at or above it are deleted, highest first.

        :param spec_for_index: builds the spec of instance ``index``
        :param count: the wanted number of instances
        :param deadline: a ``time.monotonic()`` limit on the creates' waits (see :meth:`create`)
        """
        if count < 0:
            raise ValueError(f"count must be >= 0, got {count}")
        probe = spec_for_index(0)
        existing = {r.index: r for r in self.describe(probe.deployment_id, probe.node_name)}
        for index in sorted((i for i in existing if i >= count), reverse=True):
            self.delete(probe.deployment_id, probe.node_name, index)
        missing = [spec_for_index(index) for index in range(count) if index not in existing]
        if missing:
            self.create_group(missing, deadline=deadline)
        return self.describe(probe.deployment_id, probe.node_name)


T = TypeVar("T")

#: what a wait cut short by the provider attempt's deadline says (the words placement's errors use too)
DEADLINE_REACHED = "the provider attempt's time limit, provider_timeout_mins, was reached"


class WaitFailed(Exception):
    """A resource reached a failed state while :func:`poll_until` waited for it.

    Internal to the backends: :func:`undo_on_failure` turns it into a ResourceCreateError that also says
    whether the cleanup worked; a backend without that path gives :func:`poll_until` its own ``failure``.

    :param reason: what the ``failed`` check said
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def wait_limit(timeout: float, deadline: float | None = None) -> float:
    """Return the ``time.monotonic()`` at which a wait starting now stops: ``timeout`` s, or ``deadline`` if sooner.

    :param timeout: the backend's own timeout, in seconds
    :param deadline: a ``time.monotonic()`` limit (the provider attempt's), or None
    """
    limit = time.monotonic() + max(0.0, timeout)
    return limit if deadline is None else min(limit, deadline)


def poll_until(
    probe: Callable[[], T],
    done: Callable[[T], bool],
    *,
    timeout: float,
    interval: float,
    what: str,
    provider: str,
    resource: str | None,
    deadline: float | None = None,
    failed: Callable[[T], str | None] | None = None,
    failure: Callable[[str], BaseException] = WaitFailed,
    status: Callable[[T], str] | None = None,
    hint: str = "",
) -> T:
    """Look at a resource until it is done; the one wait loop of every backend (Libcloud's ``wait_until_running``).

    Each round calls ``probe`` and returns its value once ``done`` says so; ``failed`` may end the wait
    early with a reason, raised as ``failure(reason)``. Probes start at most every ``interval`` seconds.
    The wait stops at ``timeout`` seconds from now, or at ``deadline`` if that comes first; the last probe
    is always made at or after that limit, so a resource that became ready just in time counts, and the
    wait never runs past it by more than one probe.

    :param probe: reads the resource (its value may be None: gone, not visible yet)
    :param done: whether the value is what was waited for
    :param timeout: the backend's own timeout, in seconds
    :param interval: seconds between the starts of two probes
    :param what: what is waited for, for the message (``instance i-1 running``)
    :param provider: the backend's name
    :param resource: the resource concerned
    :param deadline: a ``time.monotonic()`` limit (the provider attempt's ``provider_timeout_mins``), or None
    :param failed: returns why the value means the wait can never succeed, or None
    :param failure: builds the exception raised for such a reason (default :class:`WaitFailed`)
    :param status: describes the last value seen, for the timeout message
    :param hint: how to fix a wait that the backend's own timeout cut (``raise create_timeout``)
    :raises ResourceTimeoutError: at the limit, saying which of the two limits cut the wait
    """
    start = time.monotonic()
    limit = start + max(0.0, timeout)
    by_deadline = deadline is not None and deadline < limit
    if by_deadline:
        limit = deadline
    while True:
        started = time.monotonic()
        value = probe()
        if done(value):
            return value
        reason = failed(value) if failed is not None else None
        if reason:
            raise failure(reason)
        if started >= limit:
            break
        time.sleep(max(0.0, min(started + interval, limit) - time.monotonic()))
    from airflow_cloud_paas.exceptions import ResourceTimeoutError

    cause = DEADLINE_REACHED if by_deadline else f"the backend's own timeout of {timeout:g} s ran out"
    if hint and not by_deadline:
        cause += f" ({hint})"
    seen = f"; last seen: {status(value)}" if status is not None else ""
    raise ResourceTimeoutError(f"{what}: not done after {time.monotonic() - start:.1f} s: {cause}{seen}",
                               provider=provider, resource=resource)


def retry_while(
    call: Callable[[], T],
    retryable: Callable[[Exception], bool],
    *,
    timeout: float,
    interval: float,
    what: str,
    provider: str,
    resource: str | None,
) -> T:
    """Call ``call`` until it stops raising a retryable error (a delete refused while a dependency goes away).

    The waiting is :func:`poll_until`'s; when ``timeout`` runs out, the last retryable error is raised as it
    is, so callers see the provider's refusal, not a timeout.

    :param call: the attempt
    :param retryable: whether an error of the attempt is worth another try
    :param timeout: seconds to keep trying
    :param interval: seconds between the starts of two attempts
    :param what: what is attempted, for the log
    :param provider: the backend's name
    :param resource: the resource concerned
    """
    from airflow_cloud_paas.exceptions import ResourceTimeoutError

    refused: list[Exception] = []

    def attempt() -> tuple[bool, T | None]:
        try:
            return True, call()
        except Exception as err:
            if not retryable(err):
                raise
            refused[:] = [err]
            return False, None

    try:
        _, result = poll_until(attempt, lambda outcome: outcome[0], timeout=timeout, interval=interval, what=what,
                               provider=provider, resource=resource)
    except ResourceTimeoutError:
        pass
    else:
        return result  # type: ignore[return-value]
    raise refused[-1]  # outside the handler: the refusal keeps its own cause, not the timeout as context


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
    failed: tuple[type[Exception], ...] = (WaitFailed,),
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
    :param failed: exception types meaning "the resource went to an error state" (what :func:`poll_until`
        raises when its ``failed`` check gives a reason)
    :param failed_prefix: put before such an error's text
    :param tolerate: more exception types an undo step may raise (BackendError and WaitFailed always are)
    """
    from airflow_cloud_paas.exceptions import BackendError, ResourceTimeoutError

    tolerated = (BackendError, WaitFailed, *tolerate)
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
