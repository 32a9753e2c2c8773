"""YAML reading shared by the TOSCA layer: the C loader when present, errors as ToscaSyntaxError."""

from __future__ import annotations

from typing import Any

import yaml

from airflow_cloud_paas.exceptions import ToscaSyntaxError

# The C loader is ~10x faster on the 100 KB INDIGO types files; both give the same YAML 1.1 values.
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def decode(data: bytes, file: str) -> str:
    """Return the text of a YAML file, or raise ToscaSyntaxError if it is not UTF-8.

    :param data: the file's bytes
    :param file: the file's path, for the error
    """
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise ToscaSyntaxError(f"is not UTF-8 text (byte {err.start}); save the template as UTF-8", file=file) from err


def load_yaml(text: str, file: str) -> Any:
    """Parse YAML text, raising ToscaSyntaxError with the line and column of a syntax error.

    :param text: the YAML text
    :param file: the file's path, for the error
    """
    try:
        return yaml.load(text, Loader=_LOADER)  # a safe loader (C or Python)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ToscaSyntaxError(f"invalid YAML{where}: {problem}; fix the YAML syntax", file=file) from err
