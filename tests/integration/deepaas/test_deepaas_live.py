"""A trained digits-cnn served by the real DEEPaaS V2 API (``deepaas-run`` from its own virtual environment, on
loopback), used through DEEPaaSHook and the operators: metadata, predictions on a PNG and on JSON pixels, refused
arguments named, a training that completes (deferred as Airflow defers it, and waited in the worker), a running
training cancelled, and a broken model that stops the server with its reason. Nothing is stood in for: the server,
its worker processes and the trainings are real; the Airflow connection is an ``AIRFLOW_CONN_*`` variable."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import psutil
import pytest
from airflow.sdk.exceptions import TaskDeferred
from conftest import SKIP, Served, deepaas_installed, deploy, gone, undeploy
from deferral import resume
from waiting import until

from airflow_cloud_paas.exceptions import ResourceCreateError
from airflow_cloud_paas.hooks.deepaas import DEEPaaSHook
from airflow_cloud_paas.operators.deepaas import (
    CloudPaaSDEEPaaSCancelTrainingOperator,
    CloudPaaSDEEPaaSPredictOperator,
    CloudPaaSDEEPaaSTrainOperator,
)
from airflow_cloud_paas.services.training.errors import DEEPaaSInputError, DEEPaaSNotFoundError
from airflow_cloud_paas.services.training.export import load_model, read_metadata

pytestmark = pytest.mark.integration

QUICK = {"epochs": 1, "num_threads": 1, "device": "cpu"}


def _png(path: Path, index: int) -> Path:
    from PIL import Image

    from airflow_cloud_paas.services.training.data import digits_dataset

    image = digits_dataset("holdout").tensors[0][index, 0].numpy()  # 8x8 in [0, 1]
    Image.fromarray(np.round(image * 255).astype(np.uint8), "L").save(path)
    return path


def test_the_server_lists_the_model_with_its_metadata(served: Served, digits_model) -> None:
    hook = DEEPaaSHook(served.conn_id)
    assert [m["id"] for m in hook.list_models()] == ["cloud-paas"]
    meta = hook.metadata()
    assert (meta["model"], meta["version"], meta["sha256"]) == ("digits-cnn", digits_model.version,
                                                                digits_model.sha256)
    assert meta["input"]["shape"] == [1, 8, 8] and meta["class_labels"] == [str(i) for i in range(10)]
    assert meta["metrics"]["holdout_accuracy"] == pytest.approx(digits_model.holdout_accuracy)
    assert meta["model_dir"] == str(digits_model.directory.resolve())
    ok, message = hook.test_connection()
    assert ok and "cloud-paas" in message


def test_a_png_of_a_known_digit_is_classified_as_that_digit(served: Served, digits_model, tmp_path: Path) -> None:
    assert digits_model.holdout_accuracy > 0.9, "the few seconds of training were not enough"
    index, label = digits_model.right[0]
    predict = CloudPaaSDEEPaaSPredictOperator(task_id="predict", deepaas_conn_id=served.conn_id,
                                              file=str(_png(tmp_path / "digit.png", index)))
    answer = predict.execute({})
    assert json.loads(json.dumps(answer)) == answer  # XCom-ready as it is
    assert (answer["label"], answer["class_index"]) == (str(label), label)
    assert answer["version"] == digits_model.version
    assert sum(answer["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
    # the same image as JSON pixels gets the model's in-process answer
    import torch

    from airflow_cloud_paas.services.training.data import digits_dataset

    pixels = digits_dataset("holdout").tensors[0][index]
    model, _ = load_model(digits_model.directory)
    with torch.no_grad():
        local = torch.softmax(model(pixels[None]), dim=1)[0]
    remote = DEEPaaSHook(served.conn_id).predict(data={"data": pixels[0].tolist()})
    assert remote["class_index"] == label
    assert [remote["probabilities"][str(i)] for i in range(10)] == pytest.approx(local.tolist(), abs=1e-5)


def test_wrong_inputs_and_out_of_schema_arguments_are_refused_naming_the_field(served: Served,
                                                                              tmp_path: Path) -> None:
    hook = DEEPaaSHook(served.conn_id)
    cases = [
        (lambda: hook.predict(data={"data": [[0.5] * 7] * 8}), "data", "shape 1 x 8 x 8"),
        (lambda: hook.predict(data={"data": [[2.0] * 8] * 8}), "data", "in [0.0, 1.0]"),
        (lambda: hook.predict(data={"data": "not json"}), "data", "not JSON"),
        (lambda: hook.predict(file=_text(tmp_path)), "data", "not a readable PNG or JPEG"),
        (lambda: hook.predict(data={"invert": True}), "data", "Missing data"),
        (lambda: hook.train(args={"learning_rate": -1.0}), "learning_rate", "greater than 0.0"),
        (lambda: hook.train(args={"epochs": 0}), "epochs", "greater than or equal to 1"),
        (lambda: hook.train(args={"optimizer": "lion"}), "optimizer", "Must be one of"),
    ]
    for call, field, why in cases:
        with pytest.raises(DEEPaaSInputError) as caught:
            call()
        assert list(caught.value.fields) == [field], (field, caught.value.fields)
        assert caught.value.status == 422 and why in str(caught.value), str(caught.value)
    with pytest.raises(DEEPaaSNotFoundError):
        hook.metadata("no-such-model")
    with pytest.raises(DEEPaaSNotFoundError):
        hook.training_status("0" * 32)


def _text(tmp_path: Path) -> Path:
    path = tmp_path / "notes.txt"
    path.write_text("not an image\n")
    return path


def test_a_training_completes_deferred_and_in_the_worker(served: Served) -> None:
    def make(deferrable: bool) -> CloudPaaSDEEPaaSTrainOperator:
        return CloudPaaSDEEPaaSTrainOperator(task_id="train", deepaas_conn_id=served.conn_id, train_args=QUICK,
                                             deferrable=deferrable, poll_interval=0.5, timeout=240)

    operator = make(True)
    with pytest.raises(TaskDeferred) as deferred:
        operator.execute({})
    assert operator.uuid and deferred.value.trigger.serialize()[1]["uuid"] == operator.uuid
    done = resume(deferred.value, lambda: make(True), {}, timeout=240)
    waited = make(False).execute({})
    for result in (done, waited):
        assert json.loads(json.dumps(result)) == result
        assert result["state"] == "done"
        output = result["result"]["output"]
        model_dir = Path(output["model_dir"])
        assert model_dir.is_relative_to(Path(served.work_dir) / "trainings")
        model, meta = load_model(model_dir)  # a real export: checksum and architecture hold
        assert meta.version == output["version"] and meta.training["epochs"] == 1
        assert meta.data["uri"] == "sklearn:digits" and len(meta.data["digest"]) == 64
        assert output["metrics"]["holdout_accuracy"] > 0.5 and output["step"] == 45
    assert done["uuid"] != waited["uuid"]


def test_a_running_training_is_cancelled_and_its_worker_killed(served: Served, tmp_path: Path,
                                                               digits_model) -> None:
    hook = DEEPaaSHook(served.conn_id)
    server = psutil.Process(served.pid)
    uuid = hook.train(args={**QUICK, "epochs": 500})

    def busy_workers() -> list[int]:
        return [p.pid for p in server.children() if "spawn_main" in " ".join(p.cmdline())
                and p.cpu_percent(interval=0.2) > 20]

    training_worker = until("a worker training", busy_workers, timeout=60)[0]
    assert hook.training_status(uuid)["status"] == "running"
    answer = CloudPaaSDEEPaaSCancelTrainingOperator(task_id="cancel", deepaas_conn_id=served.conn_id,
                                                    uuid=uuid).execute({})
    assert answer["status"] == "cancelled"
    until("the training's worker killed", lambda: gone(training_worker), timeout=30)
    with pytest.raises(DEEPaaSNotFoundError):
        hook.training_status(uuid)
    # the server goes on serving, from a fresh worker
    index, label = digits_model.right[1]
    assert hook.predict(file=_png(tmp_path / "after.png", index))["class_index"] == label


def test_a_model_that_cannot_load_stops_the_server_with_the_file_and_reason(digits_model, store_url, airflow_home,
                                                                            tmp_path: Path) -> None:
    if not deepaas_installed():
        pytest.skip(SKIP)
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(digits_model.directory, broken)
    with (broken / "model.pt").open("ab") as weights:
        weights.write(b"tampered")
    assert read_metadata(broken).sha256 == digits_model.sha256  # model.json alone is fine: DEEPaaS must find it
    deployer, backend, request = deploy(broken, store_url, airflow_home)
    try:
        with pytest.raises(ResourceCreateError) as caught:
            deployer.create_all()
        message = str(caught.value)
        assert f"{broken / 'model.pt'}: has SHA-256" in message and "export the model again" in message, message
        assert not backend.describe(request.deployment_id, "model_server")  # nothing left running
    finally:
        undeploy(deployer)


def test_the_train_endpoint_trains_on_a_data_file_and_refuses_one_that_does_not_fit(served: Served,
                                                                                    tmp_path: Path) -> None:
    from sklearn.datasets import load_digits

    hook = DEEPaaSHook(served.conn_id)
    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)[:, None]
    np.savez(tmp_path / "digits.npz", x=images, y=digits.target.astype(np.int64))
    np.savez(tmp_path / "small.npz", x=images[:, :, :4, :4], y=digits.target.astype(np.int64))  # 4x4: does not fit

    def ended(uuid: str) -> dict:
        return until("the training's end", lambda: (lambda s: s if s["status"] in ("done", "error") else None)(
            hook.training_status(uuid)), timeout=240)

    done = ended(hook.train(args={**QUICK, "dataset": str(tmp_path / "digits.npz")}))
    assert done["status"] == "done", done
    output = done["result"]["output"]
    assert output["data_uri"] == (tmp_path / "digits.npz").resolve().as_uri()
    assert load_model(output["model_dir"])[1].data["uri"] == output["data_uri"]
    refused = ended(hook.train(args={**QUICK, "dataset": str(tmp_path / "small.npz")}))
    assert refused["status"] == "error" and "dataset" in refused["message"] and "fit" in refused["message"]


def test_a_retried_training_task_waits_on_the_training_its_first_try_started(served: Served) -> None:
    from types import SimpleNamespace

    def context(run_id: str) -> dict:
        return {"ti": SimpleNamespace(dag_id="d", run_id=run_id, task_id="train", map_index=-1)}

    def make() -> CloudPaaSDEEPaaSTrainOperator:
        return CloudPaaSDEEPaaSTrainOperator(task_id="train", deepaas_conn_id=served.conn_id,
                                             train_args={**QUICK, "epochs": 3}, deferrable=True, poll_interval=0.5,
                                             timeout=240)

    with pytest.raises(TaskDeferred) as first:
        make().execute(context("run-1"))  # then the worker is lost: nobody resumes this try
    started = first.value.trigger.serialize()[1]["uuid"]
    with pytest.raises(TaskDeferred) as retry:
        make().execute(context("run-1"))
    assert retry.value.trigger.serialize()[1]["uuid"] == started  # no second training
    done = resume(retry.value, make, context("run-1"), timeout=240)
    assert done["uuid"] == started and done["state"] == "done"
    with pytest.raises(TaskDeferred) as again:  # once it ended, a new try (a cleared task) trains anew
        make().execute(context("run-1"))
    again_uuid = again.value.trigger.serialize()[1]["uuid"]
    assert again_uuid != started
    DEEPaaSHook(served.conn_id).cancel_training(again_uuid)
    with pytest.raises(TaskDeferred) as other:  # another task instance trains on its own
        make().execute(context("run-2"))
    other_uuid = other.value.trigger.serialize()[1]["uuid"]
    assert other_uuid != started
    DEEPaaSHook(served.conn_id).cancel_training(other_uuid)
