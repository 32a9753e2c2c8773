"""DEEP as a Service, the ``imgclas`` example: train an image classifier, gate it, register it, serve it.

``deepaas_imgclas`` trains a small CNN on the latest version of the training data (:data:`TRAINING_DATA`: its
latest event names an ``.npz`` file of images and labels), evaluates it on the held-back split (the run
fails under ``min_accuracy``), registers it in MLflow (an event of the ``cloud-paas-model://imgclas`` Asset, with
the data it came from), deploys it behind the DEEPaaS API (``templates/imgclas.yaml``, the model's marketplace
entry), asks the served model to classify a held-back digit (a PNG) and checks the answer, and only then makes the
new deployment the slot's current one, deleting the one it replaces (blue/green: the previous model serves until
the new one answered). The run's teardown keeps the deployment it promoted and deletes one it did not (a failed run
leaves nothing behind).
The run is scheduled on :data:`TRAINING_DATA`: each new version of the data retrains. ``imgclas_publish_data``
writes that file (scikit-learn's digits) and announces it, so one manual run of it starts the whole cycle.

Training runs in the worker (CUDA when the worker has it); its checkpoints let a retried training resume.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from airflow.sdk import DAG, Asset, Param, task

from airflow_cloud_paas import ToscaDag, packaged_template
from airflow_cloud_paas.operators.deepaas import CloudPaaSDEEPaaSPredictOperator
from airflow_cloud_paas.operators.deployment import CloudPaaSPromoteDeploymentOperator
from airflow_cloud_paas.operators.training import (
    CloudPaaSEvaluateModelOperator,
    CloudPaaSRegisterModelOperator,
    CloudPaaSTrainModelOperator,
)

#: the training data, by a stable name: each event's ``extra["uri"]`` says where that version is (a new event retrains)
TRAINING_DATA = Asset(name="imgclas_training_data", uri="cloud-paas-data://imgclas/training",
                      group="cloud-paas-data")
MODEL_NAME = "imgclas"


def data_file() -> Path:
    """Return where the training data is written: ``CLOUD_PAAS_IMGCLAS_DATA``, else under the Airflow home (read when
    the task runs, never at parse time)."""
    configured = os.environ.get("CLOUD_PAAS_IMGCLAS_DATA")
    home = Path(os.environ.get("AIRFLOW_HOME") or Path.home() / "airflow")
    return Path(configured) if configured else home / "cloud_paas" / "data" / "imgclas.npz"


# [START howto_dag_imgclas_publish_data]
with DAG(
    dag_id="imgclas_publish_data",
    schedule=None,
    catchup=False,
    tags=["cloud-paas", "deepaas", "training"],
    description="Publish the imgclas training data (scikit-learn's digits) as an Asset event",
) as publish:

    @task(outlets=[TRAINING_DATA])
    def publish_digits(outlet_events: Any = None) -> dict[str, object]:
        """Write scikit-learn's digits as a new version of the training data; its Asset event retrains the model."""
        import numpy as np
        from sklearn.datasets import load_digits

        digits = load_digits()
        target = data_file()
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(".tmp.npz")
        np.savez(partial, x=(digits.images / 16.0).astype(np.float32)[:, None], y=digits.target.astype(np.int64))
        partial.replace(target)  # a training never reads a half-written file
        published = {"uri": target.resolve().as_uri(), "path": str(target), "examples": int(len(digits.target))}
        outlet_events[TRAINING_DATA].extra.update(published)
        return published

    publish_digits()
# [END howto_dag_imgclas_publish_data]

# [START howto_dag_deepaas_imgclas]
with ToscaDag(
    packaged_template("imgclas"),
    dag_id="deepaas_imgclas",
    schedule=[TRAINING_DATA],
    catchup=False,
    max_active_runs=1,  # one promotion of the slot at a time
    tags=["cloud-paas", "deepaas", "training"],
    params={
        "training_args": Param({"max_steps": 300, "batch_size": 64, "checkpoint_every": 100, "log_every": 50},
                               type="object", description="the training's arguments (TrainingSpec fields)"),
        "min_accuracy": Param(0.9, type="number", minimum=0, maximum=1,
                              description="the held-back accuracy under which the run fails"),
        "model_dir": Param(None, type=["null", "string"], description="(made by the run: the registered model)"),
    },
    operator_args={"inputs": {"model_dir": "{{ ti.xcom_pull(task_ids='register')['model_dir'] }}",
                              "workers": "{{ params.workers }}", "cpu_threads": "{{ params.cpu_threads }}",
                              "num_gpus": "{{ params.num_gpus }}"}},
) as dag:
    # both read the latest version of the training data (the Asset's latest event names it)
    train = CloudPaaSTrainModelOperator(task_id="train", dataset=TRAINING_DATA,
                                        training_args="{{ params.training_args }}", model_name=MODEL_NAME)
    evaluate = CloudPaaSEvaluateModelOperator(task_id="evaluate", model_dir=train.output["model_dir"],
                                              dataset=train.output["data_uri"], run_id=train.output["run_id"],
                                              min_accuracy="{{ params.min_accuracy }}")
    register = CloudPaaSRegisterModelOperator(task_id="register", model_dir=train.output["model_dir"],
                                              run_id=train.output["run_id"], model_name=MODEL_NAME,
                                              metrics=evaluate.output)

    @task
    def sample_digit(model_dir: str, dataset: str) -> dict[str, object]:
        """Write a held-back image of the run's data as a PNG beside the model, for the smoke test; return its path
        and label."""
        from airflow_cloud_paas.services.training.sources import DataSource, write_sample_image

        holdout = DataSource.parse(dataset).load("holdout")
        path, label = write_sample_image(holdout, 0, Path(model_dir).parent / "smoke" / "digit.png")
        return {"path": str(path), "label": label}

    sample = sample_digit(train.output["model_dir"], train.output["data_uri"])
    serving = dag.tosca
    smoke = CloudPaaSDEEPaaSPredictOperator(task_id="smoke_predict", deepaas_url=serving.output("deepaas_url"),
                                            file="{{ ti.xcom_pull(task_ids='sample_digit')['path'] }}")

    @task
    def check_answer(answer: dict[str, object], expected: dict[str, object]) -> int:
        """Fail the run unless the served model classifies the held-back digit right."""
        if str(answer.get("label")) != str(expected["label"]) and answer.get("class_index") != expected["label"]:
            raise ValueError(f"the served model answered {answer.get('label')!r} for a {expected['label']}: "
                             "the deployment is not promoted")
        return int(expected["label"])

    checked = check_answer(smoke.output, sample)
    promote = CloudPaaSPromoteDeploymentOperator(task_id="promote", slot=f"deepaas-{MODEL_NAME}")
    train >> evaluate >> register >> serving.create_task
    sample >> smoke
    smoke >> checked >> promote
    serving.wrap(smoke, checked, promote)
# [END howto_dag_deepaas_imgclas]
