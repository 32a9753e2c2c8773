"""One training run, the same wherever it runs: in an Airflow worker, or as the job of a training deployment.

:class:`TrainingJob` is what a run is asked to do (architecture, data, :class:`~.engine.TrainingSpec` arguments,
split, model name); :meth:`TrainingJob.prepare` checks all of it and loads the data before anything trains, and
:func:`run` trains into a folder (checkpoints under ``checkpoints/<data digest>``, so a second run in the same folder
resumes: the step count, the data order and the loss go on), exports the model to ``model/`` and returns what it did.
:class:`~airflow_cloud_paas.operators.training.CloudPaaSTrainModelOperator` calls it in the worker; a training
deployment runs this module as a process (``python -m airflow_cloud_paas.services.training.job``) on its host: a
local process (:class:`TrainingJobDriver`), a Kubernetes Job or Docker container of the training image (the
``cloud_paas.nodes.deepaas.TrainingJobContainer`` type), or a GPU VM (cloud-init).

The process reads its job from the environment (``CLOUD_PAAS_TRAIN_*``, see :data:`ENVIRONMENT`), so a container
template and a VM's boot script pass it the same way, writes its metrics to stdout (and to MLflow when
``CLOUD_PAAS_TRAIN_TRACKING_URI`` names a tracking server), and ends with ``result.json`` in its folder (exit code
0), or ``error.json`` naming the field or the file at fault (exit code 2).

Nothing here needs Airflow: the process runs where only the training extra is installed, and where Airflow is
installed too (the project's image, a task's own job) it imports it as a library (``_AIRFLOW__AS_LIBRARY``), so
Airflow's settings and metadata database are never touched.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if __name__ == "__main__":  # a job process: Airflow is a library here (never its settings, nor its database)
    # A job started by an Airflow task inherits the task's environment, whose metadata DB URL Airflow 3 replaces
    # with one that refuses connections; the project's exceptions import airflow.exceptions, which would then fail.
    os.environ.setdefault("_AIRFLOW__AS_LIBRARY", "1")

from airflow_cloud_paas.services.training.errors import (  # noqa: E402
    ExportedModelError,
    TrainingConfigError,
    TrainingError,
)

if TYPE_CHECKING:
    from torch.utils.data import Dataset

    from airflow_cloud_paas.services.training.tracking import Tracker

#: the job's environment variables: field -> variable
ENVIRONMENT = {
    "model": "CLOUD_PAAS_TRAIN_MODEL",
    "dataset": "CLOUD_PAAS_TRAIN_DATASET",
    "training_args": "CLOUD_PAAS_TRAIN_ARGS",  # a JSON object of TrainingSpec fields
    "holdout_fraction": "CLOUD_PAAS_TRAIN_HOLDOUT_FRACTION",
    "split_seed": "CLOUD_PAAS_TRAIN_SPLIT_SEED",
    "model_name": "CLOUD_PAAS_TRAIN_MODEL_NAME",
}
#: the folder the process trains in (checkpoints/, model/, result.json)
FOLDER_ENV = "CLOUD_PAAS_TRAIN_DIR"
#: an MLflow tracking URI the process logs to (none: metrics on stdout only)
TRACKING_ENV = "CLOUD_PAAS_TRAIN_TRACKING_URI"
RESULT_NAME = "result.json"
ERROR_NAME = "error.json"
#: the exit code of a job refused or failed for a reason it names (error.json)
EXIT_REFUSED = 2


@dataclass(frozen=True)
class TrainingJob:
    """What one training run is asked to do.

    :param model: the architecture (``digits-cnn``, ``mlp``; ``resnet18``/``resnet50`` where torchvision is)
    :param dataset: ``sklearn:digits``, an ``.npz`` file or its ``file://`` URI
    :param training_args: :class:`~airflow_cloud_paas.services.training.engine.TrainingSpec` fields
    :param holdout_fraction: the part of the data held back for evaluation (never trained on)
    :param split_seed: the seed of the split (the evaluation must use the same)
    :param model_name: the model's name (its description's, its registered model's)
    :param model_options: ``build_model``'s other keyword arguments (e.g. an mlp's ``hidden``); the classes and the
        input's shape come from the data
    """

    model: str = "digits-cnn"
    dataset: str = "sklearn:digits"
    training_args: Mapping[str, Any] = field(default_factory=dict)
    holdout_fraction: float = 0.2
    split_seed: int = 0
    model_name: str = "digits-classifier"
    model_options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("model", "dataset", "model_name"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise TrainingConfigError("a non-empty string", field=name, value=value)
        for name in ("training_args", "model_options"):
            if not isinstance(getattr(self, name), Mapping):
                raise TrainingConfigError("a mapping", field=name, value=type(getattr(self, name)).__name__)
        fraction = self.holdout_fraction
        if isinstance(fraction, bool) or not isinstance(fraction, int | float) or not 0.0 < fraction < 1.0:
            raise TrainingConfigError("a number in (0, 1)", field="holdout_fraction", value=fraction)
        if isinstance(self.split_seed, bool) or not isinstance(self.split_seed, int):
            raise TrainingConfigError("an integer", field="split_seed", value=self.split_seed)

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> TrainingJob:
        """Read a job from ``CLOUD_PAAS_TRAIN_*`` variables (absent ones keep their defaults).

        :param environ: the environment
        """
        values: dict[str, Any] = {}
        for name, variable in ENVIRONMENT.items():
            text = environ.get(variable)
            if text is None or text == "":
                continue
            if name == "training_args":
                try:
                    values[name] = json.loads(text)
                except ValueError as err:
                    raise TrainingConfigError(f"a JSON object of training arguments ({err})", field="training_args",
                                              value=text[:200]) from None
            elif name in ("holdout_fraction", "split_seed"):
                try:
                    values[name] = float(text) if name == "holdout_fraction" else int(text)
                except ValueError:
                    raise TrainingConfigError("a number", field=name, value=text[:50]) from None
            else:
                values[name] = text
        return cls(**values)

    def environment(self) -> dict[str, str]:
        """Return the ``CLOUD_PAAS_TRAIN_*`` variables that make :meth:`from_env` read this job back."""
        env = {}
        for name, variable in ENVIRONMENT.items():
            value = getattr(self, name)
            env[variable] = json.dumps(dict(value), sort_keys=True) if name == "training_args" else str(value)
        return env

    def spec(self) -> Any:
        """Return the checked :class:`~airflow_cloud_paas.services.training.engine.TrainingSpec`."""
        from airflow_cloud_paas.services.training.engine import TrainingSpec

        return TrainingSpec.from_dict(dict(self.training_args))

    def prepare(self) -> PreparedJob:
        """Check every argument, load the training split and build the model once; train nothing."""
        require_torch()
        from airflow_cloud_paas.services.training.models import build_model
        from airflow_cloud_paas.services.training.sources import DataSource, classes_of, shape_of

        spec = self.spec()
        source = DataSource.parse(self.dataset)
        train_set = source.load("train", holdout_fraction=self.holdout_fraction, seed=self.split_seed)
        channels, size, _ = shape_of(train_set)
        model_kwargs = {**self.model_options, "num_classes": classes_of(train_set), "in_channels": channels,
                        "image_size": size}
        build_model(self.model, **model_kwargs)  # an unknown or unfitting architecture fails here
        return PreparedJob(self, spec, source.uri, source.digest(), train_set, model_kwargs)


def require_torch() -> None:
    """Raise :class:`TrainingError` saying how to install torch when this interpreter has none."""
    try:
        import torch  # noqa: F401
    except ImportError:
        raise TrainingError(f"torch is not installed in {sys.prefix}: install the training extra (pip install "
                            "'airflow-cloud-paas[training]', or `make run RUN_EXTRAS=spark,galaxy,training`)") from None


@dataclass(frozen=True)
class PreparedJob:
    """A checked job with its data loaded (:meth:`TrainingJob.prepare`)."""

    job: TrainingJob
    spec: Any
    data_uri: str
    data_sha256: str
    train_set: Dataset
    model_kwargs: Mapping[str, int]

    def params(self) -> dict[str, Any]:
        """Return what a tracking server records of the run (its parameters)."""
        return {**{f"train.{k}": v for k, v in self.spec.__dict__.items()}, "model": self.job.model,
                "data_uri": self.data_uri, "data_sha256": self.data_sha256,
                "holdout_fraction": self.job.holdout_fraction, "split_seed": self.job.split_seed,
                "train_examples": len(self.train_set)}


def run(prepared: PreparedJob, folder: str | Path, *, tracker: Tracker | None = None,
        log: Callable[..., None] | None = None, class_labels: Sequence[str] | None = None,
        normalisation: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Train into ``folder`` (resuming from its checkpoint), export ``folder/model``; return what it did.

    Returns ``{"model_dir", "run_id" (MLflow, or None), "step", "loss", "device", "precision", "resumed_from",
    "samples_per_s", "data_uri", "data_sha256"}``.

    :param prepared: the checked job
    :param folder: the run's folder, the same for every attempt (a retry resumes from its checkpoint)
    :param tracker: where metrics and parameters go (None: the log only)
    :param log: ``log(format, *args)`` for progress lines (default: stdout)
    :param class_labels: the classes' labels the export records (default: their indices)
    :param normalisation: the input's normalisation the export records (default: range [0, 1])
    """
    from airflow_cloud_paas.services.training import engine, export
    from airflow_cloud_paas.services.training.models import build_model

    job, spec, folder = prepared.job, prepared.spec, Path(folder)
    say = log or (lambda fmt, *args: print(fmt % args, flush=True))

    def on_metrics(step: int, metrics: Mapping[str, float]) -> None:
        say("step %d: %s", step, ", ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
        if tracker is not None:
            tracker.log_metrics(step, metrics)

    kwargs = prepared.model_kwargs
    # the device and precision are checked here too, before anything is tracked; the checkpoints of other data
    # (the same file republished) are never resumed: each data digest has its own
    trainer = engine.Trainer(lambda: build_model(job.model, **kwargs), prepared.train_set, spec,
                             folder / "checkpoints" / prepared.data_sha256[:16], on_metrics=on_metrics)
    run_id = tracker.start() if tracker is not None else None
    try:
        if tracker is not None:
            tracker.log_params(prepared.params())
        result = trainer.fit()
        if result.resumed_from is not None:
            say("Resumed from the checkpoint of step %d (an earlier attempt's)", result.resumed_from)
        channels, size = kwargs["in_channels"], kwargs["image_size"]
        model_dir = export.save_model(
            trainer.model.cpu(), folder / "model", name=job.model, num_classes=kwargs["num_classes"],
            input_shape=(channels, size, size),
            model_kwargs={k: v for k, v in kwargs.items() if k != "num_classes"}, class_labels=class_labels,
            normalisation=normalisation, training=spec,
            data={"uri": prepared.data_uri, "digest": prepared.data_sha256}, version=None,
            metrics={"step": result.step, "loss": result.loss},
            description=f"{job.model_name} ({run_id})" if run_id else job.model_name,
            overwrite=True)  # a retry after the export exports again, from the same final checkpoint
        if tracker is not None:
            tracker.set_tags({"cloud_paas.device": result.device, "cloud_paas.precision": result.precision})
    except BaseException:
        if tracker is not None:
            tracker.end("FAILED")
        raise
    if tracker is not None:
        tracker.end()
    say("Trained %s to step %d (loss %.4f) on %s (%s), %.0f samples/s; model in %s", job.model, result.step,
        result.loss, result.device, result.precision, result.samples_per_s, model_dir)
    return {"model_dir": str(model_dir), "run_id": run_id, "step": result.step, "loss": result.loss,
            "device": result.device, "precision": result.precision, "resumed_from": result.resumed_from,
            "samples_per_s": result.samples_per_s, "data_uri": prepared.data_uri,
            "data_sha256": prepared.data_sha256}


def default_root() -> Path:
    """Return where trainings keep their folders unless told otherwise: ``$AIRFLOW_HOME/cloud_paas/training``."""
    return Path(os.environ.get("AIRFLOW_HOME") or Path.home() / "airflow") / "cloud_paas" / "training"


def read_result(folder: str | Path) -> dict[str, Any] | None:
    """Return a finished job's ``result.json`` (None: not finished, or not written whole yet).

    :param folder: the job's folder
    """
    return _read_json(Path(folder) / RESULT_NAME)


def read_error(folder: str | Path) -> dict[str, Any] | None:
    """Return a refused or failed job's ``error.json`` (None: there is none).

    :param folder: the job's folder
    """
    return _read_json(Path(folder) / ERROR_NAME)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, allow_nan=False))
    os.replace(tmp, path)  # a reader never sees half a result


def _finite(result: Mapping[str, Any]) -> dict[str, Any]:
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in result.items()}


def main(environ: Mapping[str, str] | None = None) -> int:
    """Run the job the environment describes in ``CLOUD_PAAS_TRAIN_DIR``; return the exit code.

    :param environ: the environment (default: the process's)
    """
    environ = os.environ if environ is None else environ
    folder_text = environ.get(FOLDER_ENV)
    if not folder_text:
        print(f"{FOLDER_ENV} must name the job's folder", file=sys.stderr)
        return EXIT_REFUSED
    folder = Path(folder_text)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / ERROR_NAME).unlink(missing_ok=True)  # this attempt's verdict replaces an earlier one's
    started = time.time()
    try:
        prepared = TrainingJob.from_env(environ).prepare()
        tracker = None
        if environ.get(TRACKING_ENV):
            from airflow_cloud_paas.services.training.tracking import Tracker

            tracker = Tracker(environ[TRACKING_ENV], "cloud-paas", f"job/{folder.resolve()}",
                              run_name=f"{prepared.job.model_name} {folder.name}")
        result = run(prepared, folder, tracker=tracker)
    except ImportError as err:  # the training extra is not installed: no retry will do better
        _write_json(folder / ERROR_NAME, {"error": "ImportError", "message": str(err), "field": None})
        print(f"ImportError: {err}: install airflow-cloud-paas[training]", file=sys.stderr, flush=True)
        return EXIT_REFUSED
    except (TrainingError, ExportedModelError) as err:
        _write_json(folder / ERROR_NAME, {"error": type(err).__name__, "message": str(err),
                                          "field": getattr(err, "field", None)})
        print(f"{type(err).__name__}: {err}", file=sys.stderr, flush=True)
        return EXIT_REFUSED
    _write_json(folder / RESULT_NAME, {**_finite(result), "seconds": round(time.time() - started, 3)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
