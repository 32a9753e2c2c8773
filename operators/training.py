"""Operators of model training (DEEP as a Service): train in the worker, evaluate on held-back data, register.

:class:`CloudPaaSTrainModelOperator` trains a PyTorch classifier with the project's engine
(:mod:`airflow_cloud_paas.services.training.engine`): CUDA when present (bf16 where the GPU has it), else the CPU;
a checkpoint every ``checkpoint_every`` steps in the task instance's own folder, so a retry (after a failure, a
lost worker, a killed task) resumes from it: the step count and the loss go on. Metrics go to the task log and to
MLflow (one MLflow run per task instance, its retries included). The trained model is exported as a model folder
(:mod:`airflow_cloud_paas.services.training.export`), which :class:`CloudPaaSEvaluateModelOperator` scores on the
held-back split (failing the run under ``min_accuracy``) and :class:`CloudPaaSRegisterModelOperator` registers in
MLflow's model registry, announcing the new version as an event of the model's Asset
(:func:`model_asset`: ``cloud-paas-model://<name>``) whose ``extra`` names the data it was trained on: a DAG
scheduled on it (the serving update) runs when a model is registered.

Training here runs in the worker, for jobs that fit one. The folder under ``work_dir`` must be on storage every
worker sees for a retry on another worker to resume (``[cloud_paas] training_dir``; default: under the Airflow
home).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow.sdk import Asset, BaseOperator, conf

from airflow_cloud_paas.operators._args import mapping_arg, name_arg, task_instance_key
from airflow_cloud_paas.operators._defaults import CloudPaaSTaskDefaults
from airflow_cloud_paas.services.training.errors import ModelQualityError, TrainingConfigError, TrainingDataError

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_cloud_paas.services.training.job import TrainingJob
    from airflow_cloud_paas.services.training.tracking import Tracker

#: the Asset group of trained models
ASSET_GROUP = "cloud-paas-model"
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def model_asset(name: str) -> Asset:
    """Return the Asset of a registered model (``cloud-paas-model://<name>``).

    Each registration adds an event whose ``extra`` holds the version, the model folder, its metrics and the data
    it was trained on (``data_uri``, ``data_sha256``).

    :param name: the registered model's name
    """
    return Asset(name=f"model_{_check_name(name, field='name')}", uri=f"cloud-paas-model://{name}",
                 group=ASSET_GROUP)


def _check_name(name: object, *, field: str) -> str:
    return name_arg(name, field=field, error=TrainingConfigError)


def training_dir() -> Path:
    """Return the root of the task instances' training folders (``[cloud_paas] training_dir``)."""
    from airflow_cloud_paas.services.training.job import default_root

    configured = conf.get("cloud_paas", "training_dir", fallback=None)
    # else under AIRFLOW_HOME, as the deployment store finds its default (Airflow 3's [core] has no airflow_home)
    return Path(configured).expanduser() if configured else default_root()


def _model_dir(value: Any) -> str:
    """Return a model folder argument, refusing an empty one (e.g. the XCom of a training that did not run)."""
    if not isinstance(value, str | Path) or not str(value).strip() or str(value) == "None":
        raise TrainingConfigError("the exported model's folder (the training task's model_dir)", field="model_dir",
                                  value=value)
    return str(value)


def _source_of(dataset: Any, context: Context | None) -> str:
    """Return a data source string: the string given, a ``file://`` Asset's URI, or what the latest event of another
    Asset names (its ``extra["uri"]``: the Asset is the data's stable name, each event says where this version is)."""
    if not isinstance(dataset, Asset):
        return dataset
    if dataset.uri.startswith(("file:", "sklearn:")):
        return dataset.uri
    events = context.get("inlet_events") if context else None
    latest = None
    if events is not None:
        try:
            found = events[dataset]
            latest = found[-1] if len(found) else None
        except (KeyError, IndexError):
            latest = None
    source = (latest.extra or {}).get("uri") if latest is not None else None
    if not source:
        raise TrainingDataError(f"the Asset {dataset.uri} has no event naming its data (extra 'uri'): publish the data "
                                "first (a task with it as outlet, setting that extra)")
    return str(source)


class _TrainingBaseOperator(CloudPaaSTaskDefaults, BaseOperator):
    """The MLflow tracking every training operator shares.

    :param experiment: the MLflow experiment
    :param tracking_uri: the MLflow tracking URI (default: ``[cloud_paas] mlflow_tracking_uri``, else a SQLite
        store under the Airflow home)
    """

    ui_color = "#d9ead3"

    def __init__(self, *, experiment: str = "cloud-paas", tracking_uri: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.experiment = experiment
        self.tracking_uri = tracking_uri

    def _tracker(self, run_key: str, run_name: str | None = None) -> Tracker:
        from airflow_cloud_paas.services.training.tracking import Tracker, default_tracking_uri

        uri = self.tracking_uri or conf.get("cloud_paas", "mlflow_tracking_uri", fallback=None) \
            or default_tracking_uri()
        return Tracker(uri, self.experiment, run_key, run_name)

    @staticmethod
    def _instance_key(context: Context | None) -> tuple[str, ...]:
        """Return what names this task instance across its tries: dag, run, task (and map index)."""
        return task_instance_key(context) or ("adhoc",)


class CloudPaaSTrainModelOperator(_TrainingBaseOperator):
    """Train a classifier in the worker: resume from the last checkpoint on a retry, export the model, track it.

    Returns (and, with ``multiple_outputs``, pushes as XComs of the same names) ``{"model_dir", "run_id" (MLflow),
    "step", "loss", "device", "precision", "resumed_from", "samples_per_s", "data_uri", "data_sha256"}``. A bad
    argument raises :class:`~airflow_cloud_paas.services.training.errors.TrainingConfigError` naming it, before
    anything trains; a diverging training (NaN or infinite loss) raises ``TrainingDivergedError`` and keeps the
    last good checkpoint.

    :param model: the architecture (``digits-cnn``, ``mlp``; ``resnet18``/``resnet50`` where torchvision is)
    :param dataset: the data (templated): ``sklearn:digits``, an ``.npz`` file, its ``file://`` URI, or an Asset
        (then also the task's inlet, for lineage): a ``file://`` one, or one whose latest event names the data in
        its ``extra["uri"]``
    :param training_args: the :class:`~airflow_cloud_paas.services.training.engine.TrainingSpec` fields (templated;
        e.g. ``{"max_steps": 500, "batch_size": 64, "checkpoint_every": 100}``)
    :param holdout_fraction: the part of the data held back for evaluation (never trained on)
    :param split_seed: the seed of the split (the evaluation must use the same)
    :param model_name: the model's name (its folder's, its registered model's, its Asset's)
    :param work_dir: the root of the task instances' folders (default: :func:`training_dir`)
    :param experiment: the MLflow experiment
    :param tracking_uri: the MLflow tracking URI
    """

    template_fields: Sequence[str] = ("dataset", "training_args", "model_name", "work_dir", "tracking_uri")

    def __init__(
        self,
        *,
        model: str = "digits-cnn",
        dataset: str | Asset = "sklearn:digits",
        training_args: Mapping[str, Any] | None = None,
        holdout_fraction: float = 0.2,
        split_seed: int = 0,
        model_name: str = "digits-classifier",
        work_dir: str | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("multiple_outputs", True)
        if isinstance(dataset, Asset) and "inlets" not in kwargs:
            kwargs["inlets"] = [dataset]
        super().__init__(**kwargs)
        self.model = model
        self.dataset = dataset
        self.training_args = training_args
        self.holdout_fraction = holdout_fraction
        self.split_seed = split_seed
        self.model_name = model_name
        self.work_dir = work_dir

    def folder(self, context: Context | None) -> Path:
        """Return this task instance's folder (the same for every try): ``checkpoints/`` and ``model/`` in it.

        :param context: the task context
        """
        parts = [_UNSAFE.sub("_", p) for p in self._instance_key(context)]
        return Path(self.work_dir or training_dir()).joinpath(_check_name(self.model_name, field="model_name"),
                                                              *parts)

    def _job(self, context: Context | None) -> TrainingJob:
        from airflow_cloud_paas.services.training.job import TrainingJob

        args = mapping_arg(self.training_args, field="training_args", error=TrainingConfigError, empty_ok=True)
        return TrainingJob(model=self.model, dataset=_source_of(self.dataset, context), training_args=args or {},
                           holdout_fraction=self.holdout_fraction, split_seed=self.split_seed,
                           model_name=_check_name(self.model_name, field="model_name"))

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_cloud_paas.services.training.job import run

        prepared = self._job(context).prepare()  # every argument checked before anything trains
        folder = self.folder(context)
        tracker = self._tracker("/".join(self._instance_key(context)), run_name=f"{self.model_name} {folder.name}")
        return run(prepared, folder, tracker=tracker, log=self.log.info)


class CloudPaaSEvaluateModelOperator(_TrainingBaseOperator):
    """Score a trained model on the held-back split; fail the run when its accuracy is under ``min_accuracy``.

    Returns ``{"accuracy", "loss", "samples"}`` and logs them to the training's MLflow run (``run_id``) as
    ``holdout_accuracy`` and ``holdout_loss``. Under the threshold it raises
    :class:`~airflow_cloud_paas.services.training.errors.ModelQualityError` with both figures, so nothing downstream
    (registration, serving) runs.

    :param model_dir: the exported model (templated: the training task's ``model_dir`` XCom)
    :param dataset: the data it was trained on (templated; the same source as the training's)
    :param holdout_fraction: the same as the training's
    :param split_seed: the same as the training's
    :param min_accuracy: the accuracy under which the run fails (None: never)
    :param run_id: the training's MLflow run (templated; None: not logged)
    :param experiment: the MLflow experiment
    :param tracking_uri: the MLflow tracking URI
    """

    template_fields: Sequence[str] = ("model_dir", "dataset", "min_accuracy", "run_id", "tracking_uri")

    def __init__(self, *, model_dir: str, dataset: str | Asset = "sklearn:digits", holdout_fraction: float = 0.2,
                 split_seed: int = 0, min_accuracy: float | None = None, run_id: str | None = None,
                 **kwargs: Any) -> None:
        if isinstance(dataset, Asset) and "inlets" not in kwargs:
            kwargs["inlets"] = [dataset]
        super().__init__(**kwargs)
        self.model_dir = model_dir
        self.dataset = dataset
        self.holdout_fraction = holdout_fraction
        self.split_seed = split_seed
        self.min_accuracy = min_accuracy
        self.run_id = run_id

    def _threshold(self) -> float | None:
        value = self.min_accuracy
        if value is None or value == "":
            return None
        try:
            threshold = float(value)
        except (TypeError, ValueError):
            threshold = float("nan")
        if isinstance(value, bool) or not 0.0 <= threshold <= 1.0:
            raise TrainingConfigError("an accuracy in [0, 1], or None for no threshold", field="min_accuracy",
                                      value=value)
        return threshold

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_cloud_paas.services.training import engine, export
        from airflow_cloud_paas.services.training.sources import DataSource

        threshold = self._threshold()
        model, _ = export.load_model(_model_dir(self.model_dir))
        source = DataSource.parse(_source_of(self.dataset, context))
        holdout = source.load("holdout", holdout_fraction=self.holdout_fraction, seed=self.split_seed)
        scored = engine.evaluate(model, holdout)
        self.log.info("Held-back accuracy %.4f, loss %.4f on %d examples", scored.accuracy, scored.loss,
                      scored.samples)
        if self.run_id:
            tracker = self._tracker("", None)
            tracker.run_id = str(self.run_id)
            tracker.log_metrics(0, {"holdout_accuracy": scored.accuracy, "holdout_loss": scored.loss})
        if threshold is not None and scored.accuracy < threshold:
            raise ModelQualityError(accuracy=scored.accuracy, threshold=threshold, model_dir=str(self.model_dir))
        return {"accuracy": scored.accuracy, "loss": scored.loss, "samples": scored.samples}


class CloudPaaSRegisterModelOperator(_TrainingBaseOperator):
    """Register a trained model in MLflow's registry; announce the version as an event of the model's Asset.

    The model folder is stored among the training run's artifacts and registered as a new version of
    ``model_name`` (a retry finds the version it made). The task's outlet is :func:`model_asset`; its event's
    ``extra`` holds ``version``, ``model_dir``, ``model_uri`` (``models:/<name>/<version>``), ``run_id``, the
    evaluation's metrics and the data lineage (``data_uri``, ``data_sha256``). Returns the same.

    :param model_dir: the exported model (templated)
    :param run_id: the training's MLflow run (templated)
    :param model_name: the registered model's name (its Asset's)
    :param metrics: the evaluation's figures to keep with the version (templated)
    :param experiment: the MLflow experiment
    :param tracking_uri: the MLflow tracking URI
    """

    template_fields: Sequence[str] = ("model_dir", "run_id", "metrics", "tracking_uri")

    def __init__(self, *, model_dir: str, run_id: str, model_name: str = "digits-classifier",
                 metrics: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        _check_name(model_name, field="model_name")
        if "outlets" not in kwargs:
            kwargs["outlets"] = [model_asset(model_name)]
        super().__init__(**kwargs)
        self.model_dir = model_dir
        self.run_id = run_id
        self.model_name = model_name
        self.metrics = metrics

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_cloud_paas.services.training import export

        _, metadata = export.load_model(_model_dir(self.model_dir))  # a broken folder is refused before registering
        tracker = self._tracker("", None)
        tracker.run_id = str(self.run_id)
        tracker.log_model_dir(self.model_dir)
        metrics = dict(self.metrics or {}) if isinstance(self.metrics, Mapping) else {}
        version = tracker.register(self.model_name, tags={"data_uri": metadata.data.get("uri"),
                                                          "data_sha256": metadata.data.get("digest"),
                                                          **{f"metric.{k}": v for k, v in metrics.items()}})
        result = {"name": self.model_name, "version": version, "model_dir": str(self.model_dir),
                  "model_uri": f"models:/{self.model_name}/{version}", "run_id": str(self.run_id),
                  "metrics": metrics, "data_uri": metadata.data.get("uri"),
                  "data_sha256": metadata.data.get("digest")}
        self.log.info("Registered %s version %s (%s)", self.model_name, version, self.model_dir)
        events = context.get("outlet_events") if context else None
        asset = model_asset(self.model_name)
        for outlet in self.outlets or ():
            if isinstance(outlet, Asset) and outlet.uri == asset.uri and events is not None:
                events[outlet].extra.update(result)
        return result
