"""The training operators for real on the CPU: a killed training task's retry resumes from its checkpoint (same
MLflow run, step count and loss going on), evaluation fails a run under its threshold, registration makes an
MLflow model version and an Asset event with the data's lineage; bad input is refused before anything trains.

MLflow runs for real on a SQLite store in the test's folder; the task instance is a stand-in (``SimpleNamespace``
with the fields Airflow's has), and the Asset events go to Airflow's own ``OutletEventAccessors``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")
pytest.importorskip("mlflow")

from airflow.sdk import Asset  # noqa: E402
from waiting import until  # noqa: E402

from airflow_cloud_paas.operators.training import (  # noqa: E402
    CloudPaaSEvaluateModelOperator,
    CloudPaaSRegisterModelOperator,
    CloudPaaSTrainModelOperator,
    model_asset,
)
from airflow_cloud_paas.services.training.errors import (  # noqa: E402
    ModelQualityError,
    TrainingConfigError,
    TrainingDataError,
    TrainingDivergedError,
)

REPO = Path(__file__).resolve().parents[3]
#: long enough that the kill lands before the end on any machine (each checkpoint every 20 steps)
KILLED_ARGS = {"max_steps": 600, "batch_size": 32, "checkpoint_every": 20, "log_every": 20, "num_threads": 1,
               "device": "cpu"}


def context(run_id: str = "manual__1", task_id: str = "train") -> dict[str, Any]:
    return {"ti": SimpleNamespace(dag_id="imgclas", task_id=task_id, run_id=run_id, map_index=-1)}


def tracking(tmp_path: Path) -> dict[str, Any]:
    return {"tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}", "experiment": "tests"}


def settings(tmp_path: Path) -> dict[str, Any]:
    return {"work_dir": str(tmp_path / "training"), **tracking(tmp_path)}


def mlflow_runs(tmp_path: Path) -> list[Any]:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking(tmp_path)["tracking_uri"])
    experiment = client.get_experiment_by_name("tests")
    return list(client.search_runs([experiment.experiment_id])) if experiment else []


def test_a_killed_training_task_resumes_from_its_checkpoint_in_the_same_mlflow_run(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    args = settings(tmp_path)
    child = (
        "import json, sys\n"
        "from types import SimpleNamespace\n"
        "from airflow_cloud_paas.operators.training import CloudPaaSTrainModelOperator\n"
        "args = json.loads(sys.argv[1])\n"
        "op = CloudPaaSTrainModelOperator(task_id='train', training_args=args.pop('training'), **args)\n"
        "op.execute({'ti': SimpleNamespace(dag_id='imgclas', task_id='train', run_id='manual__1', map_index=-1)})\n"
    )
    process = subprocess.Popen([sys.executable, "-c", child, json.dumps({**args, "training": KILLED_ARGS})],
                               cwd=tmp_path, env={**os.environ, "OMP_NUM_THREADS": "1"}, start_new_session=True)
    checkpoints = CloudPaaSTrainModelOperator(task_id="train", **args).folder(context()) / "checkpoints"

    def checkpointed() -> int:
        found = list(checkpoints.glob("*/last.json"))  # one folder per data digest
        return json.loads(found[0].read_text()).get("step", 0) if found else 0

    try:
        until("a checkpoint at step 40 or later", lambda: checkpointed() >= 40, timeout=180, interval=0.02)
        os.killpg(process.pid, signal.SIGKILL)  # the worker is lost mid-training
    finally:
        process.wait(timeout=60)
    killed_at = checkpointed()
    assert killed_at < KILLED_ARGS["max_steps"], "the training ended before it was killed"
    [first_run] = mlflow_runs(tmp_path)
    assert first_run.info.status == "RUNNING"  # killed: nothing ended it

    retry = CloudPaaSTrainModelOperator(task_id="train", training_args=KILLED_ARGS, **args)
    result = retry.execute(context())
    assert result["resumed_from"] is not None and result["resumed_from"] >= killed_at
    assert result["step"] == KILLED_ARGS["max_steps"] and result["run_id"] == first_run.info.run_id
    [run] = mlflow_runs(tmp_path)  # the retry continued the first try's run
    assert run.info.status == "FINISHED"
    from mlflow import MlflowClient

    history = MlflowClient(tracking_uri=args["tracking_uri"]).get_metric_history(run.info.run_id, "loss")
    steps = sorted(m.step for m in history)
    assert steps[0] <= killed_at < steps[-1] == KILLED_ARGS["max_steps"]
    after = min((m for m in history if m.step > result["resumed_from"]), key=lambda m: m.step)
    assert after.value < 1.0, "the loss after the resume went on from the checkpoint's, not from an untrained model's"
    assert Path(result["model_dir"], "model.json").is_file()


def test_evaluation_gates_the_run_and_registration_makes_a_version_and_an_asset_event(tmp_path: Path) -> None:
    from airflow.sdk.execution_time.context import OutletEventAccessors

    torch.set_num_threads(1)
    args = settings(tmp_path)
    quick = {"max_steps": 150, "batch_size": 32, "checkpoint_every": 0, "log_every": 50, "device": "cpu"}
    trained = CloudPaaSTrainModelOperator(task_id="train", training_args=quick, **args).execute(context())
    evaluate = CloudPaaSEvaluateModelOperator(task_id="evaluate", model_dir=trained["model_dir"],
                                              run_id=trained["run_id"], min_accuracy=0.8, **tracking(tmp_path))
    scored = evaluate.execute(context(task_id="evaluate"))
    assert scored["accuracy"] >= 0.8 and scored["samples"] == 360  # 20 % of the 1797 digits, stratified
    assert scored["accuracy"] < 1.0  # 150 steps do not make a perfect model: the gate below can close
    strict = CloudPaaSEvaluateModelOperator(task_id="evaluate", model_dir=trained["model_dir"], min_accuracy=1.0,
                                            **tracking(tmp_path))
    with pytest.raises(ModelQualityError, match="under the required 1.0000"):
        strict.execute(context(task_id="evaluate"))
    with pytest.raises(TrainingConfigError, match="model_dir"):  # the XCom of a training that did not run
        CloudPaaSEvaluateModelOperator(task_id="evaluate", model_dir=None, **tracking(tmp_path)).execute(context())

    register = CloudPaaSRegisterModelOperator(task_id="register", model_dir=trained["model_dir"],
                                              run_id=trained["run_id"], model_name="digits-test", metrics=scored,
                                              **tracking(tmp_path))
    assert register.outlets == [model_asset("digits-test")]
    events = OutletEventAccessors()
    registered = register.execute({**context(task_id="register"), "outlet_events": events})
    assert registered["version"] == "1" and registered["model_uri"] == "models:/digits-test/1"
    extra = events[model_asset("digits-test")].extra
    assert extra["data_uri"] == "sklearn:digits" and extra["version"] == "1"
    assert extra["metrics"]["accuracy"] == scored["accuracy"]
    assert register.execute(context(task_id="register"))["version"] == "1"  # a retry makes no second version
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=args["tracking_uri"])
    [version] = client.search_model_versions("name = 'digits-test'")
    assert version.run_id == trained["run_id"] and version.tags["data_uri"] == "sklearn:digits"
    history = client.get_metric_history(trained["run_id"], "holdout_accuracy")
    assert [m.value for m in history] == [scored["accuracy"]]


@pytest.mark.parametrize(
    ("kwargs", "error", "names"),
    [
        ({"training_args": {"batch_size": 0}}, TrainingConfigError, "batch_size"),
        ({"training_args": {"epochs": 1, "lr": 0.1}}, TrainingConfigError, "lr"),
        ({"training_args": "max_steps=5"}, TrainingConfigError, "training_args"),
        ({"model": "vgg"}, TrainingConfigError, "model"),
        ({"dataset": "s3://bucket/data.npz"}, TrainingConfigError, "dataset"),
        ({"dataset": "/nowhere/data.npz"}, TrainingDataError, "/nowhere/data.npz"),
        ({"dataset": "/etc/passwd"}, TrainingDataError, ".npz"),
        ({"model_name": "../escape"}, TrainingConfigError, "model_name"),
        pytest.param({"training_args": {"device": "cuda"}}, TrainingConfigError, "device",
                     marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")),
    ],
)
def test_bad_input_is_refused_naming_it_before_anything_trains(tmp_path: Path, kwargs: dict[str, Any],
                                                               error: type[Exception], names: str) -> None:
    args = settings(tmp_path)
    with pytest.raises(error, match=names.replace(".", r"\.")):
        CloudPaaSTrainModelOperator(task_id="train", **{**args, **kwargs}).execute(context())
    assert not (tmp_path / "training").exists() and not mlflow_runs(tmp_path)


def test_a_diverging_training_stops_with_a_clear_error_and_a_failed_mlflow_run(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    diverging = {"max_steps": 60, "optimizer": "sgd", "learning_rate": 1e6, "checkpoint_every": 10, "log_every": 10,
                 "device": "cpu"}
    with pytest.raises(TrainingDivergedError, match="lower learning_rate"):
        CloudPaaSTrainModelOperator(task_id="train", training_args=diverging, **settings(tmp_path)).execute(context())
    [run] = mlflow_runs(tmp_path)
    assert run.info.status == "FAILED"


def test_a_data_asset_is_the_training_tasks_inlet(tmp_path: Path) -> None:
    data = Asset(name="digits_npz", uri=(tmp_path / "d.npz").as_uri())
    train = CloudPaaSTrainModelOperator(task_id="train", dataset=data, **settings(tmp_path))
    assert train.inlets == [data] and "dataset" in train.template_fields
