"""The package registers with Airflow as a provider (connection type, UI fields) and a plugin."""

from __future__ import annotations

from importlib.metadata import entry_points

from fastapi.testclient import TestClient


def test_provider_entry_point_and_connection_type():
    (ep,) = [e for e in entry_points(group="apache_airflow_provider") if e.value.startswith("airflow_cloud_paas")]
    info = ep.load()()
    conn = next(c for c in info["connection-types"] if c["connection-type"] == "cloud_paas")
    assert {c["connection-type"] for c in info["connection-types"]} == {"cloud_paas", "openstack", "htcondor",
                                                                        "xrootd", "slurm", "galaxy", "deepaas"}
    assert conn["connection-type"] == "cloud_paas"
    assert set(conn["conn-fields"]) >= {"store_url", "backend", "work_root"}
    from airflow.providers_manager import ProvidersManager

    hooks = ProvidersManager().hooks
    assert "cloud_paas" in hooks
    assert hooks["cloud_paas"].hook_class_name == "airflow_cloud_paas.hooks.store.CloudPaaSStoreHook"


def test_plugin_entry_point_refuses_anonymous_users():
    (ep,) = [e for e in entry_points(group="airflow.plugins") if e.value.startswith("airflow_cloud_paas")]
    plugin = ep.load()
    apps = {a["url_prefix"]: a["app"] for a in plugin.fastapi_apps}
    client = TestClient(apps["/cloud-paas"])
    for path in ("/api/deployments", "/api/deployments/x", "/ui"):
        assert client.get(path).status_code == 401, path
    orchestrator = TestClient(apps["/cloud-paas/orchestrator"])
    for path in ("/deployments", "/deployments/x", "/deployments/x/log"):
        assert orchestrator.get(path).status_code == 401, path
    assert orchestrator.post("/deployments", json={"template": "x"}).status_code == 401


def test_loading_the_plugin_does_not_build_its_app():
    """Every task process loads every plugin: the API server's modules must only load where a request comes."""
    import subprocess
    import sys

    code = ("import sys; from airflow_cloud_paas.plugin import CloudPaaSPlugin; "
            "print('loaded:', sorted(m for m in sys.modules if m.startswith(('airflow.api_fastapi', 'fastapi'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    assert "loaded: []" in out.stdout.splitlines(), out.stdout
