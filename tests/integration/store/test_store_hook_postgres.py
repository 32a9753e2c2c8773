"""CloudPaaSStoreHook against the real PostgreSQL: a connection's fields open a working store."""

from __future__ import annotations

import json
import logging

import pytest
from sqlalchemy import make_url, text

from airflow_cloud_paas.hooks.store import CloudPaaSStoreHook
from airflow_cloud_paas.store import DeploymentStore

pytestmark = pytest.mark.integration

SECRET = "pg-Pa55word-never-shown"  # trust auth accepts it, so it travels in a working URL


@pytest.mark.parametrize("form", ["fields", "store_url"])
def test_hook_opens_the_postgres_store_without_leaking_the_password(
    form: str, pg_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    url = make_url(pg_url)
    if form == "fields":
        fields = {
            "host": url.host,
            "port": url.port,
            "login": url.username,
            "password": SECRET,
            "schema": url.database,
            "extra": {"backend": "local"},
        }
    else:  # a URL with a user but no password: the Password field fills it in
        fields = {"password": SECRET, "extra": {"store_url": pg_url}}
    monkeypatch.setenv("AIRFLOW_CONN_PAAS_PG_IT", json.dumps({"conn_type": "cloud_paas", **fields}))

    with caplog.at_level(logging.DEBUG):
        hook = CloudPaaSStoreHook(cloud_paas_conn_id="paas_pg_it")
        ok, message = hook.test_connection()
        store = hook.get_store()
        record = store.create_deployment(f"hook-{form}", "tpl", "h", {"db_password": SECRET}, "me", hook.backend)

    assert ok is True, message
    assert hook.sqlalchemy_url.password == SECRET and hook.sqlalchemy_url.drivername == "postgresql+psycopg2"
    assert hook.store_url == f"postgresql+psycopg2://{url.username}:***@{url.host}:{url.port}/{url.database}"
    assert record.inputs == {"db_password": "***"}
    # The row is really in PostgreSQL, in the session's database, read with a separate store.
    with DeploymentStore(pg_url).engine.connect() as conn:
        owner = conn.execute(text("SELECT owner FROM deployments WHERE id = :i"), {"i": record.id}).scalar()
        row = str(conn.execute(text("SELECT * FROM deployments WHERE id = :i"), {"i": record.id}).one())
    assert owner == "me" and SECRET not in row
    for shown in (message, caplog.text, repr(hook), repr(store), store.url):
        assert SECRET not in shown
