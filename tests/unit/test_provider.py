"""The package registers with Airflow as a provider (connection type, UI fields) and a plugin."""

from __future__ import annotations

from importlib.metadata import entry_points

from fastapi.testclient import TestClient


def test_provider_entry_point_and_connection_type():
    (ep,) = [e for e in entry_points(group="apache_airflow_provider") if e.value.startswith("airflow_cloud_paas")]
    info = ep.load()()
    (conn,) = info["connection-types"]
    assert conn["connection-type"] == "cloud_paas"
    assert set(conn["conn-fields"]) >= {"store_url", "backend", "work_root"}
    from airflow.providers_manager import ProvidersManager

    hooks = ProvidersManager().hooks
    assert "cloud_paas" in hooks
    assert hooks["cloud_paas"].hook_class_name == "airflow_cloud_paas.hooks.store.CloudPaaSStoreHook"


def test_plugin_entry_point_serves_deployments_masked(store_url):
    (ep,) = [e for e in entry_points(group="airflow.plugins") if e.value.startswith("airflow_cloud_paas")]
    plugin = ep.load()
    from airflow_cloud_paas.store import DeploymentStore

    DeploymentStore(store_url).create_deployment(
        "plugin-dep", "tosca: x", "h", {"api_token": "s3cr3t", "size": 3}, "bob", "local"
    )
    client = TestClient(plugin.fastapi_apps[0]["app"])
    body = client.get("/api/deployments/plugin-dep").json()
    assert body["inputs"] == {"api_token": "***", "size": 3}
    assert client.get("/api/deployments/nope").status_code == 404
    assert "plugin-dep" in client.get("/ui").text
    assert "s3cr3t" not in client.get("/api/deployments").text
