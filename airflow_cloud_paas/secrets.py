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
