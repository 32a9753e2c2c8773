"""Replace secret deployment inputs by ``"***"`` before anything is persisted.

Which names are secret is the project's single rule, :func:`airflow_cloud_paas.secrets.is_secret_name`
(whole words such as password, pw, token, jwt, creds, ssh_key, api_key, ...), plus the names a caller lists.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from airflow_cloud_paas.secrets import CONNECTION_REF, is_secret_name
from airflow_cloud_paas.secrets import MASK as SECRET_MASK

__all__ = ["SECRET_MASK", "mask_secret_inputs"]


def _is_ref(value: Any) -> bool:
    return isinstance(value, str) and CONNECTION_REF.match(value) is not None


def mask_secret_inputs(values: Mapping[str, Any] | None, secret_names: Iterable[str] = ()) -> dict[str, Any]:
    """Return a copy of ``values`` with every secret value replaced by ``"***"``, nested ones included.

    An empty secret (None or "") stays as it is: there is nothing to hide and it shows it was not set.
    A connection reference (``conn://<conn_id>/<field>``) is kept: it names where the secret is, not the secret.

    :param values: input name -> value
    :param secret_names: names that are secret whatever they are called
    """
    names = frozenset(secret_names)

    def secret(key: str) -> bool:
        return key in names or is_secret_name(key)

    def walk(value: Any) -> Any:
        if isinstance(value, Mapping):
            return {
                str(k): (SECRET_MASK if secret(str(k)) and v not in (None, "") and not _is_ref(v) else walk(v))
                for k, v in value.items()
            }
        if isinstance(value, list | tuple):
            return [walk(v) for v in value]
        return value

    return walk(dict(values or {}))
