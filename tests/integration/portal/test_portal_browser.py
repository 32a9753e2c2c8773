"""The portal in a real headless browser (Debian's Chromium driven by Playwright) inside a real Airflow.

Airflow runs standalone (scheduler, dag-processor, API server, LocalExecutor) with the simple auth manager;
the browser logs in, opens the catalogue (the plugin's React app), fills the "Execute your Docker image"
form, sees the deployment appear and complete, opens its details and deletes it. The Docker backend talks to
the FAKE Docker Engine of tests/unit/backends/docker_fixtures.py (a stand-in at the Engine HTTP API: no Docker
engine can run here), served on loopback to the task processes through ``DOCKER_HOST``.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
import requests
from unit.backends.docker_fixtures import FakeDockerEngine
from waiting import free_port, until

from airflow_cloud_paas.standalone import LocalAirflow

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[3]
CHROMIUM = Path("/usr/bin/chromium")
BUNDLE = REPO / "airflow_cloud_paas" / "plugin" / "portal_dist" / "portal.js"
playwright = pytest.importorskip("playwright.sync_api", reason="pip install playwright (the test extra)")
if not CHROMIUM.exists():  # pragma: no cover - `make install` installs it (system-deps)
    pytest.skip("Debian's chromium is not installed (make system-deps)", allow_module_level=True)
if not BUNDLE.exists():  # pragma: no cover - `make install` builds it
    pytest.skip("the portal bundle is not built (make portal-ui)", allow_module_level=True)

DEPLOYMENT = "rstudio-1"


@pytest.fixture(scope="module")
def docker_engine():
    engine = FakeDockerEngine(registry=["rocker/rstudio"]).start()
    yield engine
    engine.stop()


@pytest.fixture(scope="module")
def airflow(tmp_path_factory, docker_engine):
    server = LocalAirflow(tmp_path_factory.mktemp("standalone"), free_port(), dags_folder=REPO / "dags")
    server.env["DOCKER_HOST"] = docker_engine.url
    with server:
        yield server


def _token(server: LocalAirflow) -> dict[str, str]:
    user, password = server.credentials()
    token = requests.post(f"{server.url}/auth/token", json={"username": user, "password": password},
                          timeout=10).json()["access_token"]
    return {"Authorization": f"Bearer {token}"}


def test_catalogue_form_deployments_details_delete(airflow, docker_engine, tmp_path):
    headers = _token(airflow)
    until("the portal's DAGs to be parsed", lambda: all(
        requests.get(f"{airflow.url}/api/v2/dags/{d}", headers=headers, timeout=10).status_code == 200
        for d in ("cloud_paas_docker_app", "cloud_paas_delete_deployment")), 180, interval=2)
    # the catalogue API answers logged-in users only
    assert requests.get(f"{airflow.url}/cloud-paas-portal/api/catalogue", timeout=10).status_code == 401

    shots = tmp_path / "screenshots"
    shots.mkdir()
    user, password = airflow.credentials()
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.set_default_timeout(30_000)
        expect = playwright.expect

        # log in through the simple auth manager's own form
        page.goto(f"{airflow.url}/")
        page.wait_for_selector("input[type=password]")
        page.locator("input:not([type=password])").first.fill(user)
        page.locator("input[type=password]").fill(password)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(lambda u: "login" not in u, timeout=30_000)

        # the catalogue: one card per packaged template, inside the Airflow UI (its nav entry)
        page.goto(f"{airflow.url}/plugin/cloud_paas_catalogue")
        card = page.get_by_test_id("app-docker_app")
        expect(card).to_contain_text("Execute your Docker image")
        expect(page.get_by_test_id("app-spark_cluster")).to_be_visible()
        page.screenshot(path=str(shots / "catalogue.png"), full_page=True)

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

        # details: resources with states, the event history
        row.get_by_role("button", name="Details").click()
        details = page.get_by_test_id("details")
        expect(details.get_by_test_id("resources")).to_contain_text("RUNNING")
        details.get_by_role("button", name="events").click()
        expect(details.get_by_test_id("events")).to_contain_text("CREATE_COMPLETE")
        page.screenshot(path=str(shots / "details.png"), full_page=True)

        # delete (confirmed): the delete DAG runs and the container is gone
        details.get_by_role("button", name="My deployments").click()
        page.once("dialog", lambda dialog: dialog.accept())
        row.get_by_role("button", name="Delete").click()
        expect(row.get_by_test_id("status")).to_have_text("DELETE_COMPLETE", timeout=240_000)
        browser.close()
    assert docker_engine.running() == []

    # the README's screenshots are refreshed on request only: a test run leaves the checkout as it was
    docs = os.environ.get("CLOUD_PAAS_SCREENSHOTS_DIR")
    if docs:
        Path(docs).mkdir(parents=True, exist_ok=True)
        for name in ("catalogue.png", "docker_form.png", "deployments.png", "details.png"):
            shutil.copy(shots / name, Path(docs) / f"portal_{name}")
