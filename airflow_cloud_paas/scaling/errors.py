"""Typed errors of the scaling engine.

They derive from ``ValueError``, not from ``CloudPaaSError``: that base imports Airflow, and the
scaling engine must load without it (the ``scale-sim`` command and DAG tasks import it cheaply).
"""

from __future__ import annotations


class ScalingError(ValueError):
    """Base class of every error raised by ``airflow_cloud_paas.scaling``."""


class PolicyError(ScalingError):
    """An unknown policy name, bad limits, or a policy state that cannot be loaded."""


class TraceError(ScalingError):
    """A job trace cannot be read: names the file, line and column, and what is expected.

    :param message: what is wrong and how to fix it
    :param file: the trace file
    :param line: the 1-based line number (the header is line 1)
    :param column: the column name concerned
    """

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None,
                 column: str | None = None) -> None:
        self.message = message
        self.file = file
        self.line = line
        self.column = column
        where = []
        if file:
            where.append(f"{file}:{line}" if line is not None else str(file))
        elif line is not None:
            where.append(f"line {line}")
        if column:
            where.append(f"column '{column}'")
        super().__init__(f"{', '.join(where)}: {message}" if where else message)

    def __reduce__(self):  # keep keyword attributes when pickled across processes
        return (_rebuild_trace_error, (type(self), self.message, self.file, self.line, self.column))


def _rebuild_trace_error(cls, message, file, line, column):
    return cls(message, file=file, line=line, column=column)


class SimulationError(ScalingError):
    """The trace cannot be replayed as asked (a job larger than a node, a decision breaking a limit)."""
