"""A cloud's catalogue (instance types, flavours) kept on disk for a while, shared by the task processes.

Every Airflow task runs in a process of its own, so a backend's in-memory copy of the region's instance types lives
only as long as one task: ten deployments of one node each asked EC2 for its ~800 instance types ten times (seven
paginated calls each, the largest answers a deployment reads). :func:`cached` keeps such a list in a JSON file under
``$CLOUD_PAAS_CATALOG_DIR`` (default ``$AIRFLOW_HOME/cloud_paas/catalog``) for ``ttl`` seconds, keyed by what it
depends on (the API's endpoint and region), written atomically; a missing, stale or unreadable file is fetched
again, by one process at a time (a file lock): ten deployments starting together on a cold cache make one fetch,
not ten at once. Only what does not change between deployments belongs here (not images, which a user registers
and uses at once).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from airflow_cloud_paas.backends.base import poll_until
from airflow_cloud_paas.exceptions import ResourceTimeoutError

DIR_ENV = "CLOUD_PAAS_CATALOG_DIR"
#: seconds a process waits for another's fetch of the same catalogue before it fetches for itself
LOCK_WAIT_S = 120.0


def catalog_dir() -> Path:
    """Return where catalogues are kept (``CLOUD_PAAS_CATALOG_DIR``, else under the Airflow home)."""
    configured = os.environ.get(DIR_ENV)
    if configured:
        return Path(configured)
    return Path(os.environ.get("AIRFLOW_HOME") or Path.home() / "airflow") / "cloud_paas" / "catalog"


def cached(name: str, key: Mapping[str, Any], ttl: float, fetch: Callable[[], Any]) -> Any:
    """Return the catalogue ``name`` for ``key``: from its file when younger than ``ttl`` seconds, else fetched.

    :param name: what it is (``aws-instance-types``), the file's prefix
    :param key: what it depends on (endpoint, region); JSON-serialisable
    :param ttl: seconds a fetched copy is used
    :param fetch: returns the catalogue (JSON-serialisable)
    """
    digest = hashlib.sha256(json.dumps(dict(key), sort_keys=True, default=str).encode()).hexdigest()[:24]
    path = catalog_dir() / f"{name}-{digest}.json"
    fresh = _read(path, ttl)
    if fresh is not None:
        return fresh[0]
    with _fetching(path):
        fresh = _read(path, ttl)  # fetched by another process while this one waited
        if fresh is not None:
            return fresh[0]
        value = fetch()
        try:
            partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            partial.write_text(json.dumps({"fetched_at": time.time(), "key": dict(key), "value": value}, default=str))
            os.replace(partial, path)
        except OSError:
            pass  # a read-only home: the next process fetches again
        return value


def _read(path: Path, ttl: float) -> tuple[Any] | None:
    """Return ``(value,)`` from a catalogue file younger than ``ttl`` seconds, or None."""
    try:
        data = json.loads(path.read_text())
        if isinstance(data, dict) and 0 <= time.time() - float(data["fetched_at"]) < ttl:
            return (data["value"],)
    except (OSError, ValueError, KeyError, TypeError):
        pass  # none yet, or unreadable: fetched again
    return None


@contextlib.contextmanager
def _fetching(path: Path) -> Iterator[None]:
    """Hold the lock of one catalogue's fetch (across processes); go on without it where it cannot be taken."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = open(path.with_name(f".{path.name}.lock"), "a")  # noqa: SIM115 - closed below, after the unlock
    except OSError:  # a read-only home: every process fetches
        yield
        return
    with lock:
        # released when the file closes, also if its holder dies; a holder stuck in a slow fetch holds the others
        # back at most LOCK_WAIT_S, then they fetch for themselves
        try:
            poll_until(lambda: _try_lock(lock), bool, timeout=LOCK_WAIT_S, interval=0.1,
                       what=f"the lock of {path.name}", provider="catalog", resource=str(path))
        except ResourceTimeoutError:
            pass  # fetched without the lock, as when it cannot be taken at all
        yield


def _try_lock(lock: Any) -> bool:
    """Take an exclusive lock on an open file without waiting; return whether it was taken."""
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
