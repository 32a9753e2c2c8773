"""A sensor that waits until jobs queue up on a SLURM cluster (demand for more workers)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseSensorOperator, PokeReturnValue, conf

from airflow_cloud_paas.services.slurm.errors import SlurmConfigError, SlurmError

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_cloud_paas.hooks.slurm import SlurmHook


class CloudPaaSSlurmQueueSensor(BaseSensorOperator):
    """Wait until at least ``min_pending`` jobs pend in a SLURM cluster's queue; return the queue's summary.

    Each pending task of a job array counts once. The XCom value is ``{"pending": n, "jobs": [...]}``: the count,
    and the oldest pending jobs (up to 50) with their id, name, CPUs, time limit and pending reason. With
    ``deferrable=True`` the wait runs in the triggerer (:class:`~airflow_cloud_paas.triggers.slurm.
    SlurmQueueDemandTrigger`) and holds no worker slot.

    :param min_pending: pending jobs that end the wait (at least 1)
    :param demand_only: count only the jobs a new worker would start, not those that wait for a dependency, a
        begin time or a hold (:data:`~airflow_cloud_paas.services.slurm.probe.NOT_DEMAND`)
    :param slurm_conn_id: the cluster's ``slurm`` connection
    :param deferrable: wait in the triggerer (default: the ``[operators] default_deferrable`` setting)
    """

    template_fields: Sequence[str] = ()
    ui_color = "#dfe8f5"

    def __init__(
        self,
        *,
        min_pending: int = 1,
        demand_only: bool = False,
        slurm_conn_id: str = "slurm_default",
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if isinstance(min_pending, bool) or not isinstance(min_pending, int) or min_pending < 1:
            raise SlurmConfigError("wait for at least 1 pending job", field="min_pending", value=min_pending)
        self.min_pending = min_pending
        self.demand_only = demand_only
        self.slurm_conn_id = slurm_conn_id
        self.deferrable = deferrable

    @cached_property
    def hook(self) -> SlurmHook:
        """Return the hook of the cluster's connection."""
        from airflow_cloud_paas.hooks.slurm import SlurmHook

        return SlurmHook(slurm_conn_id=self.slurm_conn_id)

    def _summary(self) -> dict[str, Any]:
        from airflow_cloud_paas.triggers.slurm import queue_summary

        return queue_summary(self.hook.queue(), demand_only=self.demand_only)

    def poke(self, context: Context) -> PokeReturnValue:
        """Return whether enough jobs pend, with the queue's summary as XCom value.

        :param context: the task context
        """
        summary = self._summary()
        self.log.info(
            "%d job(s) pending on %s (waiting for %d)", summary["pending"], self.slurm_conn_id, self.min_pending
        )
        return PokeReturnValue(is_done=summary["pending"] >= self.min_pending, xcom_value=summary)

    def execute(self, context: Context) -> Any:
        if not self.deferrable:
            return super().execute(context)
        summary = self._summary()
        if summary["pending"] >= self.min_pending:  # already there: no need to defer
            return summary
        from airflow_cloud_paas.triggers.slurm import SlurmQueueDemandTrigger

        timeout = self.timeout.total_seconds() if isinstance(self.timeout, timedelta) else self.timeout
        self.defer(
            trigger=SlurmQueueDemandTrigger(
                slurm_conn_id=self.slurm_conn_id,
                min_pending=self.min_pending,
                demand_only=self.demand_only,
                poll_interval=float(self.poke_interval),
                timeout=float(timeout) if timeout else None,
            ),
            method_name="execute_complete",
        )

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> dict[str, Any]:
        """Return the queue's summary as the trigger saw it; raise if the wait failed or timed out.

        A timeout raises ``AirflowSensorTimeout`` (``AirflowSkipException`` with ``soft_fail``), as when poking.

        :param context: the task context
        :param event: the trigger's event payload
        """
        if event and event.get("status") == "timeout":  # as a poking sensor's timeout: soft_fail skips
            from airflow.sdk.exceptions import AirflowSensorTimeout, AirflowSkipException

            message = f"{self.slurm_conn_id}: {event.get('message')}"
            raise AirflowSkipException(message) if self.soft_fail else AirflowSensorTimeout(message)
        if not event or event.get("status") != "success":
            status = event.get("status") if event else "no event"
            message = event.get("message") if event else "the trigger returned no event"
            raise SlurmError(
                f"waiting for {self.min_pending} pending SLURM job(s) on {self.slurm_conn_id} ended "
                f"with {status}: {message}"
            )
        return {"pending": event["pending"], "jobs": event["jobs"]}
