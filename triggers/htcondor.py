"""A trigger that waits for the jobs of an HTCondor cluster without holding a worker slot."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow_cloud_paas.triggers.base import CloudPaaSPollingTrigger

if TYPE_CHECKING:
    from airflow_cloud_paas.hooks.htcondor import ClusterStatus


class CloudPaaSHTCondorJobCompleteTrigger(CloudPaaSPollingTrigger):
    """Poll a cluster's jobs through :class:`~airflow_cloud_paas.hooks.htcondor.HTCondorHook` until they end.

    Events: ``success`` (every job exited 0), ``failed`` (a job was removed, exited non-zero, or is held
    while ``fail_on_hold``), ``timeout`` and ``error`` (the pool could not be asked); all but ``error``
    carry the cluster's counts (:meth:`~airflow_cloud_paas.hooks.htcondor.ClusterStatus.as_dict`).

    :param cluster_id: the cluster to watch
    :param htcondor_conn_id: the pool's connection
    :param poll_interval: seconds between polls
    :param timeout: seconds before giving up (``None``: no limit)
    :param fail_on_hold: end the wait as failed as soon as a job is held
    """

    serialized_fields = ("cluster_id", "htcondor_conn_id", "fail_on_hold")

    def __init__(self, cluster_id: int, htcondor_conn_id: str = "htcondor_default", poll_interval: float = 30.0,
                 timeout: float | None = None, fail_on_hold: bool = True) -> None:
        super().__init__(poll_interval=poll_interval, timeout=timeout)
        self.cluster_id = int(cluster_id)
        self.htcondor_conn_id = htcondor_conn_id
        self.fail_on_hold = fail_on_hold

    def subject(self) -> dict[str, Any]:
        return {"cluster_id": self.cluster_id}

    def poll(self) -> ClusterStatus:
        from airflow_cloud_paas.hooks.htcondor import HTCondorHook

        return HTCondorHook(htcondor_conn_id=self.htcondor_conn_id).job_status(self.cluster_id)

    def finished(self, state: ClusterStatus) -> dict[str, Any] | None:
        if state.done:
            return {**state.as_dict(), "status": "success" if state.succeeded else "failed"}
        if state.held and self.fail_on_hold:
            return {**state.as_dict(), "status": "failed", "message": f"held: {'; '.join(state.hold_reasons)}"}
        return None

    def timed_out(self, state: ClusterStatus) -> dict[str, Any]:
        return {**state.as_dict(), "message": f"not done after {self.timeout} s"}
