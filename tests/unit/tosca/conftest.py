"""Fixtures of the TOSCA layer tests: fixture templates, the INDIGO types map and isolated caches."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from airflow_cloud_paas.tosca import indigo_import_map
from airflow_cloud_paas.tosca.imports import TYPES_CACHE_ENV

DATA = Path(__file__).resolve().parent / "data"
# The repository is /work/main; the read-only test corpus sits beside it in ../shared.
SHARED = (Path(__file__).resolve().parents[3] / ".." / "shared").resolve()


@pytest.fixture(scope="session", autouse=True)
def types_cache(tmp_path_factory: pytest.TempPathFactory):
    """Keep types fetched by URL out of the user's home for the whole session."""
    folder = tmp_path_factory.mktemp("tosca-types-cache")
    before = os.environ.get(TYPES_CACHE_ENV)
    os.environ[TYPES_CACHE_ENV] = str(folder)
    yield folder
    if before is None:
        os.environ.pop(TYPES_CACHE_ENV, None)
    else:
        os.environ[TYPES_CACHE_ENV] = before


@pytest.fixture(scope="session")
def topology_cache(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Return a topology cache directory shared by the session (each template is parsed once)."""
    return str(tmp_path_factory.mktemp("topology-cache"))


@pytest.fixture(scope="session")
def indigo_map() -> dict[str, str]:
    """Map the INDIGO custom_types URLs to the copies in ../shared/tosca/indigo-types."""
    folder = SHARED / "tosca" / "indigo-types"
    assert folder.is_dir(), f"{folder} is missing: these tests need the shared INDIGO types"
    return indigo_import_map(folder)


@pytest.fixture
def data_dir() -> Path:
    """Return the folder of the fixture templates."""
    return DATA
