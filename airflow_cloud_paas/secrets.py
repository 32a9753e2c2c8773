"""Keep secrets out of logs, XCom, the UI and exceptions."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

MASK = "***"
_SECRET_NAME = re.compile(r"pass(word|wd)?|token|secret|private_key|api_key|credential", re.IGNORECASE)


def is_secret_name(name: str) -> bool:
    """Return whether a key name denotes a secret value.

    :param name: an input, output, property or extra name
    """
    return bool(_SECRET_NAME.search(name))


def mask_secrets(values: Mapping[str, Any], extra_names: tuple[str, ...] = ()) -> dict[str, Any]:
    """Return a copy with secret-named values (recursively) replaced by ``***``.

    :param values: a mapping such as inputs or outputs
    :param extra_names: more names to mask
    """
    out: dict[str, Any] = {}
    for key, value in values.items():
        if is_secret_name(str(key)) or key in extra_names:
            out[key] = MASK if value not in (None, "") else value
        elif isinstance(value, Mapping):
            out[key] = mask_secrets(value, extra_names)
        else:
            out[key] = value
    return out


#: an input value read from an Airflow connection at run time: ``conn://<conn_id>/<field>``, where field is
#: password, login, host, port, schema or ``extra.<key>``; ``{deployment_id}`` in the id is filled in
CONNECTION_REF = re.compile(r"^conn://(?P<conn_id>[^/\s]+)/(?P<field>password|login|host|port|schema|extra\.[\w.-]+)$")


def connection_refs(inputs: Mapping[str, Any]) -> dict[str, str]:
    """Return the inputs whose value is a connection reference (``conn://<conn_id>/<field>``).

    :param inputs: TOSCA input values
    """
    return {k: v for k, v in inputs.items() if isinstance(v, str) and v.startswith("conn://")}


def resolve_connection_refs(inputs: Mapping[str, Any], deployment_id: str, get_connection: Any) -> dict[str, Any]:
    """Return the inputs with connection references replaced by the connection's field, each masked in logs.

    The references themselves are what gets stored, so a later task (or a scale months later) reads the
    secret again from the connection; the value never reaches the store, XCom or the DAG run's conf.

    :param inputs: TOSCA input values
    :param deployment_id: fills ``{deployment_id}`` in connection ids
    :param get_connection: conn_id -> an Airflow Connection (``BaseHook.get_connection``)
    """
    from airflow_cloud_paas.exceptions import ToscaInputError

    resolved = dict(inputs)
    for name, ref in connection_refs(inputs).items():
        match = CONNECTION_REF.match(ref)
        if match is None:
            raise ToscaInputError(
                f"'{ref}' is not a connection reference: write conn://<conn_id>/<field>, field one of password, "
                "login, host, port, schema or extra.<key>", field=f"inputs.{name}")
        conn_id = match["conn_id"].replace("{deployment_id}", deployment_id)
        try:
            conn = get_connection(conn_id)
        except Exception as err:  # AirflowNotFoundException and backend errors alike: name the connection
            raise ToscaInputError(f"input reads connection '{conn_id}', which cannot be read: "
                                  f"{type(err).__name__}", field=f"inputs.{name}") from None
        field = match["field"]
        if field.startswith("extra."):
            value: Any = conn.extra_dejson
            for key in field.split(".")[1:]:
                value = value.get(key) if isinstance(value, Mapping) else None
        else:
            value = getattr(conn, field, None)
        if value in (None, ""):
            raise ToscaInputError(f"connection '{conn_id}' has no {field}", field=f"inputs.{name}")
        _mask_in_logs(value)
        resolved[name] = value
    return resolved


def _mask_in_logs(value: Any) -> None:
    try:
        from airflow.sdk.log import mask_secret
    except ImportError:  # outside Airflow (the CLI's validate): nothing logs task output there
        return
    mask_secret(value)
