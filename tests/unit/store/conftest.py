"""Fixtures of the store's unit tests: a fresh SQLite file per test."""

from __future__ import annotations

from pathlib import Path

import pytest

from airflow_cloud_paas.store import dispose_engines


@pytest.fixture
def sqlite_url(tmp_path: Path):
    """Return the URL of a new SQLite store file; close its engines afterwards."""
    yield f"sqlite:///{tmp_path / 'store' / 'deployments.db'}"
    dispose_engines()
