"""`make run` installs only what a local run needs and sizes Airflow to the machine."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from airflow_cloud_paas.standalone import environment, task_slots

REPO = Path(__file__).resolve().parents[3]


def _make_n(target: str, venv: Path, *options: str) -> str:
    out = subprocess.run(["make", "-n", *options, "-C", str(REPO), target, f"VENV={venv}"], capture_output=True,
                         text=True, timeout=60, check=True)
    return out.stdout


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_run_installs_only_the_extras_a_local_run_needs(tmp_path: Path):
    run = _make_n("run", tmp_path / "venv")
    installs = [line for line in run.splitlines() if " install " in line]
    assert installs == [f"{tmp_path}/venv/bin/pip install -q -U pip",
                        f'{tmp_path}/venv/bin/pip install -q -c constraints.txt -e ".[spark,galaxy]"'], run
    # the portal's UI is (re)built before Airflow starts when its sources changed
    assert "npm ci" in _make_n("run", tmp_path / "venv", "-W", "ui/package.json")
    assert "apt-get" not in run  # the XCache tests' Debian packages are not needed to run Airflow
    assert f'PATH="{tmp_path}/venv/bin:$PATH"' in run  # an absolute VENV stays absolute
    test = _make_n("test", tmp_path / "venv")
    assert '-e ".[test,spark,' in test and "pytest" in test


def test_task_slots_follow_the_cores():
    assert [task_slots(n) for n in (1, 2, 3, 8, 16, 64)] == [4, 4, 6, 16, 32, 32]
    assert task_slots() == task_slots(os.cpu_count())


def test_the_environment_sets_parallelism_unless_the_user_did(tmp_path: Path, monkeypatch):
    monkeypatch.delenv("AIRFLOW__CORE__PARALLELISM", raising=False)
    assert environment(tmp_path)["AIRFLOW__CORE__PARALLELISM"] == str(task_slots())
    monkeypatch.setenv("AIRFLOW__CORE__PARALLELISM", "7")
    assert environment(tmp_path)["AIRFLOW__CORE__PARALLELISM"] == "7"
