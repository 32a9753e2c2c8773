"""A real OpenID Connect provider (npm ``oidc-provider``, tests/oidc/provider.js) on loopback, and tokens from it.

Users alice (physics), bob (biology), carol (physics), admin (cloud-paas-admins); password ``<name>-password``.
A browser signs in at ``<issuer>/interaction/<uid>`` (fields ``#login``, ``#password``, button ``#sign-in``; a
wrong password shows ``#error``), then consents (button ``#continue``).
``make install`` runs ``npm ci`` in tests/oidc; without Node or those modules the fixture skips, saying so.

The Airflow UI logging in through it: :func:`fab_oidc_airflow` runs Airflow with FAB's auth manager and the
``webserver_config.py`` of :mod:`airflow_cloud_paas.plugin.fab_webserver_config`; :func:`log_in` signs a user in
from a headless browser (Playwright) and :func:`page_fetch` calls Airflow's and the plugin's APIs with that session.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from waiting import free_port, until

from airflow_cloud_paas.standalone import COMPONENTS, LocalAirflow

OIDC_DIR = Path(__file__).resolve().parent / "oidc"
AUDIENCE = "urn:cloud-paas:api"
OTHER_AUDIENCE = "urn:other:api"
ADMIN_GROUP = "cloud-paas-admins"
CLI_CLIENT = ("cloud-paas-cli", "cloud-paas-cli-secret")
#: the browser login's client (authorization code flow): its redirect URIs are start_provider's redirect_uris
UI_CLIENT = ("cloud-paas-ui", "cloud-paas-ui-secret")
#: the Airflow UI's login through the provider: FAB's auth manager, the one-line webserver_config.py, FAB's name of it
FAB_AUTH_MANAGER = "airflow.providers.fab.auth_manager.fab_auth_manager.FabAuthManager"
FAB_WEBSERVER_CONFIG = "from airflow_cloud_paas.plugin.fab_webserver_config import *  # noqa: F403\n"
UI_PROVIDER_NAME = "oidc"


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


@contextmanager
def fab_oidc_airflow(home: Path, *, env: Mapping[str, str] | None = None, components: tuple[str, ...] = COMPONENTS,
                     start_timeout: float = 300, **kwargs: Any) -> Iterator[LocalAirflow]:
    """Start the provider, then Airflow with FAB's auth manager logging the UI in through it; stop both after.

    The provider's ``cloud-paas-ui`` client redirects to this Airflow (``/auth/oauth-authorized/oidc``); its admin
    group is :data:`ADMIN_GROUP`. The server's ``issuer`` is the provider's issuer URL.

    :param home: AIRFLOW_HOME (the provider's log goes there too)
    :param env: more environment variables for Airflow's processes
    :param components: the Airflow commands run (``api-server`` alone for logins; a DAG run needs the scheduler and
        the dag-processor too)
    :param start_timeout: seconds to wait for the API server (``airflow db migrate`` with FAB's tables comes first)
    :param kwargs: more :class:`~airflow_cloud_paas.standalone.LocalAirflow` arguments (``dags_folder``)
    """
    port = free_port()
    home.mkdir(parents=True, exist_ok=True)
    provider = start_provider(home / "provider.log",
                              redirect_uris=f"http://127.0.0.1:{port}/auth/oauth-authorized/{UI_PROVIDER_NAME}")
    try:
        server = LocalAirflow(home, port, auth_manager=FAB_AUTH_MANAGER, webserver_config=FAB_WEBSERVER_CONFIG,
                              components=components, start_timeout=start_timeout, **kwargs)
        server.env.update({
            "AIRFLOW_CLOUD_PAAS_OIDC_ISSUER": provider.issuer,
            "AIRFLOW_CLOUD_PAAS_OIDC_AUDIENCE": AUDIENCE,
            "AIRFLOW_CLOUD_PAAS_OIDC_ADMIN_GROUP": ADMIN_GROUP,
            "AIRFLOW_CLOUD_PAAS_OIDC_UI_CLIENT_ID": UI_CLIENT[0],
            "AIRFLOW_CLOUD_PAAS_OIDC_UI_CLIENT_SECRET": UI_CLIENT[1],
            "AIRFLOW_CLOUD_PAAS_OIDC_UI_PROVIDER_NAME": UI_PROVIDER_NAME,
            **(env or {}),
        })
        server.issuer = provider.issuer
        with server:
            yield server
    finally:
        stop_provider(provider)


def open_sign_in(browser: Any, airflow: LocalAirflow, viewport: tuple[int, int] = (1280, 800)) -> Any:
    """Open the Airflow UI in a fresh browser context; return its page once it shows the provider's sign-in form.

    :param browser: a Playwright browser
    :param airflow: a :func:`fab_oidc_airflow` server
    :param viewport: the page's width and height
    """
    from playwright.sync_api import expect

    page = browser.new_context(viewport={"width": viewport[0], "height": viewport[1]}).new_page()
    page.set_default_timeout(60_000)
    page.goto(f"{airflow.url}/")
    page.wait_for_url(lambda u: u.startswith(f"{airflow.issuer}/interaction/"))
    expect(page.locator("#password")).to_be_visible()
    return page


def sign_in(page: Any, user: str, password: str) -> None:
    """Fill the provider's sign-in form and send it."""
    page.fill("#login", user)
    page.fill("#password", password)
    page.click("#sign-in")


def log_in(browser: Any, airflow: LocalAirflow, user: str, shots: Path | None = None,
           viewport: tuple[int, int] = (1280, 800)) -> Any:
    """Log ``user`` in through the provider (consenting when asked); return the page, back in the Airflow UI.

    :param browser: a Playwright browser (a fresh context is opened in it)
    :param airflow: a :func:`fab_oidc_airflow` server
    :param user: one of the provider's users (password ``<user>-password``)
    :param shots: a folder for screenshots of the sign-in, consent and landing pages (``<user>_*.png``); None: none
    :param viewport: the page's width and height
    """
    from playwright.sync_api import expect

    page = open_sign_in(browser, airflow, viewport)
    if shots is not None:
        page.screenshot(path=str(shots / f"{user}_sign_in.png"))
    sign_in_url = page.url
    sign_in(page, user, f"{user}-password")
    # on to the consent page (the first login of a user in this provider session), or straight back to Airflow
    page.wait_for_url(lambda u: u.startswith(airflow.url) or (
        u.startswith(f"{airflow.issuer}/interaction/") and u != sign_in_url and not u.endswith("/login")))
    if page.url.startswith(airflow.issuer):
        expect(page.locator("#continue")).to_be_visible()
        if shots is not None:
            page.screenshot(path=str(shots / f"{user}_consent.png"))
        page.click("#continue")
    page.wait_for_url(lambda u: u.startswith(airflow.url) and "/auth/" not in u)
    until(f"{user}'s Airflow UI session", lambda: page_fetch(page, "/api/v2/monitor/health")[0] == 200 and
          page_fetch(page, "/cloud-paas/api/deployments")[0] == 200, timeout=60)
    page.wait_for_load_state("networkidle")
    if shots is not None:
        page.screenshot(path=str(shots / f"{user}_airflow_ui.png"))
    return page


def page_fetch(page: Any, path: str) -> tuple[int, Any]:
    """GET ``path`` from the page itself (the browser's cookies); return its status and JSON (or text)."""
    return tuple(page.evaluate("""async (path) => {
        const r = await fetch(path, {headers: {Accept: 'application/json'}});
        const text = await r.text();
        try { return [r.status, JSON.parse(text)]; } catch (e) { return [r.status, text]; }
    }""", path))
