"""Serving a model where Airflow's disk is not: the model archive (pack, fetch over real HTTP on loopback, checks),
the DEEPaaS container on the kubernetes backend (rendered on kmock's emulator), and the VM's boot script (run under
a scratch root; installs nothing). The served process itself runs for real in
tests/integration/deepaas/test_deepaas_serve_entrypoint.py.
"""

from __future__ import annotations

import os
import subprocess
import tarfile
from pathlib import Path

import pytest
from unit.backends.kubernetes_fixtures import KubernetesApiEmulator
from unit.cloudinit.boot import materialize

from airflow_cloud_paas import packaged_template
from airflow_cloud_paas.backends.containers import ContainerRequirements
from airflow_cloud_paas.backends.kubernetes import KubernetesBackend
from airflow_cloud_paas.backends.local import LocalBackend
from airflow_cloud_paas.deployer import Deployer
from airflow_cloud_paas.exceptions import ToscaInputError
from airflow_cloud_paas.plan import compile_plan
from airflow_cloud_paas.request import DeploymentRequest
from airflow_cloud_paas.services.training.archive import fetch_model, main, pack_model
from airflow_cloud_paas.services.training.errors import ExportedModelError
from airflow_cloud_paas.services.training.export import read_metadata
from airflow_cloud_paas.services.training.job import TrainingJob, run
from airflow_cloud_paas.store import DeploymentStore
from airflow_cloud_paas.tosca import load_topology

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("trained")
    job = TrainingJob(model="mlp", training_args={"max_steps": 5, "num_threads": 1, "checkpoint_every": 0})
    return Path(run(job.prepare(), folder, log=lambda *a: None)["model_dir"])


# ------------------------------------------------------------------ the archive
def test_a_packed_model_is_fetched_over_http_and_kept_on_a_restart(model_dir, http_root, tmp_path) -> None:
    root, url = http_root
    pack_model(model_dir, root / "model.tar.gz")
    with tarfile.open(root / "model.tar.gz") as tar:
        assert sorted(tar.getnames()) == ["model.json", "model.pt"]
    fetched = fetch_model(f"{url}/model.tar.gz", tmp_path / "served" / "model")
    assert read_metadata(fetched).sha256 == read_metadata(model_dir).sha256
    (root / "model.tar.gz").unlink()  # a restart finds the model where it left it: no second download
    assert fetch_model(f"{url}/model.tar.gz", fetched) == fetched


def _archive(path: Path, members: dict[str, bytes]) -> Path:
    import io

    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


@pytest.mark.parametrize("case", ["altered", "extra", "escape", "not-a-tar", "cut", "missing", "too-big",
                                  "unpacks-too-big", "ftp"])
def test_a_bad_archive_is_refused_naming_it_and_leaves_nothing(case, model_dir, http_root, tmp_path,
                                                               monkeypatch) -> None:
    root, base = http_root
    good = {n: (model_dir / n).read_bytes() for n in ("model.json", "model.pt")}
    source = root / "model.tar.gz"
    if case == "altered":
        _archive(source, {**good, "model.pt": good["model.pt"][:-8] + b"\0" * 8})
    elif case == "extra":
        _archive(source, {**good, "run.sh": b"#!/bin/sh\n"})
    elif case == "escape":
        _archive(source, {"model.json": good["model.json"], "../model.pt": good["model.pt"]})
    elif case == "not-a-tar":
        source.write_bytes(b"<html>not found</html>")
    elif case == "cut":
        source.write_bytes(pack_model(model_dir, tmp_path / "whole.tar.gz").read_bytes()[:-200])
    elif case == "too-big":  # refused while it streams in
        pack_model(model_dir, source)
        monkeypatch.setenv("CLOUD_PAAS_MODEL_MAX_BYTES", "100")
    elif case == "unpacks-too-big":  # a small archive of a large file
        _archive(source, {**good, "model.pt": b"\0" * 4_000_000})
        monkeypatch.setenv("CLOUD_PAAS_MODEL_MAX_BYTES", "1000000")
        assert source.stat().st_size < 1_000_000
    # a presigned URL: its credentials and signature must never be shown
    url = "ftp://example.org/model.tar.gz" if case == "ftp" else \
        base.replace("http://", "http://reader:pa55word@") + "/model.tar.gz?X-Amz-Signature=s1gnature"
    target = tmp_path / "served" / "model"
    with pytest.raises(ExportedModelError) as caught:
        fetch_model(url, target)
    message = str(caught.value)
    assert ("model.pt" in message) if case == "altered" else ("/model.tar.gz" in message)
    assert "pa55word" not in message and "s1gnature" not in message
    assert not target.exists() and [p.name for p in (tmp_path / "served").iterdir()] == []


def test_another_url_replaces_the_model_and_the_same_one_is_kept(model_dir, http_root, tmp_path) -> None:
    root, base = http_root
    pack_model(model_dir, root / "a.tar.gz")
    target = fetch_model(f"{base}/a.tar.gz", tmp_path / "served" / "model")
    first = read_metadata(target).sha256
    other = TrainingJob(model="mlp", training_args={"max_steps": 3, "seed": 7, "num_threads": 1,
                                                    "checkpoint_every": 0})
    pack_model(run(other.prepare(), tmp_path / "other", log=lambda *a: None)["model_dir"], root / "b.tar.gz")
    assert read_metadata(fetch_model(f"{base}/b.tar.gz", target)).sha256 != first  # an update: the new model
    (root / "b.tar.gz").unlink()
    assert fetch_model(f"{base}/b.tar.gz", target) == target  # a restart: kept, no download


def test_the_command_line_packs_and_fetches(model_dir, tmp_path, capsys) -> None:
    assert main(["pack", str(model_dir), str(tmp_path / "m.tar.gz")]) == 0
    assert main(["fetch", (tmp_path / "m.tar.gz").as_uri(), str(tmp_path / "m")]) == 0
    assert main(["fetch", (tmp_path / "nothing.tar.gz").as_uri(), str(tmp_path / "n")]) == 2
    assert "no such file" in capsys.readouterr().err


# ------------------------------------------------------------------ the container, on the emulator
@pytest.fixture(scope="module")
def api():
    emulator = KubernetesApiEmulator().start()
    yield emulator
    emulator.stop()


def test_the_deepaas_container_serves_on_5000_with_its_gpu_and_model_volume(api, tmp_path) -> None:
    topology = load_topology(packaged_template("deepaas_container.yaml"), use_cache=False)
    with pytest.raises(ToscaInputError, match="model_url"):
        DeploymentRequest.build(topology, "serve-x", {"model_url": "file:///etc/passwd"})
    request = DeploymentRequest.build(topology, "serve-k", {"model_url": "https://models.example.org/m.tar.gz",
                                                           "num_gpus": 1, "workers": 2})
    deploy = Deployer(request, DeploymentStore(f"sqlite:///{tmp_path}/store.db"), LocalBackend(tmp_path / "w"))
    spec = deploy.spec("model_server", 0)
    wanted = ContainerRequirements.from_spec(spec, provider="kubernetes")
    assert (wanted.kind, wanted.image, wanted.gpus) == ("container", "airflow-cloud-paas-deepaas:0.1.0", 1)
    assert [p.key for p in wanted.ports] == ["5000/tcp"] and wanted.public and wanted.data_path == "/models"
    kube = KubernetesBackend(conn_id=None, config_dict=api.kubeconfig("serving"), poll_interval=0.02,
                             ready_timeout=5)
    requested = kube.request(spec)
    try:
        (made,) = [d for d in api.objects("deployments", "serving")
                   if d["metadata"]["name"] == requested.attributes["deployment"]]
        (container,) = made["spec"]["template"]["spec"]["containers"]
        assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
        assert "command" not in container  # the image's own entry point: python -m cloud_paas_deepaas.serve
        assert made["spec"]["template"]["spec"]["securityContext"] == {"fsGroup": 1000}  # the image's user writes
        env = {e["name"]: e["value"] for e in container["env"]}
        assert env["CLOUD_PAAS_MODEL_URL"] == "https://models.example.org/m.tar.gz"
        assert (env["CLOUD_PAAS_MODEL_DIR"], env["DEEPAAS_WORKERS"]) == ("/models/model", "2")
        assert [p["containerPort"] for p in container["ports"]] == [5000]
    finally:
        kube.delete("serve-k")


def test_the_image_copies_what_exists_and_runs_the_plugins_entry_point() -> None:
    dockerfile = (REPO / "Dockerfile.deepaas").read_text()
    copies = [line.split()[1] for line in dockerfile.splitlines() if line.startswith("COPY ")]
    assert copies and all((REPO / c).exists() for c in copies)
    assert 'ENTRYPOINT ["python", "-m", "cloud_paas_deepaas.serve"]' in dockerfile
    assert (REPO / "airflow_cloud_paas/services/training/deepaas_plugin/cloud_paas_deepaas/serve.py").is_file()


# ------------------------------------------------------------------ the VM's boot
@pytest.fixture(scope="module")
def vm_template():
    return load_topology(packaged_template("deepaas_vm.yaml"), use_cache=False)


def boot(vm_template, root: Path, **inputs) -> subprocess.CompletedProcess:
    plan = compile_plan(vm_template, {"model_url": "https://models.example.org/m.tar.gz", **inputs})
    user_data = plan.node("deepaas_host").user_data
    assert len(user_data.encode()) < 16 * 1024  # AWS's user-data limit
    _, (step,) = materialize(user_data, root, commands=("sh",))
    return subprocess.run(step, capture_output=True, text=True, timeout=60,
                          env={"PATH": os.environ["PATH"], "DEEPAAS_CONFIGURE_ROOT": str(root)})


def test_the_vm_boot_writes_the_unit_and_the_environment_of_the_server(vm_template, tmp_path) -> None:
    done = boot(vm_template, tmp_path, port=8080, workers=2, num_gpus=1)
    assert done.returncode == 0, done.stderr
    unit = (tmp_path / "etc/systemd/system/cloud-paas-deepaas.service").read_text()
    assert "ExecStart=/opt/cloud-paas/deepaas/venv/bin/python -m cloud_paas_deepaas.serve" in unit
    assert "KillSignal=SIGINT" in unit and "RestartPreventExitStatus=2" in unit and "User=deepaas" in unit
    env = dict(line.split("=", 1) for line in (tmp_path / "etc/cloud-paas/deepaas.env").read_text().splitlines())
    assert env["CLOUD_PAAS_MODEL_URL"] == '"https://models.example.org/m.tar.gz"'
    assert (env["DEEPAAS_PORT"], env["DEEPAAS_WORKERS"], env["DEEPAAS_LISTEN_IP"]) == ("8080", "2", "0.0.0.0")
    assert env["CLOUD_PAAS_MODEL_DIR"] == "/var/lib/cloud-paas/deepaas/model"


def test_a_vm_cannot_serve_a_model_from_airflows_disk(vm_template, tmp_path) -> None:
    with pytest.raises(ToscaInputError, match="model_url"):
        compile_plan(vm_template, {"model_url": "file:///srv/models/m"})
