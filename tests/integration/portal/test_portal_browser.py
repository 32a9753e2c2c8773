"""The portal in a real headless browser (Debian's Chromium driven by Playwright) inside a real Airflow.

Airflow runs with FAB's auth manager logging the UI in through a real OpenID Connect provider (tests/oidc), and the
components a DAG run needs (scheduler with the LocalExecutor, dag-processor, API server). The browser logs alice in
at the provider's sign-in form, opens the catalogue (the plugin's React app), fills the "Execute your Docker image"
form, sees the deployment appear and complete (owned by alice, the ID token's subject), opens its details and
deletes it: the portal triggers the DAGs through Airflow's REST API with her session, as FAB's default role (User).
The Docker backend talks to the FAKE Docker Engine of tests/unit/backends/docker_fixtures.py (a stand-in at the
Engine HTTP API: no Docker engine can run here), served on loopback to the task processes through ``DOCKER_HOST``.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import quote

import pytest
import requests
from oidc_fixtures import fab_oidc_airflow, log_in, page_fetch
from screenshots import publish_screenshots
from waiting import until

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[3]
CHROMIUM = Path("/usr/bin/chromium")
BUNDLE = REPO / "airflow_cloud_paas" / "plugin" / "portal_dist" / "portal.js"
playwright = pytest.importorskip("playwright.sync_api", reason="pip install playwright (the test extra)")
pytest.importorskip("airflow.providers.fab", reason="pip install airflow-cloud-paas[fab]")
if not CHROMIUM.exists():  # pragma: no cover - `make install` installs it (system-deps)
    pytest.skip("Debian's chromium is not installed (make system-deps)", allow_module_level=True)
if not BUNDLE.exists():  # pragma: no cover - `make install` builds it
    pytest.skip("the portal bundle is not built (make portal-ui)", allow_module_level=True)

DEPLOYMENT = "rstudio-1"


@pytest.fixture(scope="module")
def airflow(tmp_path_factory, docker_engine):
    # no triggerer: these DAGs defer nothing, and the machine's cores are few
    with fab_oidc_airflow(tmp_path_factory.mktemp("fab_airflow"), dags_folder=REPO / "dags",
                          components=("scheduler", "dag-processor", "api-server"),
                          env={"DOCKER_HOST": docker_engine.url}) as server:
        yield server


def test_catalogue_form_deployments_details_delete(airflow, docker_engine, browser, tmp_path):
    # the catalogue API answers logged-in users only
    assert requests.get(f"{airflow.url}/cloud-paas-portal/api/catalogue", timeout=10).status_code == 401
    shots = tmp_path / "screenshots"
    shots.mkdir()
    expect = playwright.expect

    # log in through the OIDC provider's sign-in form: alice, registered by FAB with its default role (User)
    page = log_in(browser, airflow, "alice", viewport=(1400, 900))
    page.set_default_timeout(30_000)
    # the DAGs read with her session: FAB's /auth/token takes only users with a password in FAB's DB, and a user
    # who logs in through the provider has none
    until("the portal's DAGs to be parsed", lambda: all(
        page_fetch(page, f"/api/v2/dags/{d}")[0] == 200
        for d in ("cloud_paas_docker_app", "cloud_paas_delete_deployment")), 180, interval=2)
    assert page_fetch(page, "/ui/auth/me")[1]["username"] == "alice"

    # the catalogue: one card per packaged template, inside the Airflow UI (its nav entry)
    page.goto(f"{airflow.url}/plugin/cloud_paas_catalogue")
    card = page.get_by_test_id("app-docker_app")
    expect(card).to_contain_text("Execute your Docker image")
    expect(page.get_by_test_id("app-spark_cluster")).to_be_visible()
    page.screenshot(path=str(shots / "catalogue.png"), full_page=True)
    # Airflow's nav shows who is logged in: alice, the ID token's subject
    page.get_by_role("button", name="User", exact=True).click()
    expect(page.get_by_text("Signed in as")).to_be_visible()
    expect(page.get_by_text(re.compile(r"^alice \(id: \w+\)$"))).to_be_visible()
    page.screenshot(path=str(shots / "signed_in_as.png"))
    page.keyboard.press("Escape")
    expect(page.get_by_text("Signed in as")).to_be_hidden()

    # the Docker form: exactly the seed portlet's fields; bad values refused with the constraint's words
    card.get_by_role("button", name="Deploy").click()
    form = page.get_by_test_id("deploy-form")
    names = form.locator("input").evaluate_all("els => els.map(e => e.name)")
    assert names == ["deployment_id", "cpus", "memory", "image", "data_path"]
    form.locator("input[name=cpus]").fill("two")
    form.locator("input[name=memory]").fill("lots")
    form.get_by_role("button", name="Submit").click()
    expect(form.get_by_test_id("field-error").first).to_be_visible()
    errors = form.get_by_test_id("field-error").all_inner_texts()
    assert "Job identifier is required" in errors
    assert "CPUs must be a number" in errors
    assert any("unit" in e for e in errors), errors
    page.screenshot(path=str(shots / "docker_form_errors.png"), full_page=True)
    form.locator("input[name=deployment_id]").fill(DEPLOYMENT)
    form.locator("input[name=cpus]").fill("2")
    form.locator("input[name=memory]").fill("1 GB")
    form.locator("input[name=image]").fill("rocker/rstudio")
    form.locator("input[name=data_path]").fill("/home/rstudio")
    expect(form.get_by_test_id("field-error")).to_have_count(0)
    page.screenshot(path=str(shots / "docker_form.png"), full_page=True)
    form.get_by_role("button", name="Submit").click()

    # the deployments table: it appears, progresses and completes, with its endpoint as host:port
    row = page.get_by_test_id(f"deployment-{DEPLOYMENT}")
    expect(row).to_be_visible(timeout=120_000)
    expect(row.get_by_test_id("status")).to_have_text("CREATE_COMPLETE", timeout=240_000)
    expect(row.get_by_test_id("progress")).to_have_text("1/1 nodes")
    expect(row.get_by_test_id("outputs")).to_have_text(re.compile(r"^[\w.-]+:\d+$"))
    page.screenshot(path=str(shots / "deployments.png"), full_page=True)
    running = docker_engine.running()
    assert [c.config["Image"] for c in running] == ["rocker/rstudio"]
    assert running[0].host_config.get("NanoCpus") == 2_000_000_000
    # alice triggered the run (her session, through Airflow's REST API), so she owns the deployment
    status, record = page_fetch(page, f"/cloud-paas/api/deployments/{DEPLOYMENT}")
    assert status == 200, record
    assert record["owner"] == "alice"
    status, run = page_fetch(page, f"/api/v2/dags/{record['dag_id']}/dagRuns/{quote(record['run_id'], safe='')}")
    assert status == 200, run
    assert run["triggering_user_name"] == "alice"

    # details: its owner, resources with states, the event history
    row.get_by_role("button", name="Details").click()
    details = page.get_by_test_id("details")
    expect(details.get_by_text(re.compile(r"^1/1 nodes · \S+ · alice$"))).to_be_visible()
    expect(details.get_by_test_id("resources")).to_contain_text("RUNNING")
    details.get_by_role("button", name="events").click()
    expect(details.get_by_test_id("events")).to_contain_text("CREATE_COMPLETE")
    page.screenshot(path=str(shots / "details.png"), full_page=True)

    # delete (confirmed): the delete DAG runs and the container is gone
    details.get_by_role("button", name="My deployments").click()
    page.once("dialog", lambda dialog: dialog.accept())
    row.get_by_role("button", name="Delete").click()
    expect(row.get_by_test_id("status")).to_have_text("DELETE_COMPLETE", timeout=240_000)
    page.context.close()
    assert docker_engine.running() == []

    publish_screenshots(shots, "portal_", ("catalogue.png", "docker_form.png", "deployments.png", "details.png"))
