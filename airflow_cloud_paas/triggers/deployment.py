"""Triggers that wait for deployments without holding a worker slot."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent


class CloudPaaSDeploymentStateTrigger(BaseTrigger):
    """Poll the deployment store until a deployment reaches a target or a failure status.

    Side-effect free (it only reads), so running it twice is harmless.

    :param deployment_id: the deployment to watch
    :param target_statuses: statuses that end the wait successfully
    :param failure_statuses: statuses that end the wait with an error
    :param cloud_paas_conn_id: the deployment store connection
    :param poll_interval: seconds between polls
    :param timeout: seconds before giving up (``None``: no limit)
    """

    def __init__(
        self,
        deployment_id: str,
        target_statuses: Sequence[str],
        failure_statuses: Sequence[str],
        cloud_paas_conn_id: str = "cloud_paas_default",
        poll_interval: float = 5.0,
        timeout: float | None = None,
    ) -> None:
        super().__init__()
        self.deployment_id = deployment_id
        self.target_statuses = list(target_statuses)
        self.failure_statuses = list(failure_statuses)
        self.cloud_paas_conn_id = cloud_paas_conn_id
        self.poll_interval = poll_interval
        self.timeout = timeout

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            "airflow_cloud_paas.triggers.deployment.CloudPaaSDeploymentStateTrigger",
            {
                "deployment_id": self.deployment_id,
                "target_statuses": self.target_statuses,
                "failure_statuses": self.failure_statuses,
                "cloud_paas_conn_id": self.cloud_paas_conn_id,
                "poll_interval": self.poll_interval,
                "timeout": self.timeout,
            },
        )

    def _status(self) -> tuple[str, str | None]:
        from airflow_cloud_paas.hooks.store import CloudPaaSStoreHook

        record = CloudPaaSStoreHook(cloud_paas_conn_id=self.cloud_paas_conn_id).store.get(self.deployment_id)
        return record.status, record.status_reason

    async def run(self) -> AsyncIterator[TriggerEvent]:
        loop = asyncio.get_running_loop()
        deadline = None if self.timeout is None else loop.time() + self.timeout
        while True:
            try:
                status, reason = await asyncio.to_thread(self._status)
            except Exception as err:  # reported to the task, which raises it with context
                yield TriggerEvent({"status": "error", "deployment_id": self.deployment_id, "message": str(err)})
                return
            if status in self.target_statuses:
                yield TriggerEvent({"status": "success", "deployment_id": self.deployment_id, "state": status})
                return
            if status in self.failure_statuses:
                yield TriggerEvent(
                    {"status": "failed", "deployment_id": self.deployment_id, "state": status, "message": reason}
                )
                return
            if deadline is not None and loop.time() >= deadline:
                yield TriggerEvent(
                    {"status": "timeout", "deployment_id": self.deployment_id, "state": status,
                     "message": f"still {status} after {self.timeout} s"}
                )
                return
            await asyncio.sleep(self.poll_interval)


class CloudPaaSNodeReadyTrigger(BaseTrigger):
    """Poll a provider until every instance of a node is RUNNING (a VM booting holds no worker slot).

    Side-effect free: it only describes resources, so running it twice is harmless.

    :param deployment_id: the deployment
    :param node_name: the node template
    :param count: how many RUNNING instances to wait for
    :param backend: the backend name or provider ref (``backend:conn_id``)
    :param cloud_paas_conn_id: the deployment store connection (configures the backend)
    :param poll_interval: seconds between polls
    :param timeout: seconds before giving up (``None``: no limit)
    """

    def __init__(
        self,
        deployment_id: str,
        node_name: str,
        count: int,
        backend: str,
        cloud_paas_conn_id: str = "cloud_paas_default",
        poll_interval: float = 10.0,
        timeout: float | None = None,
    ) -> None:
        super().__init__()
        self.deployment_id = deployment_id
        self.node_name = node_name
        self.count = count
        self.backend = backend
        self.cloud_paas_conn_id = cloud_paas_conn_id
        self.poll_interval = poll_interval
        self.timeout = timeout

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            "airflow_cloud_paas.triggers.deployment.CloudPaaSNodeReadyTrigger",
            {
                "deployment_id": self.deployment_id,
                "node_name": self.node_name,
                "count": self.count,
                "backend": self.backend,
                "cloud_paas_conn_id": self.cloud_paas_conn_id,
                "poll_interval": self.poll_interval,
                "timeout": self.timeout,
            },
        )

    def _states(self) -> list[tuple[int, str]]:
        from airflow_cloud_paas.backends.factory import backend_from_hook
        from airflow_cloud_paas.hooks.store import CloudPaaSStoreHook

        backend = backend_from_hook(CloudPaaSStoreHook(cloud_paas_conn_id=self.cloud_paas_conn_id), self.backend)
        return [(r.index, r.state.value) for r in backend.describe(self.deployment_id, self.node_name)]

    async def run(self) -> AsyncIterator[TriggerEvent]:
        loop = asyncio.get_running_loop()
        deadline = None if self.timeout is None else loop.time() + self.timeout
        base = {"deployment_id": self.deployment_id, "node": self.node_name}
        while True:
            try:
                states = await asyncio.to_thread(self._states)
            except Exception as err:  # reported to the task, which raises it with context
                yield TriggerEvent({**base, "status": "error", "message": str(err)})
                return
            if any(state == "ERROR" for _, state in states):
                yield TriggerEvent({**base, "status": "failed", "states": states})
                return
            if sum(state == "RUNNING" for _, state in states) >= self.count:
                yield TriggerEvent({**base, "status": "success", "states": states})
                return
            if deadline is not None and loop.time() >= deadline:
                yield TriggerEvent({**base, "status": "timeout", "states": states,
                                    "message": f"not running after {self.timeout} s"})
                return
            await asyncio.sleep(self.poll_interval)
