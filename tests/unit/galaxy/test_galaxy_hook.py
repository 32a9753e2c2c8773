"""The Galaxy hook reads its connection (URL from Host/Schema/Port, key from Password or extra) and never shows the key.

The key's leak checks run against a stand-in for Galaxy's HTTP API on loopback (:class:`EchoingGalaxy`): it answers
every request with an error whose body repeats the API key it was sent, as a careless proxy or server might, so a
key that reached an error message, a log record or a ``repr`` would show.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler

import pytest
from httpd import serve
from waiting import free_port

from airflow_cloud_paas.hooks.galaxy import GalaxyHook, content_tag, galaxy_url, read_workflow, workflow_name
from airflow_cloud_paas.services.galaxy.errors import (
    GalaxyAPIError,
    GalaxyAuthError,
    GalaxyConfigError,
    GalaxyUnreachableError,
)

KEY = "planted0secret0key0c0ffee0123456"


def set_conn(monkeypatch: pytest.MonkeyPatch, conn_id: str, **fields: object) -> None:
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps({"conn_type": "galaxy", **fields}))


@pytest.mark.parametrize(
    ("fields", "url"),
    [
        ({"host": "http://galaxy.example.org:8080"}, "http://galaxy.example.org:8080"),
        ({"host": "https://example.org/galaxy/"}, "https://example.org/galaxy"),
        ({"host": "galaxy.example.org", "port": 8080}, "http://galaxy.example.org:8080"),
        ({"host": "galaxy.example.org", "schema": "https", "port": 8443}, "https://galaxy.example.org:8443"),
        ({"host": "http://galaxy.example.org", "port": 8080}, "http://galaxy.example.org:8080"),
        ({"host": "http://galaxy.example.org:9000", "port": 8080}, "http://galaxy.example.org:9000"),
    ],
)
def test_the_url_comes_from_host_schema_and_port(monkeypatch: pytest.MonkeyPatch, fields: dict, url: str) -> None:
    set_conn(monkeypatch, "gx_url", password=KEY, **fields)
    hook = GalaxyHook("gx_url")
    assert hook.url == url
    assert hook.client.url == url


def test_the_url_argument_replaces_the_connection_host(monkeypatch: pytest.MonkeyPatch) -> None:
    set_conn(monkeypatch, "gx_override", host="http://old.example.org:1", password=KEY)
    assert GalaxyHook("gx_override", url="http://127.0.0.1:8090/").url == "http://127.0.0.1:8090"


def test_the_key_comes_from_password_or_the_api_key_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    set_conn(monkeypatch, "gx_extra", host="http://h:1", extra={"api_key": KEY, "verify_ssl": "false",
                                                                  "timeout": "7.5"})
    client = GalaxyHook("gx_extra").client
    assert client._api_key == KEY and client.verify is False and client.timeout == 7.5
    set_conn(monkeypatch, "gx_both", host="http://h:1", password=KEY, extra={"api_key": "other"})
    assert GalaxyHook("gx_both").client._api_key == KEY  # the Password wins


def test_a_connection_without_key_or_url_is_a_typed_error(monkeypatch: pytest.MonkeyPatch) -> None:
    set_conn(monkeypatch, "gx_nokey", host="http://h:1")
    with pytest.raises(GalaxyConfigError, match="no API key") as err:
        GalaxyHook("gx_nokey").get_conn()
    assert err.value.field == "password"
    set_conn(monkeypatch, "gx_nohost", password=KEY)
    with pytest.raises(GalaxyConfigError, match="no Galaxy URL"):
        GalaxyHook("gx_nohost").get_conn()
    set_conn(monkeypatch, "gx_badtls", host="http://h:1", password=KEY, extra={"verify_ssl": "maybe"})
    with pytest.raises(GalaxyConfigError, match="verify_ssl"):
        GalaxyHook("gx_badtls").get_conn()


def test_credentials_in_the_url_are_refused_without_showing_them() -> None:
    with pytest.raises(GalaxyConfigError) as err:
        galaxy_url(f"http://admin:{KEY}@h:8080")
    assert KEY not in str(err.value) and KEY not in repr(err.value)
    with pytest.raises(GalaxyConfigError):
        galaxy_url("ftp://h")


def test_the_hook_declares_its_connection_type() -> None:
    assert (GalaxyHook.conn_type, GalaxyHook.conn_name_attr, GalaxyHook.default_conn_name, GalaxyHook.hook_name) == (
        "galaxy", "galaxy_conn_id", "galaxy_default", "Galaxy")
    behaviour = GalaxyHook.get_ui_field_behaviour()
    assert behaviour["relabeling"]["password"] == "API key" and "login" in behaviour["hidden_fields"]
    from airflow_cloud_paas import get_provider_info

    types = {c["connection-type"]: c for c in get_provider_info()["connection-types"]}
    assert types["galaxy"]["hook-class-name"] == "airflow_cloud_paas.hooks.galaxy.GalaxyHook"
    assert types["galaxy"]["conn-fields"]["api_key"]["schema"]["format"] == "password"


class EchoingGalaxy(BaseHTTPRequestHandler):
    """Stand-in for Galaxy's HTTP API: refuses every request, repeating the key it was sent in the error."""

    def _answer(self) -> None:
        key = self.headers.get("x-api-key") or ""
        body = json.dumps({"err_msg": f"Provided API key {key} is not valid", "err_code": 403002}).encode()
        self.send_response(403)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = _answer  # noqa: N815 - http.server's names

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def echoing_galaxy() -> Iterator[str]:
    with serve(EchoingGalaxy) as url:
        yield url


def test_a_refused_key_is_an_auth_error_that_never_shows_the_key(
    monkeypatch: pytest.MonkeyPatch, echoing_galaxy: str, caplog: pytest.LogCaptureFixture
) -> None:
    set_conn(monkeypatch, "gx_echo", host=echoing_galaxy, password=KEY)
    hook = GalaxyHook("gx_echo")
    caplog.set_level(logging.DEBUG)
    with pytest.raises(GalaxyAuthError) as err:
        hook.whoami()
    assert "is not valid" in str(err.value)  # Galaxy's own message is kept...
    assert "***" in str(err.value)  # ...with the key it repeated masked
    ok, message = hook.test_connection()
    assert not ok and "is not valid" in message
    with pytest.raises(GalaxyAuthError) as upload_err:
        hook.create_history("h")
    shown = [str(err.value), repr(err.value), message, str(upload_err.value), repr(hook), repr(hook.client),
             caplog.text, json.dumps(err.value.args)]
    assert all(KEY not in text for text in shown), [t for t in shown if KEY in t]


def test_nothing_answering_is_an_unreachable_error_without_the_key(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    set_conn(monkeypatch, "gx_down", host=f"http://127.0.0.1:{free_port()}", password=KEY, extra={"timeout": 5})
    caplog.set_level(logging.DEBUG)
    with pytest.raises(GalaxyUnreachableError) as err:
        GalaxyHook("gx_down").whoami()
    assert isinstance(err.value, GalaxyAPIError)
    assert KEY not in str(err.value) and KEY not in caplog.text


def test_the_key_is_given_to_airflows_secrets_masker(monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow.sdk._shared.secrets_masker.secrets_masker import redact

    key = "another0planted0key0feedbeef0987"
    set_conn(monkeypatch, "gx_mask", host="http://h:1", password=key)
    GalaxyHook("gx_mask").get_conn()
    assert key not in str(redact(f"the key is {key}"))


def test_workflow_files_are_read_bounded_and_named(tmp_path) -> None:
    ga = tmp_path / "w.ga"
    ga.write_text(json.dumps({"a_galaxy_workflow": "true", "name": "wf", "steps": {"0": {"type": "data_input"}}}))
    fmt2 = tmp_path / "w.gxwf.yml"
    fmt2.write_text("class: GalaxyWorkflow\nlabel: wf2\ninputs: {x: data}\nsteps: {}\n")
    assert workflow_name(read_workflow(ga)) == "wf"
    assert workflow_name(read_workflow(fmt2)) == "wf2"
    big = tmp_path / "big.ga"
    big.write_bytes(b" " * 2_000_001)
    with pytest.raises(GalaxyConfigError, match="over"):
        read_workflow(big)
    bad = tmp_path / "bad.yml"
    bad.write_text("just: a mapping\n")
    with pytest.raises(GalaxyConfigError, match="not a Galaxy workflow"):
        read_workflow(bad)
    with pytest.raises(GalaxyConfigError, match="no such"):
        read_workflow(tmp_path / "missing.ga")
    with pytest.raises(GalaxyConfigError, match="no name"):
        workflow_name({"class": "GalaxyWorkflow", "steps": {}})
    # the content tag follows the content, not the key order
    assert content_tag({"a": 1, "b": [2]}) == content_tag({"b": [2], "a": 1}) != content_tag({"a": 2, "b": [2]})


class TagRefusingGalaxy(BaseHTTPRequestHandler):
    """Stand-in for Galaxy's history API: creates a history, refuses to tag it (a 500), deletes on request.

    Every request is logged as ``(verb, path)`` in :attr:`requests`; :attr:`histories` holds the live ones.
    """

    requests: list[tuple[str, str]] = []
    histories: set[str] = set()

    def _send(self, status: int, payload: object) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _answer(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        path = self.path.split("?")[0]
        type(self).requests.append((self.command, path))
        if self.command == "POST" and path == "/api/histories":
            type(self).histories.add("h0001")
            self._send(200, {"id": "h0001", "name": "run", "tags": []})
        elif self.command == "PUT" and path == "/api/histories/h0001":
            self._send(500, {"err_msg": "tag service down", "err_code": 500001})
        elif self.command == "DELETE" and path == "/api/histories/h0001":
            type(self).histories.discard("h0001")
            self._send(200, {"id": "h0001", "deleted": True, "purged": True})
        else:
            self._send(404, {"err_msg": f"no {path}", "err_code": 404001})

    do_GET = do_POST = do_PUT = do_DELETE = _answer  # noqa: N815 - http.server's names

    def log_message(self, *args: object) -> None:
        pass


def test_a_history_that_cannot_be_tagged_is_deleted_not_left_empty(monkeypatch: pytest.MonkeyPatch) -> None:
    """Untagged, a retry would not find the history and would make a second one: it goes, the cause is raised."""
    TagRefusingGalaxy.requests, TagRefusingGalaxy.histories = [], set()
    with serve(TagRefusingGalaxy) as url:
        set_conn(monkeypatch, "gx_tags", host=url, password=KEY)
        with pytest.raises(GalaxyAPIError, match="tag history 'run'.*tag service down"):
            GalaxyHook("gx_tags").create_history("run", tags=["task:abc"])
    assert TagRefusingGalaxy.histories == set()
    assert [r for r in TagRefusingGalaxy.requests if r[0] != "GET"] == [
        ("POST", "/api/histories"), ("PUT", "/api/histories/h0001"), ("DELETE", "/api/histories/h0001")]
