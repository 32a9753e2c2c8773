"""A real OpenID Connect provider (npm ``oidc-provider``, tests/oidc/provider.js) on loopback, and tokens from it.

Users alice (physics), bob (biology), carol (physics), admin (cloud-paas-admins); password ``<name>-password``.
``make install`` runs ``npm ci`` in tests/oidc; without Node or those modules the fixture skips, saying so.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from waiting import free_port, until

OIDC_DIR = Path(__file__).resolve().parent / "oidc"
AUDIENCE = "urn:cloud-paas:api"
OTHER_AUDIENCE = "urn:other:api"
ADMIN_GROUP = "cloud-paas-admins"
CLI_CLIENT = ("cloud-paas-cli", "cloud-paas-cli-secret")


@dataclass
class OidcProvider:
    """A running provider: its issuer URL and how to get tokens from it."""

    issuer: str
    process: subprocess.Popen

    def password_token(self, user: str, resource: str = AUDIENCE) -> str:
        """Return an access token for ``user`` (password grant)."""
        resp = requests.post(f"{self.issuer}/token", auth=CLI_CLIENT, timeout=10, data={
            "grant_type": "password", "username": user, "password": f"{user}-password", "resource": resource})
        resp.raise_for_status()
        return resp.json()["access_token"]

    def client_token(self, client_id: str, secret: str, resource: str = AUDIENCE) -> str:
        """Return an access token of a client (client credentials grant)."""
        resp = requests.post(f"{self.issuer}/token", auth=(client_id, secret), timeout=10, data={
            "grant_type": "client_credentials", "scope": "api", "resource": resource})
        resp.raise_for_status()
        return resp.json()["access_token"]


def start_provider(log_path: Path, redirect_uris: str = "") -> OidcProvider:
    """Start the provider on a free port (its own process group) and wait until it serves its metadata."""
    node = shutil.which("node")
    if node is None or not (OIDC_DIR / "node_modules" / "oidc-provider").is_dir():
        pytest.skip("the test OIDC provider needs Node.js and `npm ci` in tests/oidc (`make install` runs it)")
    port = free_port()
    env = {**os.environ, "PORT": str(port), "OIDC_AUDIENCE": AUDIENCE, "OIDC_OTHER_AUDIENCE": OTHER_AUDIENCE}
    if redirect_uris:
        env["OIDC_REDIRECT_URIS"] = redirect_uris
    log = log_path.open("w")
    process = subprocess.Popen([node, "provider.js"], cwd=OIDC_DIR, env=env, stdout=log, stderr=subprocess.STDOUT,
                               start_new_session=True)
    issuer = f"http://127.0.0.1:{port}"

    def serving() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"the OIDC provider exited: {log_path.read_text()}")
        try:
            return requests.get(f"{issuer}/.well-known/openid-configuration", timeout=2).ok
        except requests.RequestException:
            return False

    until("the OIDC provider to serve its metadata", serving, timeout=60, interval=0.2)
    return OidcProvider(issuer=issuer, process=process)


def stop_provider(provider: OidcProvider) -> None:
    """Stop the provider's process group."""
    try:
        os.killpg(provider.process.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        provider.process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(provider.process.pid, signal.SIGKILL)
        provider.process.wait(timeout=10)


@pytest.fixture(scope="module")
def oidc_provider(tmp_path_factory):
    """A real OIDC provider for the module's tests."""
    provider = start_provider(tmp_path_factory.mktemp("oidc") / "provider.log")
    try:
        yield provider
    finally:
        stop_provider(provider)
