"""The Galaxy triggers survive the triggerer's round trip and end their wait with the right event.

The waits run on an event loop as the triggerer runs them; what the trigger polls is a stand-in
(:class:`ScriptedGalaxy`, in place of the hook: the states an invocation goes through), so that every outcome is
reached in milliseconds. The real Galaxy is polled in tests/integration/galaxy.
"""

from __future__ import annotations

import asyncio
import importlib
import json
from typing import Any

import pytest

from airflow_cloud_paas.services.galaxy.errors import GalaxyAuthError, GalaxyUnreachableError
from airflow_cloud_paas.triggers.galaxy import GalaxyApiTrigger, GalaxyInvocationTrigger

SAMPLES = {
    "airflow_cloud_paas.triggers.galaxy.GalaxyInvocationTrigger": {
        "invocation_id": "f2db41e1fa331b3e", "galaxy_conn_id": "galaxy_x", "url": "http://127.0.0.1:8090",
        "poll_interval": 2.0, "timeout": 90.0,
    },
    "airflow_cloud_paas.triggers.galaxy.GalaxyApiTrigger": {
        "galaxy_conn_id": "galaxy_x", "url": "http://127.0.0.1:8090", "require_admin": True,
        "poll_interval": 3.0, "timeout": None,
    },
}


def _import(path: str) -> Any:
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


@pytest.mark.parametrize("path", sorted(SAMPLES))
def test_the_trigger_round_trips(path: str) -> None:
    trigger = _import(path)(**SAMPLES[path])
    classpath, kwargs = trigger.serialize()
    assert classpath == path
    assert kwargs == SAMPLES[path]
    stored = json.loads(json.dumps(kwargs))  # what the triggerer's table holds
    assert _import(classpath)(**stored).serialize() == (classpath, kwargs)


class ScriptedGalaxy:
    """Stands in for the hook: answers each poll with the next scripted state (an exception is raised)."""

    url = "http://127.0.0.1:8090"

    def __init__(self, *states: Any) -> None:
        self.states = list(states)
        self.polls = 0

    def _next(self) -> Any:
        self.polls += 1
        state = self.states.pop(0) if len(self.states) > 1 else self.states[0]
        if isinstance(state, BaseException):
            raise state
        return state

    def invocation_status(self, invocation_id: str) -> dict[str, Any]:
        return self._next()

    def version(self) -> str:
        return "26.1"

    def whoami(self) -> dict[str, Any]:
        return self._next()


def first_event(trigger: Any) -> dict[str, Any]:
    async def run() -> dict[str, Any]:
        async for event in trigger.run():
            return event.payload
        raise AssertionError("the trigger ended without an event")

    return asyncio.run(asyncio.wait_for(run(), timeout=10))


def status(state: str, jobs: dict[str, int], done: bool, failed: bool) -> dict[str, Any]:
    return {"state": state, "jobs": jobs, "done": done, "failed": failed,
            "outputs": {"upper": "d1"} if done else {}, "history_id": "h1"}


def invocation(*states: Any, timeout: float | None = None) -> tuple[GalaxyInvocationTrigger, ScriptedGalaxy]:
    trigger = GalaxyInvocationTrigger(invocation_id="i1", galaxy_conn_id="galaxy_x", poll_interval=0.01,
                                      timeout=timeout)
    trigger.hook = ScriptedGalaxy(*states)
    return trigger, trigger.hook


def test_an_invocation_whose_jobs_end_ok_is_a_success_with_its_outputs() -> None:
    trigger, galaxy = invocation(status("new", {}, False, False), status("scheduled", {"running": 1, "ok": 1},
                                 False, False), status("scheduled", {"ok": 2}, True, False))
    event = first_event(trigger)
    assert galaxy.polls == 3
    assert event == {"invocation_id": "i1", "status": "success", "state": "scheduled", "jobs": {"ok": 2},
                     "outputs": {"upper": "d1"}, "history_id": "h1",
                     "message": "invocation scheduled; jobs: 2 ok"}
    json.dumps(event)  # an event payload is stored as JSON


def test_a_failed_job_fails_the_wait_and_a_slow_one_times_it_out() -> None:
    trigger, _ = invocation(status("scheduled", {"error": 1, "paused": 1}, True, True))
    event = first_event(trigger)
    assert event["status"] == "failed" and event["jobs"] == {"error": 1, "paused": 1}
    trigger, _ = invocation(status("scheduled", {"running": 1}, False, False), timeout=0.05)
    event = first_event(trigger)
    assert event["status"] == "timeout" and "not done after 0.05 s" in event["message"]
    assert "1 running" in event["message"]


def test_galaxy_that_cannot_be_asked_ends_the_wait_with_an_error() -> None:
    trigger, _ = invocation(GalaxyUnreachableError("invocation i1: nothing answers", url="http://127.0.0.1:1"))
    event = first_event(trigger)
    assert event["status"] == "error" and "nothing answers" in event["message"]


def test_the_api_trigger_waits_through_a_down_galaxy_and_a_refused_key() -> None:
    user = {"id": "u1", "email": "admin@example.org", "username": "admin", "is_admin": True}
    trigger = GalaxyApiTrigger(galaxy_conn_id="galaxy_x", url="http://127.0.0.1:8090", require_admin=True,
                               poll_interval=0.01)
    trigger.hook = ScriptedGalaxy(GalaxyUnreachableError("nothing answers", url="u"),
                                  GalaxyAuthError("key refused", url="u", status=403),
                                  {**user, "is_admin": False}, user)
    event = first_event(trigger)
    assert trigger.hook.polls == 4
    assert event["status"] == "success" and event["user"] == user and event["version"] == "26.1"
    trigger = GalaxyApiTrigger(galaxy_conn_id="galaxy_x", poll_interval=0.01, timeout=0.05)
    trigger.hook = ScriptedGalaxy(GalaxyAuthError("key refused", url="u", status=403))
    event = first_event(trigger)
    assert event["status"] == "timeout" and "key refused" in event["message"]
