"""The deployment engine shared by the operators, the provider fallback, the scaling jobs and the CLI.

It executes a :class:`~airflow_cloud_paas.request.DeploymentRequest`'s compiled plan on a backend and
records every step in a deployment store. Operators are thin wrappers around it; it holds no Airflow
code, so the same path is used from a task, from ``cloud-paas`` and from tests.
"""

from __future__ import annotations

import functools
import logging
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

from airflow_cloud_paas.backends.base import Backend, Resource, ResourceSpec, ResourceState
from airflow_cloud_paas.exceptions import (
    DeploymentNotFoundError,
    ResourceCreateError,
    ResourceTimeoutError,
    ToscaInputError,
    ToscaValidationError,
)
from airflow_cloud_paas.plan import DeploymentPlan
from airflow_cloud_paas.request import DeploymentRequest
from airflow_cloud_paas.secrets import mask_outputs
from airflow_cloud_paas.store import DeploymentStore, Event, ResourceUpdate
from airflow_cloud_paas.store.lease import Heartbeat
from airflow_cloud_paas.tosca import resolve_outputs, scaling_group, scaling_root
from airflow_cloud_paas.tosca.model import Topology
from airflow_cloud_paas.tosca.resolve import MAX_INSTANCES

log = logging.getLogger(__name__)
_T = TypeVar("_T")


#: the TOSCA normative node state (``tosca.nodes.Root``'s ``state`` attribute) of each backend resource state
_TOSCA_STATE = {
    ResourceState.PENDING: "initial", ResourceState.CREATING: "creating", ResourceState.RUNNING: "started",
    ResourceState.STOPPED: "stopped", ResourceState.DELETING: "deleting", ResourceState.DELETED: "deleted",
    ResourceState.ERROR: "error", ResourceState.UNKNOWN: "error",
}


def tosca_attributes(resource: Resource) -> dict[str, Any]:
    """Return what ``get_attribute`` reads of one live instance: its backend attributes, and the attributes every
    TOSCA node has (``tosca_id``, ``tosca_name``, ``state``) where the backend reports none of that name.

    :param resource: the instance as the backend describes it
    """
    return {"tosca_id": resource.resource_id, "tosca_name": resource.node_name,
            "state": _TOSCA_STATE.get(resource.state, "error"), **dict(resource.attributes)}


class _LiveAttributes(Mapping):
    """node name -> attributes of its live instances, read from the backend only when asked (get_attribute)."""

    def __init__(self, backend: Backend, deployment_id: str) -> None:
        self._backend, self._deployment_id = backend, deployment_id
        self._seen: dict[str, list] = {}

    def __getitem__(self, node_name: str) -> list:
        if node_name not in self._seen:
            self._seen[node_name] = [tosca_attributes(r) for r in self._backend.describe(self._deployment_id,
                                                                                            node_name)]
        return self._seen[node_name]

    def __iter__(self):
        return iter(self._seen)

    def __len__(self) -> int:
        return len(self._seen)


def _step(method: Callable[..., _T]) -> Callable[..., _T]:
    """Run a Deployer method as one step of its action, holding the action's lease (see :meth:`Deployer._leased`)."""

    @functools.wraps(method)
    def run(self: Deployer, *args: Any, **kwargs: Any) -> _T:
        with self._leased(method.__name__):
            return method(self, *args, **kwargs)

    return run


@dataclass
class Deployer:
    """Execute a compiled deployment plan on one backend, recording everything in the store.

    It only executes: what to make comes from the request's plan (:mod:`airflow_cloud_paas.plan`), and time
    limits are arguments of the calls that wait.

    :param request: the deployment request (id, topology, inputs, backend reference, actor, owner)
    :param store: the deployment store
    :param backend: the backend the request's reference names (built by the caller)
    """

    request: DeploymentRequest
    store: DeploymentStore
    backend: Backend
    #: who acts when the request names nobody: unique to this deployer, so its own steps hold the deployment
    _anonymous: str = field(default_factory=lambda: f"anonymous:{uuid.uuid4().hex}", init=False, repr=False)
    _steps: int = field(default=0, init=False, repr=False)  # nesting depth of the running steps

    @property
    def deployment_id(self) -> str:
        """Return the deployment's id."""
        return self.request.deployment_id

    @property
    def topology(self) -> Topology:
        """Return the parsed template."""
        return self.request.topology

    @property
    def inputs(self) -> Mapping[str, Any]:
        """Return the validated input values."""
        return self.request.inputs

    @property
    def actor(self) -> str:
        """Return who acts: the request's actor, else a token of this deployer alone.

        Without an actor the store cannot tell this deployer's next step from another caller's, and
        ``deploy_node`` after ``begin_create`` would be refused as busy.
        """
        return self.request.actor or self._anonymous

    @property
    def plan(self) -> DeploymentPlan:
        """Return the compiled plan."""
        return self.request.plan

    # ---------------------------------------------------------------- validation
    def check(self) -> tuple[str, ...]:
        """Raise a typed error if any node cannot be deployed on this backend; touch nothing.

        Return the warnings of what the backend deploys without honouring it (see :meth:`DeploymentPlan.check`).
        """
        return self.plan.check(self.backend, self.deployment_id)

    def spec(self, node_name: str, index: int, *, with_requirements: bool = True) -> ResourceSpec:
        """Return the backend spec of one instance of a node, requirements taken from live resources.

        :param node_name: the node template
        :param index: the instance index
        :param with_requirements: look up the resources of the nodes it requires
        """
        planned = self.plan.node(node_name)
        if not with_requirements:
            return self.plan.spec(self.deployment_id, node_name, index)
        requirements: dict[str, tuple[Resource, ...]] = {}
        for req in planned.node.requirements:
            found = self.backend.describe(self.deployment_id, req.node)
            if req.name == "host":
                found = [r for r in found if r.index == index]
                if not found:
                    raise ToscaValidationError(
                        f"host '{req.node}' has no instance {index} on backend '{self.backend.name}': "
                        "deploy (or scale) the host group first",
                        file=self.topology.source,
                        node=node_name,
                        field="requirements.host",
                    )
            requirements[req.name] = tuple(found)
        return self.plan.spec(self.deployment_id, node_name, index, requirements,
                              _LiveAttributes(self.backend, self.deployment_id))

    # ---------------------------------------------------------------- create
    @_step
    def begin_create(self) -> None:
        """Check the plan on the backend, register the deployment (idempotently) and mark it CREATE_IN_PROGRESS."""
        not_honoured = self.check()
        dag_id, _, run_id = (self.request.actor or "").partition("/")
        record = self.store.create_deployment(
            self.deployment_id,
            template=self.topology.template_text,
            template_hash=self.topology.content_hash,
            inputs=self.request.record_inputs,  # the references, never what they resolved to
            owner=self.request.owner,
            backend=self.request.backend,
            dag_id=dag_id or None,
            run_id=run_id or None,
            secret_inputs=self.request.secret_names,
            user_group=self.request.user_group,
        )
        self._record_warnings(record.events, not_honoured)
        # claims the new record, recognizes a retry by the same run, or moves CREATE_FAILED back to
        # CREATE_IN_PROGRESS; another run's action in progress is refused (DeploymentBusyError)
        self.store.begin(self.deployment_id, "CREATE", reason="deployment requested", actor=self.actor)

    def _record_warnings(self, events: Sequence[Event], not_honoured: Sequence[str]) -> None:
        """Log what the deployment gets other than as written (task log), and record it as events once.

        These are the values the loader converted to their declared type (``converted`` events) and what the
        backend deploys without honouring it (``not_honoured`` events, e.g. a Mesos placement constraint).

        :param events: the deployment's events so far (a retried create finds its earlier warnings there)
        :param not_honoured: the backend's warnings (see :meth:`check`)
        """
        conversions = self.topology.conversions
        for conversion in conversions:
            log.warning("Deployment %s: %s: converted %s", self.deployment_id, self.topology.source, conversion.message)
        seen = {event.kind for event in events}
        if "converted" not in seen:
            for conversion in conversions:
                self.store.add_event(self.deployment_id, "converted", conversion.message, conversion.as_dict())
        if "not_honoured" not in seen:
            for message in not_honoured:
                self.store.add_event(self.deployment_id, "not_honoured", message, {"backend": self.request.backend})

    @_step
    def deploy_node(self, node_name: str, *, deadline: float | None = None) -> list[Resource]:
        """Create every instance of one node (idempotent) and record them.

        :param node_name: the node template
        :param deadline: a ``time.monotonic()`` limit (one provider attempt's): no instance is started after it,
            and the backend stops waiting for a boot at it; the request's own deadline applies too
        """
        count = self.plan.node(node_name).count
        self._hold("CREATE", f"deploying {node_name}")
        deadline = _earliest(deadline, self.request.deadline)
        made = []
        started = time.monotonic()
        calls_before = self.backend.api_calls()
        try:
            made = self._create_instances(node_name, count, deadline)
        except BaseException as err:  # also task timeouts and SIGTERM: the teardown must find a FAILED record
            self.fail("CREATE", f"node '{node_name}': {err}")
            raise
        self.store.add_event(
            self.deployment_id,
            "node_created",
            f"{node_name}: {count} instance(s)",
            {"node": node_name, "count": count, "backend_seconds": round(time.monotonic() - started, 3),
             **_api_calls_since(self.backend, calls_before)},
        )
        return made

    def _past_deadline(self, node_name: str, index: int, deadline: float | None) -> None:
        if deadline is not None and time.monotonic() >= deadline:
            raise ResourceTimeoutError(
                f"the provider attempt ran past its time limit (provider_timeout_mins) before instance {index} of "
                f"node '{node_name}'", provider=self.backend.name, resource=f"{self.deployment_id}/{node_name}")

    def _create_instances(self, node_name: str, count: int, deadline: float | None) -> list[Resource]:
        """Create instances 0..count-1, several at once where the backend allows it, within the deadline."""
        if count > 1 and getattr(type(self.backend), "create_group", Backend.create_group) is not Backend.create_group:
            # the backend makes a node's instances together (one launch, one wait): few API calls
            self._past_deadline(node_name, 0, deadline)
            try:
                made = self.backend.create_group([self.spec(node_name, index) for index in range(count)],
                                                 deadline=deadline)
            except BaseException:
                self._record_live(node_name)  # what did start is kept by the backend: the store lists it too
                raise
            self._record(*made)
            return made
        workers = max(1, min(count, self.backend.max_parallel_creates))
        if workers == 1:
            made = []
            for index in range(count):
                self._past_deadline(node_name, index, deadline)
                made.append(self.backend.create(self.spec(node_name, index), deadline=deadline))
                self._record(made[-1])
            return made
        from concurrent.futures import ThreadPoolExecutor

        self._past_deadline(node_name, 0, deadline)
        specs = [self.spec(node_name, index) for index in range(count)]
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"create-{node_name}") as pool:
            futures = [pool.submit(self.backend.create, spec, deadline=deadline) for spec in specs]
            made, first_error = [], None
            for future in futures:  # wait for all: none is left half-made behind a raised error
                try:
                    made.append(future.result())
                    self._record(made[-1])
                except Exception as err:
                    first_error = first_error or err
        if first_error is not None:
            raise first_error
        return made

    @_step
    def request_node(self, node_name: str) -> list[Resource]:
        """Start every instance of a node without waiting (for a deferrable wait); record them.

        :param node_name: the node template
        """
        count = self.plan.node(node_name).count
        self._hold("CREATE", f"deploying {node_name}")
        try:
            made = self.backend.request_group([self.spec(node_name, index) for index in range(count)])
        except BaseException as err:
            self._record_live(node_name)  # what did start is kept by the backend: the store lists it too
            self.fail("CREATE", f"node '{node_name}': {err}")
            raise
        self._record(*made)
        return made

    def node_ready(self, node_name: str) -> tuple[bool, list[Resource]]:
        """Return whether every instance of a node is RUNNING, and its live resources.

        Raises :class:`ResourceCreateError` when one is in ERROR (the deployment is marked failed).

        :param node_name: the node template
        """
        count = self.plan.node(node_name).count
        resources = self.backend.describe(self.deployment_id, node_name)
        broken = [r for r in resources if r.state == ResourceState.ERROR]
        if broken:
            reason = f"node '{node_name}': instance(s) {[r.index for r in broken]} in ERROR" + "".join(
                f"; [{r.index}] {r.attributes['error']}" for r in broken if r.attributes.get("error"))
            self.fail("CREATE", reason)
            raise ResourceCreateError(reason, provider=self.backend.name, resource=self.deployment_id)
        running = [r for r in resources if r.state == ResourceState.RUNNING]
        return len(running) >= count, resources

    @_step
    def finish_node(self, node_name: str) -> list[Resource]:
        """Record a node's instances once a deferrable wait saw them RUNNING.

        :param node_name: the node template
        """
        ready, resources = self.node_ready(node_name)
        if not ready:
            reason = f"node '{node_name}' is not running: {[(r.index, r.state.value) for r in resources]}"
            self.fail("CREATE", reason)
            raise ToscaValidationError(reason, file=self.topology.source, node=node_name)
        self._record(*resources)
        self.store.add_event(self.deployment_id, "node_created", f"{node_name}: {len(resources)} instance(s)",
                             {"node": node_name, "count": len(resources), "deferred": True})
        return resources

    @_step
    def complete_create(self) -> dict[str, Any]:
        """Evaluate the outputs, store them and mark the deployment CREATE_COMPLETE."""
        self._hold("CREATE", "evaluating outputs")
        try:
            outputs = self.outputs()
            self.store.set_outputs(self.deployment_id, mask_outputs(outputs, self.request.secret_outputs))
        except BaseException as err:
            self.fail("CREATE", f"outputs: {err}")
            raise
        self.store.finish(self.deployment_id, "CREATE", ok=True, reason="all nodes deployed")
        return outputs

    @_step
    def create_all(self, *, deadline: float | None = None) -> dict[str, Any]:
        """Register, deploy every node in plan order and complete; return the outputs.

        :param deadline: a ``time.monotonic()`` limit for this attempt (see :meth:`deploy_node`)
        """
        self.begin_create()
        for name in self.plan.order:
            if deadline is not None and time.monotonic() > deadline:
                raise ResourceTimeoutError(f"the provider attempt ran past its time limit before node '{name}'",
                                           provider=self.backend.name, resource=self.deployment_id)
            self.deploy_node(name, deadline=deadline)
        return self.complete_create()

    def outputs(self) -> dict[str, Any]:
        """Evaluate the topology outputs from the live attributes (only the nodes the outputs read are described)."""
        return resolve_outputs(self.topology, self.inputs, _LiveAttributes(self.backend, self.deployment_id))

    # ---------------------------------------------------------------- scale
    @_step
    def scale(self, node_name: str, count: int) -> list[Resource]:
        """Scale a node group (the node and everything hosted on it) to ``count`` instances.

        One update at a time per deployment: a concurrent update raises DeploymentBusyError.

        :param node_name: a node with the scalable capability (or hosted on one)
        :param count: the wanted number of instances
        """
        group_root = self._group_root(node_name)
        self._check_bounds(group_root, count)
        members = scaling_group(self.topology, group_root)
        self.store.begin(self.deployment_id, "UPDATE", reason=f"scale {group_root} to {count}", actor=self.actor)
        try:
            current = {r.index for m in members for r in self.backend.describe(self.deployment_id, m)}
            # and what the store still lists: a delete whose answer was lost took the instance but not the row
            current |= {r.index for r in self.store.resources(self.deployment_id) if r.node_name in members}
            for index in sorted((i for i in current if i >= count), reverse=True):
                self._delete_instance(members, index)
            for index in range(count):
                for member in members:
                    self._record(self.backend.create(self.spec(member, index)))
            outputs = self.outputs()
            self.store.set_outputs(self.deployment_id, mask_outputs(outputs, self.request.secret_outputs))
        except BaseException as err:
            self.fail("UPDATE", f"scaling '{group_root}' to {count}: {err}")
            raise
        self.store.add_event(
            self.deployment_id, "scaled", f"{group_root} -> {count}", {"node": group_root, "count": count}
        )
        self.store.finish(self.deployment_id, "UPDATE", ok=True, reason=f"{group_root} scaled to {count}")
        return self.backend.describe(self.deployment_id, group_root)

    @_step
    def rescale(self, node_name: str, *, add: int = 0, retire: Sequence[int] = (), reason: str = "") -> dict[str, Any]:
        """Add instances to a node group and retire chosen ones, as one update (the elastic scaler's path).

        Unlike :meth:`scale`, which keeps indices 0..count-1, this retires exactly the instances named (the
        idle workers) and gives new instances the lowest free indices. One update at a time per
        deployment: a concurrent update raises DeploymentBusyError.

        :param node_name: a node with the scalable capability (or hosted on one)
        :param add: how many instances to add
        :param retire: the indices of the instances to delete (the node and everything hosted on it)
        :param reason: why (for the history)
        """
        group_root = self._group_root(node_name)
        members = scaling_group(self.topology, group_root)
        current = {r.index for r in self.backend.describe(self.deployment_id, group_root)}
        unknown = sorted(set(retire) - current)
        if unknown or add < 0:
            raise ToscaInputError(f"cannot retire instances {unknown} (existing: {sorted(current)})" if unknown
                                  else f"cannot add {add} instances", file=self.topology.source, node=group_root,
                                  field="capabilities.scalable.count")
        kept = current - set(retire)
        self._check_bounds(group_root, len(kept) + add)
        new, index = [], 0
        while len(new) < add:
            if index not in kept:
                new.append(index)
            index += 1
        what = f"{group_root}: +{len(new)} {new} -{len(retire)} {sorted(retire)}"
        self.store.begin(self.deployment_id, "UPDATE", reason=f"rescale {what}: {reason}"[:500], actor=self.actor)
        try:
            for index in sorted(retire, reverse=True):
                self._delete_instance(members, index)
            for index in new:
                try:
                    for member in members:
                        self._record(self.backend.create(self.spec(member, index)))
                except BaseException as err:
                    # a half-made new instance (a host whose worker failed) is taken back: the next round adds
                    # a whole one instead of leaving this one behind, uncounted, for ever
                    try:
                        self._delete_instance(members, index)
                    except Exception as cleanup:
                        err.add_note(f"deleting the half-made instance {index} also failed: {cleanup}")
                    raise
            self.store.set_outputs(self.deployment_id, mask_outputs(self.outputs(), self.request.secret_outputs))
        except BaseException as err:
            self.fail("UPDATE", f"rescaling {what}: {err}")
            raise
        self.store.add_event(self.deployment_id, "scaled", what,
                             {"node": group_root, "count": len(kept) + len(new), "added": new,
                              "retired": sorted(retire)})
        self.store.finish(self.deployment_id, "UPDATE", ok=True, reason=f"{what}")
        return {"added": new, "retired": sorted(retire), "count": len(kept) + len(new)}

    def _delete_instance(self, members: Sequence[str], index: int) -> None:
        for member in reversed(members):  # what runs on a host goes before the host
            delete_and_forget(self.store, self.backend, self.deployment_id, member, index, forget_missing=True)

    def _group_root(self, node_name: str) -> str:
        self.plan.node(node_name)  # an unknown node: the plan's error
        return scaling_root(self.topology, node_name)

    def _check_bounds(self, node_name: str, count: int) -> None:
        scalable = self.plan.node(node_name).node.scalable  # inputs already resolved in the plan
        low = scalable.min_instances if scalable else 0
        high = scalable.max_instances if scalable and scalable.max_instances != "UNBOUNDED" else None
        high = MAX_INSTANCES if high is None else min(high, MAX_INSTANCES)  # never 10**9 machines by a typo
        if isinstance(count, bool) or not isinstance(count, int) or count < (low or 0) or count > high:
            raise ToscaInputError(
                f"count {count!r} is outside the allowed range [{low or 0}, {high}]",
                file=self.topology.source,
                node=node_name,
                field="capabilities.scalable.count",
            )

    # ---------------------------------------------------------------- delete
    @_step
    def begin_delete(self) -> None:
        """Mark the deployment DELETE_IN_PROGRESS (a retry by the same actor is fine)."""
        self.store.begin(self.deployment_id, "DELETE", reason="deletion requested", actor=self.actor)

    @_step
    def delete_node(self, node_name: str) -> list[Resource]:
        """Delete every instance of one node (what does not exist is skipped).

        :param node_name: the node template
        """
        self._hold("DELETE", f"deleting {node_name}")
        calls_before, started = self.backend.api_calls(), time.monotonic()
        try:
            deleted = delete_and_forget(self.store, self.backend, self.deployment_id, node_name)
        except BaseException as err:
            self.fail("DELETE", f"node '{node_name}': {err}")
            raise
        if deleted:
            self.store.add_event(self.deployment_id, "node_deleted", f"{node_name}: {len(deleted)} instance(s)",
                                 {"node": node_name, "count": len(deleted),
                                  "backend_seconds": round(time.monotonic() - started, 3),
                                  **_api_calls_since(self.backend, calls_before)})
        return deleted

    @_step
    def delete_all(self) -> list[Resource]:
        """Delete every resource of the deployment, dependents first, then sweep what is left."""
        deleted: list[Resource] = []
        for name in reversed(self.plan.order):
            deleted += self.delete_node(name)
        # anything not in the plan (tag sweep)
        return deleted + delete_and_forget(self.store, self.backend, self.deployment_id)

    @_step
    def complete_delete(self) -> None:
        """Check nothing is left and mark the deployment DELETE_COMPLETE."""
        left = [r for r in self.backend.describe(self.deployment_id) if r.state != ResourceState.DELETED]
        if left:
            names = ", ".join(f"{r.node_name}[{r.index}]" for r in left)
            self.fail("DELETE", f"resources still present: {names}")
            raise ToscaValidationError(f"deletion left resources behind: {names}", node=self.deployment_id)
        # rows of what an interrupted delete already removed
        self.store.remove_resources(self.deployment_id,
                                    [(row.node_name, row.index) for row in self.store.resources(self.deployment_id)])
        self.store.finish(self.deployment_id, "DELETE", ok=True, reason="all resources deleted")

    # ---------------------------------------------------------------- helpers
    @contextmanager
    def _leased(self, step: str) -> Iterator[None]:
        """Hold the action's lease while a step works, then keep it for the gap to the run's next task.

        A heartbeat renews the lease in this process's name, so a worker killed mid-step leaves a lease that
        expires (at once on this host: its pid is gone) and the action can be taken over (see
        :mod:`airflow_cloud_paas.reconcile`). A step that ends with the action still in progress (the next
        task deploys the next node) releases it for :attr:`DeploymentStore.step_gap_s`; after a failure the
        lease is left to expire with the process. The step's log line says what it cost: its time, and the
        provider API calls made in it and their time where the backend counts them.

        :param step: the step's name, for the log
        """
        self._steps += 1
        try:
            if self._steps > 1:  # a step inside a step (create_all): the outer one holds the lease
                yield
                return
            started, calls, api_s = time.monotonic(), self.backend.api_calls(), self.backend.api_seconds()
            self.store.renew(self.deployment_id, self.actor)  # no-op before begin: begin leases it
            with Heartbeat(lambda: self.store.renew(self.deployment_id, self.actor), self.store.lease_s / 4):
                yield
            self.store.release(self.deployment_id, self.actor)  # no-op once the action ended
            made = _api_calls_since(self.backend, calls)
            in_api = "" if api_s is None else f" in {self.backend.api_seconds() - api_s:.2f} s"
            log.info("Deployment %s: step %s took %.2f s%s", self.deployment_id, step, time.monotonic() - started,
                     f", {made['api_calls_total']} {self.backend.name} API call(s){in_api} {made['api_calls']}"
                     if made else "")
        finally:
            self._steps -= 1

    def _record(self, *resources: Resource) -> None:
        """Record what the backend made, all in one store transaction."""
        self.store.upsert_resources(self.deployment_id, [
            ResourceUpdate(r.node_name, r.index, r.resource_id, r.state.value, dict(r.attributes)) for r in resources])

    def _record_live(self, node_name: str) -> None:
        """Record what a failed group create or request left of a node (kept, or still booting); never mask the failure.

        The teardown finds everything by tags anyway; the record lists it too, so the store never shows fewer
        instances than the cloud runs.
        """
        try:
            self._record(*(r for r in self.backend.describe(self.deployment_id, node_name)
                           if r.state not in (ResourceState.DELETED, ResourceState.DELETING)))
        except Exception:  # the create's error is the one raised
            log.exception("Could not record the instances of node %s that did start", node_name)

    def _hold(self, action: str, reason: str) -> None:
        """Make sure this actor holds ``<action>_IN_PROGRESS`` (a retry after a failure takes it back).

        Refuses (typed errors from the store) when the deployment is in a state where this action
        makes no sense, e.g. deploying nodes of a DELETE_COMPLETE deployment, so nothing is made
        that no record accounts for.
        """
        record = self.store.get(self.deployment_id)
        if record.status == f"{action}_IN_PROGRESS" and record.actor == self.actor:
            return
        self.store.begin(self.deployment_id, action, reason=reason, actor=self.actor)

    def fail(self, action: str, reason: str) -> None:
        """Mark the action failed; never let a store error mask the original one.

        :param action: CREATE, UPDATE or DELETE
        :param reason: why (for the record)
        """
        mark_failed(self.store, self.deployment_id, action, reason)


def _api_calls_since(backend: Backend, before: Mapping[str, int]) -> dict[str, Any]:
    """Return the provider API calls a backend made since ``before`` (event data), or nothing if it does not count.

    :param backend: the backend
    :param before: its :meth:`Backend.api_calls` then
    """
    now = backend.api_calls()
    made = {name: n - before.get(name, 0) for name, n in sorted(now.items()) if n > before.get(name, 0)}
    return {"api_calls": made, "api_calls_total": sum(made.values())} if now else {}


def _earliest(*deadlines: float | None) -> float | None:
    given = [d for d in deadlines if d is not None]
    return min(given) if given else None


def mark_failed(store: DeploymentStore, deployment_id: str, action: str, reason: str) -> None:
    """Record an action as failed; a store error is logged, never raised over the error being handled.

    :param store: the deployment store
    :param deployment_id: the deployment
    :param action: CREATE, UPDATE or DELETE
    :param reason: why (for the record)
    """
    try:
        store.finish(deployment_id, action, ok=False, reason=reason)
    except Exception:  # the original error is re-raised by the caller; never mask it
        log.exception("Could not mark deployment %s %s_FAILED", deployment_id, action)


def delete_and_forget(
    store: DeploymentStore,
    backend: Backend,
    deployment_id: str,
    node_name: str | None = None,
    index: int | None = None,
    *,
    forget_missing: bool = False,
) -> list[Resource]:
    """Delete resources on the backend (found by tags), then forget them in the store; return what was deleted.

    The one way a resource leaves a deployment, so the store never lists what the backend no longer has.

    :param store: the deployment store
    :param backend: the backend they run on
    :param deployment_id: the deployment
    :param node_name: only this node's resources (None: every resource of the deployment)
    :param index: only this instance
    :param forget_missing: also forget stored resources the backend no longer has (a whole-deployment sweep)
    """
    deleted = backend.delete(deployment_id, node_name, index)
    try:
        store.remove_resources(deployment_id, [(res.node_name, res.index) for res in deleted])
        if forget_missing:
            store.remove_resources(deployment_id, [
                (res.node_name, res.index) for res in store.resources(deployment_id)
                if (node_name is None or res.node_name == node_name) and (index is None or res.index == index)])
    except DeploymentNotFoundError:  # orphans of a deployment the store never knew: nothing to forget
        log.info("Deployment %s is not in the store: deleted %d orphan(s), nothing to forget", deployment_id,
                 len(deleted))
    return deleted


def sweep_delete(
    store: DeploymentStore, backend: Backend, deployment_id: str, actor: str | None = None
) -> list[Resource]:
    """Delete every resource of a deployment found by its tags, with no template needed.

    The path of last resort for a deployment whose template can no longer be loaded (an import
    that does not resolve any more): nothing is left running and the record says so.

    :param store: the deployment store
    :param backend: the backend the deployment runs on
    :param deployment_id: the deployment
    :param actor: who acts
    """
    store.begin(deployment_id, "DELETE", reason="deletion requested (tag sweep)", actor=actor)
    try:
        deleted = delete_and_forget(store, backend, deployment_id, forget_missing=True)
    except BaseException as err:
        mark_failed(store, deployment_id, "DELETE", f"tag sweep: {err}")
        raise
    store.finish(deployment_id, "DELETE", ok=True, reason=f"all resources deleted ({len(deleted)}, tag sweep)")
    return deleted
