"""DEEPaaSHook and DEEPaaSTrainingTrigger against a stand-in for the DEEPaaS V2 HTTP API (stdlib http.server on
127.0.0.1, answering as deepaas 2.6.0 does, its 500-on-cancel included): errors are typed, the token is sent and
never shown, the trigger serialises, rebuilds and reports each ending. The real DEEPaaS is in
tests/integration/deepaas."""

from __future__ import annotations

import asyncio
import importlib
import json
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest
from httpd import serve
from waiting import free_port

from airflow_cloud_paas.hooks.deepaas import DEEPaaSHook, deepaas_url
from airflow_cloud_paas.services.training.errors import (
    DEEPaaSAPIError,
    DEEPaaSAuthError,
    DEEPaaSConfigError,
    DEEPaaSInputError,
    DEEPaaSNotFoundError,
    DEEPaaSUnreachableError,
)
from airflow_cloud_paas.triggers.deepaas import DEEPaaSTrainingTrigger

TOKEN = "tok-" + "s3cr3t" * 4


class FakeDEEPaaS(BaseHTTPRequestHandler):
    """Answer like deepaas 2.6.0's /v2 routes; remember every request."""

    requests: list[dict[str, Any]] = []
    trainings: dict[str, str] = {}

    def log_message(self, *args: Any) -> None:  # quiet
        pass

    def _answer(self, status: int, body: Any) -> None:
        raw = json.dumps(body).encode() if not isinstance(body, bytes) else body
        self.send_response(status)
        self.send_header("Content-Type", "application/json" if not isinstance(body, bytes) else "text/plain")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def _record(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self.requests.append({"method": self.command, "path": self.path, "auth": self.headers.get("Authorization"),
                              "type": self.headers.get("Content-Type"), "body": body})
        return body

    def do_GET(self) -> None:  # noqa: N802
        self._record()
        if self.path == "/v2/models/":
            self._answer(200, {"models": [{"id": "cloud-paas", "name": "cloud-paas", "version": "abc"}]})
        elif self.path == "/v2/models/cloud-paas/":
            self._answer(200, {"id": "cloud-paas", "version": "abc"})
        elif self.path.startswith("/v2/models/cloud-paas/train/") and self.path.rsplit("/", 1)[1] in self.trainings:
            uuid = self.path.rsplit("/", 1)[1]
            state = self.trainings[uuid]
            body = {"uuid": uuid, "status": state, "date": "2026-12-04 10:00:00.0"}
            if state == "done":
                body["result"] = {"output": {"model_dir": "/m"}, "finish_date": "x", "duration": "0:00:01"}
            if state == "error":
                body["message"] = "learning rate too high"
            self._answer(200, body)
        elif self.path == "/v2/models/locked/":
            self._answer(401, b"401: Unauthorized")
        else:
            self._answer(404, b"404: Not Found")

    def do_POST(self) -> None:  # noqa: N802
        body = self._record()
        if self.path == "/v2/models/cloud-paas/predict/":
            multipart = self.headers.get("Content-Type", "").startswith("multipart/")
            if multipart or [len(row) for row in json.loads(body)["data"]] == [8] * 8:
                self._answer(200, {"label": "3", "class_index": 3})
            else:
                self._answer(422, {"data": ["expected pixel values of shape 1 x 8 x 8, got 8 x 7"]})
        elif self.path == "/v2/models/cloud-paas/train/":
            args = json.loads(body or b"{}")
            if args.get("learning_rate", 1) <= 0:
                self._answer(422, {"learning_rate": ["Must be greater than 0.0."]})
            else:
                self.trainings["u1"] = "running"
                self._answer(200, {"uuid": "u1", "status": "running"})
        else:
            self._answer(404, b"404: Not Found")

    def do_DELETE(self) -> None:  # noqa: N802
        self._record()
        uuid = self.path.rsplit("/", 1)[1]
        if self.trainings.pop(uuid, None) == "running":
            # deepaas 2.6.0: the running training is cancelled, then describing it fails
            self._answer(500, b"500 Internal Server Error\n\nServer got itself in trouble")
        else:
            self._answer(404, b"404: Not Found")


@pytest.fixture
def fake() -> Iterator[str]:
    FakeDEEPaaS.requests, FakeDEEPaaS.trainings = [], {}
    with serve(FakeDEEPaaS) as url:
        yield url


@pytest.fixture
def hook(fake: str, monkeypatch: pytest.MonkeyPatch) -> DEEPaaSHook:
    monkeypatch.setenv("AIRFLOW_CONN_DEEPAAS_TEST", json.dumps(
        {"conn_type": "deepaas", "host": fake, "password": TOKEN, "extra": {"timeout": 10}}))
    return DEEPaaSHook("deepaas_test")


def test_calls_carry_the_bearer_token_and_return_the_json(hook: DEEPaaSHook, tmp_path) -> None:
    assert [m["id"] for m in hook.list_models()] == ["cloud-paas"]
    assert hook.metadata()["version"] == "abc"
    image = tmp_path / "digit.png"
    image.write_bytes(b"\x89PNG fake")
    assert hook.predict(file=image)["label"] == "3"
    assert hook.predict(data={"data": [[0.0] * 8] * 8})["class_index"] == 3
    assert {r["auth"] for r in FakeDEEPaaS.requests} == {f"Bearer {TOKEN}"}
    upload = FakeDEEPaaS.requests[2]
    assert upload["type"].startswith("multipart/form-data") and b'name="data"; filename="digit.png"' in upload["body"]
    assert FakeDEEPaaS.requests[3]["type"] == "application/json"
    assert TOKEN not in repr(hook)


def test_refused_arguments_name_the_field(hook: DEEPaaSHook) -> None:
    with pytest.raises(DEEPaaSInputError) as caught:
        hook.predict(data={"data": [[0.0] * 7] * 8})
    assert caught.value.status == 422 and list(caught.value.fields) == ["data"]
    assert "data: expected pixel values of shape 1 x 8 x 8" in str(caught.value)
    with pytest.raises(DEEPaaSInputError, match="learning_rate: Must be greater than 0.0") as caught:
        hook.train(args={"learning_rate": -1.0})
    assert TOKEN not in str(caught.value)


def test_unknown_models_and_trainings_refusals_and_silence_are_typed(hook: DEEPaaSHook, fake: str) -> None:
    with pytest.raises(DEEPaaSNotFoundError, match="HTTP 404"):
        hook.metadata("no-such-model")
    with pytest.raises(DEEPaaSNotFoundError):
        hook.training_status("nope")
    with pytest.raises(DEEPaaSAuthError, match="check the connection's token"):
        hook.metadata("locked")
    nobody = DEEPaaSHook("deepaas_test", url=f"http://127.0.0.1:{free_port()}")
    with pytest.raises(DEEPaaSUnreachableError, match="nothing answers"):
        nobody.list_models()
    with pytest.raises(DEEPaaSConfigError):
        deepaas_url("ftp://example.org")
    with pytest.raises(DEEPaaSConfigError):
        deepaas_url(f"http://user:{TOKEN}@example.org")
    assert deepaas_url("127.0.0.1:5000/v2/") == "http://127.0.0.1:5000"


def test_cancel_of_a_running_training_survives_deepaas_500(hook: DEEPaaSHook) -> None:
    uuid = hook.train(args={"epochs": 1})
    assert hook.training_status(uuid)["status"] == "running"
    assert hook.cancel_training(uuid) == {"uuid": uuid, "status": "cancelled"}
    with pytest.raises(DEEPaaSNotFoundError):
        hook.cancel_training(uuid)  # gone: a second cancel is a 404


def test_a_500_that_is_no_cancel_stays_an_error(hook: DEEPaaSHook, monkeypatch: pytest.MonkeyPatch) -> None:
    FakeDEEPaaS.trainings["u2"] = "running"
    monkeypatch.setattr(FakeDEEPaaS, "do_GET", lambda self: (self._record(), self._answer(500, b"boom")))
    with pytest.raises(DEEPaaSAPIError) as caught:
        hook.cancel_training("u2")
    assert caught.value.status == 500


def _rebuilt(trigger: DEEPaaSTrainingTrigger) -> DEEPaaSTrainingTrigger:
    classpath, kwargs = trigger.serialize()
    module, _, name = classpath.rpartition(".")
    return getattr(importlib.import_module(module), name)(**json.loads(json.dumps(kwargs)))


def test_the_trigger_serialises_and_rebuilds() -> None:
    trigger = DEEPaaSTrainingTrigger("u1", deepaas_conn_id="c", url="http://h:1", poll_interval=0.1, timeout=5)
    classpath, kwargs = trigger.serialize()
    assert classpath == "airflow_cloud_paas.triggers.deepaas.DEEPaaSTrainingTrigger"
    assert kwargs == {"uuid": "u1", "model": "cloud-paas", "deepaas_conn_id": "c", "url": "http://h:1",
                      "poll_interval": 0.1, "timeout": 5}
    assert _rebuilt(trigger).serialize() == (classpath, kwargs)


@pytest.mark.parametrize(("state", "status"), [("done", "success"), ("error", "failed"), ("gone", "error")])
def test_the_trigger_reports_how_the_training_ended(hook: DEEPaaSHook, fake: str, state: str, status: str) -> None:
    if state != "gone":
        FakeDEEPaaS.trainings["u1"] = state
    trigger = _rebuilt(DEEPaaSTrainingTrigger("u1", deepaas_conn_id="deepaas_test", poll_interval=0.05, timeout=10))

    async def first() -> dict[str, Any]:
        async for event in trigger.run():
            return event.payload
        raise AssertionError("no event")

    event = asyncio.run(asyncio.wait_for(first(), 30))
    assert event["status"] == status and event["uuid"] == "u1"
    if status == "success":
        assert event["result"]["output"] == {"model_dir": "/m"}
    if status == "failed":
        assert event["message"] == "learning rate too high"
    if status == "error":
        assert "not found" in event["message"] and TOKEN not in event["message"]
    assert {r["auth"] for r in FakeDEEPaaS.requests} == {f"Bearer {TOKEN}"}


def test_the_trigger_times_out_on_a_training_that_runs_on(hook: DEEPaaSHook) -> None:
    FakeDEEPaaS.trainings["u1"] = "running"
    trigger = DEEPaaSTrainingTrigger("u1", deepaas_conn_id="deepaas_test", poll_interval=0.05, timeout=0.3)
    event = trigger.wait()
    assert event["status"] == "timeout" and "still running" in event["message"]


@pytest.mark.parametrize("host", ["ftp://user:s3cret@h/x", "http://user:s3cret@", "http://h:99999"])
def test_a_bad_url_is_a_config_error_that_never_shows_a_password(host: str) -> None:
    with pytest.raises(DEEPaaSConfigError) as caught:
        deepaas_url(host)
    assert caught.value.field == "host" and "s3cret" not in str(caught.value)
