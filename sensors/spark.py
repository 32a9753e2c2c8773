"""Sensors on a deployed Spark standalone cluster."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseSensorOperator

if TYPE_CHECKING:
    from airflow.sdk import Context


class CloudPaaSSparkWorkersSensor(BaseSensorOperator):
    """Wait until the master's ``/json/`` lists exactly ``count`` ALIVE workers.

    :param webui_url: the master's web UI (templated; e.g. a ToscaTaskGroup output)
    :param count: the number of ALIVE workers to wait for (templated)
    """

    template_fields: Sequence[str] = ("webui_url", "count")

    def __init__(self, *, webui_url: str, count: int | str, **kwargs: Any) -> None:
        kwargs.setdefault("poke_interval", 2)
        kwargs.setdefault("timeout", 300)
        super().__init__(**kwargs)
        self.webui_url = webui_url
        self.count = count

    def poke(self, context: Context) -> bool:
        from airflow_cloud_paas.services.spark.client import master_status

        alive = master_status(self.webui_url)["alive_workers"]
        self.log.info("Spark master %s: %d ALIVE worker(s), waiting for %s", self.webui_url, len(alive),
                      self.count)
        return len(alive) == int(self.count)
