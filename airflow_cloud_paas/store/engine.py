"""Engines of the deployment store: one per URL and process, SQLite tuned for parallel task processes."""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, inspect, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.pool import StaticPool

from airflow_cloud_paas.store.errors import DeploymentStoreError
from airflow_cloud_paas.store.models import metadata

log = logging.getLogger(__name__)

#: seconds a SQLite writer waits for another process's write lock before "database is locked".
SQLITE_BUSY_TIMEOUT_S = 30
#: any constant: the PostgreSQL advisory lock that serializes table creation across processes.
_PG_SCHEMA_LOCK = 0x636C6F7564706161  # "cloudpaa"

#: the execution option of the store's read-only transactions (see :func:`_configure_sqlite`)
READ_ONLY = "cloud_paas_read_only"

_ENGINES: dict[str, Engine] = {}
_SERIAL: dict[int, threading.RLock] = {}  # id(engine) -> lock, for engines with one shared connection
_READY: set[str] = set()  # URLs whose tables this process has already made sure of
_LOCK = threading.Lock()


def default_store_url() -> str:
    """Return the default store: a SQLite file ``$AIRFLOW_HOME/cloud_paas/deployments.db``."""
    home = os.environ.get("AIRFLOW_HOME") or os.path.join(os.path.expanduser("~"), "airflow")
    return f"sqlite:///{Path(home, 'cloud_paas', 'deployments.db')}"


def to_url(url: str | URL | os.PathLike[str] | None) -> URL:
    """Return a SQLAlchemy URL; a plain file path means a SQLite file, ``None`` the default store.

    :param url: a SQLAlchemy URL, a file path or None
    """
    if url is None:
        return make_url(default_store_url())
    if isinstance(url, URL):
        return url
    url = os.fspath(url)
    if "://" not in url:  # a bare path: a SQLite file
        return make_url(f"sqlite:///{Path(url).expanduser().resolve()}")
    try:
        return make_url(url)
    except (ArgumentError, ValueError) as err:  # never echo the text: it may hold a password
        raise DeploymentStoreError(
            f"the deployment store URL is not a valid SQLAlchemy URL ({err}); write it as "
            "dialect+driver://user@host:port/database, e.g. postgresql+psycopg2://paas@db:5432/paas"
        ) from None


def mask_url(url: str | URL) -> str:
    """Return the URL as text with its password replaced by ``***`` (for logs and errors).

    :param url: a SQLAlchemy URL
    """
    try:
        return to_url(url).render_as_string(hide_password=True)
    except Exception:  # an unparsable URL: show nothing of it rather than a secret
        return "<unparsable store URL>"


def _sqlite_file(url: URL) -> str | None:
    database = url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return database


def _ensure_wal(cursor: Any) -> None:
    """Put the SQLite file in WAL mode (readers never block the writer nor each other).

    The mode is stored in the file, so it is only switched once. The switch needs the file to
    itself and answers "database is locked" at once, without the busy timeout, while another new
    process opens it too: retry with backoff for as long as the busy timeout.
    """
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_S
    delay = 0.005
    while True:
        try:
            if str(cursor.execute("PRAGMA journal_mode").fetchone()[0]).lower() != "wal":
                cursor.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as err:
            if "locked" not in str(err) and "busy" not in str(err) or time.monotonic() > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.25)


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy emit BEGIN itself (below): pysqlite's own transaction handling starts
        # transactions late and cannot take the write lock up front.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_S * 1000}")
            _ensure_wal(cursor)
            cursor.execute("PRAGMA synchronous = NORMAL")
            cursor.execute("PRAGMA foreign_keys = ON")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        # IMMEDIATE takes the write lock at BEGIN, waiting up to busy_timeout. A deferred transaction
        # that reads and then writes fails at once with "database is locked" when another process
        # wrote in between (SQLITE_BUSY_SNAPSHOT ignores the busy timeout). A transaction that only
        # reads never upgrades: a plain BEGIN reads a WAL snapshot while writers go on, so readers
        # (every task's record look-up, the portal's lists) do not queue behind the single writer.
        read_only = connection.get_execution_options().get(READ_ONLY, False)
        connection.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


def _new_engine(url: URL) -> Engine:
    if url.get_backend_name() == "sqlite":
        path = _sqlite_file(url)
        if path:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S})
        else:  # in-memory: one shared connection, or each thread would see its own empty database
            engine = create_engine(url, poolclass=StaticPool, connect_args={"check_same_thread": False})
            _SERIAL[id(engine)] = threading.RLock()  # ...so its transactions must take turns
        _configure_sqlite(engine)
        return engine
    # Task processes are short-lived and many: a small pool, checked before use (servers drop idle ones).
    return create_engine(url, pool_pre_ping=True, pool_size=2, max_overflow=8, pool_recycle=1800)


def _create_tables(engine: Engine) -> None:
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            # Two processes starting at once would both see no table and race on CREATE TABLE;
            # the transaction-scoped advisory lock lets one create while the other waits and then skips.
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_SCHEMA_LOCK})
        # On SQLite, BEGIN IMMEDIATE already serializes this transaction across processes.
        metadata.create_all(conn, checkfirst=True)
        _add_missing_columns(conn)


def _add_missing_columns(conn: Any) -> None:
    """Add the columns a newer release defines to a store made by an older one (all nullable: no rewrite)."""
    for table in metadata.sorted_tables:
        present = {c["name"] for c in inspect(conn).get_columns(table.name)}
        for column in table.columns:
            if column.name not in present:
                if not column.nullable:
                    raise DeploymentStoreError(f"the store's table {table.name} lacks the column {column.name} "
                                               "and it cannot be added in place: migrate the store")
                kind = column.type.compile(dialect=conn.dialect)
                conn.execute(text(f'ALTER TABLE {table.name} ADD COLUMN "{column.name}" {kind}'))
                log.info("Deployment store: added column %s.%s", table.name, column.name)


def get_engine(url: str | URL) -> Engine:
    """Return this process's engine for ``url``, creating it and the store's tables on first use.

    :param url: a SQLAlchemy URL (or SQLite file path)
    """
    url = to_url(url)
    key = url.render_as_string(hide_password=False)
    engine = _ENGINES.get(key)
    if engine is not None and key in _READY:
        return engine
    with _LOCK:
        engine = _ENGINES.get(key)
        if engine is None:
            engine = _ENGINES[key] = _new_engine(url)
        if key not in _READY:
            _create_tables(engine)
            _READY.add(key)
            log.debug("Deployment store ready at %s", mask_url(url))
    return engine


def serial_lock(engine: Engine) -> AbstractContextManager[Any]:
    """Return a lock to hold around each transaction on engines that share one connection, else a no-op.

    :param engine: an engine from :func:`get_engine`
    """
    return _SERIAL.get(id(engine)) or nullcontext()


def dispose_engines() -> None:
    """Close every cached engine (tests, and before a database is dropped)."""
    with _LOCK:
        for engine in _ENGINES.values():
            engine.dispose()
        _ENGINES.clear()
        _READY.clear()
        _SERIAL.clear()


def _after_fork_in_child() -> None:
    # A forked task process must not reuse its parent's pooled sockets/file handles: drop them
    # from the pool without closing them (closing would break the parent's connections).
    for engine in list(_ENGINES.values()):
        engine.dispose(close=False)


os.register_at_fork(after_in_child=_after_fork_in_child)
