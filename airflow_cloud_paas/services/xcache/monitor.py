"""What an XCache did and holds: access records from its monitoring stream or its ``.cinfo`` files.

Two sources give the same :class:`AccessRecord` (one file access: when, which file, bytes served from
the cache's disk and bytes fetched from the origin):

* the cache's **g-stream**: with ``xrootd.monitor ... dest pfc host:port`` (see
  :class:`~airflow_cloud_paas.services.xcache.config.XCacheSettings.monitor`) XCache sends, when a file is
  closed, a JSON ``file_close`` record (``b_hit``, ``b_miss``, ``b_bypass``...) in a UDP packet;
  :class:`PfcMonitor` receives them on a thread;
* its **.cinfo files**: next to every cached file, the block map and the last accesses, printed as JSON by
  ``xrdpfc_print -j`` (:func:`read_cinfo`, :class:`CacheDirectory`).

:class:`AccessLog` keeps records in a SQL table (SQLite or PostgreSQL, through SQLAlchemy):
``cloud_paas_xcache_access_log``. A record's key is the cache, the file, the access's number and its
attach time, so re-reading the same ``.cinfo`` files, or receiving an access by both routes, stores it
once. The log exports the ``time_s,path,size_bytes`` trace the cache simulator replays.

Pure Python plus SQLAlchemy (no Airflow import).
"""

from __future__ import annotations

import calendar
import contextlib
import csv
import hashlib
import json
import logging
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from airflow_cloud_paas.services.xcache.errors import XCacheError

log = logging.getLogger(__name__)

CINFO_SUFFIX = ".cinfo"
TABLE_NAME = "cloud_paas_xcache_access_log"
#: the g-stream packet header: XrdXrootdMonHeader (8 bytes) then the stream's begin/end times and id (16)
_GSTREAM_HEADER = 24


class MonitorError(XCacheError):
    """Monitoring data cannot be read: a missing tool, an unreadable ``.cinfo``, a port in use."""


class AccessLogError(XCacheError):
    """The access-log table cannot be reached or written (bad URL, database down)."""


# ------------------------------------------------------------------------------------------ records
@dataclass(frozen=True)
class AccessRecord:
    """One access to one file through a cache.

    :param time_s: when the access ended (the file was detached), epoch seconds
    :param path: the file's path (LFN), e.g. ``/store/f.root``
    :param size: the file's size in bytes
    :param bytes_hit: bytes served from the cache's disk or memory
    :param bytes_missed: bytes fetched from the origin for this access
    :param bytes_bypassed: bytes read straight from the origin, bypassing the cache
    :param attach_s: when the access began, epoch seconds
    :param access_no: the access's number in the file's history in the cache (1 = the first)
    :param source: ``gstream`` or ``cinfo``
    :param cache: which cache (a label the caller chooses, e.g. its root URL)
    """

    time_s: float
    path: str
    size: int
    bytes_hit: int
    bytes_missed: int
    bytes_bypassed: int = 0
    attach_s: float | None = None
    access_no: int | None = None
    source: str = "gstream"
    cache: str = ""

    @property
    def key(self) -> str:
        """Return the record's identity: the same access read twice (or by both routes) has the same key."""
        attach = "" if self.attach_s is None else str(int(self.attach_s))
        number = "" if self.access_no is None else str(self.access_no)
        if not attach and not number:  # nothing identifies the access: fall back to its content
            attach = f"{self.time_s!r}|{self.bytes_hit}|{self.bytes_missed}"
        return hashlib.sha256("\0".join((self.cache, self.path, number, attach)).encode()).hexdigest()

    @property
    def hit_ratio(self) -> float | None:
        """Return the fraction of the bytes read that came from the cache (None: nothing read)."""
        total = self.bytes_hit + self.bytes_missed + self.bytes_bypassed
        return self.bytes_hit / total if total else None


def parse_gstream_packet(data: bytes, *, cache: str = "") -> list[AccessRecord]:
    """Return the ``file_close`` records of one XCache g-stream UDP packet (other events are skipped).

    The packet is a monitoring header (code ``g``), the stream's header, then JSON records separated by
    newlines and ended by a NUL byte.

    :param data: the packet
    :param cache: the label of the cache that sent it
    """
    if len(data) <= _GSTREAM_HEADER or data[:1] != b"g":
        return []
    payload = data[_GSTREAM_HEADER:].split(b"\0", 1)[0]
    records = []
    for line in payload.split(b"\n"):
        line = line.strip()
        if not line:
            continue
        try:
            event = json.loads(line)
        except ValueError:
            log.warning("skipping a g-stream record that is not JSON: %r", line[:200])
            continue
        if isinstance(event, dict) and event.get("event") == "file_close":
            record = _from_file_close(event, cache)
            if record is not None:
                records.append(record)
    return records


def _from_file_close(event: dict[str, Any], cache: str) -> AccessRecord | None:
    try:
        return AccessRecord(
            time_s=float(event["detach_t"]),
            path=str(event["lfn"]),
            size=int(event["size"]),
            bytes_hit=int(event.get("b_hit", 0)),
            bytes_missed=int(event.get("b_miss", 0)),
            bytes_bypassed=int(event.get("b_bypass", 0)),
            attach_s=float(event["attach_t"]) if "attach_t" in event else None,
            access_no=int(event["access_cnt"]) if "access_cnt" in event else None,
            source="gstream",
            cache=cache,
        )
    except (KeyError, TypeError, ValueError):
        log.warning("skipping a file_close record without lfn, size or detach_t: %r", event)
        return None


# ------------------------------------------------------------------------------------------ .cinfo
@dataclass(frozen=True)
class CacheFileInfo:
    """What a ``.cinfo`` file says about one cached file.

    :param cinfo_path: the ``.cinfo`` file
    :param path: the file's path (LFN) when the cache directory is known, else None
    :param file_size: the file's size at the origin
    :param block_size: the cache's block size for it
    :param n_blocks: its number of blocks
    :param blocks_done: blocks the cache holds
    :param complete: whether every block is held
    :param accesses: the accesses the file remembers (the last ``pfc.acchistorysize``), oldest first
    :param n_accesses: all accesses since the file entered the cache
    """

    cinfo_path: str
    path: str | None
    file_size: int
    block_size: int
    n_blocks: int
    blocks_done: int
    complete: bool
    accesses: tuple[AccessRecord, ...] = ()
    n_accesses: int = 0

    @property
    def cached_bytes(self) -> int:
        """Return the bytes of the file the cache holds (blocks held, the last one partial)."""
        if self.complete:
            return self.file_size
        return min(self.blocks_done * self.block_size, self.file_size)


def _utc_stamp(text: str) -> float:
    """Return epoch seconds of xrdpfc_print's ``YYMMDD:HHMMSS`` (printed in UTC: it runs with TZ=UTC)."""
    return float(calendar.timegm(time.strptime(text, "%y%m%d:%H%M%S")))


def _xrdpfc_print() -> str:
    tool = shutil.which("xrdpfc_print")
    if tool is None:
        raise MonitorError(
            "xrdpfc_print is not installed: it comes with XRootD's server (apt-get install xrootd-server)"
        )
    return tool


def _run_print(paths: Sequence[str | os.PathLike]) -> list[dict[str, Any]]:
    tool = _xrdpfc_print()
    try:
        done = subprocess.run(
            [tool, "-j", "-v", *map(str, paths)], capture_output=True, text=True, timeout=120, check=False,
            env={**os.environ, "TZ": "UTC"},  # it prints local times: make them UTC
        )
    except (OSError, subprocess.SubprocessError) as err:
        raise MonitorError(f"xrdpfc_print failed: {err}") from err
    documents = []
    for line in done.stdout.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                documents.append(json.loads(line))
            except ValueError:
                log.warning("xrdpfc_print printed something that is not JSON: %r", line[:200])
    if done.returncode != 0 and not documents:
        raise MonitorError(
            f"xrdpfc_print could not read {', '.join(map(str, paths))} (exit {done.returncode}): "
            f"{done.stderr.strip()[-500:]}; check that the files exist and that this user may read them"
        )
    return documents


def _lfn(cinfo_path: str, cache_dir: str | os.PathLike | None) -> str | None:
    if cache_dir is None:
        return None
    relative = os.path.relpath(os.path.normpath(cinfo_path), os.path.normpath(os.fspath(cache_dir)))
    if relative.startswith(".."):
        return None
    return "/" + relative[: -len(CINFO_SUFFIX)]


def _info(document: dict[str, Any], cache_dir: str | os.PathLike | None, cache: str) -> CacheFileInfo:
    cinfo_path = os.path.normpath(str(document.get("file", "")))
    path = _lfn(cinfo_path, cache_dir)
    size = int(document.get("file_size", 0))
    blocks = document.get("block_array")
    n_blocks = int(document.get("n_blocks", 0))
    done = sum(1 for b in blocks if b) if isinstance(blocks, list) else round(
        n_blocks * float(document.get("state_percentage", 0.0)) / 100
    )
    total = int(document.get("n_acc_total", 0))
    history = document.get("accesses") or []
    accesses = []
    for entry in history:
        try:
            attach, detach = _utc_stamp(entry["attach"]), _utc_stamp(entry["detach"])
        except (KeyError, ValueError):
            continue
        accesses.append(AccessRecord(
            time_s=detach,
            path=path or cinfo_path[: -len(CINFO_SUFFIX)],
            size=size,
            bytes_hit=int(entry.get("B_hit", 0)),
            bytes_missed=int(entry.get("B_miss", 0)),
            bytes_bypassed=int(entry.get("B_bypass", 0)),
            attach_s=attach,
            access_no=int(entry["record"]) if "record" in entry else None,
            source="cinfo",
            cache=cache,
        ))
    return CacheFileInfo(
        cinfo_path=cinfo_path,
        path=path,
        file_size=size,
        block_size=int(document.get("buffer_size", 0)),
        n_blocks=n_blocks,
        blocks_done=done,
        complete=document.get("state_complete") == "complete",
        accesses=tuple(accesses),
        n_accesses=total,
    )


def read_cinfo(cinfo_path: str | os.PathLike, *, cache_dir: str | os.PathLike | None = None,
               cache: str = "") -> CacheFileInfo:
    """Read one ``.cinfo`` file with ``xrdpfc_print -j``.

    :param cinfo_path: the ``.cinfo`` file
    :param cache_dir: the cache's directory (``oss.localroot``), to name the file by its path (LFN)
    :param cache: the label given to its access records
    """
    documents = _run_print([cinfo_path])
    if not documents:
        raise MonitorError(f"{cinfo_path}: xrdpfc_print printed nothing; is it a .cinfo file?")
    return _info(documents[0], cache_dir, cache)


# ------------------------------------------------------------------------------------------ cache disk
@dataclass(frozen=True)
class CachedFile:
    """One file in a cache's directory.

    :param path: its path (LFN)
    :param data_path: the data file on the cache's disk
    :param bytes_on_disk: what the (sparse) data file takes on disk
    :param info: what its ``.cinfo`` says (None: no ``.cinfo``)
    """

    path: str
    data_path: str
    bytes_on_disk: int
    info: CacheFileInfo | None

    @property
    def complete(self) -> bool:
        """Return whether the cache holds the whole file."""
        return bool(self.info and self.info.complete)

    @property
    def cached_bytes(self) -> int:
        """Return the bytes of the file the cache holds."""
        return self.info.cached_bytes if self.info else 0


@dataclass(frozen=True)
class DiskUsage:
    """The space of a cache directory.

    :param used_bytes: bytes its files take on disk (data and ``.cinfo``)
    :param files: the number of cached files (data files)
    :param total_bytes: the size of the file system it is on
    :param free_bytes: what is free on that file system (for unprivileged users)
    """

    used_bytes: int
    files: int
    total_bytes: int
    free_bytes: int


class CacheDirectory:
    """An XCache's directory (``oss.localroot``) read and changed on disk.

    :param root: the directory
    :param cache: the label given to access records read here
    """

    def __init__(self, root: str | os.PathLike, *, cache: str = "") -> None:
        self.root = Path(root)
        self.cache = cache

    def data_path(self, path: str) -> Path:
        """Return where a file's data is kept; raise :class:`MonitorError` for a path outside the cache.

        :param path: the file's path (LFN)
        """
        relative = os.path.normpath("/" + str(path)).lstrip("/")
        if not relative or relative == "." or relative.startswith(".."):
            raise MonitorError(f"{path!r} is not a file path inside the cache")
        return self.root / relative

    def cinfo_path(self, path: str) -> Path:
        """Return where a file's ``.cinfo`` is kept.

        :param path: the file's path (LFN)
        """
        data = self.data_path(path)
        return data.with_name(data.name + CINFO_SUFFIX)

    def _walk(self) -> Iterator[Path]:
        if not self.root.is_dir():
            raise MonitorError(f"cache directory {self.root} does not exist or is not a directory")
        for folder, _dirs, names in os.walk(self.root):
            for name in names:
                yield Path(folder, name)

    def files(self) -> list[CachedFile]:
        """Return the cached files, their bytes on disk and what their ``.cinfo`` says, by path."""
        data_files = [p for p in self._walk() if not p.name.endswith(CINFO_SUFFIX)]
        cinfos = [p.with_name(p.name + CINFO_SUFFIX) for p in data_files]
        present = [c for c in cinfos if c.exists()]
        infos = {}
        if present:
            for document in _run_print(present):
                info = _info(document, self.root, self.cache)
                infos[info.cinfo_path] = info
        found = []
        for data, cinfo in zip(data_files, cinfos, strict=True):
            try:
                on_disk = data.stat().st_blocks * 512
            except FileNotFoundError:  # evicted while we looked
                continue
            found.append(CachedFile(
                path="/" + data.relative_to(self.root).as_posix(),
                data_path=str(data),
                bytes_on_disk=on_disk,
                info=infos.get(os.path.normpath(str(cinfo))),
            ))
        return sorted(found, key=lambda f: f.path)

    def get(self, path: str) -> CachedFile | None:
        """Return one cached file, or None when the cache does not hold it.

        :param path: the file's path (LFN)
        """
        data, cinfo = self.data_path(path), self.cinfo_path(path)
        try:
            on_disk = data.stat().st_blocks * 512
        except FileNotFoundError:
            return None
        info = read_cinfo(cinfo, cache_dir=self.root, cache=self.cache) if cinfo.exists() else None
        return CachedFile(path="/" + data.relative_to(self.root).as_posix(), data_path=str(data),
                          bytes_on_disk=on_disk, info=info)

    def remove(self, path: str) -> bool:
        """Remove a file from the cache's disk (``.cinfo`` first: without it XCache holds nothing); return if any was.

        Use it on files the cache has closed; XCache's own eviction (through the cache, see the hook)
        refuses files in use.

        :param path: the file's path (LFN)
        """
        removed = False
        for target in (self.cinfo_path(path), self.data_path(path)):
            try:
                target.unlink()
                removed = True
            except FileNotFoundError:
                continue
            except PermissionError as err:
                raise MonitorError(
                    f"cannot remove {target} from the cache's disk ({err.strerror}); run as root or as the "
                    "cache's user, or evict through the cache (allow_commands)"
                ) from err
        return removed

    def usage(self) -> DiskUsage:
        """Return the bytes the cache's files take, their number, and its file system's size and free space."""
        used, count = 0, 0
        for item in self._walk():
            try:
                used += item.stat().st_blocks * 512
            except FileNotFoundError:
                continue
            count += not item.name.endswith(CINFO_SUFFIX)
        fs = os.statvfs(self.root)
        return DiskUsage(used_bytes=used, files=count, total_bytes=fs.f_blocks * fs.f_frsize,
                         free_bytes=fs.f_bavail * fs.f_frsize)

    def access_records(self) -> list[AccessRecord]:
        """Return the accesses every ``.cinfo`` remembers, oldest first."""
        cinfos = [p for p in self._walk() if p.name.endswith(CINFO_SUFFIX)]
        if not cinfos:
            return []
        records = [r for d in _run_print(cinfos) for r in _info(d, self.root, self.cache).accesses]
        return sorted(records, key=lambda r: (r.time_s, r.path, r.access_no or 0))


# ------------------------------------------------------------------------------------------ UDP listener
class PfcMonitor:
    """Receive an XCache's g-stream (``file_close`` records) on a loopback UDP port, on a thread.

    Start it before the cache (its port goes in the cache's ``monitor`` setting) and stop it when done::

        with PfcMonitor(on_record=log.append) as monitor:
            ...  # deploy an XCache with monitor=f"127.0.0.1:{monitor.port}"

    :param port: the UDP port (0: a free one, see :attr:`port` after :meth:`start`)
    :param host: the address to bind (loopback by default)
    :param cache: the label given to the records received
    :param on_record: called on the listener's thread with each batch of records (e.g. ``AccessLog.append``);
        an exception there is logged and the listener goes on
    :param keep: keep the records in :attr:`records` as well (for :meth:`wait_for`)
    """

    def __init__(self, port: int = 0, *, host: str = "127.0.0.1", cache: str = "",
                 on_record: Callable[[list[AccessRecord]], Any] | None = None, keep: bool = True) -> None:
        self.host, self._wanted_port, self.cache = host, port, cache
        self.on_record, self.keep = on_record, keep
        self.records: list[AccessRecord] = []
        self.packets = 0
        self.callback_errors = 0
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._changed = threading.Condition()

    @property
    def port(self) -> int:
        """Return the UDP port listened on (after :meth:`start`)."""
        if self._sock is None:
            raise MonitorError("the monitor is not started: call start() first")
        return self._sock.getsockname()[1]

    @property
    def address(self) -> str:
        """Return ``host:port`` to give a cache as its monitoring destination."""
        return f"{self.host}:{self.port}"

    def start(self) -> PfcMonitor:
        """Bind the port and start receiving on a daemon thread; return self."""
        if self._thread is not None:
            return self
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.bind((self.host, self._wanted_port))
        except OSError as err:
            sock.close()
            raise MonitorError(f"cannot listen on UDP {self.host}:{self._wanted_port} ({err.strerror}); "
                               "pick another port or 0 for a free one") from err
        sock.settimeout(0.2)  # wake up to notice stop()
        self._sock = sock
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"xcache-monitor-{self.port}", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        assert self._sock is not None
        while not self._stop.is_set():
            try:
                data, _sender = self._sock.recvfrom(65536)
            except TimeoutError:
                continue
            except OSError:
                if self._stop.is_set():
                    return
                raise
            records = parse_gstream_packet(data, cache=self.cache)
            with self._changed:
                self.packets += 1
                if self.keep:
                    self.records.extend(records)
                self._changed.notify_all()
            if records and self.on_record is not None:
                try:
                    self.on_record(records)
                except Exception:  # a failing sink must not kill the listener: the next packet may land
                    self.callback_errors += 1
                    log.exception("storing %d monitoring record(s) failed", len(records))

    def wait_for(self, predicate: Callable[[list[AccessRecord]], bool], timeout: float = 10.0) -> list[AccessRecord]:
        """Wait until ``predicate(records)`` holds; return the records (raise :class:`MonitorError` on timeout).

        :param predicate: a test of the records received so far
        :param timeout: seconds to wait
        """
        deadline = time.monotonic() + timeout
        with self._changed:
            while not predicate(list(self.records)):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise MonitorError(
                        f"the awaited monitoring records did not come in {timeout:.0f} s ({self.packets} packet(s), "
                        f"{len(self.records)} record(s) received); check the cache's monitor setting "
                        f"points at {self.host}:{self.port if self._sock else '?'}"
                    )
                self._changed.wait(left)
            return list(self.records)

    def stop(self) -> None:
        """Stop the thread and close the port (idempotent)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> PfcMonitor:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


# ------------------------------------------------------------------------------------------ access log
@dataclass
class _Tables:
    metadata: Any
    access: Any
    columns: list[str] = field(default_factory=list)
    prefetch: Any = None


def _tables(name: str) -> _Tables:
    from sqlalchemy import BigInteger, Column, Float, Index, Integer, MetaData, String, Table, Text

    metadata = MetaData()
    access = Table(
        name, metadata,
        Column("id", BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True),
        Column("record_key", String(64), nullable=False, unique=True),
        Column("cache", String(255), nullable=False, default=""),
        Column("path", Text, nullable=False),
        Column("time_s", Float, nullable=False),
        Column("size", BigInteger, nullable=False),
        Column("bytes_hit", BigInteger, nullable=False),
        Column("bytes_missed", BigInteger, nullable=False),
        Column("bytes_bypassed", BigInteger, nullable=False, default=0),
        Column("attach_s", Float, nullable=True),
        Column("access_no", Integer, nullable=True),
        Column("source", String(16), nullable=False),
        Column("ingested_s", Float, nullable=False),
        Index(f"ix_{name}_time", "time_s"),
        Index(f"ix_{name}_path", "path"),
    )
    columns = ["time_s", "path", "size", "bytes_hit", "bytes_missed", "bytes_bypassed", "attach_s", "access_no",
               "source", "cache"]
    prefetch = Table(
        f"{name}_prefetch", metadata,
        Column("id", BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True),
        Column("cache", String(255), nullable=False, default=""),
        Column("path", Text, nullable=False),
        Column("started_s", Float, nullable=False),
        Column("ended_s", Float, nullable=False),
        Column("size", BigInteger, nullable=False),
        Index(f"ix_{name}_prefetch_time", "started_s"),
    )
    return _Tables(metadata, access, columns, prefetch)


class AccessLog:
    """An access-log table of one or more caches, in SQLite or PostgreSQL (created if missing).

    :param url: a SQLAlchemy URL (``sqlite:///path.db``, ``postgresql+psycopg2://user@host/db``) or a
        SQLite file path
    :param table: the table's name (keep the ``cloud_paas_xcache_`` prefix in a shared database)
    """

    def __init__(self, url: str | os.PathLike, *, table: str = TABLE_NAME) -> None:
        from sqlalchemy import create_engine
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError, SQLAlchemyError

        text = os.fspath(url)
        if "://" not in text:
            text = f"sqlite:///{Path(text).expanduser().absolute()}"
        try:
            self.url = make_url(text)
        except (ArgumentError, ValueError):  # never echo the text: it may hold a password
            raise AccessLogError("the access log URL is not a SQLAlchemy URL; write it as "
                                 "dialect+driver://user@host/database or give a SQLite file path") from None
        kwargs: dict[str, Any] = {"future": True}
        if self.url.get_backend_name() == "sqlite":
            kwargs["connect_args"] = {"timeout": 30}  # another process may be writing
        self._engine = create_engine(self.url, **kwargs)
        self._tables = _tables(table)
        self.table_name = table
        try:
            self._tables.metadata.create_all(self._engine, checkfirst=True)
        except SQLAlchemyError as err:
            raise AccessLogError(f"cannot create table {table} in {self._where()}: {type(err).__name__}: "
                                 f"{getattr(err, 'orig', err)}") from None

    def _where(self) -> str:
        return self.url.render_as_string(hide_password=True)

    @contextlib.contextmanager
    def _connection(self, action: str) -> Iterator[Any]:
        from sqlalchemy.exc import SQLAlchemyError

        try:
            with self._engine.begin() as connection:
                yield connection
        except SQLAlchemyError as err:
            raise AccessLogError(f"cannot {action} the access log {self.table_name} in {self._where()}: "
                                 f"{type(err).__name__}: {getattr(err, 'orig', err)}") from None

    def append(self, records: Iterable[AccessRecord]) -> int:
        """Store records whose key is not stored yet; return how many were new.

        :param records: the records (re-reading the same ``.cinfo`` yields the same keys: stored once)
        """
        from sqlalchemy import insert, select

        batch: dict[str, AccessRecord] = {}
        for record in records:
            batch.setdefault(record.key, record)
        if not batch:
            return 0
        table = self._tables.access
        now = time.time()
        with self._connection("write") as connection:
            keys = list(batch)
            existing: set[str] = set()
            for start in range(0, len(keys), 500):  # stay under the databases' parameter limits
                chunk = keys[start : start + 500]
                existing.update(connection.execute(select(table.c.record_key).where(table.c.record_key.in_(chunk)))
                                .scalars())
            rows = [
                {"record_key": key, "ingested_s": now, **{c: getattr(r, c) for c in self._tables.columns}}
                for key, r in batch.items() if key not in existing
            ]
            if rows:
                dialect = self._engine.dialect.name
                if dialect in ("sqlite", "postgresql"):
                    module = __import__(f"sqlalchemy.dialects.{dialect}", fromlist=["insert"])
                    # another writer may have stored some keys since the select: skip them, do not fail
                    statement = module.insert(table).on_conflict_do_nothing(index_elements=["record_key"])
                else:
                    statement = insert(table)
                connection.execute(statement, rows)
        return len(rows)

    def since(self, time_s: float = 0.0, *, path: str | None = None, cache: str | None = None,
              limit: int | None = None) -> list[AccessRecord]:
        """Return the records of accesses that ended at or after ``time_s``, oldest first.

        :param time_s: epoch seconds
        :param path: only this file's
        :param cache: only this cache's
        :param limit: at most this many
        """
        from sqlalchemy import select

        table = self._tables.access
        query = select(*(table.c[c] for c in self._tables.columns)).where(table.c.time_s >= time_s)
        if path is not None:
            query = query.where(table.c.path == path)
        if cache is not None:
            query = query.where(table.c.cache == cache)
        query = query.order_by(table.c.time_s, table.c.id)
        if limit is not None:
            query = query.limit(limit)
        with self._connection("read") as connection:
            return [AccessRecord(**dict(row._mapping)) for row in connection.execute(query)]

    def after_id(self, last_id: int = 0, *, cache: str | None = None, since: float | None = None,
                 limit: int | None = None) -> list[tuple[int, AccessRecord]]:
        """Return ``(row id, record)`` of the records stored after row ``last_id``, in the order they were stored.

        Records arrive out of time order (a ``.cinfo`` is read when its file is closed), so an online learner
        follows the row ids, not the times, to see every record exactly once.

        :param last_id: the newest row already seen (0: from the start)
        :param cache: only this cache's
        :param since: only accesses that ended at or after this time
        :param limit: at most this many
        """
        from sqlalchemy import select

        table = self._tables.access
        query = select(table.c.id, *(table.c[c] for c in self._tables.columns)).where(table.c.id > last_id)
        if cache is not None:
            query = query.where(table.c.cache == cache)
        if since is not None:
            query = query.where(table.c.time_s >= since)
        query = query.order_by(table.c.id)
        if limit is not None:
            query = query.limit(limit)
        with self._connection("read") as connection:
            rows = connection.execute(query).all()
        return [(int(row[0]), AccessRecord(**{c: row._mapping[c] for c in self._tables.columns})) for row in rows]

    def record_prefetch(self, path: str, started_s: float, ended_s: float, size: int, *, cache: str = "") -> None:
        """Remember that the manager read a file into the cache: that read is a write, not a user's access.

        :param path: the file
        :param started_s: when the prefetch opened it, epoch seconds
        :param ended_s: when it was done
        :param size: the bytes written
        :param cache: the cache's label
        """
        from sqlalchemy import insert

        with self._connection("write") as connection:
            connection.execute(insert(self._tables.prefetch).values(cache=cache, path=path, started_s=started_s,
                                                                    ended_s=ended_s, size=int(size)))

    def prefetches(self, since: float = 0.0, *, cache: str | None = None) -> list[tuple[str, float, float, int]]:
        """Return ``(path, started_s, ended_s, size)`` of the prefetches started at or after ``since``.

        :param since: epoch seconds
        :param cache: only this cache's
        """
        from sqlalchemy import select

        table = self._tables.prefetch
        query = select(table.c.path, table.c.started_s, table.c.ended_s, table.c.size).where(
            table.c.started_s >= since)
        if cache is not None:
            query = query.where(table.c.cache == cache)
        with self._connection("read") as connection:
            return [(str(p), float(s), float(e), int(n)) for p, s, e, n in connection.execute(
                query.order_by(table.c.started_s))]

    def count(self, since: float | None = None) -> int:
        """Return the number of records (ended at or after ``since``, if given).

        :param since: epoch seconds
        """
        from sqlalchemy import func, select

        table = self._tables.access
        query = select(func.count()).select_from(table)
        if since is not None:
            query = query.where(table.c.time_s >= since)
        with self._connection("read") as connection:
            return int(connection.execute(query).scalar_one())

    def totals(self, since: float = 0.0) -> dict[str, int]:
        """Return the records' count and bytes hit, missed and bypassed since ``since``.

        :param since: epoch seconds
        """
        from sqlalchemy import func, select

        table = self._tables.access
        query = select(func.count(), func.coalesce(func.sum(table.c.bytes_hit), 0),
                       func.coalesce(func.sum(table.c.bytes_missed), 0),
                       func.coalesce(func.sum(table.c.bytes_bypassed), 0)).where(table.c.time_s >= since)
        with self._connection("read") as connection:
            count, hit, missed, bypassed = connection.execute(query).one()
        return {"records": int(count), "bytes_hit": int(hit), "bytes_missed": int(missed),
                "bytes_bypassed": int(bypassed)}

    def write_trace(self, target: str | os.PathLike, since: float = 0.0) -> int:
        """Write the records as a ``time_s,path,size_bytes`` trace (what the cache simulator replays).

        :param target: the CSV file
        :param since: only accesses that ended at or after this time
        """
        # one request per access, at its start, in time order (the simulator checks the order)
        requests = sorted((r.attach_s if r.attach_s is not None else r.time_s, r.path, r.size)
                          for r in self.since(since))
        with open(target, "w", newline="") as out:
            writer = csv.writer(out)
            writer.writerow(["time_s", "path", "size_bytes"])
            writer.writerows((f"{t:.3f}", path, size) for t, path, size in requests)
        return len(requests)

    def close(self) -> None:
        """Release the database connections."""
        self._engine.dispose()


def ingest_cinfo(access_log: AccessLog, cache_dir: str | os.PathLike, *, cache: str = "") -> int:
    """Store the accesses every ``.cinfo`` of a cache directory remembers; return how many were new.

    :param access_log: where to store them
    :param cache_dir: the cache's directory
    :param cache: the cache's label (the same as the g-stream listener's, so an access is stored once)
    """
    return access_log.append(CacheDirectory(cache_dir, cache=cache).access_records())


def ingest_bypass_log(access_log: AccessLog, bypass_log: str | os.PathLike, size_of: Callable[[str], int | None],
                      *, cache: str = "") -> int:
    """Store the opens the cache's admission library bypassed; return how many were new.

    A bypassed file is read straight from the origin, so it leaves no ``.cinfo`` and no monitoring record;
    the library writes ``<time> <path>`` lines instead (see :mod:`~.admission`). Each becomes a record with
    ``source='bypass'`` whose whole size counts as bypassed bytes (how much of the file the client read is
    not known there). The log is taken (renamed) first and deleted once stored; a failure leaves it to the
    next run, and the records' keys make a second store a no-op.

    :param access_log: where to store them
    :param bypass_log: the log the library appends to
    :param size_of: returns a file's size at the origin (None: gone, the record is skipped)
    :param cache: the cache's label (the same as the other routes')
    """
    from airflow_cloud_paas.services.xcache.admission import drain_bypass_log

    new = 0
    sizes: dict[str, int | None] = {}
    for _taken, opens in drain_bypass_log(bypass_log):
        records = []
        for item in opens:
            if item.path not in sizes:
                sizes[item.path] = size_of(item.path)
            size = sizes[item.path]
            if size is None:
                log.warning("Bypassed file %s is gone from the origin: its access is not recorded", item.path)
                continue
            records.append(AccessRecord(item.time_s, item.path, int(size), 0, 0, bytes_bypassed=int(size),
                                        source="bypass", cache=cache))
        new += access_log.append(records)
    return new
