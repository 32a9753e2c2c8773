"""A stand-in Azure on loopback: Entra ID token endpoint and Azure Resource Manager over HTTPS.

No part of Azure can run here, so the Azure backend's tests talk to this stand-in, through the real
azure-identity and azure-mgmt-{resource,compute,network} clients over real HTTPS (a self-signed
certificate made at start; clients trust it through ``connection_verify``), at the narrowest
boundary there is: the REST APIs. Paths, api-versions (those the installed SDKs send), bodies,
error codes and long-running-operation headers follow the ARM REST reference
(learn.microsoft.com/rest/api/{resources,compute,virtualnetwork}); the state lives in memory.

What it does: the OpenID configuration and client-credentials token endpoint of a tenant (bad
secret -> ``invalid_client``, AADSTS7000215); bearer-token checks on every ARM call; resource groups
(PUT, GET, HEAD, DELETE cascading to what is inside, 202 + Location); VMs, NICs, public IPs, network
security groups, virtual networks (with inline subnets) and managed disks: PUT as an LRO (201 +
``Azure-AsyncOperation``, provisioningState Creating -> Succeeded after ``build_seconds``), GET, list
per resource group, DELETE as an LRO (202 + ``Azure-AsyncOperation`` and ``Location``) refusing what
is still in use like ARM does (NicInUse, InUseNetworkSecurityGroupCannotBeDeleted,
PublicIPAddressCannotBeDeleted, InUseSubnetCannotBeDeleted, attached disk); a NIC PUT naming a public IP
or network security group not yet Succeeded is refused (400 ReferencedResourceNotProvisioned, as the
network RP does); VM ``$expand=instanceView`` (on GET and on the list) with ProvisioningState/PowerState
statuses, a failed VM's ``ProvisioningState/failed/<code>`` status (level Error, with the message),
``start``/``deallocate``/``powerOff``; OS disks made and deleted with their VM (``deleteOption``); data
disks attached/detached by VM PUT; VM sizes and marketplace image versions of a location. Requests are
served concurrently (one thread each) and go through the state one at a time, under :attr:`lock`.
Fault injection, named as such: ``quota_cores`` (409 OperationNotAllowed at the VM's PUT, as a regional
vCPU quota does: counted per VM, so of concurrent PUTs those past the quota are refused),
``allocation_failures`` (sizes whose VMs end in provisioningState Failed with AllocationFailed),
``allocation_capacity`` (size -> how many more VMs of it can be allocated: the VMs past that end Failed
with AllocationFailed, as a region running out of a size mid-batch does), ``deallocate_behind_backend``.

What it does not: paging (``nextLink``), ETags, RBAC, zones, extensions, role assignments, PATCH,
resource locks, Retry-After, ARM's request throttling (its 429s and per-subscription read/write limits),
the many api-versions real ARM accepts (others get 400 InvalidApiVersionParameter, so a changed SDK
default shows up here), image versions other than ``latest``'s list, IP allocation beyond a counter.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import itertools
import json
import re
import ssl
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

TENANT_ID = "72f988bf-86f1-41af-91ab-2d7cd011db47"
SUBSCRIPTION_ID = "0b1f6471-1bf0-4dda-aec3-111122223333"
CLIENT_ID = "3c1f6b7e-5a1d-4c2e-9f3a-6b7c8d9e0f12"
CLIENT_SECRET = "Az~Sup3r-s3cret.client_secret"
LOCATION = "westeurope"

#: api-versions the installed SDKs send (azure-mgmt-compute 39, -network 33, -resource 26)
API_COMPUTE = "2026-04-01"
API_DISKS = "2026-03-02"
API_NETWORK = "2026-03-01"
API_RESOURCES = "2025-04-01"

#: ``virtual_machine_sizes.list`` of the location (a subset of westeurope's, real figures)
VM_SIZES = [
    {"name": "Standard_B1s", "numberOfCores": 1, "memoryInMB": 1024, "osDiskSizeInMB": 1047552,
     "resourceDiskSizeInMB": 4096, "maxDataDiskCount": 2},
    {"name": "Standard_B2s", "numberOfCores": 2, "memoryInMB": 4096, "osDiskSizeInMB": 1047552,
     "resourceDiskSizeInMB": 8192, "maxDataDiskCount": 4},
    {"name": "Standard_D2s_v5", "numberOfCores": 2, "memoryInMB": 8192, "osDiskSizeInMB": 1047552,
     "resourceDiskSizeInMB": 0, "maxDataDiskCount": 4},
    {"name": "Standard_D4s_v5", "numberOfCores": 4, "memoryInMB": 16384, "osDiskSizeInMB": 1047552,
     "resourceDiskSizeInMB": 0, "maxDataDiskCount": 8},
    {"name": "Standard_F2s_v2", "numberOfCores": 2, "memoryInMB": 4096, "osDiskSizeInMB": 1047552,
     "resourceDiskSizeInMB": 16384, "maxDataDiskCount": 4},
    {"name": "Standard_NC4as_T4_v3", "numberOfCores": 4, "memoryInMB": 28672, "osDiskSizeInMB": 1047552,
     "resourceDiskSizeInMB": 180224, "maxDataDiskCount": 8},
    {"name": "Standard_NC24ads_A100_v4", "numberOfCores": 24, "memoryInMB": 225280, "osDiskSizeInMB": 1047552,
     "resourceDiskSizeInMB": 65536, "maxDataDiskCount": 8},
]
#: marketplace images (publisher, offer, sku) -> versions
IMAGES: dict[tuple[str, str, str], list[str]] = {
    ("Canonical", "0001-com-ubuntu-server-jammy", "22_04-lts-gen2"): ["22.04.202401010", "22.04.202501150"],
    ("Canonical", "ubuntu-24_04-lts", "server"): ["24.04.202501140"],
    ("Debian", "debian-12", "12-gen2"): ["0.20250113.1990"],
}

_COMPUTE = "microsoft.compute"
_NETWORK = "microsoft.network"
#: resource type (lower case) -> (canonical type, api-version, async-operation provider path)
_TYPES = {
    "microsoft.compute/virtualmachines": ("Microsoft.Compute/virtualMachines", API_COMPUTE),
    "microsoft.compute/disks": ("Microsoft.Compute/disks", API_DISKS),
    "microsoft.network/networkinterfaces": ("Microsoft.Network/networkInterfaces", API_NETWORK),
    "microsoft.network/publicipaddresses": ("Microsoft.Network/publicIPAddresses", API_NETWORK),
    "microsoft.network/networksecuritygroups": ("Microsoft.Network/networkSecurityGroups", API_NETWORK),
    "microsoft.network/virtualnetworks": ("Microsoft.Network/virtualNetworks", API_NETWORK),
}

#: the network RP's name of the PUT that made a resource, for ReferencedResourceNotProvisioned
_PUT_OPERATIONS = {"Microsoft.Network/publicIPAddresses": "PutPublicIpAddressOperation",
                   "Microsoft.Network/networkSecurityGroups": "PutNetworkSecurityGroupOperation"}


class ArmError(Exception):
    """An ARM error answer: ``{"error": {"code", "message"}}``."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(code)
        self.status = status
        self.body = {"error": {"code": code, "message": message}}


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """Write a self-signed certificate for 127.0.0.1 (and its key); return their paths.

    :param directory: where to write them
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "azure-stand-in.local")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                                    x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "stand-in.crt", directory / "stand-in.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


class AzureStandIn:
    """The stand-in: start it, point an ``azure`` connection at :attr:`base` (trusting :attr:`ca_bundle`).

    :param build_seconds: how long a VM stays Creating
    :param delete_seconds: how long a deleted VM or resource group stays listed as Deleting
    :param resource_seconds: how long other resources stay Creating (default: a tenth of ``build_seconds``)
    """

    def __init__(self, build_seconds: float = 0.05, delete_seconds: float = 0.03,
                 resource_seconds: float | None = None) -> None:
        self.build_seconds = build_seconds
        self.resource_seconds = build_seconds / 10 if resource_seconds is None else resource_seconds
        self.delete_seconds = delete_seconds
        self.lock = threading.RLock()
        #: lower-case ARM id -> resource (REST JSON plus private ``_`` keys)
        self.resources: dict[str, dict[str, Any]] = {}
        #: lower-case resource group name -> resource group
        self.groups: dict[str, dict[str, Any]] = {}
        self.operations: dict[str, dict[str, Any]] = {}
        self.tokens: set[str] = set()
        self.requests: list[tuple[str, str]] = []
        # fault injection
        self.quota_cores: int | None = None
        self.allocation_failures: set[str] = set()
        #: size -> how many more VMs of it the region can allocate; the VMs past that end Failed (AllocationFailed)
        self.allocation_capacity: dict[str, int] = {}
        self._ips = itertools.count(4)
        self._tmp = tempfile.TemporaryDirectory(prefix="azure-stand-in-")
        self.ca_bundle, self._key = make_certificate(Path(self._tmp.name))
        self._httpd: ThreadingHTTPServer | None = None

    # ---------------------------------------------------------------- lifecycle
    @property
    def base(self) -> str:
        assert self._httpd is not None, "start() the stand-in first"
        return f"https://127.0.0.1:{self._httpd.server_address[1]}"

    def start(self) -> AzureStandIn:
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def log_message(self, *args: Any) -> None:
                pass

            def _handle(self) -> None:
                stand_in._dispatch(self)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _handle

        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.ca_bundle, self._key)
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._httpd.socket = context.wrap_socket(self._httpd.socket, server_side=True)
        threading.Thread(target=self._httpd.serve_forever, name="azure-stand-in", daemon=True).start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        self._tmp.cleanup()

    # ---------------------------------------------------------------- probes (behind the SDK's back)
    def of_deployment(self, deployment_id: str, group: str) -> list[str]:
        """Return the ids of live resources tagged with the deployment or inside its resource group.

        :param deployment_id: the deployment
        :param group: the resource group the backend uses for it
        """
        self._tick()
        with self.lock:
            return sorted(
                r["id"] for r in self.resources.values()
                if (r.get("tags") or {}).get("cloud-paas-deployment") == deployment_id
                or r["_group"] == group.lower()
            )

    def find(self, kind: str, name: str | None = None) -> list[dict[str, Any]]:
        """Return the live resources of a type (``virtualMachines``, ``disks``...), optionally by name.

        :param kind: the resource type's last segment
        :param name: the resource's name
        """
        self._tick()
        with self.lock:
            return [r for r in self.resources.values()
                    if r["type"].split("/")[-1].lower() == kind.lower() and (name is None or r["name"] == name)]

    def get(self, resource_id: str) -> dict[str, Any] | None:
        """Return a live resource by ARM id.

        :param resource_id: the id
        """
        self._tick()
        with self.lock:
            return self.resources.get(resource_id.lower())

    def deallocate_behind_backend(self, vm_id: str) -> None:
        """Deallocate a VM as the portal would (fault injection).

        :param vm_id: the VM's ARM id
        """
        with self.lock:
            self.resources[vm_id.lower()]["_power"] = "deallocated"

    # ---------------------------------------------------------------- time
    def _tick(self) -> None:
        now = time.monotonic()
        with self.lock:
            for key, res in list(self.resources.items()):
                if res.get("_gone_at") is not None and res["_gone_at"] <= now:
                    self._remove(key)
                elif res["properties"].get("provisioningState") in ("Creating", "Updating") and res["_ready_at"] <= now:
                    if res.get("_fail"):
                        res["properties"]["provisioningState"] = "Failed"
                    else:
                        res["properties"]["provisioningState"] = "Succeeded"
                        if res["type"].endswith("virtualMachines") and res.get("_power") == "starting":
                            res["_power"] = "running"
            for key, group in list(self.groups.items()):
                if group.get("_gone_at") is not None and group["_gone_at"] <= now:
                    del self.groups[key]

    def _remove(self, key: str) -> None:
        res = self.resources.pop(key, None)
        if res is None:
            return
        kind = res["type"].lower()
        if kind == "microsoft.compute/virtualmachines":
            storage = res["properties"]["storageProfile"]
            os_disk = self.resources.get(str(storage["osDisk"]["managedDisk"]["id"]).lower())
            if os_disk is not None:
                if str(storage["osDisk"].get("deleteOption", "Detach")).lower() == "delete":
                    self.resources.pop(os_disk["id"].lower(), None)
                else:
                    os_disk.pop("managedBy", None)
                    os_disk["properties"]["diskState"] = "Unattached"
            for data in storage.get("dataDisks") or []:
                disk = self.resources.get(str(data["managedDisk"]["id"]).lower())
                if disk is not None:
                    disk.pop("managedBy", None)
                    disk["properties"]["diskState"] = "Unattached"
            for ref in res["properties"]["networkProfile"]["networkInterfaces"]:
                nic = self.resources.get(ref["id"].lower())
                if nic is not None:
                    nic["properties"].pop("virtualMachine", None)
        elif kind == "microsoft.network/networkinterfaces":
            for other in self.resources.values():
                if (other["properties"].get("ipConfiguration") or {}).get("_nic") == key:
                    other["properties"].pop("ipConfiguration")
                other.get("_nics", set()).discard(key)

    # ---------------------------------------------------------------- HTTP
    def _dispatch(self, handler: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(handler.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        status, body, headers = 500, None, {}
        # one request at a time through the state (the server answers each in its own thread): concurrent PUTs,
        # lists and probes see each other whole, as ARM's own consistency would have them; the bodies answered are
        # copies, so the slow part (TLS, sending) runs outside the lock
        with self.lock:
            self.requests.append((handler.command, parts.path))
            try:
                self._tick()
                if "/oauth2/" in parts.path or "/.well-known/" in parts.path:
                    status, body = self._identity(handler.command, parts.path, raw)
                else:
                    self._authorize(handler.headers.get("Authorization"))
                    status, body, headers = self._arm(handler.command, parts.path, query,
                                                      json.loads(raw) if raw else None)
            except ArmError as err:
                status, body = err.status, err.body
        payload = b"" if body is None else json.dumps(body).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json; charset=utf-8")
        handler.send_header("Content-Length", str(len(payload)))
        handler.send_header("x-ms-request-id", str(uuid.uuid4()))
        for key, value in headers.items():
            handler.send_header(key, value)
        handler.end_headers()
        if handler.command != "HEAD":
            handler.wfile.write(payload)

    def _identity(self, method: str, path: str, raw: bytes) -> tuple[int, Any]:
        tenant = path.strip("/").split("/")[0]
        if tenant != TENANT_ID:
            raise ArmError(400, "invalid_request", f"AADSTS90002: Tenant '{tenant}' not found.")
        authority = f"{self.base}/{tenant}"
        if method == "GET" and path.endswith("/v2.0/.well-known/openid-configuration"):
            return 200, {
                "token_endpoint": f"{authority}/oauth2/v2.0/token",
                "authorization_endpoint": f"{authority}/oauth2/v2.0/authorize",
                "device_authorization_endpoint": f"{authority}/oauth2/v2.0/devicecode",
                "issuer": f"{authority}/v2.0",
                "jwks_uri": f"{authority}/discovery/v2.0/keys",
                "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt",
                                                          "client_secret_basic"],
                "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
                "tenant_region_scope": "EU",
            }
        if method == "POST" and path.endswith("/oauth2/v2.0/token"):
            form = {k: v[-1] for k, v in parse_qs(raw.decode()).items()}
            if form.get("client_id") != CLIENT_ID or form.get("client_secret") != CLIENT_SECRET:
                body = {"error": "invalid_client", "error_description": (
                    "AADSTS7000215: Invalid client secret provided. Ensure the secret being sent in the request "
                    f"is the client secret value, not the client secret ID, for a secret added to app '{CLIENT_ID}'."),
                    "error_codes": [7000215]}
                raise _Raw(401, body)
            token = f"eyJ0eXAiOiJKV1Qi.stand-in.{uuid.uuid4().hex}"
            with self.lock:
                self.tokens.add(token)
            return 200, {"token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599, "access_token": token}
        raise ArmError(404, "NotFound", path)

    def _authorize(self, header: str | None) -> None:
        token = (header or "").removeprefix("Bearer ").strip()
        if token not in self.tokens:
            raise ArmError(401, "InvalidAuthenticationToken", "The access token is invalid.")

    def _op_headers(self, key: str, api_version: str, namespace: str, *, location_too: bool = False,
                    until: float | None = None) -> dict[str, str]:
        op_id = str(uuid.uuid4())
        with self.lock:
            self.operations[op_id] = {"key": key, "until": until}
        prefix = f"{self.base}/subscriptions/{SUBSCRIPTION_ID}/providers/{namespace}/locations/{LOCATION}"
        headers = {"Azure-AsyncOperation": f"{prefix}/operations/{op_id}?api-version={api_version}"}
        if location_too:
            headers["Location"] = f"{prefix}/operationResults/{op_id}?api-version={api_version}"
        return headers

    def _arm(self, method: str, path: str, query: dict[str, str], body: Any) -> tuple[int, Any, dict[str, str]]:
        api = query.get("api-version")
        sub = f"/subscriptions/{SUBSCRIPTION_ID}"
        if not path.lower().startswith(sub.lower()):
            raise ArmError(404, "SubscriptionNotFound", f"The subscription '{path.split('/')[2]}' could not be found.")
        rest = path[len(sub):]
        m = re.fullmatch(r"/providers/(Microsoft\.\w+)/locations/([^/]+)/(operations|operationResults)/([^/]+)",
                         rest, re.I)
        if m:
            return self._operation(m.group(3).lower() == "operationresults", m.group(4))
        m = re.fullmatch(r"/operationresults/([^/]+)", rest, re.I)  # resource groups' delete
        if m:
            return self._operation(True, m.group(1))
        m = re.fullmatch(r"/providers/Microsoft\.Compute/locations/([^/]+)/vmSizes", rest, re.I)
        if m:
            self._api(api, API_COMPUTE)
            return 200, {"value": VM_SIZES if m.group(1).lower() == LOCATION else []}, {}
        m = re.fullmatch(r"/providers/Microsoft\.Compute/locations/([^/]+)/publishers/([^/]+)/artifacttypes/vmimage/"
                         r"offers/([^/]+)/skus/([^/]+)/versions", rest, re.I)
        if m:
            self._api(api, API_COMPUTE)
            versions = IMAGES.get((m.group(2), m.group(3), m.group(4)))
            if versions is None or m.group(1).lower() != LOCATION:
                raise ArmError(404, "NotFound", "Artifact: VMImage was not found.")
            return 200, [{"name": v, "location": LOCATION,
                          "id": f"{path}/{v}"} for v in versions], {}
        m = re.fullmatch(r"/resourcegroups/([^/]+)/resources", rest, re.I)
        if m:
            self._api(api, API_RESOURCES)
            if m.group(1).lower() not in self.groups:
                raise ArmError(404, "ResourceGroupNotFound", f"Resource group '{m.group(1)}' could not be found.")
            with self.lock:
                items = [{k: r[k] for k in ("id", "name", "type", "location", "tags")}
                         for r in self.resources.values() if r["_group"] == m.group(1).lower()]
            return 200, {"value": items}, {}
        m = re.fullmatch(r"/resourcegroups/([^/]+)", rest, re.I)
        if m:
            self._api(api, API_RESOURCES)
            return self._group(method, m.group(1), body)
        m = re.fullmatch(r"/resourceGroups/([^/]+)/providers/(Microsoft\.\w+)/(\w+)(?:/([^/]+))?(?:/(\w+))?", rest,
                         re.I)
        if not m:
            raise ArmError(404, "InvalidResourceType", f"no route for {method} {path}")
        group, namespace, kind, name, action = m.groups()
        type_key = f"{namespace}/{kind}".lower()
        if type_key not in _TYPES:
            raise ArmError(404, "InvalidResourceType", f"The resource type '{kind}' could not be found in the "
                                                       f"namespace '{namespace}'.")
        canonical, expected_api = _TYPES[type_key]
        self._api(api, expected_api)
        if group.lower() not in self.groups or self.groups[group.lower()].get("_gone_at") is not None:
            raise ArmError(404, "ResourceGroupNotFound", f"Resource group '{group}' could not be found.")
        if name is None:
            if method != "GET":
                raise ArmError(405, "MethodNotAllowed", method)
            with self.lock:
                items = [self._view(r, query) for r in self.resources.values()
                         if r["_group"] == group.lower() and r["type"].lower() == type_key]
            return 200, {"value": items}, {}
        rid = f"{sub}/resourceGroups/{group}/providers/{canonical}/{name}"
        key = rid.lower()
        if action:
            return self._vm_action(method, key, action, api)
        if method == "GET":
            res = self.resources.get(key)
            if res is None:
                raise ArmError(404, "ResourceNotFound", f"The Resource '{canonical}/{name}' under resource group "
                                                       f"'{group}' was not found.")
            return 200, self._view(res, query), {}
        if method == "PUT":
            return self._put(type_key, rid, group, name, body, api)
        if method == "DELETE":
            return self._delete(key, api, namespace)
        raise ArmError(405, "MethodNotAllowed", method)

    @staticmethod
    def _api(got: str | None, expected: str) -> None:
        if got != expected:
            raise ArmError(400, "InvalidApiVersionParameter", f"The api-version '{got}' is invalid. The supported "
                                                              f"versions (of this stand-in) are '{expected}'.")

    def _operation(self, result: bool, op_id: str) -> tuple[int, Any, dict[str, str]]:
        op = self.operations.get(op_id)
        if op is None:
            raise ArmError(404, "NotFound", op_id)
        key = op["key"]
        now = time.monotonic()
        with self.lock:
            res = self.resources.get(key) or self.groups.get(key)
            if op.get("delete"):
                done = res is None
                status = "Succeeded" if done else "InProgress"
                error = None
            elif res is None:
                status, error = "Failed", {"code": "NotFound", "message": "the resource is gone"}
            else:
                state = res["properties"].get("provisioningState")
                status = {"Succeeded": "Succeeded", "Failed": "Failed"}.get(state, "InProgress")
                error = res.get("_fail") if status == "Failed" else None
                if op.get("until") is not None:
                    status = "Succeeded" if op["until"] <= now else "InProgress"
        if result:
            return (202 if status == "InProgress" else 200), None, {}
        body: dict[str, Any] = {"name": op_id, "status": status, "startTime": _now()}
        if error:
            body["error"] = error
        return 200, body, {}

    # ---------------------------------------------------------------- resource groups
    def _group(self, method: str, name: str, body: Any) -> tuple[int, Any, dict[str, str]]:
        key = name.lower()
        group = self.groups.get(key)
        live = group is not None and group.get("_gone_at") is None
        if method == "HEAD":
            return (204 if live else 404), None, {}
        if method == "GET":
            if group is None:
                raise ArmError(404, "ResourceGroupNotFound", f"Resource group '{name}' could not be found.")
            return 200, self._public(group), {}
        if method == "PUT":
            if group is not None and group.get("_gone_at") is not None:
                raise ArmError(409, "ResourceGroupBeingDeleted", f"The resource group '{name}' is in deprovisioning "
                                                                 "state and cannot perform this operation.")
            created = group is None
            group = {"id": f"/subscriptions/{SUBSCRIPTION_ID}/resourceGroups/{name}", "name": name,
                     "type": "Microsoft.Resources/resourceGroups", "location": body["location"],
                     "tags": dict(body.get("tags") or {}), "properties": {"provisioningState": "Succeeded"}}
            self.groups[key] = group
            return (201 if created else 200), self._public(group), {}
        if method == "DELETE":
            if group is None:
                raise ArmError(404, "ResourceGroupNotFound", f"Resource group '{name}' could not be found.")
            group["_gone_at"] = time.monotonic() + self.delete_seconds
            group["properties"]["provisioningState"] = "Deleting"
            for res in self.resources.values():
                if res["_group"] == key:
                    res["_gone_at"] = group["_gone_at"]
            op_id = str(uuid.uuid4())
            self.operations[op_id] = {"key": key, "delete": True}
            return 202, None, {"Location": f"{self.base}/subscriptions/{SUBSCRIPTION_ID}/operationresults/"
                                           f"{op_id}?api-version={API_RESOURCES}"}
        raise ArmError(405, "MethodNotAllowed", method)

    # ---------------------------------------------------------------- resources
    @staticmethod
    def _public(res: dict[str, Any]) -> dict[str, Any]:
        def clean(value: Any) -> Any:
            if isinstance(value, dict):
                return {k: clean(v) for k, v in value.items() if not k.startswith("_")}
            if isinstance(value, list):
                return [clean(v) for v in value]
            if isinstance(value, set):
                return None
            return value

        return clean(res)

    def _view(self, res: dict[str, Any], query: dict[str, str]) -> dict[str, Any]:
        body = self._public(res)
        if res["type"].endswith("virtualMachines") and query.get("$expand") == "instanceView":
            statuses = [{"code": f"ProvisioningState/{res['properties']['provisioningState'].lower()}",
                         "level": "Info", "displayStatus": f"Provisioning {res['properties']['provisioningState']}"}]
            if res.get("_power") and res["properties"]["provisioningState"] != "Failed":
                statuses.append({"code": f"PowerState/{res['_power']}", "level": "Info",
                                 "displayStatus": f"VM {res['_power']}"})
            if res["properties"]["provisioningState"] == "Failed" and res.get("_fail"):
                # what failed, as the instance view says it: ProvisioningState/failed/<code>, level Error
                statuses[0] = {"code": f"ProvisioningState/failed/{res['_fail']['code']}", "level": "Error",
                               "displayStatus": "Provisioning failed", "message": res["_fail"]["message"]}
            body["properties"]["instanceView"] = {"statuses": statuses}
        return body

    def _ref(self, ref: Any, what: str, rid: str, *, provisioned: bool = False) -> dict[str, Any]:
        target = self.resources.get(str((ref or {}).get("id", "")).lower())
        if target is None:
            raise ArmError(400, "InvalidResourceReference", f"Resource {(ref or {}).get('id')} referenced by "
                                                            f"resource {rid} was not found ({what}).")
        state = target["properties"].get("provisioningState")
        if provisioned and state != "Succeeded":  # the network RP refuses to use what is still being made
            raise ArmError(400, "ReferencedResourceNotProvisioned", (
                f"Cannot proceed with operation because resource {target['id']} used by resource {rid} is not in "
                f"Succeeded state. Resource is in {state} state and the last operation that updated/is updating the "
                f"resource is {_PUT_OPERATIONS.get(target['type'], 'PutOperation')}."))
        return target

    def _put(self, type_key: str, rid: str, group: str, name: str, body: Any,
             api: str) -> tuple[int, Any, dict[str, str]]:
        key = rid.lower()
        with self.lock:
            existing = self.resources.get(key)
            if existing is not None and existing.get("_gone_at") is not None:
                raise ArmError(409, "Conflict", f"{name} is being deleted")
            props = dict(body.get("properties") or {})
            res: dict[str, Any] = {
                "id": rid, "name": name, "type": _TYPES[type_key][0], "location": body.get("location", LOCATION),
                "tags": dict(body.get("tags") or {}), "properties": props, "_group": group.lower(),
                "_ready_at": time.monotonic() + self.resource_seconds, "_fail": None,
            }
            if existing is not None:
                res["_nics"] = existing.get("_nics", set())
                for carried in ("_power",):
                    if carried in existing:
                        res[carried] = existing[carried]
            if "sku" in body:
                res["sku"] = body["sku"]
            getattr(self, "_put_" + type_key.split("/")[1])(res, existing)
            props["provisioningState"] = "Updating" if existing is not None else "Creating"
            self.resources[key] = res
        namespace = _TYPES[type_key][0].split("/")[0]
        if type_key == "microsoft.compute/disks":  # the disk RP accepts (202) where the others create (201)
            return 202, self._public(res), self._op_headers(key, api, namespace, location_too=True)
        return (200 if existing is not None else 201), self._public(res), self._op_headers(key, api, namespace)

    def _put_virtualmachines(self, res: dict[str, Any], existing: dict[str, Any] | None) -> None:
        props = res["properties"]
        size = props["hardwareProfile"]["vmSize"]
        sizes = {s["name"]: s for s in VM_SIZES}
        if size not in sizes:
            raise ArmError(400, "InvalidParameter", f"The requested VM size {size} is not available in the current "
                                                    f"region.")
        if existing is None and self.quota_cores is not None:
            used = sum(sizes[r["properties"]["hardwareProfile"]["vmSize"]]["numberOfCores"]
                       for r in self.resources.values() if r["type"].endswith("virtualMachines"))
            wanted = sizes[size]["numberOfCores"]
            if used + wanted > self.quota_cores:
                raise ArmError(409, "OperationNotAllowed", (
                    "Operation could not be completed as it results in exceeding approved Total Regional Cores "
                    f"quota. Additional details - Deployment Model: Resource Manager, Location: {LOCATION}, Current "
                    f"Limit: {self.quota_cores}, Current Usage: {used}, Additional Required: {wanted}, (Minimum) New "
                    f"Limit Required: {used + wanted}. Submit a request for Quota increase at https://aka.ms/"
                    "ProdportalCRP/#blade/Microsoft_Azure_Capacity/UsageAndQuota.ReactView."))
        storage = props["storageProfile"]
        image = storage.get("imageReference") or {}
        if existing is None and (image.get("publisher"), image.get("offer"), image.get("sku")) not in IMAGES:
            raise ArmError(404, "PlatformImageNotFound", f"The platform image '{image.get('publisher')}:"
                                                         f"{image.get('offer')}:{image.get('sku')}:"
                                                         f"{image.get('version')}' is not available.")
        nics = [self._ref(ref, "network interface", res["id"]) for ref in props["networkProfile"]["networkInterfaces"]]
        for nic in nics:
            owner = nic["properties"].get("virtualMachine")
            if owner and owner["id"].lower() != res["id"].lower():
                raise ArmError(400, "NicInUse", f"Network Interface {nic['id']} is used by existing resource "
                                                f"{owner['id']}.")
        os_disk = storage.setdefault("osDisk", {"createOption": "FromImage"})
        if existing is not None:
            os_disk["managedDisk"] = existing["properties"]["storageProfile"]["osDisk"]["managedDisk"]
        else:
            disk_name = os_disk.get("name") or f"{res['name']}_OsDisk_1_{uuid.uuid4().hex}"
            disk_id = f"{res['id'].split('/providers/')[0]}/providers/Microsoft.Compute/disks/{disk_name}"
            os_disk.update(name=disk_name, managedDisk={"id": disk_id, "storageAccountType": (
                os_disk.get("managedDisk") or {}).get("storageAccountType", "Premium_LRS")})
            self.resources[disk_id.lower()] = {
                "id": disk_id, "name": disk_name, "type": "Microsoft.Compute/disks", "location": res["location"],
                "tags": {}, "managedBy": res["id"], "_group": res["_group"], "_ready_at": 0, "_fail": None,
                "properties": {"provisioningState": "Succeeded", "diskState": "Attached", "osType": "Linux",
                               "diskSizeGB": os_disk.get("diskSizeGB", 30), "creationData": {"createOption":
                                                                                             "FromImage"}},
            }
        wanted = {str(d["managedDisk"]["id"]).lower() for d in storage.get("dataDisks") or []}
        for data in storage.get("dataDisks") or []:
            disk = self._ref(data.get("managedDisk"), "data disk", res["id"])
            if disk.get("managedBy") and disk["managedBy"].lower() != res["id"].lower():
                raise ArmError(409, "OperationNotAllowed", f"Disk {disk['name']} is already attached to "
                                                           f"{disk['managedBy']}.")
            disk["managedBy"], disk["properties"]["diskState"] = res["id"], "Attached"
        if existing is not None:
            for data in existing["properties"]["storageProfile"].get("dataDisks") or []:
                disk = self.resources.get(str(data["managedDisk"]["id"]).lower())
                if disk is not None and disk["id"].lower() not in wanted:
                    disk.pop("managedBy", None)
                    disk["properties"]["diskState"] = "Unattached"
        for nic in nics:
            nic["properties"]["virtualMachine"] = {"id": res["id"]}
        props["vmId"] = (existing or {}).get("properties", {}).get("vmId") or str(uuid.uuid4())
        props.setdefault("timeCreated", _now())
        res["_ready_at"] = time.monotonic() + self.build_seconds
        if existing is None:
            res["_power"] = "starting"
            capacity = self.allocation_capacity.get(size)
            if capacity is not None:  # each VM of the size takes one of what is left; past that, none is made
                self.allocation_capacity[size] = max(0, capacity - 1)
            if size in self.allocation_failures or capacity == 0:
                res["_fail"] = {"code": "AllocationFailed", "message": (
                    "Allocation failed. We do not have sufficient capacity for the requested VM size in this region. "
                    "Read more about improving likelihood of allocation success at http://aka.ms/allocation-guidance")}
                res["_power"] = None

    def _put_networkinterfaces(self, res: dict[str, Any], existing: dict[str, Any] | None) -> None:
        props = res["properties"]
        for i, conf in enumerate(props.get("ipConfigurations") or []):
            cprops = conf.setdefault("properties", {})
            subnet = self._subnet(cprops.get("subnet"), res["id"])
            conf.setdefault("name", f"ipconfig{i + 1}")
            conf["id"] = f"{res['id']}/ipConfigurations/{conf['name']}"
            old = ((existing or {}).get("properties", {}).get("ipConfigurations") or [{}])[0]
            cprops["privateIPAddress"] = old.get("properties", {}).get("privateIPAddress") or (
                subnet["properties"]["addressPrefix"].rsplit(".", 1)[0] + f".{next(self._ips)}")
            cprops["privateIPAllocationMethod"] = "Dynamic"
            cprops["provisioningState"] = "Succeeded"
            if cprops.get("publicIPAddress"):
                pip = self._ref(cprops["publicIPAddress"], "public IP address", res["id"], provisioned=True)
                owner = pip["properties"].get("ipConfiguration")
                if owner and owner["_nic"] != res["id"].lower():
                    raise ArmError(400, "PublicIPAddressInUse", f"Resource {pip['id']} is in use by {owner['id']}")
                pip["properties"]["ipConfiguration"] = {"id": conf["id"], "_nic": res["id"].lower()}
        if props.get("networkSecurityGroup"):
            nsg = self._ref(props["networkSecurityGroup"], "network security group", res["id"], provisioned=True)
            nsg.setdefault("_nics", set()).add(res["id"].lower())
        if existing is not None and existing["properties"].get("virtualMachine"):
            props["virtualMachine"] = existing["properties"]["virtualMachine"]
        props["macAddress"] = "00-0D-3A-" + uuid.uuid4().hex[:6].upper()

    def _subnet(self, ref: Any, rid: str) -> dict[str, Any]:
        subnet_id = str((ref or {}).get("id", ""))
        vnet = self.resources.get(subnet_id.lower().split("/subnets/")[0])
        for subnet in (vnet or {}).get("properties", {}).get("subnets") or []:
            if subnet["id"].lower() == subnet_id.lower():
                return subnet
        raise ArmError(400, "InvalidResourceReference", f"Resource {subnet_id} referenced by resource {rid} was not "
                                                        "found.")

    def _put_publicipaddresses(self, res: dict[str, Any], existing: dict[str, Any] | None) -> None:
        props = res["properties"]
        old = (existing or {}).get("properties", {})
        props["ipAddress"] = old.get("ipAddress") or f"20.61.{next(self._ips)}.{next(self._ips) % 250 + 1}"
        if old.get("ipConfiguration"):
            props["ipConfiguration"] = old["ipConfiguration"]
        props.setdefault("publicIPAllocationMethod", "Static")

    def _put_networksecuritygroups(self, res: dict[str, Any], existing: dict[str, Any] | None) -> None:
        for rule in res["properties"].get("securityRules") or []:
            rule["id"] = f"{res['id']}/securityRules/{rule['name']}"
            for field in ("priority", "direction", "access", "protocol"):
                if field not in rule.get("properties", {}):
                    raise ArmError(400, "SecurityRuleInvalidParameter", f"rule {rule['name']}: {field} is required")
        res["properties"]["defaultSecurityRules"] = [
            {"name": "AllowVnetInBound", "properties": {"priority": 65000, "direction": "Inbound"}},
            {"name": "DenyAllInBound", "properties": {"priority": 65500, "direction": "Inbound"}},
        ]

    def _put_virtualnetworks(self, res: dict[str, Any], existing: dict[str, Any] | None) -> None:
        for subnet in res["properties"].get("subnets") or []:
            subnet["id"] = f"{res['id']}/subnets/{subnet['name']}"
            subnet.setdefault("properties", {})["provisioningState"] = "Succeeded"

    def _put_disks(self, res: dict[str, Any], existing: dict[str, Any] | None) -> None:
        props = res["properties"]
        if existing is not None:
            res["managedBy"] = existing.get("managedBy")
            props["diskState"] = existing["properties"]["diskState"]
        else:
            if (props.get("creationData") or {}).get("createOption") != "Empty" or not props.get("diskSizeGB"):
                raise ArmError(400, "InvalidParameter", "creationData.createOption Empty needs diskSizeGB")
            props["diskState"] = "Unattached"
        props["uniqueId"] = str(uuid.uuid4())

    def _delete(self, key: str, api: str, namespace: str) -> tuple[int, Any, dict[str, str]]:
        with self.lock:
            res = self.resources.get(key)
            if res is None:
                return 204, None, {}
            kind = res["type"].lower()
            props = res["properties"]
            if kind.endswith("networkinterfaces") and props.get("virtualMachine"):
                raise ArmError(400, "NicInUse", f"Network Interface {res['id']} is used by existing resource "
                                                f"{props['virtualMachine']['id']}. In order to delete the network "
                                                "interface, it must be dissociated from the resource.")
            if kind.endswith("networksecuritygroups") and res.get("_nics"):
                raise ArmError(400, "InUseNetworkSecurityGroupCannotBeDeleted",
                               f"Network security group {res['id']} cannot be deleted because it is in use by the "
                               f"following resources: {sorted(res['_nics'])}.")
            if kind.endswith("publicipaddresses") and props.get("ipConfiguration"):
                raise ArmError(400, "PublicIPAddressCannotBeDeleted",
                               f"Public IP address {res['id']} can not be deleted since it is still allocated to "
                               f"resource {props['ipConfiguration']['id']}.")
            if kind.endswith("virtualnetworks"):
                for other in self.resources.values():
                    for conf in other["properties"].get("ipConfigurations") or []:
                        subnet = str(conf.get("properties", {}).get("subnet", {}).get("id", "")).lower()
                        if subnet.startswith(key + "/subnets/"):
                            raise ArmError(400, "InUseSubnetCannotBeDeleted", f"Subnet {subnet} is in use by "
                                                                              f"{other['id']}.")
            if kind.endswith("disks") and res.get("managedBy"):
                raise ArmError(409, "OperationNotAllowed", f"Disk {res['name']} is attached to VM "
                                                           f"{res['managedBy']}.")
            slow = kind.endswith("virtualmachines")
            res["_gone_at"] = time.monotonic() + (self.delete_seconds if slow else 0)
            props["provisioningState"] = "Deleting"
            if not slow:
                self._remove(key)
            headers = self._op_headers(key, api, _TYPES[kind][0].split("/")[0], location_too=True)
            self.operations[headers["Azure-AsyncOperation"].split("/operations/")[1].split("?")[0]]["delete"] = True
        return 202, None, headers

    def _vm_action(self, method: str, key: str, action: str, api: str) -> tuple[int, Any, dict[str, str]]:
        res = self.resources.get(key)
        if res is None or method != "POST" or not res["type"].endswith("virtualMachines"):
            raise ArmError(404, "ResourceNotFound", key)
        power = {"start": "running", "deallocate": "deallocated", "poweroff": "stopped", "restart": "running"}.get(
            action.lower())
        if power is None:
            raise ArmError(404, "InvalidResourceType", action)
        with self.lock:
            res["_power"] = power
        return 202, None, self._op_headers(key, api, "Microsoft.Compute", location_too=True,
                                           until=time.monotonic() + self.build_seconds / 5)


class _Raw(ArmError):
    """An answer whose body is not ARM's error shape (the token endpoint's OAuth errors)."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        Exception.__init__(self, status)
        self.status = status
        self.body = body


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f0Z")


@contextlib.contextmanager
def running_stand_in(**options: Any) -> Iterator[AzureStandIn]:
    """Run a stand-in Azure for the duration of a ``with`` block.

    :param options: :class:`AzureStandIn` arguments
    """
    stand_in = AzureStandIn(**options).start()
    try:
        yield stand_in
    finally:
        stand_in.stop()
