"""A stand-in Google Compute Engine on loopback: the Compute Engine REST API v1 over plain HTTP.

Nothing of Google Cloud can run here, so the GCP backend's tests talk to this stand-in, through the
real google-cloud-compute clients (REST transport, ``ClientOptions(api_endpoint="http://127.0.0.1:N")``,
anonymous credentials) built by the Google provider's ComputeEngineHook, at the narrowest boundary
there is: the REST API. Paths, verbs, camelCase bodies, operations and the error body follow
cloud.google.com/compute/docs/reference/rest/v1; the state lives in memory.

What it does: zonal instances (insert/get/list/delete/start/resume/attachDisk/detachDisk; PROVISIONING
-> STAGING -> RUNNING over time, STOPPING then gone on delete, an auto-delete boot disk listed as a
disk with the labels of ``initializeParams``), zone and global operations (get and ``wait``, PENDING ->
DONE over time, errors with ``httpErrorStatusCode``), machine types (with accelerators and a
deprecated one), public images per image project (families, ``getFromFamily``, a deprecated image),
firewall rules, zonal persistent disks (``users``, refusing deletion while attached), list filters
(``(labels.k = "v") (labels.k2 = "v2")`` and ``name eq "regex"``) and ``maxResults``/``pageToken``
paging. ``instances.bulkInsert`` (zonal): ``count``, ``minCount`` (default ``count``), names from
``perInstanceProperties`` keys and/or ``namePattern``, one ``instanceProperties`` for all (``machineType`` a
bare name: a URL ends in INTERNAL_ERROR, as the API documents), validated up front (400 invalid, 409
alreadyExists); quota and capacity are checked per instance up front: when fewer than ``minCount`` fit the
request is refused at once (403 quotaExceeded, 503 insufficientCapacity) and nothing is made, otherwise the
operation makes as many as fit (the first names as the request lists them: a JSON map, whose order the
client does not keep, so which ones is not to be relied on) and reports ``instancesBulkInsertOperationMetadata``
(``perLocationStatus`` counts). Fault injection, named as such: ``quota_cpus`` (the insert operation ends in
QUOTA_EXCEEDED; a bulk insert fits the free vCPUs), ``exhausted_machine_types`` (ZONE_RESOURCE_POOL_EXHAUSTED;
none fits a bulk insert), ``stuck_machine_types`` (instances never leave STAGING, bulk-made ones too).

What it does not: authentication (the client sends no token with anonymous credentials), IAM,
networks and subnetworks as resources (any network URL is accepted), instance metadata/labels
setters, fingerprints checking, regional resources (and regional bulkInsert, locationPolicy, instance
flexibility), bulkInsert's sourceInstanceTemplate, per-instance hostnames, a bulk operation that fails half-way
and rolls back (its failures are all decided up front), requestId de-duplication, the ``:`` and ``ne``
filter operators beyond a plain comparison, aggregated lists.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

PROJECT = "paas-test-project"
ZONE = "europe-west1-b"
REGION = "europe-west1"
#: the most instances one instances.bulkInsert request may create
MAX_BULK_COUNT = 5000
BASE = "https://www.googleapis.com/compute/v1/"

#: machine types as machineTypes.list returns them (memoryMb in MiB); a2 carries its A100
MACHINE_TYPES = [
    {"name": "e2-micro", "guestCpus": 2, "memoryMb": 1024, "isSharedCpu": True},
    {"name": "e2-small", "guestCpus": 2, "memoryMb": 2048, "isSharedCpu": True},
    {"name": "e2-medium", "guestCpus": 2, "memoryMb": 4096, "isSharedCpu": True},
    {"name": "e2-standard-2", "guestCpus": 2, "memoryMb": 8192},
    {"name": "e2-standard-4", "guestCpus": 4, "memoryMb": 16384},
    {"name": "n2-standard-8", "guestCpus": 8, "memoryMb": 32768},
    {"name": "a2-highgpu-1g", "guestCpus": 12, "memoryMb": 87040,
     "accelerators": [{"guestAcceleratorType": "nvidia-tesla-a100", "guestAcceleratorCount": 1}]},
    {"name": "n1-standard-1", "guestCpus": 1, "memoryMb": 3840,
     "deprecated": {"state": "DEPRECATED", "replacement": "e2-standard-2"}},
]
#: public images per image project: families, an older image of a family, a deprecated one
IMAGES = {
    "ubuntu-os-cloud": [
        {"name": "ubuntu-2204-jammy-v20231201", "family": "ubuntu-2204-lts",
         "creationTimestamp": "2023-12-01T10:00:00.000-08:00"},
        {"name": "ubuntu-2204-jammy-v20250110", "family": "ubuntu-2204-lts",
         "creationTimestamp": "2025-01-10T10:00:00.000-08:00"},
        {"name": "ubuntu-2404-noble-amd64-v20250110", "family": "ubuntu-2404-lts-amd64",
         "creationTimestamp": "2025-01-10T11:00:00.000-08:00"},
        {"name": "ubuntu-1804-bionic-v20230531", "family": "ubuntu-1804-lts",
         "creationTimestamp": "2023-05-31T10:00:00.000-08:00",
         "deprecated": {"state": "DEPRECATED", "replacement": "ubuntu-2204-jammy-v20250110"}},
    ],
    "debian-cloud": [
        {"name": "debian-12-bookworm-v20250113", "family": "debian-12",
         "creationTimestamp": "2025-01-13T10:00:00.000-08:00"},
    ],
    "rocky-linux-cloud": [
        {"name": "rocky-linux-9-v20250114", "family": "rocky-linux-9",
         "creationTimestamp": "2025-01-14T10:00:00.000-08:00"},
    ],
    "centos-cloud": [
        {"name": "centos-stream-9-v20250114", "family": "centos-stream-9",
         "creationTimestamp": "2025-01-14T10:00:00.000-08:00"},
    ],
    PROJECT: [
        {"name": "custom-galaxy-image", "creationTimestamp": "2025-02-01T10:00:00.000-08:00"},
    ],
}


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class ApiError(Exception):
    """An HTTP error answer in Google's JSON error shape."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.body = {"error": {"code": status, "message": message,
                               "errors": [{"message": message, "domain": "global", "reason": reason}]}}


def not_found(path: str) -> ApiError:
    return ApiError(404, "notFound", f"The resource '{path}' was not found")


_FILTER_TERM = re.compile(r"""\(?\s*([\w.]+)\s+(=|!=|eq|ne)\s+(?:"([^"]*)"|'([^']*)'|([^\s)]+))\s*\)?""")


def matches_filter(item: dict[str, Any], filter_: str) -> bool:
    """Return whether a resource (camelCase JSON) passes a Compute Engine list filter (the subset above)."""
    filter_ = (filter_ or "").strip()
    if not filter_:
        return True
    terms = list(_FILTER_TERM.finditer(filter_))
    if not terms or "".join(t.group(0) for t in terms).replace(" ", "") != filter_.replace(" ", ""):
        raise ApiError(400, "invalid", f"Invalid list filter expression '{filter_}'.")
    for term in terms:
        path, op = term.group(1), term.group(2)
        literal = next(g for g in term.groups()[2:] if g is not None)
        value: Any = item
        for part in path.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        text = "" if value is None else str(value).lower() if isinstance(value, bool) else str(value)
        if op in ("eq", "ne"):  # RE2 full match
            ok = value is not None and re.fullmatch(literal, text) is not None
        else:
            ok = value is not None and text == literal
        if ok != (op in ("=", "eq")):
            return False
    return True


def described_deployment(item: dict[str, Any]) -> str | None:
    """Return the deployment a disk or firewall rule names in its JSON description, if any."""
    try:
        data = json.loads(item.get("description") or "{}")
    except ValueError:
        return None
    tags = data.get("cloud-paas") if isinstance(data, dict) else None
    return tags.get("cloud-paas-deployment") if isinstance(tags, dict) else None


@dataclass
class StandInState:
    """Everything the stand-in holds (read it from tests as a probe, behind the client's back)."""

    instances: dict[str, dict[str, Any]] = field(default_factory=dict)
    disks: dict[str, dict[str, Any]] = field(default_factory=dict)
    firewalls: dict[str, dict[str, Any]] = field(default_factory=dict)
    operations: dict[str, dict[str, Any]] = field(default_factory=dict)


class ComputeEngineStandIn:
    """The stand-in Compute Engine: start it, point a ``google_cloud_platform`` connection at :attr:`endpoint`.

    :param op_seconds: how long an operation stays PENDING/RUNNING
    :param boot_seconds: how long an instance stays PROVISIONING, then STAGING
    :param delete_seconds: how long a deleted instance stays STOPPING
    :param wait_seconds: how long ``operations.wait`` blocks at most (Google's: about 2 minutes)
    """

    def __init__(self, op_seconds: float = 0.02, boot_seconds: float = 0.03, delete_seconds: float = 0.02,
                 wait_seconds: float = 0.5) -> None:
        self.op_seconds = op_seconds
        self.boot_seconds = boot_seconds
        self.delete_seconds = delete_seconds
        self.wait_seconds = wait_seconds
        self.page_size = 500  # the API's default maxResults
        self.later_pages_served = 0
        self.state = StandInState()
        self.lock = threading.RLock()
        self.requests: list[tuple[str, str]] = []
        self.bulk_requests: list[dict[str, Any]] = []  # the BulkInsertInstanceResource bodies, as sent
        self._ids = itertools.count(4_000_000_000_000_000_001)
        self._ips = itertools.count(2)
        # fault injection
        self.quota_cpus: int | None = None
        self.exhausted_machine_types: set[str] = {"n2-standard-8"}  # the contract's failing node
        self.stuck_machine_types: set[str] = set()
        self._server: ThreadingHTTPServer | None = None

    # ---------------------------------------------------------------- lifecycle
    @property
    def endpoint(self) -> str:
        """Return the ``api_endpoint`` to give the clients (plain HTTP on loopback)."""
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_port}"

    def start(self) -> None:
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # one small answer: no 40 ms delayed-ACK stall

            def log_message(self, *args: Any) -> None:  # keep test output clean
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                url = urlsplit(self.path)
                status, body = stand_in.handle(self.command, url.path, parse_qs(url.query), raw)
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=UTF-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_DELETE = do_PATCH = _handle

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, name="gce-stand-in",
                         daemon=True).start()  # a quick shutdown: the default 0.5 s poll adds it to every test

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    # ---------------------------------------------------------------- probes (behind the client's back)
    def tick(self) -> None:
        """Let time pass: finish due operations, move instances through their statuses."""
        with self.lock:
            now = time.monotonic()
            for op in self.state.operations.values():
                if op["status"] != "DONE" and now >= op["_done_at"]:
                    op["_finish"]()
                    op.update(status="DONE", progress=100, endTime=_now())
            for name, inst in list(self.state.instances.items()):
                if inst["_gone_at"] is not None:
                    if now >= inst["_gone_at"]:
                        del self.state.instances[name]
                        for disk in list(self.state.disks.values()):
                            users = disk["users"]
                            if inst["selfLink"] in users:
                                users.remove(inst["selfLink"])
                            if disk.get("_boot_of") == name:
                                del self.state.disks[disk["name"]]
                    continue
                if inst["status"] in ("PROVISIONING", "STAGING"):
                    age = now - inst["_started"]
                    if inst["status"] == "PROVISIONING" and age >= self.boot_seconds:
                        inst["status"] = "STAGING"
                    if inst["status"] == "STAGING" and age >= 2 * self.boot_seconds and not inst["_stuck"]:
                        inst.update(status="RUNNING", lastStartTimestamp=_now())

    def owned(self, deployment_id: str) -> list[tuple[str, str]]:
        """Return (kind, name) of everything that names the deployment: instance metadata, disk and firewall
        descriptions or labels (the exact tags, read without the backend's label encoding)."""
        self.tick()
        found = []
        with self.lock:
            for inst in self.state.instances.values():
                items = {i["key"]: i.get("value") for i in inst.get("metadata", {}).get("items", [])}
                if items.get("cloud-paas-deployment") == deployment_id:
                    found.append(("instance", inst["name"]))
            instances = {name for _, name in found}
            for kind, table in (("disk", self.state.disks), ("firewall", self.state.firewalls)):
                for item in table.values():
                    if described_deployment(item) == deployment_id or item.get("_boot_of") in instances:
                        found.append((kind, item["name"]))
        return sorted(found)

    def stop_instance(self, name: str) -> None:
        """Stop an instance as the console would (TERMINATED)."""
        with self.lock:
            self.state.instances[name]["status"] = "TERMINATED"

    # ---------------------------------------------------------------- helpers
    def _link(self, path: str) -> str:
        return f"{BASE}{path}"

    def _operation(self, scope: str, op_type: str, target: str, finish, error: dict[str, Any] | None = None,
                   delay: float | None = None) -> dict[str, Any]:
        name = f"operation-{int(time.time() * 1000)}-{next(self._ids):x}"
        where = f"projects/{PROJECT}/zones/{ZONE}" if scope == "zone" else f"projects/{PROJECT}/global"

        def done() -> None:
            if error is not None:
                op["error"] = {"errors": [{"code": error["code"], "message": error["message"]}]}
                op.update(httpErrorStatusCode=error["status"], httpErrorMessage=error["status_message"])
                return
            finish()

        op: dict[str, Any] = {
            "kind": "compute#operation", "id": str(next(self._ids)), "name": name,
            "operationType": op_type, "targetLink": self._link(target), "targetId": str(next(self._ids)),
            "status": "RUNNING", "user": "anonymous@stand-in", "progress": 0, "insertTime": _now(),
            "startTime": _now(), "selfLink": self._link(f"{where}/operations/{name}"),
            "_done_at": time.monotonic() + (self.op_seconds if delay is None else delay), "_finish": done,
        }
        if scope == "zone":
            op["zone"] = self._link(f"projects/{PROJECT}/zones/{ZONE}")
        self.state.operations[name] = op
        return op

    @staticmethod
    def _public(item: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in item.items() if not k.startswith("_")}

    def _list(self, kind: str, items: list[dict[str, Any]], query: dict[str, list[str]], path: str) -> dict[str, Any]:
        filter_ = (query.get("filter") or [""])[-1]
        selected = [self._public(i) for i in items if matches_filter(i, filter_)]
        size = int((query.get("maxResults") or [self.page_size])[-1])
        start = int((query.get("pageToken") or ["0"])[-1])
        if "pageToken" in query:
            self.later_pages_served += 1
        body: dict[str, Any] = {"kind": kind, "id": self._link(path), "selfLink": self._link(path),
                                "items": selected[start:start + size]}
        if start + size < len(selected):
            body["nextPageToken"] = str(start + size)
        return body

    def _machine_type(self, ref: str) -> dict[str, Any]:
        name = ref.rsplit("/", 1)[-1]
        for mtype in MACHINE_TYPES:
            if mtype["name"] == name:
                return self._machine_type_json(mtype)
        raise ApiError(400, "invalid", f"Invalid value for field 'resource.machineType': '{ref}'. "
                                       "Machine type with name '{name}' does not exist in zone '{ZONE}'.")

    def _machine_type_json(self, mtype: dict[str, Any]) -> dict[str, Any]:
        return {"kind": "compute#machineType", "id": str(abs(hash(mtype["name"])) % 10**12),
                "creationTimestamp": "2015-01-16T09:25:43.314-08:00", "description": mtype["name"],
                "imageSpaceGb": 0, "maximumPersistentDisks": 128, "maximumPersistentDisksSizeGb": "263168",
                "zone": ZONE, "selfLink": self._link(f"projects/{PROJECT}/zones/{ZONE}/machineTypes/{mtype['name']}"),
                "isSharedCpu": False, **mtype}

    def _image_json(self, project: str, image: dict[str, Any]) -> dict[str, Any]:
        return {"kind": "compute#image", "id": str(abs(hash(image["name"])) % 10**12), "status": "READY",
                "sourceType": "RAW", "diskSizeGb": "10", "architecture": "X86_64",
                "selfLink": self._link(f"projects/{project}/global/images/{image['name']}"), **image}

    def _resolve_image(self, ref: str) -> dict[str, Any] | None:
        match = re.search(r"projects/([^/]+)/global/images/(family/)?([^/]+)$", ref)
        if not match:
            return None
        project, family, name = match.groups()
        images = IMAGES.get(project, [])
        if family:
            live = [i for i in images if i.get("family") == name and not i.get("deprecated")]
            return self._image_json(project, max(live, key=lambda i: i["creationTimestamp"])) if live else None
        found = next((i for i in images if i["name"] == name), None)
        return self._image_json(project, found) if found else None

    # ---------------------------------------------------------------- the API
    def handle(self, method: str, path: str, query: dict[str, list[str]], raw: bytes) -> tuple[int, Any]:
        with self.lock:
            self.requests.append((method, path))
        prefix = f"/compute/v1/projects/{PROJECT}/"
        try:
            if method == "POST" and path.endswith("/wait") and "/operations/" in path:
                return 200, self._wait(path.rsplit("/", 2)[-2])
            with self.lock:
                self.tick()
                body = json.loads(raw) if raw else {}
                if not path.startswith("/compute/v1/projects/"):
                    raise not_found(path)
                if not path.startswith(prefix):
                    # public image projects: images only
                    match = re.fullmatch(r"/compute/v1/projects/([^/]+)/global/images(/.*)?", path)
                    if not match or method != "GET":
                        raise ApiError(403, "forbidden", f"Required permission denied on {path}")
                    return 200, self._images(match.group(1), match.group(2) or "", query)
                rest = path[len(prefix):]
                return 200, self._route(method, rest, query, body)
        except ApiError as err:
            return err.status, err.body

    def _wait(self, name: str) -> dict[str, Any]:
        deadline = time.monotonic() + self.wait_seconds
        while True:
            with self.lock:
                self.tick()
                op = self.state.operations.get(name)
                if op is None:
                    raise not_found(f"projects/{PROJECT}/zones/{ZONE}/operations/{name}")
                if op["status"] == "DONE" or time.monotonic() >= deadline:
                    return self._public(op)
            time.sleep(0.005)

    def _images(self, project: str, rest: str, query: dict[str, list[str]]) -> dict[str, Any]:
        images = IMAGES.get(project)
        if images is None:
            raise not_found(f"projects/{project}")
        if rest in ("", "/"):
            return self._list("compute#imageList", [self._image_json(project, i) for i in images], query,
                              f"projects/{project}/global/images")
        found = self._resolve_image(f"projects/{project}/global/images{rest}")
        if found is None:
            raise not_found(f"projects/{project}/global/images{rest}")
        return found

    def _route(self, method: str, rest: str, query: dict[str, list[str]], body: dict[str, Any]) -> Any:
        zone_prefix = f"zones/{ZONE}/"
        if rest.startswith("global/images"):
            return self._images(PROJECT, rest[len("global/images"):], query)
        if rest.startswith("global/operations/"):
            name = rest.split("/")[2]
            if name not in self.state.operations:
                raise not_found(f"projects/{PROJECT}/{rest}")
            return self._public(self.state.operations[name])
        if rest.startswith("global/firewalls"):
            return self._firewalls(method, rest[len("global/firewalls"):].strip("/"), query, body)
        if not rest.startswith(zone_prefix):
            raise not_found(f"projects/{PROJECT}/{rest}")
        parts = rest[len(zone_prefix):].split("/")
        collection = parts[0]
        if collection == "operations" and method == "GET" and len(parts) == 2:
            if parts[1] not in self.state.operations:
                raise not_found(f"projects/{PROJECT}/{rest}")
            return self._public(self.state.operations[parts[1]])
        if collection == "machineTypes" and method == "GET" and len(parts) == 1:
            return self._list("compute#machineTypeList", [self._machine_type_json(m) for m in MACHINE_TYPES],
                              query, f"projects/{PROJECT}/{rest}")
        if collection == "instances":
            return self._instances(method, parts[1:], query, body)
        if collection == "disks":
            return self._disks(method, parts[1:], query, body)
        raise not_found(f"projects/{PROJECT}/{rest}")

    # ---------------------------------------------------------------- instances
    def _instance_path(self, name: str) -> str:
        return f"projects/{PROJECT}/zones/{ZONE}/instances/{name}"

    def _instances(self, method: str, parts: list[str], query: dict[str, list[str]], body: dict[str, Any]) -> Any:
        table = self.state.instances
        if not parts:
            if method == "GET":
                return self._list("compute#instanceList", list(table.values()), query,
                                  f"projects/{PROJECT}/zones/{ZONE}/instances")
            if method == "POST":
                return self._insert_instance(body)
        if parts == ["bulkInsert"] and method == "POST":
            return self._bulk_insert(body)
        name = parts[0]
        inst = table.get(name)
        if inst is None:
            raise not_found(self._instance_path(name))
        if len(parts) == 1 and method == "GET":
            return self._public(inst)
        if len(parts) == 1 and method == "DELETE":
            if inst["_gone_at"] is None:
                inst.update(status="STOPPING", _gone_at=time.monotonic() + self.delete_seconds)
            op = self._operation("zone", "delete", self._instance_path(name), lambda: None,
                                 delay=self.delete_seconds)
            return self._public(op)
        action = parts[1] if len(parts) == 2 else None
        if method == "POST" and action in ("start", "resume"):
            def boot() -> None:
                inst.update(status="PROVISIONING", _started=time.monotonic())
            return self._public(self._operation("zone", action, self._instance_path(name), boot))
        if method == "POST" and action == "stop":
            return self._public(self._operation("zone", "stop", self._instance_path(name),
                                                lambda: inst.update(status="TERMINATED")))
        if method == "POST" and action == "attachDisk":
            disk = self.state.disks.get((body.get("source") or "").rsplit("/", 1)[-1])
            if disk is None:
                raise not_found(body.get("source") or "")

            def attach() -> None:
                disk["users"].append(inst["selfLink"])
                inst["disks"].append({"kind": "compute#attachedDisk", "type": "PERSISTENT", "mode": "READ_WRITE",
                                      "source": disk["selfLink"], "deviceName": body.get("deviceName") or disk["name"],
                                      "index": len(inst["disks"]), "boot": False, "autoDelete": False,
                                      "interface": "SCSI", "diskSizeGb": disk["sizeGb"]})
            return self._public(self._operation("zone", "attachDisk", self._instance_path(name), attach))
        if method == "POST" and action == "detachDisk":
            device = (query.get("deviceName") or [""])[-1]
            attached = next((d for d in inst["disks"] if d["deviceName"] == device), None)
            if attached is None:
                raise ApiError(400, "invalid", f"Invalid value for field 'deviceName': '{device}'. "
                                               "No attached disk found with that device name.")

            def detach() -> None:
                inst["disks"].remove(attached)
                disk = self.state.disks.get(attached["source"].rsplit("/", 1)[-1])
                if disk is not None and inst["selfLink"] in disk["users"]:
                    disk["users"].remove(inst["selfLink"])
            return self._public(self._operation("zone", "detachDisk", self._instance_path(name), detach))
        raise ApiError(400, "badRequest", f"unsupported {method} on instances/{'/'.join(parts)}")

    def _insert_instance(self, body: dict[str, Any]) -> dict[str, Any]:
        name = body.get("name") or ""
        if not re.fullmatch(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?", name):
            raise ApiError(400, "invalid", f"Invalid value for field 'resource.name': '{name}'.")
        for key, value in (body.get("labels") or {}).items():
            if not re.fullmatch(r"[a-z][a-z0-9_-]{0,62}", key) or not re.fullmatch(r"[a-z0-9_-]{0,63}", value):
                raise ApiError(400, "invalid", f"Invalid value for field 'resource.labels': '{key}={value}'.")
        if name in self.state.instances:
            raise ApiError(409, "alreadyExists", f"The resource '{self._instance_path(name)}' already exists")
        mtype = self._machine_type(body.get("machineType") or "")
        path = self._instance_path(name)
        error = None
        boot = next((d for d in body.get("disks") or [] if d.get("boot")), None)
        image_ref = ((boot or {}).get("initializeParams") or {}).get("sourceImage") or ""
        used = sum(self._machine_type(i["machineType"])["guestCpus"] for i in self.state.instances.values()
                   if i["_gone_at"] is None)
        if not boot or self._resolve_image(image_ref) is None:
            error = {"code": "RESOURCE_NOT_FOUND", "status": 404, "status_message": "NOT FOUND",
                     "message": f"The resource '{image_ref}' was not found"}
        elif self.quota_cpus is not None and used + mtype["guestCpus"] > self.quota_cpus:
            error = {"code": "QUOTA_EXCEEDED", "status": 403, "status_message": "FORBIDDEN",
                     "message": f"Quota 'CPUS' exceeded.  Limit: {float(self.quota_cpus)} in region {REGION}."}
        elif mtype["name"] in self.exhausted_machine_types:
            error = {"code": "ZONE_RESOURCE_POOL_EXHAUSTED", "status": 503, "status_message": "SERVICE UNAVAILABLE",
                     "message": f"The zone 'projects/{PROJECT}/zones/{ZONE}' does not have enough resources "
                                "available to fulfill the request.  Try a different zone, or try again later."}

        def create() -> None:
            self._create_instance(body, mtype, path)

        return self._public(self._operation("zone", "insert", path, create, error))

    def _bulk_insert(self, body: dict[str, Any]) -> dict[str, Any]:
        """instances.bulkInsert: validated and checked for quota and capacity up front, made when the operation ends.

        ``minCount`` (default ``count``) instances must fit, else the request is refused at once (403 quotaExceeded,
        503 insufficientCapacity) and nothing is made; otherwise the operation makes as many as fit, the first names
        as listed, and reports the counts in ``instancesBulkInsertOperationMetadata``.
        """
        self.bulk_requests.append(body)
        count = int(body.get("count") or 0)
        min_count = int(body.get("minCount") or count)
        props = body.get("instanceProperties") or {}
        per_instance = body.get("perInstanceProperties") or {}
        pattern = body.get("namePattern")
        if body.get("sourceInstanceTemplate"):
            raise ApiError(400, "invalid", "the stand-in does not emulate sourceInstanceTemplate")
        if not props:
            raise ApiError(400, "invalid", "Invalid value for field 'resource.instanceProperties': it is required.")
        if not 1 <= count <= MAX_BULK_COUNT:
            raise ApiError(400, "invalid", f"Invalid value for field 'resource.count': '{count}'. "
                                           f"Must be between 1 and {MAX_BULK_COUNT}.")
        if not 1 <= min_count <= count:
            raise ApiError(400, "invalid", f"Invalid value for field 'resource.minCount': '{min_count}'. "
                                           "Must be between 1 and count.")
        names = list(per_instance)
        if len(names) > count:
            raise ApiError(400, "invalid", "perInstanceProperties has more entries than count.")
        if len(names) < count:
            if not pattern:
                raise ApiError(400, "invalid", f"count is {count} but perInstanceProperties names {len(names)} "
                                               "instances: give namePattern for the others.")
            names += self._pattern_names(pattern, count - len(names), names)
        for name in names:
            if not re.fullmatch(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?", name):
                raise ApiError(400, "invalid", f"Invalid value for field 'resource.perInstanceProperties': '{name}'.")
            if name in self.state.instances:
                raise ApiError(409, "alreadyExists", f"The resource '{self._instance_path(name)}' already exists")
        for key, value in (props.get("labels") or {}).items():
            if not re.fullmatch(r"[a-z][a-z0-9_-]{0,62}", key) or not re.fullmatch(r"[a-z0-9_-]{0,63}", value):
                raise ApiError(400, "invalid", f"Invalid value for field 'resource.labels': '{key}={value}'.")
        path = f"projects/{PROJECT}/zones/{ZONE}/instances/bulkInsert"
        mref = props.get("machineType") or ""
        error = None
        boot = next((d for d in props.get("disks") or [] if d.get("boot")), None)
        image_ref = ((boot or {}).get("initializeParams") or {}).get("sourceImage") or ""
        if "/" in mref:  # the bulk API takes a bare machine type name; a URL ends in INTERNAL_ERROR
            error = {"code": "INTERNAL_ERROR", "status": 500, "status_message": "INTERNAL SERVER ERROR",
                     "message": f"Internal error: machineType '{mref}' is not a machine type name."}
        elif not boot or self._resolve_image(image_ref) is None:
            error = {"code": "RESOURCE_NOT_FOUND", "status": 404, "status_message": "NOT FOUND",
                     "message": f"The resource '{image_ref}' was not found"}
        fits, mtype = count, None
        if error is None:
            mtype = self._machine_type(mref)
            if mtype["name"] in self.exhausted_machine_types:  # per instance: none fits, so minCount (>= 1) cannot
                raise ApiError(503, "insufficientCapacity",
                               f"The zone 'projects/{PROJECT}/zones/{ZONE}' does not have enough resources "
                               f"available to fulfill the request of {min_count} instance(s) of {mtype['name']}.")
            if self.quota_cpus is not None:  # per instance: as many as the free vCPUs hold
                used = sum(self._machine_type(i["machineType"])["guestCpus"] for i in self.state.instances.values()
                           if i["_gone_at"] is None)
                fits = min(fits, max(0, self.quota_cpus - used) // mtype["guestCpus"])
                if fits < min_count:
                    raise ApiError(403, "quotaExceeded",
                                   f"Quota 'CPUS' exceeded.  Limit: {float(self.quota_cpus)} in region {REGION}.")

        def create() -> None:
            for name in names[:fits]:
                self._create_instance({**props, "name": name}, mtype, self._instance_path(name))
            op["instancesBulkInsertOperationMetadata"] = {"perLocationStatus": {f"zones/{ZONE}": {
                "status": "DONE", "targetVmCount": count, "createdVmCount": fits,
                "failedToCreateVmCount": count - fits, "deletedVmCount": 0}}}

        op = self._operation("zone", "bulkInsert", path, create, error)
        return self._public(op)

    def _pattern_names(self, pattern: str, how_many: int, taken: list[str]) -> list[str]:
        """Return names from a namePattern: the ``#`` run numbered after the biggest existing number."""
        match = re.fullmatch(r"([^#]*)(#{1,18})([^#]*)", pattern)
        if not match:
            raise ApiError(400, "invalid", f"Invalid value for field 'resource.namePattern': '{pattern}'.")
        head, hashes, tail = match.groups()
        number = re.compile(re.escape(head) + rf"(\d{{{len(hashes)}}})" + re.escape(tail))
        used = [int(m.group(1)) for n in [*self.state.instances, *taken] if (m := number.fullmatch(n))]
        start = max(used, default=0) + 1
        return [f"{head}{str(n).zfill(len(hashes))}{tail}" for n in range(start, start + how_many)]

    def _create_instance(self, body: dict[str, Any], mtype: dict[str, Any], path: str) -> None:
        name = body["name"]
        nics = []
        for number, nic in enumerate(body.get("networkInterfaces") or [{}]):
            access = [{"kind": "compute#accessConfig", "type": "ONE_TO_ONE_NAT", "name": a.get("name", "External NAT"),
                       "natIP": f"34.76.{next(self._ips) % 250}.{number + 10}", "networkTier": "PREMIUM"}
                      for a in nic.get("accessConfigs") or []]
            nics.append({"kind": "compute#networkInterface", "name": f"nic{number}",
                         "network": self._link(f"projects/{PROJECT}/{nic.get('network', 'global/networks/default')}"),
                         "networkIP": f"10.132.0.{next(self._ips) % 250 + 2}", "accessConfigs": access,
                         "fingerprint": "x7Gm0r9ZbXo="})
        boot = next(d for d in body["disks"] if d.get("boot"))
        params = boot.get("initializeParams") or {}
        disk_path = f"projects/{PROJECT}/zones/{ZONE}/disks/{name}"
        size = str(params.get("diskSizeGb") or 10)
        self.state.disks[name] = {
            "kind": "compute#disk", "id": str(next(self._ids)), "creationTimestamp": _now(), "name": name,
            "sizeGb": size, "zone": self._link(f"projects/{PROJECT}/zones/{ZONE}"), "status": "READY",
            "selfLink": self._link(disk_path), "sourceImage": self._link(params.get("sourceImage", "")),
            "type": self._link(f"projects/{PROJECT}/zones/{ZONE}/diskTypes/pd-balanced"),
            "labels": dict(params.get("labels") or {}), "users": [self._link(path)], "_boot_of": name,
        }
        self.state.instances[name] = {
            "kind": "compute#instance", "id": str(next(self._ids)), "creationTimestamp": _now(), "name": name,
            "description": body.get("description", ""),
            "tags": {**(body.get("tags") or {}), "fingerprint": "42WmSpB8rSM="},
            "machineType": mtype["selfLink"], "status": "PROVISIONING",
            "zone": self._link(f"projects/{PROJECT}/zones/{ZONE}"), "canIpForward": False,
            "networkInterfaces": nics,
            "disks": [{"kind": "compute#attachedDisk", "type": "PERSISTENT", "mode": "READ_WRITE",
                       "source": self._link(disk_path), "deviceName": boot.get("deviceName", "persistent-disk-0"),
                       "index": 0, "boot": True, "autoDelete": bool(boot.get("autoDelete")), "interface": "SCSI",
                       "diskSizeGb": size}],
            "metadata": {"kind": "compute#metadata", "fingerprint": "qPELBUXvYpY=",
                         "items": list((body.get("metadata") or {}).get("items") or [])},
            "selfLink": self._link(path), "scheduling": body.get("scheduling") or {
                "onHostMaintenance": "MIGRATE", "automaticRestart": True, "preemptible": False},
            "cpuPlatform": "Unknown CPU Platform", "labels": dict(body.get("labels") or {}),
            "labelFingerprint": "6Mw0m2Rx8bQ=", "startRestricted": False, "deletionProtection": False,
            "_started": time.monotonic(), "_gone_at": None, "_stuck": mtype["name"] in self.stuck_machine_types,
        }

    # ---------------------------------------------------------------- firewalls
    def _firewalls(self, method: str, name: str, query: dict[str, list[str]], body: dict[str, Any]) -> Any:
        table = self.state.firewalls
        if not name:
            if method == "GET":
                return self._list("compute#firewallList", list(table.values()), query,
                                  f"projects/{PROJECT}/global/firewalls")
            if method == "POST":
                fw_name = body.get("name") or ""
                if not re.fullmatch(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?", fw_name):
                    raise ApiError(400, "invalid", f"Invalid value for field 'resource.name': '{fw_name}'.")
                if fw_name in table:
                    raise ApiError(409, "alreadyExists",
                                   f"The resource 'projects/{PROJECT}/global/firewalls/{fw_name}' already exists")
                path = f"projects/{PROJECT}/global/firewalls/{fw_name}"
                table[fw_name] = {
                    "kind": "compute#firewall", "id": str(next(self._ids)), "creationTimestamp": _now(),
                    "name": fw_name, "description": body.get("description", ""),
                    "network": self._link(f"projects/{PROJECT}/{body.get('network', 'global/networks/default')}"),
                    "priority": body.get("priority", 1000), "sourceRanges": body.get("sourceRanges") or [],
                    "targetTags": body.get("targetTags") or [], "allowed": body.get("allowed") or [],
                    "direction": body.get("direction", "INGRESS"), "logConfig": {"enable": False},
                    "disabled": False, "selfLink": self._link(path),
                }
                return self._public(self._operation("global", "insert", path, lambda: None))
        path = f"projects/{PROJECT}/global/firewalls/{name}"
        if name not in table:
            raise not_found(path)
        if method == "GET":
            return self._public(table[name])
        if method == "DELETE":
            return self._public(self._operation("global", "delete", path, lambda: table.pop(name, None)))
        raise ApiError(400, "badRequest", f"unsupported {method} on firewalls/{name}")

    # ---------------------------------------------------------------- disks
    def _disks(self, method: str, parts: list[str], query: dict[str, list[str]], body: dict[str, Any]) -> Any:
        table = self.state.disks
        if not parts:
            if method == "GET":
                return self._list("compute#diskList", list(table.values()), query,
                                  f"projects/{PROJECT}/zones/{ZONE}/disks")
            if method == "POST":
                name = body.get("name") or ""
                if name in table:
                    raise ApiError(409, "alreadyExists",
                                   f"The resource 'projects/{PROJECT}/zones/{ZONE}/disks/{name}' already exists")
                path = f"projects/{PROJECT}/zones/{ZONE}/disks/{name}"
                disk = {
                    "kind": "compute#disk", "id": str(next(self._ids)), "creationTimestamp": _now(), "name": name,
                    "description": body.get("description", ""), "sizeGb": str(body.get("sizeGb") or 10),
                    "zone": self._link(f"projects/{PROJECT}/zones/{ZONE}"), "status": "CREATING",
                    "selfLink": self._link(path), "labels": dict(body.get("labels") or {}), "users": [],
                    "type": self._link(body.get("type") or f"projects/{PROJECT}/zones/{ZONE}/diskTypes/pd-standard"),
                    "physicalBlockSizeBytes": "4096",
                }
                table[name] = disk
                return self._public(self._operation("zone", "insert", path, lambda: disk.update(status="READY")))
        name = parts[0]
        path = f"projects/{PROJECT}/zones/{ZONE}/disks/{name}"
        disk = table.get(name)
        if disk is None:
            raise not_found(path)
        if method == "GET" and len(parts) == 1:
            return self._public(disk)
        if method == "DELETE" and len(parts) == 1:
            if disk["users"]:
                raise ApiError(400, "resourceInUseByAnotherResource",
                               f"The disk resource '{path}' is already being used by '{disk['users'][0]}'")
            disk["status"] = "DELETING"
            return self._public(self._operation("zone", "delete", path, lambda: table.pop(name, None)))
        raise ApiError(400, "badRequest", f"unsupported {method} on disks/{'/'.join(parts)}")


@contextlib.contextmanager
def running_stand_in(**options: Any) -> Iterator[ComputeEngineStandIn]:
    """Run a stand-in Compute Engine on loopback for the duration of the block."""
    stand_in = ComputeEngineStandIn(**options)
    stand_in.start()
    try:
        yield stand_in
    finally:
        stand_in.stop()


def connection_json(stand_in: ComputeEngineStandIn, **extra: Any) -> str:
    """Return a ``google_cloud_platform`` connection (AIRFLOW_CONN_<ID> JSON) for the stand-in.

    ``is_anonymous`` is the provider's own connection field (AnonymousCredentials: no token is sent);
    ``api_endpoint`` and ``zone`` are extras the GCP backend reads.
    """
    extras = {"project": PROJECT, "is_anonymous": True, "api_endpoint": stand_in.endpoint, "zone": ZONE, **extra}
    return json.dumps({"conn_type": "google_cloud_platform", "extra": extras})
