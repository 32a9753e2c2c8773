"""A trigger that waits for the jobs of an HTCondor cluster without holding a worker slot."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent


class CloudPaaSHTCondorJobCompleteTrigger(BaseTrigger):
    """Poll a cluster's jobs through :class:`~airflow_cloud_paas.services.condor.hook.HTCondorHook` until they end.

    Events: ``success`` (every job exited 0), ``failed`` (a job was removed, exited non-zero, or is held
    while ``fail_on_hold``), ``timeout`` and ``error`` (the pool could not be asked); each carries the
    cluster's counts. Side-effect free (it only queries), so running it twice is harmless.

    :param cluster_id: the cluster to watch
    :param htcondor_conn_id: the pool's connection
    :param poll_interval: seconds between polls
    :param timeout: seconds before giving up (``None``: no limit)
    :param fail_on_hold: end the wait as failed as soon as a job is held
    """

    def __init__(
        self,
        cluster_id: int,
        htcondor_conn_id: str = "htcondor_default",
        poll_interval: float = 30.0,
        timeout: float | None = None,
        fail_on_hold: bool = True,
    ) -> None:
        super().__init__()
        self.cluster_id = int(cluster_id)
        self.htcondor_conn_id = htcondor_conn_id
        self.poll_interval = poll_interval
        self.timeout = timeout
        self.fail_on_hold = fail_on_hold

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            "airflow_cloud_paas.triggers.condor.CloudPaaSHTCondorJobCompleteTrigger",
            {
                "cluster_id": self.cluster_id,
                "htcondor_conn_id": self.htcondor_conn_id,
                "poll_interval": self.poll_interval,
                "timeout": self.timeout,
                "fail_on_hold": self.fail_on_hold,
            },
        )

    def _status(self) -> dict[str, Any]:
        from airflow_cloud_paas.services.condor.hook import HTCondorHook

        status = HTCondorHook(htcondor_conn_id=self.htcondor_conn_id).job_status(self.cluster_id)
        return {**status.as_dict(), "done": status.done, "succeeded": status.succeeded}

    async def run(self) -> AsyncIterator[TriggerEvent]:
        loop = asyncio.get_running_loop()
        deadline = None if self.timeout is None else loop.time() + self.timeout
        while True:
            try:
                status = await asyncio.to_thread(self._status)
            except Exception as err:  # reported to the task, which raises it with context
                yield TriggerEvent({"status": "error", "cluster_id": self.cluster_id, "message": str(err)})
                return
            done, succeeded = status.pop("done"), status.pop("succeeded")
            if done:
                yield TriggerEvent({**status, "status": "success" if succeeded else "failed"})
                return
            if status["held"] and self.fail_on_hold:
                yield TriggerEvent({**status, "status": "failed",
                                    "message": f"held: {'; '.join(status['hold_reasons'])}"})
                return
            if deadline is not None and loop.time() >= deadline:
                yield TriggerEvent({**status, "status": "timeout", "message": f"not done after {self.timeout} s"})
                return
            await asyncio.sleep(self.poll_interval)
