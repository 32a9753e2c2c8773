"""The Airflow plugin: a read-only deployments API and page inside the Airflow API server."""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from airflow_cloud_paas.plugin.api import create_app


class CloudPaaSPlugin(AirflowPlugin):
    """Serve ``/cloud-paas/api/deployments`` and a deployments page linked from the Airflow UI menu."""

    name = "cloud_paas"
    fastapi_apps = [{"app": create_app(), "url_prefix": "/cloud-paas", "name": "Cloud PaaS deployments"}]
    external_views = [
        {
            "name": "Deployments",
            "href": "/cloud-paas/ui",
            "destination": "nav",
            "category": "browse",
            "url_route": "cloud_paas_deployments",
        }
    ]
