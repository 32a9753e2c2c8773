"""Experiment tracking of trainings on MLflow: one MLflow run per Airflow task instance, the model registered.

The tracking URI is any MLflow accepts (``http://mlflow:5000``, ``sqlite:///...``); by default a SQLite store
under the Airflow home (:func:`default_tracking_uri`), with its artifacts beside it. A task's retries continue
the MLflow run of its first try (found by the ``cloud_paas.run_key`` tag), so a resumed training's metrics go on
from the step it resumed at instead of starting a second run. MLflow is imported here only (the ``training``
extra).
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from airflow_cloud_paas.services.training.errors import TrackingError

log = logging.getLogger(__name__)

#: the tag naming the task instance a run belongs to (its retries find the run by it)
RUN_KEY_TAG = "cloud_paas.run_key"
#: where a run's exported model goes among its artifacts (a registered version's source)
MODEL_ARTIFACT = "model"
#: MLflow's limit on a parameter's value
_MAX_PARAM = 6000


def default_tracking_uri(home: str | os.PathLike[str] | None = None) -> str:
    """Return the SQLite store under the Airflow home (``$AIRFLOW_HOME/cloud_paas/mlflow/mlflow.db``).

    :param home: the Airflow home (default: ``AIRFLOW_HOME``, else ``~/airflow``)
    """
    root = Path(home or os.environ.get("AIRFLOW_HOME") or Path.home() / "airflow") / "cloud_paas" / "mlflow"
    root.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{root / 'mlflow.db'}"


def _artifact_root(tracking_uri: str) -> str | None:
    """Return where a new experiment of a local SQLite store keeps artifacts (beside the database), else None."""
    if tracking_uri.startswith("sqlite:///"):
        return (Path(tracking_uri[len("sqlite:///"):]).parent / "artifacts").resolve().as_uri()
    return None


class Tracker:
    """Log a training's parameters, metrics and model to MLflow, in the run of its task instance.

    :param tracking_uri: the MLflow tracking URI
    :param experiment: the experiment's name (made when missing)
    :param run_key: what identifies the task instance across its tries (e.g. ``dag/task/run/map_index``)
    :param run_name: the run's name shown in MLflow
    """

    def __init__(self, tracking_uri: str, experiment: str, run_key: str, run_name: str | None = None) -> None:
        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self.run_key = run_key
        self.run_name = run_name or run_key
        self.run_id: str | None = None

    def _client(self) -> Any:
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=self.tracking_uri)

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as err:  # MLflow raises MlflowException, and its stores' own errors
            raise TrackingError(f"{what} failed: {err}", tracking_uri=self.tracking_uri) from err

    def start(self) -> str:
        """Return the task instance's run: its earlier try's, or a new one; set it running."""
        client = self._client()
        found = self._call(f"experiment {self.experiment!r}", client.get_experiment_by_name, self.experiment)
        experiment_id = found.experiment_id if found else self._call(
            f"create experiment {self.experiment!r}", client.create_experiment, self.experiment,
            artifact_location=_artifact_root(self.tracking_uri))
        key = self.run_key.replace("'", "")
        runs = self._call("search runs", client.search_runs, [experiment_id],
                          filter_string=f"tags.`{RUN_KEY_TAG}` = '{key}'", max_results=1,
                          order_by=["attributes.start_time DESC"])
        if runs:
            self.run_id = runs[0].info.run_id
            self._call("reopen run", client.update_run, self.run_id, status="RUNNING")
            log.info("MLflow run %s (%s): continued from an earlier try", self.run_id, self.tracking_uri)
        else:
            run = self._call("create run", client.create_run, experiment_id, run_name=self.run_name,
                             tags={RUN_KEY_TAG: key})
            self.run_id = run.info.run_id
            log.info("MLflow run %s in experiment %s (%s)", self.run_id, self.experiment, self.tracking_uri)
        return self.run_id

    def _run(self) -> str:
        if self.run_id is None:
            raise TrackingError("the run is not started: call start() first", tracking_uri=self.tracking_uri)
        return self.run_id

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Record parameters (a retry's identical values are accepted; MLflow refuses a changed one).

        :param params: name -> value
        """
        from mlflow.entities import Param

        run_id = self._run()
        existing = self._call("read run", self._client().get_run, run_id).data.params
        fresh = [Param(str(k), str(v)[:_MAX_PARAM]) for k, v in params.items() if str(k) not in existing]
        changed = sorted(str(k) for k, v in params.items() if str(k) in existing and existing[str(k)] != str(v))
        if changed:
            log.warning("MLflow run %s: parameter(s) %s differ from the earlier try's (kept as first logged)",
                        run_id, ", ".join(changed))
        if fresh:
            self._call("log parameters", self._client().log_batch, run_id, params=fresh)

    def log_metrics(self, step: int, metrics: Mapping[str, float]) -> None:
        """Record metrics at a step (non-finite values are skipped: MLflow refuses them).

        :param step: the training step
        :param metrics: name -> value
        """
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(str(k), float(v), now, int(step)) for k, v in metrics.items()
                 if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)]
        if batch:
            self._call("log metrics", self._client().log_batch, self._run(), metrics=batch)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Set tags on the run.

        :param tags: name -> value
        """
        from mlflow.entities import RunTag

        self._call("set tags", self._client().log_batch, self._run(),
                   tags=[RunTag(str(k), str(v)) for k, v in tags.items()])

    def log_model_dir(self, model_dir: str | os.PathLike[str]) -> str:
        """Store an exported model directory among the run's artifacts; return its ``runs:/`` URI.

        :param model_dir: the exported model (see :mod:`airflow_cloud_paas.services.training.export`)
        """
        run_id = self._run()
        self._call("log the model", self._client().log_artifacts, run_id, str(model_dir), MODEL_ARTIFACT)
        return f"runs:/{run_id}/{MODEL_ARTIFACT}"

    def register(self, name: str, *, tags: Mapping[str, Any] | None = None, description: str | None = None) -> str:
        """Register the run's logged model as a new version of a registered model; return the version.

        :param name: the registered model's name
        :param tags: the version's tags
        :param description: the version's description
        """
        client, run_id = self._client(), self._run()
        try:
            client.get_registered_model(name)
        except Exception:  # not there yet (MLflow raises RESOURCE_DOES_NOT_EXIST)
            self._call(f"create registered model {name!r}", client.create_registered_model, name)
        # a retry after the version was made finds it instead of making another
        existing = self._call("search model versions", client.search_model_versions,
                              f"name = '{name.replace(chr(39), '')}' and run_id = '{run_id}'")
        if existing:
            return str(existing[0].version)
        source = self._call("artifact URI", client.get_run, run_id).info.artifact_uri + f"/{MODEL_ARTIFACT}"
        version = self._call(f"register {name!r}", client.create_model_version, name, source, run_id=run_id,
                             tags={str(k): str(v) for k, v in (tags or {}).items()}, description=description)
        return str(version.version)

    def end(self, status: str = "FINISHED") -> None:
        """Mark the run ended: ``FINISHED``, ``FAILED`` or ``KILLED``.

        :param status: the run's final status
        """
        if self.run_id is not None:
            self._call("end run", self._client().set_terminated, self.run_id, status=status)
