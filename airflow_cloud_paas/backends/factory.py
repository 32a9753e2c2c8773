"""Build a backend from the deployment store connection."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow_cloud_paas.backends.base import Backend
    from airflow_cloud_paas.hooks.store import CloudPaaSStoreHook


def default_work_root() -> str:
    """Return the local backend's default work directory: ``$AIRFLOW_HOME/cloud_paas/work``."""
    home = os.environ.get("AIRFLOW_HOME") or str(Path.home() / "airflow")
    return str(Path(home) / "cloud_paas" / "work")


def backend_from_hook(hook: CloudPaaSStoreHook, name: str | None = None, **options: Any) -> Backend:
    """Return the named backend (or the connection's default) configured from the connection.

    :param hook: the deployment store hook
    :param name: a backend name or provider ref ``backend:conn_id``; ``None`` takes the connection's default
    :param options: more keyword arguments for the backend
    """
    from airflow_cloud_paas.backends import get_backend

    name = name or hook.backend or "local"
    backend, _, conn_id = name.partition(":")  # a provider ref: backend[:conn_id] (see placement)
    if backend == "local":
        root = hook.work_root or default_work_root()
        # each local "provider" keeps its own work root, so fallback attempts never share state
        return get_backend("local", work_root=f"{root}/{conn_id}" if conn_id else root, **options)
    return get_backend(backend, **({"conn_id": conn_id} if conn_id else {}), **options)
