"""The Airflow plugin: a read-only deployments API and page inside the Airflow API server."""

from __future__ import annotations

import threading
from typing import Any

from airflow.plugins_manager import AirflowPlugin


class _AppOnFirstRequest:
    """The plugin's ASGI app, built on its first request (mounted as is by the API server).

    Airflow loads every plugin in every task process too, where no request ever comes: building the FastAPI app
    there imported the API server's security module (over a second of CPU per task, measured with the Celery
    load bench), so it is built where it is used.
    """

    def __init__(self) -> None:
        self._app: Any = None
        self._lock = threading.Lock()

    def _built(self) -> Any:
        if self._app is None:
            with self._lock:
                if self._app is None:
                    from airflow_cloud_paas.plugin.api import create_app

                    self._app = create_app()
        return self._app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self._built()(scope, receive, send)


class CloudPaaSPlugin(AirflowPlugin):
    """Serve ``/cloud-paas/api/deployments`` and a deployments page linked from the Airflow UI menu."""

    name = "cloud_paas"
    fastapi_apps = [{"app": _AppOnFirstRequest(), "url_prefix": "/cloud-paas", "name": "Cloud PaaS deployments"}]
    external_views = [
        {
            "name": "Deployments",
            "href": "/cloud-paas/ui",
            "destination": "nav",
            "category": "browse",
            "url_route": "cloud_paas_deployments",
        }
    ]
