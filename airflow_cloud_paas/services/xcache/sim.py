"""Replay a file-access trace through a cache policy and measure hits and writes.

A trace (:mod:`.trace`) is a CSV file with the header ``time_s,path,size_bytes`` and one request per line,
sorted by time (``shared/workloads/gen_access_trace.py`` writes them). A request of a cached file is a hit;
a miss reads the whole file from the origin and, if the policy admits it, writes the whole file to the
cache. Prefetched files count in the bytes written. Sizes are binary: 1 TB here is ``1024**4`` bytes,
as in the trace generator.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import asdict, dataclass
from typing import Any

from airflow_cloud_paas.services.xcache.errors import CapacityError, XCacheError
from airflow_cloud_paas.services.xcache.policies import CachePolicy, make_policy
from airflow_cloud_paas.services.xcache.trace import Trace

TB = 1024**4
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
