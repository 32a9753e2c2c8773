"""Wait, without holding a worker slot, until work queues up on an elastic deployment."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseSensorOperator, conf

if TYPE_CHECKING:
    from airflow.sdk import Context


class CloudPaaSQueueDemandSensor(BaseSensorOperator):
    """Wait until a job or application waits for a worker on any elastic deployment; return those targets.

    Targets are the worker nodes that an ElasticScaling policy names, on deployments that are up. With
    ``deferrable=True`` the wait runs in the triggerer (:class:`CloudPaaSQueueDemandTrigger`).

    :param cloud_paas_conn_id: the deployment store connection
    :param poll_interval: seconds between two readings of the queues
    :param deferrable: wait in the triggerer (default: the ``[operators] default_deferrable`` setting)
    """

    template_fields: Sequence[str] = ()

    def __init__(self, *, cloud_paas_conn_id: str = "cloud_paas_default", poll_interval: float = 30.0,
                 deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
                 **kwargs: Any) -> None:
        kwargs.setdefault("poke_interval", poll_interval)
        super().__init__(**kwargs)
        self.cloud_paas_conn_id = cloud_paas_conn_id
        self.poll_interval = poll_interval
        self.deferrable = deferrable

    def _targets(self) -> list[dict[str, Any]]:
        from airflow_cloud_paas.hooks.store import CloudPaaSStoreHook
        from airflow_cloud_paas.scaling.elastic import scalable_targets

        return scalable_targets(CloudPaaSStoreHook(cloud_paas_conn_id=self.cloud_paas_conn_id).store)

    @staticmethod
    def _with_demand(targets: list[dict[str, Any]]) -> list[dict[str, Any]]:
        from airflow_cloud_paas.scaling.probe import queued_demand

        return [t for t in targets if queued_demand(t["service"], t["address"]) > 0]

    def poke(self, context: Context) -> bool:
        """Return whether work waits anywhere (in poke mode).

        :param context: the task context
        """
        waiting = self._with_demand(self._targets())
        if waiting:
            context["ti"].xcom_push(key="return_value", value=waiting)
        return bool(waiting)

    def execute(self, context: Context) -> Any:
        if not self.deferrable:
            super().execute(context)
            return context["ti"].xcom_pull(task_ids=self.task_id, key="return_value")
        targets = self._targets()
        waiting = self._with_demand(targets)
        if waiting:
            return waiting
        from airflow_cloud_paas.triggers.scaling import CloudPaaSQueueDemandTrigger

        self.defer(
            trigger=CloudPaaSQueueDemandTrigger(targets=targets, poll_interval=self.poll_interval,
                                                timeout=self.timeout),
            method_name="execute_complete",
            timeout=timedelta(seconds=self.timeout) if self.timeout else None,
        )

    def execute_complete(self, context: Context, event: dict[str, Any]) -> list[dict[str, Any]]:
        """Return the targets with demand, as the trigger saw them.

        :param context: the task context
        :param event: the trigger's event
        """
        if event.get("status") != "success":
            from airflow.exceptions import AirflowException

            raise AirflowException(f"waiting for queued work failed: {event.get('message')}")
        return list(event["targets"])
