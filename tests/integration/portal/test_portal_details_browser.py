"""Deployment details, the scale action and failed attempts in a real headless browser inside a real Airflow.

One Airflow standalone (scheduler, dag-processor, API server, LocalExecutor, simple auth manager) serves the
module; Debian's Chromium driven by Playwright logs in and opens the portal (the plugin's React app).

* An elastic pool (``elastic_pool.yaml``: a scalable group of the local backend's hosts with an
  ElasticScaling policy) is deployed into the Airflow's own deployment store and scaled by the REAL elastic
  engine (:class:`~airflow_cloud_paas.scaling.elastic.ElasticScaler` with the CLUES policy, applying every
  decision through ``Deployer.rescale`` on the local backend). Only the service it reads is simulated: a
  small batch queue (:class:`ToyQueue`) where jobs wait, start on a worker with free cores once the worker
  has booted, and end. The rounds run on the probe's clock, one minute apart, ending now. The details page
  must plot the pool's size against the queued jobs with each decision marked and explained.
* The deployments table's "Scale" action on that kind of deployment triggers the real scale DAG, which
  resizes the group on the local backend; the row reaches UPDATE_COMPLETE with the new instance count.
* An XCache (``templates/xcache.yaml``: a real XRootD origin and XCache on loopback, run by the local backend's
  drivers) is read through a few times; the real ``xcache_ingest_access_log`` DAG stores the accesses its
  ``.cinfo`` files remember in the access log, through an ``xrootd`` connection whose ``cache_dir`` is the
  deployment's; the details page plots the byte-hit ratio and the bytes written over time.
* A Docker deployment of an image the registry does not have (the FAKE Docker Engine of
  tests/unit/backends/docker_fixtures.py: no Docker engine can run here) fails; the table shows it failed
  and why.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
import requests
from screenshots import publish_screenshots
from waiting import free_port, until

from airflow_cloud_paas.standalone import LocalAirflow

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[3]
CHROMIUM = Path("/usr/bin/chromium")
BUNDLE = REPO / "airflow_cloud_paas" / "plugin" / "portal_dist" / "portal.js"
TEMPLATE = Path(__file__).with_name("elastic_pool.yaml")
playwright = pytest.importorskip("playwright.sync_api", reason="pip install playwright (the test extra)")
if not CHROMIUM.exists():  # pragma: no cover - `make install` installs it (system-deps)
    pytest.skip("Debian's chromium is not installed (make system-deps)", allow_module_level=True)
if not BUNDLE.exists():  # pragma: no cover - `make install` builds it
    pytest.skip("the portal bundle is not built (make portal-ui)", allow_module_level=True)

from airflow_cloud_paas.backends.local import LocalBackend  # noqa: E402
from airflow_cloud_paas.deployer import Deployer  # noqa: E402
from airflow_cloud_paas.request import DeploymentRequest  # noqa: E402
from airflow_cloud_paas.scaling.elastic import SCALE_EVENT, ElasticScaler, elastic_targets_of  # noqa: E402
from airflow_cloud_paas.scaling.policy import QueuedJob, WorkerState, policy_from_name  # noqa: E402
from airflow_cloud_paas.scaling.probe import ClusterProbe, Observation, WorkerView  # noqa: E402
from airflow_cloud_paas.store import DeploymentStore  # noqa: E402
from airflow_cloud_paas.tosca import load_topology  # noqa: E402


class ToyQueue(ClusterProbe):
    """A batch queue the elastic engine reads: FIFO jobs of ``cpus`` cores that run ``rounds`` rounds.

    A worker the queue has not seen before is booting for one round, then takes jobs (first fit, the
    lowest index first) until its cores are used; a drained worker takes no more.

    :param cores: each worker's cores
    """

    service = "spark"

    def __init__(self, cores: int = 2) -> None:
        self.cores = cores
        self.queued: list[tuple[int, int, float]] = []  # cpus, rounds, submitted
        self.running: dict[int, list[list[int]]] = {}  # worker index -> [cpus, rounds left]
        self.booted_at: dict[int, float] = {}
        self.draining: set[int] = set()

    def submit(self, jobs: int, cpus: int, rounds: int, now: float) -> None:
        self.queued += [(cpus, rounds, now)] * jobs

    def tick(self) -> None:
        """One round passes: running jobs progress, finished ones free their cores."""
        for jobs in self.running.values():
            for job in jobs:
                job[1] -= 1
            jobs[:] = [j for j in jobs if j[1] > 0]

    def observe(self, workers: Sequence, now: float) -> Observation:
        indices = sorted(r.index for r in workers)
        for gone in self.draining - set(indices):  # retired: a later worker with its index boots anew
            self.draining.discard(gone)
            self.booted_at.pop(gone, None)
            self.running.pop(gone, None)
        for index in indices:
            self.booted_at.setdefault(index, now)
        ready = [i for i in indices if self.booted_at[i] < now]
        for index in ready:  # dispatch, oldest job first
            jobs = self.running.setdefault(index, [])
            while self.queued and index not in self.draining:
                cpus, rounds, _ = self.queued[0]
                if sum(j[0] for j in jobs) + cpus > self.cores:
                    break
                jobs.append([cpus, rounds])
                self.queued.pop(0)
        views = {}
        for index in ready:
            used = sum(j[0] for j in self.running.get(index, []))
            views[index] = WorkerView(WorkerState.BUSY if used else WorkerState.IDLE, self.cores, used)
        return Observation(tuple(QueuedJob(c, t) for c, _, t in self.queued), views)

    def drain(self, worker) -> None:
        self.draining.add(worker.index)


# jobs submitted before a round: round -> (jobs, cpus, rounds each runs)
WORKLOAD = {0: (3, 2, 4), 1: (2, 2, 3), 9: (3, 2, 2)}
ROUNDS = 15
#: the screenshots the README shows (the others stay in the test's temporary folder)
README_SHOTS = ("elastic_plot.png", "xcache_plot.png")


@pytest.fixture(scope="module")
def airflow(tmp_path_factory, docker_engine):
    server = LocalAirflow(tmp_path_factory.mktemp("standalone"), free_port(), dags_folder=REPO / "dags")
    server.env["DOCKER_HOST"] = docker_engine.url
    with server:
        yield server


@pytest.fixture(scope="module")
def store(airflow):
    """The deployment store and local backend of the Airflow's ``cloud_paas_default`` connection."""
    store = DeploymentStore(f"sqlite:///{airflow.home / 'cloud_paas' / 'deployments.db'}")
    return store, LocalBackend(airflow.home / "cloud_paas" / "work")


@pytest.fixture(scope="module")
def shots(tmp_path_factory):
    folder = tmp_path_factory.mktemp("screenshots")
    yield folder
    publish_screenshots(folder, "portal_", README_SHOTS)


@pytest.fixture(scope="module")
def browser(airflow):
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture
def page(browser, airflow):
    """A page logged in through the simple auth manager's own form, on the portal's deployments."""
    user, password = airflow.credentials()
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(30_000)
    page.goto(f"{airflow.url}/")
    page.wait_for_selector("input[type=password]")
    page.locator("input:not([type=password])").first.fill(user)
    page.locator("input[type=password]").fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(lambda u: "login" not in u, timeout=30_000)
    yield page
    page.close()


def _deployments(page, airflow):
    page.goto(f"{airflow.url}/plugin/cloud_paas_my_deployments")
    return page.get_by_test_id("deployments")


def _dags_parsed(airflow, *dag_ids: str) -> None:
    headers = _headers(airflow)
    until(f"DAGs {dag_ids} to be parsed", lambda: all(
        requests.get(f"{airflow.url}/api/v2/dags/{d}", headers=headers, timeout=10).status_code == 200
        for d in dag_ids), 180, interval=2)


def _headers(airflow) -> dict[str, str]:
    user, password = airflow.credentials()
    token = requests.post(f"{airflow.url}/auth/token", json={"username": user, "password": password},
                          timeout=10).json()["access_token"]
    return {"Authorization": f"Bearer {token}"}


def _deploy_pool(store, airflow, deployment_id: str) -> Deployer:
    """Deploy the elastic pool (one worker) as the logged-in user, into the Airflow's store and backend."""
    db, backend = store
    user, _ = airflow.credentials()
    request = DeploymentRequest.build(load_topology(TEMPLATE), deployment_id, {"worker_count": 1},
                                      backend="local", owner=user, actor="browser-test")
    deployer = Deployer(request, db, backend)
    deployer.create_all()
    assert db.get(deployment_id).status == "CREATE_COMPLETE"
    return deployer


def test_elastic_deployment_plots_size_against_queued_demand_with_decisions(airflow, store, page, shots):
    db, backend = store
    deployer = _deploy_pool(store, airflow, "elastic-pool")
    (target,) = elastic_targets_of(deployer.topology, "elastic-pool", {})
    queue = ToyQueue(cores=target.limits["node_cores"])
    start = time.time() - ROUNDS * 60
    clock = [start]
    queue.booted_at[0] = start - 60  # the first worker was up before the first round
    added = retired = 0
    for round_no in range(ROUNDS):
        clock[0] = start + 60 * round_no
        if round_no in WORKLOAD:
            queue.submit(*WORKLOAD[round_no], now=clock[0])
        # a new scaler per round, as each scheduled DAG run is a new process: its state comes from the history
        policy = policy_from_name(target.policy, **target.limits)
        decision = ElasticScaler(deployer, target.node_name, queue, policy, clock=lambda: clock[0]).run_once()
        added += decision.add
        retired += len(decision.retire)
        queue.tick()
    rounds = [e for e in db.events("elastic-pool") if e.kind == SCALE_EVENT]
    assert len(rounds) == ROUNDS and added >= 3 and retired >= 3, (added, retired)
    changes = [e for e in rounds if e.data["applied"]["added"] or e.data["applied"]["retired"]]
    assert max(e.data["snapshot"]["queued_jobs"] for e in rounds) >= 3
    instances = len(backend.describe("elastic-pool", "workers"))

    expect = playwright.expect
    table = _deployments(page, airflow)
    row = table.get_by_test_id("deployment-elastic-pool")
    expect(row.get_by_test_id("status")).to_have_text("UPDATE_COMPLETE")
    expect(row.get_by_test_id("count-workers")).to_have_text(f"workers: {instances} instance(s)")
    row.get_by_role("button", name="Details").click()
    chart = page.get_by_test_id("elastic-chart-workers")
    expect(chart).to_contain_text(f"{ROUNDS} scaling rounds")
    plot = chart.get_by_test_id("elastic-plot")
    # both series are drawn: the size as steps, the queue as a line through every round
    size = plot.get_by_test_id("series-size").get_attribute("d")
    queued = plot.get_by_test_id("series-queued").get_attribute("d")
    assert size.startswith("M ") and " H " in size and " V " in size
    assert queued.count("L ") == ROUNDS - 1
    # one marker per decision that changed the size, its reasons in the SVG title (shown on hover) and listed
    markers = plot.get_by_test_id("scale-marker")
    expect(markers).to_have_count(len(changes))
    first_title = markers.first.locator("title").text_content()
    assert "queued job(s)" in first_title and "exceed" in first_title, first_title
    decisions = chart.get_by_test_id("scale-decisions").locator("li")
    expect(decisions).to_have_count(len(changes))
    listed = " ".join(decisions.all_inner_texts())
    assert re.search(r"\+\d+ \(workers? [\d, ]+\)", listed) and re.search(r"-\d+ \(workers? [\d, ]+\)", listed)
    assert "idle_time_s=120" in listed  # a retirement says why
    markers.first.hover()
    chart.scroll_into_view_if_needed()
    chart.screenshot(path=str(shots / "elastic_plot.png"))
    page.screenshot(path=str(shots / "elastic_details.png"), full_page=True)
    # the chart follows the Airflow UI's theme (its colours are the theme's variables and currentColor)
    page.emulate_media(color_scheme="dark")
    chart.screenshot(path=str(shots / "elastic_plot_dark.png"))
    page.emulate_media(color_scheme="light")
    # the event history lists the rounds with their summaries
    page.get_by_test_id("details").get_by_role("button", name="events").click()
    expect(page.get_by_test_id("events")).to_contain_text(SCALE_EVENT)


def test_scale_action_runs_the_scale_dag_until_the_new_count(airflow, store, page, shots):
    db, backend = store
    _dags_parsed(airflow, "cloud_paas_scale_deployment")
    _deploy_pool(store, airflow, "pool-scaled")
    expect = playwright.expect
    table = _deployments(page, airflow)
    row = table.get_by_test_id("deployment-pool-scaled")
    expect(row.get_by_test_id("count-workers")).to_have_text("workers: 1 instance(s)")
    page.once("dialog", lambda dialog: dialog.accept("3"))
    row.get_by_role("button", name="Scale workers").click()
    expect(page.get_by_test_id("action-message")).to_contain_text("triggered cloud_paas_scale_deployment")
    expect(row.get_by_test_id("status")).to_have_text("UPDATE_COMPLETE", timeout=240_000)
    expect(row.get_by_test_id("count-workers")).to_have_text("workers: 3 instance(s)")
    page.screenshot(path=str(shots / "scaled.png"), full_page=True)
    assert sorted(r.index for r in backend.describe("pool-scaled", "workers")) == [0, 1, 2]
    assert db.get("pool-scaled").status_reason == "workers scaled to 3"


def test_a_failed_attempt_appears_with_its_cause(airflow, page, docker_engine, shots):
    _dags_parsed(airflow, "cloud_paas_docker_app")
    expect = playwright.expect
    page.goto(f"{airflow.url}/plugin/cloud_paas_catalogue")
    page.get_by_test_id("app-docker_app").get_by_role("button", name="Deploy").click()
    form = page.get_by_test_id("deploy-form")
    for name, value in {"deployment_id": "missing-image", "cpus": "1", "memory": "512 MB",
                        "image": "nosuch/app:1.0", "data_path": "/data"}.items():
        form.locator(f"input[name={name}]").fill(value)
    form.get_by_role("button", name="Submit").click()
    row = page.get_by_test_id("deployment-missing-image")
    expect(row.get_by_test_id("status")).to_have_text("CREATE_FAILED", timeout=240_000)
    # the cause, in the engine's own words
    expect(row.get_by_test_id("reason")).to_contain_text("nosuch/app")
    expect(row.get_by_test_id("reason")).to_contain_text("repository does not exist")
    page.screenshot(path=str(shots / "failed_attempt.png"), full_page=True)
    assert docker_engine.running() == []


def _xrootd_missing() -> str | None:
    if shutil.which("xrootd") is None or shutil.which("xrdpfc_print") is None:
        return "XRootD is not installed (apt-get install xrootd-server xrootd-server-plugins xrootd-client)"
    try:
        import XRootD.client  # noqa: F401
    except ImportError:
        return "the XRootD Python client is not installed (pip install xrootd)"
    return None


@pytest.fixture
def xcache(airflow, store, monkeypatch):
    """An XCache deployment (origin and cache on loopback) in the Airflow's store, deleted afterwards."""
    from airflow_cloud_paas.services.xcache.local import ORIGIN_TYPE, XCACHE_TYPE, XCacheDriver, XRootDOriginDriver

    if _xrootd_missing():
        pytest.skip(_xrootd_missing())
    db, _ = store
    # xrootd runs as the xrootd user: its directories live under a root it can enter (tmp_path is 0700)
    runtime_root = Path(tempfile.mkdtemp(prefix="cloud-paas-portal-xrootd-", dir="/tmp"))
    runtime_root.chmod(0o755)
    drivers = {ORIGIN_TYPE: XRootDOriginDriver(runtime_root), XCACHE_TYPE: XCacheDriver(runtime_root)}
    backend = LocalBackend(airflow.home / "cloud_paas" / "work", drivers=drivers, ready_timeout=60)
    user, _ = airflow.credentials()
    request = DeploymentRequest.build(
        load_topology(REPO / "airflow_cloud_paas" / "templates" / "xcache.yaml"), "xcache-portal",
        {"exports": ["/store"], "block_size": "64k", "cache_size": "1g"}, backend="local", owner=user,
        actor="browser-test")
    deployer = Deployer(request, db, backend)
    try:
        deployer.create_all()
        yield deployer
    finally:
        deployer.begin_delete()
        deployer.delete_all()
        deployer.complete_delete()
        shutil.rmtree(runtime_root, ignore_errors=True)


def test_an_xcache_deployment_plots_byte_hit_ratio_and_bytes_written(airflow, xcache, page, shots, monkeypatch):
    from airflow_cloud_paas.hooks.xrootd import XRootDHook
    from airflow_cloud_paas.services.xcache.monitor import CacheDirectory

    (origin,) = xcache.backend.describe(xcache.deployment_id, "xrootd_origin")
    (cache,) = xcache.backend.describe(xcache.deployment_id, "xcache")
    sizes = {"a.bin": 2 << 20, "b.bin": 1 << 20, "c.bin": 3 << 20}
    for name, size in sizes.items():
        target = Path(origin.attributes["data_dir"]) / "store" / name
        target.write_bytes(os.urandom(size))
        target.chmod(0o644)
    # the cache's connection, as an operator would add it for the smart manager's DAGs (cache_dir: its disk)
    connection = {"conn_type": "xrootd", "host": "127.0.0.1", "port": int(cache.attributes["port"]),
                  "extra": XRootDHook.connection_extra(cache.attributes)}
    monkeypatch.setenv("AIRFLOW_CONN_XROOTD_DEFAULT", json.dumps(connection))
    headers = _headers(airflow)
    answer = requests.post(f"{airflow.url}/api/v2/connections", headers=headers, timeout=10, json={
        "connection_id": "xrootd_default", "conn_type": "xrootd", "host": "127.0.0.1",
        "port": connection["port"], "extra": json.dumps(connection["extra"])})
    assert answer.status_code in (200, 201), answer.text

    # users read: misses first (written to the cache's disk), then hits; each access is remembered on close
    hook, disk = XRootDHook("xrootd_default"), CacheDirectory(cache.attributes["cache_dir"])
    reads = 0
    for batch in (["a.bin"], ["a.bin", "b.bin"], ["a.bin", "b.bin"], ["c.bin", "a.bin"], ["a.bin", "b.bin", "c.bin"]):
        for name in batch:
            assert len(hook.read(f"/store/{name}")) == sizes[name]
        reads += len(batch)
        records = until(f"{reads} accesses in the cache's .cinfo files",
                        lambda n=reads: len(found := disk.access_records()) >= n and found, 60)
        # XRootD stamps an access to the second: the next batch starts in a later second, its own bucket
        last = max(r.time_s for r in records)
        until("XRootD's clock to pass the batch's second", lambda t=last: time.time() >= t + 1, 5, interval=0.05)

    # the real ingest DAG stores them in the access log (in the deployment store's database)
    _dags_parsed(airflow, "xcache_ingest_access_log")
    requests.patch(f"{airflow.url}/api/v2/dags/xcache_ingest_access_log", headers=headers, timeout=10,
                   json={"is_paused": False}).raise_for_status()
    run = requests.post(f"{airflow.url}/api/v2/dags/xcache_ingest_access_log/dagRuns", headers=headers,
                        timeout=10, json={"logical_date": None}).json()
    run_url = f"{airflow.url}/api/v2/dags/xcache_ingest_access_log/dagRuns/{run['dag_run_id']}"

    def ended() -> str | None:
        found = requests.get(run_url, headers=headers, timeout=10).json()["state"]
        return found if found in ("success", "failed") else None

    state = until("the ingest run to end", ended, 240, interval=2)
    assert state == "success"

    expect = playwright.expect
    row = _deployments(page, airflow).get_by_test_id("deployment-xcache-portal")
    expect(row.get_by_test_id("status")).to_have_text("CREATE_COMPLETE")
    row.get_by_role("button", name="Details").click()
    chart = page.get_by_test_id("cache-chart")
    expect(chart.get_by_test_id("cache-plot")).to_be_visible(timeout=60_000)
    totals = chart.get_by_test_id("cache-totals")
    expect(totals).to_contain_text("xrootd_default")
    # 19 MiB read; each file's first access fetched it whole (6 MiB written), the rest came from the disk
    expect(totals).to_contain_text("19 MiB read, 68% from the cache; 6 MiB written")
    assert chart.get_by_test_id("series-ratio").get_attribute("d").startswith("M ")
    expect(chart.get_by_test_id("series-written").locator("rect")).not_to_have_count(0)
    chart.scroll_into_view_if_needed()
    chart.screenshot(path=str(shots / "xcache_plot.png"))
