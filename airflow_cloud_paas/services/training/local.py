"""Local driver for a training deployment: the training job as a process of this machine.

Registered with the local backend for ``cloud_paas.nodes.deepaas.TrainingJob``. The process is
``python -m airflow_cloud_paas.services.training.job`` (:mod:`~airflow_cloud_paas.services.training.job`) with this
interpreter, its job passed in ``CLOUD_PAAS_TRAIN_*`` variables; it trains in the node's ``output_dir`` (default:
``$AIRFLOW_HOME/cloud_paas/training/deployments/<deployment>/<node>/<index>``), which is not the instance's work
directory: the checkpoints outlive a failed attempt (the local backend removes a failed instance's directory), so
the deployment's retry resumes from them, and the exported model outlives the deployment.

The driver ``runs_to_completion``: the node is ready when the job wrote its ``result.json``; a deferrable deploy
task returns at once and its trigger waits on the job's end. Every argument (the training spec, the data source, the
architecture's name) is checked before the process starts.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from airflow_cloud_paas.backends.base import ResourceSpec
from airflow_cloud_paas.backends.local import Launch, LocalDriver, ProcessRecord
from airflow_cloud_paas.exceptions import ServiceConfigError
from airflow_cloud_paas.services.training.job import (
    FOLDER_ENV,
    TRACKING_ENV,
    TrainingJob,
    default_root,
    read_result,
    require_torch,
)

JOB_TYPES = ("cloud_paas.nodes.deepaas.TrainingJob",)
_JOB_FIELDS = ("model", "dataset", "training_args", "holdout_fraction", "split_seed", "model_name")


def job_of(properties: Mapping[str, Any]) -> TrainingJob:
    """Return the training job a node's properties describe; raise ``TrainingConfigError`` naming a bad field.

    :param properties: the node's properties
    """
    values = {name: properties[name] for name in _JOB_FIELDS if properties.get(name) not in (None, "")}
    return TrainingJob(**values)


def output_folder(spec: ResourceSpec) -> Path:
    """Return the folder the node's job trains in (``output_dir``, else one per deployment, node and index).

    :param spec: the resource wanted
    """
    configured = spec.properties.get("output_dir") or ""
    if not isinstance(configured, str):
        raise ServiceConfigError("a directory path", field="output_dir", value=configured)
    if configured:
        folder = Path(configured).expanduser()
        if not folder.is_absolute():
            raise ServiceConfigError("an absolute directory path", field="output_dir", value=configured)
        return folder / str(spec.index) if spec.index else folder
    return default_root() / "deployments" / spec.deployment_id / spec.node_name / str(spec.index)


class TrainingJobDriver(LocalDriver):
    """Train with this interpreter as a job of the local backend; ready once ``result.json`` is written."""

    runs_to_completion = True

    def check(self, spec: ResourceSpec) -> None:
        """Raise TrainingError without torch; TrainingConfigError/TrainingDataError for a bad job.

        :param spec: the resource wanted
        """
        require_torch()  # before anything that imports it
        from airflow_cloud_paas.services.training.errors import TrainingConfigError
        from airflow_cloud_paas.services.training.models import MODEL_NAMES
        from airflow_cloud_paas.services.training.sources import DataSource

        job = job_of(spec.properties)
        if job.model not in MODEL_NAMES:
            raise TrainingConfigError(f"one of {', '.join(MODEL_NAMES)}", field="model", value=job.model)
        job.spec()  # the training arguments, against their schema
        DataSource.parse(job.dataset)  # the source's form, and a file that exists
        output_folder(spec)
        threads = spec.properties.get("cpu_threads")
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
            raise ServiceConfigError("an integer >= 1", field="cpu_threads", value=threads)

    def command(self, spec: ResourceSpec, work_dir: Path, ports: Mapping[str, int]) -> Launch:
        """Return the job's process: this interpreter running the training job module in the output folder.

        :param spec: the resource wanted
        :param work_dir: the instance's directory (the process's cwd and log)
        :param ports: none
        """
        threads = spec.properties.get("cpu_threads") or 1
        job = job_of(spec.properties)
        job = dataclasses.replace(job, training_args={"num_threads": threads, **job.training_args})
        folder = output_folder(spec).resolve()
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "result.json").unlink(missing_ok=True)  # a result is this attempt's, never an earlier one's
        env = {**job.environment(), FOLDER_ENV: str(folder), "OMP_NUM_THREADS": str(threads),
               "MKL_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}
        if spec.properties.get("tracking_uri"):
            env[TRACKING_ENV] = str(spec.properties["tracking_uri"])
        argv = (sys.executable, "-m", "airflow_cloud_paas.services.training.job")
        return Launch(argv=argv, env=env, data={"folder": str(folder)})

    def ready(self, record: ProcessRecord) -> bool:
        """Return whether the job wrote its result (it ended well).

        :param record: the instance's record
        """
        return read_result(record.data["folder"]) is not None

    def attributes(self, spec: ResourceSpec | None, record: ProcessRecord) -> dict[str, Any]:
        """Return the result: model_dir, model_uri, step, loss, device, precision, resumed_from, samples_per_s,
        data_uri, data_sha256, seconds and the job's folder.

        :param spec: the resource wanted (None when the backend records a job's end it did not wait for)
        :param record: the instance's record
        """
        result = read_result(record.data["folder"]) or {}
        attributes = {k: result.get(k) for k in ("model_dir", "step", "loss", "device", "precision", "resumed_from",
                                                   "samples_per_s", "data_uri", "data_sha256", "seconds", "run_id")}
        attributes["model_uri"] = Path(result["model_dir"]).as_uri() if result.get("model_dir") else None
        attributes["folder"] = record.data["folder"]
        return attributes


__all__ = ["JOB_TYPES", "TrainingJobDriver", "job_of", "output_folder"]
