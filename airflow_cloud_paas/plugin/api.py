"""FastAPI app of the plugin: deployments as JSON and as a page, secrets always masked."""

from __future__ import annotations

import html
import os
from typing import Any

from fastapi import Depends, FastAPI, HTTPException
from fastapi.responses import HTMLResponse

from airflow_cloud_paas.exceptions import DeploymentNotFoundError
from airflow_cloud_paas.secrets import mask_secrets


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


def create_app() -> FastAPI:
    """Return the plugin's FastAPI application."""
    # Airflow does not authenticate plugin apps by itself: require a logged-in user who may read DAGs
    # (the session cookie of the UI, or a Bearer JWT from /auth/token).
    from airflow.api_fastapi.core_api.security import requires_access_dag

    app = FastAPI(
        title="Cloud PaaS deployments", version="1", dependencies=[Depends(requires_access_dag("GET"))]
    )

    @app.get("/api/deployments")
    def list_deployments(status: str | None = None, owner: str | None = None) -> list[dict[str, Any]]:
        return [_public(r) for r in _store().list(owner=owner, status=status)]

    @app.get("/api/deployments/{deployment_id}")
    def get_deployment(deployment_id: str) -> dict[str, Any]:
        try:
            return _public(_store().get(deployment_id))
        except DeploymentNotFoundError as err:
            raise HTTPException(status_code=404, detail=str(err)) from None

    @app.get("/ui", response_class=HTMLResponse)
    def page() -> str:
        rows = "".join(
            "<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in (
                r.id, r.status, r.status_reason or "", r.backend, r.owner, r.created_at, len(r.resources)
            )) + "</tr>"
            for r in _store().list()
        )
        return (
            "<!doctype html><html><head><title>Deployments</title></head><body><h1>Deployments</h1>"
            "<table border=1><tr><th>id</th><th>status</th><th>reason</th><th>backend</th><th>owner</th>"
            f"<th>created</th><th>resources</th></tr>{rows}</table></body></html>"
        )

    return app
