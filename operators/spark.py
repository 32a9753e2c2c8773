"""Operators that use a deployed Spark standalone cluster."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from airflow_cloud_paas.exceptions import CloudPaaSError
from airflow_cloud_paas.operators._defaults import CloudPaaSTaskDefaults

if TYPE_CHECKING:
    from airflow.sdk import Context


class CloudPaaSSparkSubmitOperator(CloudPaaSTaskDefaults, BaseOperator):
    """Run a PySpark application on a deployed cluster (``spark-submit``, client mode) and return its result.

    The application prints its JSON result after ``CLOUD_PAAS_RESULT`` (see the bundled
    ``sum_of_squares.py``); ``expect`` checks keys of that result and fails the task on a mismatch.

    :param master_url: the master, ``spark://host:port`` (templated; e.g. a ToscaTaskGroup output)
    :param application: the ``.py`` file; ``None`` runs the bundled sum-of-squares application
    :param application_args: its arguments (templated)
    :param expect: result key -> expected value (templated)
    :param executor_memory: each executor's memory
    :param submit_timeout: seconds the application may run
    """

    template_fields: Sequence[str] = ("master_url", "application", "application_args", "expect")

    def __init__(
        self,
        *,
        master_url: str,
        application: str | None = None,
        application_args: Sequence[Any] = (),
        expect: Mapping[str, Any] | None = None,
        executor_memory: str = "512m",
        submit_timeout: float = 300.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.master_url = master_url
        self.application = application
        self.application_args = application_args
        self.expect = expect
        self.executor_memory = executor_memory
        self.submit_timeout = submit_timeout

    def execute(self, context: Context) -> Any:
        from airflow_cloud_paas.services.spark.client import SUM_OF_SQUARES_APP, submit

        app = self.application or str(SUM_OF_SQUARES_APP)
        run = submit(self.master_url, app, [str(a) for a in self.application_args],
                     executor_memory=self.executor_memory, timeout=self.submit_timeout)
        result = run.result()
        self.log.info("Spark application finished in %.1f s: %s", run.duration_s, result)
        for key, want in (self.expect or {}).items():
            got = result.get(key) if isinstance(result, Mapping) else None
            if got != want:
                raise CloudPaaSError(f"Spark result {key!r} is {got!r}, expected {want!r} ({app})")
        return result
