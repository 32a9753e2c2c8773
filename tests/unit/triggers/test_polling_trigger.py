"""The polling loop all triggers share (success, timeout, error, polls off the event loop), and the queue trigger."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from airflow_cloud_paas.triggers.base import CloudPaaSPollingTrigger
from airflow_cloud_paas.triggers.scaling import CloudPaaSQueueDemandTrigger


class CountdownTrigger(CloudPaaSPollingTrigger):
    """Done once ``polls`` polls were made; a poll raises when ``fail`` is set."""

    serialized_fields = ("name", "polls", "fail")

    def __init__(self, name: str, polls: int, fail: bool = False, poll_interval: float = 0.01,
                 timeout: float | None = None) -> None:
        super().__init__(poll_interval=poll_interval, timeout=timeout)
        self.name, self.polls, self.fail = name, polls, fail
        self.threads: list[int] = []

    def subject(self) -> dict[str, Any]:
        return {"name": self.name}

    def poll(self) -> int:
        self.threads.append(threading.get_ident())
        if self.fail:
            raise RuntimeError("the service is down")
        return len(self.threads)

    def finished(self, state: int) -> dict[str, Any] | None:
        return {"status": "success", "polls": state} if state >= self.polls else None


def _events(trigger: CloudPaaSPollingTrigger) -> list[dict[str, Any]]:
    async def run() -> list[dict[str, Any]]:
        return [event.payload async for event in trigger.run()]

    return asyncio.run(asyncio.wait_for(run(), timeout=20))


def test_the_loop_polls_in_a_thread_until_finished() -> None:
    trigger = CountdownTrigger("a", polls=3)
    assert _events(trigger) == [{"name": "a", "status": "success", "polls": 3}]  # one event, then the run ends
    assert threading.get_ident() not in trigger.threads  # the blocking poll never ran on the event loop's thread


def test_a_wait_that_does_not_finish_times_out() -> None:
    assert _events(CountdownTrigger("b", polls=10**6, timeout=0.05)) == [
        {"name": "b", "status": "timeout", "message": "not done after 0.05 s"}
    ]


def test_a_poll_that_raises_ends_the_wait_with_an_error_event() -> None:
    assert _events(CountdownTrigger("c", polls=1, fail=True)) == [
        {"name": "c", "status": "error", "message": "the service is down"}
    ]


def test_serialize_names_the_class_and_its_fields() -> None:
    path, kwargs = CountdownTrigger("d", 2, timeout=5.0).serialize()
    assert path == f"{__name__}.CountdownTrigger"
    assert kwargs == {"name": "d", "polls": 2, "fail": False, "poll_interval": 0.01, "timeout": 5.0}
    assert CountdownTrigger(**kwargs).serialize() == (path, kwargs)


def test_a_field_that_init_does_not_take_back_is_refused_at_import_time() -> None:
    with pytest.raises(TypeError, match=r"serializes \['name'\]"):
        class Broken(CloudPaaSPollingTrigger):  # noqa: F841 - defining it is the test
            serialized_fields = ("name",)

            def __init__(self, poll_interval: float = 1.0, timeout: float | None = None) -> None:
                super().__init__(poll_interval=poll_interval, timeout=timeout)

            def poll(self) -> None: ...

            def finished(self, state: None) -> None: ...


# ---------------------------------------------------------------------- CloudPaaSQueueDemandTrigger
TARGETS = [{"deployment_id": "down", "service": "spark", "address": "http://down"},
           {"deployment_id": "idle", "service": "spark", "address": "http://idle"},
           {"deployment_id": "busy", "service": "htcondor", "address": "cm:9618"}]


def test_the_queue_trigger_reports_the_targets_with_waiting_work(monkeypatch: pytest.MonkeyPatch) -> None:
    def queued_demand(service: str, address: str) -> int:
        if address == "http://down":
            raise ConnectionError("connection refused")
        return {"http://idle": 0, "cm:9618": 2}[address]

    monkeypatch.setattr("airflow_cloud_paas.scaling.probe.queued_demand", queued_demand)
    # the master that is down is logged and skipped: no error event
    assert _events(CloudPaaSQueueDemandTrigger(TARGETS, poll_interval=0.01)) == [
        {"status": "success", "targets": [TARGETS[2]]}
    ]


def test_the_queue_trigger_times_out_without_work(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("airflow_cloud_paas.scaling.probe.queued_demand", lambda service, address: 0)
    assert _events(CloudPaaSQueueDemandTrigger(TARGETS[1:2], poll_interval=0.01, timeout=0.05)) == [
        {"status": "timeout", "message": "no queued work after 0 s"}
    ]
