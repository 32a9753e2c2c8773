"""The pool templates load, render user data whose configuration HTCondor accepts, and map to the official images."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from unit.cloudinit.boot import materialize

from airflow_cloud_paas.cloudinit import render_user_data
from airflow_cloud_paas.services.condor.config import (
    CONTAINER_DEFAULTS,
    CondorPoolSettings,
    image_env_config,
    render_config,
    template_inputs,
    validate_config,
)
from airflow_cloud_paas.services.condor.credentials import generate_pool_credentials, pool_inputs, read_token
from airflow_cloud_paas.tosca import load_topology, validate_inputs
from airflow_cloud_paas.tosca.imports import default_import_map

PACKAGE = Path(__file__).resolve().parents[3] / "airflow_cloud_paas"
TEMPLATES = PACKAGE / "templates"
TYPES_URL = "https://raw.githubusercontent.com/airflow-cloud-paas/tosca-types/main/htcondor_types.yaml"
#: the templates import the HTCondor types by URL; mapped here until the package's own import map has it
IMPORTS = {} if TYPES_URL in default_import_map() else {TYPES_URL: str(PACKAGE / "tosca/types/htcondor_types.yaml")}
HOSTS = {"condor_cm_host": ("condor_cm", "central_manager"), "condor_submit_host": ("condor_submit", "submit"),
         "condor_execute_hosts": ("condor_execute", "execute")}
CM_ADDRESS = "10.20.0.5"


@pytest.fixture(scope="module")
def vm_pool():
    return load_topology(TEMPLATES / "htcondor_pool.yaml", import_map=IMPORTS, use_cache=False)


@pytest.fixture(scope="module")
def docker_pool():
    return load_topology(TEMPLATES / "htcondor_pool_docker.yaml", import_map=IMPORTS, use_cache=False)


def test_both_templates_load_with_their_secrets_marked(vm_pool, docker_pool) -> None:
    for topology in (vm_pool, docker_pool):
        secret = {name for name, spec in topology.inputs.items() if spec.is_secret}
        assert secret == {"pool_password", "execute_secret"}
        assert not any(topology.inputs[name].has_default for name in secret)  # always given, never a default
    assert vm_pool.plan.index("condor_cm_host") < vm_pool.plan.index("condor_submit_host")
    assert vm_pool.nodes["condor_execute_hosts"].scalable is not None
    assert docker_pool.nodes["execute"].scalable is not None
    assert docker_pool.nodes["cm"].is_a("tosca.nodes.Container.Application")
    from airflow_cloud_paas.tosca_text import load_topology_text

    for topology in (vm_pool, docker_pool):  # as a deployment record keeps it: text, imports by URL
        assert load_topology_text(topology.template_text, import_map=IMPORTS).plan == topology.plan



@pytest.mark.parametrize("mode", ["idtokens", "password"])
def test_the_user_data_of_each_vm_writes_a_config_htcondor_accepts(vm_pool, tmp_path, mode) -> None:
    credentials = generate_pool_credentials("dep-vm", security_mode=mode)
    settings = CondorPoolSettings(CM_ADDRESS, credentials.trust_domain, security_mode=mode, ccb=True,
                                  port_range=(9700, 9800), deployment_id="dep-vm")
    inputs = {**template_inputs(settings), **pool_inputs(credentials), "execute_count": 3}
    validate_inputs(vm_pool, inputs)
    attributes = {"condor_cm_host": [{"private_address": CM_ADDRESS, "public_address": "198.51.100.7"}]}
    for host, (node, role) in HOSTS.items():
        user_data = render_user_data(vm_pool, host, inputs, attributes)
        files, steps = materialize(user_data, tmp_path / host, commands=("sh",))
        env_file = files[f"/etc/cloud-paas/nodes/{node}.configure.env"]
        assert env_file["permissions"] == "0600"
        # least privilege: in idtokens mode the machines that run jobs never get the pool password
        if role == "execute":
            assert "POOL_PASSWORD" not in env_file["content"]
            assert (credentials.pool_password in env_file["content"]) == (mode == "password")
        else:
            assert credentials.pool_password in env_file["content"]
        (step,) = steps
        config = tmp_path / f"{role}.config"
        subprocess.run(step, check=True, timeout=60, capture_output=True,
                       env={"PATH": os.environ["PATH"], "CLOUD_PAAS_CONDOR_CONFIG_ONLY": "1",
                            "CLOUD_PAAS_CONDOR_CONFIG_FILE": str(config)})
        expected = settings if role != "central_manager" else CondorPoolSettings(
            **{**settings.__dict__, "central_manager": "$(IP_ADDRESS)"})
        assert config.read_text() == render_config(expected, role)
        params = validate_config(config.read_text(), role, expected)
        assert params["TRUST_DOMAIN"] == credentials.trust_domain
    execute_env = files["/etc/cloud-paas/nodes/condor_execute.configure.env"]["content"]
    if mode == "idtokens":  # the execute token is signed by the pool's key for the pool's trust domain
        token = next(line.split("=", 1)[1] for line in execute_env.splitlines() if line.startswith("EXECUTE_SECRET="))
        assert read_token(token, credentials.pool_password, trust_domain=credentials.trust_domain)["sub"] == (
            f"condor@{credentials.trust_domain}")


def test_the_container_template_maps_to_the_official_images(docker_pool, tmp_path) -> None:
    from airflow_cloud_paas.backends.docker import ContainerRequirements
    from airflow_cloud_paas.backends.local import LocalBackend
    from airflow_cloud_paas.deployer import Deployer
    from airflow_cloud_paas.request import DeploymentRequest
    from airflow_cloud_paas.store import DeploymentStore

    credentials = generate_pool_credentials("dep-docker")
    settings = CondorPoolSettings("cm", credentials.trust_domain, ccb=True, execute_cpus=2, execute_memory_mb=2048)
    inputs = {**template_inputs(settings, container=True), **pool_inputs(credentials, only=docker_pool.inputs)}
    assert set(inputs) <= set(docker_pool.inputs)
    deployer = Deployer(DeploymentRequest.build(docker_pool, "dep-docker", inputs),
                        DeploymentStore(f"sqlite:///{tmp_path}/store.db"), LocalBackend(tmp_path / "w"))
    specs = {name: ContainerRequirements.from_spec(deployer.spec(name, 0, with_requirements=False), provider="docker")
             for name in ("cm", "submit", "execute")}
    assert {n: r.image for n, r in specs.items()} == {
        "cm": "htcondor/cm:25.0-el9", "submit": "htcondor/submit:25.0-el9", "execute": "htcondor/execute:25.0-el9"}
    assert [p.key for p in specs["cm"].ports] == ["9618/tcp"] and not specs["cm"].public
    execute = specs["execute"]
    assert (execute.cpus, execute.mem_mb) == (2.0, 2048.0)
    assert execute.environment["CONDOR_HOST"] == "cm" and execute.environment["NUM_CPUS"] == "2"
    assert execute.environment["CLOUD_PAAS_EXECUTE_SECRET"] == credentials.execute_token
    assert "CLOUD_PAAS_POOL_PASSWORD" not in execute.environment
    assert execute.command[:2] == ("bash", "-c") and execute.command[2].endswith("exec /start.sh")
    for node, role in (("cm", "central_manager"), ("submit", "submit"), ("execute", "execute")):
        text = specs[node].environment["CLOUD_PAAS_CONDOR_CONFIG"]
        base = image_env_config(specs[node].environment.get("CONDOR_HOST", "cm"), num_cpus=2, memory_mb=2048)
        validate_config(base + text, role, settings)


def test_the_container_templates_default_configs_are_render_configs(docker_pool) -> None:
    for short, role in (("cm", "central_manager"), ("submit", "submit"), ("execute", "execute")):
        assert docker_pool.inputs[f"{short}_condor_config"].default == render_config(CONTAINER_DEFAULTS, role,
                                                                                      container=True)


def test_the_container_command_installs_config_and_secrets_then_starts(docker_pool, tmp_path) -> None:
    """Run the containers' command for real, its absolute paths moved under tmp_path.

    ``condor_store_cred`` and ``/start.sh`` belong to the image; here they are stand-ins that record how they
    were called (the password must come on standard input, never as an argument).
    """
    command = docker_pool.nodes["execute"].properties["command"]  # the type's default
    script = command.split("'", 1)[1].rsplit("'", 1)[0]
    root = tmp_path / "root"
    for path in ("/root/", "/etc/condor/", "/start.sh"):
        script = script.replace(path, f"{root}{path}")
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "condor_store_cred").write_text(f'#!/bin/sh\necho "$*" >> {tmp_path}/store_cred.args\n'
                                            f"cat >> {tmp_path}/store_cred.stdin\n")
    (fake / "condor_store_cred").chmod(0o755)
    root.mkdir()
    (root / "start.sh").write_text(f'#!/bin/sh\nenv > {tmp_path}/start.env\n')
    (root / "start.sh").chmod(0o755)
    env = {"PATH": f"{fake}:{os.environ['PATH']}", "CLOUD_PAAS_CONDOR_CONFIG": "TRUST_DOMAIN = t1\n",
           "CLOUD_PAAS_POOL_PASSWORD": "the-pool-password", "CLOUD_PAAS_EXECUTE_SECRET": "a.b.c",
           "CLOUD_PAAS_SECURITY_MODE": "idtokens"}
    subprocess.run(["bash", "-c", script], env=env, check=True, timeout=30)
    assert (root / "root/config/50-cloud-paas.conf").read_text() == "TRUST_DOMAIN = t1\n\n"
    assert (root / "root/secrets/token").read_text() == "a.b.c\n"
    assert oct((root / "root/secrets/token").stat().st_mode & 0o777) == "0o600"
    assert (tmp_path / "store_cred.stdin").read_text() == "the-pool-password"
    assert (tmp_path / "store_cred.args").read_text().split() == ["add", "-c", "-i", "-"]
    started = (tmp_path / "start.env").read_text()
    assert "the-pool-password" not in started and "CLOUD_PAAS_CONDOR_CONFIG" not in started
    assert "USE_POOL_PASSWORD" not in started
    # password mode: the execute secret is the pool password, stored, and the image told to use it
    env.update(CLOUD_PAAS_SECURITY_MODE="password", CLOUD_PAAS_EXECUTE_SECRET="pw-2", CLOUD_PAAS_POOL_PASSWORD="")
    subprocess.run(["bash", "-c", script], env=env, check=True, timeout=30)
    assert (tmp_path / "store_cred.stdin").read_text() == "the-pool-passwordpw-2"
    assert "USE_POOL_PASSWORD=yes" in (tmp_path / "start.env").read_text()


def test_a_stored_template_reloaded_from_text_still_renders_its_boot_steps(vm_pool) -> None:
    # a scale-out months later loads the record's template text, away from templates/scripts/
    from airflow_cloud_paas.tosca_text import load_topology_text

    reloaded = load_topology_text(vm_pool.template_text)
    credentials = generate_pool_credentials("dep-text")
    settings = CondorPoolSettings(CM_ADDRESS, credentials.trust_domain, deployment_id="dep-text")
    inputs = {**template_inputs(settings), **pool_inputs(credentials)}
    attributes = {"condor_cm_host": [{"private_address": CM_ADDRESS, "public_address": "198.51.100.7"}]}
    assert render_user_data(reloaded, "condor_execute_hosts", inputs, attributes) == \
        render_user_data(vm_pool, "condor_execute_hosts", inputs, attributes)


def test_both_templates_opt_their_execute_nodes_into_elastic_scaling(vm_pool, docker_pool) -> None:
    from airflow_cloud_paas.scaling.elastic import elastic_targets_of, probe_address

    vm = elastic_targets_of(vm_pool, "pool1", {"execute_cpus": 8, "max_execute": 40, "scaling_policy": "clues"})
    assert [(t.node_name, t.service, t.policy) for t in vm] == [("condor_execute", "htcondor", "clues")]
    assert vm[0].limits == {"min_nodes": 0, "max_nodes": 40, "idle_time_s": 600.0, "node_cores": 8}
    assert probe_address(vm[0], {}) == "htcondor_pool1"  # the pool's credentials connection
    docker = elastic_targets_of(docker_pool, "pool2", {})
    assert [(t.node_name, t.service, t.policy) for t in docker] == [("execute", "htcondor", "smart")]
    assert docker[0].limits["max_nodes"] == 20
