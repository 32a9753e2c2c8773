"""A stand-in OpenStack cloud on loopback: Keystone v3, Nova, Neutron, Cinder v3 and Glance v2 over HTTP.

Nothing of OpenStack can run here, so the backend's tests talk to this stand-in, through the real
openstacksdk over real HTTP, at the narrowest boundary there is: the REST APIs. Response bodies follow
the field names of the api-ref (docs.openstack.org/api-ref/{identity,compute,network,block-storage,
image}) as recorded from real clouds; the state lives in memory.

What it does: token issue (password, application credential, token) with a service catalog pointing
back at itself, version discovery documents, flavors (with extra_specs), images, servers (BUILD ->
ACTIVE after ``build_seconds``; deletion takes ``delete_seconds``; os-start/os-stop; volume
attachments; a Nova-made port per server on its network), networks, security groups and rules (in
use -> 409), ports, floating IPs, Neutron ``tags`` filters and tags at creation, volumes
(creating -> available, in-use while attached, refusing deletion when attached), quotas on instances
(403 or 413). Nova's multiple create as the api-ref and ``nova.compute.api`` describe it: ``min_count`` /
``max_count`` in POST /servers make between the two (as many as the instance quota allows; fewer than
``min_count`` fit: the quota error and nothing made), every server with the request's metadata, named by
``multi_instance_name_template`` (Nova's default ``%(name)s-%(count)d``, count from 1) when more than one is
made, the answer holding the first server only (or ``{"reservation_id": ...}`` with
``return_reservation_id``); the ``reservation_id`` and ``name`` (regex) list filters; server metadata
POST/PUT/GET, refused (409) while the server builds, as Nova's ``update_instance_metadata`` is. Fault
injection, named as such: ``error_images`` (servers booted from them go to ERROR with a fault),
``quota_instances`` (also what makes a multiple create short of ``max_count``), ``quota_status``,
``multi_instance_name_template`` (a cloud whose operator changed the template), ``reject_auth``.

What it does not: pagination markers, policy/roles, microversion-dependent bodies (it always answers
in the newest shape), server-side metadata filters, the admin-only extended attributes of a
multiple create (``OS-EXT-SRV-ATTR:launch_index``/``reservation_id``: hidden, as from a project member),
scheduling (a multiple create that does not fit a host puts all its servers in ERROR on Nova), routers,
subnets' IP allocation beyond a counter, Glance uploads, Cinder snapshots/types, Keystone catalog scoping
by region beyond a single region.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

REGION = "RegionOne"
PROJECT_ID = "5f2b6c1e9a8d4f7b8c3e2d1a0b9c8d7e"
USER_ID = "a1b2c3d4e5f60718293a4b5c6d7e8f90"
USERNAME = "paas-user"
PASSWORD = "Sup3r-s3cret-Passw0rd"
APP_CRED_ID = "0c7c41e5b8bd4e4d9b1e8c6f3e3a1d42"
APP_CRED_SECRET = "app-cred-S3cret-9f8e7d"
STATIC_TOKEN = "gAAAAABstatic-token-for-tests-0123456789"

#: flavors as Nova lists them (ram in MiB, disk in GiB); the GPU one carries a PCI alias like real clouds
FLAVORS = [
    {"id": "1", "name": "m1.tiny", "vcpus": 1, "ram": 512, "disk": 1, "extra_specs": {}},
    {"id": "2", "name": "m1.small", "vcpus": 1, "ram": 2048, "disk": 20, "extra_specs": {}},
    {"id": "3", "name": "m1.medium", "vcpus": 2, "ram": 4096, "disk": 40, "extra_specs": {}},
    {"id": "4", "name": "m1.large", "vcpus": 4, "ram": 8192, "disk": 80, "extra_specs": {}},
    {"id": "g1", "name": "g1.a100", "vcpus": 8, "ram": 65536, "disk": 100,
     "extra_specs": {"pci_passthrough:alias": "a100:1"}},
]
#: Glance images (os_* are the common image properties of the Glance metadata definitions)
IMAGES = [
    {"id": "8a3e1a2c-0d6f-4c43-9b58-2f9b6b0c6a11", "name": "ubuntu-22.04", "os_distro": "ubuntu",
     "os_version": "22.04", "os_type": "linux", "created_at": "2024-05-01T10:00:00Z"},
    {"id": "5b1f0d3e-7c2a-4e8b-a6d9-3c4e5f6a7b22", "name": "ubuntu-24.04", "os_distro": "ubuntu",
     "os_version": "24.04", "os_type": "linux", "created_at": "2025-01-10T10:00:00Z"},
    {"id": "c0ffee00-1111-4222-8333-444455556666", "name": "centos-7", "os_distro": "centos",
     "os_version": "7", "os_type": "linux", "created_at": "2020-01-01T10:00:00Z"},
    {"id": "dead0000-beef-4000-8000-00000000e440", "name": "broken-image", "os_distro": "broken",
     "os_version": "1", "os_type": "linux", "created_at": "2019-01-01T10:00:00Z"},
]
PRIVATE_NET = "9e2f1d77-3b4c-4a8e-9f0a-1b2c3d4e5f60"
PUBLIC_NET = "e1c2b3a4-5d6e-4f70-8a9b-0c1d2e3f4a5b"


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class ApiError(Exception):
    """An HTTP error answer, with the body shape of the service that gives it."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(status)
        self.status = status
        self.body = body


def nova_error(status: int, message: str) -> ApiError:
    key = {400: "badRequest", 403: "forbidden", 404: "itemNotFound", 409: "conflictingRequest",
           413: "overLimit"}.get(status, "computeFault")
    return ApiError(status, {key: {"code": status, "message": message}})


def neutron_error(status: int, kind: str, message: str) -> ApiError:
    return ApiError(status, {"NeutronError": {"type": kind, "message": message, "detail": ""}})


def cinder_error(status: int, message: str) -> ApiError:
    key = {400: "badRequest", 404: "itemNotFound"}.get(status, "computeFault")
    return ApiError(status, {key: {"code": status, "message": message}})


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: Any
    body: Any

    def q(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[-1] if values else None


@dataclass
class StandInState:
    """Everything the stand-in cloud holds (read it from tests as a probe, behind the SDK's back)."""

    servers: dict[str, dict[str, Any]] = field(default_factory=dict)
    security_groups: dict[str, dict[str, Any]] = field(default_factory=dict)
    ports: dict[str, dict[str, Any]] = field(default_factory=dict)
    floating_ips: dict[str, dict[str, Any]] = field(default_factory=dict)
    volumes: dict[str, dict[str, Any]] = field(default_factory=dict)
    networks: dict[str, dict[str, Any]] = field(default_factory=dict)
    tokens: set[str] = field(default_factory=set)


class OpenStackStandIn:
    """The stand-in cloud: start it, point an ``openstack`` connection at :attr:`auth_url`, stop it.

    :param build_seconds: how long a server stays in BUILD (and a volume in ``creating``)
    :param delete_seconds: how long a deleted server or volume stays listed
    """

    def __init__(self, build_seconds: float = 0.05, delete_seconds: float = 0.05) -> None:
        self.build_seconds = build_seconds
        self.delete_seconds = delete_seconds
        self.state = StandInState()
        self.lock = threading.RLock()
        # fault injection
        self.error_images: dict[str, str] = {
            IMAGES[3]["id"]: "No valid host was found. There are not enough hosts available."
        }
        self.quota_instances: int | None = None
        self.quota_status = 403
        self.multi_instance_name_template = "%(name)s-%(count)d"
        self.requests: list[tuple[str, str]] = []
        self._ips = itertools.count(10)
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._routes = self._build_routes()
        for net in (
            {"id": PRIVATE_NET, "name": "private", "router:external": False, "shared": False},
            {"id": PUBLIC_NET, "name": "public", "router:external": True, "shared": True},
        ):
            self.state.networks[net["id"]] = {
                **net, "status": "ACTIVE", "admin_state_up": True, "subnets": [str(uuid.uuid4())],
                "tenant_id": PROJECT_ID, "project_id": PROJECT_ID, "mtu": 1450, "port_security_enabled": True,
                "availability_zones": ["nova"], "description": "", "tags": [], "created_at": _now(),
                "updated_at": _now(), "revision_number": 1, "is_default": net["name"] == "public",
            }

    # ---------------------------------------------------------------- lifecycle
    @property
    def base(self) -> str:
        assert self._httpd is not None, "start() the stand-in first"
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def auth_url(self) -> str:
        return f"{self.base}/identity/v3"

    def start(self) -> OpenStackStandIn:
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go in two writes: no 40 ms delayed-ACK stall

            def log_message(self, *args: Any) -> None:  # keep pytest output clean
                pass

            def _handle(self) -> None:
                stand_in._dispatch(self)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _handle

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="openstack-stand-in", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    # ---------------------------------------------------------------- probes (behind the SDK's back)
    def tagged(self, deployment_id: str) -> list[tuple[str, str]]:
        """Return (kind, id) of every live resource carrying this deployment's tag or metadata."""
        self._tick()
        mark = f"cloud-paas-deployment={deployment_id}"
        with self.lock:
            found = [("server", s["id"]) for s in self.state.servers.values()
                     if s["metadata"].get("cloud-paas-deployment") == deployment_id]
            found += [("volume", v["id"]) for v in self.state.volumes.values()
                      if v["metadata"].get("cloud-paas-deployment") == deployment_id]
            found += [("security_group", g["id"]) for g in self.state.security_groups.values() if mark in g["tags"]]
            found += [("floating_ip", f["id"]) for f in self.state.floating_ips.values() if mark in f["tags"]]
        return found

    def stop_server(self, server_id: str) -> None:
        """Power a server off as an operator would in the dashboard."""
        with self.lock:
            server = self.state.servers[server_id]
            server.update(status="SHUTOFF", **{"OS-EXT-STS:vm_state": "stopped", "OS-EXT-STS:power_state": 4})

    # ---------------------------------------------------------------- HTTP plumbing
    def _dispatch(self, handler: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(handler.path)
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        req = Request(handler.command, parts.path.rstrip("/") or "/", parse_qs(parts.query), handler.headers, body)
        self.requests.append((req.method, req.path))
        status, payload, headers = 404, {"error": {"code": 404, "message": "Not Found", "title": "Not Found"}}, {}
        try:
            self._tick()
            for method, pattern, func, needs_token in self._routes:
                match = pattern.fullmatch(req.path)
                if match and method == req.method:
                    if needs_token and handler.headers.get("X-Auth-Token") not in self.state.tokens:
                        raise ApiError(401, {"error": {
                            "code": 401, "title": "Unauthorized",
                            "message": "The request you have made requires authentication."}})
                    with self.lock:
                        result = func(req, *match.groups())
                    status, payload, headers = result if len(result) == 3 else (*result, {})
                    break
        except ApiError as err:
            status, payload = err.status, err.body
        data = json.dumps(payload).encode() if payload is not None else b""
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        handler.send_header("x-openstack-request-id", f"req-{uuid.uuid4()}")
        for key, value in headers.items():
            handler.send_header(key, value)
        handler.end_headers()
        if handler.command != "HEAD":
            handler.wfile.write(data)

    def _build_routes(self) -> list[tuple[str, re.Pattern[str], Callable[..., tuple], bool]]:
        uid = r"([^/]+)"
        table: list[tuple[str, str, Callable[..., tuple], bool]] = [
            # Keystone
            ("GET", "/identity", self._identity_versions, False),
            ("GET", "/identity/v3", self._identity_version, False),
            ("POST", "/identity/v3/auth/tokens", self._issue_token, False),
            # Nova
            ("GET", "/compute", self._compute_versions, False),
            ("GET", "/compute/v2.1", self._compute_version, False),
            ("GET", "/compute/v2.1/flavors/detail", self._list_flavors, True),
            ("GET", "/compute/v2.1/flavors", self._list_flavors, True),
            ("GET", f"/compute/v2.1/flavors/{uid}", self._get_flavor, True),
            ("GET", "/compute/v2.1/servers/detail", self._list_servers, True),
            ("GET", "/compute/v2.1/servers", self._list_servers, True),
            ("POST", "/compute/v2.1/servers", self._create_server, True),
            ("GET", f"/compute/v2.1/servers/{uid}", self._get_server, True),
            ("DELETE", f"/compute/v2.1/servers/{uid}", self._delete_server, True),
            ("POST", f"/compute/v2.1/servers/{uid}/action", self._server_action, True),
            ("GET", f"/compute/v2.1/servers/{uid}/metadata", self._get_metadata, True),
            ("POST", f"/compute/v2.1/servers/{uid}/metadata", self._update_metadata, True),
            ("PUT", f"/compute/v2.1/servers/{uid}/metadata", self._update_metadata, True),
            ("GET", f"/compute/v2.1/servers/{uid}/os-volume_attachments", self._list_attachments, True),
            ("POST", f"/compute/v2.1/servers/{uid}/os-volume_attachments", self._attach_volume, True),
            ("DELETE", f"/compute/v2.1/servers/{uid}/os-volume_attachments/{uid}", self._detach_volume, True),
            # Neutron
            ("GET", "/network", self._network_versions, False),
            ("GET", "/network/v2.0", self._network_version, False),
            ("GET", "/network/v2.0/networks", self._list("networks", "networks"), True),
            ("GET", f"/network/v2.0/networks/{uid}", self._get("networks", "network"), True),
            ("GET", "/network/v2.0/security-groups", self._list("security_groups", "security_groups"), True),
            ("POST", "/network/v2.0/security-groups", self._create_security_group, True),
            ("GET", f"/network/v2.0/security-groups/{uid}", self._get("security_groups", "security_group"), True),
            ("DELETE", f"/network/v2.0/security-groups/{uid}", self._delete_security_group, True),
            ("PUT", f"/network/v2.0/security-groups/{uid}/tags", self._set_tags("security_groups"), True),
            ("POST", "/network/v2.0/security-group-rules", self._create_rule, True),
            ("GET", "/network/v2.0/ports", self._list("ports", "ports"), True),
            ("GET", f"/network/v2.0/ports/{uid}", self._get("ports", "port"), True),
            ("GET", "/network/v2.0/floatingips", self._list("floating_ips", "floatingips"), True),
            ("POST", "/network/v2.0/floatingips", self._create_floating_ip, True),
            ("GET", f"/network/v2.0/floatingips/{uid}", self._get("floating_ips", "floatingip"), True),
            ("DELETE", f"/network/v2.0/floatingips/{uid}", self._delete_floating_ip, True),
            ("PUT", f"/network/v2.0/floatingips/{uid}/tags", self._set_tags("floating_ips"), True),
            # Cinder
            ("GET", "/volume", self._volume_versions, False),
            ("GET", "/volume/v3", self._volume_version, False),
            ("GET", f"/volume/v3/{uid}/volumes/detail", self._list_volumes, True),
            ("GET", f"/volume/v3/{uid}/volumes", self._list_volumes, True),
            ("POST", f"/volume/v3/{uid}/volumes", self._create_volume, True),
            ("GET", f"/volume/v3/{uid}/volumes/{uid}", self._get_volume, True),
            ("DELETE", f"/volume/v3/{uid}/volumes/{uid}", self._delete_volume, True),
            # Glance
            ("GET", "/image", self._image_versions, False),
            ("GET", "/image/v2/images", self._list_images, True),
            ("GET", f"/image/v2/images/{uid}", self._get_image, True),
        ]
        return [(m, re.compile(p), f, t) for m, p, f, t in table]

    # ---------------------------------------------------------------- time passes
    def _tick(self) -> None:
        """Move resources along their lifecycle (BUILD -> ACTIVE, deleting -> gone)."""
        now = time.monotonic()
        with self.lock:
            for server in list(self.state.servers.values()):
                if server["_gone_at"] is not None and now >= server["_gone_at"]:
                    self._forget_server(server)
                elif server["status"] == "BUILD" and now >= server["_ready_at"]:
                    fault = self.error_images.get(server["image"]["id"])
                    if fault:
                        server.update(status="ERROR", fault={"code": 500, "created": _now(), "message": fault},
                                      **{"OS-EXT-STS:vm_state": "error", "OS-EXT-STS:task_state": None})
                    else:
                        server.update(status="ACTIVE", progress=100, **{
                            "OS-EXT-STS:vm_state": "active", "OS-EXT-STS:task_state": None,
                            "OS-EXT-STS:power_state": 1})
            for volume in list(self.state.volumes.values()):
                if volume["_gone_at"] is not None and now >= volume["_gone_at"]:
                    del self.state.volumes[volume["id"]]
                elif volume["status"] == "creating" and now >= volume["_ready_at"]:
                    volume["status"] = "available"

    # ---------------------------------------------------------------- Keystone
    def _identity_versions(self, req: Request) -> tuple:
        return 300, {"versions": {"values": [self._identity_version(req)[1]["version"]]}}

    def _identity_version(self, req: Request) -> tuple:
        return 200, {"version": {
            "id": "v3.14", "status": "stable", "updated": "2020-04-07T00:00:00Z",
            "links": [{"rel": "self", "href": f"{self.base}/identity/v3/"}],
            "media-types": [{"base": "application/json", "type": "application/vnd.openstack.identity-v3+json"}],
        }}

    def _issue_token(self, req: Request) -> tuple:
        identity = ((req.body or {}).get("auth") or {}).get("identity") or {}
        methods = identity.get("methods") or []
        unauthorized = ApiError(401, {"error": {
            "code": 401, "title": "Unauthorized",
            "message": "The request you have made requires authentication."}})
        if methods == ["password"]:
            user = identity["password"]["user"]
            if user.get("name") != USERNAME or user.get("password") != PASSWORD:
                raise unauthorized
        elif methods == ["application_credential"]:
            cred = identity["application_credential"]
            if cred.get("id") != APP_CRED_ID or cred.get("secret") != APP_CRED_SECRET:
                raise unauthorized
        elif methods == ["token"]:
            if identity["token"].get("id") not in {STATIC_TOKEN, *self.state.tokens}:
                raise unauthorized
        else:
            raise ApiError(400, {"error": {"code": 400, "title": "Bad Request", "message": "Invalid auth method"}})
        token = f"gAAAAAB{uuid.uuid4().hex}{uuid.uuid4().hex}"
        self.state.tokens.add(token)

        def service(kind: str, name: str, url: str) -> dict[str, Any]:
            return {"type": kind, "name": name, "id": uuid.uuid4().hex, "endpoints": [
                {"id": uuid.uuid4().hex, "interface": iface, "region": REGION, "region_id": REGION, "url": url}
                for iface in ("public", "internal")]}

        now = datetime.now(UTC)
        body = {"token": {
            "methods": methods,
            "user": {"domain": {"id": "default", "name": "Default"}, "id": USER_ID, "name": USERNAME,
                     "password_expires_at": None},
            "audit_ids": [uuid.uuid4().hex[:22]],
            "expires_at": (now + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S.000000Z"),
            "issued_at": now.strftime("%Y-%m-%dT%H:%M:%S.000000Z"),
            "project": {"domain": {"id": "default", "name": "Default"}, "id": PROJECT_ID, "name": "paas"},
            "is_domain": False,
            "roles": [{"id": uuid.uuid4().hex, "name": "member"}, {"id": uuid.uuid4().hex, "name": "reader"}],
            "catalog": [
                service("identity", "keystone", f"{self.base}/identity"),
                service("compute", "nova", f"{self.base}/compute/v2.1"),
                service("network", "neutron", f"{self.base}/network"),
                service("volumev3", "cinderv3", f"{self.base}/volume/v3/{PROJECT_ID}"),
                service("block-storage", "cinder", f"{self.base}/volume/v3/{PROJECT_ID}"),
                service("image", "glance", f"{self.base}/image"),
            ],
        }}
        if methods == ["application_credential"]:
            body["token"]["application_credential"] = {"id": APP_CRED_ID, "name": "paas", "restricted": True}
        return 201, body, {"X-Subject-Token": token}

    # ---------------------------------------------------------------- Nova
    def _compute_version_doc(self) -> dict[str, Any]:
        return {"id": "v2.1", "status": "CURRENT", "version": "2.96", "min_version": "2.1",
                "updated": "2013-07-23T11:33:21Z", "links": [{"rel": "self", "href": f"{self.base}/compute/v2.1/"}],
                "media-types": [{"base": "application/json",
                                 "type": "application/vnd.openstack.compute+json;version=2.1"}]}

    def _compute_versions(self, req: Request) -> tuple:
        return 200, {"versions": [self._compute_version_doc()]}

    def _compute_version(self, req: Request) -> tuple:
        return 200, {"version": self._compute_version_doc()}

    @staticmethod
    def _flavor_doc(flavor: dict[str, Any]) -> dict[str, Any]:
        return {**flavor, "OS-FLV-EXT-DATA:ephemeral": 0, "OS-FLV-DISABLED:disabled": False, "swap": 0,
                "rxtx_factor": 1.0, "os-flavor-access:is_public": True, "description": None, "links": []}

    def _list_flavors(self, req: Request) -> tuple:
        return 200, {"flavors": [self._flavor_doc(f) for f in FLAVORS]}

    def _get_flavor(self, req: Request, flavor_id: str) -> tuple:
        for flavor in FLAVORS:
            if flavor["id"] == flavor_id:
                return 200, {"flavor": self._flavor_doc(flavor)}
        raise nova_error(404, f"Flavor {flavor_id} could not be found.")

    @staticmethod
    def _public(doc: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in doc.items() if not k.startswith("_")}

    def _server_doc(self, server: dict[str, Any]) -> dict[str, Any]:
        doc = self._public(server)
        doc["os-extended-volumes:volumes_attached"] = [
            {"id": v["id"], "delete_on_termination": False} for v in self.state.volumes.values()
            if any(a["server_id"] == server["id"] for a in v["attachments"])]
        addresses: dict[str, list[dict[str, Any]]] = {}
        for port in self.state.ports.values():
            if port["device_id"] != server["id"]:
                continue
            net = self.state.networks[port["network_id"]]["name"]
            for ip in port["fixed_ips"]:
                addresses.setdefault(net, []).append({"addr": ip["ip_address"], "version": 4,
                                                      "OS-EXT-IPS:type": "fixed",
                                                      "OS-EXT-IPS-MAC:mac_addr": port["mac_address"]})
            for fip in self.state.floating_ips.values():
                if fip["port_id"] == port["id"]:
                    addresses.setdefault(net, []).append({"addr": fip["floating_ip_address"], "version": 4,
                                                          "OS-EXT-IPS:type": "floating",
                                                          "OS-EXT-IPS-MAC:mac_addr": port["mac_address"]})
        doc["addresses"] = addresses
        return doc

    def _list_servers(self, req: Request) -> tuple:
        servers = list(self.state.servers.values())
        if req.q("name"):
            servers = [s for s in servers if re.search(req.q("name"), s["name"])]
        if req.q("status"):
            servers = [s for s in servers if s["status"] == req.q("status")]
        if req.q("reservation_id"):
            servers = [s for s in servers if s["_reservation_id"] == req.q("reservation_id")]
        return 200, {"servers": [self._server_doc(s) for s in servers]}

    def _server(self, server_id: str) -> dict[str, Any]:
        server = self.state.servers.get(server_id)
        if server is None:
            raise nova_error(404, f"Instance {server_id} could not be found.")
        return server

    def _get_server(self, req: Request, server_id: str) -> tuple:
        return 200, {"server": self._server_doc(self._server(server_id))}

    def _create_server(self, req: Request) -> tuple:
        spec = (req.body or {}).get("server")
        if not isinstance(spec, dict) or not spec.get("name"):
            raise nova_error(400, "Invalid input for field/attribute server.")
        counts = {key: spec.get(key, 1) for key in ("min_count", "max_count")}
        for key, value in counts.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise nova_error(400, f"Invalid input for field/attribute {key}. Value: {value}. "
                                 f"{value!r} is less than the minimum of 1")
        low, high = counts["min_count"], counts["max_count"]
        if low > high:
            raise nova_error(400, f"min_count ({low}) must be <= max_count ({high})")
        if self.quota_instances is not None:  # nova.compute.api._check_num_instances_quota: as many as fit
            room = self.quota_instances - len(self.state.servers)
            if room < low:
                raise nova_error(self.quota_status, f"Quota exceeded for instances: Requested {high}, but already "
                                 f"used {len(self.state.servers)} of {self.quota_instances} instances")
            high = min(high, room)
        flavor = next((f for f in FLAVORS if f["id"] == spec.get("flavorRef")), None)
        if flavor is None:
            raise nova_error(400, f"Flavor {spec.get('flavorRef')} could not be found.")
        image = next((i for i in IMAGES if i["id"] == spec.get("imageRef")), None)
        if image is None:
            raise nova_error(400, f"Image {spec.get('imageRef')} could not be found.")
        networks = spec.get("networks") or "auto"
        if networks == "auto":
            networks = [{"uuid": PRIVATE_NET}]
        for net in networks:
            if net.get("uuid") not in self.state.networks:
                raise nova_error(400, f"Network {net.get('uuid')} could not be found.")
        groups = []
        for group in spec.get("security_groups") or [{"name": "default"}]:
            wanted = group.get("name")
            found = [g for g in self.state.security_groups.values() if wanted in (g["id"], g["name"])]
            if wanted != "default" and len(found) != 1:
                raise nova_error(400, f"Security group {wanted} not found for project {PROJECT_ID}.")
            groups.append(found[0] if found else None)
        reservation_id = f"r-{uuid.uuid4().hex[:8]}"
        made = []
        for launch_index in range(high):
            server_id = str(uuid.uuid4())
            name = spec["name"]
            if high > 1:  # nova.compute.api._apply_instance_name_template, only when several are made
                name = self.multi_instance_name_template % {"name": name, "count": launch_index + 1,
                                                            "uuid": server_id}
            self._make_server(server_id, name, spec, flavor, image, networks, groups, reservation_id, launch_index)
            made.append(server_id)
        if spec.get("return_reservation_id") or (req.body or {}).get("return_reservation_id"):
            return 202, {"reservation_id": reservation_id}
        first = self.state.servers[made[0]]
        return 202, {"server": {"id": first["id"], "links": [], "OS-DCF:diskConfig": "AUTO", "adminPass": "x" * 12,
                                "security_groups": first["security_groups"]}}

    def _make_server(self, server_id: str, name: str, spec: dict[str, Any], flavor: dict[str, Any],
                     image: dict[str, Any], networks: list[dict[str, Any]], groups: list[dict[str, Any] | None],
                     reservation_id: str, launch_index: int) -> None:
        for net in networks:
            port_id = str(uuid.uuid4())
            self.state.ports[port_id] = self._port_doc(port_id, net["uuid"], server_id,
                                                       [g["id"] for g in groups if g])
        self.state.servers[server_id] = {
            "id": server_id, "name": name, "status": "BUILD", "tenant_id": PROJECT_ID, "user_id": USER_ID,
            "metadata": dict(spec.get("metadata") or {}), "hostId": "", "host_status": "UP",
            "image": {"id": image["id"], "links": []},
            "flavor": {"vcpus": flavor["vcpus"], "ram": flavor["ram"], "disk": flavor["disk"], "ephemeral": 0,
                       "swap": 0, "original_name": flavor["name"], "extra_specs": flavor["extra_specs"]},
            "created": _now(), "updated": _now(), "accessIPv4": "", "accessIPv6": "", "links": [],
            "OS-DCF:diskConfig": "AUTO", "OS-EXT-AZ:availability_zone": "nova", "config_drive": "",
            "key_name": spec.get("key_name"), "OS-SRV-USG:launched_at": None,
            # what Nova keeps of the user data (shown to admins from microversion 2.3): base64, as sent
            "OS-EXT-SRV-ATTR:user_data": spec.get("user_data"), "OS-SRV-USG:terminated_at": None,
            "OS-EXT-STS:task_state": "scheduling", "OS-EXT-STS:vm_state": "building", "OS-EXT-STS:power_state": 0,
            "security_groups": [{"name": g["name"] if g else "default"} for g in groups],
            "progress": 0, "locked": False, "description": None, "tags": [], "trusted_image_certificates": None,
            "_ready_at": time.monotonic() + self.build_seconds, "_gone_at": None,
            # admin-only extended attributes (OS-EXT-SRV-ATTR:*): kept, not shown to a project member
            "_reservation_id": reservation_id, "_launch_index": launch_index,
        }

    def _get_metadata(self, req: Request, server_id: str) -> tuple:
        return 200, {"metadata": dict(self._server(server_id)["metadata"])}

    def _update_metadata(self, req: Request, server_id: str) -> tuple:
        server = self._server(server_id)
        items = (req.body or {}).get("metadata")
        if not isinstance(items, dict) or not all(isinstance(v, str) and len(v) <= 255 for v in items.values()):
            raise nova_error(400, "Invalid input for field/attribute metadata.")
        vm_state = server["OS-EXT-STS:vm_state"]
        if vm_state not in ("active", "paused", "suspended", "stopped") or server["_gone_at"] is not None:
            raise nova_error(409, f"Cannot 'update_metadata' instance {server_id} while it is in vm_state {vm_state}")
        server["metadata"] = {**(server["metadata"] if req.method == "POST" else {}), **items}
        return 200, {"metadata": dict(server["metadata"])}

    def _port_doc(self, port_id: str, network_id: str, device_id: str, groups: list[str]) -> dict[str, Any]:
        n = next(self._ips)
        return {"id": port_id, "name": "", "network_id": network_id, "device_id": device_id,
                "device_owner": "compute:nova", "mac_address": f"fa:16:3e:00:{n // 256:02x}:{n % 256:02x}",
                "fixed_ips": [{"subnet_id": self.state.networks[network_id]["subnets"][0],
                               "ip_address": f"10.0.{n // 250}.{n % 250 + 2}"}],
                "status": "ACTIVE", "admin_state_up": True, "security_groups": groups, "tags": [],
                "tenant_id": PROJECT_ID, "project_id": PROJECT_ID, "binding:vnic_type": "normal",
                "port_security_enabled": True, "allowed_address_pairs": [], "extra_dhcp_opts": [],
                "description": "", "created_at": _now(), "updated_at": _now(), "revision_number": 1}

    def _delete_server(self, req: Request, server_id: str) -> tuple:
        server = self._server(server_id)
        if server["_gone_at"] is None:
            server["_gone_at"] = time.monotonic() + self.delete_seconds
            server["OS-EXT-STS:task_state"] = "deleting"
        return 204, None

    def _forget_server(self, server: dict[str, Any]) -> None:
        del self.state.servers[server["id"]]
        for port_id, port in list(self.state.ports.items()):
            if port["device_id"] == server["id"] and port["device_owner"] == "compute:nova":
                del self.state.ports[port_id]
                for fip in self.state.floating_ips.values():  # Neutron disassociates, never deletes, a FIP
                    if fip["port_id"] == port_id:
                        fip.update(port_id=None, fixed_ip_address=None, status="DOWN")
        for volume in self.state.volumes.values():
            volume["attachments"] = [a for a in volume["attachments"] if a["server_id"] != server["id"]]
            if not volume["attachments"] and volume["status"] == "in-use":
                volume["status"] = "available"

    def _server_action(self, req: Request, server_id: str) -> tuple:
        server = self._server(server_id)
        action = next(iter(req.body or {}), None)
        if action == "os-start":
            if server["status"] != "SHUTOFF":
                raise nova_error(409, f"Cannot 'start' instance {server_id} while it is in vm_state "
                                 f"{server['OS-EXT-STS:vm_state']}")
            server.update(status="ACTIVE", **{"OS-EXT-STS:vm_state": "active", "OS-EXT-STS:power_state": 1})
        elif action == "os-stop":
            if server["status"] != "ACTIVE":
                raise nova_error(409, f"Cannot 'stop' instance {server_id} while it is in vm_state "
                                 f"{server['OS-EXT-STS:vm_state']}")
            self.stop_server(server_id)
        else:
            raise nova_error(400, f"There is no such action: {action}")
        return 202, None

    def _list_attachments(self, req: Request, server_id: str) -> tuple:
        self._server(server_id)
        return 200, {"volumeAttachments": [
            {**a, "serverId": server_id, "volumeId": v["id"], "tag": None, "delete_on_termination": False}
            for v in self.state.volumes.values() for a in v["_nova"] if a["serverId"] == server_id]}

    def _attach_volume(self, req: Request, server_id: str) -> tuple:
        server = self._server(server_id)
        volume_id = ((req.body or {}).get("volumeAttachment") or {}).get("volumeId")
        volume = self.state.volumes.get(volume_id)
        if volume is None:
            raise nova_error(404, f"Volume {volume_id} could not be found.")
        if volume["status"] != "available":
            raise nova_error(400, f"Invalid volume: volume {volume_id} status must be 'available'. "
                             f"Currently in '{volume['status']}'")
        device = f"/dev/vd{chr(ord('b') + len(self._server_doc(server)['os-extended-volumes:volumes_attached']))}"
        attachment_id = str(uuid.uuid4())
        volume["attachments"].append({"server_id": server_id, "attachment_id": attachment_id, "volume_id": volume_id,
                                      "device": device, "id": volume_id, "host_name": None, "attached_at": _now()})
        volume["_nova"].append({"id": volume_id, "device": device, "serverId": server_id})
        volume["status"] = "in-use"
        return 200, {"volumeAttachment": {"id": volume_id, "device": device, "serverId": server_id,
                                          "volumeId": volume_id, "tag": None, "delete_on_termination": False,
                                          "attachment_id": attachment_id}}

    def _detach_volume(self, req: Request, server_id: str, volume_id: str) -> tuple:
        volume = self.state.volumes.get(volume_id)
        if volume is None or not any(a["server_id"] == server_id for a in volume["attachments"]):
            raise nova_error(404, f"Volume {volume_id} is not attached to {server_id}")
        volume["attachments"] = [a for a in volume["attachments"] if a["server_id"] != server_id]
        volume["_nova"] = [a for a in volume["_nova"] if a["serverId"] != server_id]
        volume["status"] = "in-use" if volume["attachments"] else "available"
        return 202, None

    # ---------------------------------------------------------------- Neutron
    def _network_versions(self, req: Request) -> tuple:
        return 200, {"versions": [{"id": "v2.0", "status": "CURRENT",
                                   "links": [{"href": f"{self.base}/network/v2.0/", "rel": "self"}]}]}

    def _network_version(self, req: Request) -> tuple:
        names = ["networks", "ports", "security-groups", "security-group-rules", "floatingips"]
        return 200, {"resources": [{"name": n, "collection": n,
                                    "links": [{"href": f"{self.base}/network/v2.0/{n}", "rel": "self"}]}
                                   for n in names]}

    @staticmethod
    def _matches(doc: dict[str, Any], req: Request) -> bool:
        for key, values in req.query.items():
            if key in ("fields", "limit", "marker", "sort_key", "sort_dir"):
                continue
            if key in ("tags", "tags-any", "not-tags", "not-tags-any"):
                wanted = {t for v in values for t in v.split(",")}
                have = set(doc.get("tags") or [])
                ok = {"tags": wanted <= have, "tags-any": bool(wanted & have),
                      "not-tags": not wanted <= have, "not-tags-any": not (wanted & have)}[key]
                if not ok:
                    return False
                continue
            value = doc.get(key)
            text = str(value).lower() if isinstance(value, bool) else ("" if value is None else str(value))
            if text not in {v.lower() if isinstance(value, bool) else v for v in values}:
                return False
        return True

    def _list(self, collection: str, key: str) -> Callable[..., tuple]:
        def handler(req: Request) -> tuple:
            docs = getattr(self.state, collection).values()
            return 200, {key: [self._public(d) for d in docs if self._matches(d, req)]}
        return handler

    def _get(self, collection: str, key: str) -> Callable[..., tuple]:
        def handler(req: Request, item_id: str) -> tuple:
            doc = getattr(self.state, collection).get(item_id)
            if doc is None:
                raise neutron_error(404, f"{key.title().replace('_', '')}NotFound",
                                    f"{key.replace('_', ' ').title()} {item_id} could not be found.")
            return 200, {key: self._public(doc)}
        return handler

    def _set_tags(self, collection: str) -> Callable[..., tuple]:
        def handler(req: Request, item_id: str) -> tuple:
            doc = getattr(self.state, collection).get(item_id)
            if doc is None:
                raise neutron_error(404, "NotFound", f"Resource {item_id} could not be found.")
            doc["tags"] = list((req.body or {}).get("tags") or [])
            return 200, {"tags": doc["tags"]}
        return handler

    @staticmethod
    def _check_tags(tags: Any) -> list[str]:
        tags = list(tags or [])
        for tag in tags:
            if not isinstance(tag, str) or len(tag) > 255 or "," in tag or "/" in tag:
                raise neutron_error(400, "InvalidInput", f"Invalid input for operation: '{tag}' is not a valid tag.")
        return tags

    def _rule_doc(self, group_id: str, **fields: Any) -> dict[str, Any]:
        return {"id": str(uuid.uuid4()), "security_group_id": group_id, "direction": "egress", "ethertype": "IPv4",
                "protocol": None, "port_range_min": None, "port_range_max": None, "remote_ip_prefix": None,
                "remote_group_id": None, "description": "", "tenant_id": PROJECT_ID, "project_id": PROJECT_ID,
                "created_at": _now(), "updated_at": _now(), "revision_number": 0, "tags": [], **fields}

    def _create_security_group(self, req: Request) -> tuple:
        spec = (req.body or {}).get("security_group") or {}
        group_id = str(uuid.uuid4())
        self.state.security_groups[group_id] = doc = {
            "id": group_id, "name": spec.get("name", ""), "description": spec.get("description", ""),
            "stateful": True, "shared": False, "tenant_id": PROJECT_ID, "project_id": PROJECT_ID,
            "tags": self._check_tags(spec.get("tags")), "created_at": _now(), "updated_at": _now(),
            "revision_number": 1,
            "security_group_rules": [self._rule_doc(group_id), self._rule_doc(group_id, ethertype="IPv6")],
        }
        return 201, {"security_group": self._public(doc)}

    def _delete_security_group(self, req: Request, group_id: str) -> tuple:
        if group_id not in self.state.security_groups:
            raise neutron_error(404, "SecurityGroupNotFound", f"Security group {group_id} does not exist")
        if any(group_id in p["security_groups"] for p in self.state.ports.values()):
            raise neutron_error(409, "SecurityGroupInUse", f"Security Group {group_id} in use.")
        del self.state.security_groups[group_id]
        return 204, None

    def _create_rule(self, req: Request) -> tuple:
        spec = dict((req.body or {}).get("security_group_rule") or {})
        group = self.state.security_groups.get(spec.get("security_group_id"))
        if group is None:
            raise neutron_error(404, "SecurityGroupNotFound",
                                f"Security group {spec.get('security_group_id')} does not exist")
        rule = self._rule_doc(group["id"], **{k: v for k, v in spec.items() if k != "security_group_id"})
        group["security_group_rules"].append(rule)
        return 201, {"security_group_rule": rule}

    def _create_floating_ip(self, req: Request) -> tuple:
        spec = (req.body or {}).get("floatingip") or {}
        net = self.state.networks.get(spec.get("floating_network_id"))
        if net is None or not net["router:external"]:
            raise neutron_error(404, "ExternalNetworkNotFound",
                                f"External network {spec.get('floating_network_id')} could not be found.")
        port = self.state.ports.get(spec.get("port_id")) if spec.get("port_id") else None
        if spec.get("port_id") and port is None:
            raise neutron_error(404, "PortNotFound", f"Port {spec.get('port_id')} could not be found.")
        fip_id = str(uuid.uuid4())
        n = next(self._ips)
        self.state.floating_ips[fip_id] = doc = {
            "id": fip_id, "floating_ip_address": f"203.0.113.{n % 250 + 1}", "floating_network_id": net["id"],
            "port_id": port["id"] if port else None,
            "fixed_ip_address": port["fixed_ips"][0]["ip_address"] if port else None,
            "router_id": str(uuid.uuid4()) if port else None, "status": "ACTIVE" if port else "DOWN",
            "tenant_id": PROJECT_ID, "project_id": PROJECT_ID, "description": spec.get("description", ""),
            "tags": self._check_tags(spec.get("tags")), "dns_domain": "", "dns_name": "",
            "port_details": None, "port_forwardings": [], "qos_policy_id": None,
            "created_at": _now(), "updated_at": _now(), "revision_number": 0,
        }
        return 201, {"floatingip": self._public(doc)}

    def _delete_floating_ip(self, req: Request, fip_id: str) -> tuple:
        if self.state.floating_ips.pop(fip_id, None) is None:
            raise neutron_error(404, "FloatingIPNotFound", f"Floating IP {fip_id} could not be found")
        return 204, None

    # ---------------------------------------------------------------- Cinder
    def _volume_version_doc(self) -> dict[str, Any]:
        return {"id": "v3.0", "status": "CURRENT", "version": "3.70", "min_version": "3.0",
                "updated": "2023-08-31T00:00:00Z", "links": [{"href": f"{self.base}/volume/v3/", "rel": "self"}],
                "media-types": [{"base": "application/json",
                                 "type": "application/vnd.openstack.volume+json;version=3"}]}

    def _volume_versions(self, req: Request) -> tuple:
        return 300, {"versions": [self._volume_version_doc()]}

    def _volume_version(self, req: Request) -> tuple:
        return 200, {"versions": [self._volume_version_doc()]}

    def _list_volumes(self, req: Request, project_id: str) -> tuple:
        return 200, {"volumes": [self._public(v) for v in self.state.volumes.values()]}

    def _volume(self, volume_id: str) -> dict[str, Any]:
        volume = self.state.volumes.get(volume_id)
        if volume is None:
            raise cinder_error(404, f"Volume {volume_id} could not be found.")
        return volume

    def _get_volume(self, req: Request, project_id: str, volume_id: str) -> tuple:
        return 200, {"volume": self._public(self._volume(volume_id))}

    def _create_volume(self, req: Request, project_id: str) -> tuple:
        spec = (req.body or {}).get("volume") or {}
        if not isinstance(spec.get("size"), int) or spec["size"] < 1:
            raise cinder_error(400, f"Invalid input received: size={spec.get('size')} must be an integer >= 1")
        volume_id = str(uuid.uuid4())
        self.state.volumes[volume_id] = doc = {
            "id": volume_id, "name": spec.get("name"), "description": spec.get("description"),
            "status": "creating", "size": spec["size"], "metadata": dict(spec.get("metadata") or {}),
            "attachments": [], "availability_zone": "nova", "bootable": "false", "encrypted": False,
            "multiattach": False, "volume_type": spec.get("volume_type") or "__DEFAULT__",
            "snapshot_id": None, "source_volid": None, "user_id": USER_ID, "replication_status": None,
            "consistencygroup_id": None, "group_id": None, "migration_status": None,
            "os-vol-tenant-attr:tenant_id": PROJECT_ID, "created_at": _now(), "updated_at": None,
            "links": [], "volume_image_metadata": {},
            "_ready_at": time.monotonic() + self.build_seconds, "_gone_at": None, "_nova": [],
        }
        return 202, {"volume": self._public(doc)}

    def _delete_volume(self, req: Request, project_id: str, volume_id: str) -> tuple:
        volume = self._volume(volume_id)
        if volume["status"] not in ("available", "error", "error_restoring", "error_extending", "error_managing"):
            raise cinder_error(400, "Invalid volume: Volume status must be available or error or error_restoring "
                               "or error_extending or error_managing and must not be migrating, attached, belong "
                               "to a group, have snapshots, awaiting a transfer, or be disassociated from "
                               "snapshots after volume transfer.")
        volume["status"] = "deleting"
        volume["_gone_at"] = time.monotonic() + self.delete_seconds
        return 202, None

    # ---------------------------------------------------------------- Glance
    def _image_versions(self, req: Request) -> tuple:
        return 300, {"versions": [{"id": "v2.16", "status": "CURRENT",
                                   "links": [{"href": f"{self.base}/image/v2/", "rel": "self"}]}]}

    @staticmethod
    def _image_doc(image: dict[str, Any]) -> dict[str, Any]:
        return {**image, "status": "active", "visibility": "public", "protected": False, "os_hidden": False,
                "disk_format": "qcow2", "container_format": "bare", "min_disk": 0, "min_ram": 0,
                "size": 2361393152, "virtual_size": None, "checksum": "0" * 32, "owner": PROJECT_ID,
                "updated_at": image["created_at"], "tags": [], "self": f"/v2/images/{image['id']}",
                "file": f"/v2/images/{image['id']}/file", "schema": "/v2/schemas/image"}

    def _list_images(self, req: Request) -> tuple:
        return 200, {"images": [self._image_doc(i) for i in IMAGES], "first": "/v2/images",
                     "schema": "/v2/schemas/images"}

    def _get_image(self, req: Request, image_id: str) -> tuple:
        for image in IMAGES:
            if image["id"] == image_id:
                return 200, self._image_doc(image)
        raise ApiError(404, {"code": 404, "title": "Not Found", "message": f"No image found with ID {image_id}"})


@contextlib.contextmanager
def running_stand_in(**options: Any) -> Iterator[OpenStackStandIn]:
    """Run a stand-in cloud for the duration of the block.

    :param options: :class:`OpenStackStandIn` options
    """
    stand_in = OpenStackStandIn(**options).start()
    try:
        yield stand_in
    finally:
        stand_in.stop()
