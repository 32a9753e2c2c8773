"""How the service operators read their arguments: templated mappings, names, and a task instance's identity.

One place for what the Galaxy, DEEPaaS and training operators check the same way; each passes its own typed
:class:`~airflow_cloud_paas.exceptions.ServiceConfigError` subclass, so the error names the service and the field.
"""

from __future__ import annotations

import ast
import hashlib
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from airflow_cloud_paas.exceptions import ServiceConfigError

if TYPE_CHECKING:
    from airflow.sdk import Context

#: a name that becomes part of a file name, an Asset URI or a registered name
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


def mapping_arg(value: Any, *, field: str, error: type[ServiceConfigError] = ServiceConfigError,
                empty_ok: bool = False) -> dict[str, Any]:
    """Return a templated mapping; a string (a dict rendered without native rendering) is read as a literal.

    :param value: the argument as rendered
    :param field: its name (for the error)
    :param error: the typed error to raise
    :param empty_ok: take None as an empty mapping
    """
    if value is None and empty_ok:
        return {}
    if isinstance(value, str):
        try:
            value = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            raise error("a mapping (name -> value)", field=field, value=value[:200]) from None
    if not isinstance(value, Mapping):
        raise error("a mapping (name -> value)", field=field, value=value)
    return dict(value)


def name_arg(value: Any, *, field: str, error: type[ServiceConfigError] = ServiceConfigError) -> str:
    """Return a name of 1-128 letters, digits, '.', '_' or '-' (it becomes a file name or part of a URI).

    :param value: the argument
    :param field: its name (for the error)
    :param error: the typed error to raise
    """
    if not isinstance(value, str) or not _NAME.match(value):
        raise error("1-128 letters, digits, '.', '_' or '-' (it becomes a file name)", field=field, value=value)
    return value


def task_instance_key(context: Context | None) -> tuple[str, str, str] | None:
    """Return what names a task instance across its tries (dag, run, task[.map index]), or None outside one.

    :param context: the task context
    """
    ti = context.get("ti") if context else None
    if ti is None or not getattr(ti, "run_id", None):
        return None
    index = getattr(ti, "map_index", -1)
    task = ti.task_id if index in (None, -1) else f"{ti.task_id}.{index}"
    return (str(ti.dag_id), str(ti.run_id), task)


def task_instance_tag(context: Context | None, prefix: str) -> str | None:
    """Return a short tag of the task instance (``<prefix><16 hex digits>``), or None outside one.

    :param context: the task context
    :param prefix: the tag's prefix
    """
    key = task_instance_key(context)
    return None if key is None else f"{prefix}{hashlib.sha256('|'.join(key).encode()).hexdigest()[:16]}"
