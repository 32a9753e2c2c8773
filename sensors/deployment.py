"""Sensors that wait for a deployment to reach a status."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseSensorOperator, conf

from airflow_cloud_paas.exceptions import CloudPaaSError
from airflow_cloud_paas.hooks.store import CloudPaaSStoreHook
from airflow_cloud_paas.triggers.deployment import CloudPaaSDeploymentStateTrigger

if TYPE_CHECKING:
    from airflow.sdk import Context

FAILED_STATUSES = ("CREATE_FAILED", "UPDATE_FAILED", "DELETE_FAILED")


class CloudPaaSDeploymentStateSensor(BaseSensorOperator):
    """Wait until a deployment reaches one of ``target_statuses``; fail on a ``*_FAILED`` status.

    With ``deferrable=True`` the wait runs in the triggerer and holds no worker slot.

    :param deployment_id: the deployment to watch (templated)
    :param target_statuses: statuses that end the wait (default CREATE_COMPLETE)
    :param failure_statuses: statuses that fail the task
    :param cloud_paas_conn_id: the deployment store connection
    :param deferrable: wait in the triggerer (default: the ``[operators] default_deferrable`` setting)
    """

    template_fields: Sequence[str] = ("deployment_id",)

    def __init__(
        self,
        *,
        deployment_id: str,
        target_statuses: Sequence[str] = ("CREATE_COMPLETE",),
        failure_statuses: Sequence[str] = FAILED_STATUSES,
        cloud_paas_conn_id: str = CloudPaaSStoreHook.default_conn_name,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.deployment_id = deployment_id
        self.target_statuses = list(target_statuses)
        self.failure_statuses = list(failure_statuses)
        self.cloud_paas_conn_id = cloud_paas_conn_id
        self.deferrable = deferrable

    @cached_property
    def hook(self) -> CloudPaaSStoreHook:
        """Return the deployment store hook."""
        return CloudPaaSStoreHook(cloud_paas_conn_id=self.cloud_paas_conn_id)

    def poke(self, context: Context) -> bool:
        record = self.hook.store.get(self.deployment_id)
        if record.status in self.failure_statuses:
            raise CloudPaaSError(
                f"Deployment {self.deployment_id} is {record.status}: {record.status_reason or 'no reason given'}"
            )
        self.log.info("Deployment %s is %s", self.deployment_id, record.status)
        return record.status in self.target_statuses

    def execute(self, context: Context) -> Any:
        if not self.deferrable:
            return super().execute(context)
        if self.poke(context):  # already there: no need to defer
            return self.deployment_id
        timeout = self.timeout.total_seconds() if isinstance(self.timeout, timedelta) else self.timeout
        self.defer(
            trigger=CloudPaaSDeploymentStateTrigger(
                deployment_id=self.deployment_id,
                target_statuses=self.target_statuses,
                failure_statuses=self.failure_statuses,
                cloud_paas_conn_id=self.cloud_paas_conn_id,
                poll_interval=float(self.poke_interval),
                timeout=float(timeout) if timeout else None,
            ),
            method_name="execute_complete",
        )

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> str:
        """Resume after the trigger fired: succeed on the target status, raise otherwise.

        :param context: the task context
        :param event: the trigger's event payload
        """
        if not event:
            raise CloudPaaSError(f"Deployment {self.deployment_id}: the trigger returned no event")
        if event.get("status") != "success":
            raise CloudPaaSError(
                f"Deployment {event.get('deployment_id')} wait ended with {event.get('status')}: "
                f"{event.get('state', '')} {event.get('message') or ''}".strip()
            )
        self.log.info("Deployment %s reached %s", event["deployment_id"], event["state"])
        return event["deployment_id"]
