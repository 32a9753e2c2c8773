"""A trigger that fires when work waits for a worker on any of a list of elastic deployments."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent


class CloudPaaSQueueDemandTrigger(BaseTrigger):
    """Poll the queues of elastic deployments (Spark masters, HTCondor schedds) until one has waiting work.

    Reading a queue has no side effect, so the trigger may run twice.

    :param targets: ``{"deployment_id", "node_name", "service", "address", ...}`` dicts
    :param poll_interval: seconds between two readings
    :param timeout: give up after this many seconds (None: never)
    """

    def __init__(self, targets: Sequence[dict[str, Any]], poll_interval: float = 30.0,
                 timeout: float | None = None) -> None:
        super().__init__()
        self.targets = [dict(t) for t in targets]
        self.poll_interval = poll_interval
        self.timeout = timeout

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            "airflow_cloud_paas.triggers.scaling.CloudPaaSQueueDemandTrigger",
            {"targets": self.targets, "poll_interval": self.poll_interval, "timeout": self.timeout},
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from airflow_cloud_paas.elastic import queued_demand

        started = time.monotonic()
        while True:
            waiting = []
            for target in self.targets:
                try:
                    if await asyncio.to_thread(queued_demand, target["service"], target["address"]) > 0:
                        waiting.append(target)
                except Exception as err:  # a master that is down has no queue to read: try again later
                    self.log.warning("Cannot read the queue of %s: %s", target.get("deployment_id"), err)
            if waiting:
                yield TriggerEvent({"status": "success", "targets": waiting})
                return
            if self.timeout is not None and time.monotonic() - started > self.timeout:
                yield TriggerEvent({"status": "timeout", "message": f"no queued work after {self.timeout:.0f} s"})
                return
            await asyncio.sleep(self.poll_interval)
