"""Training on a deployment: the training job as a local process (waited for, or deferred and killed and resumed),
as a Kubernetes Job asking for GPUs (on kmock's emulator), and as a VM's boot (its script run under a scratch root,
then the job it set up run for real from the environment file it wrote).

Real: the job process, torch training on CPU with one thread, the local backend, the Kubernetes client against the
emulator, the boot script. Stand-ins, named: kmock has no controllers, so the Job's completion is written through
the API (``set_job_status``) as the job controller would; no VM boots and systemd does not run.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from unit.backends.kubernetes_fixtures import KubernetesApiEmulator
from unit.cloudinit.boot import materialize
from waiting import until

from airflow_cloud_paas import packaged_template
from airflow_cloud_paas.backends.base import ResourceState
from airflow_cloud_paas.backends.containers import ContainerRequirements
from airflow_cloud_paas.backends.kubernetes import KubernetesBackend
from airflow_cloud_paas.backends.local import LocalBackend
from airflow_cloud_paas.deployer import Deployer
from airflow_cloud_paas.exceptions import ToscaInputError
from airflow_cloud_paas.plan import compile_plan
from airflow_cloud_paas.request import DeploymentRequest
from airflow_cloud_paas.services.training.errors import TrainingConfigError, TrainingDataError
from airflow_cloud_paas.services.training.export import load_model
from airflow_cloud_paas.services.training.job import TrainingJob, main, read_error, read_result
from airflow_cloud_paas.store import DeploymentStore
from airflow_cloud_paas.tosca import load_topology

SMALL = {"max_steps": 40, "batch_size": 32, "checkpoint_every": 10, "log_every": 10, "num_threads": 1}


def job_env(folder: Path, **args) -> dict[str, str]:
    job = TrainingJob(model="mlp", training_args={**SMALL, **args})
    return {**job.environment(), "CLOUD_PAAS_TRAIN_DIR": str(folder)}


# ------------------------------------------------------------------ the job itself
def test_the_job_reads_back_from_its_environment() -> None:
    job = TrainingJob(model="mlp", dataset="sklearn:digits", training_args={"max_steps": 5}, holdout_fraction=0.25,
                      split_seed=3, model_name="m1")
    assert TrainingJob.from_env(job.environment()) == job


@pytest.mark.parametrize(("env", "field"), [
    ({"CLOUD_PAAS_TRAIN_ARGS": "{not json"}, "training_args"),
    ({"CLOUD_PAAS_TRAIN_HOLDOUT_FRACTION": "1.5"}, "holdout_fraction"),
    ({"CLOUD_PAAS_TRAIN_SPLIT_SEED": "x"}, "split_seed"),
])
def test_a_bad_variable_is_refused_naming_its_field(env, field) -> None:
    with pytest.raises(TrainingConfigError) as caught:
        TrainingJob.from_env(env)
    assert caught.value.field == field


def test_the_process_writes_its_result_and_a_refused_job_says_why(tmp_path) -> None:
    # started by an Airflow task, it inherits the URL Airflow 3 gives task processes to keep them off its database
    poisoned = {"AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": "airflow-db-not-allowed:///",
                "AIRFLOW__CORE__SQL_ALCHEMY_CONN": "airflow-db-not-allowed:///"}
    ran = subprocess.run([sys.executable, "-m", "airflow_cloud_paas.services.training.job"], capture_output=True,
                         text=True, timeout=300, env={**os.environ, **poisoned, **job_env(tmp_path / "ok")})
    assert ran.returncode == 0, ran.stderr
    result = read_result(tmp_path / "ok")
    assert result["step"] == 40 and result["device"] == "cpu" and result["resumed_from"] is None
    assert load_model(result["model_dir"])[1].model == "mlp"
    assert main(job_env(tmp_path / "bad", max_stepz=3)) == 2  # nothing trains
    error = read_error(tmp_path / "bad")
    assert error["error"] == "TrainingConfigError" and error["field"] == "max_stepz"
    assert read_result(tmp_path / "bad") is None and not (tmp_path / "bad" / "checkpoints").exists()


# ------------------------------------------------------------------ on the local backend
@pytest.fixture(scope="module")
def local_template():
    return load_topology(packaged_template("training_job.yaml"), use_cache=False)


def deployer(topology, tmp_path: Path, deployment_id: str, **inputs) -> Deployer:
    store = DeploymentStore(f"sqlite:///{tmp_path}/store.db")
    request = DeploymentRequest.build(topology, deployment_id, {
        "model": "mlp", "max_steps": 60, "checkpoint_every": 10, "output_dir": str(tmp_path / "out"), **inputs})
    return Deployer(request, store, LocalBackend(tmp_path / "work", poll_interval=0.05, ready_timeout=300))


def test_a_training_deployment_trains_and_outputs_its_model(local_template, tmp_path) -> None:
    deploy = deployer(local_template, tmp_path, "train-1")
    outputs = deploy.create_all()
    assert outputs["step"] == 60 and outputs["device"] == "cpu"
    assert Path(outputs["model_dir"]) == tmp_path / "out" / "model"
    model, meta = load_model(outputs["model_dir"])
    assert (meta.model, meta.num_classes) == ("mlp", 10)
    (resource,) = deploy.backend.describe("train-1", "training")
    assert resource.state == ResourceState.RUNNING and resource.attributes["pid"] is None  # done: no process left
    deploy.delete_all()
    assert (tmp_path / "out" / "model" / "model.pt").is_file()  # the model outlives its deployment


def test_bad_training_arguments_are_refused_before_anything_starts(local_template, tmp_path) -> None:
    with pytest.raises(ToscaInputError, match="model"):
        deployer(local_template, tmp_path, "train-2", model="vgg")
    deploy = deployer(local_template, tmp_path, "train-3", dataset=str(tmp_path / "missing.npz"))
    with pytest.raises(TrainingDataError, match="missing.npz"):
        deploy.check()
    assert not (tmp_path / "work" / "train-3").exists()


def test_a_deferred_job_killed_mid_training_is_an_error_and_the_retry_resumes(local_template, tmp_path) -> None:
    deploy = deployer(local_template, tmp_path, "train-4", max_steps=3000, checkpoint_every=20)
    backend: LocalBackend = deploy.backend
    spec = deploy.spec("training_host", 0)
    backend.create(spec)
    spec = deploy.spec("training", 0)
    requested = backend.request(spec)  # returns while it trains
    assert requested.state == ResourceState.CREATING
    checkpoints = tmp_path / "out" / "checkpoints"
    until("a first checkpoint", lambda: any(checkpoints.glob("*/last.pt")), timeout=120, interval=0.05)
    os.killpg(requested.attributes["pid"], signal.SIGKILL)  # a lost worker's job
    (failed,) = until("the job's end", lambda: [r for r in backend.describe("train-4", "training")
                                                if r.state != ResourceState.CREATING], timeout=30, interval=0.05)
    assert failed.state == ResourceState.ERROR and "without finishing" in failed.attributes["error"]
    # the retry: fewer steps left, so it ends soon; it resumes where the checkpoint was
    retry = deployer(local_template, tmp_path, "train-4", max_steps=80, checkpoint_every=20)
    resource = retry.backend.create(retry.spec("training", 0))
    assert resource.state == ResourceState.RUNNING
    assert resource.attributes["resumed_from"] >= 20 and resource.attributes["step"] >= 80
    retry.backend.delete("train-4")
    assert not (tmp_path / "work" / "train-4").exists()


# ------------------------------------------------------------------ as a Kubernetes Job, on the emulator
@pytest.fixture(scope="module")
def api():
    emulator = KubernetesApiEmulator().start()
    yield emulator
    emulator.stop()


def test_the_container_job_asks_kubernetes_for_gpus_and_runs_a_valid_job(api, tmp_path) -> None:
    topology = load_topology(packaged_template("training_job_container.yaml"), use_cache=False)
    store = DeploymentStore(f"sqlite:///{tmp_path}/store.db")
    request = DeploymentRequest.build(topology, "gpu-train", {"num_gpus": 2, "max_steps": 500})
    kube = KubernetesBackend(conn_id=None, config_dict=api.kubeconfig("training"), poll_interval=0.02,
                             ready_timeout=5)
    deploy = Deployer(request, store, kube)
    spec = deploy.spec("training", 0)
    wanted = ContainerRequirements.from_spec(spec, provider="kubernetes")
    assert (wanted.kind, wanted.gpus, wanted.gpu_vendor, wanted.retries) == ("job", 2, "nvidia", 3)
    requested = kube.request(spec)
    assert requested.state != ResourceState.RUNNING  # deferrable: it returns while the job runs
    (job,) = [j for j in api.objects("jobs", "training") if j["metadata"]["name"] == requested.attributes["job"]]
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert container["command"] == ["python", "-m", "airflow_cloud_paas.services.training.job"]
    assert pod["restartPolicy"] == "Never" and job["spec"]["backoffLimit"] == 3
    assert pod["securityContext"] == {"fsGroup": 0}  # the image's airflow user (group 0) writes to the volume
    assert [m["mountPath"] for m in container["volumeMounts"]] == ["/training"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["CLOUD_PAAS_TRAIN_DIR"] == "/training"
    job_spec = TrainingJob.from_env(env)  # what the pod will run is a job the engine accepts
    assert (job_spec.model, job_spec.spec().max_steps, job_spec.spec().precision) == ("resnet18", 500, "auto")
    api.set_job_status("training", requested.attributes["job"], {"succeeded": 1, "conditions": [
        {"type": "Complete", "status": "True"}]})  # the job controller's stand-in
    until("the job complete", lambda: kube.describe("gpu-train")[0].state == ResourceState.RUNNING, timeout=10,
          interval=0.05)
    kube.delete("gpu-train")


# ------------------------------------------------------------------ on a GPU VM: the boot, then the job
def test_the_vm_boot_sets_up_the_job_that_then_trains(local_template, tmp_path) -> None:
    plan = compile_plan(local_template, {"model": "mlp", "max_steps": 30, "checkpoint_every": 10, "num_gpus": 1})
    host = plan.node("training_host")
    assert len(host.user_data.encode()) < 16 * 1024  # AWS's user-data limit
    _, (step,) = materialize(host.user_data, tmp_path / "root", commands=("sh",))
    done = subprocess.run(step, capture_output=True, text=True, timeout=60,
                          env={"PATH": os.environ["PATH"], "TRAINING_JOB_ROOT": str(tmp_path / "root")})
    assert done.returncode == 0, done.stderr
    unit = (tmp_path / "root/etc/systemd/system/cloud-paas-training.service").read_text()
    assert "ExecStart=/opt/cloud-paas/training/venv/bin/python -m airflow_cloud_paas.services.training.job" in unit
    assert "RestartPreventExitStatus=2" in unit and "ConditionPathExists=!/var/lib/cloud-paas/training/result.json" \
        in unit
    env_file = tmp_path / "root/etc/cloud-paas/training.env"
    assert env_file.stat().st_mode & 0o077 == 0
    env = {}
    for line in env_file.read_text().splitlines():  # systemd's EnvironmentFile, read as a shell would
        name, _, value = line.partition("=")
        env[name] = shlex.split(value)[0] if value else ""
    assert env["CLOUD_PAAS_TRAIN_DIR"] == "/var/lib/cloud-paas/training"
    assert json.loads(env["CLOUD_PAAS_TRAIN_ARGS"])["max_steps"] == 30
    # what the unit would start, run here with the folder moved under the scratch root
    env["CLOUD_PAAS_TRAIN_DIR"] = str(tmp_path / "root/var/lib/cloud-paas/training")
    ran = subprocess.run([sys.executable, "-m", "airflow_cloud_paas.services.training.job"], capture_output=True,
                         text=True, timeout=300, env={"PATH": os.environ["PATH"], **env})
    assert ran.returncode == 0, ran.stderr
    assert read_result(env["CLOUD_PAAS_TRAIN_DIR"])["step"] == 30


def test_a_bad_output_dir_stops_the_boot_saying_so(local_template, tmp_path) -> None:
    plan = compile_plan(local_template, {"output_dir": "relative/dir"})
    _, (step,) = materialize(plan.node("training_host").user_data, tmp_path, commands=("sh",))
    done = subprocess.run(step, capture_output=True, text=True, timeout=60,
                          env={"PATH": os.environ["PATH"], "TRAINING_JOB_ROOT": str(tmp_path)})
    assert done.returncode == 2 and "OUTPUT_DIR must be an absolute path" in done.stderr


def test_without_torch_the_check_says_which_extra_to_install(local_template, tmp_path) -> None:
    # a `make run` venv has no training extra: the check must say so, not fail importing torch (found on one)
    script = textwrap.dedent(f"""
        import sys
        sys.modules["torch"] = None  # import torch raises ImportError, as where it is not installed
        from airflow_cloud_paas import packaged_template
        from airflow_cloud_paas.backends.local import LocalBackend
        from airflow_cloud_paas.deployer import Deployer
        from airflow_cloud_paas.request import DeploymentRequest
        from airflow_cloud_paas.services.training.errors import TrainingError
        from airflow_cloud_paas.store import DeploymentStore
        from airflow_cloud_paas.tosca import load_topology
        request = DeploymentRequest.build(load_topology(packaged_template("training_job.yaml")), "t", {{}})
        deploy = Deployer(request, DeploymentStore("sqlite:///{tmp_path}/s.db"), LocalBackend("{tmp_path}/w"))
        try:
            deploy.check()
        except TrainingError as err:
            print("refused:", err)
    """)
    ran = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert ran.returncode == 0, ran.stderr
    assert "refused: torch is not installed" in ran.stdout and "airflow-cloud-paas[training]" in ran.stdout
