"""The store contract on SQLite, plus what only SQLite needs (WAL, many processes on one file)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
from sqlalchemy import text

from airflow_cloud_paas.store import DeploymentStatus, DeploymentStore, dispose_engines, get_engine

CONTRACT = Path(__file__).with_name("store_contract.py")


def _load_contract():
    """Import store_contract.py by path: the tests folders are not packages, and both suites share it."""
    name = "cloud_paas_store_contract"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, CONTRACT)
        sys.modules[name] = module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    return sys.modules[name]


contract = _load_contract()


class TestSQLiteStore(contract.StoreContract):
    @pytest.fixture
    def store_url(self, sqlite_url: str) -> str:
        return sqlite_url


def test_sqlite_file_uses_wal_and_a_busy_timeout(sqlite_url: str) -> None:
    store = DeploymentStore(sqlite_url)
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 10_000
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    assert get_engine(sqlite_url) is store.engine  # one engine per URL and process


def test_a_file_path_and_the_default_location(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    by_path = DeploymentStore(tmp_path / "plain" / "x.db")
    assert by_path.url == f"sqlite:///{tmp_path / 'plain' / 'x.db'}"
    assert (tmp_path / "plain" / "x.db").is_file()
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path / "home"))
    default = DeploymentStore()
    assert default.url == f"sqlite:///{tmp_path / 'home' / 'cloud_paas' / 'deployments.db'}"
    assert (tmp_path / "home" / "cloud_paas" / "deployments.db").is_file()


def test_in_memory_store_is_shared_by_threads() -> None:
    store = DeploymentStore("sqlite://")
    dep = contract.create(store).id
    results, errors = contract.race([lambda: store.begin(dep, "CREATE", actor="a").status] * 4)
    assert errors == [] and results == [DeploymentStatus.CREATE_IN_PROGRESS] * 4


def test_parallel_processes_share_one_sqlite_file(sqlite_url: str, tmp_path: Path) -> None:
    """Three processes (like the scheduler's parallel tasks) start on a new file and write at once."""
    contract.run_workers(sqlite_url, tmp_path)
    store = DeploymentStore(sqlite_url)
    contract.check_workers_results(store)
    with store.engine.connect() as conn:
        assert conn.execute(text("SELECT COUNT(*) FROM resources")).scalar() == 75


def test_a_store_made_before_leases_gets_their_columns_and_keeps_its_records(sqlite_url: str) -> None:
    store = DeploymentStore(sqlite_url)
    dep = contract.drive_to(store, DeploymentStatus.UPDATE_IN_PROGRESS)
    with store.engine.begin() as conn:  # what an older release's store looks like
        conn.execute(text("ALTER TABLE deployments DROP COLUMN lease_expires_at"))
        conn.execute(text("ALTER TABLE deployments DROP COLUMN lease_holder"))
        conn.execute(text("ALTER TABLE deployments DROP COLUMN outputs_checked"))
    dispose_engines()
    reopened = DeploymentStore(sqlite_url)
    record = reopened.get(dep)
    assert record.status is DeploymentStatus.UPDATE_IN_PROGRESS and record.lease_expires_at is None
    assert [r.id for r in reopened.outputs_unchecked()] == [dep]  # its outputs were stored by an older release
    # no lease recorded: it holds for a step gap after the record's last change, then expires
    assert record.id not in {r.id for r in reopened.stale()}
    reopened.step_gap_s = 0
    assert record.id in {r.id for r in reopened.stale()}


def test_reads_do_not_queue_behind_a_writer(sqlite_url: str) -> None:
    """A transaction that only reads takes no write lock: it reads the last commit while another process writes."""
    import sqlite3
    import threading

    store = DeploymentStore(sqlite_url)
    dep = store.create_deployment("d-read", "t: 1", "h1", {}, owner="me", backend="local").id
    store.upsert_resource(dep, "vm", 0, "i-0", "RUNNING", {})
    writer = sqlite3.connect(sqlite_url.removeprefix("sqlite:///"), isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")  # another process in the middle of a write
    writer.execute("UPDATE resources SET state = 'ERROR'")
    try:
        read: dict = {}
        reader = threading.Thread(target=lambda: read.update(
            record=store.get(dep), resources=store.resources(dep), listed=store.list(owner="me"), count=store.count()))
        reader.start()
        reader.join(timeout=20)  # the busy timeout is 30 s: a read that took the write lock would still wait
        assert not reader.is_alive(), "a read waited for the writer's lock"
        assert [r.state for r in read["resources"]] == ["RUNNING"] and read["count"] == 1  # the last commit
        assert read["record"].id == dep and [d.id for d in read["listed"]] == [dep]
    finally:
        writer.execute("ROLLBACK")
        writer.close()
