"""Software nodes' configuration rendered as cloud-init user data, and the rendered steps run for real."""

from __future__ import annotations

import email
import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml
from unit.cloudinit.boot import materialize

from airflow_cloud_paas.backends.local import LocalBackend
from airflow_cloud_paas.cloudinit import boot_steps, hosted_software, render_user_data
from airflow_cloud_paas.deployer import Deployer
from airflow_cloud_paas.exceptions import ToscaValidationError
from airflow_cloud_paas.request import DeploymentRequest
from airflow_cloud_paas.store import DeploymentStore
from airflow_cloud_paas.tosca import load_topology

DATA = Path(__file__).with_name("data")
PASSWORD = "it's a $ecret \"pass\" word"


@pytest.fixture(scope="module")
def topology():
    return load_topology(DATA / "webapp.yaml", use_cache=False)


def cloud_config(text: str) -> dict:
    assert text.startswith("#cloud-config\n")
    return yaml.safe_load(text)


def test_hosted_software_follows_host_chains_in_plan_order(topology) -> None:
    assert hosted_software(topology, "vm") == ("db", "web", "app")
    assert hosted_software(topology, "bare_vm") == ()
    assert render_user_data(topology, "bare_vm", {}) is None


def test_interfaces_come_from_the_types(topology) -> None:
    steps = boot_steps(topology, "db", {})
    assert [(s.operation, s.kind, s.inline) for s in steps] == [("create", "shell", True),
                                                                ("configure", "shell", True)]
    assert steps[0].source == (DATA / "scripts/install_db.sh").read_text()
    assert steps[1].inputs == {"DB_PASSWORD": PASSWORD, "DB_NAME": "app", "HOST_CPUS": 2}
    (start,) = boot_steps(topology, "web", {})
    assert (start.operation, start.kind, start.inline, start.inputs) == (
        "start", "ansible", False, {"port": 8080})


def test_user_data_holds_each_nodes_properties_scripts_and_steps(topology) -> None:
    data = cloud_config(render_user_data(topology, "vm", {"db_password": "pw"}))
    files = {f["path"]: f for f in data["write_files"]}
    assert json.loads(files["/etc/cloud-paas/nodes/db.json"]["content"]) == {
        "node": "db", "type": "test.nodes.Database", "properties": {"password": "pw", "name": "app"}}
    assert files["/etc/cloud-paas/nodes/db.json"]["permissions"] == "0600"
    assert files["/opt/cloud-paas/db/configure.sh"]["content"] == (DATA / "scripts/configure_db.sh").read_text()
    assert json.loads(files["/etc/cloud-paas/nodes/web.start.json"]["content"]) == {"port": 8080}
    assert data["packages"] == ["ansible", "curl"]  # the web server's playbook needs Ansible
    commands = [" ".join(c) for c in data["runcmd"]]
    order = [i for i, c in enumerate(commands) if "/opt/cloud-paas/" in c and ("exec bash" in c or "ansible" in c)]
    ran = [commands[i].split("/opt/cloud-paas/")[-1].split()[0] for i in order]
    assert ran == ["db/create.sh", "db/configure.sh", "web/start.yml", "app/configure.sh"]
    assert "curl -fsSL --retry 5 -o /opt/cloud-paas/web/start.yml https://example.org/playbooks/apache_start.yml" \
        in commands



def test_rendered_shell_steps_run_with_their_inputs(topology, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    env = {**os.environ, "CLOUD_PAAS_TEST_OUT": str(out)}
    for command in materialize(render_user_data(topology, "vm", {}), tmp_path / "root")[1]:
        subprocess.run(command, check=True, env=env, timeout=30)
    assert (out / "steps").read_text().split() == ["create", "configure-db", "configure-app"]
    assert (out / "db_password").read_text() == PASSWORD  # quotes, $ and spaces survive the env file
    assert (out / "db_name").read_text() == "app/2"
    assert (out / "app_url").read_text() == "http://localhost:8080/app"
    assert sorted(p.name for p in (tmp_path / "root/var/lib/cloud-paas").iterdir()) == [
        "app.done", "db.done", "web.done"]


def test_a_nodes_own_user_data_is_kept_in_a_multipart_document(topology) -> None:
    own = "#!/bin/sh\necho hello > /tmp/hello\n"
    text = render_user_data(topology, "vm", {"vm_user_data": own}, explicit=own)
    message = email.message_from_string(text)
    assert message.is_multipart()
    parts = message.get_payload()
    assert [p.get_content_type() for p in parts] == ["text/x-shellscript", "text/cloud-config"]
    assert parts[0].get_payload(decode=True).decode() == own
    assert "db/configure.sh" in parts[1].get_payload(decode=True).decode()
    assert text == render_user_data(topology, "vm", {"vm_user_data": own}, explicit=own)  # deterministic


def _variant(tmp_path: Path, old: str, new: str) -> Path:
    (tmp_path / "scripts").mkdir(exist_ok=True)
    for script in (DATA / "scripts").iterdir():
        (tmp_path / "scripts" / script.name).write_text(script.read_text())
    path = tmp_path / "variant.yaml"
    text = (DATA / "webapp.yaml").read_text()
    assert old in text
    path.write_text(text.replace(old, new))
    return path


@pytest.mark.parametrize(("old", "new", "field", "words"), [
    ("create: scripts/install_db.sh", "create: scripts/install_db.exe", "interfaces.Standard.create.implementation",
     "cannot run implementation 'scripts/install_db.exe'"),
    ("create: scripts/install_db.sh", "create: scripts/missing.sh", "interfaces.Standard.create.implementation",
     "'scripts/missing.sh' cannot be read (looked in"),
    ("DB_NAME: { get_property: [SELF, name] }", "db-name: { get_property: [SELF, name] }",
     "interfaces.Standard.configure.inputs", "valid environment variable names"),
])
def test_bad_implementations_fail_before_anything_is_made(tmp_path: Path, old, new, field, words) -> None:
    topology = load_topology(_variant(tmp_path, old, new), use_cache=False)
    backend = LocalBackend(tmp_path / "work")
    store = DeploymentStore(f"sqlite:///{tmp_path}/store.db")
    deployer = Deployer(DeploymentRequest.build(topology, "dep-bad", {}, actor="dag/run"), store, backend)
    with pytest.raises(ToscaValidationError) as caught:
        deployer.begin_create()
    assert caught.value.node == "db" and caught.value.field == field
    assert words in str(caught.value)
    assert store.list() == []  # refused before the deployment was even recorded
    assert not (tmp_path / "work").exists() or not any((tmp_path / "work").iterdir())


def test_user_data_is_kept_out_of_the_specs_repr(topology, tmp_path: Path) -> None:
    backend = LocalBackend(tmp_path / "work")
    store = DeploymentStore(f"sqlite:///{tmp_path}/store.db")
    spec = Deployer(DeploymentRequest.build(topology, "dep-repr", {}, actor="dag/run"), store,
                    backend).spec("vm", 0, with_requirements=False)
    files = {f["path"]: f["content"] for f in cloud_config(spec.user_data)["write_files"]}
    assert json.loads(files["/etc/cloud-paas/nodes/db.json"])["properties"]["password"] == PASSWORD
    assert "$ecret" not in repr(spec) and "user_data=" not in repr(spec)


def test_get_attribute_in_inputs_reads_the_nodes_deployed_before(tmp_path: Path) -> None:
    from unit.backends.local_drivers import SleeperDriver

    topology = load_topology(DATA / "webapp.yaml")
    backend = LocalBackend(tmp_path / "work", drivers={t: SleeperDriver() for t in (
        "test.nodes.Database", "test.nodes.WebServer", "test.nodes.App")})
    store = DeploymentStore(f"sqlite:///{tmp_path}/store.db")
    deployer = Deployer(DeploymentRequest.build(topology, "dep-attr", {}, actor="dag/run"), store, backend)
    try:
        deployer.begin_create()
        with pytest.raises(ToscaValidationError, match="not deployed before this one's host") as caught:
            deployer.spec("vm", 0)  # bare_vm is not there yet
        assert caught.value.field == "interfaces.Standard.configure.inputs.PEER"
        deployer.deploy_node("bare_vm")
        files = {f["path"]: f["content"] for f in cloud_config(deployer.spec("vm", 0).user_data)["write_files"]}
        assert "PEER=127.0.0.1\n" in files["/etc/cloud-paas/nodes/app.configure.env"]
    finally:
        backend.delete("dep-attr")


# ----------------------------------------------------------------- a template reads only its own folder
def _artifact(tmp_path: Path, file: str) -> Path:
    """Return a variant whose database runs an artifact of type Bash at ``file`` (any name, no .sh needed)."""
    path = _variant(tmp_path, "create: scripts/install_db.sh", "create: leak")
    db = "    db:\n      type: test.nodes.Database\n"
    artifacts = f"      artifacts:\n        leak: {{file: '{file}', type: tosca.artifacts.Implementation.Bash}}\n"
    path.write_text(path.read_text().replace(db, db + artifacts))
    return path


def _to_root(tmp_path: Path) -> str:
    return "../" * len(tmp_path.resolve().parts) + "etc/passwd"  # climbs to / whatever tmp_path is


def _symlinked_file(tmp_path: Path) -> Path:
    path = _variant(tmp_path, "create: scripts/install_db.sh", "create: scripts/evil.sh")
    (tmp_path / "scripts/evil.sh").symlink_to("/etc/passwd")
    return path


def _symlinked_folder(tmp_path: Path) -> Path:
    outside = tmp_path.parent / f"{tmp_path.name}-outside"
    outside.mkdir()
    (outside / "x.sh").write_text("echo secret\n")
    path = _variant(tmp_path, "create: scripts/install_db.sh", "create: scripts/sub/x.sh")
    (tmp_path / "scripts/sub").symlink_to(outside, target_is_directory=True)
    return path


ESCAPES = {
    "dot-dot": (lambda tmp: _artifact(tmp, "../../etc/passwd"), "../../etc/passwd", "outside the template's folder"),
    "dot-dot to /": (lambda tmp: _artifact(tmp, _to_root(tmp)), "/etc/passwd", "outside the template's folder"),
    "absolute": (lambda tmp: _artifact(tmp, "/etc/passwd"), "'/etc/passwd' is an absolute path", "own folder"),
    "proc": (lambda tmp: _artifact(tmp, "/proc/self/environ"), "'/proc/self/environ' is an absolute path",
             "own folder"),
    "symlinked file": (_symlinked_file, "'scripts/evil.sh' resolves to /etc/passwd", "symlinks are followed"),
    "symlinked folder": (_symlinked_folder, "'scripts/sub/x.sh' resolves to", "outside the template's folder"),
}
FIELD = "interfaces.Standard.create.implementation"


@pytest.mark.parametrize("case", ESCAPES, ids=list(ESCAPES))
def test_validate_refuses_a_file_outside_the_templates_folder(tmp_path: Path, capsys, case) -> None:
    from airflow_cloud_paas.cli import main

    make, path_words, why = ESCAPES[case]
    template = make(tmp_path)
    assert main(["validate", str(template)]) == 2
    err = capsys.readouterr().err
    assert "ToscaValidationError" in err and "node 'db'" in err and f"field '{FIELD}'" in err
    assert path_words in err and why in err
    assert "root:" not in err and "secret" not in err  # the file was never read


@pytest.mark.parametrize("case", ESCAPES, ids=list(ESCAPES))
def test_a_create_reading_outside_the_templates_folder_makes_nothing(tmp_path: Path, case) -> None:
    make, path_words, _ = ESCAPES[case]
    topology = load_topology(make(tmp_path), use_cache=False)
    backend = LocalBackend(tmp_path / "work")
    store = DeploymentStore(f"sqlite:///{tmp_path}/store.db")
    with pytest.raises(ToscaValidationError) as caught:
        Deployer(DeploymentRequest.build(topology, "dep-leak", {}, actor="dag/run"), store, backend).begin_create()
    assert (caught.value.node, caught.value.field) == ("db", FIELD) and path_words in str(caught.value)
    assert store.list() == []
    assert not (tmp_path / "work").exists() or not any((tmp_path / "work").iterdir())


def test_files_in_sub_folders_and_links_inside_the_folder_still_inline(tmp_path: Path) -> None:
    path = _variant(tmp_path, "create: scripts/install_db.sh", "create: scripts/sub/x.sh")
    (tmp_path / "scripts/sub").mkdir()
    (tmp_path / "scripts/sub/x.sh").write_text("echo nested\n")
    path.write_text(path.read_text().replace("implementation: scripts/configure_db.sh",
                                             "implementation: scripts/alias.sh"))
    (tmp_path / "scripts/alias.sh").symlink_to("sub/x.sh")  # a link that stays inside the folder
    create, configure = boot_steps(load_topology(path, use_cache=False), "db", {})
    assert (create.source, create.inline, configure.source) == ("echo nested\n", True, "echo nested\n")


def test_a_stored_template_reads_only_the_packaged_scripts(tmp_path: Path) -> None:
    from airflow_cloud_paas.cloudinit import PACKAGED_SCRIPTS_DIR
    from airflow_cloud_paas.tosca_text import load_topology_text

    text = (DATA / "webapp.yaml").read_text().replace("implementation: scripts/configure_db.sh",
                                                      "implementation: https://example.org/configure_db.sh")
    packaged = text.replace("create: scripts/install_db.sh", "create: scripts/htcondor_configure.sh")
    (create, _) = boot_steps(load_topology_text(packaged), "db", {})
    assert create.source == (PACKAGED_SCRIPTS_DIR / "htcondor_configure.sh").read_text()
    climbing = text.replace("create: scripts/install_db.sh", "create: scripts/../../../../cloudinit.py.sh")
    with pytest.raises(ToscaValidationError, match="outside") as caught:
        boot_steps(load_topology_text(climbing), "db", {})
    assert caught.value.field == FIELD
