"""Typed errors of the training service: bad arguments or data (before a step runs), divergence, bad checkpoints."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from airflow_cloud_paas.exceptions import CloudPaaSError, ServiceAPIError, ServiceConfigError


class TrainingError(CloudPaaSError):
    """Base class of every training error."""


class TrainingConfigError(TrainingError, ServiceConfigError):
    """A training argument is invalid (wrong type, out of range, not available here); raised before anything runs.

    :param message: what is allowed and how to fix it
    :param field: the argument concerned (a :class:`~.engine.TrainingSpec` field or a model option)
    :param value: the value given
    """


class TrainingDataError(TrainingError, ValueError):
    """A data set cannot be used: a file is missing, or an array has the wrong shape, dtype or values.

    :param message: what was found, what is expected, and how to fix it
    :param path: the file or folder concerned
    :param array: the array concerned (``x`` or ``y`` of a ``.npz`` file)
    """

    def __init__(self, message: str, *, path: str | Path | None = None, array: str | None = None) -> None:
        self.message, self.path, self.array = message, None if path is None else str(path), array
        where = ": ".join(p for p in (self.path, f"array '{array}'" if array else None) if p)
        super().__init__(f"{where}: {message}" if where else message)

    def __reduce__(self):
        return (_rebuild, (type(self), self.message, {"path": self.path, "array": self.array}))


class TrainingDivergedError(TrainingError):
    """The loss became NaN or infinite; the last good checkpoint is kept as it was.

    :param step: the first step whose loss was not finite
    :param loss: that loss (``nan``, ``inf`` or ``-inf``)
    :param checkpoint: the last good checkpoint, or None when none was written yet
    :param checkpoint_step: the step of that checkpoint
    :param hint: what to change before training again (a lower learning rate, another precision)
    """

    def __init__(
        self, step: int, loss: float, *, checkpoint: str | Path | None = None, checkpoint_step: int | None = None,
        hint: str = "lower learning_rate",
    ) -> None:
        self.step, self.loss, self.hint = step, loss, hint
        self.checkpoint = None if checkpoint is None else str(checkpoint)
        self.checkpoint_step = checkpoint_step
        if self.checkpoint is None:
            kept = "no checkpoint was written before it, so the next run starts from step 0"
        else:
            kept = (f"the last good checkpoint {self.checkpoint} (step {checkpoint_step}) is kept and training "
                    f"resumes from it")
        super().__init__(f"training diverged: loss is {loss} at step {step}; {hint} and run again: {kept}")

    def __reduce__(self):
        return (_rebuild_diverged, (type(self), self.step, self.loss, self.checkpoint, self.checkpoint_step,
                                    self.hint))


class CheckpointError(TrainingError):
    """A checkpoint cannot be read, or was written by another model or training set-up.

    :param message: what differs or is broken, and how to fix it
    :param path: the checkpoint file
    """

    def __init__(self, message: str, *, path: str | Path) -> None:
        self.message, self.path = message, str(path)
        super().__init__(f"checkpoint {self.path}: {message}")

    def __reduce__(self):
        return (_rebuild, (type(self), self.message, {"path": self.path}))


class ModelQualityError(TrainingError):
    """A trained model scores under the accuracy a run asks of it on the held-back data; it is not registered.

    :param accuracy: its accuracy on the held-back split
    :param threshold: the accuracy asked for
    :param model_dir: the model
    """

    def __init__(self, *, accuracy: float, threshold: float, model_dir: str | Path | None = None) -> None:
        self.accuracy, self.threshold = accuracy, threshold
        self.model_dir = None if model_dir is None else str(model_dir)
        where = f"model {self.model_dir}: " if self.model_dir else ""
        super().__init__(f"{where}held-back accuracy {accuracy:.4f} is under the required {threshold:.4f}; train "
                         "longer or on more data, or lower min_accuracy")

    def __reduce__(self):
        return (_rebuild_quality, (type(self), self.accuracy, self.threshold, self.model_dir))


class TrackingError(TrainingError):
    """The experiment tracker (MLflow) refused a call or cannot be reached.

    :param message: what failed (MLflow's own message)
    :param tracking_uri: the tracking URI
    """

    def __init__(self, message: str, *, tracking_uri: str | None = None) -> None:
        self.message, self.tracking_uri = message, tracking_uri
        super().__init__(f"MLflow {tracking_uri}: {message}" if tracking_uri else f"MLflow: {message}")

    def __reduce__(self):
        return (_rebuild, (type(self), self.message, {"tracking_uri": self.tracking_uri}))


class ExportedModelError(CloudPaaSError):
    """An exported model cannot be written or read: a file is missing, malformed, tampered with, or does not fit.

    :param message: what is wrong and how to fix it
    :param path: the directory or file concerned
    """

    def __init__(self, message: str, *, path: str | Path) -> None:
        self.message, self.path = message, str(path)
        super().__init__(f"{self.path}: {message}")

    def __reduce__(self):  # keep the keyword attribute when pickled across processes (DEEPaaS's worker pool)
        return (_rebuild, (type(self), self.message, {"path": self.path}))


# --- DEEPaaS (serving) -------------------------------------------------------------------------------------
class DEEPaaSError(CloudPaaSError):
    """Base class of every DEEPaaS error."""


class DEEPaaSConfigError(DEEPaaSError, ServiceConfigError):
    """A DEEPaaS setting (URL, timeout, an operator's argument) is invalid; raised before anything is sent."""


class DEEPaaSAPIError(DEEPaaSError, ServiceAPIError):
    """A DEEPaaS API call failed or gave an answer that cannot be read (never showing the token)."""

    service = "DEEPaaS"


class DEEPaaSUnreachableError(DEEPaaSAPIError):
    """Nothing answers at the DEEPaaS URL (not started, wrong host or port)."""


class DEEPaaSAuthError(DEEPaaSAPIError):
    """The API refused the token (401) or this use (403)."""


class DEEPaaSNotFoundError(DEEPaaSAPIError):
    """DEEPaaS serves no such model, or knows no such training (it forgets a training once cancelled)."""


class DEEPaaSInputError(DEEPaaSAPIError):
    """DEEPaaS refused the arguments (400/422); ``fields`` maps each refused argument to why.

    :param message: what was refused
    :param fields: argument -> DEEPaaS's reasons
    :param url: the API concerned
    :param status: the HTTP status
    """

    def __init__(self, message: str, *, fields: Mapping[str, Any] | None = None, url: str | None = None,
                 status: int | None = None) -> None:
        self.fields = dict(fields or {})
        super().__init__(message, url=url, status=status)

    def __reduce__(self):
        return (_rebuild_input_error, (type(self), self.message, self.fields, self.url, self.status))


def _rebuild_input_error(cls, message, fields, url, status):
    return cls(message, fields=fields, url=url, status=status)


class DEEPaaSTrainingError(DEEPaaSAPIError):
    """A DEEPaaS training failed, was cancelled, or did not end in time (its state and message are in the error)."""


def _rebuild_quality(cls, accuracy, threshold, model_dir):
    return cls(accuracy=accuracy, threshold=threshold, model_dir=model_dir)


def _rebuild(cls, message, kwargs):
    return cls(message, **kwargs)


def _rebuild_diverged(cls, step, loss, checkpoint, checkpoint_step, hint):
    return cls(step, loss, checkpoint=checkpoint, checkpoint_step=checkpoint_step, hint=hint)
