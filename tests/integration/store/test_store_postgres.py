"""The store contract on PostgreSQL, plus true concurrency: processes and interleaved transactions."""

from __future__ import annotations

import importlib.util
import sys
import threading
from pathlib import Path

import pytest
from sqlalchemy import event, text

from airflow_cloud_paas.store import DeploymentBusyError, DeploymentStatus, DeploymentStore

CONTRACT = Path(__file__).resolve().parents[2] / "unit" / "store" / "store_contract.py"


def _load_contract():
    """Import store_contract.py by path: the tests folders are not packages, and both suites share it."""
    name = "cloud_paas_store_contract"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, CONTRACT)
        sys.modules[name] = module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    return sys.modules[name]


contract = _load_contract()
pytestmark = pytest.mark.integration


class TestPostgresStore(contract.StoreContract):
    @pytest.fixture
    def store_url(self, pg_url: str) -> str:
        return pg_url


def test_tables_use_postgres_types(pg_url: str) -> None:
    store = DeploymentStore(pg_url)
    with store.engine.connect() as conn:
        types = dict(
            conn.execute(
                text("SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'deployments'")
            ).all()
        )
    assert types["inputs"] == "jsonb" and types["created_at"] == "timestamp with time zone"


def test_interleaved_begins_the_optimistic_lock_decides(pg_url: str) -> None:
    """Both transactions read the same version before either writes: the conditional UPDATE picks one.

    A listener holds each thread just before its UPDATE until both have read the row, forcing the
    interleaving that a lucky schedule might otherwise avoid.
    """
    store = DeploymentStore(pg_url)
    dep = contract.drive_to(store, DeploymentStatus.CREATE_COMPLETE)
    gate = threading.Barrier(2)
    racing = {"a", "b"}
    updated_rows: list[int] = []

    def hold_before_update(conn, cursor, statement, parameters, context, executemany) -> None:
        if statement.startswith("UPDATE deployments") and getattr(local, "actor", None) in racing:
            racing.discard(local.actor)  # only the first attempt: the loser's re-read must not wait
            gate.wait(timeout=30)

    def count_rows(conn, cursor, statement, parameters, context, executemany) -> None:
        if statement.startswith("UPDATE deployments"):
            updated_rows.append(cursor.rowcount)

    local = threading.local()

    def begin(actor: str):
        local.actor = actor
        return store.begin(dep, "UPDATE", reason="race", actor=actor)

    event.listen(store.engine, "before_cursor_execute", hold_before_update)
    event.listen(store.engine, "after_cursor_execute", count_rows)
    try:
        results, errors = contract.race([lambda: begin("a"), lambda: begin("b")])
    finally:
        event.remove(store.engine, "before_cursor_execute", hold_before_update)
        event.remove(store.engine, "after_cursor_execute", count_rows)
    assert len(results) == 1 and len(errors) == 1, (results, errors)
    assert isinstance(errors[0], DeploymentBusyError)
    assert sorted(updated_rows) == [0, 1]  # the loser's UPDATE matched no row: its version was stale
    final = store.get(dep)
    assert final.actor == results[0].actor and final.version == 3


def test_processes_creating_the_tables_at_once(postgres, tmp_path: Path) -> None:
    """Three processes open a brand-new database together: one creates the tables, all then work."""
    url = postgres.new_database()
    contract.run_workers(url, tmp_path)
    store = DeploymentStore(url)
    contract.check_workers_results(store)
    assert len(store.list(owner="owner")) == 3
