"""AWS test infrastructure: a real moto server process on loopback, and a fault-injecting HTTP proxy.

``moto_server`` is the emulated EC2 API (a separate process, stopped by its PID). ``FaultyEC2Endpoint``
stands between the EC2Hook's client and moto at the HTTP boundary: it forwards every request and,
when a rule matches (API action and request parameters), answers with an EC2 error instead, the way
a quota error or a 5xx of the real API would reach boto3, or answers nothing (``Hold``: the client's
read timeout fires); a rewrite changes moto's answer on its way back (an instance that stays
``pending``, a volume that stays ``creating``: moto makes both at once); a watcher sees every answer
moto gave before it is relayed (``KillAfterMutations`` kills the caller there).
"""

from __future__ import annotations

import http.client
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from waiting import free_port

REGION = "us-east-1"


@dataclass
class MotoServer:
    """A running ``moto_server`` process."""

    url: str
    process: subprocess.Popen

    def boto3_client(self):
        """Return a plain boto3 EC2 client (the tests' own eyes, not the backend's)."""
        import boto3

        return boto3.client("ec2", endpoint_url=self.url, region_name=REGION, aws_access_key_id="testing",
                            aws_secret_access_key="testing")


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    """Start ``moto_server -H 127.0.0.1 -p <free port>``; stop it by PID at the end."""
    binary = Path(sys.executable).parent / "moto_server"
    if not binary.exists():
        pytest.skip("moto_server is not installed: pip install 'moto[server]'")
    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with log.open("wb") as out:
        process = subprocess.Popen([str(binary), "-H", "127.0.0.1", "-p", str(port)], stdout=out,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                pytest.fail(f"moto_server did not start: {log.read_text()[-2000:]}")
            time.sleep(0.1)
    try:
        yield MotoServer(url, process)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def aws_connection(conn_id: str, endpoint_url: str, **extra) -> None:
    """Define the Airflow ``aws`` connection ``conn_id`` through its AIRFLOW_CONN_ environment variable.

    :param conn_id: the connection id
    :param endpoint_url: the EC2 endpoint (moto or the faulty proxy)
    :param extra: more extra fields (e.g. config_kwargs)
    """
    os.environ[f"AIRFLOW_CONN_{conn_id.upper()}"] = json.dumps({
        "conn_type": "aws",
        "login": "testing",  # dummy keys: moto accepts any
        "password": "testing",
        "extra": {"region_name": REGION, "endpoint_url": endpoint_url, **extra},
    })


@dataclass(frozen=True)
class Hold:
    """A rule's answer that answers nothing: the connection stays open until the client hangs up.

    The client's read timeout fires (or the proxy stops). With ``forward`` the call reaches moto
    first, so it takes effect and only its answer is lost, the nastiest timeout for a caller that must
    not leave what it made behind.

    :param forward: let moto carry the call out before the answer is withheld
    """

    forward: bool = True


#: a rule gets the API action and the request's parameters; returns (HTTP status, EC2 error code), a Hold or None
Rule = Callable[[str, Mapping[str, str]], "tuple[int, str] | Hold | None"]
#: a rewrite gets the API action, the request's parameters and moto's answer; returns the answer to send
Rewrite = Callable[[str, Mapping[str, str], bytes], bytes]
#: a watcher gets the API action, the request's parameters and moto's HTTP status, before the answer is relayed
Watcher = Callable[[str, Mapping[str, str], int], None]
#: the prefixes of EC2 actions that change nothing
READ_ONLY_PREFIXES = ("Describe", "Get", "List")


def is_mutating(action: str) -> bool:
    """Return whether an EC2 API action changes something (anything but Describe*/Get*/List*).

    :param action: the API action, e.g. RunInstances
    """
    return bool(action) and not action.startswith(READ_ONLY_PREFIXES)


@dataclass
class KillAfterMutations:
    """A watcher that SIGKILLs a process once moto has answered the ``n``-th mutating call.

    The kill comes before the answer is relayed: what the call made exists on moto, and the killed
    caller never learned of it (the window a crash leaves between a cloud call and its record).

    :param n: which mutating call (1-based, counted over everything the proxy forwards)
    :param pid: the process to kill
    """

    n: int
    pid: int
    count: int = 0
    killed_after: str | None = None  # the action after which the process was killed
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __call__(self, action: str, params: Mapping[str, str], status: int) -> None:
        if not is_mutating(action):
            return
        with self._lock:
            self.count += 1
            if self.count != self.n:
                return
            self.killed_after = action
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:  # it ended on its own first; the test sees killed_after and its exit code
            pass


def still_booting(action: str, params: Mapping[str, str], body: bytes) -> bytes:
    """Report every running instance as ``pending`` (an instance that takes long to boot)."""
    if action != "DescribeInstances":
        return body
    return body.replace(b"<code>16</code><name>running</name>", b"<code>0</code><name>pending</name>")


def still_creating(action: str, params: Mapping[str, str], body: bytes) -> bytes:
    """Report every available volume as ``creating`` (a volume that takes long to be made)."""
    return body.replace(b"<status>available</status>", b"<status>creating</status>") if action == "DescribeVolumes" \
        else body


@dataclass
class FaultyEC2Endpoint:
    """A loopback HTTP proxy to moto that answers chosen EC2 calls with an error (the HTTP boundary).

    :param upstream: moto's URL
    """

    upstream: str
    rules: list[Rule] = field(default_factory=list)
    rewrites: list[Rewrite] = field(default_factory=list)
    watchers: list[Watcher] = field(default_factory=list)
    seen: list[str] = field(default_factory=list)  # the API actions forwarded or refused, in order
    #: how long a Hold keeps a connection open at most (the client normally hangs up long before)
    hold_limit: float = 60.0
    #: read-only actions answered again from moto's first answer to the same request: moto takes seconds
    #: to list its instance types, and every new backend (every forked worker) asks once
    cached: frozenset[str] = frozenset()
    _answers: dict[bytes, tuple[int, list[tuple[str, str]], bytes]] = field(default_factory=dict, repr=False)
    _released: threading.Event = field(default_factory=threading.Event, repr=False)  # set by stop()

    def _hold(self, connection: socket.socket) -> None:
        """Wait until the client hangs up (EOF on the socket), the proxy stops, or ``hold_limit`` passes."""
        deadline = time.monotonic() + self.hold_limit
        while not self._released.is_set() and time.monotonic() < deadline:
            readable, _, _ = select.select([connection], [], [], 0.05)
            if readable:
                try:
                    if not connection.recv(1, socket.MSG_PEEK):
                        return  # the client closed the connection: its read timeout fired
                except OSError:
                    return

    def start(self) -> str:
        """Serve on a free loopback port; return the URL."""
        proxy = self
        target = urllib.parse.urlsplit(self.upstream)

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep test output quiet
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                params = {k: v[0] for k, v in urllib.parse.parse_qs(body.decode()).items()}
                action = params.get("Action", "")
                proxy.seen.append(action)
                for rule in list(proxy.rules):
                    fault = rule(action, params)
                    if isinstance(fault, Hold) and not proxy._released.is_set():
                        if fault.forward:
                            status, _headers, _data = self._forward(body)
                            for watch in list(proxy.watchers):
                                watch(action, params, status)
                        proxy._hold(self.connection)
                        self.close_connection = True
                        return
                    if fault and not isinstance(fault, Hold):
                        status, code = fault
                        payload = (f"<Response><Errors><Error><Code>{code}</Code><Message>injected by the test's "
                                   f"faulty endpoint</Message></Error></Errors><RequestID>test</RequestID>"
                                   "</Response>").encode()
                        self.send_response(status)
                        self.send_header("Content-Type", "text/xml")
                        self.send_header("Content-Length", str(len(payload)))
                        self.end_headers()
                        self.wfile.write(payload)
                        return
                if body in proxy._answers:
                    status, headers, data = proxy._answers[body]
                else:
                    status, headers, data = self._forward(body)
                    if action in proxy.cached and not is_mutating(action) and status == 200:
                        proxy._answers[body] = status, headers, data
                for watch in list(proxy.watchers):
                    watch(action, params, status)
                for rewrite in list(proxy.rewrites):
                    data = rewrite(action, params, data)
                try:
                    self.send_response(status)
                    for key, value in headers:
                        if key.lower() not in ("content-length", "transfer-encoding", "connection", "server", "date"):
                            self.send_header(key, value)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the caller is gone (killed by a watcher)
                    self.close_connection = True

            def _forward(self, body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
                upstream = http.client.HTTPConnection(target.hostname, target.port, timeout=30)
                try:
                    headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
                    upstream.request("POST", self.path, body=body, headers=headers)
                    reply = upstream.getresponse()
                    return reply.status, reply.getheaders(), reply.read()
                finally:
                    upstream.close()

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def stop(self) -> None:
        """Stop serving (held connections are let go first)."""
        self._released.set()
        self._server.shutdown()
        self._server.server_close()


def tag_value(params: Mapping[str, str], key: str) -> str | None:
    """Return the value of tag ``key`` in a RunInstances/CreateVolume request's TagSpecification params.

    :param params: the request's form parameters
    :param key: the tag key
    """
    for name, value in params.items():
        if name.startswith("TagSpecification.") and name.endswith(".Key") and value == key:
            return params.get(name[: -len("Key")] + "Value")
    return None
