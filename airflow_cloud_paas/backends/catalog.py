"""A cloud's catalogue (instance types, flavours) kept on disk for a while, shared by the task processes.

Every Airflow task runs in a process of its own, so a backend's in-memory copy of the region's instance types lives
only as long as one task: ten deployments of one node each asked EC2 for its ~800 instance types ten times (seven
paginated calls each, the largest answers a deployment reads). :func:`cached` keeps such a list in a JSON file under
``$CLOUD_PAAS_CATALOG_DIR`` (default ``$AIRFLOW_HOME/cloud_paas/catalog``) for ``ttl`` seconds, keyed by what it
depends on (the API's endpoint and region), written atomically; a missing, stale or unreadable file is fetched
again. Only what does not change between deployments belongs here (not images, which a user registers and uses at
once).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

DIR_ENV = "CLOUD_PAAS_CATALOG_DIR"


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
    try:
        data = json.loads(path.read_text())
        if isinstance(data, dict) and 0 <= time.time() - float(data["fetched_at"]) < ttl:
            return data["value"]
    except (OSError, ValueError, KeyError, TypeError):
        pass  # none yet, or unreadable: fetched again
    value = fetch()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        partial.write_text(json.dumps({"fetched_at": time.time(), "key": dict(key), "value": value}, default=str))
        os.replace(partial, path)
    except OSError:
        pass  # a read-only home: the next process fetches again
    return value
