"""A file-access trace: the requests a cache sees, in time order, as the simulator and the policies read them.

A trace is a CSV file with the header ``time_s,path,size_bytes`` and one request per line, sorted by
time (``shared/workloads/gen_access_trace.py`` writes them). :class:`Trace` is what :mod:`.sim` replays and
what an offline policy (:mod:`.policies`' ``belady``) looks ahead in; it lives below both.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from airflow_cloud_paas.services.xcache.errors import TraceError

HEADER = ("time_s", "path", "size_bytes")


@dataclass
class Trace:
    """Requests of a trace, in order: times, paths and sizes (paths are shared, interned objects)."""

    times: list[float]
    paths: list[str]
    sizes: list[int]
    source: str = "<memory>"

    def __len__(self) -> int:
        return len(self.paths)

    def head(self, n: int) -> Trace:
        """Return the first ``n`` requests as a new trace.

        :param n: how many requests to keep
        """
        return Trace(self.times[:n], self.paths[:n], self.sizes[:n], source=f"{self.source}[:{n}]")

    @classmethod
    def from_rows(cls, rows: Iterable[tuple[float, str, int]], source: str = "<memory>") -> Trace:
        """Build a trace from ``(time_s, path, size_bytes)`` tuples, checking each value.

        :param rows: the requests, sorted by time
        :param source: a name for error messages
        """
        trace = cls([], [], [], source=source)
        interned: dict[str, str] = {}
        previous = float("-inf")
        for number, (t, path, size) in enumerate(rows, start=1):
            t, path, size = _checked(t, path, size, source, number, previous)
            previous = t
            trace.times.append(t)
            trace.paths.append(interned.setdefault(path, path))
            trace.sizes.append(size)
        return trace


def _checked(t: Any, path: Any, size: Any, source: str, line: int, previous: float) -> tuple[float, str, int]:
    try:
        t = float(t)
    except (TypeError, ValueError):
        raise TraceError(f"time {t!r} is not a number of seconds", file=source, line=line, column="time_s") from None
    if t != t or t in (float("inf"), float("-inf")):
        raise TraceError(f"time {t!r} is not finite", file=source, line=line, column="time_s")
    if t < previous:
        raise TraceError(f"time {t:g} is before the previous request's ({previous:g}): sort the trace by time",
                         file=source, line=line, column="time_s")
    if not isinstance(path, str) or not path.strip():
        raise TraceError("path is empty", file=source, line=line, column="path")
    try:
        size = int(size)
    except (TypeError, ValueError):
        raise TraceError(f"size {size!r} is not a whole number of bytes", file=source, line=line,
                         column="size_bytes") from None
    if size < 0:
        raise TraceError(f"size {size} is negative", file=source, line=line, column="size_bytes")
    return t, path, size


def load_trace(path: str | Path) -> Trace:
    """Read a trace CSV (``time_s,path,size_bytes``) and check every line.

    :param path: the CSV file
    """
    source = str(path)
    try:
        fh = open(path, newline="")
    except OSError as err:
        raise TraceError(f"cannot open the trace: {err.strerror or err}", file=source) from None
    with fh:
        try:
            reader = csv.reader(fh)
            header = next(reader, None)
            if header is None:
                raise TraceError(f"the trace is empty: expected the header {','.join(HEADER)}", file=source, line=1)
            if tuple(h.strip() for h in header) != HEADER:
                raise TraceError(f"header is {','.join(header)!r}, expected {','.join(HEADER)!r}", file=source,
                                 line=1)
            times: list[float] = []
            paths: list[str] = []
            sizes: list[int] = []
            interned: dict[str, str] = {}
            previous = float("-inf")
            line = 1
            for line, row in enumerate(reader, start=2):
                if len(row) != 3:
                    if not row:
                        continue  # a blank line (a trailing newline) is not a request
                    column = HEADER[min(len(row), 3) - 1] if len(row) > 3 else HEADER[len(row)]
                    raise TraceError(f"expected 3 values ({','.join(HEADER)}), got {len(row)}", file=source,
                                     line=line, column=column)
                t, p, s = row
                try:  # the fast path; _checked explains what is wrong with a bad line
                    tf = float(t)
                    si = int(s)
                    ok = previous <= tf < float("inf") and si >= 0 and p
                except ValueError:
                    ok = False
                if not ok:
                    tf, p, si = _checked(t, p, s, source, line, previous)
                previous = tf
                times.append(tf)
                paths.append(interned.setdefault(p, p))
                sizes.append(si)
        except UnicodeDecodeError as err:
            raise TraceError(f"not a text file ({err.reason})", file=source) from None
        except csv.Error as err:
            raise TraceError(f"not valid CSV: {err}", file=source, line=reader.line_num) from None
    return Trace(times, paths, sizes, source=source)
