"""Build a backend from the deployment store connection."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from airflow_cloud_paas.backends.base import Backend
    from airflow_cloud_paas.hooks.store import CloudPaaSStoreHook


def default_work_root() -> str:
    """Return the local backend's default work directory: ``$AIRFLOW_HOME/cloud_paas/work``."""
    home = os.environ.get("AIRFLOW_HOME") or str(Path.home() / "airflow")
    return str(Path(home) / "cloud_paas" / "work")


def backend_from_hook(hook: CloudPaaSStoreHook, name: str | None = None) -> Backend:
    """Return the named backend (or the connection's default) configured from the connection.

    :param hook: the deployment store hook
    :param name: a backend name; ``None`` takes the connection's ``backend`` extra
    """
    from airflow_cloud_paas.backends import get_backend

    name = name or hook.backend or "local"
    if name == "local":
        return get_backend("local", work_root=hook.work_root or default_work_root())
    return get_backend(name)
