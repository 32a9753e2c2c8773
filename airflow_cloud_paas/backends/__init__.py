"""Backends: where node instances are made (the local machine or a cloud), behind one interface.

Backends are looked up by name. A cloud backend's module imports its SDK, so it is imported only when
asked for: ``get_backend("aws")`` imports ``airflow_cloud_paas.backends.aws`` and nothing else.
"""

from __future__ import annotations

import importlib
from typing import Any

from airflow_cloud_paas.backends.base import Backend, Resource, ResourceSpec, ResourceState
from airflow_cloud_paas.exceptions import BackendError

__all__ = [
    "Backend",
    "Resource",
    "ResourceSpec",
    "ResourceState",
    "available_backends",
    "get_backend",
    "register_backend",
]

#: name -> backend class, or "module:Class" (imported on first use); a name not listed here is
#: looked for in ``airflow_cloud_paas.backends.<name>`` (the Backend subclass whose ``name`` matches).
_REGISTRY: dict[str, type[Backend] | str] = {
    "local": "airflow_cloud_paas.backends.local:LocalBackend",
}

#: the package extra that installs each cloud backend's SDK (named in "not installed" errors)
_EXTRAS = {
    "aws": "aws",
    "gcp": "gcp",
    "azure": "azure",
    "openstack": "openstack",
    "docker": "docker",
    "kubernetes": "kubernetes",
}


def register_backend(name: str, cls: type[Backend] | str) -> None:
    """Make ``get_backend(name)`` build ``cls``.

    :param name: the backend's short name
    :param cls: a :class:`Backend` subclass, or ``"module:Class"`` imported on first use
    """
    if not isinstance(cls, str) and not (isinstance(cls, type) and issubclass(cls, Backend)):
        raise TypeError(f"backend {name!r} must be a Backend subclass or 'module:Class', got {cls!r}")
    _REGISTRY[name] = cls


def available_backends() -> list[str]:
    """Return the names registered so far (modules found by convention are added when first used)."""
    return sorted(_REGISTRY)


def _import_backend(name: str) -> type[Backend]:
    entry = _REGISTRY.get(name)
    if entry is None and not name.isidentifier():
        raise BackendError(f"unknown backend {name!r}; known: {', '.join(available_backends())}", provider=name)
    module_name, _, class_name = (
        entry.partition(":") if isinstance(entry, str) else (f"airflow_cloud_paas.backends.{name}", "", "")
    )
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name == module_name:
            raise BackendError(
                f"unknown backend {name!r}; known: {', '.join(available_backends())} "
                "(or register one with airflow_cloud_paas.backends.register_backend())",
                provider=name,
            ) from err
        extra = _EXTRAS.get(name, name)
        raise BackendError(
            f"backend {name!r} needs {err.name!r}, which is not installed; "
            f"install it with: pip install 'airflow-cloud-paas[{extra}]'",
            provider=name,
        ) from err
    if class_name:
        return getattr(module, class_name)
    for value in vars(module).values():
        if isinstance(value, type) and issubclass(value, Backend) and getattr(value, "name", None) == name:
            return value
    raise BackendError(f"module {module_name} defines no Backend subclass named {name!r}", provider=name)


def get_backend(name: str, **options: Any) -> Backend:
    """Build the backend called ``name``.

    :param name: the backend's short name (local, aws, gcp, azure, openstack, docker, kubernetes)
    :param options: keyword arguments of the backend's constructor (e.g. ``work_root`` for local)
    """
    entry = _REGISTRY.get(name)
    cls = entry if isinstance(entry, type) else _import_backend(name)
    _REGISTRY[name] = cls
    return cls(**options)
