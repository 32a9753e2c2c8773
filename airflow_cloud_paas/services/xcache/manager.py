"""The smart manager of a live XCache: train the popularity model on the access log, then evict and prefetch.

Training replays the access-log window (default 60 days) into a fresh
:class:`~airflow_cloud_paas.services.xcache.model.PopularityModel`, the model the simulator's ``smart``
policy uses, and saves what the cache needs to act: each dataset's rate (expected tasks per day) and
the files seen in it.
Applying it to the cache (:meth:`SmartCacheManager.plan`) evicts the lowest-valued cached files until
the cache is under its target, and prefetches the highest-valued files seen but not cached, within a
byte budget and the room left, and only those worth at least as much as the least valuable file kept
(a prefetch is a write to the cache's disk).

Saved models live in a table (``cloud_paas_xcache_model``) of the access log's database, so every
worker reads the same one. No Airflow import here.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from airflow_cloud_paas.services.xcache.errors import XCacheError

DAY = 86400.0
MODEL_TABLE = "cloud_paas_xcache_model"


class CacheManagerError(XCacheError):
    """A model cannot be trained, saved, read or applied."""


def dataset_of(path: str) -> str:
    """Return a file's dataset: its directory.

    :param path: the file's logical name
    """
    return path.rpartition("/")[0]


@dataclass(frozen=True)
class CachePlan:
    """What to do to the cache now, and why.

    :param evict: files to remove from the cache, least valuable first
    :param prefetch: files to read into the cache, most valuable first
    :param reasons: one line per choice
    """

    evict: tuple[str, ...] = ()
    prefetch: tuple[str, ...] = ()
    reasons: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-able form (XCom)."""
        return {"evict": list(self.evict), "prefetch": list(self.prefetch), "reasons": list(self.reasons)}


@dataclass
class TrainedModel:
    """What a training run leaves for the cache: dataset values and the files seen, as of ``trained_at``.

    :param cache: the cache's label
    :param trained_at: the time the values are computed for (epoch seconds)
    :param records: how many access records fed it
    :param datasets: dataset -> value (expected future accesses per day, the model's estimate)
    :param files: file -> size, for every file seen in the window
    """

    cache: str
    trained_at: float
    records: int
    datasets: dict[str, float] = field(default_factory=dict)
    files: dict[str, int] = field(default_factory=dict)

    def value(self, path: str) -> float:
        """Return a file's value: its dataset's (a file never seen in a known dataset is worth nothing).

        :param path: the file
        """
        return self.datasets.get(dataset_of(path), 0.0)

    def to_json(self) -> str:
        """Return the model as JSON."""
        return json.dumps({"cache": self.cache, "trained_at": self.trained_at, "records": self.records,
                           "datasets": self.datasets, "files": self.files}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> TrainedModel:
        """Rebuild a model from :meth:`to_json` output.

        :param text: the JSON
        """
        data = json.loads(text)
        return cls(data["cache"], float(data["trained_at"]), int(data["records"]),
                   {k: float(v) for k, v in data["datasets"].items()}, {k: int(v) for k, v in data["files"].items()})


def train(records: Iterable[Any], cache: str, now: float | None = None, model: Any = None) -> TrainedModel:
    """Replay access records (oldest first) into a popularity model and return its values as of ``now``.

    :param records: objects with time_s, path, size, bytes_hit and bytes_missed (AccessRecord)
    :param cache: the cache's label
    :param now: the time to value the datasets at (default: the newest record's, else the clock)
    :param model: a PopularityModel to feed (default: a new one with its default settings)
    """
    from airflow_cloud_paas.services.xcache.model import PopularityModel

    model = model if model is not None else PopularityModel()
    ordered = sorted(records, key=lambda r: r.time_s)
    files: dict[str, int] = {}
    for record in ordered:
        model.observe(float(record.time_s), record.path, int(record.size), int(record.bytes_hit or 0),
                      int(record.bytes_missed or 0))
        files[record.path] = int(record.size)
    at = now if now is not None else (float(ordered[-1].time_s) if ordered else time.time())
    values = {name: float(model.rate(name, at)) for name in model.datasets}
    return TrainedModel(cache, at, len(ordered), values, files)


@dataclass
class SmartCacheManager:
    """Turn a trained model and the cache's content into evictions and prefetches.

    :param model: the trained model
    :param capacity_bytes: the cache's size
    :param target_fraction: evict until the cache holds at most this share of its capacity
    :param prefetch_budget_bytes: read at most this much into the cache per round
    """

    model: TrainedModel
    capacity_bytes: int
    target_fraction: float = 0.9
    prefetch_budget_bytes: int = 0

    def __post_init__(self) -> None:
        if self.capacity_bytes <= 0 or not 0 < self.target_fraction <= 1 or self.prefetch_budget_bytes < 0:
            raise CacheManagerError(
                f"need capacity_bytes > 0, 0 < target_fraction <= 1 and prefetch_budget_bytes >= 0; got "
                f"{self.capacity_bytes}, {self.target_fraction}, {self.prefetch_budget_bytes}")

    def plan(self, cached: Mapping[str, int]) -> CachePlan:
        """Return what to evict and prefetch, given the cached files and their bytes on disk.

        :param cached: file -> bytes it holds in the cache
        """
        reasons: list[str] = []
        target = int(self.capacity_bytes * self.target_fraction)
        used = sum(cached.values())
        by_value = sorted(cached, key=lambda p: (self.model.value(p), p))  # least valuable first
        evict: list[str] = []
        for path in by_value:
            if used <= target:
                break
            evict.append(path)
            used -= cached[path]
            reasons.append(f"evict {path}: value {self.model.value(path):.3g}/day, the lowest while the cache "
                           f"is over {self.target_fraction:.0%} of its capacity")
        kept = [p for p in by_value if p not in set(evict)]
        floor = self.model.value(kept[0]) if kept else 0.0
        budget = self.prefetch_budget_bytes
        room = self.capacity_bytes - used
        prefetch: list[str] = []
        candidates = sorted((p for p in self.model.files if p not in cached),
                            key=lambda p: (-self.model.value(p), p))
        for path in candidates:
            size, value = self.model.files[path], self.model.value(path)
            if value <= 0 or size > budget:
                continue
            if kept and value < floor:
                continue  # worth less than what the cache keeps: bringing it in is a write for nothing
            if size > room:
                reasons.append(f"prefetch {path} next round: worth more than the least valuable cached file, "
                               "which the next round's evictions make room for")
                continue
            prefetch.append(path)
            budget -= size
            room -= size
            reasons.append(f"prefetch {path}: value {value:.3g}/day (dataset {dataset_of(path)})")
        return CachePlan(tuple(evict), tuple(prefetch), tuple(reasons))


# ------------------------------------------------------------------------------------------ storage
class ModelStore:
    """Saved models, one per cache, in the access log's database.

    :param url: a SQLAlchemy URL (or a SQLite file path)
    """

    def __init__(self, url: str) -> None:
        from sqlalchemy import Column, Float, Integer, MetaData, String, Table, Text, create_engine

        text = url if "://" in url else f"sqlite:///{url}"
        self._engine = create_engine(text, future=True)
        metadata = MetaData()
        self._table = Table(MODEL_TABLE, metadata, Column("cache", String(255), primary_key=True),
                            Column("trained_at", Float, nullable=False), Column("records", Integer, nullable=False),
                            Column("body", Text, nullable=False))
        metadata.create_all(self._engine, checkfirst=True)

    def save(self, model: TrainedModel) -> None:
        """Save (replace) a cache's model.

        :param model: the trained model
        """
        from sqlalchemy import delete, insert

        with self._engine.begin() as connection:
            connection.execute(delete(self._table).where(self._table.c.cache == model.cache))
            connection.execute(insert(self._table).values(cache=model.cache, trained_at=model.trained_at,
                                                          records=model.records, body=model.to_json()))

    def load(self, cache: str) -> TrainedModel:
        """Return a cache's saved model.

        :param cache: the cache's label
        """
        from sqlalchemy import select

        with self._engine.begin() as connection:
            row = connection.execute(select(self._table.c.body).where(self._table.c.cache == cache)).first()
        if row is None:
            raise CacheManagerError(f"no popularity model is saved for cache '{cache}': run the training first")
        return TrainedModel.from_json(row[0])

    def close(self) -> None:
        """Release the database connections."""
        self._engine.dispose()


def plan_for(model: TrainedModel, cached: Sequence[Any], capacity_bytes: int, **options: Any) -> CachePlan:
    """Return the plan for a cache whose files are ``cached`` (objects with ``path`` and ``cached_bytes``).

    :param model: the trained model
    :param cached: the cache's files (CachedFile)
    :param capacity_bytes: the cache's size
    :param options: SmartCacheManager options (target_fraction, prefetch_budget_bytes)
    """
    return SmartCacheManager(model, capacity_bytes, **options).plan({f.path: int(f.cached_bytes) for f in cached})
