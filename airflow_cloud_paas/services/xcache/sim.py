"""Replay a file-access trace through a cache policy and measure hits and writes.

A trace is a CSV file with the header ``time_s,path,size_bytes`` and one request per line, sorted by
time (``shared/workloads/gen_access_trace.py`` writes them). A request of a cached file is a hit;
a miss reads the whole file from the origin and, if the policy admits it, writes the whole file to the
cache. Prefetched files count in the bytes written. Sizes are binary: 1 TB here is ``1024**4`` bytes,
as in the trace generator.
"""

from __future__ import annotations

import csv
import math
import re
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from airflow_cloud_paas.services.xcache.errors import CapacityError, TraceError, XCacheError
from airflow_cloud_paas.services.xcache.policies import CachePolicy, make_policy

TB = 1024**4
HEADER = ("time_s", "path", "size_bytes")
_UNITS = {"": 1, "B": 1}
for _i, _p in enumerate("KMGTPE", start=1):
    # binary for every spelling: the traces' generator counts a TB as 1024**4 bytes
    _UNITS[f"{_p}B"] = _UNITS[f"{_p}IB"] = _UNITS[_p] = 1024**_i
_CAPACITY = re.compile(r"^\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*([A-Za-z]*)\s*$")


def parse_capacity(text: str | int | float) -> int:
    """Return a capacity in bytes from ``25TB``, ``500GB``, ``10TiB``, ``1.5T`` or a plain byte count.

    Every unit is binary (``TB`` = ``TiB`` = ``1024**4`` bytes), like the trace generator.

    :param text: the capacity
    """
    if isinstance(text, bool):
        raise CapacityError(f"capacity must be a size like 25TB, got {text!r}")
    if isinstance(text, (int, float)):
        value, unit = float(text), ""
    else:
        match = _CAPACITY.match(str(text))
        if not match:
            raise CapacityError(f"capacity {text!r} is not a size: write a number and a unit, e.g. 25TB, 500GB, "
                                "10TiB")
        value, unit = float(match.group(1)), match.group(2).upper()
        if unit not in _UNITS:
            raise CapacityError(f"capacity {text!r} has an unknown unit {match.group(2)!r}: use B, KB, MB, GB, TB, "
                                "PB (or KiB ... PiB; all are binary)")
    if not math.isfinite(value):
        raise CapacityError(f"capacity {text!r} is not a finite size")
    capacity = int(value * _UNITS[unit])
    if capacity <= 0:
        raise CapacityError(f"capacity {text!r} must be more than 0 bytes")
    return capacity


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


@dataclass(frozen=True)
class SimResult:
    """Outcome of replaying a trace through a policy."""

    policy: str
    capacity_bytes: int
    requests: int
    hits: int
    bytes_requested: int
    bytes_hit: int
    bytes_written: int
    replay_s: float

    @property
    def hit_ratio(self) -> float:
        """Fraction of requests served from the cache."""
        return self.hits / self.requests if self.requests else 0.0

    @property
    def byte_hit_ratio(self) -> float:
        """Fraction of requested bytes served from the cache."""
        return self.bytes_hit / self.bytes_requested if self.bytes_requested else 0.0

    @property
    def bytes_written_tb(self) -> float:
        """Bytes written to the cache, in TB of ``1024**4`` bytes."""
        return self.bytes_written / TB

    def to_dict(self) -> dict[str, Any]:
        """Return the result as a JSON-able dict, ratios included."""
        out = asdict(self)
        out.update(hit_ratio=self.hit_ratio, byte_hit_ratio=self.byte_hit_ratio,
                   bytes_written_tb=self.bytes_written_tb)
        return out


def replay(trace: Trace, policy: CachePolicy | str, capacity: int | str | None = None) -> SimResult:
    """Replay ``trace`` through ``policy`` and count hits and bytes written.

    :param trace: the requests
    :param policy: a policy object, or a policy name (then ``capacity`` is needed)
    :param capacity: the cache size (bytes or a string like ``25TB``) when ``policy`` is a name
    """
    if isinstance(policy, str):
        if capacity is None:
            raise XCacheError(f"policy {policy!r} given by name needs a capacity")
        policy = make_policy(policy, parse_capacity(capacity))
    start = time.perf_counter()
    policy.prepare(trace)
    request = policy.request
    hits = bytes_hit = 0
    for i, (t, path, size) in enumerate(zip(trace.times, trace.paths, trace.sizes, strict=True)):
        if request(i, t, path, size):
            hits += 1
            bytes_hit += size
    elapsed = time.perf_counter() - start
    return SimResult(policy=policy.name, capacity_bytes=policy.capacity, requests=len(trace), hits=hits,
                     bytes_requested=sum(trace.sizes), bytes_hit=bytes_hit, bytes_written=policy.bytes_written,
                     replay_s=elapsed)
