"""AWS test infrastructure: a real moto server process on loopback, and a fault-injecting HTTP proxy.

``moto_server`` is the emulated EC2 API (a separate process, stopped by its PID). ``FaultyEC2Endpoint``
stands between the EC2Hook's client and moto at the HTTP boundary: it forwards every request and,
when a rule matches (API action and request parameters), answers with an EC2 error instead, the way
a quota error or a 5xx of the real API would reach boto3; a rewrite changes moto's answer on its way
back (an instance that stays ``pending``, a volume that stays ``creating``: moto makes both at once).
"""

from __future__ import annotations

import http.client
import json
import os
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

REGION = "us-east-1"


def free_port() -> int:
    """Return a free TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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


#: a rule gets the API action and the request's parameters; returns (HTTP status, EC2 error code) or None
Rule = Callable[[str, Mapping[str, str]], "tuple[int, str] | None"]
#: a rewrite gets the API action, the request's parameters and moto's answer; returns the answer to send
Rewrite = Callable[[str, Mapping[str, str], bytes], bytes]


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
    seen: list[str] = field(default_factory=list)  # the API actions forwarded or refused, in order

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
                for rule in proxy.rules:
                    fault = rule(action, params)
                    if fault:
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
                upstream = http.client.HTTPConnection(target.hostname, target.port, timeout=30)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
                upstream.request("POST", self.path, body=body, headers=headers)
                reply = upstream.getresponse()
                data = reply.read()
                for rewrite in list(proxy.rewrites):
                    data = rewrite(action, params, data)
                self.send_response(reply.status)
                for key, value in reply.getheaders():
                    if key.lower() not in ("content-length", "transfer-encoding", "connection", "server", "date"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                upstream.close()

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def stop(self) -> None:
        """Stop serving."""
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
