"""An online, dataset-aware popularity model that decides what a file cache admits, prefetches and evicts.

The model learns from the cache's access log, one record at a time (``time_s, path, size, bytes_hit,
bytes_miss``), and only from records already seen. A file's **dataset** is its parent directory
(``/store/mc/DS000042/NANOAOD/00017.root`` belongs to ``/store/mc/DS000042/NANOAOD``).

**Popularity.** Analysis tasks read runs of a dataset's files, so the model counts *tasks* per dataset:
every task reads a file at most once, so the number of reads of a dataset's most-read file is the number
of tasks that covered it. Interest in a dataset decays with its age, at a rate common to all datasets
(``half_life_days``), so the model weighs the time a dataset has been watched by that decay and takes
the posterior mean of a Gamma-Poisson model: ``rate = (prior_tasks + tasks) / (prior_days + exposure)``
tasks per day, with ``exposure = (exp(g * age) - 1) / g`` days (``g`` the decay rate, ``age`` the time
since the dataset was first seen). A file's value is its dataset's rate, plus ``prefetch_boost`` while a
task in progress has still to read it.

**Scans.** A dataset read in the last ``active_window_s`` has a task in progress. The files that task
read lie in a contiguous run of the dataset's files in name order; the model widens the run it saw by the
mean gap between the files read and proposes the files in it that the task has not read yet for prefetch.

**Write budget.** Every byte written wears the cache's disks, so a file is written (admitted on a miss,
or prefetched) only if its dataset was read by at least ``min_tasks`` tasks and its rate reaches a
threshold: ``write_cost`` hits over the cache's turnover time (capacity / recent write rate). A
controller scales that threshold so that, over time, the bytes written stay near ``write_fraction`` of
the bytes the cache missed (a cache that writes every miss has a fraction of 1).

The same class serves the trace simulator (:class:`~.policies.SmartPolicy`, request by request) and a
live XCache (:meth:`PopularityModel.plan`, run periodically by a DAG); :meth:`PopularityModel.state_dict`
and :meth:`PopularityModel.to_bytes` carry what it learned from one run to the next.

Pure Python (no Airflow, no numpy).
"""

from __future__ import annotations

import json
import math
import zlib
from collections import OrderedDict
from collections.abc import Container, Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from airflow_cloud_paas.services.xcache.errors import ModelStateError

DAY = 86400.0
#: version of :meth:`PopularityModel.state_dict`'s layout
STATE_VERSION = 1
_MAGIC = b"XCPM1"

# positions in a file's stats list: [size, reads, last read time]
_SIZE, _READS, _LAST = 0, 1, 2


@dataclass
class ModelConfig:
    """Tunables of :class:`PopularityModel` (the defaults were tuned on gen_access_trace.py seeds 1-3).

    :param half_life_days: how fast interest in a dataset decays with its age
    :param prior_tasks: Gamma prior shape: pseudo-tasks every dataset starts with
    :param prior_days: Gamma prior rate: pseudo-days of watching every dataset starts with
    :param min_tasks: write nothing of a dataset read by fewer tasks (1 would admit one-shot datasets)
    :param active_window_s: a dataset read this recently has a task in progress
    :param prefetch_boost: value (tasks/day) added to files a task in progress has yet to read
    :param min_scan_reads: files a task must have read before its run is guessed and prefetched
    :param write_fraction: target bytes written per byte missed (the write budget)
    :param write_cost: hits a written byte must be expected to serve during the cache's turnover time
    :param write_rate_window_days: time constant of the recent write rate (turnover) estimate
    :param budget_scale: how strongly (as a fraction of the capacity) over- or under-spending the
        budget moves the threshold
    :param budget_clip: the most the controller multiplies or divides the threshold by
    :param forget_after_days: :meth:`PopularityModel.prune` drops datasets idle this long
    """

    half_life_days: float = 20.0
    prior_tasks: float = 0.1
    prior_days: float = 3.0
    min_tasks: int = 2
    active_window_s: float = 6 * 3600.0
    prefetch_boost: float = 4.0
    min_scan_reads: int = 2
    write_fraction: float = 0.3
    write_cost: float = 1.5
    write_rate_window_days: float = 2.0
    budget_scale: float = 0.2
    budget_clip: float = 4.0
    forget_after_days: float = 120.0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value != value or value < 0:
                raise ModelStateError(f"model setting {f.name} must be a number >= 0, got {value!r}")
        for name in ("half_life_days", "prior_days", "write_rate_window_days", "budget_scale", "budget_clip"):
            if getattr(self, name) <= 0:
                raise ModelStateError(f"model setting {name} must be more than 0, got {getattr(self, name)!r}")


class DatasetStats:
    """What the model knows of one dataset: its files, reads and tasks.

    :param name: the dataset (the files' parent directory)
    :param time_s: when it was first seen
    """

    __slots__ = ("name", "first_s", "last_s", "tasks", "reads", "bytes", "files", "_names", "_index")

    def __init__(self, name: str, time_s: float) -> None:
        self.name = name
        self.first_s = time_s
        self.last_s = time_s
        self.tasks = 0
        self.reads = 0
        self.bytes = 0
        self.files: dict[str, list] = {}  # path -> [size, reads, last read time], in order of last read
        self._names: list[str] | None = None
        self._index: dict[str, int] | None = None

    def sorted_files(self) -> list[str]:
        """Return the dataset's known files in name order (cached until a new file is seen)."""
        if self._names is None:
            self._names = sorted(self.files)
        return self._names

    def position(self, path: str) -> int:
        """Return a known file's position in :meth:`sorted_files`.

        :param path: the file
        """
        if self._index is None:
            self._index = {p: i for i, p in enumerate(self.sorted_files())}
        return self._index[path]


@dataclass
class CachePlan:
    """What to do to a cache now: files to evict first, then files to prefetch (most valuable first).

    :param evict: files to remove
    :param prefetch: ``(path, size)`` of files to read into the cache
    :param evict_bytes: bytes the evictions free
    """

    evict: list[str] = field(default_factory=list)
    prefetch: list[tuple[str, int]] = field(default_factory=list)
    evict_bytes: int = 0

    @property
    def prefetch_bytes(self) -> int:
        """Bytes the prefetches will write."""
        return sum(size for _, size in self.prefetch)


def dataset_of(path: str) -> str:
    """Return a file's dataset: its parent directory (``""`` for a bare name).

    :param path: the file's path
    """
    return path.rpartition("/")[0]


class PopularityModel:
    """Learn dataset popularity from a cache's accesses and decide admission, eviction and prefetch.

    :param config: the tunables (defaults: :class:`ModelConfig`)
    :param capacity_bytes: the cache's size; without it the write threshold is off (only ``min_tasks``
        gates writes)
    """

    def __init__(self, config: ModelConfig | None = None, capacity_bytes: int | None = None) -> None:
        self.config = config or ModelConfig()
        self.capacity_bytes = capacity_bytes
        self.datasets: dict[str, DatasetStats] = {}
        # datasets by last read, oldest first: finds the active ones without scanning them all
        self._recent: OrderedDict[str, float] = OrderedDict()
        self.budget_bytes = 0.0  # unspent write budget (negative: overspent)
        self._write_ewma = 0.0  # bytes written, exponentially decayed, as of _write_t
        self._write_t: float | None = None
        self.bytes_hit = 0
        self.bytes_missed = 0
        self.bytes_written = 0
        self.now_s: float | None = None
        self._configure()

    def _configure(self) -> None:
        c = self.config
        self._g = math.log(2) / (c.half_life_days * DAY)
        self._tau = c.write_rate_window_days * DAY

    # ------------------------------------------------------------------------------------ learning
    def observe(self, time_s: float, path: str, size: int, bytes_hit: int = 0, bytes_miss: int = 0) -> DatasetStats:
        """Learn from one access and return its dataset's stats.

        :param time_s: when the file was read (seconds; any epoch, the same for every call)
        :param path: the file read
        :param size: the file's size in bytes
        :param bytes_hit: bytes served from the cache
        :param bytes_miss: bytes fetched from the origin (they earn write budget)
        """
        name = path.rpartition("/")[0]
        st = self.datasets.get(name)
        if st is None:
            st = self.datasets[name] = DatasetStats(name, time_s)
        files = st.files
        f = files.pop(path, None)
        if f is None:
            f = [size, 0, time_s]
            st.bytes += size
            st._names = st._index = None
        elif f[_SIZE] != size and size > 0:  # the file was rewritten at the origin
            st.bytes += size - f[_SIZE]
            f[_SIZE] = size
        files[path] = f  # re-inserted: the dict stays in order of last read
        f[_READS] += 1
        if time_s > f[_LAST]:
            f[_LAST] = time_s
        if f[_READS] > st.tasks:  # each task reads a file once: the most-read file counts the tasks
            st.tasks = f[_READS]
        st.reads += 1
        if time_s < st.first_s:
            st.first_s = time_s
        if time_s >= st.last_s:
            st.last_s = time_s
            recent = self._recent
            recent[name] = time_s
            recent.move_to_end(name)
        if self.now_s is None or time_s > self.now_s:
            self.now_s = time_s
        if bytes_miss:
            self.bytes_missed += bytes_miss
            self.budget_bytes += self.config.write_fraction * bytes_miss
            self._clamp_budget()
        self.bytes_hit += bytes_hit
        return st

    def observe_many(self, records: Iterable[Any]) -> int:
        """Learn from many accesses, in time order, and return how many were read.

        :param records: ``(time_s, path, size[, bytes_hit, bytes_miss])`` tuples, or objects with
            ``time_s``, ``path``, ``size``, ``bytes_hit`` and ``bytes_missed`` (or ``bytes_miss``)
            attributes, such as :class:`~.monitor.AccessRecord`
        """
        n = 0
        for rec in records:
            if isinstance(rec, (tuple, list)):
                if len(rec) not in (3, 5):
                    raise ModelStateError(f"access record {n + 1} has {len(rec)} values; expected "
                                          "(time_s, path, size) or (time_s, path, size, bytes_hit, bytes_miss)")
                self.observe(*rec)
            else:
                missed = getattr(rec, "bytes_missed", None)
                if missed is None:
                    missed = getattr(rec, "bytes_miss", 0)
                self.observe(float(rec.time_s), rec.path, int(rec.size), int(getattr(rec, "bytes_hit", 0) or 0),
                             int(missed or 0))
            n += 1
        return n

    def record_write(self, nbytes: int, time_s: float) -> None:
        """Account for bytes written to the cache (an admission or a prefetch).

        A live XCache writes what it misses unless something stops it: report those bytes here as well
        as the prefetches, so that the write budget sees every byte written.

        :param nbytes: bytes written
        :param time_s: when
        """
        self.bytes_written += nbytes
        self.budget_bytes -= nbytes
        self._clamp_budget()
        if self._write_t is None:
            self._write_t = time_s
        elif time_s > self._write_t:
            self._write_ewma *= math.exp((self._write_t - time_s) / self._tau)
            self._write_t = time_s
        self._write_ewma += nbytes

    def _clamp_budget(self) -> None:
        # bounded so that a long quiet (or busy) spell does not wind the controller up for days
        if self.capacity_bytes:
            limit = 2.0 * self.config.budget_scale * self.capacity_bytes
            if self.budget_bytes > limit:
                self.budget_bytes = limit
            elif self.budget_bytes < -limit:
                self.budget_bytes = -limit

    # ---------------------------------------------------------------------------------- estimates
    def rate(self, dataset: str | DatasetStats, now: float) -> float:
        """Return a dataset's expected tasks per day at ``now`` (0 for an unknown dataset).

        :param dataset: the dataset's name or stats
        :param now: the time of the estimate
        """
        st = self.datasets.get(dataset) if isinstance(dataset, str) else dataset
        if st is None:
            return 0.0
        age = now - st.first_s
        if age < 0:
            age = 0.0
        exposure = math.expm1(self._g * age) / (self._g * DAY)
        c = self.config
        return (c.prior_tasks + st.tasks) / (c.prior_days + exposure)

    def is_active(self, dataset: str | DatasetStats, now: float) -> bool:
        """Return whether a dataset was read within ``active_window_s`` (a task is in progress).

        :param dataset: the dataset's name or stats
        :param now: the time
        """
        st = self.datasets.get(dataset) if isinstance(dataset, str) else dataset
        return st is not None and now - st.last_s < self.config.active_window_s

    def file_value(self, path: str, now: float, *, pending: bool = False) -> float:
        """Return a file's value: expected reads per day of its dataset, boosted while a task is to read it.

        :param path: the file
        :param now: the time
        :param pending: the file is in the run a task in progress has yet to read
        """
        st = self.datasets.get(path.rpartition("/")[0])
        if st is None:
            return 0.0
        value = self.rate(st, now)
        if pending and now - st.last_s < self.config.active_window_s:
            value += self.config.prefetch_boost
        return value

    def write_threshold(self, now: float) -> float:
        """Return the rate (tasks/day) a dataset needs for its files to be written now.

        :param now: the time
        """
        cap = self.capacity_bytes
        if not cap or self._write_t is None:
            return 0.0
        c = self.config
        ewma = self._write_ewma * math.exp(min(0.0, self._write_t - now) / self._tau)
        if ewma <= 0:
            return 0.0
        # writes per capacity per day = 1 / turnover time; a write must buy write_cost hits in it
        turnover_per_day = ewma / self._tau * DAY / cap
        scale = math.exp(-self.budget_bytes / (c.budget_scale * cap))
        scale = min(max(scale, 1.0 / c.budget_clip), c.budget_clip)
        return c.write_cost * scale * turnover_per_day

    def may_write(self, st: DatasetStats, now: float, threshold: float | None = None) -> float | None:
        """Return the value a file of ``st`` would be written with, or None if it must not be written.

        :param st: the dataset's stats
        :param now: the time
        :param threshold: :meth:`write_threshold` when already computed
        """
        if st.tasks < self.config.min_tasks:
            return None
        value = self.rate(st, now)
        if value < (self.write_threshold(now) if threshold is None else threshold):
            return None
        return value

    def should_admit(self, path: str, size: int, now: float, floor_value: float = 0.0) -> bool:
        """Return whether a missed file should be written to the cache.

        :param path: the file
        :param size: its size
        :param now: the time
        :param floor_value: value of the files it would displace (admit only above it); 0 when there is room
        """
        st = self.datasets.get(path.rpartition("/")[0])
        if st is None:
            return False
        value = self.may_write(st, now)
        return value is not None and value > floor_value and (self.capacity_bytes is None
                                                              or size <= self.capacity_bytes)

    # ---------------------------------------------------------------------------------- prefetch
    def active_datasets(self, now: float, since: float | None = None) -> list[DatasetStats]:
        """Return the datasets read since ``since`` (default: within the active window), latest first.

        :param now: the time
        :param since: the earliest last-read time to include
        """
        if since is None:
            since = now - self.config.active_window_s
        out = []
        for name in reversed(self._recent):
            if self._recent[name] < since:
                break
            out.append(self.datasets[name])
        return out

    def scan_candidates(self, st: DatasetStats, now: float) -> list[str]:
        """Return the files of ``st`` a task in progress is likely to read next, in name order.

        The files read within the active window mark the run the task reads; the run is widened by the
        mean gap between them on each side, and the files in it not read within the window are returned.

        :param st: the dataset
        :param now: the time
        """
        window = self.config.active_window_s
        files = st.files
        recent = []
        for p in reversed(files):  # latest read first: stop at the first read before the window
            if now - files[p][_LAST] > window:
                break
            recent.append(p)
        k = len(recent)
        if k < max(1, self.config.min_scan_reads):
            return []
        names = st.sorted_files()
        positions = [st.position(p) for p in recent]
        lo, hi = min(positions), max(positions)
        widen = (hi - lo) / (k - 1) + 1 if k > 1 else 1
        lo = max(0, int(lo - widen))
        hi = min(len(names) - 1, int(hi + widen))
        return [p for p in names[lo:hi + 1] if now - files[p][_LAST] > window]

    def prefetch_candidates(self, now: float, cached: Container[str], since: float | None = None,
                            cached_per_dataset: Mapping[str, int] | None = None) -> list[tuple[float, str, int]]:
        """Return ``(value, path, size)`` of files worth prefetching now, most valuable first.

        :param now: the time
        :param cached: the files already in the cache
        :param since: look at datasets read since then (default: within the active window)
        :param cached_per_dataset: how many files of each dataset are cached, if known: datasets with all
            their known files cached are skipped at once
        """
        threshold = self.write_threshold(now)
        out = []
        for st in self.active_datasets(now, since):
            if cached_per_dataset is not None and cached_per_dataset.get(st.name, 0) >= len(st.files):
                continue
            value = self.may_write(st, now, threshold)
            if value is None:
                continue
            value += self.config.prefetch_boost
            for p in self.scan_candidates(st, now):
                if p not in cached:
                    out.append((value, p, st.files[p][_SIZE]))
        out.sort(key=lambda c: -c[0])  # stable: within a dataset, name order
        return out

    # ---------------------------------------------------------------------------------- live plan
    def plan(self, cached: Mapping[str, int], now: float | None = None, *, target_bytes: int | None = None,
             prefetch_budget_bytes: int | None = None) -> CachePlan:
        """Decide what a live cache should evict and prefetch now.

        Files are ranked by :meth:`file_value` (files a task in progress has yet to read are boosted);
        the least valuable are evicted until the cache holds at most ``target_bytes``, and prefetch
        candidates are taken, most valuable first, into free space or in place of less valuable files,
        within ``prefetch_budget_bytes``.

        :param cached: the files in the cache and their sizes
        :param now: the time (default: the latest access seen)
        :param target_bytes: the most the cache may hold after the plan (default: the capacity)
        :param prefetch_budget_bytes: the most bytes to prefetch (default: no limit but the write budget)
        """
        if now is None:
            if self.now_s is None:
                return CachePlan()
            now = self.now_s
        if target_bytes is None:
            if not self.capacity_bytes:
                raise ModelStateError("plan() needs target_bytes, or a model made with capacity_bytes")
            target_bytes = self.capacity_bytes
        pending: set[str] = set()
        for st in self.active_datasets(now):
            pending.update(self.scan_candidates(st, now))
        # least valuable first; within a value, least recently read first
        ranked = sorted(cached.items(), key=lambda kv: (self.file_value(kv[0], now, pending=kv[0] in pending),
                                                        self._last_read(kv[0])))
        used = sum(cached.values())
        plan = CachePlan()
        i = 0
        while used > target_bytes and i < len(ranked):
            path, size = ranked[i]
            plan.evict.append(path)
            used -= size
            i += 1
        budget = float("inf") if prefetch_budget_bytes is None else prefetch_budget_bytes
        per_dataset: dict[str, int] = {}
        for path in cached:
            name = path.rpartition("/")[0]
            per_dataset[name] = per_dataset.get(name, 0) + 1
        for value, path, size in self.prefetch_candidates(now, cached, cached_per_dataset=per_dataset):
            if size > budget:
                break
            # room: free space first, then files worth less than this one
            j = i
            freed = 0
            while used - freed + size > target_bytes and j < len(ranked):
                victim, vsize = ranked[j]
                if self.file_value(victim, now, pending=victim in pending) >= value:
                    break
                freed += vsize
                j += 1
            if used - freed + size > target_bytes:
                break  # nothing cheaper left to displace
            plan.evict.extend(p for p, _ in ranked[i:j])
            i = j
            used += size - freed
            budget -= size
            plan.prefetch.append((path, size))
        plan.evict_bytes = sum(cached[p] for p in plan.evict)
        return plan

    def select_evictions(self, cached: Mapping[str, int], target_bytes: int, now: float | None = None) -> list[str]:
        """Return the cached files to evict, least valuable first, to bring the cache to ``target_bytes``.

        :param cached: the files in the cache and their sizes
        :param target_bytes: the most the cache may hold afterwards
        :param now: the time (default: the latest access seen)
        """
        return self.plan(cached, now, target_bytes=target_bytes, prefetch_budget_bytes=0).evict

    def select_prefetch(self, cached: Container[str], budget_bytes: int, now: float | None = None
                        ) -> list[tuple[str, int]]:
        """Return ``(path, size)`` of the files to prefetch, most valuable first, within ``budget_bytes``.

        Unlike :meth:`plan`, this does not weigh the files against what they would displace: make room
        with :meth:`select_evictions`, or use :meth:`plan` for both at once.

        :param cached: the files already in the cache
        :param budget_bytes: the most bytes to prefetch
        :param now: the time (default: the latest access seen)
        """
        if now is None:
            if self.now_s is None:
                return []
            now = self.now_s
        out = []
        for _, path, size in self.prefetch_candidates(now, cached):
            if size > budget_bytes:
                break
            budget_bytes -= size
            out.append((path, size))
        return out

    def _last_read(self, path: str) -> float:
        st = self.datasets.get(path.rpartition("/")[0])
        f = st.files.get(path) if st is not None else None
        return f[_LAST] if f is not None else float("-inf")

    # --------------------------------------------------------------------------------- upkeep
    def prune(self, now: float) -> int:
        """Forget datasets not read for ``forget_after_days``; return how many were dropped.

        :param now: the time
        """
        horizon = now - self.config.forget_after_days * DAY
        dropped = 0
        while self._recent:
            name, last = next(iter(self._recent.items()))
            if last >= horizon:
                break
            del self._recent[name]
            del self.datasets[name]
            dropped += 1
        return dropped

    # ---------------------------------------------------------------------------------- persistence
    def state_dict(self) -> dict[str, Any]:
        """Return everything the model learned as a JSON-able dict (see :meth:`load_state`)."""
        datasets = {}
        for name in self._recent:  # oldest read first, so that a reload keeps the order
            st = self.datasets[name]
            cut = len(name) + 1
            datasets[name] = [st.first_s, st.last_s,
                              [[p[cut:], f[_SIZE], f[_READS], f[_LAST]] for p, f in st.files.items()]]
        return {
            "version": STATE_VERSION,
            "config": asdict(self.config),
            "capacity_bytes": self.capacity_bytes,
            "budget_bytes": self.budget_bytes,
            "write_ewma": self._write_ewma,
            "write_t": self._write_t,
            "counters": {"bytes_hit": self.bytes_hit, "bytes_missed": self.bytes_missed,
                         "bytes_written": self.bytes_written, "now_s": self.now_s},
            "datasets": datasets,
        }

    def load_state(self, state: Mapping[str, Any]) -> PopularityModel:
        """Replace what the model knows with a :meth:`state_dict`; return the model.

        :param state: a dict from :meth:`state_dict` (possibly through JSON)
        """
        try:
            if state.get("version") != STATE_VERSION:
                raise ModelStateError(f"model state version {state.get('version')!r} is not {STATE_VERSION}: "
                                      "retrain the model from the access log")
            config = ModelConfig(**state["config"])
            datasets: dict[str, DatasetStats] = {}
            recent: OrderedDict[str, float] = OrderedDict()
            for name, (first, last, files) in state["datasets"].items():
                st = DatasetStats(name, float(first))
                st.last_s = float(last)
                for base, size, reads, read_at in files:
                    st.files[f"{name}/{base}"] = [int(size), int(reads), float(read_at)]
                    st.bytes += int(size)
                    st.reads += int(reads)
                    st.tasks = max(st.tasks, int(reads))
                datasets[name] = st
                recent[name] = st.last_s
            counters = state.get("counters", {})
            capacity = state.get("capacity_bytes")
            budget = float(state.get("budget_bytes", 0.0))
            ewma = float(state.get("write_ewma", 0.0))
            write_t = state.get("write_t")
        except ModelStateError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise ModelStateError(f"model state is not valid ({type(err).__name__}: {err}): retrain the model "
                                  "from the access log") from None
        self.config = config
        self._configure()
        self.capacity_bytes = int(capacity) if capacity else None
        self.datasets = datasets
        self._recent = OrderedDict(sorted(recent.items(), key=lambda kv: kv[1]))
        self.budget_bytes = budget
        self._write_ewma = ewma
        self._write_t = None if write_t is None else float(write_t)
        self.bytes_hit = int(counters.get("bytes_hit", 0))
        self.bytes_missed = int(counters.get("bytes_missed", 0))
        self.bytes_written = int(counters.get("bytes_written", 0))
        now = counters.get("now_s")
        self.now_s = None if now is None else float(now)
        return self

    def to_bytes(self) -> bytes:
        """Return the model's state as compact bytes (compressed JSON) for :meth:`from_bytes`."""
        text = json.dumps(self.state_dict(), separators=(",", ":"))
        return _MAGIC + zlib.compress(text.encode(), 6)

    @classmethod
    def from_bytes(cls, data: bytes) -> PopularityModel:
        """Return a model from :meth:`to_bytes`'s output.

        :param data: the bytes
        """
        if not isinstance(data, (bytes, bytearray)) or not data.startswith(_MAGIC):
            raise ModelStateError("not a saved popularity model (bad header): retrain the model from the access log")
        try:
            state = json.loads(zlib.decompress(data[len(_MAGIC):]))
        except (zlib.error, ValueError) as err:
            raise ModelStateError(f"saved popularity model is corrupt ({err}): retrain the model from the "
                                  "access log") from None
        if not isinstance(state, dict):
            raise ModelStateError("saved popularity model is corrupt (not an object)")
        return cls().load_state(state)
