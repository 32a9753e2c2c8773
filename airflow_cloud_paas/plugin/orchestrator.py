"""An API shaped like the INDIGO PaaS orchestrator's ``/deployments``, served by the plugin inside Airflow.

Scripts written for the orchestrator's REST API work against ``<airflow>/cloud-paas/orchestrator`` with the base
URL changed: the same paths, bodies (``template``, ``parameters``, ``userGroup``) and paged answers (``content``,
``page``, ``links``). Creating, updating (scaling) and deleting trigger the same DAGs as the CLI and the UI, in this
API server, as the authenticated caller (the run's ``triggering_user_name``, which becomes the deployment's owner).

What differs from the orchestrator: a template is deployed by the Airflow DAG that packages it (the template sent
must be one the portal's catalogue offers); an update may only change instance counts (the scale DAG);
``/log`` is the deployment's event history. Secrets never appear in an answer: secret inputs are never stored,
and outputs and error messages are masked.
"""

from __future__ import annotations

import logging
import math
import uuid
from typing import Annotated, Any

from fastapi import Body, Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import PlainTextResponse

from airflow_cloud_paas.exceptions import DeploymentNotFoundError, ToscaError
from airflow_cloud_paas.plugin.access import Identity, current_identity, may_act
from airflow_cloud_paas.secrets import is_secret_name, mask_secrets

log = logging.getLogger(__name__)

#: packaged template -> the DAG that deploys it and keeps it running (what a create triggers)
SCALE_DAG_ID = "cloud_paas_scale_deployment"
DELETE_DAG_ID = "cloud_paas_delete_deployment"
#: prefix of the run ids this API gives the runs it triggers (``<prefix><action>__<deployment id>__<n>``)
RUN_PREFIX = "orchestrator__"

Caller = Annotated[Identity, Depends(current_identity)]


def _store():
    from airflow_cloud_paas.plugin.api import _store as store

    return store()


def _packaged_hashes() -> dict[str, str]:
    """Return template content hash -> DAG id, for each packaged template a DAG deploys and keeps running.

    The DAGs are those the portal's catalogue offers (:func:`airflow_cloud_paas.plugin.portal.template_dags`).
    """
    from pathlib import Path

    from airflow_cloud_paas.converter import packaged_template
    from airflow_cloud_paas.plugin.portal import dags_folder, template_dags
    from airflow_cloud_paas.tosca import load_topology

    return {load_topology(packaged_template(name)).content_hash: dags[0]["dag_id"]
            for name, dags in template_dags(Path(dags_folder())).items() if dags[0]["keeps"]}


def _scrub(text: str, values: dict[str, Any]) -> str:
    """Return ``text`` with the values of secret-named parameters replaced by ``***``."""
    for name, value in values.items():
        if is_secret_name(name) and value not in (None, "") and str(value) in text:
            text = text.replace(str(value), "***")
    return text


def _bad_request(err: ToscaError, parameters: dict[str, Any]) -> HTTPException:
    """Return the 400 answer of a template or parameter error: node and field named, no server path."""
    where = {k: v for k, v in (("node", err.node), ("field", err.field)) if v}
    prefix = ", ".join(f"{k} '{v}'" for k, v in where.items())
    message = _scrub(err.message, parameters)
    return HTTPException(400, {"message": f"{prefix}: {message}" if prefix else message, **where})


def _validate(template: str, parameters: dict[str, Any]) -> Any:
    """Return the topology of ``template`` after checking ``parameters`` against it (400 naming node/field)."""
    from airflow_cloud_paas.plan import PLAN_ONLY_ID
    from airflow_cloud_paas.request import DeploymentRequest
    from airflow_cloud_paas.tosca_text import load_topology_text

    try:
        topology = load_topology_text(template)
        DeploymentRequest.build(topology, PLAN_ONLY_ID, parameters, resolve_refs=False).plan  # noqa: B018
    except ToscaError as err:
        raise _bad_request(err, parameters) from None
    return topology


def trigger_dag(dag_id: str, conf: dict[str, Any], user_name: str, run_id: str) -> str:
    """Queue a run of ``dag_id`` with ``conf``, triggered by ``user_name``, as Airflow's own trigger endpoint does.

    :param dag_id: the DAG
    :param conf: the run's conf (checked against the DAG's params)
    :param user_name: who triggers it (recorded as the run's ``triggering_user_name``)
    :param run_id: the run's id
    """
    from airflow.exceptions import ParamValidationError
    from airflow.models.dag import DagModel
    from airflow.models.dagbag import DBDagBag
    from airflow.sdk import timezone
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState
    from airflow.utils.types import DagRunTriggeredByType, DagRunType
    from sqlalchemy import select

    with create_session() as session:
        model = session.scalar(select(DagModel).where(DagModel.dag_id == dag_id, ~DagModel.is_stale))
        dag = DBDagBag().get_latest_version_of_dag(dag_id, session=session) if model is not None else None
        if dag is None:
            raise HTTPException(503, f"the DAG {dag_id} is not loaded in this Airflow yet: check its dags folder "
                                     "and the dag-processor, then retry")
        if model.is_paused:
            model.is_paused = False
        now = timezone.utcnow()
        try:
            dag.create_dagrun(
                run_id=run_id, logical_date=now, data_interval=dag.timetable.infer_manual_data_interval(run_after=now),
                run_after=now, conf=conf, run_type=DagRunType.MANUAL, triggered_by=DagRunTriggeredByType.REST_API,
                triggering_user_name=user_name, state=DagRunState.QUEUED, session=session,
            )
        except (ParamValidationError, ValueError) as err:
            raise HTTPException(400, _scrub(str(err), conf)) from None
    log.info("Triggered %s run %s for %s", dag_id, run_id, user_name)
    return run_id


def _run_id(action: str, deployment_id: str) -> str:
    return f"{RUN_PREFIX}{action}__{deployment_id}__{uuid.uuid4().hex[:8]}"


def _granted(deployment_id: str, action: str, caller: Identity) -> str:
    """Return the id of the run this API is about to trigger, after recording that ``caller`` may act on it.

    The scale and delete tasks let a run act on another user's deployment only with such an ``authorized`` event
    naming the run (:data:`airflow_cloud_paas.store.GRANT_EVENT`): only this API, which has checked the caller's
    groups and role, writes one.
    """
    from airflow_cloud_paas.store import GRANT_EVENT

    run_id = _run_id(action, deployment_id)
    why = "an admin" if caller.admin else "the owner or a member of its group"
    _store().add_event(deployment_id, GRANT_EVENT, f"{action} by {caller.name} ({why}) in run {run_id}",
                       {"run_id": run_id, "by": caller.name, "action": action})
    return run_id


def _links(request: Request, deployment_id: str) -> list[dict[str, str]]:
    # base_url carries the mount's root path; url_for would look the route up in Airflow's own router
    base = f"{str(request.base_url).rstrip('/')}/deployments/{deployment_id}"
    return [{"rel": "self", "href": base}, {"rel": "resources", "href": f"{base}/resources"},
            {"rel": "template", "href": f"{base}/template"}, {"rel": "log", "href": f"{base}/log"}]


def _deployment(record: Any, request: Request, issuer: str | None = None) -> dict[str, Any]:
    """Return a record as the orchestrator shows a deployment (secrets masked, inputs left out)."""
    return {
        "uuid": record.id,
        "creationTime": record.created_at.isoformat(),
        "updateTime": record.updated_at.isoformat(),
        "status": record.status.value,
        "statusReason": record.status_reason,
        "task": "NONE" if not record.status.value.endswith("_IN_PROGRESS") else "DEPLOYER",
        "outputs": mask_secrets(dict(record.outputs)),
        "createdBy": {"subject": record.owner, "issuer": issuer},
        "userGroup": record.user_group,
        "cloudProviderName": record.backend,
        "links": _links(request, record.id),
    }


def _visible(deployment_id: str, caller: Identity) -> Any:
    """Return the record if the caller may act on it; 404 otherwise (another's deployment is not disclosed)."""
    try:
        record = _store().get(deployment_id)
    except DeploymentNotFoundError:
        record = None
    if record is None or not may_act(caller, record):
        raise HTTPException(404, f"no deployment {deployment_id} among yours or your groups'")
    return record


def _issuer() -> str | None:
    from airflow_cloud_paas.plugin.access import oidc_verifier

    verifier = oidc_verifier()
    return verifier.settings.issuer if verifier is not None else None


def create_app() -> FastAPI:
    """Return the orchestrator-compatible FastAPI application (mounted under ``/cloud-paas/orchestrator``)."""
    app = FastAPI(
        title="Cloud PaaS orchestrator API",
        version="1",
        description="The INDIGO PaaS orchestrator's /deployments API, served by Airflow. Authenticate with an "
                    "access token of the configured OIDC provider, or an Airflow login.",
    )

    @app.get("/deployments")
    def list_deployments(
        request: Request,
        caller: Caller,
        createdBy: str | None = Query(None, description="`me` for your own deployments only"),  # noqa: N803
        page: int = Query(0, ge=0, description="page number, from 0"),
        size: int = Query(10, ge=1, le=1000, description="deployments per page"),
    ) -> dict[str, Any]:
        if createdBy not in (None, "me", caller.name):
            raise HTTPException(400, "createdBy must be 'me' (or your own subject)")
        store = _store()
        if createdBy is not None:
            records = store.list(owner=caller.name, limit=100_000)
        elif caller.admin:
            records = store.list(limit=100_000)
        else:
            records = store.list(owner=caller.name, groups=sorted(caller.groups), limit=100_000)
        issuer = _issuer() if caller.source == "oidc" else None
        chunk = records[page * size:(page + 1) * size]
        base = str(request.url.remove_query_params(["page"]))
        total_pages = math.ceil(len(records) / size)
        links = [{"rel": "self", "href": str(request.url)}]
        if page + 1 < total_pages:
            links.append({"rel": "next", "href": f"{base}{'&' if '?' in base else '?'}page={page + 1}"})
        return {
            "content": [_deployment(r, request, issuer) for r in chunk],
            "page": {"size": size, "totalElements": len(records), "totalPages": total_pages, "number": page},
            "links": links,
        }

    @app.post("/deployments", status_code=201)
    def create_deployment(
        request: Request,
        caller: Caller,
        template: Annotated[str, Body(description="the TOSCA template (one a service DAG deploys)")],
        parameters: Annotated[dict[str, Any] | None, Body(description="the template's input values")] = None,
        userGroup: Annotated[str | None, Body(description="share it with this group of yours")] = None,  # noqa: N803
    ) -> dict[str, Any]:
        parameters = dict(parameters or {})
        if userGroup is not None and userGroup not in caller.groups and not caller.admin:
            raise HTTPException(403, f"you are not a member of the group '{userGroup}'")
        topology = _validate(template, parameters)
        dag_id = _packaged_hashes().get(topology.content_hash)
        if dag_id is None:
            raise HTTPException(400, {"message": "no DAG in this Airflow deploys this template; send one of the "
                                                 "packaged templates its catalogue offers", "field": "template"})
        deployment_id = str(uuid.uuid4())
        conf = {**parameters, "deployment_id": deployment_id, "keep_deployment": True}
        if userGroup is not None:
            conf["user_group"] = userGroup
        run_id = trigger_dag(dag_id, conf, caller.name, _run_id("create", deployment_id))
        return {
            "uuid": deployment_id, "status": "CREATE_IN_PROGRESS", "statusReason": "deployment requested",
            "task": "NONE", "outputs": {}, "createdBy": {"subject": caller.name, "issuer": _issuer()},
            "userGroup": userGroup, "dagId": dag_id, "dagRunId": run_id, "links": _links(request, deployment_id),
        }

    @app.get("/deployments/{deployment_id}")
    def get_deployment(deployment_id: str, request: Request, caller: Caller) -> dict[str, Any]:
        return _deployment(_visible(deployment_id, caller), request, _issuer() if caller.source == "oidc" else None)

    @app.put("/deployments/{deployment_id}", status_code=202)
    def update_deployment(
        deployment_id: str,
        caller: Caller,
        template: Annotated[str | None, Body(description="the deployment's template (it cannot change)")] = None,
        parameters: Annotated[dict[str, Any] | None, Body(description="new input values (instance counts)")] = None,
    ) -> dict[str, Any]:
        from airflow_cloud_paas.plan import PLAN_ONLY_ID
        from airflow_cloud_paas.request import DeploymentRequest
        from airflow_cloud_paas.tosca.resolve import scaling_root
        from airflow_cloud_paas.tosca_text import load_topology_text

        record = _visible(deployment_id, caller)
        if record.status.value.endswith("_IN_PROGRESS"):
            raise HTTPException(409, f"deployment {deployment_id} is {record.status.value}: wait until it ends")
        parameters = dict(parameters or {})
        topology = load_topology_text(record.template)
        if template is not None and load_topology_text(template).content_hash != topology.content_hash:
            raise HTTPException(400, {"message": "changing a deployment's template is not supported; send its own "
                                                 "template with new instance counts", "field": "template"})
        try:
            old = DeploymentRequest.build(topology, PLAN_ONLY_ID, record.inputs, resolve_refs=False).plan
            new = DeploymentRequest.build(topology, PLAN_ONLY_ID, {**record.inputs, **parameters},
                                          resolve_refs=False).plan
        except ToscaError as err:
            raise _bad_request(err, parameters) from None
        changed = {scaling_root(topology, n): new.node(n).count for n in new.order
                   if new.node(n).count != old.node(n).count}
        if not changed:
            raise HTTPException(400, {"message": "nothing to update: only parameters that change instance counts "
                                                 "can be updated", "field": "parameters"})
        runs = [trigger_dag(SCALE_DAG_ID, {"deployment_id": deployment_id, "node": node, "count": count},
                            caller.name, _granted(deployment_id, "update", caller))
                for node, count in sorted(changed.items())]
        return {"uuid": deployment_id, "status": "UPDATE_IN_PROGRESS", "scaled": changed, "dagRunIds": runs}

    @app.delete("/deployments/{deployment_id}", status_code=204)
    def delete_deployment(deployment_id: str, caller: Caller) -> None:
        record = _visible(deployment_id, caller)
        if record.status.value == "DELETE_IN_PROGRESS":
            raise HTTPException(409, f"deployment {deployment_id} is already being deleted")
        trigger_dag(DELETE_DAG_ID, {"deployment_id": deployment_id, "force": False}, caller.name,
                    _granted(deployment_id, "delete", caller))

    @app.get("/deployments/{deployment_id}/resources")
    def list_resources(deployment_id: str, request: Request, caller: Caller) -> dict[str, Any]:
        record = _visible(deployment_id, caller)
        content = [{
            "uuid": f"{r.deployment_id}/{r.node_name}/{r.index}",
            "creationTime": None,
            "updateTime": r.updated_at.isoformat(),
            "state": r.state,
            "toscaNodeName": r.node_name,
            "index": r.index,
            "resourceId": r.resource_id,
            "attributes": mask_secrets(dict(r.attributes)),
        } for r in record.resources]
        return {"content": content,
                "page": {"size": len(content), "totalElements": len(content), "totalPages": 1, "number": 0},
                "links": [{"rel": "self", "href": str(request.url)}]}

    @app.get("/deployments/{deployment_id}/template", response_class=PlainTextResponse)
    def get_template(deployment_id: str, caller: Caller) -> str:
        return _visible(deployment_id, caller).template

    @app.get("/deployments/{deployment_id}/log", response_class=PlainTextResponse)
    def get_log(deployment_id: str, caller: Caller) -> str:
        record = _visible(deployment_id, caller)
        return "".join(f"{e.at.isoformat()} {e.kind}: {e.message}\n" for e in record.events)

    return app
