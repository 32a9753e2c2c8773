"""Operators that create, scale and delete TOSCA deployments (names follow Airflow's providers)."""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Mapping, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator, conf

from airflow_cloud_paas.operators._defaults import CloudPaaSTaskDefaults

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_cloud_paas.deployer import Deployer
    from airflow_cloud_paas.hooks.store import CloudPaaSStoreHook
    from airflow_cloud_paas.request import DeploymentRequest
    from airflow_cloud_paas.tosca.model import Topology

#: DAG params that are not TOSCA inputs.
RESERVED_PARAMS = ("deployment_id", "keep_deployment", "user_group")
_NAMESPACE = uuid.UUID("6f1b6a52-2a43-4a55-9a3b-5d1c0c8e7a10")


def deployment_id_for(dag_id: str, run_id: str) -> str:
    """Return the deterministic deployment id of a DAG run, so every task and retry agree on it.

    :param dag_id: the DAG's id
    :param run_id: the run's id
    """
    return str(uuid.uuid5(_NAMESPACE, f"{dag_id}/{run_id}"))


class _CloudPaaSBaseOperator(CloudPaaSTaskDefaults, BaseOperator):
    """Shared plumbing: the template, its inputs, the store connection and the backend.

    :param template: path of the TOSCA template (absolute, or relative to the DAG file's folder)
    :param inputs: TOSCA input values; ``None`` takes them from the DAG params (templated)
    :param deployment_id: the deployment's id; ``None`` derives it from the DAG run (templated)
    :param backend: backend name (local, aws, ...); ``None`` uses the connection's default
    :param import_map: TOSCA import URL -> local file, for offline imports
    :param cloud_paas_conn_id: the deployment store connection
    """

    template_fields: Sequence[str] = ("inputs", "deployment_id")
    ui_color = "#cfe8fc"

    def __init__(
        self,
        *,
        template: str | None = None,
        inputs: Mapping[str, Any] | None = None,
        deployment_id: str | None = None,
        backend: str | None = None,
        import_map: Mapping[str, str] | None = None,
        cloud_paas_conn_id: str = "cloud_paas_default",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.template = template
        self.inputs = inputs
        self.deployment_id = deployment_id
        self.backend = backend
        self.import_map = import_map
        self.cloud_paas_conn_id = cloud_paas_conn_id

    @cached_property
    def hook(self) -> CloudPaaSStoreHook:
        """Return the deployment store hook (imported here: DAG files never pay for SQLAlchemy's ORM)."""
        from airflow_cloud_paas.hooks.store import CloudPaaSStoreHook

        return CloudPaaSStoreHook(cloud_paas_conn_id=self.cloud_paas_conn_id)

    def _deployment_id(self, context: Context) -> str:
        if self.deployment_id:
            return str(self.deployment_id)
        params = context.get("params") or {}
        if params.get("deployment_id"):
            return str(params["deployment_id"])
        return deployment_id_for(context["dag"].dag_id, context["run_id"])

    def _topology(self, record_template: str | None = None) -> Topology:
        from airflow_cloud_paas.tosca import load_topology
        from airflow_cloud_paas.tosca_text import load_topology_text

        if self.template:
            return load_topology(self.template, import_map=self.import_map)
        if record_template is not None:
            return load_topology_text(record_template, import_map=self.import_map)
        raise ValueError(f"{self.task_id}: no template given and no deployment record to take it from")

    def _request(self, context: Context, *, existing: str | None = None, need_secrets: bool | Sequence[str] = True,
                 owner: str | None = None, record: Any = None) -> DeploymentRequest:
        """Return this task's deployment request, built from its context: the one way every task builds one.

        The run's conf is checked first (an unknown key is refused, naming what the DAG accepts). Inputs come from
        ``inputs`` or the run's params; ``conn://`` references are resolved here and kept for the record.

        :param context: the task context
        :param existing: None for a new deployment; ``"nodes"`` for a task of a registered deployment (its
            recorded backend is used); ``"record"`` to change a deployment as stored (its inputs too)
        :param need_secrets: with ``"record"``: a secret input not given again is an error (True), only one
            the instances of these nodes' scaling groups read (a scale), or none (False: a delete)
        :param owner: the owner of a new deployment
        :param record: the deployment's record, if the caller already read it
        """
        from airflow.sdk import BaseHook

        from airflow_cloud_paas.request import DeploymentRequest, refuse_unknown_keys

        dag = context["dag"]
        dag_run = context.get("dag_run")
        conf = getattr(dag_run, "conf", None) or {}
        params = context.get("params") or {}
        deployment_id = self._deployment_id(context)
        if existing is not None and record is None:
            record = self.hook.store.get(deployment_id)
        topology = self._topology(record.template if record is not None and existing == "record" else None)
        refuse_unknown_keys(conf, dag.params, where=f"DAG {dag.dag_id}", inputs=topology.inputs)
        if self.inputs is not None:
            given = dict(self.inputs)
        else:
            given = {k: params[k] for k in topology.inputs if k in params and params[k] is not None}
        return DeploymentRequest.build(
            topology,
            deployment_id,
            given,
            record=record if existing == "record" else None,
            # once registered, a deployment's tasks all reach the backend recorded on it
            backend=(record.backend if record is not None else None) or self.backend,
            default_backend=self.hook.backend,
            actor=f"{dag.dag_id}/{context['run_id']}",
            owner=owner,
            # The run's conf names the group to share a new deployment with. The orchestrator API checks that its
            # caller belongs to it; a run triggered in Airflow directly is trusted as any run's conf is.
            user_group=conf.get("user_group") or params.get("user_group") or None,
            get_connection=BaseHook.get_connection,
            need_secrets=need_secrets,
        )

    def _authorize(self, context: Context, action: str) -> None:
        """Refuse, before anything changes, a run triggered by a user who may not ``action`` this deployment.

        A run without a triggering user (scheduled, or a test) acts as the DAG. A user may act on a deployment
        they own, or if listed in ``AIRFLOW_CLOUD_PAAS_ADMINS`` (comma-separated Airflow user names); anyone else
        needs a grant for this very run (a :data:`~airflow_cloud_paas.store.GRANT_EVENT` event), which only the
        orchestrator API writes after checking the caller's groups or admin role. So a user who triggers the
        scale or delete DAG in Airflow, or through ``cloud-paas``, changes only their own deployments.

        :param context: the task context
        :param action: what the run would do (for the message)
        """
        from airflow_cloud_paas.exceptions import DeploymentAccessError
        from airflow_cloud_paas.store import GRANT_EVENT

        user = getattr(context.get("dag_run"), "triggering_user_name", None)
        if not user:
            return
        deployment_id = self._deployment_id(context)
        record = self.hook.store.get(deployment_id)
        admins = {name.strip() for name in os.environ.get("AIRFLOW_CLOUD_PAAS_ADMINS", "").split(",") if name.strip()}
        if record.owner in (None, user) or user in admins:
            return
        if any(e.kind == GRANT_EVENT and (e.data or {}).get("run_id") == context["run_id"] for e in record.events):
            return
        raise DeploymentAccessError(
            f"{user} may not {action} deployment '{deployment_id}': it belongs to another user; its owner, an admin "
            "(AIRFLOW_CLOUD_PAAS_ADMINS) or a member of its group through the orchestrator API may"
        )

    def _kept(self, context: Context) -> str | None:
        """Return why a teardown task must leave the deployment running, or None: the run's ``keep_deployment``
        param, or this run promoted it (it now serves a slot: see :class:`CloudPaaSPromoteDeploymentOperator`)."""
        from airflow_cloud_paas.exceptions import DeploymentNotFoundError
        from airflow_cloud_paas.store import PROMOTED_EVENT

        if _keep(context):
            return "keep_deployment is set"
        try:
            events = self.hook.store.events(self._deployment_id(context))
        except DeploymentNotFoundError:
            return None
        if any(e.kind == PROMOTED_EVENT and (e.data or {}).get("run_id") == context.get("run_id") for e in events):
            return "this run made it a slot's current deployment"
        return None

    def _deployer(self, context: Context, request: DeploymentRequest | None = None, **kwargs: Any) -> Deployer:
        """Return the Deployer of this task's request (see :meth:`_request` for ``kwargs``).

        :param context: the task context
        :param request: a request already built
        """
        from airflow_cloud_paas.backends.factory import backend_from_hook
        from airflow_cloud_paas.deployer import Deployer

        request = request or self._request(context, **kwargs)
        return Deployer(request, self.hook.store, backend_from_hook(self.hook, request.backend))


class CloudPaaSCreateDeploymentOperator(_CloudPaaSBaseOperator):
    """Create a deployment of a TOSCA template: register it, deploy every node, return the outputs.

    With ``nodes=[]`` only registers the deployment (CREATE_IN_PROGRESS): the ToscaTaskGroup then
    deploys each node in its own task and completes it with :class:`CloudPaaSCompleteDeploymentOperator`.

    With ``providers`` the whole deployment is made in this task on the first provider that
    succeeds, as the INDIGO orchestrator did: each failed attempt is deleted (unless
    ``keep_last_attempt``) and the next provider tried; see :mod:`airflow_cloud_paas.placement`.

    :param nodes: ``None`` deploys every node; an empty list only registers the deployment
    :param owner: the deployment's owner (defaults to the DAG's owner)
    :param providers: candidate providers, ``"backend"`` / ``"backend:conn_id"`` or mappings, in order
        of preference (templated)
    :param rank_providers: reorder them by fit, success rate and deploy time recorded in the store
    :param max_providers_retry: try at most this many providers
    :param keep_last_attempt: leave the last failed attempt in place for debugging
    :param timeout_mins: the deployment's time limit over all attempts
    :param provider_timeout_mins: each attempt's time limit
    """

    template_fields: Sequence[str] = (*_CloudPaaSBaseOperator.template_fields, "providers")

    def __init__(
        self,
        *,
        nodes: Sequence[str] | None = None,
        owner: str | None = None,
        providers: Sequence[Any] | None = None,
        rank_providers: bool = False,
        max_providers_retry: int | None = None,
        keep_last_attempt: bool = False,
        timeout_mins: float | None = None,
        provider_timeout_mins: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.nodes = nodes
        self.deployment_owner = owner
        self.providers = providers
        self.rank_providers = rank_providers
        self.max_providers_retry = max_providers_retry
        self.keep_last_attempt = keep_last_attempt
        self.timeout_mins = timeout_mins
        self.provider_timeout_mins = provider_timeout_mins

    def execute(self, context: Context) -> dict[str, Any]:
        if self.providers:
            return self._execute_with_fallback(context)
        deployer = self._deployer(context, owner=self._new_owner(context))
        self.log.info("Deployment %s of %s on %s", deployer.deployment_id, deployer.topology.source,
                      deployer.request.backend)
        deployer.begin_create()
        if self.nodes is not None and not self.nodes:
            return {"deployment_id": deployer.deployment_id}
        for name in self.nodes or deployer.plan.order:
            deployer.deploy_node(name)
        public = _public(deployer.complete_create(), deployer.request.secret_outputs)
        for key, value in public.items():  # one XCom per output, as the outputs task does
            context["ti"].xcom_push(key=key, value=value)
        self.log.info("Deployment %s CREATE_COMPLETE", deployer.deployment_id)
        return {"deployment_id": deployer.deployment_id, "outputs": public}

    def _new_owner(self, context: Context) -> str:
        """Return who owns a new deployment: who triggered the run (never a conf field), else the given owner."""
        triggered_by = getattr(context.get("dag_run"), "triggering_user_name", None)
        return triggered_by or self.deployment_owner or self.owner or "airflow"

    def _execute_with_fallback(self, context: Context) -> dict[str, Any]:
        from airflow_cloud_paas.backends.factory import backend_from_hook
        from airflow_cloud_paas.placement import PlacementPolicy, ProviderCandidate, deploy_with_fallback

        request = self._request(context, owner=self._new_owner(context))
        policy = PlacementPolicy(
            candidates=tuple(ProviderCandidate.parse(p) for p in self.providers),
            rank=self.rank_providers,
            max_providers_retry=self.max_providers_retry,
            keep_last_attempt=self.keep_last_attempt,
            timeout_mins=self.timeout_mins,
            provider_timeout_mins=self.provider_timeout_mins,
        )
        deployment_id = request.deployment_id
        chosen, outputs = deploy_with_fallback(
            request,
            self.hook.store,
            policy,
            lambda candidate: backend_from_hook(self.hook, candidate.ref, **candidate.options),
        )
        public = _public(outputs, request.secret_outputs)
        for key, value in public.items():  # one XCom per output, as the outputs task does
            context["ti"].xcom_push(key=key, value=value)
        self.log.info("Deployment %s CREATE_COMPLETE on %s", deployment_id, chosen.ref)
        return {"deployment_id": deployment_id, "provider": chosen.ref, "outputs": public}


class CloudPaaSDeployNodeOperator(_CloudPaaSBaseOperator):
    """Deploy every instance of one node template of a registered deployment (idempotent).

    With ``deferrable=True`` the instances are requested and the wait for them to run happens in
    the triggerer (CloudPaaSNodeReadyTrigger): no worker slot is held while VMs boot.

    :param node_name: the node template to deploy
    :param deferrable: wait in the triggerer
    :param poll_interval: seconds between the trigger's polls of the provider
    :param wait_timeout: seconds to wait for the instances (``None``: no limit)
    """

    template_fields: Sequence[str] = (*_CloudPaaSBaseOperator.template_fields, "node_name")

    def __init__(
        self,
        *,
        node_name: str,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        poll_interval: float = 10.0,
        wait_timeout: float | None = 3600.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.node_name = node_name
        self.deferrable = deferrable
        self.poll_interval = poll_interval
        self.wait_timeout = wait_timeout

    def execute(self, context: Context) -> list[dict[str, Any]]:
        deployer = self._deployer(context, existing="nodes")
        if not self.deferrable:
            made = deployer.deploy_node(self.node_name)
            self.log.info("Node %s: %d instance(s) running", self.node_name, len(made))
            return [{"node": r.node_name, "index": r.index, "state": r.state.value} for r in made]
        deployer.request_node(self.node_name)
        ready, _ = deployer.node_ready(self.node_name)
        if ready:
            return self._finish(deployer)
        from airflow_cloud_paas.triggers.deployment import CloudPaaSNodeReadyTrigger

        # no process works on the action while the triggerer waits: hold it for the whole wait (and a step gap)
        deployer.store.renew(deployer.deployment_id, deployer.actor, holder=None,
                             seconds=(self.wait_timeout or 7 * 86400) + deployer.store.step_gap_s)
        self.defer(
            trigger=CloudPaaSNodeReadyTrigger(
                deployment_id=deployer.deployment_id,
                node_name=self.node_name,
                count=deployer.plan.node(self.node_name).count,
                backend=deployer.request.backend,  # the backend the deployment is recorded on
                cloud_paas_conn_id=self.cloud_paas_conn_id,
                poll_interval=self.poll_interval,
                timeout=self.wait_timeout,
            ),
            method_name="execute_complete",
        )

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """Resume after the trigger: record the running instances, or fail the deployment.

        :param context: the task context
        :param event: the trigger's event payload
        """
        from airflow_cloud_paas.exceptions import ResourceCreateError

        deployer = self._deployer(context, existing="nodes")
        if not event or event.get("status") != "success":
            reason = f"node '{self.node_name}': {(event or {}).get('status')} {(event or {}).get('message') or ''}"
            reason = f"{reason.strip()}{_instance_errors(deployer, self.node_name)}"
            deployer.fail("CREATE", reason.strip())
            raise ResourceCreateError(reason.strip(), provider=deployer.backend.name, resource=deployer.deployment_id)
        return self._finish(deployer)

    def _finish(self, deployer: Deployer) -> list[dict[str, Any]]:
        made = deployer.finish_node(self.node_name)
        self.log.info("Node %s: %d instance(s) running", self.node_name, len(made))
        return [{"node": r.node_name, "index": r.index, "state": r.state.value} for r in made]


class CloudPaaSCompleteDeploymentOperator(_CloudPaaSBaseOperator):
    """Evaluate the outputs of a deployment, store them and mark it CREATE_COMPLETE."""

    def execute(self, context: Context) -> dict[str, Any]:
        deployer = self._deployer(context, existing="nodes")
        outputs = _public(deployer.complete_create(), deployer.request.secret_outputs)
        for key, value in outputs.items():  # one XCom per output, for ToscaTaskGroup.output(name)
            context["ti"].xcom_push(key=key, value=value)
        self.log.info("Deployment %s CREATE_COMPLETE", deployer.deployment_id)
        return outputs


class CloudPaaSScaleNodeGroupOperator(_CloudPaaSBaseOperator):
    """Scale a node group of a deployment to ``count`` instances (an UPDATE of the deployment).

    The template is taken from the deployment record unless given. A concurrent update of the same
    deployment is refused with DeploymentBusyError (the orchestrator's HTTP 409).

    :param node_name: the scalable node (or a node hosted on it)
    :param count: the wanted number of instances (templated)
    """

    template_fields: Sequence[str] = (*_CloudPaaSBaseOperator.template_fields, "node_name", "count")

    def __init__(self, *, node_name: str, count: int | str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.node_name = node_name
        self.count = count

    def execute(self, context: Context) -> list[dict[str, Any]]:
        self._authorize(context, "scale")
        # a secret input is needed again only if the new instances of the group read it
        deployer = self._deployer(context, existing="record", need_secrets=[self.node_name])
        count = int(self.count)
        resources = deployer.scale(self.node_name, count)
        self.log.info("Deployment %s: %s scaled to %d", deployer.deployment_id, self.node_name, count)
        return [{"node": r.node_name, "index": r.index, "state": r.state.value} for r in resources]


class CloudPaaSUpdateDeploymentOperator(CloudPaaSScaleNodeGroupOperator):
    """Update a deployment; today an update is a scale of one node group (as the orchestrator's PUT)."""


class CloudPaaSDeleteNodeOperator(_CloudPaaSBaseOperator):
    """Delete every instance of one node of a deployment (a teardown step; missing is fine).

    :param node_name: the node template
    """

    template_fields: Sequence[str] = (*_CloudPaaSBaseOperator.template_fields, "node_name")

    def __init__(self, *, node_name: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.node_name = node_name

    def execute(self, context: Context) -> int:
        kept = self._kept(context)
        if kept:
            self.log.info("%s: node %s is left running", kept, self.node_name)
            return 0
        self._authorize(context, "delete")
        deployer = self._deployer(context, existing="record", need_secrets=False)
        deployer.begin_delete()
        return len(deployer.delete_node(self.node_name))


class CloudPaaSDeleteDeploymentOperator(_CloudPaaSBaseOperator):
    """Delete a deployment: every resource it has on the backend (found by tags), then the record's status.

    Deleting a deployment that never got past registration, or whose nodes half-failed, finds
    and removes whatever exists. When its template cannot be loaded any more, the resources are
    found by their tags alone.

    :param force: also delete a deployment stuck in another run's ``*_IN_PROGRESS`` (that run died):
        the stuck action is first recorded as failed (templated)
    """

    template_fields: Sequence[str] = (*_CloudPaaSBaseOperator.template_fields, "force")

    def __init__(self, *, force: bool | str = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.force = force

    def execute(self, context: Context) -> str:

        kept = self._kept(context)
        if kept:
            self.log.info("%s: the deployment is left running", kept)
            return "KEPT"
        return self._delete(context)

    def _delete(self, context: Context, *, authorize: bool = True) -> str:
        """Delete the deployment (the access check first, unless the caller made its own); return its final status.

        :param context: the task context
        :param authorize: check that the run's user may delete it
        """
        from airflow_cloud_paas.exceptions import ToscaError

        if authorize:
            self._authorize(context, "delete")
        deployment_id = self._deployment_id(context)
        store = self.hook.store
        if str(self.force).lower() in ("true", "1", "yes"):
            record = store.get(deployment_id)
            if record.status.endswith("_IN_PROGRESS"):
                action = record.status.split("_", 1)[0]
                self.log.warning("Forcing: %s (held by %s) recorded as %s_FAILED", record.status, record.actor, action)
                store.set_status(deployment_id, f"{action}_FAILED", reason=f"forced delete by {self.task_id}")
        try:
            deployer = self._deployer(context, existing="record", need_secrets=False)
        except ToscaError as err:
            from airflow_cloud_paas.backends.factory import backend_from_hook
            from airflow_cloud_paas.deployer import sweep_delete

            record = store.get(deployment_id)
            self.log.warning("Template of %s cannot be loaded (%s): deleting by tags", deployment_id, err)
            deleted = sweep_delete(store, backend_from_hook(self.hook, record.backend or self.backend),
                                   deployment_id, actor=f"{context['dag'].dag_id}/{context['run_id']}")
            return f"DELETE_COMPLETE ({len(deleted)} resources, tag sweep)"
        deployer.begin_delete()
        deleted = deployer.delete_all()
        deployer.complete_delete()
        self.log.info("Deployment %s DELETE_COMPLETE (%d resources deleted)", deployer.deployment_id,
                      len(deleted))
        return "DELETE_COMPLETE"


class CloudPaaSPromoteDeploymentOperator(CloudPaaSDeleteDeploymentOperator):
    """Make this run's deployment the current one of a slot, then delete the deployment it replaces (blue/green).

    A slot names a service that one deployment at a time provides (e.g. the serving of a model): its current
    deployment's id is kept in the Airflow Variable ``cloud_paas_slot_<slot>``. Put this task after the new
    deployment is checked (a smoke test): until then the previous one keeps serving; then the slot points at the
    new one, which gets a ``promoted`` event (so its own run's teardown keeps it, while a run that failed before
    promoting tears its deployment down), and the previous one is deleted. A deployment that served the slot
    belongs to the slot: any run allowed to promote into it retires it (a scheduled run's deployment has no user to
    ask); a deployment id found in the slot that never served it needs the usual access check. A retry (the delete
    failed) deletes what the first try replaced. Runs of one slot must not promote at the same time: give the DAG
    ``max_active_runs=1``. Returns ``{"slot", "current", "retired"}`` (``retired``: None when there was none).

    :param slot: the slot's name (templated; letters, digits, '_', '-', '.')
    :param deployment_id: the new deployment (templated; default: this run's)
    """

    template_fields: Sequence[str] = (*CloudPaaSDeleteDeploymentOperator.template_fields, "slot")

    def __init__(self, *, slot: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.slot = slot

    def execute(self, context: Context) -> dict[str, Any]:
        import re

        from airflow.sdk import Variable

        from airflow_cloud_paas.exceptions import DeploymentNotFoundError, ServiceConfigError
        from airflow_cloud_paas.store import PROMOTED_EVENT

        if not isinstance(self.slot, str) or not re.fullmatch(r"[A-Za-z0-9_.-]{1,100}", self.slot):
            raise ServiceConfigError("1-100 letters, digits, '_', '-' or '.'", field="slot", value=self.slot)
        key = f"cloud_paas_slot_{self.slot}"
        current = self._deployment_id(context)
        self._authorize(context, "promote")  # the run's user may change the new deployment (it exists, too)
        store = self.hook.store
        earlier = [e for e in store.events(current) if e.kind == PROMOTED_EVENT
                   and (e.data or {}).get("run_id") == context.get("run_id")]
        if earlier:  # a retry: the slot already points here; retire what the first try replaced
            retired = (earlier[-1].data or {}).get("replaces")
        else:
            previous = Variable.get(key, default=None)
            retired = previous if previous and previous != current else None
            store.add_event(current, PROMOTED_EVENT, f"current deployment of slot {self.slot}",
                            {"slot": self.slot, "run_id": context.get("run_id"), "replaces": retired})
            Variable.set(key, current, description=f"the deployment serving {self.slot} (set by {self.task_id})")
        if retired:
            self.deployment_id = retired
            try:
                record = store.get(retired)
                if record.status == "DELETE_COMPLETE":
                    raise DeploymentNotFoundError(retired)
                # a deployment this slot served belongs to the slot (a scheduled run's has no user): whoever may run
                # the DAG that promotes into it may retire it; any other deployment needs the usual access
                status = self._delete(context, authorize=not served_slot(store, retired, self.slot))
                self.log.info("Slot %s: %s is current; %s replaced and %s", self.slot, current, retired, status)
            except DeploymentNotFoundError:
                self.log.info("Slot %s: %s is current; %s was already gone", self.slot, current, retired)
        else:
            self.log.info("Slot %s: %s is current (it replaces none)", self.slot, current)
        return {"slot": self.slot, "current": current, "retired": retired}


def _instance_errors(deployer: Deployer, node_name: str) -> str:
    """Return why a node's instances are in ERROR, as the backend says (``; [index] why``); best effort."""
    from airflow_cloud_paas.backends.base import ResourceState

    try:
        broken = [r for r in deployer.backend.describe(deployer.deployment_id, node_name)
                  if r.state == ResourceState.ERROR and r.attributes.get("error")]
    except Exception:  # the failure being reported is the one that matters
        log.exception("Could not read why node %s failed", node_name)
        return ""
    return "".join(f"; [{r.index}] {r.attributes['error']}" for r in broken)


def served_slot(store: Any, deployment_id: str, slot: str) -> bool:
    """Return whether a deployment was ever promoted into a slot (then the slot's runs may retire it).

    :param store: the deployment store
    :param deployment_id: the deployment
    :param slot: the slot
    """
    from airflow_cloud_paas.store import PROMOTED_EVENT

    return any(e.kind == PROMOTED_EVENT and (e.data or {}).get("slot") == slot for e in store.events(deployment_id))


def _keep(context: Context) -> bool:
    params = context.get("params") or {}
    return bool(params.get("keep_deployment"))


def _public(outputs: Mapping[str, Any], secret_names: Sequence[str] = ()) -> dict[str, Any]:
    """Return outputs safe for XCom: secret ones (named so, or built from a secret) masked, hidden in logs.

    :param outputs: the evaluated outputs
    :param secret_names: the outputs built from a secret (:attr:`DeploymentRequest.secret_outputs`)
    """
    from airflow_cloud_paas.secrets import mask_outputs

    return mask_outputs(outputs, secret_names)


class CloudPaaSSweepOrphansOperator(_CloudPaaSBaseOperator):
    """Find and delete every resource tagged with a deployment's id on each given provider.

    For what a crash, a lost record or a provider's own failure left behind: resources are
    found by their tags alone, no template needed. Missing resources are fine.

    :param providers: provider refs (``backend`` or ``backend:conn_id``) to sweep (templated)
    """

    template_fields: Sequence[str] = (*_CloudPaaSBaseOperator.template_fields, "providers")

    def __init__(self, *, providers: Sequence[str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.providers = providers

    def execute(self, context: Context) -> dict[str, int]:
        from airflow_cloud_paas.backends.factory import backend_from_hook
        from airflow_cloud_paas.deployer import delete_and_forget
        from airflow_cloud_paas.exceptions import DeploymentNotFoundError

        deployment_id = self._deployment_id(context)
        swept: dict[str, int] = {}
        for ref in self.providers:
            deleted = delete_and_forget(self.hook.store, backend_from_hook(self.hook, ref), deployment_id)
            swept[ref] = len(deleted)
            self.log.info("Swept %d orphan(s) of %s on %s", len(deleted), deployment_id, ref)
            if deleted:
                try:
                    self.hook.store.add_event(deployment_id, "swept", f"{len(deleted)} orphan(s) on {ref}",
                                              {"provider": ref, "count": len(deleted)})
                except DeploymentNotFoundError:
                    pass  # orphans of a deployment the store never knew: deleting them is the point
        return swept


class CloudPaaSReconcileOperator(_CloudPaaSBaseOperator):
    """Recover every deployment whose worker died: finish or undo its stuck action (see ``reconcile``).

    An action ``*_IN_PROGRESS`` whose lease expired (its task was killed, its worker lost) and whose DAG run has
    ended (a run still going retries or tears down itself first) is taken over:
    an interrupted create is undone, an interrupted delete finished, an interrupted scale recorded failed with
    the store's resources made equal to the backend's. A ``DELETE_COMPLETE`` deployment that still lists
    resources has them deleted; outputs an older release stored in clear though built from a secret are masked.
    Returns the findings; fails after trying all if one could not be reconciled.
    """

    def execute(self, context: Context) -> list[dict[str, Any]]:
        from airflow_cloud_paas.backends.factory import backend_from_hook
        from airflow_cloud_paas.reconcile import mask_stored_outputs, reconcile

        masked = mask_stored_outputs(self.hook.store)
        if masked:
            self.log.warning("Masked outputs built from a secret in %d older record(s): %s", len(masked), masked)
        def run_state(actor: str) -> str | None:
            dag_id, sep, run_id = actor.partition("/")
            try:
                return context["ti"].get_dagrun_state(dag_id, run_id) if sep else None
            except Exception:  # no such run (a CLI or test actor)
                return None

        findings = reconcile(self.hook.store, lambda record: backend_from_hook(self.hook, record.backend),
                             actor=f"{context['dag'].dag_id}/{context['run_id']}",
                             # a run still queued or running will retry or tear down itself; one that has ended
                             # will never run the next task its action waits for
                             holder_active=lambda actor: run_state(actor) in ("queued", "running"),
                             run_ended=lambda actor: run_state(actor) in ("success", "failed"))
        for finding in findings:
            self.log.warning("Deployment %s: %s -> %s (%s)", finding.deployment_id, finding.before, finding.after,
                             finding.error or finding.why)
        self.log.info("%d deployment(s) reconciled", len(findings))
        failed = [f for f in findings if f.error]
        if failed:
            raise RuntimeError(f"{len(failed)} deployment(s) could not be reconciled: "
                               + "; ".join(f"{f.deployment_id}: {f.error}" for f in failed))
        return [f.to_dict() for f in findings]
