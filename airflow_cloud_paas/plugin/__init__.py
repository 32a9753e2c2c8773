"""The Airflow plugin: the deployments API and page, the orchestrator-compatible API and the portal's React views.

Three FastAPI apps are mounted in the Airflow API server, each built on its first request:

- ``/cloud-paas/orchestrator``: the INDIGO orchestrator's ``/deployments`` API (:mod:`.orchestrator`);
- ``/cloud-paas``: the deployments as JSON and a plain page (:mod:`.api`);
- ``/cloud-paas-portal``: the portal's catalogue API and its React bundle (:mod:`.portal`), which the Airflow UI
  loads for the two ``react_apps`` entries of the *Browse* menu.
"""

from __future__ import annotations

import importlib
import threading
from typing import Any

from airflow.plugins_manager import AirflowPlugin


class _AppOnFirstRequest:
    """A FastAPI app (the ``create_app()`` of ``module``), built on its first request, mounted as is.

    Airflow loads every plugin in every task process too, where no request ever comes: building the FastAPI app
    there imported the API server's security module (over a second of CPU per task, measured with the Celery
    load bench), so it is built where it is used.

    :param module: the module whose ``create_app()`` returns the app
    """

    def __init__(self, module: str) -> None:
        self.module = module
        self._app: Any = None
        self._lock = threading.Lock()

    def _built(self) -> Any:
        if self._app is None:
            with self._lock:
                if self._app is None:
                    self._app = importlib.import_module(self.module).create_app()
        return self._app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self._built()(scope, receive, send)


def _portal_view(name: str, view: str, url_route: str) -> dict[str, str]:
    # one bundle for both views; a query string per entry, because the UI reads the component from the module's
    # first evaluation
    return {"name": name, "bundle_url": f"cloud-paas-portal/static/portal.js?view={view}", "destination": "nav",
            "category": "browse", "url_route": url_route}


class CloudPaaSPlugin(AirflowPlugin):
    """Serve the deployments APIs and the portal (catalogue, my deployments) inside the Airflow UI."""

    name = "cloud_paas"
    # mounts match in order: the orchestrator's prefix lies under the deployments app's, so it comes first
    fastapi_apps = [
        {"app": _AppOnFirstRequest("airflow_cloud_paas.plugin.orchestrator"), "url_prefix": "/cloud-paas/orchestrator",
         "name": "Cloud PaaS orchestrator API"},
        {"app": _AppOnFirstRequest("airflow_cloud_paas.plugin.api"), "url_prefix": "/cloud-paas",
         "name": "Cloud PaaS deployments"},
        {"app": _AppOnFirstRequest("airflow_cloud_paas.plugin.portal"), "url_prefix": "/cloud-paas-portal",
         "name": "Cloud PaaS portal"},
    ]
    react_apps = [_portal_view("Application catalogue", "catalogue", "cloud_paas_catalogue"),
                  _portal_view("My deployments", "deployments", "cloud_paas_my_deployments")]
    external_views = [
        {
            "name": "Deployments",
            "href": "/cloud-paas/ui",
            "destination": "nav",
            "category": "browse",
            "url_route": "cloud_paas_deployments",
        }
    ]
