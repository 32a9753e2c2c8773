"""PostgreSQL for the store's integration tests: a new database per session, dropped at the end.

PostgreSQL must run on 127.0.0.1:5432 with trust auth (user ``postgres`` or ``root``, database
``test``); if it does not, the tests FAIL (they are not skipped) and say how to start it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg2
import pytest
from psycopg2 import sql

from airflow_cloud_paas.store import dispose_engines

PG_HOST, PG_PORT, PG_ADMIN_DB = "127.0.0.1", 5432, "test"


def _admin_connection():
    errors = []
    for user in ("postgres", "root"):
        try:
            conn = psycopg2.connect(host=PG_HOST, port=PG_PORT, user=user, dbname=PG_ADMIN_DB, connect_timeout=5)
        except psycopg2.OperationalError as err:
            errors.append(f"as {user}: {str(err).strip()}")
            continue
        conn.autocommit = True  # CREATE/DROP DATABASE cannot run in a transaction
        return conn, user
    pytest.fail(
        f"PostgreSQL is required on {PG_HOST}:{PG_PORT} (trust auth, database '{PG_ADMIN_DB}') and "
        f"could not be reached ({'; '.join(errors)}). Start it with: "
        "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start",
        pytrace=False,
    )


class PostgresServer:
    """Makes and drops throw-away databases on the local server."""

    def __init__(self) -> None:
        self.conn, self.user = _admin_connection()
        self.databases: list[str] = []

    def new_database(self) -> str:
        """Create a database with a unique name; return its SQLAlchemy URL."""
        name = f"cloud_paas_test_{uuid.uuid4().hex[:12]}"
        with self.conn.cursor() as cur:
            cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        self.databases.append(name)
        return f"postgresql+psycopg2://{self.user}@{PG_HOST}:{PG_PORT}/{name}"

    def close(self) -> None:
        dispose_engines()  # our pooled connections would block DROP DATABASE
        with self.conn.cursor() as cur:
            for name in self.databases:
                cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        self.conn.close()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """Return the local PostgreSQL server; every database made through it is dropped at the end."""
    server = PostgresServer()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session")
def pg_url(postgres: PostgresServer) -> str:
    """Return the URL of this session's store database."""
    return postgres.new_database()
