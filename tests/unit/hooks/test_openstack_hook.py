"""OpenStackHook: from an Airflow connection to an authenticated openstacksdk connection.

Authentication runs for real over HTTP against the stand-in Keystone of
:mod:`unit.backends.openstack_fixtures` (Keystone v3 token API with a service catalog).
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections.abc import Iterator

import pytest
from unit.backends.openstack_fixtures import (
    APP_CRED_ID,
    APP_CRED_SECRET,
    PASSWORD,
    STATIC_TOKEN,
    USERNAME,
    OpenStackStandIn,
    running_stand_in,
)

from airflow_cloud_paas.exceptions import BackendError
from airflow_cloud_paas.hooks.openstack import (
    CONN_FIELDS,
    CONNECTION_TYPE,
    UI_FIELD_BEHAVIOUR,
    OpenStackAuthenticationError,
    OpenStackHook,
)

pytestmark = pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")  # openstacksdk's own


def set_conn(monkeypatch: pytest.MonkeyPatch, conn_id: str, **fields) -> None:
    """Define an Airflow connection the way deployments do: AIRFLOW_CONN_<ID> holding JSON."""
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps({"conn_type": "openstack", **fields}))


@pytest.fixture
def cloud() -> Iterator[OpenStackStandIn]:
    with running_stand_in() as stand_in:
        yield stand_in


# ---------------------------------------------------------------------- connection -> SDK config
def test_password_auth_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    set_conn(monkeypatch, "os_pw", host="keystone.example.org", port=5000, login="alice", password="pw-Secret-1",
             schema="science", extra={"region_name": "RegionTwo", "verify": "false"})
    config = OpenStackHook("os_pw").sdk_config()
    assert config["auth_type"] == "v3password"
    assert config["auth"] == {
        "auth_url": "https://keystone.example.org:5000", "username": "alice", "password": "pw-Secret-1",
        "user_domain_name": "Default", "project_name": "science", "project_domain_name": "Default",
    }
    assert (config["region_name"], config["interface"], config["verify"]) == ("RegionTwo", "public", False)


def test_application_credential_and_token_auth(monkeypatch: pytest.MonkeyPatch) -> None:
    set_conn(monkeypatch, "os_ac", host="https://ks/v3", login="cred-id", password="cred-Secret-1",
             extra={"auth_type": "application_credential", "verify": "/etc/ssl/ca.pem", "interface": "internal"})
    config = OpenStackHook("os_ac").sdk_config()
    assert config["auth_type"] == "v3applicationcredential"
    assert config["auth"] == {"auth_url": "https://ks/v3", "application_credential_id": "cred-id",
                              "application_credential_secret": "cred-Secret-1"}
    assert (config["verify"], config["interface"]) == ("/etc/ssl/ca.pem", "internal")

    set_conn(monkeypatch, "os_tok", host="https://ks/v3",
             extra={"auth_type": "token", "token": "tok-Secret-1", "project_id": "p1", "user_domain_id": "x"})
    config = OpenStackHook("os_tok").sdk_config()
    assert config["auth_type"] == "v3token"
    assert config["auth"] == {"auth_url": "https://ks/v3", "token": "tok-Secret-1", "project_id": "p1"}


@pytest.mark.parametrize(
    ("fields", "fragment"),
    [
        ({"login": "a", "password": "b", "schema": "p"}, "has no Keystone URL"),
        ({"host": "https://ks/v3", "login": "a", "schema": "p"}, "lacks password"),
        ({"host": "https://ks/v3", "login": "a", "password": "b"}, "lacks project_name"),
        ({"host": "https://ks/v3", "extra": {"auth_type": "kerberos"}}, "auth_type 'kerberos' is not one of"),
    ],
)
def test_incomplete_connection_is_a_typed_error(monkeypatch: pytest.MonkeyPatch, fields: dict, fragment: str) -> None:
    set_conn(monkeypatch, "os_bad", **fields)
    with pytest.raises(BackendError, match=fragment) as err:
        OpenStackHook("os_bad").sdk_config()
    assert err.value.provider == "openstack"
    assert "os_bad" in str(err.value)


# ---------------------------------------------------------------------- real authentication
@pytest.mark.parametrize(
    ("login", "password", "extra"),
    [
        (USERNAME, PASSWORD, {}),
        (APP_CRED_ID, APP_CRED_SECRET, {"auth_type": "application_credential"}),
        (None, STATIC_TOKEN, {"auth_type": "token"}),
    ],
    ids=["password", "application_credential", "token"],
)
def test_each_auth_type_authenticates(monkeypatch: pytest.MonkeyPatch, cloud: OpenStackStandIn,
                                      login: str | None, password: str, extra: dict) -> None:
    set_conn(monkeypatch, "os_live", host=cloud.auth_url, login=login, password=password, schema="paas", extra=extra)
    hook = OpenStackHook("os_live")
    ok, message = hook.test_connection()
    assert ok, message
    assert "5 flavors" in message
    assert hook.get_conn() is hook.conn  # one SDK connection per hook
    assert [n["name"] for n in hook.networks(external=True)] == ["public"]
    assert ("POST", "/identity/v3/auth/tokens") in cloud.requests


def test_rejected_credentials_name_keystone_never_the_secret(
    monkeypatch: pytest.MonkeyPatch, cloud: OpenStackStandIn, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "Wr0ng-S3cret-for-hook"
    set_conn(monkeypatch, "os_wrong", host=cloud.auth_url, login=USERNAME, password=secret, schema="paas")
    caplog.set_level(logging.DEBUG)
    hook = OpenStackHook("os_wrong")
    with pytest.raises(OpenStackAuthenticationError) as err:
        hook.flavors()
    assert err.value.provider == "openstack" and err.value.resource == cloud.auth_url
    assert "os_wrong" in str(err.value) and "refused the credentials" in str(err.value)
    assert secret not in str(err.value)
    ok, message = hook.test_connection()
    assert not ok and cloud.auth_url in message and secret not in message
    assert secret not in caplog.text


def test_unreachable_keystone_is_a_typed_error(monkeypatch: pytest.MonkeyPatch) -> None:
    set_conn(monkeypatch, "os_down", host="http://127.0.0.1:9/v3", login="u", password="Unused-S3cret", schema="p")
    ok, message = OpenStackHook("os_down").test_connection()
    assert not ok
    assert "http://127.0.0.1:9/v3" in message and "Unused-S3cret" not in message


def test_secrets_are_registered_with_the_log_masker(monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow.sdk.log import redact  # the masker the hook registers with (mask_secret)

    set_conn(monkeypatch, "os_mask", host="https://ks/v3", login="u", password="Masked-Pa55word-42", schema="p",
             extra={"application_credential_secret": "Masked-AppCred-43"})
    OpenStackHook("os_mask").connection  # noqa: B018 - reading the connection registers its secrets
    assert redact("x Masked-Pa55word-42 y") == "x *** y"
    assert redact("Masked-AppCred-43") == "***"


# ---------------------------------------------------------------------- provider metadata
def test_connection_form_metadata() -> None:
    assert CONNECTION_TYPE["connection-type"] == OpenStackHook.conn_type == "openstack"
    assert CONNECTION_TYPE["hook-class-name"] == f"{OpenStackHook.__module__}.{OpenStackHook.__qualname__}"
    assert CONNECTION_TYPE["hook-name"] == OpenStackHook.hook_name
    assert (OpenStackHook.conn_name_attr, OpenStackHook.default_conn_name) == ("openstack_conn_id", "openstack_default")
    behaviour = OpenStackHook.get_ui_field_behaviour()
    assert behaviour["relabeling"]["host"].startswith("Auth URL")
    assert behaviour == {k: UI_FIELD_BEHAVIOUR[k] for k in ("hidden_fields", "relabeling", "placeholders")}
    assert {"auth_type", "region_name", "interface", "verify", "project_id"} <= set(CONN_FIELDS)
    assert all("label" in f and "schema" in f for f in CONN_FIELDS.values())


def test_the_sdk_is_imported_only_when_used() -> None:
    code = (
        "import sys, airflow_cloud_paas.backends, airflow_cloud_paas.hooks.openstack, "
        "airflow_cloud_paas.backends.openstack; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('openstack', 'keystoneauth1')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"
