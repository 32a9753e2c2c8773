"""Test-wide setup: an isolated AIRFLOW_HOME, test DAGs folder and store, set before Airflow loads."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pytest
from httpd import serve_folder

REPO = Path(__file__).resolve().parent.parent
SHARED = (REPO.parent / "shared").resolve()
_HOME = Path(tempfile.mkdtemp(prefix="cloud_paas_airflow_"))

os.environ["AIRFLOW_HOME"] = str(_HOME)
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(REPO / "tests" / "dags")
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__UNIT_TEST_MODE"] = "True"
os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = f"sqlite:///{_HOME}/airflow.db"
os.environ["AIRFLOW__CORE__EXECUTOR"] = "LocalExecutor"
os.environ["AIRFLOW_CLOUD_PAAS_TOPOLOGY_CACHE"] = str(_HOME / "topology-cache")
os.environ["AIRFLOW_CONN_CLOUD_PAAS_DEFAULT"] = json.dumps(
    {
        "conn_type": "cloud_paas",
        "extra": {
            "store_url": f"sqlite:///{_HOME}/cloud_paas/deployments.db",
            "backend": "local",
            "work_root": str(_HOME / "cloud_paas" / "work"),
        },
    }
)
(_HOME / "cloud_paas").mkdir(parents=True, exist_ok=True)


@pytest.fixture(scope="session")
def airflow_home() -> Path:
    """Return the tests' AIRFLOW_HOME."""
    return _HOME


@pytest.fixture(scope="session")
def airflow_db(airflow_home: Path):
    """Create Airflow's metadata DB once per session (needed by dag.test())."""
    from airflow.utils import db

    db.resetdb()
    return airflow_home


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """Return ../shared (read-only test material)."""
    assert SHARED.is_dir(), f"{SHARED} is missing: tests need the shared TOSCA corpus"
    return SHARED


@pytest.fixture(scope="session")
def store_url(airflow_home: Path) -> str:
    """Return the URL of the store the default connection points at."""
    return f"sqlite:///{airflow_home}/cloud_paas/deployments.db"


@pytest.fixture
def http_root(tmp_path: Path):
    """A folder served over real HTTP on 127.0.0.1; yields (folder, base URL)."""
    root = tmp_path / "www"
    root.mkdir()
    with serve_folder(root) as url:
        yield root, url
