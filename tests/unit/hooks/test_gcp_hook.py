"""GceHook: the Google provider's ComputeEngineHook plus the Compute Engine calls the GCP backend needs.

The real google-cloud-compute clients (REST transport) talk plain HTTP to the stand-in Compute Engine of
:mod:`unit.backends.gcp_fixtures`, through a ``google_cloud_platform`` connection with ``is_anonymous``.
"""

from __future__ import annotations

import ast
import pickle
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from airflow.providers.google.cloud.hooks.compute import ComputeEngineHook
from unit.backends.gcp_fixtures import PROJECT, ZONE, ComputeEngineStandIn, connection_json, running_stand_in

from airflow_cloud_paas.exceptions import BackendError
from airflow_cloud_paas.hooks.gcp import GceApiError, GceHook

CONN_ID = "gcp_hook_test"
HOOKS = Path(__file__).resolve().parents[3] / "hooks"


@pytest.fixture
def cloud(monkeypatch: pytest.MonkeyPatch) -> Iterator[ComputeEngineStandIn]:
    with running_stand_in() as stand_in:
        monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", connection_json(stand_in))
        yield stand_in


def test_standard_hook_attributes_reuse_the_providers_connection_type(cloud: ComputeEngineStandIn) -> None:
    assert issubclass(GceHook, ComputeEngineHook)
    assert (GceHook.conn_name_attr, GceHook.default_conn_name, GceHook.conn_type) == (
        "gcp_conn_id", "google_cloud_default", "google_cloud_platform")
    assert GceHook.hook_name
    assert GceHook.__module__ == "airflow_cloud_paas.hooks.gcp"
    hook = GceHook(gcp_conn_id=CONN_ID)
    assert getattr(hook, GceHook.conn_name_attr) == CONN_ID


def test_hook_is_the_providers_with_the_extra_calls(cloud: ComputeEngineStandIn) -> None:
    hook = GceHook(gcp_conn_id=CONN_ID)
    assert hook.get_compute_instance_client() is not None
    assert [m["name"] for m in hook.list_machine_types(project_id=PROJECT, zone=ZONE)][:2] == ["e2-micro", "e2-small"]
    assert hook.get_image_dict(project_id="ubuntu-os-cloud", family="ubuntu-2204-lts")["name"] == (
        "ubuntu-2204-jammy-v20250110")
    assert hook.get_instance_dict(project_id=PROJECT, zone=ZONE, name="nobody") is None


def test_an_operation_is_read_without_waiting_or_waited_for(cloud: ComputeEngineStandIn) -> None:
    hook = GceHook(gcp_conn_id=CONN_ID)
    body = {"name": "hook-disk", "size_gb": 10}
    op = hook.insert_disk_nowait(project_id=PROJECT, zone=ZONE, body=body, request_id="0-1")
    first = hook.get_zone_operation(project_id=PROJECT, zone=ZONE, name=op)
    assert first["name"] == op and first["status"] in ("PENDING", "RUNNING", "DONE")
    assert hook.wait_zone_operation(project_id=PROJECT, zone=ZONE, name=op)["status"] == "DONE"
    assert hook.get_disk_dict(project_id=PROJECT, zone=ZONE, name="hook-disk")["status"] == "READY"
    fw = hook.insert_firewall_nowait(project_id=PROJECT, body={
        "name": "hook-fw", "network": "global/networks/default", "direction": "INGRESS",
        "source_ranges": ["10.0.0.0/8"], "allowed": [{"I_p_protocol": "tcp", "ports": ["22"]}]})
    assert hook.get_global_operation(project_id=PROJECT, name=fw)["name"] == fw
    assert hook.wait_global_operation(project_id=PROJECT, name=fw)["status"] == "DONE"
    with pytest.raises(GceApiError) as err:
        hook.get_zone_operation(project_id=PROJECT, zone=ZONE, name="no-such-operation")
    assert err.value.status_code == 404 and err.value.provider == "gcp"


def test_api_error_is_a_backend_error_that_survives_pickling() -> None:
    err = GceApiError("insert instance x failed: QUOTA_EXCEEDED", status_code=403, reason="QUOTA_EXCEEDED",
                      resource="insert instance x")
    again = pickle.loads(pickle.dumps(err))
    assert isinstance(again, BackendError) and again.is_quota
    assert (again.status_code, again.reason, again.resource, again.provider) == (403, "QUOTA_EXCEEDED",
                                                                                 "insert instance x", "gcp")


def test_hooks_never_import_backends() -> None:
    for path in sorted(HOOKS.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not [n for n in names if n.startswith("airflow_cloud_paas.backends")], path.name


def test_the_cloud_sdks_are_imported_only_by_the_leaf_that_needs_them() -> None:
    code = (
        "import sys, airflow_cloud_paas, airflow_cloud_paas.backends, airflow_cloud_paas.backends.base, "
        "airflow_cloud_paas.backends.naming, airflow_cloud_paas.backends.mapping; "
        "print(sorted({'.'.join(m.split('.')[:3]) for m in sys.modules if m.startswith(("
        "'google.cloud.compute', 'google.api_core', 'azure', 'openstack', 'boto3', 'kubernetes', 'docker'))}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"
    code = ("import sys, airflow_cloud_paas.hooks.gcp; "
            "print('azure' in sys.modules, 'google.cloud.compute_v1' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip().splitlines()[-1] == "False True"
