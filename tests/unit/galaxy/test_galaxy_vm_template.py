"""Galaxy on a VM: the template plans with its secrets, and its user data runs galaxy_configure.sh for real.

No VM boots here: the rendered boot step runs with ``GALAXY_CONFIGURE_ROOT`` (the script's own switch that writes
galaxy.yml, the systemd unit, the admin bootstrap and, with encryption, the LUKS plan under a scratch root and
installs, formats and starts nothing); what it writes is read back.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import yaml
from unit.cloudinit.boot import materialize

from airflow_cloud_paas import packaged_template
from airflow_cloud_paas.plan import compile_plan
from airflow_cloud_paas.tosca import load_topology

KEY = "pl4ntedAdminKey_0123456789abcdef"
PASSPHRASE = "pl4nted luks passphrase"


@pytest.fixture(scope="module")
def template():
    return load_topology(packaged_template("galaxy_vm.yaml"), use_cache=False)


def run_boot(template, root: Path, **inputs) -> subprocess.CompletedProcess:
    plan = compile_plan(template, {"admin_api_key": KEY, **inputs})
    user_data = plan.node("galaxy_host").user_data
    _, steps = materialize(user_data, root, commands=("sh",))
    (step,) = steps
    return subprocess.run(step, capture_output=True, text=True, timeout=60,
                          env={"PATH": os.environ["PATH"], "GALAXY_CONFIGURE_ROOT": str(root)})


def test_the_template_declares_its_secrets_and_opens_galaxys_port(template) -> None:
    assert {n for n, d in template.inputs.items() if d.is_secret} == {"admin_api_key", "encryption_passphrase"}
    plan = compile_plan(template, {"admin_api_key": KEY})
    assert len(plan.node("galaxy_host").user_data.encode()) < 16 * 1024  # AWS's user-data limit


def test_the_boot_writes_galaxy_yml_the_unit_and_the_bootstrap_never_printing_the_key(template, tmp_path) -> None:
    done = run_boot(template, tmp_path, admin_email="ada@example.org", port=8181)
    assert done.returncode == 0, done.stderr
    assert KEY not in done.stdout + done.stderr
    config_file = tmp_path / "opt/galaxy/galaxy.yml"
    config = yaml.safe_load(config_file.read_text())["galaxy"]
    assert config["admin_users"] == "ada@example.org" and config["enable_beta_tool_formats"] is True
    assert len(config["bootstrap_admin_api_key"]) == 32 and config["job_config"]["execution"]["default"] == "local"
    assert config_file.stat().st_mode & 0o077 == 0
    assert KEY not in config_file.read_text()  # the admin's key goes to Galaxy's database, not to a file
    unit = (tmp_path / "etc/systemd/system/galaxy.service").read_text()
    assert "--bind 0.0.0.0:8181" in unit and "User=galaxy" in unit
    assert (tmp_path / "opt/galaxy/bootstrap_admin.py").is_file()
    assert not (tmp_path / "luks-plan.txt").exists()


def test_encryption_formats_the_volume_with_the_passphrase_on_stdin_only(template, tmp_path) -> None:
    done = run_boot(template, tmp_path, storage_encryption=True, encryption_passphrase=PASSPHRASE)
    assert done.returncode == 0, done.stderr
    plan = (tmp_path / "luks-plan.txt").read_text()
    assert "luksFormat" in plan and "--key-file=-" in plan and "mount /dev/mapper/galaxy-data /srv/galaxy" in plan
    for sink in (done.stdout, done.stderr, plan, (tmp_path / "opt/galaxy/galaxy.yml").read_text()):
        assert PASSPHRASE not in sink and KEY not in sink


def test_encryption_without_a_passphrase_stops_the_boot_saying_so(template, tmp_path) -> None:
    done = run_boot(template, tmp_path, storage_encryption=True)
    assert done.returncode == 2 and "ENCRYPTION_PASSPHRASE is empty" in done.stderr


def test_a_bad_key_stops_the_boot_without_showing_it(template, tmp_path) -> None:
    plan = compile_plan(template, {"admin_api_key": "bad key with spaces!"})
    _, (step,) = materialize(plan.node("galaxy_host").user_data, tmp_path, commands=("sh",))
    done = subprocess.run(step, capture_output=True, text=True, timeout=60,
                          env={"PATH": os.environ["PATH"], "GALAXY_CONFIGURE_ROOT": str(tmp_path)})
    assert done.returncode == 2 and "ADMIN_API_KEY must be" in done.stderr
    assert "bad key with spaces!" not in done.stderr + done.stdout
