"""The access log in PostgreSQL (127.0.0.1:5432, trust auth): table made once, idempotent appends, queries.

A throw-away database is made for the test and dropped after it. Without PostgreSQL the test fails and
says how to start it (as the store's PostgreSQL tests do).
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator

import psycopg2
import pytest
from psycopg2 import sql

from airflow_cloud_paas.services.xcache.monitor import TABLE_NAME, AccessLog, AccessLogError, AccessRecord

pytestmark = pytest.mark.integration

PG_HOST, PG_PORT = "127.0.0.1", 5432


@pytest.fixture
def pg_url() -> Iterator[str]:
    admin, user = None, None
    errors = []
    for user in ("postgres", "root"):
        try:
            admin = psycopg2.connect(host=PG_HOST, port=PG_PORT, user=user, dbname="test", connect_timeout=5)
            break
        except psycopg2.OperationalError as err:
            errors.append(f"as {user}: {str(err).strip()}")
    if admin is None:
        pytest.fail(f"PostgreSQL is required on {PG_HOST}:{PG_PORT} ({'; '.join(errors)}); start it with: "
                    "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start", pytrace=False)
    admin.autocommit = True
    name = f"cloud_paas_xcache_{uuid.uuid4().hex[:10]}"
    with admin.cursor() as cur:
        cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield f"postgresql+psycopg2://{user}@{PG_HOST}:{PG_PORT}/{name}"
    finally:
        with admin.cursor() as cur:
            cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        admin.close()


def record(n: int, path: str = "/store/a.root", hit: int = 0, miss: int = 100) -> AccessRecord:
    return AccessRecord(time_s=1000.0 + n, path=path, size=100, bytes_hit=hit, bytes_missed=miss,
                        attach_s=999.0 + n, access_no=n, source="cinfo", cache="root://c:1094")


def test_access_log_in_postgresql(pg_url: str) -> None:
    log = AccessLog(pg_url)
    try:
        assert log.append([record(1), record(2, hit=100, miss=0), record(1)]) == 2  # a repeat in the batch
        assert log.append([record(1), record(2, hit=100, miss=0), record(3, path="/store/b.root")]) == 1
        assert log.count() == 3 and log.count(since=1002.0) == 2
        assert [r.access_no for r in log.since(1001.5)] == [2, 3]
        assert log.since(0, path="/store/b.root") == [record(3, path="/store/b.root")]
        assert log.totals() == {"records": 3, "bytes_hit": 100, "bytes_missed": 200, "bytes_bypassed": 0}
    finally:
        log.close()

    again = AccessLog(pg_url)  # the table exists: opened, not re-made
    try:
        assert again.count() == 3
        # concurrent writers of the same records store each once (ON CONFLICT DO NOTHING)
        batch = [record(n) for n in range(10, 60)]
        results: list[int] = []
        threads = [threading.Thread(target=lambda: results.append(again.append(batch))) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert again.count() == 53 and sum(results) <= 50 * 4
    finally:
        again.close()
    with psycopg2.connect(pg_url.replace("postgresql+psycopg2", "postgresql")) as conn, conn.cursor() as cur:
        cur.execute("SELECT table_name FROM information_schema.tables WHERE table_name LIKE 'cloud_paas_xcache_%'")
        assert sorted(r[0] for r in cur.fetchall()) == [TABLE_NAME, f"{TABLE_NAME}_prefetch"]
        cur.execute(sql.SQL("SELECT count(DISTINCT record_key) FROM {}").format(sql.Identifier(TABLE_NAME)))
        assert cur.fetchone()[0] == 53


def test_a_bad_url_is_a_typed_error_without_the_password() -> None:
    with pytest.raises(AccessLogError) as caught:
        AccessLog("postgresql+psycopg2://u:s3cret-pw@127.0.0.1:1/nothing")
    assert "s3cret-pw" not in str(caught.value) and "***" in str(caught.value)
