"""FastAPI app of the plugin: deployments as JSON and as a page, secrets always masked."""

from __future__ import annotations

import html
import os
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException
from fastapi.responses import HTMLResponse

from airflow_cloud_paas.exceptions import DeploymentNotFoundError
from airflow_cloud_paas.plugin.access import Identity, current_identity, may_act
from airflow_cloud_paas.secrets import mask_secrets

#: the caller of a route (401 without a valid login or token)
Caller = Annotated[Identity, Depends(current_identity)]


def _store():
    url = os.environ.get("CLOUD_PAAS_STORE_URL")
    if url:
        from airflow_cloud_paas.store import DeploymentStore

        return DeploymentStore(url)
    from airflow_cloud_paas.hooks.store import CloudPaaSStoreHook

    return CloudPaaSStoreHook().store


def _public(record: Any) -> dict[str, Any]:
    data = record.to_dict()
    data["inputs"] = mask_secrets(data.get("inputs") or {})
    data["outputs"] = mask_secrets(data.get("outputs") or {})
    return data


def visible_deployments(caller: Any, owner: str | None = None, status: str | None = None) -> list[Any]:
    """Return the deployments ``caller`` may see (own, their groups', all for an admin), newest first.

    :param caller: the :class:`~airflow_cloud_paas.plugin.access.Identity` asking
    :param owner: only this owner's
    :param status: only with this status
    """
    store = _store()
    if caller.admin:
        return store.list(owner=owner, status=status)
    records = store.list(owner=caller.name, groups=sorted(caller.groups), status=status)
    return [r for r in records if owner is None or r.owner == owner]


def create_app() -> FastAPI:
    """Return the plugin's FastAPI application."""
    # Airflow does not authenticate plugin apps by itself: every route needs an identity (an Airflow login that may
    # read DAGs, or an access token of the configured OIDC provider) and shows only what it may act on.
    app = FastAPI(title="Cloud PaaS deployments", version="1")

    @app.get("/api/deployments")
    def list_deployments(caller: Caller, status: str | None = None, owner: str | None = None) -> list[dict[str, Any]]:
        return [_public(r) for r in visible_deployments(caller, owner=owner, status=status)]

    @app.get("/api/deployments/{deployment_id}")
    def get_deployment(deployment_id: str, caller: Caller) -> dict[str, Any]:
        try:
            record = _store().get(deployment_id)
        except DeploymentNotFoundError as err:
            raise HTTPException(status_code=404, detail=str(err)) from None
        if not may_act(caller, record):  # another's deployment: not even its existence is told
            raise HTTPException(status_code=404, detail=f"deployment '{deployment_id}' not found")
        return _public(record)

    @app.get("/ui", response_class=HTMLResponse)
    def page(caller: Caller) -> str:
        rows = "".join(
            "<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in (
                r.id, r.status, r.status_reason or "", r.backend, r.owner, r.created_at, len(r.resources)
            )) + "</tr>"
            for r in visible_deployments(caller)
        )
        return (
            "<!doctype html><html><head><title>Deployments</title></head><body><h1>Deployments</h1>"
            "<table border=1><tr><th>id</th><th>status</th><th>reason</th><th>backend</th><th>owner</th>"
            f"<th>created</th><th>resources</th></tr>{rows}</table></body></html>"
        )

    return app
