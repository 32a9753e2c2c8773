"""``get_provider_info`` lists the whole Airflow face of the package, and stays cheap to call.

The package is walked as installed (``pkgutil.walk_packages``, plus the folders ``pyproject.toml`` maps with
``package-dir``, which an editable install keeps outside ``airflow_cloud_paas/``): every hook, operator,
sensor and trigger class found must sit in a module the provider info lists, and every connection type must
name a hook class that imports and agrees with it.
"""

from __future__ import annotations

import importlib
import inspect
import json
import pkgutil
import subprocess
import sys
import tomllib
from functools import cache
from importlib.resources import files
from pathlib import Path
from types import ModuleType

import jsonschema
import pytest
from airflow.sdk import BaseHook, BaseOperator, BaseSensorOperator
from airflow.triggers.base import BaseTrigger

from airflow_cloud_paas import get_provider_info
from airflow_cloud_paas.hooks import ui_field_behaviour

REPO = Path(__file__).resolve().parents[2]
ROOT = "airflow_cloud_paas"
#: provider info section -> the base class of what it lists (a sensor is listed as a sensor, not an operator)
KINDS = {"hooks": BaseHook, "operators": BaseOperator, "sensors": BaseSensorOperator, "triggers": BaseTrigger}
#: modules that are a configuration file's body (webserver_config.py imports it): they read the UI login's settings
#: when imported and stop the API server when one is missing, by design; they define no hook or operator
CONFIG_MODULES = {f"{ROOT}.plugin.fab_webserver_config"}


@cache
def _modules() -> dict[str, ModuleType]:
    """Import every module of the installed package; return them by name."""
    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    packages = {ROOT, *setuptools.get("package-dir", {})}
    names: set[str] = set()
    for name in sorted(packages):
        package = importlib.import_module(name)
        names |= {name, *(m.name for m in pkgutil.walk_packages(package.__path__, f"{name}."))}
    return {name: importlib.import_module(name) for name in sorted(names - CONFIG_MODULES)}


def _kind(cls: type) -> str | None:
    if issubclass(cls, BaseSensorOperator):
        return "sensors"
    return next((kind for kind, base in KINDS.items() if issubclass(cls, base)), None)


@cache
def _classes() -> dict[str, list[type]]:
    """Return the hook, operator, sensor and trigger classes the package defines, by provider info section."""
    found: dict[str, list[type]] = {kind: [] for kind in KINDS}
    for name, module in _modules().items():
        for _, cls in inspect.getmembers(module, inspect.isclass):
            kind = _kind(cls) if cls.__module__ == name else None
            if kind:
                found[kind].append(cls)
    return found


def _listed(kind: str) -> set[str]:
    return {m for entry in get_provider_info().get(kind, []) for m in entry["python-modules"]}


def _path(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _import(path: str) -> type:
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_class_is_in_a_listed_module(kind: str) -> None:
    classes = _classes()[kind]
    assert classes, f"no {kind} found: is the package installed with its package-dir folders?"
    missing = sorted(_path(c) for c in classes if c.__module__ not in _listed(kind))
    assert not missing, f"get_provider_info()['{kind}'] misses the modules of: {missing}"


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_listed_module_imports_and_holds_its_kind(kind: str) -> None:
    holding = {c.__module__ for c in _classes()[kind]}
    stale = sorted(m for m in _listed(kind) if m not in holding)
    assert not stale, f"get_provider_info()['{kind}'] lists modules without such a class: {stale}"


def test_every_integration_used_is_declared() -> None:
    info = get_provider_info()
    declared = {i["integration-name"] for i in info["integrations"]}
    used = {entry["integration-name"] for kind in KINDS for entry in info.get(kind, [])}
    assert used <= declared, f"undeclared integrations: {sorted(used - declared)}"


def test_the_provider_info_fits_airflows_schema() -> None:
    schema = json.loads(files("airflow").joinpath("provider_info.schema.json").read_text())
    jsonschema.validate(get_provider_info(), schema)


def test_every_connection_type_names_its_hook() -> None:
    connection_types = get_provider_info()["connection-types"]
    assert len({c["connection-type"] for c in connection_types}) == len(connection_types)
    for entry in connection_types:
        hook = _import(entry["hook-class-name"])
        assert _path(hook) == entry["hook-class-name"]
        assert (hook.conn_type, hook.hook_name) == (entry["connection-type"], entry["hook-name"])
        assert hook.conn_name_attr and hook.default_conn_name
        # the hook's legacy form methods describe the form Airflow 3 builds from the provider info
        assert hook.get_ui_field_behaviour() == ui_field_behaviour(entry)
        assert importlib.import_module(hook.__module__).CONNECTION_TYPE is entry


def test_every_hook_with_its_own_connection_type_registers_it() -> None:
    """A hook that brings its own connection type registers it; one keeping an official hook's type needs not."""
    registered = {c["connection-type"]: c["hook-class-name"] for c in get_provider_info()["connection-types"]}
    for hook in _classes()["hooks"]:
        for attr in ("conn_name_attr", "default_conn_name", "conn_type", "hook_name"):
            assert getattr(hook, attr, None), f"{_path(hook)} has no {attr}"
        inherited = {getattr(base, "conn_type", None) for base in hook.__mro__[1:]
                     if not base.__module__.startswith(f"{ROOT}.")}
        if hook.conn_type in inherited:  # e.g. GceHook keeps ComputeEngineHook's google_cloud_platform
            continue
        assert registered.get(hook.conn_type) == _path(hook), f"{_path(hook)}: no connection type {hook.conn_type}"


def test_airflow_registers_every_connection_type_and_hides_secret_fields() -> None:
    from airflow.providers_manager import ProvidersManager
    from airflow.sdk.providers_manager_runtime import ProvidersManagerTaskRuntime

    hooks = ProvidersManagerTaskRuntime().hooks  # what tasks resolve connection types with
    manager = ProvidersManager()  # what the API server builds the connection form from
    for entry in get_provider_info()["connection-types"]:
        assert hooks[entry["connection-type"]].hook_class_name == entry["hook-class-name"]
        for field in entry["conn-fields"]:
            assert f"extra__{entry['connection-type']}__{field}" in manager.connection_form_widgets
    assert manager.connection_form_widgets["extra__htcondor__token"].is_sensitive  # an IDTOKEN is a secret
    assert not manager.connection_form_widgets["extra__htcondor__trust_domain"].is_sensitive


def test_get_provider_info_is_cheap() -> None:
    """Airflow calls it while ``import airflow`` runs: it imports no hook, no Airflow and no client library."""
    code = (
        "import json, sys, time\n"
        "import airflow_cloud_paas\n"
        "before = set(sys.modules)\n"
        "started = time.perf_counter()\n"
        "airflow_cloud_paas.get_provider_info()\n"
        "took = time.perf_counter() - started\n"
        "print(json.dumps({'new': sorted(set(sys.modules) - before), 'took': took}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["new"] == ["airflow_cloud_paas.hooks"], result["new"]
    assert result["took"] < 0.5, result

