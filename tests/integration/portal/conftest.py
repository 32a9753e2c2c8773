"""What the portal's browser tests share: Debian's Chromium, headless, driven by Playwright.

The Airflow they test and the login through the OIDC provider are in tests/oidc_fixtures.py
(:func:`~oidc_fixtures.fab_oidc_airflow`, :func:`~oidc_fixtures.log_in`).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from unit.backends.docker_fixtures import FakeDockerEngine

CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium for the module's tests (each test opens its own context); closed after them."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (the test extra)")
    if not CHROMIUM.exists():  # pragma: no cover - `make install` installs it (system-deps)
        pytest.skip("Debian's chromium is not installed (make system-deps)")
    with sync_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"])
        yield chromium
        chromium.close()



@pytest.fixture(scope="module")
def docker_engine():
    """The FAKE Docker Engine (tests/unit/backends/docker_fixtures.py; no Docker engine runs here) that knows
    ``rocker/rstudio`` and no other image, for the module's Airflow (``DOCKER_HOST``)."""
    engine = FakeDockerEngine(registry=["rocker/rstudio"]).start()
    yield engine
    engine.stop()
