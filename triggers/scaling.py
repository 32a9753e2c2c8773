"""A trigger that fires when work waits for a worker on any of a list of elastic deployments."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow_cloud_paas.triggers.base import CloudPaaSPollingTrigger


class CloudPaaSQueueDemandTrigger(CloudPaaSPollingTrigger):
    """Poll the queues of elastic deployments (Spark masters, HTCondor schedds) until one has waiting work.

    Events: ``success`` with the ``targets`` that have waiting work, or ``timeout``. A queue that cannot be
    read (its master is down) is logged and read again at the next poll.

    :param targets: ``{"deployment_id", "node_name", "service", "address", ...}`` dicts
    :param poll_interval: seconds between two readings
    :param timeout: give up after this many seconds (None: never)
    """

    serialized_fields = ("targets",)

    def __init__(self, targets: Sequence[dict[str, Any]], poll_interval: float = 30.0,
                 timeout: float | None = None) -> None:
        super().__init__(poll_interval=poll_interval, timeout=timeout)
        self.targets = [dict(t) for t in targets]

    def poll(self) -> list[dict[str, Any]]:
        from airflow_cloud_paas.scaling.probe import queued_demand

        waiting = []
        for target in self.targets:
            try:
                if queued_demand(target["service"], target["address"]) > 0:
                    waiting.append(target)
            except Exception as err:  # a master that is down has no queue to read: try again later
                self.log.warning("Cannot read the queue of %s: %s", target.get("deployment_id"), err)
        return waiting

    def finished(self, state: list[dict[str, Any]]) -> dict[str, Any] | None:
        return {"status": "success", "targets": state} if state else None

    def timed_out(self, state: list[dict[str, Any]]) -> dict[str, Any]:
        return {"message": f"no queued work after {self.timeout:.0f} s"}
