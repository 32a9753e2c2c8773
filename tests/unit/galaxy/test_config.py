"""A local Galaxy's settings: bad values refused before anything starts (secrets never shown), galaxy.yml's content."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from airflow_cloud_paas.services.galaxy.config import (
    GalaxySpec,
    check_admin_api_key,
    check_admin_email,
    render_galaxy_yml,
    username_of,
)
from airflow_cloud_paas.services.galaxy.errors import GalaxyConfigError


@pytest.mark.parametrize("key, why", [
    ("", "required"),
    (None, "required"),
    ("not_very_secret_api_key", "public default key"),
    ("short-key", "16-32"),
    ("x" * 33, "16-32"),
    ("has spaces in the key!", "16-32"),
])
def test_a_bad_admin_key_is_refused_without_showing_it(key, why) -> None:
    with pytest.raises(GalaxyConfigError) as caught:
        check_admin_api_key(key)
    assert why in str(caught.value) and caught.value.field == "admin_api_key"
    if key:
        assert key not in str(caught.value) and key not in repr(caught.value.args)


def test_a_good_key_and_email_pass() -> None:
    assert check_admin_api_key("0123456789abcdef0123456789abcdef") == "0123456789abcdef0123456789abcdef"
    assert check_admin_email("admin@example.org") == "admin@example.org"
    assert username_of("Ada.Lovelace+x@example.org") == "ada.lovelace-x"


@pytest.mark.parametrize("email", ["", "admin", "a@b", "a b@example.org", 5])
def test_a_bad_email_is_refused(email) -> None:
    with pytest.raises(GalaxyConfigError, match="admin_email"):
        check_admin_email(email)


def test_galaxy_yml_runs_jobs_locally_by_default(tmp_path: Path) -> None:
    spec = GalaxySpec(tmp_path, port=8123, admin_email="admin@example.org")
    config = yaml.safe_load(render_galaxy_yml(spec))["galaxy"]
    assert config["admin_users"] == "admin@example.org"
    assert config["bootstrap_admin_api_key"] == spec.bootstrap_key and len(spec.bootstrap_key) == 32
    assert spec.bootstrap_key not in repr(spec)
    assert config["database_connection"].startswith(f"sqlite:///{tmp_path}/data/")
    assert config["job_config"]["execution"]["default"] == "local"
    assert config["enable_beta_tool_formats"] is True and config["allow_user_creation"] is False
    assert spec.job_runner == "local" and spec.url == "http://127.0.0.1:8123"


def test_galaxy_yml_sends_jobs_to_slurm_through_sbatch_but_uploads_stay_local(tmp_path: Path) -> None:
    spec = GalaxySpec(tmp_path, port=8123, admin_email="admin@example.org", slurm_conf=tmp_path / "slurm.conf")
    jobs = yaml.safe_load(render_galaxy_yml(spec))["galaxy"]["job_config"]
    assert jobs["execution"]["default"] == "slurm"
    slurm = jobs["execution"]["environments"]["slurm"]
    assert (slurm["runner"], slurm["shell_plugin"], slurm["job_plugin"]) == ("slurm_cli", "LocalShell", "Slurm")
    assert jobs["runners"]["slurm_cli"]["load"] == "galaxy.jobs.runners.cli:ShellJobRunner"
    assert {"name": "SLURM_CONF", "value": str(tmp_path / "slurm.conf")} in slurm["env"]
    assert {"id": "__DATA_FETCH__", "environment": "local"} in jobs["tools"]


@pytest.mark.parametrize("field, value", [("port", 0), ("port", 70000), ("job_workers", 0)])
def test_bad_numbers_are_refused(tmp_path: Path, field, value) -> None:
    kwargs = {"port": 8080, "admin_email": "admin@example.org", field: value}
    with pytest.raises(GalaxyConfigError, match=field):
        GalaxySpec(tmp_path, **kwargs)
