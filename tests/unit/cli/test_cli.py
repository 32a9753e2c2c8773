"""The cloud-paas command as a user runs it (a real subprocess, real templates)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
SPARK = REPO / "airflow_cloud_paas" / "templates" / "spark_cluster.yaml"


def cloud_paas(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("cloud-paas")
    environ = {k: v for k, v in os.environ.items() if k != "AIRFLOW__CORE__UNIT_TEST_MODE"}
    return subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=120,
                          env={**environ, **(env or {})})


def test_validate_prints_the_plan_in_order():
    out = cloud_paas("validate", str(SPARK), "--input", "worker_count=3", "--backend", "local", "--json")
    assert out.returncode == 0, out.stderr
    plan = json.loads(out.stdout)["plan"]
    order = [row["node"] for row in plan]
    assert order.index("spark_master") < order.index("spark_worker")
    assert order.index("spark_worker_hosts") < order.index("spark_worker")
    worker = next(row for row in plan if row["node"] == "spark_worker")
    assert worker["instances"] == 3 and len(worker["resources"]) == 3
    text = cloud_paas("validate", str(SPARK))
    assert text.returncode == 0 and "deployment order" in text.stdout


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--input", "worker_count=99"], ["worker_count"]),
        (["--input", "worker_count=many"], ["worker_count"]),
        (["--input", "no_such_input=1"], ["no_such_input"]),
    ],
)
def test_validate_bad_input_is_a_typed_error(args, words):
    out = cloud_paas("validate", str(SPARK), *args)
    assert out.returncode == 2
    assert "ToscaInputError" in out.stderr and "spark_cluster.yaml" in out.stderr
    for word in words:
        assert word in out.stderr


def test_validate_broken_template(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("tosca_definitions_version: tosca_simple_yaml_1_0\ntopology_template: [unclosed\n")
    out = cloud_paas("validate", str(bad))
    assert out.returncode == 2 and "ToscaSyntaxError" in out.stderr and "bad.yaml" in out.stderr


def test_list_and_show_read_the_store(tmp_path):
    from airflow_cloud_paas.store import DeploymentStore

    url = f"sqlite:///{tmp_path}/store.db"
    store = DeploymentStore(url)
    store.create_deployment("dep-1", "tosca: x", "h", {"admin_password": "hunter2", "n": 2}, "alice", "local")
    listed = cloud_paas("--store-url", url, "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [d["id"] for d in json.loads(listed.stdout)] == ["dep-1"]
    shown = cloud_paas("--store-url", url, "show", "dep-1", "--json")
    assert shown.returncode == 0
    assert "hunter2" not in shown.stdout and json.loads(shown.stdout)["inputs"]["n"] == 2
    missing = cloud_paas("--store-url", url, "show", "nope")
    assert missing.returncode == 2 and "nope" in missing.stderr


def test_validate_lists_what_the_backend_does_not_honour(tmp_path):
    """INDIGO's RStudio on Kubernetes: the Mesos volume driver is a warning, in the text and in --json."""
    from airflow_cloud_paas.tosca import indigo_import_map

    shared = REPO.parent / "shared" / "tosca"
    import_map = tmp_path / "imports.json"
    import_map.write_text(json.dumps(indigo_import_map(shared / "indigo-types")))
    args = ("validate", str(shared / "examples" / "rstudio.yaml"), "--import-map", str(import_map),
            "--input", "rstudio_password=planted-pw", "--backend", "kubernetes")
    out = cloud_paas(*args, "--json")
    assert out.returncode == 0, out.stderr
    warned = json.loads(out.stdout)["not_honoured"]
    assert any("node 'docker_runtime' field 'capabilities.host.volumes[0]'" in w and "dvdi:rexray" in w
               for w in warned), warned
    text = cloud_paas(*args)
    assert text.returncode == 0 and "deploys without honouring" in text.stdout and "dvdi:rexray" in text.stdout
    assert "planted-pw" not in out.stdout + out.stderr + text.stdout + text.stderr
