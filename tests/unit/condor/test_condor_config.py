"""Each role's condor_config, rendered and loaded by the real htcondor2 bindings; the boot script writes the same."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import htcondor2
import pytest

from airflow_cloud_paas.services.condor.config import (
    ROLES,
    CondorPoolSettings,
    image_env_config,
    load_params,
    render_config,
    template_inputs,
    validate_config,
)
from airflow_cloud_paas.services.condor.errors import CondorConfigError

SCRIPT = Path(__file__).resolve().parents[3] / "airflow_cloud_paas" / "templates" / "scripts" / "htcondor_configure.sh"

FULL = CondorPoolSettings("10.0.0.5", "pool-1.cloud-paas", security_mode="password", ccb=True,
                          port_range=(9700, 9800), execute_cpus=8, execute_memory_mb=16000, execute_gpus=True,
                          deployment_id="dep-1")
PLAIN = CondorPoolSettings("cm.example.org", "pool-2.cloud-paas", admin_user=None)


@pytest.mark.parametrize("settings", [FULL, PLAIN], ids=["all-options", "defaults"])
@pytest.mark.parametrize("role", ROLES)
def test_every_role_loads_with_the_bindings_and_has_its_settings(settings, role) -> None:
    params = validate_config(render_config(settings, role), role, settings)
    daemons = params["DAEMON_LIST"].replace(",", " ").split()
    wanted = {"central_manager": {"COLLECTOR", "NEGOTIATOR"}, "submit": {"SCHEDD"}, "execute": {"STARTD"}}[role]
    assert wanted <= set(daemons) and "MASTER" in daemons
    assert params["TRUST_DOMAIN"] == settings.trust_domain
    assert params["SEC_DEFAULT_ENCRYPTION"].upper() == "REQUIRED"
    if settings is FULL:
        assert params["SEC_DEFAULT_AUTHENTICATION_METHODS"] == "FS, PASSWORD, IDTOKENS"
        assert (params["LOWPORT"], params["HIGHPORT"]) == ("9700", "9800")
        # CCB: the collector's own host on submit and execute nodes, never on the central manager
        assert params["CCB_ADDRESS"] == (None if role == "central_manager" else "10.0.0.5")
        assert "airflow@pool-1.cloud-paas" in params["ALLOW_ADMINISTRATOR"].split()
    else:
        assert params["SEC_DEFAULT_AUTHENTICATION_METHODS"] == "FS, IDTOKENS"
        assert params["LOWPORT"] is None and params["CCB_ADDRESS"] is None
    if role == "execute" and settings is FULL:
        assert (str(params["NUM_CPUS"]), params["MEMORY"]) == ("8", "16000")
        assert params["CloudPaaSDeployment"] == '"dep-1"'
        assert params["MACHINE_RESOURCE_INVENTORY_GPUs"]  # use FEATURE : GPUs


def test_a_config_htcondor_cannot_parse_is_rejected_with_its_line() -> None:
    text = render_config(PLAIN, "submit").replace("use ROLE : Submit", "use ROLE : Sumbit")
    with pytest.raises(CondorConfigError) as caught:
        validate_config(text, "submit")
    assert "Sumbit" in str(caught.value) and "Line 3" in str(caught.value)


@pytest.mark.parametrize(("role", "edit", "words"), [
    ("submit", ("use ROLE : Submit", "use ROLE : Execute"), "lacks SCHEDD"),
    ("execute", ("use SECURITY : recommended_v9_0\n", ""), "SEC_DEFAULT_ENCRYPTION"),
    ("execute", ("use FEATURE : PartitionableSlot\n", ""), "partitionable slot"),
    ("central_manager", ("LOWPORT = 9700\n", ""), "LOWPORT and HIGHPORT"),
    ("central_manager", ("HIGHPORT = 9800", "HIGHPORT = 9600"), "below HIGHPORT"),
    ("central_manager", ("use ROLE : CentralManager", "use ROLE : CentralManager\nCCB_ADDRESS = cm"), "CCB"),
])
def test_a_config_that_loads_but_misses_what_its_role_needs_is_rejected(role, edit, words) -> None:
    text = render_config(FULL, role)
    assert edit[0] in text
    with pytest.raises(CondorConfigError, match=words):
        validate_config(text.replace(edit[0], edit[1]), role)


def test_values_read_back_are_compared_with_the_settings() -> None:
    other = CondorPoolSettings("10.0.0.5", "someone-else", ccb=False)
    with pytest.raises(CondorConfigError) as caught:
        validate_config(render_config(FULL, "execute"), "execute", other)
    message = str(caught.value)
    assert "TRUST_DOMAIN is 'pool-1.cloud-paas', expected 'someone-else'" in message
    assert "CCB_ADDRESS is '10.0.0.5' though CCB is off" in message


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"central_manager": "cm\nALLOW_WRITE = *"}, "central_manager"),  # no configuration injection
    ({"trust_domain": "a b"}, "trust_domain"),
    ({"security_mode": "kerberos"}, "security_mode"),
    ({"port_range": (9800, 9700)}, "port_range"),
    ({"port_range": (80, 9000)}, "port_range"),
    ({"execute_cpus": 0}, "execute_cpus"),
    ({"deployment_id": 'x"; START = true'}, "deployment_id"),
])
def test_bad_settings_are_refused_before_rendering(kwargs, field) -> None:
    base = {"central_manager": "cm", "trust_domain": "td"}
    with pytest.raises(CondorConfigError) as caught:
        CondorPoolSettings(**{**base, **kwargs})
    assert caught.value.what == field


def test_loading_runs_apart_and_leaves_this_process_configuration_alone() -> None:
    before = htcondor2.param.get("CONDOR_HOST")
    params = load_params("CONDOR_HOST = elsewhere.example\n", ["CONDOR_HOST"], environ={"_CONDOR_LOWPORT": "9100"})
    assert params == {"CONDOR_HOST": "elsewhere.example"}
    assert load_params("LOWPORT = 9000\n", ["LOWPORT"], environ={"_CONDOR_LOWPORT": "9100"}) == {"LOWPORT": "9100"}
    assert htcondor2.param.get("CONDOR_HOST") == before


def test_container_roles_take_the_central_manager_and_resources_from_the_image() -> None:
    settings = CondorPoolSettings("cm", "pool-3", ccb=True, execute_cpus=2, execute_memory_mb=2048)
    text = render_config(settings, "execute", container=True)
    assert "CONDOR_HOST" not in text and "NUM_CPUS" not in text
    base = image_env_config("cm", num_cpus=2, memory_mb=2048)
    params = validate_config(base + text, "execute", settings)
    assert (params["CONDOR_HOST"], params["MEMORY"], params["CCB_ADDRESS"]) == ("cm", "2048", "cm")
    with pytest.raises(CondorConfigError, match="CONDOR_HOST"):
        validate_config(text, "execute")  # without the image's own file there is no central manager


def _script_config(tmp_path: Path, role: str, settings: CondorPoolSettings) -> str:
    values = template_inputs(settings)
    env = {
        "PATH": os.environ["PATH"], "ROLE": role,
        "CENTRAL_MANAGER": "" if role == "central_manager" else settings.central_manager,
        "TRUST_DOMAIN": values["trust_domain"], "SECURITY_MODE": values["security_mode"],
        "CCB": "true" if values["ccb"] else "false", "LOW_PORT": str(values["low_port"]),
        "HIGH_PORT": str(values["high_port"]), "ADMIN_USER": values["admin_user"],
        "DEPLOYMENT_ID": values["pool_id"], "EXECUTE_CPUS": str(settings.execute_cpus or 0),
        "EXECUTE_MEMORY_MB": str(settings.execute_memory_mb or 0),
        "EXECUTE_GPUS": "true" if settings.execute_gpus else "false",
        "CLOUD_PAAS_CONDOR_CONFIG_ONLY": "1", "CLOUD_PAAS_CONDOR_CONFIG_FILE": str(tmp_path / f"{role}.config"),
    }
    subprocess.run(["bash", str(SCRIPT)], env=env, check=True, timeout=30, capture_output=True)
    return (tmp_path / f"{role}.config").read_text()


@pytest.mark.parametrize("settings", [FULL, PLAIN], ids=["all-options", "defaults"])
@pytest.mark.parametrize("role", ["submit", "execute"])
def test_the_boot_script_writes_what_render_config_writes(tmp_path, settings, role) -> None:
    assert _script_config(tmp_path, role, settings) == render_config(settings, role)


def test_the_boot_script_gives_the_central_manager_its_own_address(tmp_path) -> None:
    written = _script_config(tmp_path, "central_manager", FULL)
    assert written == render_config(CondorPoolSettings(**{**FULL.__dict__, "central_manager": "$(IP_ADDRESS)"}),
                                    "central_manager")
    params = validate_config(written, "central_manager")
    assert params["CONDOR_HOST"] and "$" not in params["CONDOR_HOST"]  # the bindings expanded it


@pytest.mark.parametrize(("env", "words"), [
    ({"ROLE": "worker"}, "ROLE 'worker'"),
    ({"ROLE": "execute", "CENTRAL_MANAGER": ""}, "CENTRAL_MANAGER is empty"),
    ({"LOW_PORT": "9800", "HIGH_PORT": "9700"}, "port range"),
    ({"SECURITY_MODE": "none"}, "SECURITY_MODE 'none'"),
])
def test_the_boot_script_refuses_bad_inputs(tmp_path, env, words) -> None:
    base = {"PATH": os.environ["PATH"], "ROLE": "submit", "CENTRAL_MANAGER": "cm", "TRUST_DOMAIN": "td",
            "CLOUD_PAAS_CONDOR_CONFIG_ONLY": "1", "CLOUD_PAAS_CONDOR_CONFIG_FILE": str(tmp_path / "c")}
    done = subprocess.run(["bash", str(SCRIPT)], env={**base, **env}, timeout=30, capture_output=True, text=True)
    assert done.returncode == 2 and words in done.stderr
    assert not (tmp_path / "c").exists()
