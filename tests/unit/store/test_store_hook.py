"""CloudPaaSStoreHook: from an Airflow connection to the store URL, the store and the UI metadata."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from airflow.sdk import Connection
from airflow.sdk.exceptions import AirflowNotFoundException

from airflow_cloud_paas import get_provider_info
from airflow_cloud_paas.hooks.store import CONN_FIELDS, UI_FIELD_BEHAVIOUR, CloudPaaSStoreHook
from airflow_cloud_paas.store import DeploymentStatus, DeploymentStore

SECRET = "s3cr3t-Pa55word"  # long enough for Airflow's masker, unique enough to grep for


def set_conn(monkeypatch: pytest.MonkeyPatch, conn_id: str, **fields) -> None:
    """Define an Airflow connection the way deployments do: AIRFLOW_CONN_<ID> holding JSON."""
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps({"conn_type": "cloud_paas", **fields}))


def conn(**fields) -> Connection:
    extra = fields.pop("extra", None)
    return Connection(
        conn_id="c", conn_type="cloud_paas", extra=json.dumps(extra) if extra is not None else None, **fields
    )


# ---------------------------------------------------------------------- URL rules
def test_store_url_extra_gets_the_password_field() -> None:
    url = CloudPaaSStoreHook.url_from_connection(
        conn(password=SECRET, extra={"store_url": "postgresql+psycopg2://paas@db.example:6432/deployments"})
    )
    assert (url.drivername, url.username, url.password) == ("postgresql+psycopg2", "paas", SECRET)
    assert (url.host, url.port, url.database) == ("db.example", 6432, "deployments")
    assert SECRET not in repr(url)


def test_store_url_extra_keeps_its_own_password() -> None:
    url = CloudPaaSStoreHook.url_from_connection(
        conn(password="other-password", extra={"store_url": "postgresql://paas:inline-pw@h/db"})
    )
    assert url.password == "inline-pw"


def test_host_fields_make_a_postgres_url() -> None:
    url = CloudPaaSStoreHook.url_from_connection(
        conn(host="pg.internal", port=5433, login="paas", password=SECRET, schema="paas_db")
    )
    assert url.render_as_string(hide_password=False) == f"postgresql+psycopg2://paas:{SECRET}@pg.internal:5433/paas_db"
    default_db = CloudPaaSStoreHook.url_from_connection(conn(host="pg.internal"))
    assert default_db.render_as_string(hide_password=False) == "postgresql+psycopg2://pg.internal/cloud_paas"


def test_no_host_means_the_sqlite_file_under_airflow_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path))
    expected = f"sqlite:///{tmp_path}/cloud_paas/deployments.db"
    assert str(CloudPaaSStoreHook.url_from_connection(conn(extra={"backend": "aws"}))) == expected
    assert str(CloudPaaSStoreHook.url_from_connection(None)) == expected


# ---------------------------------------------------------------------- through Airflow's connection lookup
def test_hook_reads_an_env_connection_and_hides_the_password(monkeypatch: pytest.MonkeyPatch) -> None:
    set_conn(
        monkeypatch,
        "paas_pg",
        host="127.0.0.1",
        port=5432,
        login="paas",
        password=SECRET,
        schema="deployments",
        extra={"backend": "openstack", "work_root": "/srv/paas"},
    )
    hook = CloudPaaSStoreHook(cloud_paas_conn_id="paas_pg")
    assert hook.sqlalchemy_url.password == SECRET
    assert hook.store_url == "postgresql+psycopg2://paas:***@127.0.0.1:5432/deployments"
    assert (hook.backend, hook.work_root) == ("openstack", "/srv/paas")
    for shown in (repr(hook), hook.store_url, repr(hook.sqlalchemy_url), str(hook.sqlalchemy_url)):
        assert SECRET not in shown
    assert "paas_pg" in repr(hook) and "***" in repr(hook)


def test_hook_opens_a_working_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    set_conn(monkeypatch, "paas_lite", extra={"store_url": f"sqlite:///{tmp_path}/s.db"})
    hook = CloudPaaSStoreHook(cloud_paas_conn_id="paas_lite")
    store = hook.get_store()
    assert isinstance(store, DeploymentStore) and hook.store is store and hook.get_conn() is store
    store.create_deployment("d1", "tpl", "h", {"x": 1}, "me", hook.backend)
    assert DeploymentStore(f"sqlite:///{tmp_path}/s.db").get("d1").status is DeploymentStatus.CREATE_IN_PROGRESS
    assert (hook.backend, hook.work_root) == ("local", str(Path(hook.work_root)))
    ok, message = hook.test_connection()
    assert ok is True and "1 deployments" in message and f"{tmp_path}/s.db" in message


def test_default_connection_falls_back_to_sqlite(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIRFLOW_CONN_CLOUD_PAAS_DEFAULT", raising=False)
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path))
    hook = CloudPaaSStoreHook()
    assert hook.connection is None
    assert hook.store_url == f"sqlite:///{tmp_path}/cloud_paas/deployments.db"
    assert hook.work_root == f"{tmp_path}/cloud_paas/work"
    assert hook.test_connection()[0] is True
    with pytest.raises(AirflowNotFoundException):
        CloudPaaSStoreHook(cloud_paas_conn_id="no_such_conn").get_store()
    ok, message = CloudPaaSStoreHook(cloud_paas_conn_id="no_such_conn").test_connection()
    assert ok is False and "no_such_conn" in message


def test_failed_test_connection_never_shows_the_password(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Port 1 on loopback refuses at once: a real driver error, with the password in the URL.
    set_conn(monkeypatch, "paas_down", host="127.0.0.1", port=1, login="paas", password=SECRET)
    hook = CloudPaaSStoreHook(cloud_paas_conn_id="paas_down")
    with caplog.at_level(logging.DEBUG):
        ok, message = hook.test_connection()
    assert ok is False
    assert "127.0.0.1" in message and "paas:***@" in message
    assert SECRET not in message and SECRET not in caplog.text


# ---------------------------------------------------------------------- connection form metadata
def test_hook_identity_and_form_metadata_match_the_provider_info() -> None:
    assert (CloudPaaSStoreHook.conn_name_attr, CloudPaaSStoreHook.default_conn_name) == (
        "cloud_paas_conn_id",
        "cloud_paas_default",
    )
    [entry] = [c for c in get_provider_info()["connection-types"] if c["connection-type"] == "cloud_paas"]
    assert entry["hook-class-name"] == "airflow_cloud_paas.hooks.store.CloudPaaSStoreHook"
    assert entry["hook-name"] == CloudPaaSStoreHook.hook_name == "Cloud PaaS deployment store"
    # Airflow 3 reads the form from provider info; the hook's methods must describe the same form.
    assert entry["conn-fields"] == CONN_FIELDS
    behaviour = CloudPaaSStoreHook.get_ui_field_behaviour()
    assert behaviour == UI_FIELD_BEHAVIOUR
    assert entry["ui-field-behaviour"] == {
        "hidden-fields": behaviour["hidden_fields"],
        "relabeling": behaviour["relabeling"],
        "placeholders": behaviour["placeholders"],
    }


def test_airflow_discovers_the_hook_and_its_form() -> None:
    from airflow.providers_manager import ProvidersManager
    from airflow.sdk.providers_manager_runtime import ProvidersManagerTaskRuntime

    hook_info = ProvidersManagerTaskRuntime().hooks["cloud_paas"]  # what tasks resolve conn types with
    assert hook_info.hook_class_name == "airflow_cloud_paas.hooks.store.CloudPaaSStoreHook"
    assert hook_info.connection_id_attribute_name == "cloud_paas_conn_id"
    manager = ProvidersManager()  # what the API server builds the connection form from
    fields = {"extra__cloud_paas__store_url", "extra__cloud_paas__backend", "extra__cloud_paas__work_root"}
    assert fields <= set(manager.connection_form_widgets)
    assert manager.field_behaviours["cloud_paas"]["relabeling"] == {"schema": "Database", "login": "User"}


def test_an_unparsable_store_url_fails_the_test_without_echoing_it(monkeypatch: pytest.MonkeyPatch) -> None:
    set_conn(monkeypatch, "paas_bad", extra={"store_url": f"postgresql://paas:{SECRET}@db:notaport/paas"})
    ok, message = CloudPaaSStoreHook(cloud_paas_conn_id="paas_bad").test_connection()
    assert ok is False and "not a valid SQLAlchemy URL" in message and SECRET not in message
