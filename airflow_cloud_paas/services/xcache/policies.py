"""Cache policies with one interface, replayed by :mod:`.sim`: ``lru``, ``lfu``, ``lru2``, ``belady``, ``smart``.

A policy holds the set of cached files and their bytes. :meth:`CachePolicy.request` is called once per
request, in trace order, and returns whether it was a hit; on a miss the policy decides whether to write
the whole file into the cache (admission) and what to evict to make room, and it may prefetch files.
Everything a policy writes is added to :attr:`CachePolicy.bytes_written`.

Only ``belady`` is offline: :meth:`CachePolicy.prepare` gives it the whole trace to know each request's next
use. Every other policy sees a request only when it is made.
"""

from __future__ import annotations

import heapq
import math
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING

from airflow_cloud_paas.services.xcache.errors import PolicyError

if TYPE_CHECKING:
    from airflow_cloud_paas.services.xcache.model import PopularityModel
    from airflow_cloud_paas.services.xcache.trace import Trace


class CachePolicy:
    """A cache of ``capacity`` bytes that decides admission and eviction request by request.

    :param capacity: the cache size in bytes
    """

    #: the name the CLI and :func:`make_policy` know the policy by
    name = "base"

    def __init__(self, capacity: int) -> None:
        if capacity <= 0:
            raise PolicyError(f"cache capacity must be more than 0 bytes, got {capacity}")
        self.capacity = int(capacity)
        self.used = 0
        self.bytes_written = 0

    def prepare(self, trace: Trace) -> None:
        """Look at the whole trace before the replay; only offline policies (``belady``) may use it.

        :param trace: the trace about to be replayed
        """

    def request(self, index: int, time_s: float, path: str, size: int) -> bool:
        """Serve one request and return whether the file was in the cache.

        :param index: the request's position in the trace (0-based)
        :param time_s: the request's time in seconds
        :param path: the file requested
        :param size: the file's size in bytes
        """
        raise NotImplementedError

    def __contains__(self, path: str) -> bool:
        raise NotImplementedError

    def cached(self) -> dict[str, int]:
        """Return the cached files and their sizes."""
        raise NotImplementedError


class LRUPolicy(CachePolicy):
    """Admit every miss; evict the least recently used files.

    :param capacity: the cache size in bytes
    """

    name = "lru"

    def __init__(self, capacity: int) -> None:
        super().__init__(capacity)
        self._files: OrderedDict[str, int] = OrderedDict()

    def request(self, index: int, time_s: float, path: str, size: int) -> bool:
        files = self._files
        if path in files:
            files.move_to_end(path)
            return True
        self._admit(path, size)
        return False

    def _admit(self, path: str, size: int) -> None:
        if size > self.capacity:  # can never fit: read through
            return
        files = self._files
        self.used += size
        while self.used > self.capacity:
            self.used -= files.popitem(last=False)[1]
        files[path] = size
        self.bytes_written += size

    def __contains__(self, path: str) -> bool:
        return path in self._files

    def cached(self) -> dict[str, int]:
        return dict(self._files)


class LRU2Policy(LRUPolicy):
    """LRU that admits a file only on its second request; the first one is read through.

    Files requested once are remembered in a history (path and size, oldest dropped first) that holds
    as many bytes as the cache, so a file counts as requested twice only if both requests came within
    about one cache turnover.

    :param capacity: the cache size in bytes
    """

    name = "lru2"

    def __init__(self, capacity: int) -> None:
        super().__init__(capacity)
        self._history: OrderedDict[str, int] = OrderedDict()
        self._history_bytes = 0

    def request(self, index: int, time_s: float, path: str, size: int) -> bool:
        files = self._files
        if path in files:
            files.move_to_end(path)
            return True
        history = self._history
        if path in history:
            self._history_bytes -= history.pop(path)
            self._admit(path, size)
        else:
            history[path] = size
            self._history_bytes += size
            while self._history_bytes > self.capacity:
                self._history_bytes -= history.popitem(last=False)[1]
        return False


class LFUPolicy(CachePolicy):
    """Admit every miss; evict the files requested least often (counts kept across evictions), oldest first.

    :param capacity: the cache size in bytes
    """

    name = "lfu"

    def __init__(self, capacity: int) -> None:
        super().__init__(capacity)
        self._files: dict[str, int] = {}
        self._count: dict[str, int] = {}
        self._key: dict[str, tuple[int, int]] = {}
        self._heap: list[tuple[int, int, str]] = []
        self._clock = 0

    def request(self, index: int, time_s: float, path: str, size: int) -> bool:
        count = self._count[path] = self._count.get(path, 0) + 1
        self._clock += 1
        hit = path in self._files
        if not hit:
            if size > self.capacity:
                return False
            self.used += size
            while self.used > self.capacity:
                self._evict_one()
            self._files[path] = size
            self.bytes_written += size
        key = self._key[path] = (count, self._clock)
        heapq.heappush(self._heap, (*key, path))
        return hit

    def _evict_one(self) -> None:
        heap, keys = self._heap, self._key
        while True:
            count, clock, path = heapq.heappop(heap)
            if keys.get(path) == (count, clock):  # an older entry of a file since requested again is stale
                del keys[path]
                self.used -= self._files.pop(path)
                return

    def __contains__(self, path: str) -> bool:
        return path in self._files

    def cached(self) -> dict[str, int]:
        return dict(self._files)


class BeladyPolicy(CachePolicy):
    """The offline optimum's reference: evict the file used furthest in the future, and bypass a miss
    whose next use is further away than that of every cached file (or that is never used again).

    :param capacity: the cache size in bytes
    """

    name = "belady"

    def __init__(self, capacity: int) -> None:
        super().__init__(capacity)
        self._next: list[int] = []
        self._files: dict[str, int] = {}  # path -> index of its next request
        self._sizes: dict[str, int] = {}
        self._heap: list[tuple[int, str]] = []  # (-next use, path), stale entries skipped

    def prepare(self, trace: Trace) -> None:
        never = len(trace)
        nxt = [never] * never
        last: dict[str, int] = {}
        paths = trace.paths
        for i in range(never - 1, -1, -1):
            p = paths[i]
            nxt[i] = last.get(p, never)
            last[p] = i
        self._next = nxt
        self._never = never

    def request(self, index: int, time_s: float, path: str, size: int) -> bool:
        try:
            nu = self._next[index]
        except IndexError:
            raise PolicyError("belady is offline: call prepare(trace) with the whole trace before replaying it") \
                from None
        files = self._files
        if path in files:
            if nu == self._never:  # not needed again: free the space now
                del files[path]
                self.used -= self._sizes.pop(path)
            else:
                files[path] = nu
                heapq.heappush(self._heap, (-nu, path))
            return True
        if nu == self._never or size > self.capacity:
            return False
        heap = self._heap
        while self.used + size > self.capacity:
            neg, victim = heap[0]
            if files.get(victim) != -neg:
                heapq.heappop(heap)
                continue
            if -neg < nu:  # everything cached is needed before this file: do not admit it
                return False
            heapq.heappop(heap)
            del files[victim]
            self.used -= self._sizes.pop(victim)
        files[path] = nu
        self._sizes[path] = size
        self.used += size
        self.bytes_written += size
        heapq.heappush(heap, (-nu, path))
        return False

    def __contains__(self, path: str) -> bool:
        return path in self._files

    def cached(self) -> dict[str, int]:
        return dict(self._sizes)


class _CachedCount(Mapping):
    """How many files of each dataset a :class:`SmartPolicy` holds (both its groups), counted on demand."""

    def __init__(self, groups: dict[tuple[str, bool], OrderedDict[str, int]]) -> None:
        self._groups = groups

    def __getitem__(self, dataset: str) -> int:
        done = self._groups.get((dataset, False))
        pending = self._groups.get((dataset, True))
        count = (len(done) if done else 0) + (len(pending) if pending else 0)
        if not count:
            raise KeyError(dataset)
        return count

    def __iter__(self) -> Iterator[str]:
        return iter({name for name, _ in self._groups})

    def __len__(self) -> int:
        return len({name for name, _ in self._groups})


class SmartPolicy(CachePolicy):
    """The project's policy: a :class:`~.model.PopularityModel` learned online decides every write.

    On a miss the file is written only if the model lets its dataset be written (enough tasks, a rate
    above the write threshold) and its value beats the files it displaces. Every ``prefetch_interval_s``
    of trace time (a live manager's DAG cadence) the model proposes the files that tasks in progress have
    yet to read, and those worth more than what they displace are prefetched. Victims are taken from the
    dataset of lowest value (files a task in progress has yet to read count with the prefetch boost),
    least recently used first. The policy is causal: at each request it knows only the requests before
    it and the request itself.

    :param capacity: the cache size in bytes
    :param model: the popularity model to use and update (default: a new one with default settings)
    :param prefetch_interval_s: how often prefetch runs; 0 turns prefetch off
    :param prefetch_bytes_per_s: the origin link's speed for prefetches (default 1.25e9, 10 Gb/s): a round
        queues at most one interval's worth of transfers, and a prefetched file serves hits only once its
        transfer (in queue order) is done; a read before that is a miss. None: instant and unlimited
    :param refresh_s: how often the values of all cached datasets are recomputed (they drift with time)
    :param log: keep a per-request record of decisions in :attr:`decisions` (for tests)
    """

    name = "smart"

    def __init__(self, capacity: int, model: PopularityModel | None = None, *, prefetch_interval_s: float = 600.0,
                 prefetch_bytes_per_s: float | None = 1.25e9, refresh_s: float = 3600.0, log: bool = False) -> None:
        from airflow_cloud_paas.services.xcache.model import PopularityModel

        super().__init__(capacity)
        self.model = model if model is not None else PopularityModel()
        if self.model.capacity_bytes is None:
            self.model.capacity_bytes = self.capacity
        self.prefetch_interval_s = prefetch_interval_s
        self.prefetch_bytes_per_s = prefetch_bytes_per_s
        self.refresh_s = refresh_s
        self.bytes_prefetched = 0
        #: per request (when ``log``): (index, hit, admitted, evicted paths, prefetched paths)
        self.decisions: list[tuple[int, bool, bool, tuple[str, ...], tuple[str, ...]]] | None = [] if log else None
        self._groups: dict[tuple[str, bool], OrderedDict[str, int]] = {}  # (dataset, pending) -> files
        self._where: dict[str, tuple[str, bool]] = {}  # path -> its group
        self._heap: list[tuple[float, int, tuple[str, bool]]] = []  # (value, version, group)
        self._version: dict[tuple[str, bool], int] = {}
        self._seq = 0
        self._next_refresh: float | None = None
        self._next_prefetch: float | None = None
        self._last_prefetch = float("-inf")
        self._evicted: list[str] | None = [] if log else None
        self._ready: dict[str, float] = {}  # prefetched file -> when its transfer is done

    def __contains__(self, path: str) -> bool:
        return path in self._where

    def cached(self) -> dict[str, int]:
        return {p: size for group in self._groups.values() for p, size in group.items()}

    # ------------------------------------------------------------------------------- bookkeeping
    def _value(self, key: tuple[str, bool], now: float) -> float:
        model = self.model
        st = model.datasets[key[0]]
        value = model.rate(st, now)
        if key[1] and now - st.last_s < model.config.active_window_s:
            value += model.config.prefetch_boost
        return value

    def _push(self, key: tuple[str, bool], now: float) -> None:
        self._seq += 1
        self._version[key] = self._seq
        heapq.heappush(self._heap, (self._value(key, now), self._seq, key))

    def _refresh(self, now: float) -> None:
        # values drift with time (exposure grows, tasks end): re-rank every cached dataset
        window = self.model.config.active_window_s
        datasets = self.model.datasets
        for key in [k for k in self._groups if k[1] and now - datasets[k[0]].last_s >= window]:
            files = self._groups.pop(key)  # the task is over: what it did not read is ordinary now
            done_key = (key[0], False)
            done = self._groups.setdefault(done_key, OrderedDict())
            for p, size in reversed(files.items()):
                done[p] = size
                done.move_to_end(p, last=False)  # never read since written: least recently used
                self._where[p] = done_key
        self._heap = []
        self._version = {}
        for key in self._groups:
            self._push(key, now)

    def _make_room(self, size: int, value: float) -> bool:
        heap = self._heap
        while self.used + size > self.capacity:
            if not heap:
                return False
            v, version, key = heap[0]
            if self._version.get(key) != version:
                heapq.heappop(heap)
                continue
            if v >= value:  # everything left is worth at least as much: do not write
                return False
            group = self._groups[key]
            victim, vsize = group.popitem(last=False)
            del self._where[victim]
            if self._ready:
                self._ready.pop(victim, None)
            self.used -= vsize
            if self._evicted is not None:
                self._evicted.append(victim)
            if not group:
                del self._groups[key]
                del self._version[key]
                heapq.heappop(heap)
        return True

    def _insert(self, key: tuple[str, bool], path: str, size: int, now: float) -> None:
        group = self._groups.get(key)
        if group is None:
            group = self._groups[key] = OrderedDict()
        group[path] = size
        self._where[path] = key
        self.used += size
        self.bytes_written += size
        self.model.record_write(size, now)

    def _prefetch(self, now: float) -> list[str]:
        done: list[str] = []
        touched: set[tuple[str, bool]] = set()
        per_dataset = _CachedCount(self._groups)
        speed = self.prefetch_bytes_per_s
        clock = now  # when the link is free again
        for value, path, size in self.model.prefetch_candidates(now, self._where, since=self._last_prefetch,
                                                                cached_per_dataset=per_dataset):
            if speed is not None:
                if clock + size / speed > now + self.prefetch_interval_s:
                    break  # the link is busy until the next round
            if size > self.capacity or not self._make_room(size, value):
                continue
            if speed is not None:
                clock += size / speed
                self._ready[path] = clock
            key = (path.rpartition("/")[0], True)
            self._insert(key, path, size, now)
            self.bytes_prefetched += size
            touched.add(key)
            done.append(path)
        for key in touched:
            if key in self._groups:
                self._push(key, now)
        self._last_prefetch = now
        return done

    # ----------------------------------------------------------------------------------- request
    def request(self, index: int, time_s: float, path: str, size: int) -> bool:
        prefetched: list[str] = []
        if self._next_prefetch is None:
            self._next_prefetch = time_s + self.prefetch_interval_s
            self._last_prefetch = time_s
        elif self.prefetch_interval_s and time_s >= self._next_prefetch:
            prefetched = self._prefetch(time_s)
            # the next run is a whole number of intervals later, as a DAG schedule would have it
            k = math.floor((time_s - self._next_prefetch) / self.prefetch_interval_s) + 1
            self._next_prefetch += k * self.prefetch_interval_s
        key = self._where.get(path)
        hit = key is not None
        if hit and self._ready:
            ready = self._ready.pop(path, None)
            if ready is not None and time_s < ready:
                hit = False  # still on its way from the origin: this read goes there too
        model = self.model
        st = model.observe(time_s, path, size, size if hit else 0, 0 if hit else size)
        if self._next_refresh is None or time_s >= self._next_refresh:
            self._refresh(time_s)
            self._next_refresh = time_s + self.refresh_s
        admitted = False
        done_key = (st.name, False)
        if key is not None:
            group = self._groups[key]
            if key[1]:  # read at last: from the to-be-read files to the ordinary ones
                del group[path]
                if group:
                    self._push(key, time_s)
                else:
                    del self._groups[key]
                    del self._version[key]
                self._groups.setdefault(done_key, OrderedDict())[path] = size
                self._where[path] = done_key
            else:
                group.move_to_end(path)
            self._push(done_key, time_s)
        elif size <= self.capacity:
            value = model.may_write(st, time_s)
            if value is not None and self._make_room(size, value):
                self._insert(done_key, path, size, time_s)
                self._push(done_key, time_s)
                admitted = True
        if self.decisions is not None:
            self.decisions.append((index, hit, admitted, tuple(self._evicted), tuple(prefetched)))
            self._evicted.clear()
        return hit


POLICIES: dict[str, type[CachePolicy]] = {
    cls.name: cls for cls in (LRUPolicy, LFUPolicy, LRU2Policy, BeladyPolicy, SmartPolicy)
}


def make_policy(name: str, capacity: int, model: PopularityModel | None = None) -> CachePolicy:
    """Return a new policy by name.

    :param name: one of :data:`POLICIES` (``lru``, ``lfu``, ``lru2``, ``belady``, ``smart``)
    :param capacity: the cache size in bytes
    :param model: for ``smart``, a (possibly pre-trained) popularity model to use instead of a new one
    """
    key = name.strip().lower()
    if key not in POLICIES:
        raise PolicyError(f"unknown cache policy {name!r}: choose one of {', '.join(sorted(POLICIES))}")
    if model is not None:
        if key != "smart":
            raise PolicyError(f"policy {key!r} takes no popularity model; only 'smart' does")
        return POLICIES[key](capacity, model=model)  # type: ignore[call-arg]
    return POLICIES[key](capacity)
