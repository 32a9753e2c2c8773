"""Hook to Azure Resource Manager: the azure-mgmt compute, network and resource clients of an ``azure`` connection.

The connection is the Microsoft Azure provider's own ``azure`` type, read the way its
:class:`~airflow.providers.microsoft.azure.hooks.base_azure.AzureBaseHook` reads it (client id and secret
in login/password with ``tenantId`` in the extra, else ``DefaultAzureCredential``; ``subscriptionId`` in
the extra). The provider's ``AzureComputeHook`` only starts and stops VMs, so this hook hands out the
clients the Azure backend needs, built on that credential, and turns the SDK's errors into
:class:`AzureApiError` (never with a secret in it). The azure SDKs are imported here only, so ``import
airflow_cloud_paas`` does not need them.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cached_property
from typing import Any
from urllib.parse import urlsplit

from airflow.providers.microsoft.azure.hooks.base_azure import AzureBaseHook
from airflow.providers.microsoft.azure.utils import get_sync_default_azure_credential
from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
)
from azure.core.pipeline.policies import SansIOHTTPPolicy
from azure.identity import AzureAuthorityHosts, ClientSecretCredential

from airflow_cloud_paas.exceptions import BackendError

PROVIDER = "azure"

#: cloud_environment (the provider's connection extra) -> (authority host, resource manager URL)
CLOUD_ENVIRONMENTS = {
    "AzurePublicCloud": (AzureAuthorityHosts.AZURE_PUBLIC_CLOUD, "https://management.azure.com"),
    "AzureUSGovernment": (AzureAuthorityHosts.AZURE_GOVERNMENT, "https://management.usgovcloudapi.net"),
    "AzureChinaCloud": (AzureAuthorityHosts.AZURE_CHINA, "https://management.chinacloudapi.cn"),
}


class AzureApiError(BackendError):
    """Azure Resource Manager refused a call; ``code`` is ARM's error code (``OperationNotAllowed``...).

    :param message: what failed
    :param code: ARM's error code
    :param status_code: the HTTP status
    :param resource: the resource concerned
    """

    def __init__(self, message: str, *, code: str = "", status_code: int | None = None,
                 resource: str | None = None) -> None:
        super().__init__(message, provider=PROVIDER, resource=resource)
        self.code = code
        self.status_code = status_code

    def __reduce__(self):
        return (_rebuild_api_error, (type(self), self.message, self.code, self.status_code, self.resource))


def _rebuild_api_error(cls, message, code, status_code, resource):
    return cls(message, code=code, status_code=status_code, resource=resource)


class AzureAuthenticationError(AzureApiError):
    """The connection's credential was refused (the secret is never part of the message)."""


def plain(obj: Any) -> Any:
    """Return an SDK model as its REST JSON (camelCase keys), so both SDK majors read alike."""
    return obj.as_dict() if hasattr(obj, "as_dict") else obj


#: HTTP method -> the verb of a call on one resource (ARM's REST operations, as the SDKs name them)
_VERBS = {"GET": "get", "PUT": "createOrUpdate", "DELETE": "delete", "HEAD": "checkExistence", "PATCH": "update",
          "POST": "post"}
#: path segments ARM spells in several ways -> one name
_CANONICAL = {"resourcegroups": "resourceGroups", "operationresults": "operations"}


def arm_operation(method: str, url: str) -> str:
    """Return the ARM operation an HTTP request is (``virtualMachines.createOrUpdate``, ``operations.get``...).

    A long-running operation's status polls are ``operations.get``, whichever resource provider answers them.

    :param method: the HTTP method
    :param url: the request's URL
    """
    segments = [s for s in urlsplit(url).path.split("/") if s]
    if segments[:1] == ["subscriptions"]:
        segments = segments[2:]
    if [s.lower() for s in segments[:1]] == ["resourcegroups"] and "providers" in (s.lower() for s in segments[2:3]):
        segments = segments[2:]
    if [s.lower() for s in segments[:1]] == ["providers"]:
        segments = segments[2:]  # the resource provider's namespace (Microsoft.Compute...)
    if not segments:
        return f"{method.lower()}"
    if len(segments) % 2 == 1:  # a collection (list) or an action on a resource (``.../virtualMachines/x/start``)
        if method.upper() == "POST" and len(segments) >= 3:
            return f"{_CANONICAL.get(segments[-3].lower(), segments[-3])}.{segments[-1]}"
        return f"{_CANONICAL.get(segments[-1].lower(), segments[-1])}.list"
    kind = _CANONICAL.get(segments[-2].lower(), segments[-2])
    return f"{kind}.{_VERBS.get(method.upper(), method.lower())}"


class _CallCounter(SansIOHTTPPolicy):
    """Count every HTTP request a client sends (each retry and each status poll too), by ARM operation."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.lock = threading.Lock()  # the LRO pollers of the SDK send from their own threads

    def on_request(self, request: Any) -> None:
        operation = arm_operation(request.http_request.method, request.http_request.url)
        with self.lock:
            self.calls[operation] += 1


class AzureVirtualMachinesHook(AzureBaseHook):
    """Hand out the azure-mgmt compute, network and resource clients of an ``azure`` connection.

    Besides the provider's fields (login = client id, password = secret, extra ``tenantId``,
    ``subscriptionId``, ``cloud_environment``, ``managed_identity_client_id``,
    ``workload_identity_tenant_id``), the extra may hold ``authority_host`` and
    ``resource_manager_url`` (Azure Stack Hub and other private clouds), ``connection_verify`` (a CA
    bundle path for their TLS) and ``location``.

    :param conn_id: the Airflow connection id
    :param polling_interval: seconds between two polls of a long-running operation
    """

    # the Microsoft Azure provider's connection type: this hook adds clients, not a connection form
    conn_name_attr = "conn_id"
    default_conn_name = "azure_default"
    conn_type = "azure"
    hook_name = "Azure Resource Manager (Cloud PaaS)"

    def __init__(self, conn_id: str = default_conn_name, polling_interval: float = 5.0) -> None:
        super().__init__(sdk_client=None, conn_id=conn_id)
        self.polling_interval = polling_interval
        self._counter = _CallCounter()

    def api_calls(self) -> dict[str, int]:
        """Return the ARM calls this hook's clients have sent so far, by operation (status polls included)."""
        with self._counter.lock:
            return dict(self._counter.calls)

    @cached_property
    def connection(self) -> Any:
        """Return the Airflow connection (read once)."""
        return self.get_connection(self.conn_id)

    @cached_property
    def extras(self) -> dict[str, Any]:
        """Return the connection's extra, without the legacy ``extra__azure__`` prefix."""
        return {k.removeprefix("extra__azure__"): v for k, v in self.connection.extra_dejson.items()}

    @cached_property
    def subscription_id(self) -> str:
        """Return the subscription every call is made in."""
        subscription = self.extras.get("subscriptionId")
        if not subscription:
            raise BackendError(f"connection {self.conn_id!r} has no 'subscriptionId' in its extra: add it",
                               provider=PROVIDER, resource=self.conn_id)
        return str(subscription)

    @cached_property
    def _endpoints(self) -> tuple[str, str]:
        env_name = self.extras.get("cloud_environment") or "AzurePublicCloud"
        if env_name not in CLOUD_ENVIRONMENTS:
            raise BackendError(f"connection {self.conn_id!r}: unknown cloud_environment {env_name!r}; use one of "
                               f"{', '.join(CLOUD_ENVIRONMENTS)} or set authority_host and resource_manager_url",
                               provider=PROVIDER, resource=self.conn_id)
        authority, arm = CLOUD_ENVIRONMENTS[env_name]
        return (str(self.extras.get("authority_host") or authority),
                str(self.extras.get("resource_manager_url") or arm).rstrip("/"))

    @property
    def _transport_options(self) -> dict[str, Any]:
        verify = self.extras.get("connection_verify")
        return {"connection_verify": verify} if verify else {}

    @cached_property
    def credential(self) -> Any:
        """Return an azure-identity credential (``get_token``), as the provider builds it."""
        conn, extras = self.connection, self.extras
        if extras.get("key_path") or extras.get("key_json"):
            raise BackendError(f"connection {self.conn_id!r} uses key_path/key_json, which only the legacy SDK "
                               "clients accept; give the client id and secret in login/password with tenantId",
                               provider=PROVIDER, resource=self.conn_id)
        tenant = extras.get("tenantId")
        if conn.login and conn.password and tenant:
            authority, _ = self._endpoints
            custom = bool(extras.get("authority_host"))
            # a private authority (Azure Stack, a sovereign cloud's mirror) is not in Entra's instance list
            return ClientSecretCredential(tenant, conn.login, conn.password, authority=authority,
                                          disable_instance_discovery=custom, **self._transport_options)
        return get_sync_default_azure_credential(
            managed_identity_client_id=extras.get("managed_identity_client_id"),
            workload_identity_tenant_id=extras.get("workload_identity_tenant_id"),
        )

    def _client(self, cls: type) -> Any:
        _, arm = self._endpoints
        # per retry: a request the SDK retries costs a call each time
        return cls(self.credential, self.subscription_id, base_url=arm, credential_scopes=[f"{arm}/.default"],
                   polling_interval=self.polling_interval, per_retry_policies=[self._counter],
                   **self._transport_options)

    @cached_property
    def compute(self) -> Any:
        """Return the ``ComputeManagementClient``."""
        from azure.mgmt.compute import ComputeManagementClient

        return self._client(ComputeManagementClient)

    @cached_property
    def network(self) -> Any:
        """Return the ``NetworkManagementClient``."""
        from azure.mgmt.network import NetworkManagementClient

        return self._client(NetworkManagementClient)

    @cached_property
    def resources(self) -> Any:
        """Return the ``ResourceManagementClient``."""
        from azure.mgmt.resource.resources import ResourceManagementClient

        return self._client(ResourceManagementClient)

    def get_conn(self) -> Any:
        """Return the compute client (the hook's main client)."""
        return self.compute

    # ---------------------------------------------------------------- error translation
    @contextmanager
    def errors(self, what: str) -> Iterator[None]:
        """Turn an SDK error raised in the block into an :class:`AzureApiError` naming what was being done.

        :param what: what the block does (``creating virtual machine x``)
        """
        try:
            yield
        except ClientAuthenticationError as err:
            if isinstance(err, HttpResponseError) and err.status_code not in (None, 401):
                raise self._api_error(err, what) from err
            raise AzureAuthenticationError(
                f"{what}: the credential of connection {self.conn_id!r} was refused "
                f"({str(err.message or err).splitlines()[0][:300]}); check its client id, secret and tenantId",
                code="AuthenticationFailed", resource=self.conn_id,
            ) from None  # the chained error may carry the request's form
        except HttpResponseError as err:
            raise self._api_error(err, what) from err
        except AzureError as err:
            raise AzureApiError(f"{what}: {err}", resource=what) from err

    @staticmethod
    def _api_error(err: HttpResponseError, what: str) -> AzureApiError:
        code = str(getattr(err.error, "code", "") or "")
        message = str(getattr(err.error, "message", "") or err.message or err)
        return AzureApiError(f"{what}: HTTP {err.status_code} {code}: {message}", code=code,
                             status_code=err.status_code, resource=what)
