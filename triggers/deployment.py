"""Triggers that wait for deployments without holding a worker slot."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow_cloud_paas.triggers.base import CloudPaaSPollingTrigger


class CloudPaaSDeploymentStateTrigger(CloudPaaSPollingTrigger):
    """Poll the deployment store until a deployment reaches a target or a failure status.

    Events: ``success`` and ``failed`` (with the ``state`` reached; ``failed`` with its reason as ``message``),
    ``timeout`` and ``error``, each with the ``deployment_id``.

    :param deployment_id: the deployment to watch
    :param target_statuses: statuses that end the wait successfully
    :param failure_statuses: statuses that end the wait with an error
    :param cloud_paas_conn_id: the deployment store connection
    :param poll_interval: seconds between polls
    :param timeout: seconds before giving up (``None``: no limit)
    """

    serialized_fields = ("deployment_id", "target_statuses", "failure_statuses", "cloud_paas_conn_id")

    def __init__(self, deployment_id: str, target_statuses: Sequence[str], failure_statuses: Sequence[str],
                 cloud_paas_conn_id: str = "cloud_paas_default", poll_interval: float = 5.0,
                 timeout: float | None = None) -> None:
        super().__init__(poll_interval=poll_interval, timeout=timeout)
        self.deployment_id = deployment_id
        self.target_statuses = list(target_statuses)
        self.failure_statuses = list(failure_statuses)
        self.cloud_paas_conn_id = cloud_paas_conn_id

    def subject(self) -> dict[str, Any]:
        return {"deployment_id": self.deployment_id}

    def poll(self) -> tuple[str, str | None]:
        from airflow_cloud_paas.hooks.store import CloudPaaSStoreHook

        record = CloudPaaSStoreHook(cloud_paas_conn_id=self.cloud_paas_conn_id).store.get(self.deployment_id)
        return record.status, record.status_reason

    def finished(self, state: tuple[str, str | None]) -> dict[str, Any] | None:
        status, reason = state
        if status in self.target_statuses:
            return {"status": "success", "state": status}
        if status in self.failure_statuses:
            return {"status": "failed", "state": status, "message": reason}
        return None

    def timed_out(self, state: tuple[str, str | None]) -> dict[str, Any]:
        return {"state": state[0], "message": f"still {state[0]} after {self.timeout} s"}


class CloudPaaSNodeReadyTrigger(CloudPaaSPollingTrigger):
    """Poll a provider until ``count`` instances of a node are RUNNING (a VM booting holds no worker slot).

    Events: ``success``, ``failed`` (an instance is in ERROR), ``timeout`` (each with the instances'
    ``states``, ``[index, state]`` pairs) and ``error``, each with the ``deployment_id`` and ``node``.

    :param deployment_id: the deployment
    :param node_name: the node template
    :param count: how many RUNNING instances to wait for
    :param backend: the backend name or provider ref (``backend:conn_id``)
    :param cloud_paas_conn_id: the deployment store connection (configures the backend)
    :param poll_interval: seconds between polls
    :param timeout: seconds before giving up (``None``: no limit)
    """

    serialized_fields = ("deployment_id", "node_name", "count", "backend", "cloud_paas_conn_id")

    def __init__(self, deployment_id: str, node_name: str, count: int, backend: str,
                 cloud_paas_conn_id: str = "cloud_paas_default", poll_interval: float = 10.0,
                 timeout: float | None = None) -> None:
        super().__init__(poll_interval=poll_interval, timeout=timeout)
        self.deployment_id = deployment_id
        self.node_name = node_name
        self.count = count
        self.backend = backend
        self.cloud_paas_conn_id = cloud_paas_conn_id

    def subject(self) -> dict[str, Any]:
        return {"deployment_id": self.deployment_id, "node": self.node_name}

    def poll(self) -> list[tuple[int, str]]:
        from airflow_cloud_paas.backends.factory import backend_from_hook
        from airflow_cloud_paas.hooks.store import CloudPaaSStoreHook

        backend = backend_from_hook(CloudPaaSStoreHook(cloud_paas_conn_id=self.cloud_paas_conn_id), self.backend)
        return [(r.index, r.state.value) for r in backend.describe(self.deployment_id, self.node_name)]

    def finished(self, state: list[tuple[int, str]]) -> dict[str, Any] | None:
        if any(s == "ERROR" for _, s in state):
            return {"status": "failed", "states": state}
        if sum(s == "RUNNING" for _, s in state) >= self.count:
            return {"status": "success", "states": state}
        return None

    def timed_out(self, state: list[tuple[int, str]]) -> dict[str, Any]:
        return {"states": state, "message": f"not running after {self.timeout} s"}
