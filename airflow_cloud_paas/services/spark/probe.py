"""The elastic scaler's view of a Spark standalone cluster: waiting applications and busy workers, from the master."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from airflow_cloud_paas.scaling.policy import QueuedJob, WorkerState
from airflow_cloud_paas.scaling.probe import ClusterProbe, Observation, WorkerView
from airflow_cloud_paas.services.spark.client import master_status

if TYPE_CHECKING:
    from airflow_cloud_paas.backends.base import Resource


class SparkProbe(ClusterProbe):
    """Reads a Spark standalone master's ``/json/``: applications waiting for cores, and each worker's use.

    Spark does not publish how many cores a waiting application asks for, so each WAITING application
    counts as one worker's worth of cores (``app_cores``, default: the workers' size).

    :param webui_url: the master's web UI
    :param app_cores: cores to count per waiting application
    """

    service = "spark"

    def __init__(self, webui_url: str, app_cores: int | None = None) -> None:
        self.webui_url = webui_url
        self.app_cores = app_cores

    def observe(self, workers: Sequence[Resource], now: float) -> Observation:
        """Return the waiting applications and each worker's state from the master.

        :param workers: the Spark worker instances (their ``port`` attribute identifies them)
        :param now: the current time (epoch seconds)
        """
        status = master_status(self.webui_url)
        by_port = {int(w.get("port")): w for w in status["alive_workers"] if w.get("port")}
        views = {}
        for resource in workers:
            entry = by_port.get(int(resource.attributes.get("port") or 0))
            if entry is None:
                continue
            used = int(entry.get("coresused") or 0)
            views[resource.index] = WorkerView(WorkerState.BUSY if used else WorkerState.IDLE,
                                               int(entry.get("cores") or 1), used)
        size = self.app_cores or max([v.cores for v in views.values()] or [1])
        queued = tuple(
            QueuedJob(cpus=size, submitted_s=float(app["starttime"]) / 1000 if app.get("starttime") else None)
            for app in status.get("activeapps", []) if app.get("state") == "WAITING"
        )
        return Observation(queued, views)
