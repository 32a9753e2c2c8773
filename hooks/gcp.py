"""Hook to Google Compute Engine: the Google provider's ``ComputeEngineHook`` plus the calls it lacks.

The connection is the Google provider's own ``google_cloud_platform`` type (key file, key JSON,
workload identity, impersonation or ``is_anonymous``); an ``api_endpoint`` extra points every client at
another endpoint (a Private Service Connect one, or a stand-in). Every call returns plain dicts
(snake_case keys) and raises :class:`GceApiError`, which names the call and never a secret.
google-cloud-compute is imported here only, so ``import airflow_cloud_paas`` does not need it.
"""

from __future__ import annotations

import re
import threading
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from airflow.providers.google.cloud.hooks.compute import ComputeEngineHook
from airflow.providers.google.common.consts import CLIENT_INFO
from google.api_core import exceptions as google_exceptions
from google.auth import exceptions as auth_exceptions
from google.cloud import compute_v1

from airflow_cloud_paas.exceptions import BackendError

PROVIDER = "gcp"
#: how long Compute Engine's ``operations.wait`` blocks at most before it answers "not done yet"
SERVER_WAIT_SECONDS = 120.0
#: the most instances one ``instances.bulkInsert`` request may create (Compute Engine's documented limit)
MAX_BULK_INSERT = 5000


class GceApiError(BackendError):
    """A Compute Engine API call or operation failed.

    :param message: what failed
    :param status_code: the HTTP status (or the operation's httpErrorStatusCode)
    :param reason: the error reason or operation error code (``notFound``, ``QUOTA_EXCEEDED``...)
    :param resource: the resource concerned
    """

    def __init__(self, message: str, *, status_code: int | None = None, reason: str | None = None,
                 resource: str | None = None, provider: str | None = PROVIDER) -> None:
        super().__init__(message, provider=provider, resource=resource)
        self.status_code = status_code
        self.reason = reason

    def __reduce__(self):
        return (_rebuild_api_error, (self.message, self.status_code, self.reason, self.resource))

    @property
    def is_quota(self) -> bool:
        """Return whether a quota refused the request."""
        return (self.reason or "").upper() in ("QUOTA_EXCEEDED", "QUOTAEXCEEDED", "RATELIMITEXCEEDED") or (
            "quota" in self.message.lower() and self.status_code in (403, 429)
        )


def _rebuild_api_error(message, status_code, reason, resource):
    return GceApiError(message, status_code=status_code, reason=reason, resource=resource)


def _to_dict(message: Any) -> dict[str, Any]:
    """Return a proto-plus message as a dict (snake_case keys, enums as names)."""
    return type(message).to_dict(message, use_integers_for_enums=False)


class GceHook(ComputeEngineHook):
    """The Google provider's ComputeEngineHook, plus the Compute Engine calls the backend needs.

    The provider's hook builds google-cloud-compute clients from a ``google_cloud_platform``
    connection (key file, key JSON, workload identity, impersonation or ``is_anonymous``); the extra
    clients here are built the same way (credentials, client info, client options). An
    ``api_endpoint`` connection extra (or argument) points every client at another endpoint, such as a
    Private Service Connect one.

    :param gcp_conn_id: the Airflow connection (type ``google_cloud_platform``)
    :param api_endpoint: the Compute Engine endpoint (default: the connection's ``api_endpoint`` extra,
        else Google's)
    :param impersonation_chain: service account(s) to impersonate
    :param request_timeout: seconds one API request may take
    """

    # the Google provider's connection type: this hook adds calls, not a connection form
    conn_name_attr = "gcp_conn_id"
    default_conn_name = "google_cloud_default"
    conn_type = "google_cloud_platform"
    hook_name = "Google Compute Engine (Cloud PaaS)"

    def __init__(self, gcp_conn_id: str = default_conn_name, api_endpoint: str | None = None,
                 impersonation_chain: str | Sequence[str] | None = None, request_timeout: float = 60.0) -> None:
        super().__init__(gcp_conn_id=gcp_conn_id, impersonation_chain=impersonation_chain)
        self._api_endpoint = api_endpoint
        self.request_timeout = request_timeout
        self._clients: dict[type, Any] = {}
        self._calls: Counter[str] = Counter()  # REST method id (instances.list...) -> requests made
        self._calls_lock = threading.Lock()

    def api_calls(self) -> dict[str, int]:
        """Return the Compute Engine requests this hook has made, by REST method (``instances.bulkInsert``...).

        Every request counts, refused ones and each page of a list too.
        """
        with self._calls_lock:
            return dict(self._calls)

    def _count(self, operation: str) -> None:
        with self._calls_lock:
            self._calls[operation] += 1

    def extra(self, name: str) -> Any:
        """Return a connection extra (plain or ``extra__google_cloud_platform__`` prefixed).

        :param name: the extra's name
        """
        return self._get_field(name, None)

    def get_client_options(self, api_endpoint_override: str | None = None):
        """Return the client options, with the configured ``api_endpoint`` unless overridden.

        :param api_endpoint_override: an endpoint for this client only
        """
        return super().get_client_options(api_endpoint_override or self._api_endpoint or self.extra("api_endpoint"))

    def _client(self, cls: type) -> Any:
        if cls not in self._clients:
            if cls is compute_v1.InstancesClient:
                self._clients[cls] = self.get_compute_instance_client()  # the provider's own
            else:
                self._clients[cls] = cls(credentials=self.get_credentials(), client_info=CLIENT_INFO,
                                         client_options=self.get_client_options())
        return self._clients[cls]

    def _call(self, operation: str, what: str, call: Callable[[], Any], *, missing_ok: bool = False) -> Any:
        """Run one SDK call, counted as ``operation``; turn its errors into :class:`GceApiError` (None for a 404 if
        ``missing_ok``)."""
        self._count(operation)
        try:
            return call()
        except google_exceptions.NotFound:
            if missing_ok:
                return None
            raise GceApiError(f"{what}: not found", status_code=404, reason="notFound", resource=what) from None
        except google_exceptions.GoogleAPICallError as err:
            reasons = [e.get("reason") for e in getattr(err, "errors", None) or [] if isinstance(e, Mapping)]
            reason = err.reason or next((r for r in reasons if r), None)
            raise GceApiError(f"{what} failed: HTTP {err.code} {err.message}", status_code=err.code,
                              reason=reason, resource=what) from err
        except auth_exceptions.GoogleAuthError as err:
            raise GceApiError(
                f"{what}: cannot authenticate with connection {self.gcp_conn_id!r} ({type(err).__name__}); "
                "check its key file, key JSON or workload identity",
                resource=self.gcp_conn_id,
            ) from None

    def _list(self, operation: str, what: str, call: Callable[[], Any]) -> list[dict[str, Any]]:
        """Run a list call and read all its pages (each a request, counted as ``operation``) as dicts."""

        def read() -> list[dict[str, Any]]:
            items: list[dict[str, Any]] = []
            for number, page in enumerate(call().pages):
                if number:  # the first page came with the call itself
                    self._count(operation)
                items.extend(_to_dict(item) for item in page.items)
            return items

        return self._call(operation, what, read)

    # ---------------------------------------------------------------- instances
    def list_instances(self, *, project_id: str, zone: str, filter_: str) -> list[dict[str, Any]]:
        """Return the instances of a zone that match a list filter.

        :param project_id: the project
        :param zone: the zone
        :param filter_: a Compute Engine list filter
        """
        client = self._client(compute_v1.InstancesClient)
        return self._list("instances.list", f"list instances in {zone}", lambda: client.list(
            request={"project": project_id, "zone": zone, "filter": filter_}, timeout=self.request_timeout))

    def get_instance_dict(self, *, project_id: str, zone: str, name: str) -> dict[str, Any] | None:
        """Return an instance (through the provider's ``get_instance``), or None if it does not exist.

        :param project_id: the project
        :param zone: the zone
        :param name: the instance name
        """
        found = self._call("instances.get", f"instance {name}", lambda: self.get_instance(
            resource_id=name, zone=zone, project_id=project_id, timeout=self.request_timeout), missing_ok=True)
        return None if found is None else _to_dict(found)

    def _instance_op(self, method: str, what: str, *, missing_ok: bool = False, **request: Any) -> str | None:
        client = self._client(compute_v1.InstancesClient)
        operation = "instances." + re.sub(r"_([a-z])", lambda m: m.group(1).upper(), method)  # attach_disk: attachDisk
        op = self._call(operation, what, lambda: getattr(client, method)(request=request, timeout=self.request_timeout),
                        missing_ok=missing_ok)
        return None if op is None else op.name

    def insert_instance_nowait(self, *, project_id: str, zone: str, body: Mapping[str, Any], request_id: str) -> str:
        """Start inserting an instance; return the zone operation's name.

        :param project_id: the project
        :param zone: the zone
        :param body: the instance resource (snake_case fields)
        :param request_id: makes a retried request a no-op on the server (a UUID)
        """
        return self._instance_op("insert", f"insert instance {body['name']}", project=project_id, zone=zone,
                                 instance_resource=dict(body), request_id=request_id)

    def bulk_insert_instances_nowait(self, *, project_id: str, zone: str, properties: Mapping[str, Any],
                                     names: Sequence[str], min_count: int, request_id: str) -> str:
        """Start creating several instances in one ``instances.bulkInsert`` request; return the zone operation's name.

        Every instance gets the same ``properties``; only the names differ (``perInstanceProperties`` keys).
        Compute Engine refuses the request at once (quota, capacity) when it cannot make ``min_count`` of them,
        and makes as many as it can, at least ``min_count``, otherwise (rolling back if it falls short later).

        :param project_id: the project
        :param zone: the zone
        :param properties: the InstanceProperties (snake_case fields; ``machine_type`` a bare name)
        :param names: the instance names, at most :data:`MAX_BULK_INSERT`
        :param min_count: the fewest instances the request may make (``len(names)``: all or none)
        :param request_id: makes a retried request a no-op on the server (a UUID)
        """
        resource = {"count": len(names), "min_count": min_count, "instance_properties": dict(properties),
                    "per_instance_properties": {name: {} for name in names}}
        return self._instance_op("bulk_insert", f"bulk insert of {len(names)} instance(s) ({names[0]}...)",
                                 project=project_id, zone=zone, bulk_insert_instance_resource_resource=resource,
                                 request_id=request_id)

    def delete_instance_nowait(self, *, project_id: str, zone: str, name: str) -> str | None:
        """Start deleting an instance; return the operation's name (None if it does not exist).

        :param project_id: the project
        :param zone: the zone
        :param name: the instance name
        """
        return self._instance_op("delete", f"delete instance {name}", missing_ok=True, project=project_id,
                                 zone=zone, instance=name)

    def start_instance_nowait(self, *, project_id: str, zone: str, name: str, resume: bool = False) -> str:
        """Start a stopped (or resume a suspended) instance; return the operation's name.

        :param project_id: the project
        :param zone: the zone
        :param name: the instance name
        :param resume: resume a SUSPENDED instance instead of starting a TERMINATED one
        """
        method = "resume" if resume else "start"
        return self._instance_op(method, f"{method} instance {name}", project=project_id, zone=zone, instance=name)

    def attach_disk_nowait(self, *, project_id: str, zone: str, instance: str, disk_link: str,
                           device_name: str) -> str:
        """Attach a persistent disk to an instance; return the operation's name.

        :param project_id: the project
        :param zone: the zone
        :param instance: the instance name
        :param disk_link: the disk's self link
        :param device_name: the device name seen in the guest (/dev/disk/by-id/google-<name>)
        """
        return self._instance_op("attach_disk", f"attach disk {device_name} to {instance}", project=project_id,
                                 zone=zone, instance=instance,
                                 attached_disk_resource={"source": disk_link, "device_name": device_name,
                                                         "auto_delete": False, "boot": False})

    def detach_disk_nowait(self, *, project_id: str, zone: str, instance: str, device_name: str) -> str | None:
        """Detach a disk from an instance; return the operation's name (None if the instance is gone).

        :param project_id: the project
        :param zone: the zone
        :param instance: the instance name
        :param device_name: the disk's device name on that instance
        """
        return self._instance_op("detach_disk", f"detach disk {device_name} from {instance}", missing_ok=True,
                                 project=project_id, zone=zone, instance=instance, device_name=device_name)

    # ---------------------------------------------------------------- operations
    def wait_zone_operation(self, *, project_id: str, zone: str, name: str) -> dict[str, Any]:
        """Wait (server side, up to :data:`SERVER_WAIT_SECONDS`) for a zone operation; return it, DONE or not.

        :param project_id: the project
        :param zone: the zone
        :param name: the operation's name
        """
        client = self._client(compute_v1.ZoneOperationsClient)
        return self._call("zoneOperations.wait", f"zone operation {name}", lambda: _to_dict(client.wait(
            request={"project": project_id, "zone": zone, "operation": name},
            timeout=self.request_timeout + SERVER_WAIT_SECONDS + 10)))

    def get_zone_operation(self, *, project_id: str, zone: str, name: str) -> dict[str, Any]:
        """Return a zone operation as it is now (DONE or not), without waiting.

        :param project_id: the project
        :param zone: the zone
        :param name: the operation's name
        """
        client = self._client(compute_v1.ZoneOperationsClient)
        return self._call("zoneOperations.get", f"zone operation {name}", lambda: _to_dict(client.get(
            request={"project": project_id, "zone": zone, "operation": name}, timeout=self.request_timeout)))

    def wait_global_operation(self, *, project_id: str, name: str) -> dict[str, Any]:
        """Wait (server side, up to :data:`SERVER_WAIT_SECONDS`) for a global operation; return it, DONE or not.

        :param project_id: the project
        :param name: the operation's name
        """
        client = self._client(compute_v1.GlobalOperationsClient)
        return self._call("globalOperations.wait", f"global operation {name}", lambda: _to_dict(client.wait(
            request={"project": project_id, "operation": name},
            timeout=self.request_timeout + SERVER_WAIT_SECONDS + 10)))

    def get_global_operation(self, *, project_id: str, name: str) -> dict[str, Any]:
        """Return a global operation as it is now (DONE or not), without waiting.

        :param project_id: the project
        :param name: the operation's name
        """
        client = self._client(compute_v1.GlobalOperationsClient)
        return self._call("globalOperations.get", f"global operation {name}", lambda: _to_dict(client.get(
            request={"project": project_id, "operation": name}, timeout=self.request_timeout)))

    # ---------------------------------------------------------------- catalogue
    def list_machine_types(self, *, project_id: str, zone: str) -> list[dict[str, Any]]:
        """Return the machine types of a zone.

        :param project_id: the project
        :param zone: the zone
        """
        client = self._client(compute_v1.MachineTypesClient)
        return self._list("machineTypes.list", f"list machine types in {zone}", lambda: client.list(
            request={"project": project_id, "zone": zone}, timeout=self.request_timeout))

    def list_images(self, *, project_id: str) -> list[dict[str, Any]]:
        """Return the images of a project (for public images: ``ubuntu-os-cloud``, ``debian-cloud``...).

        :param project_id: the image project
        """
        client = self._client(compute_v1.ImagesClient)
        return self._list("images.list", f"list images of {project_id}", lambda: client.list(
            request={"project": project_id}, timeout=self.request_timeout))

    def get_image_dict(self, *, project_id: str, name: str | None = None,
                       family: str | None = None) -> dict[str, Any] | None:
        """Return an image by name, or the newest of a family; None if there is none.

        :param project_id: the image project
        :param name: the image name
        :param family: the image family (instead of a name)
        """
        client = self._client(compute_v1.ImagesClient)
        if family:
            what = f"image family {project_id}/{family}"
            found = self._call("images.getFromFamily", what, lambda: client.get_from_family(
                request={"project": project_id, "family": family}, timeout=self.request_timeout), missing_ok=True)
        else:
            found = self._call("images.get", f"image {project_id}/{name}", lambda: client.get(
                request={"project": project_id, "image": name}, timeout=self.request_timeout), missing_ok=True)
        return None if found is None else _to_dict(found)

    # ---------------------------------------------------------------- firewalls
    def list_firewalls(self, *, project_id: str, filter_: str) -> list[dict[str, Any]]:
        """Return the project's firewall rules that match a list filter.

        :param project_id: the project
        :param filter_: a Compute Engine list filter
        """
        client = self._client(compute_v1.FirewallsClient)
        return self._list("firewalls.list", "list firewall rules", lambda: client.list(
            request={"project": project_id, "filter": filter_}, timeout=self.request_timeout))

    def insert_firewall_nowait(self, *, project_id: str, body: Mapping[str, Any]) -> str:
        """Start inserting a firewall rule; return the global operation's name.

        :param project_id: the project
        :param body: the firewall resource (snake_case fields)
        """
        client = self._client(compute_v1.FirewallsClient)
        return self._call("firewalls.insert", f"insert firewall rule {body['name']}", lambda: client.insert(
            request={"project": project_id, "firewall_resource": dict(body)}, timeout=self.request_timeout)).name

    def delete_firewall_nowait(self, *, project_id: str, name: str) -> str | None:
        """Start deleting a firewall rule; return the operation's name (None if it does not exist).

        :param project_id: the project
        :param name: the rule's name
        """
        client = self._client(compute_v1.FirewallsClient)
        op = self._call("firewalls.delete", f"delete firewall rule {name}", lambda: client.delete(
            request={"project": project_id, "firewall": name}, timeout=self.request_timeout), missing_ok=True)
        return None if op is None else op.name

    # ---------------------------------------------------------------- disks
    def list_disks(self, *, project_id: str, zone: str, filter_: str) -> list[dict[str, Any]]:
        """Return the persistent disks of a zone that match a list filter.

        :param project_id: the project
        :param zone: the zone
        :param filter_: a Compute Engine list filter
        """
        client = self._client(compute_v1.DisksClient)
        return self._list("disks.list", f"list disks in {zone}", lambda: client.list(
            request={"project": project_id, "zone": zone, "filter": filter_}, timeout=self.request_timeout))

    def get_disk_dict(self, *, project_id: str, zone: str, name: str) -> dict[str, Any] | None:
        """Return a persistent disk, or None if it does not exist.

        :param project_id: the project
        :param zone: the zone
        :param name: the disk name
        """
        client = self._client(compute_v1.DisksClient)
        found = self._call("disks.get", f"disk {name}", lambda: client.get(
            request={"project": project_id, "zone": zone, "disk": name}, timeout=self.request_timeout),
            missing_ok=True)
        return None if found is None else _to_dict(found)

    def insert_disk_nowait(self, *, project_id: str, zone: str, body: Mapping[str, Any], request_id: str) -> str:
        """Start inserting a persistent disk; return the zone operation's name.

        :param project_id: the project
        :param zone: the zone
        :param body: the disk resource (snake_case fields)
        :param request_id: makes a retried request a no-op on the server (a UUID)
        """
        client = self._client(compute_v1.DisksClient)
        return self._call("disks.insert", f"insert disk {body['name']}", lambda: client.insert(
            request={"project": project_id, "zone": zone, "disk_resource": dict(body), "request_id": request_id},
            timeout=self.request_timeout)).name

    def delete_disk_nowait(self, *, project_id: str, zone: str, name: str) -> str | None:
        """Start deleting a persistent disk; return the operation's name (None if it does not exist).

        :param project_id: the project
        :param zone: the zone
        :param name: the disk name
        """
        client = self._client(compute_v1.DisksClient)
        op = self._call("disks.delete", f"delete disk {name}", lambda: client.delete(
            request={"project": project_id, "zone": zone, "disk": name}, timeout=self.request_timeout),
            missing_ok=True)
        return None if op is None else op.name
