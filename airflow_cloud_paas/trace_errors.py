"""The error of a trace file that cannot be read, shared by the simulators (``scale-sim``, ``cache-sim``).

Airflow-free: the simulators and their CLI commands load without Airflow. Each simulator derives its own
``TraceError`` from :class:`TraceFileError` and its package's base error.
"""

from __future__ import annotations


class TraceFileError(ValueError):
    """A trace cannot be read: names the file, line and column, and what is expected.

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
        where = [self._location()] if file or line is not None else []
        if column:
            where.append(f"column '{column}'")
        super().__init__(f"{', '.join(where)}: {message}" if where else message)

    def _location(self) -> str:
        """Return where in the file: ``file:line`` (as compilers write it), or what is known of it."""
        if self.file:
            return f"{self.file}:{self.line}" if self.line is not None else str(self.file)
        return f"line {self.line}"

    def __reduce__(self):  # keep keyword attributes when pickled across processes
        return (_rebuild, (type(self), self.message, self.file, self.line, self.column))


def _rebuild(cls, message, file, line, column):
    return cls(message, file=file, line=line, column=column)
