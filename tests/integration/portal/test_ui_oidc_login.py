"""The Airflow UI logs in through the OpenID Connect provider, in a real headless browser.

A real provider (npm oidc-provider, tests/oidc) and a real Airflow API server with FAB's auth manager configured by
the one-line ``webserver_config.py`` of :mod:`airflow_cloud_paas.plugin.fab_webserver_config`. Chromium opens the
Airflow UI, is sent to the provider's sign-in page (authorization code flow), signs in, consents, and lands in the
UI logged in. The plugin's API, called from that browser session, then sees the user with the groups of their ID
token (FAB roles ``group:<g>``): alice (physics) sees carol's physics deployment and not bob's; the admin group's
member gets Airflow's Admin role and sees every deployment. A wrong password leaves the browser at the provider.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from oidc_fixtures import ADMIN_GROUP, UI_PROVIDER_NAME, fab_oidc_airflow, log_in, open_sign_in, page_fetch, sign_in
from screenshots import publish_screenshots
from waiting import until

pytestmark = pytest.mark.integration
CHROMIUM = Path("/usr/bin/chromium")
playwright = pytest.importorskip("playwright.sync_api", reason="pip install playwright (the test extra)")
pytest.importorskip("airflow.providers.fab", reason="pip install airflow-cloud-paas[fab]")
if not CHROMIUM.exists():  # pragma: no cover - `make install` installs it (system-deps)
    pytest.skip("Debian's chromium is not installed (make system-deps)", allow_module_level=True)

TEMPLATE = "tosca_definitions_version: tosca_simple_yaml_1_0\ntopology_template: {}\n"
#: (deployment id, owner, user_group) put in the store before anyone logs in
RECORDS = [("carol-physics", "carol", "physics"), ("bob-biology", "bob", "biology")]


@pytest.fixture(scope="module")
def shots(tmp_path_factory):
    folder = tmp_path_factory.mktemp("screenshots")
    yield folder
    publish_screenshots(folder, "ui_oidc_")


@pytest.fixture(scope="module")
def airflow(tmp_path_factory):
    """The provider, then Airflow's API server with FAB logging in through it; a store with two deployments."""
    home = tmp_path_factory.mktemp("fab_airflow")
    (home / "dags").mkdir()
    store_url = f"sqlite:///{home / 'cloud_paas' / 'deployments.db'}"
    from airflow_cloud_paas.store import DeploymentStore

    (home / "cloud_paas").mkdir(exist_ok=True)
    store = DeploymentStore(store_url)
    for deployment_id, owner, group in RECORDS:
        store.create_deployment(deployment_id, TEMPLATE, f"hash-{deployment_id}", {}, owner, "local",
                                user_group=group)
    # the API server alone: the logins need no scheduler, and the machine's cores are few
    with fab_oidc_airflow(home, dags_folder=home / "dags", components=("api-server",),
                          env={"CLOUD_PAAS_STORE_URL": store_url}) as server:
        yield server


def _visible(page) -> set[str]:
    status, body = page_fetch(page, "/cloud-paas/api/deployments")
    assert status == 200, body
    return {d["id"] for d in body}


def test_a_wrong_password_does_not_log_in(browser, airflow, shots):
    page = open_sign_in(browser, airflow)
    sign_in(page, "alice", "not-her-password")
    playwright.expect(page.locator("#error")).to_contain_text("Invalid user name or password")
    page.screenshot(path=str(shots / "wrong_password.png"))
    assert page.url.startswith(f"{airflow.issuer}/interaction/")
    # no Airflow session came of it: the browser's cookies open nothing
    assert not [c for c in page.context.cookies(airflow.url) if c["name"] == "_token"]
    assert page.context.request.get(f"{airflow.url}/cloud-paas/api/deployments").status == 401
    page.context.close()


def test_alice_logs_in_and_the_plugin_sees_her_groups(browser, airflow, shots):
    page = log_in(browser, airflow, "alice", shots)
    # carol's deployment shared with physics, not bob's (biology): Identity.groups == {physics}
    assert _visible(page) == {"carol-physics"}
    assert page_fetch(page, "/cloud-paas/api/deployments/carol-physics")[0] == 200
    assert page_fetch(page, "/cloud-paas/api/deployments/bob-biology")[0] == 404
    # not an admin: FAB's user list is closed to her
    assert page_fetch(page, "/auth/fab/v1/users/alice")[0] == 403
    # logging out stays logged out (the login page waits for a click, the provider's session notwithstanding)
    page.goto(f"{airflow.url}/auth/logout")
    page.wait_for_url(lambda u: u.startswith(f"{airflow.url}/auth/login"))
    playwright.expect(page.locator(f"#btn-signin-{UI_PROVIDER_NAME}")).to_be_visible()
    page.screenshot(path=str(shots / "alice_logged_out.png"))
    assert page_fetch(page, "/cloud-paas/api/deployments")[0] == 401
    # the button signs her in again through the provider's session, with no form to fill
    page.click(f"#btn-signin-{UI_PROVIDER_NAME}")
    page.wait_for_url(lambda u: u.startswith(airflow.url) and "/auth/" not in u)
    until("alice's second session", lambda: page_fetch(page, "/cloud-paas/api/deployments")[0] == 200, timeout=60)
    assert _visible(page) == {"carol-physics"}
    page.context.close()


def test_the_admin_group_gets_the_admin_role(browser, airflow, shots):
    page = log_in(browser, airflow, "admin", shots)
    assert _visible(page) == {"carol-physics", "bob-biology"}
    status, me = page_fetch(page, "/auth/fab/v1/users/admin")
    assert status == 200, me
    assert {r["name"] for r in me["roles"]} == {"Admin", f"group:{ADMIN_GROUP}"}
    # alice (the test above) was registered at her login with the default role and her group's role
    status, alice = page_fetch(page, "/auth/fab/v1/users/alice")
    assert status == 200, alice
    assert {r["name"] for r in alice["roles"]} == {"User", "group:physics"}
    page.goto(f"{airflow.url}/auth/roles/list/")
    page.wait_for_load_state("networkidle")
    page.screenshot(path=str(shots / "admin_roles.png"), full_page=True)
    page.context.close()
