"""How the client reads an invocation's state: Galaxy's answers stand in at bioblend's boundary (the live tests run
the same path against a real Galaxy)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from airflow_cloud_paas.services.galaxy.client import GalaxyClient


def client_answering(state: str, jobs: dict[str, int]) -> GalaxyClient:
    client = GalaxyClient("http://127.0.0.1:1", "k" * 32)
    invocations = SimpleNamespace(
        show_invocation=lambda _id: {"state": state, "history_id": "h", "outputs": {"count": {"id": "d1"}}},
        get_invocation_summary=lambda _id: {"states": jobs},
    )
    client.__dict__["gi"] = SimpleNamespace(invocations=invocations)  # bioblend's GalaxyInstance, stood in
    return client


@pytest.mark.parametrize("state, jobs, done, failed", [
    ("new", {}, False, False),
    ("ready", {"queued": 1}, False, False),
    ("scheduled", {}, False, False),               # scheduled but no job made yet: not done
    ("scheduled", {"running": 1, "ok": 1}, False, False),
    ("scheduled", {"ok": 2}, True, False),
    ("completed", {"ok": 2}, True, False),         # Galaxy 24.2+: the completion monitor's state
    ("completed", {}, True, False),
    ("scheduled", {"ok": 1, "error": 1}, True, True),
    ("failed", {}, True, True),
    ("cancelled", {"ok": 1}, True, True),
])
def test_when_an_invocation_is_done_or_failed(state, jobs, done, failed) -> None:
    status = client_answering(state, jobs).invocation_status("inv")
    assert (status["done"], status["failed"]) == (done, failed)
    assert status["outputs"] == {"count": "d1"} and status["history_id"] == "h"
