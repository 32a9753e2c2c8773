"""A Galaxy that never answers is reported with its log's tail and torn down: no process, no directory, the
record CREATE_FAILED, the admin key in none of it. The Galaxy here is a stand-in launcher (named so) that logs a
line and hangs, so the failure path runs in seconds without the real one."""

from __future__ import annotations

import json
from pathlib import Path

import psutil
import pytest
from waiting import until

from airflow_cloud_paas import packaged_template
from airflow_cloud_paas.backends.local import LocalBackend
from airflow_cloud_paas.deployer import Deployer
from airflow_cloud_paas.exceptions import BackendError
from airflow_cloud_paas.request import DeploymentRequest
from airflow_cloud_paas.services.galaxy.config import VENV_ENV
from airflow_cloud_paas.store import DeploymentStore
from airflow_cloud_paas.tosca import load_topology

KEY = "pl4ntedKey_never_shown_0123456789"[:32]


@pytest.fixture
def hanging_galaxy(tmp_path: Path, monkeypatch) -> Path:
    """A stand-in galaxy-web: logs like Galaxy starting, then never serves."""
    launcher = tmp_path / "venv" / "bin" / "galaxy-web"
    launcher.parent.mkdir(parents=True)
    launcher.write_text("#!/bin/sh\necho 'galaxy.config: loading (stand-in that never serves)'\nexec sleep 600\n")
    launcher.chmod(0o755)
    monkeypatch.setenv(VENV_ENV, str(launcher.parent.parent))
    return launcher


def test_a_galaxy_that_never_answers_is_reported_with_its_log_and_removed(tmp_path: Path, hanging_galaxy,
                                                                         caplog) -> None:
    store = DeploymentStore(f"sqlite:///{tmp_path}/store.db")
    backend = LocalBackend(tmp_path / "work", ready_timeout=3, poll_interval=0.2)
    request = DeploymentRequest.build(load_topology(packaged_template("galaxy.yaml")), "hangs",
                                      {"admin_api_key": KEY}, actor="test")
    with pytest.raises(BackendError) as caught:
        Deployer(request, store, backend).create_all()
    message = str(caught.value)
    assert "hangs/galaxy/0" in message and "stand-in that never serves" in message, message
    assert KEY not in message and KEY not in repr(getattr(caught.value, "__notes__", ""))
    until("the stand-in stopped", lambda: not any(
        "galaxy-web" in " ".join(p.info["cmdline"] or []) and str(tmp_path) in " ".join(p.info["cmdline"] or [])
        for p in psutil.process_iter(["cmdline"])), timeout=30)
    assert not (tmp_path / "work" / "hangs" / "galaxy" / "0").exists(), "the failed instance's directory is removed"
    record = store.get("hangs")
    assert record.status == "CREATE_FAILED"
    assert KEY not in json.dumps(vars(record), default=str)
    assert KEY not in caplog.text
    # the rest of the failed deployment (its host) is recorded, so a delete finds and removes it
    deployer = Deployer(request, store, backend)
    deployer.begin_delete()
    deployer.delete_all()
    deployer.complete_delete()
    assert backend.describe("hangs") == [] and store.get("hangs").status == "DELETE_COMPLETE"
