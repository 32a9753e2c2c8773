"""Typed errors of the XCache simulator, policies and popularity model.

They do not derive from Airflow's exception: these modules run in the ``cloud-paas`` CLI and in DAG tasks
without importing Airflow.
"""

from __future__ import annotations


class XCacheError(Exception):
    """Base class of the errors of the XCache simulator and model."""


class CapacityError(XCacheError, ValueError):
    """A cache capacity is not a positive size such as ``25TB``, ``500GB`` or ``10TiB``."""


class TraceError(XCacheError, ValueError):
    """A trace file cannot be read: missing, wrong header, or a bad value on a line.

    :param message: what is wrong and how to fix it
    :param file: the trace file
    :param line: the 1-based line number in the file
    :param column: the column name concerned
    """

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None,
                 column: str | None = None) -> None:
        self.message = message
        self.file = file
        self.line = line
        self.column = column
        where = [str(file)] if file else []
        if line is not None:
            where.append(f"line {line}")
        if column:
            where.append(f"column '{column}'")
        super().__init__(f"{', '.join(where)}: {message}" if where else message)


class PolicyError(XCacheError, ValueError):
    """A cache policy name is unknown, or a policy is used in a way it does not support."""


class ModelStateError(XCacheError, ValueError):
    """A popularity model's input is invalid: a saved state that cannot be loaded (corrupt, or from another
    version), a bad setting, or a malformed access record."""
