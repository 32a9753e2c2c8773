"""A real DEEPaaS for the DEEPaaS tests: a digits-cnn trained for a few seconds by the training engine (CPU, one
thread), exported, and served by ``deepaas-run`` from DEEPaaS's own virtual environment, deployed once per session
through the local backend (templates/deepaas.yaml). Without that environment these tests skip, saying so.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from waiting import until

torch = pytest.importorskip("torch", reason="pip install torch==2.13.0 (the training extra)")
pytest.importorskip("sklearn", reason="pip install scikit-learn (the digits ship with it)")

CONN = "deepaas_live"
SKIP = "DEEPaaS is not installed: run `make deepaas-runtime` (or set CLOUD_PAAS_DEEPAAS_VENV)"


@dataclass(frozen=True)
class DigitsModel:
    """An exported digits-cnn and holdout images it classifies right (index -> label), most confident first."""

    directory: Path
    version: str
    sha256: str
    holdout_accuracy: float
    right: list[tuple[int, int]]


@dataclass(frozen=True)
class Served:
    """A deployed DEEPaaS: its URL, process and the connection naming it."""

    url: str
    deployment_id: str
    pid: int
    work_dir: str
    log_file: str
    conn_id: str


def deepaas_installed() -> bool:
    """Return whether DEEPaaS's virtual environment is there."""
    from airflow_cloud_paas.services.training.serving import deepaas_run

    return deepaas_run() is not None


def train_digits(directory: Path, *, epochs: int = 3) -> DigitsModel:
    """Train digits-cnn on the digits' training split (one thread) and export it with its holdout metrics."""
    from airflow_cloud_paas.services.training.data import digits_dataset
    from airflow_cloud_paas.services.training.engine import Trainer, TrainingSpec, evaluate
    from airflow_cloud_paas.services.training.export import save_model
    from airflow_cloud_paas.services.training.models import build_model

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        spec = TrainingSpec(epochs=epochs, batch_size=32, learning_rate=2e-3, device="cpu", num_threads=1,
                            checkpoint_every=0)
        train, holdout = digits_dataset("train"), digits_dataset("holdout")
        trainer = Trainer(lambda: build_model("digits-cnn", 10), train, spec, directory.parent / "checkpoint")
        trainer.fit()
        scores = evaluate(trainer.model, holdout, device="cpu")
        exported = save_model(trainer.model, directory, name="digits-cnn", num_classes=10, input_shape=(1, 8, 8),
                              model_kwargs={"in_channels": 1, "image_size": 8}, training=spec,
                              metrics={"holdout_accuracy": scores.accuracy, "holdout_loss": scores.loss},
                              data={"uri": "sklearn:digits", "description": "1437 digits"})
        model = trainer.model.eval()
        with torch.no_grad():
            probabilities = torch.softmax(model(holdout.tensors[0]), dim=1)
        confidence, predicted = probabilities.max(dim=1)
        right = [(i, int(holdout.tensors[1][i])) for i in confidence.argsort(descending=True).tolist()
                 if predicted[i] == holdout.tensors[1][i]]
    finally:
        torch.set_num_threads(threads)
    meta = json.loads((exported / "model.json").read_text())
    return DigitsModel(exported, meta["version"], meta["weights"]["sha256"], scores.accuracy, right)


@pytest.fixture(scope="session")
def digits_model(tmp_path_factory) -> DigitsModel:
    """Return a digits-cnn trained for a few seconds and exported."""
    return train_digits(tmp_path_factory.mktemp("digits") / "model")


def deploy(model_dir: Path, store_url: str, airflow_home: Path, **inputs):
    """Return the Deployer, backend and request of a DEEPaaS deployment of ``model_dir`` (not created yet)."""
    from airflow_cloud_paas import packaged_template
    from airflow_cloud_paas.backends.local import LocalBackend
    from airflow_cloud_paas.deployer import Deployer
    from airflow_cloud_paas.request import DeploymentRequest
    from airflow_cloud_paas.store import DeploymentStore
    from airflow_cloud_paas.tosca import load_topology

    store = DeploymentStore(store_url)
    backend = LocalBackend(airflow_home / "cloud_paas" / "work", ready_timeout=120)
    request = DeploymentRequest.build(load_topology(packaged_template("deepaas.yaml")),
                                      f"deepaas-{uuid.uuid4().hex[:6]}", {"model_dir": str(model_dir), **inputs},
                                      actor="test")
    return Deployer(request, store, backend), backend, request


def undeploy(deployer) -> None:
    """Delete a deployment through its Deployer."""
    deployer.begin_delete()
    deployer.delete_all()
    deployer.complete_delete()


def gone(pid: int) -> bool:
    """Return whether a process has exited (a zombie not reaped yet counts as gone)."""
    import psutil

    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.fixture(scope="session")
def served(digits_model: DigitsModel, store_url: str, airflow_home: Path) -> Iterator[Served]:
    """Deploy the model on DEEPaaS (templates/deepaas.yaml, local backend); name it in a ``deepaas`` connection."""
    if not deepaas_installed():
        pytest.skip(SKIP)
    from airflow_cloud_paas.deployer import Deployer

    deployer, backend, request = deploy(digits_model.directory, store_url, airflow_home)
    variable = f"AIRFLOW_CONN_{CONN.upper()}"
    pid = None
    try:
        outputs = deployer.create_all()
        server = backend.describe(request.deployment_id, "model_server")[0]
        pid = server.attributes["pid"]
        os.environ[variable] = json.dumps({"conn_type": "deepaas", "host": outputs["deepaas_url"],
                                           "extra": {"timeout": 60}})
        yield Served(url=outputs["deepaas_url"], deployment_id=request.deployment_id, pid=pid,
                     work_dir=server.attributes["work_dir"], log_file=server.attributes["log_file"], conn_id=CONN)
    finally:
        os.environ.pop(variable, None)
        undeploy(Deployer(request, deployer.store, backend))
        if pid:
            until("DEEPaaS stopped", lambda: gone(pid), timeout=60)
