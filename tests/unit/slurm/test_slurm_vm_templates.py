"""The SLURM cluster on VMs: the template plans, its user data runs slurm_configure.sh for real, the firewall opens
SLURM's ports to the private network only, and INDIGO's own SLURM types render to the same script.

No VM boots here and no SLURM daemon starts: the rendered boot steps run with ``SLURM_CONFIGURE_ROOT`` (the
script's own switch that writes the munge key, slurm.conf or the slurmd unit drop-in under a scratch root and
installs and starts nothing), and the files it writes are read back.
"""

from __future__ import annotations

import base64
import os
import re
import secrets
import subprocess
from pathlib import Path

import pytest
import yaml
from unit.cloudinit.boot import materialize

from airflow_cloud_paas.backends.base import ResourceSpec
from airflow_cloud_paas.backends.mapping import PRIVATE_RANGES, Rule, security_rules
from airflow_cloud_paas.exceptions import UnsupportedNodeError
from airflow_cloud_paas.plan import compile_plan
from airflow_cloud_paas.tosca import indigo_import_map, load_topology

PACKAGE = Path(__file__).resolve().parents[3] / "airflow_cloud_paas"
SHARED = (Path(__file__).resolve().parents[3] / ".." / "shared" / "tosca").resolve()
CONTROLLER_ADDRESS = "10.1.0.5"
ATTRIBUTES = {"slurm_controller_host": [{"private_address": CONTROLLER_ADDRESS, "public_address": "198.51.100.9"}]}
SRUN_RANGE = (60001, 63000)


@pytest.fixture(scope="module")
def cluster():
    return load_topology(PACKAGE / "templates" / "slurm_cluster_vm.yaml", use_cache=False)


@pytest.fixture(scope="module")
def munge_key() -> str:
    return base64.b64encode(secrets.token_bytes(1024)).decode()


@pytest.fixture(scope="module")
def plan(cluster, munge_key):
    return compile_plan(cluster, {"munge_key": munge_key, "max_workers": 12, "worker_cpus": 2, "partition": "batch"})


def run_steps(user_data: str, root: Path) -> subprocess.CompletedProcess:
    """Run the user data's shell steps as cloud-init would, the script writing under ``root`` (nothing started)."""
    _, steps = materialize(user_data, root, commands=("sh",))
    (step,) = steps
    return subprocess.run(
        step,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": os.environ["PATH"], "SLURM_CONFIGURE_ROOT": str(root)},
    )


def slurm_conf(root: Path) -> dict[str, str]:
    lines = (root / "etc/slurm/slurm.conf").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line and not line.startswith(("#", "PartitionName")))


# ------------------------------------------------------------------------------------------ the template
def test_the_template_plans_with_the_munge_key_secret(cluster, plan) -> None:
    secret = {name for name, spec in cluster.inputs.items() if spec.is_secret}
    assert secret == {"munge_key"} and not cluster.inputs["munge_key"].has_default
    assert cluster.plan.index("slurm_controller_host") < cluster.plan.index("slurm_worker_hosts")
    assert plan.node("slurm_worker_hosts").node.scalable is not None
    assert plan.node("slurm_worker_hosts").live_user_data  # the controller's address is read once it exists
    from airflow_cloud_paas.scaling.elastic import elastic_targets_of

    (target,) = elastic_targets_of(cluster, "c1", {"max_workers": 40, "worker_cpus": 8, "scaling_policy": "clues"})
    assert (target.node_name, target.service, target.policy) == ("slurm_worker", "slurm", "clues")
    assert target.limits == {"min_nodes": 0, "max_nodes": 40, "idle_time_s": 600.0, "node_cores": 8}


def test_the_controller_writes_a_configless_dynamic_nodes_slurm_conf(plan, munge_key, tmp_path) -> None:
    result = run_steps(plan.spec("d", "slurm_controller_host", 0, attributes=ATTRIBUTES).user_data, tmp_path)
    assert result.returncode == 0, result.stderr
    conf = slurm_conf(tmp_path)
    assert conf["SlurmctldParameters"] == "enable_configless"
    assert (conf["MaxNodeCount"], conf["TreeWidth"], conf["SelectType"]) == ("12", "65533", "select/cons_tres")
    assert (conf["SlurmctldPort"], conf["SlurmdPort"], conf["AuthType"]) == ("6817", "6818", "auth/munge")
    assert conf["SrunPortRange"] == f"{SRUN_RANGE[0]}-{SRUN_RANGE[1]}"  # what the firewall opens
    assert re.fullmatch(r"[\w.-]+\([0-9a-f.:]+\)", conf["SlurmctldHost"]), conf["SlurmctldHost"]
    assert (
        "PartitionName=batch Nodes=ALL Default=YES MaxTime=INFINITE State=UP"
        in (tmp_path / "etc/slurm/slurm.conf").read_text().splitlines()
    )
    key = tmp_path / "etc/munge/munge.key"
    assert key.read_bytes() == base64.b64decode(munge_key) and oct(key.stat().st_mode & 0o777) == "0o400"
    assert munge_key not in result.stdout + result.stderr
    assert not (tmp_path / "etc/systemd").exists()


def test_a_worker_starts_slurmd_configless_as_a_dynamic_node(plan, munge_key, tmp_path) -> None:
    result = run_steps(plan.spec("d", "slurm_worker_hosts", 0, attributes=ATTRIBUTES).user_data, tmp_path)
    assert result.returncode == 0, result.stderr
    dropin = (tmp_path / "etc/systemd/system/slurmd.service.d/50-cloud-paas.conf").read_text().splitlines()
    (exec_start,) = [line for line in dropin if line.startswith("ExecStart=/")]
    assert exec_start.endswith(f' -D -s --conf-server {CONTROLLER_ADDRESS}:6817 -Z --conf "CPUs=2 Feature=cloud"')
    assert "ExecStart=" in dropin and "ConditionPathExists=" in dropin  # the packaged command line is replaced
    assert not (tmp_path / "etc/slurm").exists()  # configless: the worker has no slurm.conf of its own
    assert (tmp_path / "etc/munge/munge.key").read_bytes() == base64.b64decode(munge_key)
    assert munge_key not in result.stdout + result.stderr


@pytest.mark.parametrize("provider", ["aws", "gcp", "openstack", "azure"])
def test_the_user_data_fits_each_provider_and_holds_the_key_once(plan, munge_key, provider) -> None:
    from airflow_cloud_paas.backends.aws import AWSBackend
    from airflow_cloud_paas.backends.azure import AzureBackend
    from airflow_cloud_paas.backends.gcp import GcpBackend
    from airflow_cloud_paas.backends.openstack import OpenStackBackend

    classes = {"aws": AWSBackend, "gcp": GcpBackend, "openstack": OpenStackBackend, "azure": AzureBackend}
    backend_class = classes[provider]
    backend = object.__new__(backend_class)  # only its size rule is used: no client, no credentials
    for host, node, role in (
        ("slurm_controller_host", "slurm_controller", "controller"),
        ("slurm_worker_hosts", "slurm_worker", "worker"),
    ):
        spec = plan.spec("d", host, 0, attributes=ATTRIBUTES)
        backend.check_user_data(spec)  # raises over the provider's limit (AWS: 16 KB, OpenStack: 64 KB in base64)
        with pytest.raises(UnsupportedNodeError):  # the check is live: twice the limit is refused
            backend.check_user_data(
                ResourceSpec("d", host, 0, spec.node_type, user_data="#" * 2 * backend.max_user_data_bytes)
            )
        document = yaml.safe_load(spec.user_data)
        env = next(f for f in document["write_files"] if f["path"] == f"/etc/cloud-paas/nodes/{node}.configure.env")
        assert f"ROLE={role}\n" in env["content"] and env["permissions"] == "0600"
        if role == "worker":
            assert f"CONTROLLER={CONTROLLER_ADDRESS}\n" in env["content"]
        # the key is in the one 0600 file the script reads it from: not in the node's properties, not on a command line
        holders = [f["path"] for f in document["write_files"] if munge_key in f["content"]]
        assert holders == [env["path"]]
        assert spec.user_data.count(munge_key) == 1 and munge_key not in str(document["runcmd"])
        assert "slurm_configure.sh" in spec.user_data  # the script itself is inlined


def test_the_firewall_opens_slurm_ports_to_the_private_network_only(plan) -> None:
    private = set(PRIVATE_RANGES)
    srun = {Rule(SRUN_RANGE[0], "tcp", cidr, SRUN_RANGE[1]) for cidr in private}
    found, public = security_rules(plan.spec("d", "slurm_controller_host", 0))
    assert set(found) == {Rule(6817, "tcp", cidr) for cidr in private} | srun and public is True
    found, public = security_rules(plan.spec("d", "slurm_worker_hosts", 0))
    assert set(found) == {Rule(6818, "tcp", cidr) for cidr in private} | srun and public is False


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"ROLE": "worker", "MUNGE_KEY": "a2V5"}, "CONTROLLER is empty"),
        ({"ROLE": "worker", "CONTROLLER": "10.0.0.1", "MUNGE_KEY": "a2V5"}, "at least 32 bytes"),
        ({"ROLE": "controller", "MAX_WORKERS": "4", "MUNGE_KEY": "not base64!"}, "not valid base64"),
        ({"ROLE": "controller", "MAX_WORKERS": "4", "MUNGE_KEY": ""}, "MUNGE_KEY is empty"),
        ({"ROLE": "controller", "MAX_WORKERS": "4", "CLUSTER_NAME": "Bad Name", "MUNGE_KEY": "a2V5"}, "CLUSTER_NAME"),
    ],
)
def test_the_script_refuses_bad_inputs_and_writes_no_key(tmp_path, env, message) -> None:
    result = subprocess.run(
        ["bash", str(PACKAGE / "templates/scripts/slurm_configure.sh")],
        capture_output=True,
        text=True,
        timeout=30,
        env={"PATH": os.environ["PATH"], "SLURM_CONFIGURE_ROOT": str(tmp_path), **env},
    )
    assert result.returncode == 2 and message in result.stderr
    assert not list(tmp_path.rglob("*munge*key*"))


# --------------------------------------------------------------------------------- INDIGO's SLURM types
@pytest.fixture(scope="module")
def indigo_map() -> dict[str, str]:
    if not (SHARED / "examples" / "elastic_cluster.yaml").is_file():
        pytest.skip("needs ../shared/tosca (the INDIGO examples and types)")
    return indigo_import_map(SHARED / "indigo-types")


INDIGO_ATTRIBUTES = {"lrms_server": [{"private_address": ["10.2.0.7"], "public_address": ["198.51.100.3"]}]}


def test_indigo_elastic_cluster_renders_slurm_configure_not_ansible(indigo_map, tmp_path) -> None:
    topology = load_topology(SHARED / "examples" / "elastic_cluster.yaml", import_map=indigo_map, use_cache=False)
    plan = compile_plan(topology, {})
    for host, node, role in (("lrms_server", "lrms_front_end", "controller"), ("lrms_wn", "wn_node", "worker")):
        user_data = plan.spec("d", host, 0, attributes=INDIGO_ATTRIBUTES).user_data
        document = yaml.safe_load(user_data)
        assert "packages" not in document and "ansible-playbook" not in user_data  # INDIGO's roles are never run
        script = next(f for f in document["write_files"] if f["path"] == f"/opt/cloud-paas/{node}/configure.sh")
        assert script["content"] == (PACKAGE / "templates/scripts/slurm_configure.sh").read_text()
        env = next(f for f in document["write_files"] if f["path"].endswith(f"{node}.configure.env"))["content"]
        assert f"ROLE={role}\n" in env and "MUNGE_KEY=''\n" in env
        assert ("CONTROLLER=10.2.0.7\n" if role == "worker" else "CONTROLLER=''\n") in env
        # the example declares no munge key: the script stops at boot and says what to add
        result = run_steps(user_data, tmp_path / host)
        assert result.returncode == 2 and "declare a secret input named munge_key" in result.stderr


def test_an_indigo_template_with_a_munge_key_input_configures_its_cluster(indigo_map, tmp_path) -> None:
    text = (SHARED / "examples" / "elastic_cluster.yaml").read_text()
    text = text.replace(
        "  inputs:\n", "  inputs:\n    munge_key:\n      type: string\n      metadata: { secret: true }\n", 1
    )
    template = tmp_path / "elastic_cluster_with_key.yaml"
    template.write_text(text)
    topology = load_topology(template, import_map=indigo_map, use_cache=False)
    key = base64.b64encode(secrets.token_bytes(64)).decode()
    plan = compile_plan(topology, {"munge_key": key, "wn_num": 3})
    front, worker = tmp_path / "fe", tmp_path / "wn"
    for host, root in (("lrms_server", front), ("lrms_wn", worker)):
        result = run_steps(plan.spec("d", host, 0, attributes=INDIGO_ATTRIBUTES).user_data, root)
        assert result.returncode == 0, result.stderr
        assert (root / "etc/munge/munge.key").read_bytes() == base64.b64decode(key)
    assert slurm_conf(front)["MaxNodeCount"] == "100"  # the front end's wn_num is unset (-1): the default limit
    dropin = (worker / "etc/systemd/system/slurmd.service.d/50-cloud-paas.conf").read_text()
    assert '--conf-server 10.2.0.7:6817 -Z --conf "Feature=cloud"' in dropin  # CPUs and memory: as detected
