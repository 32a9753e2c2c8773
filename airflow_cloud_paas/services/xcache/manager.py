"""The smart manager of a live XCache: the popularity model learns online from the access log and runs the cache.

The model is the simulator's: :class:`~airflow_cloud_paas.services.xcache.model.PopularityModel`, the one
``cloud-paas cache-sim --policy smart`` replays. A live cache is managed in two steps, each a DAG task:

* **learn** (:func:`update_model`): the access-log records stored since the model's last run (followed by
  row id, since ``.cinfo`` records arrive out of time order) are fed to the saved model, which is saved
  again with the newest row it saw. A model's first run reads ``window_days`` back. What the cache wrote is
  accounted for the write budget: the bytes it missed on files it admitted, and the manager's prefetches,
  whose reads are recognised (by the prefetch table the apply step fills) and are not counted as accesses.
* **apply** (:func:`plan_cache`): :meth:`PopularityModel.plan` weighs every cached file (its dataset's rate,
  boosted while a task in progress has still to read it) and picks the evictions that bring the cache to
  its target and the prefetches (files a task in progress is about to read) worth more than what they
  displace; :func:`~.admission.policy_from_model` says which datasets the cache may write on a miss.

Saved models live in a table (``cloud_paas_xcache_model``) of the access log's database, so every worker
reads the same one. No Airflow import here.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from airflow_cloud_paas.services.xcache.errors import ModelStateError, XCacheError
from airflow_cloud_paas.services.xcache.model import ModelConfig, PopularityModel

DAY = 86400.0
MODEL_TABLE = "cloud_paas_xcache_model"
#: the layout of a saved model's body
MODEL_FORMAT = "cloud-paas-popularity-model/1"
#: a prefetch's read is recognised if it began this close to the prefetch (seconds)
PREFETCH_SLACK_S = 5.0


class CacheManagerError(XCacheError):
    """A model cannot be trained, saved, read or applied."""


def dataset_of(path: str) -> str:
    """Return a file's dataset: its directory.

    :param path: the file's logical name
    """
    return path.rpartition("/")[0]


@dataclass
class SavedModel:
    """A cache's popularity model and how far into the access log it has read.

    :param cache: the cache's label (its ``xrootd`` connection id)
    :param model: the model
    :param last_id: the newest access-log row fed to it
    :param trained_at: when it last learned (epoch seconds)
    :param records: how many access records fed it in all
    """

    cache: str
    model: PopularityModel
    last_id: int = 0
    trained_at: float = 0.0
    records: int = 0

    def to_body(self) -> str:
        """Return the stored form (JSON holding the model's compressed state)."""
        return json.dumps({"format": MODEL_FORMAT, "cache": self.cache, "last_id": self.last_id,
                           "trained_at": self.trained_at, "records": self.records,
                           "state": base64.b64encode(self.model.to_bytes()).decode()})

    @classmethod
    def from_body(cls, body: str) -> SavedModel:
        """Rebuild a saved model from :meth:`to_body` output.

        :param body: the stored text
        """
        try:
            data = json.loads(body)
            if not isinstance(data, dict) or data.get("format") != MODEL_FORMAT:
                raise CacheManagerError("the saved model is from another version of the manager: delete its row in "
                                        f"{MODEL_TABLE} (or retrain into a new cache label) to start it again")
            model = PopularityModel.from_bytes(base64.b64decode(data["state"]))
            return cls(str(data["cache"]), model, int(data["last_id"]), float(data["trained_at"]),
                       int(data["records"]))
        except CacheManagerError:
            raise
        except ModelStateError as err:
            raise CacheManagerError(f"the saved model cannot be read: {err}") from None
        except (KeyError, TypeError, ValueError) as err:
            raise CacheManagerError(f"the saved model is corrupt ({type(err).__name__}: {err})") from None


# ------------------------------------------------------------------------------------------ learning
def _prefetch_read(record: Any, prefetches: Mapping[str, list[list[float]]]) -> bool:
    """Return whether an access record is one of the manager's own prefetch reads (and consume that prefetch)."""
    spans = prefetches.get(record.path)
    if not spans:
        return False
    began = record.attach_s if record.attach_s is not None else record.time_s
    for i, (started, ended) in enumerate(spans):
        if started - PREFETCH_SLACK_S <= began <= ended + PREFETCH_SLACK_S:
            del spans[i]
            return True
    return False


def update_model(saved: SavedModel, access_log: Any, *, now: float | None = None, window_days: float = 60.0,
                 capacity_bytes: int | None = None, batch: int = 50_000) -> int:
    """Feed the access-log records stored since the model's last run to it; return how many were fed.

    :param saved: the cache's saved model (:meth:`ModelStore.load_or_new`)
    :param access_log: the :class:`~airflow_cloud_paas.services.xcache.monitor.AccessLog`
    :param now: the time (default: the clock)
    :param window_days: how far back a model's first run reads
    :param capacity_bytes: the cache's size (the write budget is relative to it)
    :param batch: records read per query
    """
    now = time.time() if now is None else now
    model = saved.model
    if capacity_bytes:
        model.capacity_bytes = int(capacity_bytes)
    first = saved.last_id == 0
    fed = 0
    while True:
        rows = access_log.after_id(saved.last_id, cache=saved.cache,
                                   since=now - window_days * DAY if first else None, limit=batch)
        if not rows:
            break
        records = sorted((r for _, r in rows), key=lambda r: r.time_s)  # stable: storage order within a time
        earliest = min((r.attach_s if r.attach_s is not None else r.time_s) for r in records)
        prefetches: dict[str, list[list[float]]] = {}
        for path, started, ended, _size in access_log.prefetches(earliest - DAY, cache=saved.cache):
            prefetches.setdefault(path, []).append([started, ended])
        for record in records:
            missed, bypassed = int(record.bytes_missed or 0), int(record.bytes_bypassed or 0)
            if _prefetch_read(record, prefetches):
                if missed:
                    model.record_write(missed, record.time_s)
                continue
            model.observe(float(record.time_s), record.path, int(record.size), int(record.bytes_hit or 0),
                          missed + bypassed)
            if missed:  # the cache wrote what it missed on a file it admitted
                model.record_write(missed, record.time_s)
            fed += 1
        saved.last_id = rows[-1][0]
        if len(rows) < batch:
            break
    model.prune(now)
    saved.trained_at = now
    saved.records += fed
    return fed


def top_datasets(model: PopularityModel, now: float, n: int = 5) -> list[tuple[str, float]]:
    """Return the ``n`` datasets of highest rate (tasks per day) at ``now``.

    :param model: the model
    :param now: the time
    :param n: how many
    """
    return sorted(((name, model.rate(st, now)) for name, st in model.datasets.items()), key=lambda kv: -kv[1])[:n]


# ------------------------------------------------------------------------------------------ applying
@dataclass(frozen=True)
class CachePlan:
    """What to do to the cache now, and why.

    :param evict: files to remove from the cache, least valuable first
    :param prefetch: ``(path, size)`` of files to read into the cache, most valuable first
    :param reasons: one line per choice
    """

    evict: tuple[str, ...] = ()
    prefetch: tuple[tuple[str, int], ...] = ()
    reasons: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-able form (XCom)."""
        return {"evict": list(self.evict), "prefetch": [p for p, _ in self.prefetch], "reasons": list(self.reasons)}


def plan_cache(model: PopularityModel, cached: Mapping[str, int], capacity_bytes: int, *, now: float | None = None,
               target_fraction: float = 0.9, prefetch_budget_bytes: int = 0) -> CachePlan:
    """Return the evictions and prefetches the model wants for a cache holding ``cached``.

    :param model: the popularity model
    :param cached: file -> bytes it holds in the cache
    :param capacity_bytes: the cache's size
    :param now: the time (default: the clock)
    :param target_fraction: the cache holds at most this share of its capacity afterwards
    :param prefetch_budget_bytes: read at most this much into the cache
    """
    if capacity_bytes <= 0 or not 0 < target_fraction <= 1 or prefetch_budget_bytes < 0:
        raise CacheManagerError(f"need capacity_bytes > 0, 0 < target_fraction <= 1 and prefetch_budget_bytes >= 0; "
                                f"got {capacity_bytes}, {target_fraction}, {prefetch_budget_bytes}")
    now = time.time() if now is None else now
    target = int(capacity_bytes * target_fraction)
    chosen = model.plan(cached, now, target_bytes=target, prefetch_budget_bytes=prefetch_budget_bytes)
    reasons = []
    used = sum(cached.values())
    for path in chosen.evict:
        reasons.append(f"evict {path}: dataset {dataset_of(path)} at {model.file_value(path, now):.3g} tasks/day, "
                       f"among the least valuable while the cache holds {used} of a {target}-byte target")
    for path, size in chosen.prefetch:
        reasons.append(f"prefetch {path} ({size} bytes): a task in progress on {dataset_of(path)} "
                       f"({model.file_value(path, now):.3g} tasks/day) has yet to read it")
    return CachePlan(tuple(chosen.evict), tuple((p, int(s)) for p, s in chosen.prefetch), tuple(reasons))


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

    def save(self, saved: SavedModel) -> None:
        """Save (replace) a cache's model.

        :param saved: the model and its position in the access log
        """
        from sqlalchemy import delete, insert

        with self._engine.begin() as connection:
            connection.execute(delete(self._table).where(self._table.c.cache == saved.cache))
            connection.execute(insert(self._table).values(cache=saved.cache, trained_at=saved.trained_at,
                                                          records=saved.records, body=saved.to_body()))

    def load(self, cache: str) -> SavedModel:
        """Return a cache's saved model.

        :param cache: the cache's label
        """
        found = self._load(cache)
        if found is None:
            raise CacheManagerError(f"no popularity model is saved for cache '{cache}': run the training first")
        return found

    def load_or_new(self, cache: str, config: ModelConfig | None = None) -> SavedModel:
        """Return a cache's saved model, or a new one (with ``config``) if none is saved.

        A saved model keeps its own settings unless ``config`` is given, which replaces them.

        :param cache: the cache's label
        :param config: the model's settings
        """
        found = self._load(cache)
        if found is None:
            return SavedModel(cache, PopularityModel(config))
        if config is not None and config != found.model.config:
            found.model.config = config
            found.model._configure()
        return found

    def _load(self, cache: str) -> SavedModel | None:
        from sqlalchemy import select

        with self._engine.begin() as connection:
            row = connection.execute(select(self._table.c.body).where(self._table.c.cache == cache)).first()
        return None if row is None else SavedModel.from_body(row[0])

    def close(self) -> None:
        """Release the database connections."""
        self._engine.dispose()


def model_config(settings: Mapping[str, Any] | None) -> ModelConfig | None:
    """Return the model settings an operator was given (None: keep the saved model's, or the defaults).

    :param settings: ModelConfig field -> value
    """
    if not settings:
        return None
    known = set(ModelConfig.__dataclass_fields__)
    unknown = sorted(set(settings) - known)
    if unknown:
        raise CacheManagerError(f"unknown model setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    try:
        return ModelConfig(**dict(settings))
    except ModelStateError as err:
        raise CacheManagerError(str(err)) from None
