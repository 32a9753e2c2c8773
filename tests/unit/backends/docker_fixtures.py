"""A FAKE Docker Engine: a stand-in for dockerd at its HTTP API boundary (no Docker engine runs here).

It implements only the Engine API endpoints the docker SDK calls for the Docker backend
(``/_ping``, ``/version``, ``/info``, images inspect/pull, containers create/start/inspect/list with
label filters/stop/delete/logs, networks and volumes), on 127.0.0.1, with the engine's rules that
matter to a client: a name is unique (409), an unknown image is 404 on create and pull, a network
with containers attached cannot be removed (403), a volume in use cannot be removed (409), a running
container cannot be removed without force (409). Containers do not run: "start" marks them running
(or, for an image in ``crashing``, exited with code 3 and a log line; for one in ``finishing``, a job that
ran, exited with code 0) and assigns host ports; with
``start_seconds`` set, a started container's health check says "starting" that long (a slow boot).
"""

from __future__ import annotations

import itertools
import json
import re
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

API_VERSION = "1.45"


@dataclass
class FakeContainer:
    """One container the fake engine holds."""

    id: str
    name: str
    config: dict[str, Any]
    state: dict[str, Any] = field(default_factory=lambda: {"Status": "created", "Running": False, "ExitCode": 0})
    ports: dict[str, list[dict[str, str]]] = field(default_factory=dict)
    ip: str = ""
    log: bytes = b""
    healthy_at: float | None = None  # when a health check passes (None: the container has none)

    @property
    def labels(self) -> dict[str, str]:
        return self.config.get("Labels") or {}

    @property
    def host_config(self) -> dict[str, Any]:
        return self.config.get("HostConfig") or {}

    @property
    def networks(self) -> list[str]:
        return list((self.config.get("NetworkingConfig") or {}).get("EndpointsConfig") or {})

    @property
    def volumes(self) -> list[str]:
        return [bind.split(":", 1)[0] for bind in self.host_config.get("Binds") or ()]


class FakeDockerEngine:
    """The engine's state, and the HTTP server that serves it on 127.0.0.1 (a random port).

    :param images: images already on the engine
    :param registry: images a pull finds (anything else: 404)
    :param crashing: images whose containers exit at once with code 3
    :param finishing: images whose containers exit at once with code 0 (a job that did its work)
    """

    def __init__(self, images=(), registry=(), crashing=(), finishing=(), ncpu: int = 4,
                 mem_total: int = 8 * 1024**3) -> None:
        self.images = {self._ref(i) for i in images}
        self.registry = {self._ref(i) for i in registry}
        self.crashing = {self._ref(i) for i in crashing}
        self.finishing = {self._ref(i) for i in finishing}
        self.ncpu, self.mem_total = ncpu, mem_total
        #: seconds a started container reports health "starting" before "healthy" (0: no health check)
        self.start_seconds = 0.0
        self.containers: dict[str, FakeContainer] = {}
        self.networks: dict[str, dict[str, Any]] = {}
        self.volumes: dict[str, dict[str, Any]] = {}
        self.requests: list[tuple[str, str]] = []  # (method, path without the version prefix)
        self.lock = threading.Lock()
        self._ports = itertools.count(32768)
        self._ips = itertools.count(2)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-dockerd", daemon=True)

    @staticmethod
    def _ref(image: str) -> str:
        return image if ":" in image.rsplit("/", 1)[-1] else f"{image}:latest"

    @property
    def url(self) -> str:
        """Return the base URL the docker SDK takes (``tcp://127.0.0.1:PORT``)."""
        return f"tcp://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> FakeDockerEngine:
        """Start serving; return self."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the port."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    # ------------------------------------------------------------------ behind the client's back
    def kill(self, ref: str) -> None:
        """Make a container exit, as if its process died (the probe's "stop behind the backend")."""
        with self.lock:
            c = self._find(ref)
            c.state = {"Status": "exited", "Running": False, "ExitCode": 137}
            c.ports = {}

    def running(self, labels: dict[str, str] | None = None) -> list[FakeContainer]:
        """Return the running containers whose labels include ``labels``."""
        with self.lock:
            return [
                c
                for c in self.containers.values()
                if c.state["Running"] and all(c.labels.get(k) == v for k, v in (labels or {}).items())
            ]

    # ------------------------------------------------------------------ the API
    def _find(self, ref: str) -> FakeContainer:
        for c in self.containers.values():
            if ref in (c.id, c.name) or (len(ref) >= 12 and c.id.startswith(ref)):
                return c
        raise _ApiError(404, f"No such container: {ref}")

    @staticmethod
    def _label_filter(filters: dict[str, Any], labels: dict[str, str]) -> bool:
        for wanted in filters.get("label") or ():
            key, eq, value = wanted.partition("=")
            if key not in labels or (eq and labels[key] != value):
                return False
        return True

    def handle(self, method: str, path: str, query: dict[str, list[str]], body: Any) -> tuple[int, Any]:
        path = re.sub(r"^/v\d+\.\d+", "", path)
        self.requests.append((method, path))
        q = {k: v[-1] for k, v in query.items()}
        filters = json.loads(q.get("filters") or "{}")
        with self.lock:
            if path == "/_ping":
                return 200, b"OK"
            if path == "/version":
                return 200, {"ApiVersion": API_VERSION, "Version": "fake-27.0", "MinAPIVersion": "1.24"}
            if path == "/info":
                return 200, {"NCPU": self.ncpu, "MemTotal": self.mem_total, "Name": "fake-dockerd"}
            if m := re.fullmatch(r"/images/(.+)/json", path):
                ref = self._ref(unquote(m.group(1)))
                if ref not in self.images:
                    raise _ApiError(404, f"No such image: {ref}")
                return 200, {"Id": "sha256:" + uuid.uuid5(uuid.NAMESPACE_URL, ref).hex, "RepoTags": [ref]}
            if path == "/images/create" and method == "POST":
                ref = self._ref(f"{q['fromImage']}:{q.get('tag') or 'latest'}")
                if ref not in self.registry:
                    raise _ApiError(404, f"pull access denied for {q['fromImage']}, repository does not exist")
                self.images.add(ref)
                lines = [{"status": f"Pulling from {q['fromImage']}"}, {"status": f"Downloaded newer image for {ref}"}]
                return 200, _Stream(json.dumps(line).encode() + b"\r\n" for line in lines)
            if path == "/containers/create" and method == "POST":
                return self._create(q.get("name"), body)
            if path == "/containers/json":
                return 200, [
                    self._summary(c)
                    for c in self.containers.values()
                    if (q.get("all") in ("1", "true") or c.state["Running"]) and self._label_filter(filters, c.labels)
                ]
            if m := re.fullmatch(r"/containers/([^/]+)(/[a-z]+)?", path):
                c = self._find(unquote(m.group(1)))
                action = m.group(2)
                if action == "/json":
                    return 200, self._inspect(c)
                if action == "/start" and method == "POST":
                    return self._start(c)
                if action == "/stop" and method == "POST":
                    if not c.state["Running"]:
                        return 304, b""
                    c.state, c.ports = {"Status": "exited", "Running": False, "ExitCode": 0}, {}
                    return 204, b""
                if action == "/logs":
                    return 200, _multiplexed(c.log)
                if action is None and method == "DELETE":
                    if c.state["Running"] and q.get("force") not in ("1", "true", "True"):
                        raise _ApiError(409, f"cannot remove container {c.name}: container is running")
                    del self.containers[c.id]
                    return 204, b""
            if path == "/networks/create" and method == "POST":
                net_id = uuid.uuid4().hex
                self.networks[net_id] = {
                    "Id": net_id,
                    "Name": body["Name"],
                    "Driver": body.get("Driver", "bridge"),
                    "Labels": body.get("Labels") or {},
                }
                return 201, {"Id": net_id, "Warning": ""}
            if path == "/networks":
                return 200, [n for n in self.networks.values() if self._label_filter(filters, n["Labels"])]
            if (m := re.fullmatch(r"/networks/([^/]+)", path)) and method == "DELETE":
                net = next((n for n in self.networks.values() if m.group(1) in (n["Id"], n["Name"])), None)
                if net is None:
                    raise _ApiError(404, f"network {m.group(1)} not found")
                if any(net["Name"] in c.networks for c in self.containers.values()):
                    raise _ApiError(403, f"error while removing network: network {net['Name']} has active endpoints")
                del self.networks[net["Id"]]
                return 204, b""
            if path == "/volumes/create" and method == "POST":
                vol = self.volumes.setdefault(
                    body["Name"],
                    {
                        "Name": body["Name"],
                        "Driver": body.get("Driver", "local"),
                        "Labels": body.get("Labels") or {},
                        "Mountpoint": f"/var/lib/docker/volumes/{body['Name']}",
                    },
                )
                return 201, vol
            if path == "/volumes":
                return 200, {
                    "Volumes": [v for v in self.volumes.values() if self._label_filter(filters, v["Labels"])],
                    "Warnings": [],
                }
            if (m := re.fullmatch(r"/volumes/([^/]+)", path)) and method == "DELETE":
                name = unquote(m.group(1))
                if name not in self.volumes:
                    raise _ApiError(404, f"get {name}: no such volume")
                if any(name in c.volumes for c in self.containers.values()):
                    raise _ApiError(409, f"remove {name}: volume is in use")
                del self.volumes[name]
                return 204, b""
        raise _ApiError(404, f"page not found: {method} {path} (not implemented by the fake engine)")

    def _create(self, name: str | None, body: dict[str, Any]) -> tuple[int, Any]:
        ref = self._ref(body["Image"])
        if ref not in self.images:
            raise _ApiError(404, f"No such image: {ref}")
        if name and any(c.name == name for c in self.containers.values()):
            raise _ApiError(409, f'Conflict. The container name "/{name}" is already in use')
        for net in (body.get("NetworkingConfig") or {}).get("EndpointsConfig") or {}:
            if not any(net in (n["Id"], n["Name"]) for n in self.networks.values()):
                raise _ApiError(404, f"network {net} not found")
        for bind in (body.get("HostConfig") or {}).get("Binds") or ():
            source = bind.split(":", 1)[0]
            if not source.startswith("/"):  # a named volume is created on use, as dockerd does
                self.volumes.setdefault(source, {"Name": source, "Driver": "local", "Labels": {}})
        container = FakeContainer(
            id=uuid.uuid4().hex + uuid.uuid4().hex, name=name or uuid.uuid4().hex[:12], config=body
        )
        self.containers[container.id] = container
        return 201, {"Id": container.id, "Warnings": []}

    def _start(self, c: FakeContainer) -> tuple[int, Any]:
        if c.state["Running"]:
            return 304, b""
        if self._ref(c.config["Image"]) in self.crashing:
            c.state = {"Status": "exited", "Running": False, "ExitCode": 3}
            c.log += b"boom: cannot read /etc/app.conf\n"
            return 204, b""
        if self._ref(c.config["Image"]) in self.finishing:
            c.state = {"Status": "exited", "Running": False, "ExitCode": 0}
            c.log += b"job done\n"
            return 204, b""
        c.state = {"Status": "running", "Running": True, "ExitCode": 0}
        c.healthy_at = time.monotonic() + self.start_seconds if self.start_seconds else None
        c.ip = c.ip or f"172.18.0.{next(self._ips)}"
        c.ports = {}
        for key, bindings in (c.host_config.get("PortBindings") or {}).items():
            c.ports[key] = [
                {"HostIp": b.get("HostIp") or "0.0.0.0", "HostPort": b.get("HostPort") or str(next(self._ports))}
                for b in bindings
            ]
        c.log += b"started\n"
        return 204, b""

    def _summary(self, c: FakeContainer) -> dict[str, Any]:
        return {
            "Id": c.id,
            "Names": [f"/{c.name}"],
            "Image": c.config["Image"],
            "Labels": c.labels,
            "State": c.state["Status"],
            "Status": c.state["Status"],
        }

    def _inspect(self, c: FakeContainer) -> dict[str, Any]:
        config = {k: v for k, v in c.config.items() if k not in ("HostConfig", "NetworkingConfig")}
        return {
            "Id": c.id,
            "Name": f"/{c.name}",
            "Config": {**config, "Tty": False},
            "State": {**c.state, **({"Health": {"Status": "healthy" if time.monotonic() >= c.healthy_at else
                                                "starting"}} if c.state["Running"] and c.healthy_at else {})},
            "HostConfig": c.host_config,
            "NetworkSettings": {
                "Ports": c.ports,
                "Networks": {n: {"IPAddress": c.ip if c.state["Running"] else ""} for n in c.networks},
            },
        }


class _ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class _Stream(list):
    """A streamed answer (pull progress): sent with chunked transfer encoding, one chunk per item."""


def _multiplexed(data: bytes) -> bytes:
    """Frame a log as dockerd does for a container without a TTY (stream 1 = stdout)."""
    return bytes([1, 0, 0, 0]) + len(data).to_bytes(4, "big") + data if data else b""


def _handler(engine: FakeDockerEngine):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self) -> None:
            super().setup()
            # headers and body go out in two writes: without this, Nagle + delayed ACK cost 40 ms a call
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def log_message(self, format: str, *args: Any) -> None:  # quiet: pytest shows failures anyway
            pass

        def _serve(self) -> None:
            parts = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body = json.loads(raw) if raw else None
                status, payload = engine.handle(self.command, parts.path, parse_qs(parts.query), body)
            except _ApiError as err:
                status, payload = err.status, {"message": err.message}
            if isinstance(payload, _Stream):
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                for chunk in [*payload, b""]:
                    self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                return
            data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
            self.send_response(status)
            ctype = "application/json" if not isinstance(payload, bytes) else "application/octet-stream"
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data) if status not in (204, 304) else 0))
            self.end_headers()
            if status not in (204, 304):
                self.wfile.write(data)

        do_GET = do_POST = do_DELETE = do_HEAD = do_PUT = _serve

    return Handler
