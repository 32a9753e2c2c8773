"""AzureVirtualMachinesHook: the azure-mgmt clients of an ``azure`` connection, and their errors, typed.

azure-identity and the azure-mgmt clients talk real HTTPS to the stand-in Entra ID and ARM of
:mod:`unit.backends.azure_fixtures` (a private cloud to the SDK: its own authority, endpoint and CA).
"""

from __future__ import annotations

import json
import logging
import pickle
from collections.abc import Iterator

import pytest
from airflow.providers.microsoft.azure.hooks.base_azure import AzureBaseHook
from azure.core.exceptions import HttpResponseError
from unit.backends.azure_fixtures import (
    CLIENT_ID,
    CLIENT_SECRET,
    LOCATION,
    SUBSCRIPTION_ID,
    TENANT_ID,
    AzureStandIn,
    running_stand_in,
)

from airflow_cloud_paas.exceptions import BackendError
from airflow_cloud_paas.hooks.azure import AzureApiError, AzureAuthenticationError, AzureVirtualMachinesHook, plain

CONN_ID = "azure_hook_test"


def set_connection(monkeypatch: pytest.MonkeyPatch, cloud: AzureStandIn, **fields) -> None:
    extra = {"tenantId": TENANT_ID, "subscriptionId": SUBSCRIPTION_ID, "location": LOCATION,
             "authority_host": cloud.base, "resource_manager_url": cloud.base,
             "connection_verify": str(cloud.ca_bundle)}
    conn = {"conn_type": "azure", "login": CLIENT_ID, "password": CLIENT_SECRET, "extra": extra, **fields}
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", json.dumps(conn))


@pytest.fixture
def cloud(monkeypatch: pytest.MonkeyPatch) -> Iterator[AzureStandIn]:
    with running_stand_in() as stand_in:
        set_connection(monkeypatch, stand_in)
        yield stand_in


def test_standard_hook_attributes_reuse_the_providers_connection_type() -> None:
    assert issubclass(AzureVirtualMachinesHook, AzureBaseHook)
    assert (AzureVirtualMachinesHook.conn_name_attr, AzureVirtualMachinesHook.default_conn_name,
            AzureVirtualMachinesHook.conn_type) == ("conn_id", "azure_default", "azure")
    assert AzureVirtualMachinesHook.hook_name
    assert AzureVirtualMachinesHook.__module__ == "airflow_cloud_paas.hooks.azure"
    hook = AzureVirtualMachinesHook(CONN_ID)
    assert getattr(hook, AzureVirtualMachinesHook.conn_name_attr) == CONN_ID


def test_clients_reach_the_connections_cloud(cloud: AzureStandIn) -> None:
    hook = AzureVirtualMachinesHook(CONN_ID, polling_interval=0.01)
    assert hook.subscription_id == SUBSCRIPTION_ID
    assert hook.get_conn() is hook.compute
    with hook.errors("listing VM sizes"):
        sizes = [plain(s) for s in hook.compute.virtual_machine_sizes.list(LOCATION)]
    assert sizes and all("numberOfCores" in s for s in sizes)
    with hook.errors("checking a resource group"):
        assert hook.resources.resource_groups.check_existence("no-such-group") is False


def test_arm_errors_become_typed_errors_naming_what_failed(cloud: AzureStandIn) -> None:
    hook = AzureVirtualMachinesHook(CONN_ID, polling_interval=0.01)
    with pytest.raises(AzureApiError) as err, hook.errors("reading VM ghost"):
        hook.compute.virtual_machines.get("no-such-group", "ghost")
    assert err.value.status_code == 404 and err.value.code and err.value.provider == "azure"
    assert err.value.resource == "reading VM ghost" and "HTTP 404" in err.value.message
    assert isinstance(err.value.__cause__, HttpResponseError)


def test_a_refused_secret_names_the_connection_and_never_the_secret(
    cloud: AzureStandIn, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = "Wr0ng-but-secret.hook~secret"
    set_connection(monkeypatch, cloud, password=wrong)
    caplog.set_level(logging.DEBUG)
    hook = AzureVirtualMachinesHook(CONN_ID)
    with pytest.raises(AzureAuthenticationError) as err, hook.errors("listing VM sizes"):
        list(hook.compute.virtual_machine_sizes.list(LOCATION))
    assert CONN_ID in str(err.value) and wrong not in str(err.value) and wrong not in caplog.text
    assert err.value.__cause__ is None and err.value.code == "AuthenticationFailed"


def test_missing_subscription_is_a_configuration_error(cloud: AzureStandIn, monkeypatch: pytest.MonkeyPatch) -> None:
    set_connection(monkeypatch, cloud, extra={"tenantId": TENANT_ID})
    with pytest.raises(BackendError, match="no 'subscriptionId'"):
        AzureVirtualMachinesHook(CONN_ID).subscription_id  # noqa: B018


def test_api_errors_survive_pickling() -> None:
    for cls in (AzureApiError, AzureAuthenticationError):
        again = pickle.loads(pickle.dumps(cls("creating VM x: HTTP 409 OperationNotAllowed: quota",
                                              code="OperationNotAllowed", status_code=409, resource="VM x")))
        assert type(again) is cls and isinstance(again, BackendError)
        assert (again.code, again.status_code, again.resource, again.provider) == (
            "OperationNotAllowed", 409, "VM x", "azure")
