"""Hook to an XRootD server or XCache: an Airflow connection of type ``xrootd`` names its endpoint.

Reads go through the XRootD Python client (PyPI ``xrootd``, imported here only). Host and Port are the
server's; for an XCache, reading through it fills the cache. The extras say what more the hook may do:

* ``cache_dir``: the cache's directory (``oss.localroot``) when this machine can read it (the local
  backend's ``cache_dir`` attribute): list cached files and their ``.cinfo``, check prefetches and
  evictions on disk, read disk usage;
* ``origin``: the origin behind the cache (``root://host:port``), for :meth:`XRootDHook.stat` at the origin.

Every failure is an :class:`XRootDError` naming the path and the endpoint (never a credential).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseHook

from airflow_cloud_paas.exceptions import CloudPaaSError
from airflow_cloud_paas.hooks import XROOTD_CONNECTION, ConnectionFormMixin, ui_field_behaviour
from airflow_cloud_paas.services.xcache.config import COMMAND_PREFIX, XRootDConfigError, parse_address
from airflow_cloud_paas.services.xcache.monitor import CachedFile, CacheDirectory, DiskUsage, MonitorError

if TYPE_CHECKING:
    from XRootD.client import FileSystem

#: the XRootD client's retries: its defaults (5 attempts of 120 s) make an absent server hang for minutes
CLIENT_ENV = {"ConnectionRetry": 1, "ConnectionWindow": 2}
#: bytes read per request when prefetching
READ_CHUNK = 8 << 20
# kXR_Unavailable: how XCache answers an accepted /xrdpfc_command/ open (it executes the command, opens nothing)
_COMMAND_ACCEPTED = 3005

#: The connection type as ``get_provider_info()["connection-types"]`` lists it (declared in
#: :mod:`airflow_cloud_paas.hooks`; Airflow 3 builds the form from ``conn-fields`` and ``ui-field-behaviour``).
CONNECTION_TYPE: dict[str, Any] = XROOTD_CONNECTION
#: Extra fields of the connection form.
CONN_FIELDS: dict[str, dict[str, Any]] = CONNECTION_TYPE["conn-fields"]
#: Standard fields hidden, relabelled or hinted in the form.
UI_FIELD_BEHAVIOUR: dict[str, Any] = ui_field_behaviour(CONNECTION_TYPE)


class XRootDError(CloudPaaSError):
    """An XRootD operation failed.

    :param message: what failed and how to fix it
    :param path: the file concerned
    :param url: the endpoint (root://host:port)
    :param errno: the XRootD error number, when the server gave one (3011: no such file)
    """

    def __init__(self, message: str, *, path: str | None = None, url: str | None = None,
                 errno: int | None = None) -> None:
        self.message, self.path, self.url, self.errno = message, path, url, errno
        where = " ".join(filter(None, [f"{path}" if path else None, f"at {url}" if url else None]))
        super().__init__(f"{where}: {message}" if where else message)


class XRootDNotFoundError(XRootDError):
    """The path does not exist on the server (or its origin)."""


@dataclass(frozen=True)
class FileStat:
    """What the server says about a path.

    :param path: the path
    :param size: bytes
    :param mtime: last modification, epoch seconds
    :param is_dir: whether it is a directory
    :param flags: XRootD's StatInfo flags
    """

    path: str
    size: int
    mtime: int
    is_dir: bool
    flags: int


def _set_client_env() -> None:
    from XRootD import client

    for name, value in CLIENT_ENV.items():
        # a value the user set in the environment (XRD_CONNECTIONRETRY...) wins: EnvPutInt keeps it
        client.EnvPutInt(name, value)


class XRootDHook(ConnectionFormMixin, BaseHook):
    """Read, stat, prefetch and evict files of an XRootD server or XCache named by an ``xrootd`` connection.

    :param xrootd_conn_id: the Airflow connection id (Host, Port; extras ``cache_dir`` and ``origin``)
    :param timeout: seconds for one XRootD request
    """

    conn_name_attr = "xrootd_conn_id"
    default_conn_name = "xrootd_default"
    conn_type = "xrootd"
    hook_name = "XRootD / XCache"

    def __init__(self, xrootd_conn_id: str = default_conn_name, *, timeout: int = 60, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.xrootd_conn_id = xrootd_conn_id
        self.timeout = int(timeout)


    # ---------------------------------------------------------------- connection
    @cached_property
    def extras(self) -> dict[str, Any]:
        """Return the connection's extra fields."""
        return dict(self._connection.extra_dejson)

    @cached_property
    def _connection(self):
        return self.get_connection(self.xrootd_conn_id)

    @cached_property
    def url(self) -> str:
        """Return the server's root URL, ``root://host:port``."""
        conn = self._connection
        if not conn.host:
            raise XRootDError(f"connection '{self.xrootd_conn_id}' has no Host: set the server's or cache's host")
        try:
            host, port = parse_address(f"{conn.host}:{conn.port}" if conn.port else conn.host, field="host")
        except XRootDConfigError as err:
            raise XRootDError(f"connection '{self.xrootd_conn_id}': {err.message}") from None
        return f"root://{host}:{port}"

    @cached_property
    def cache_directory(self) -> CacheDirectory | None:
        """Return the cache's directory on this machine (the ``cache_dir`` extra), or None."""
        cache_dir = self.extras.get("cache_dir")
        return CacheDirectory(cache_dir, cache=self.url) if cache_dir else None

    def _cache_directory(self, path: str | None = None) -> CacheDirectory:
        if self.cache_directory is None:
            raise XRootDError(f"connection '{self.xrootd_conn_id}' has no cache_dir extra: set it to the cache's "
                              "directory (oss.localroot) on this machine", path=path, url=self.url)
        return self.cache_directory

    def get_conn(self) -> FileSystem:
        """Return the XRootD client's FileSystem of the server."""
        return self._filesystem(self.url)

    @staticmethod
    def _filesystem(url: str) -> FileSystem:
        _set_client_env()
        from XRootD import client

        return client.FileSystem(url)

    def _file_url(self, path: str, base: str | None = None) -> str:
        if not path.startswith("/"):
            raise XRootDError("expected an absolute path (e.g. /store/file.root)", path=path, url=self.url)
        return f"{base or self.url}/{path}"  # root://host:port//store/f: the double slash starts the path

    def _check(self, status: Any, what: str, path: str, url: str) -> None:
        if status.ok:
            return
        errno = getattr(status, "errno", None)
        message = f"{what} failed: {status.message.strip()}"
        if errno == 3011:  # kXR_NotFound
            raise XRootDNotFoundError(message, path=path, url=url, errno=errno)
        raise XRootDError(message, path=path, url=url, errno=errno)

    # ---------------------------------------------------------------- operations
    def ping(self) -> bool:
        """Return whether the server answers."""
        status, _ = self.get_conn().ping(timeout=self.timeout)
        return bool(status.ok)

    def stat(self, path: str, *, at_origin: bool = False) -> FileStat:
        """Return a path's size, modification time and kind.

        :param path: an absolute path (``/store/f.root``)
        :param at_origin: ask the origin behind the cache (the ``origin`` extra) instead of the server
        """
        url = self.url
        if at_origin:
            origin = self.extras.get("origin")
            if not origin:
                raise XRootDError(f"connection '{self.xrootd_conn_id}' has no origin extra", path=path, url=url)
            try:
                host, port = parse_address(origin, field="origin")
            except XRootDConfigError as err:
                raise XRootDError(f"connection '{self.xrootd_conn_id}': {err.message}", path=path) from None
            url = f"root://{host}:{port}"
        status, info = self._filesystem(url).stat(path, timeout=self.timeout)
        self._check(status, "stat", path, url)
        return FileStat(path=path, size=int(info.size), mtime=int(info.modtime), is_dir=bool(info.flags & 2),
                        flags=int(info.flags))

    def copy(self, path: str, dest: str | os.PathLike, *, force: bool = True) -> Path:
        """Copy a file to a local path, reading it through the server (through the cache, for an XCache).

        :param path: the file's absolute path on the server
        :param dest: the local file to write
        :param force: overwrite ``dest`` if it exists
        """
        target = Path(dest).absolute()
        source = self._file_url(path)
        status, _ = self.get_conn().copy(source, str(target), force=force)
        self._check(status, f"copy to {target}", path, self.url)
        return target

    def read(self, path: str, *, offset: int = 0, size: int | None = None) -> bytes:
        """Return bytes of a file, read through the server.

        :param path: the file's absolute path
        :param offset: where to start
        :param size: how many bytes (None: to the end)
        """
        from XRootD import client
        from XRootD.client.flags import OpenFlags

        _set_client_env()
        handle = client.File()
        status, _ = handle.open(self._file_url(path), OpenFlags.READ, timeout=self.timeout)
        self._check(status, "open", path, self.url)
        try:
            if size is None:
                status, info = handle.stat(timeout=self.timeout)
                self._check(status, "stat", path, self.url)
                size = max(int(info.size) - offset, 0)
            status, data = handle.read(offset, size, timeout=self.timeout)
            self._check(status, "read", path, self.url)
            return bytes(data or b"")
        finally:
            handle.close(timeout=self.timeout)

    def prefetch(self, path: str, *, wait: float = 30.0) -> CachedFile | None:
        """Read a whole file through the cache so that it keeps all of it; return it as it is on the cache's disk.

        With the ``cache_dir`` extra, wait until the cache's ``.cinfo`` says the file is complete (blocks are
        written after the read) and return what is on disk; without it, return None once the file was read.

        :param path: the file's absolute path
        :param wait: seconds to wait for the cache to write the file to its disk
        """
        from XRootD import client
        from XRootD.client.flags import OpenFlags

        _set_client_env()
        handle = client.File()
        status, _ = handle.open(self._file_url(path), OpenFlags.READ, timeout=self.timeout)
        self._check(status, "open", path, self.url)
        try:
            status, info = handle.stat(timeout=self.timeout)
            self._check(status, "stat", path, self.url)
            offset, size = 0, int(info.size)
            while offset < size:
                status, data = handle.read(offset, min(READ_CHUNK, size - offset), timeout=self.timeout)
                self._check(status, f"read at {offset}", path, self.url)
                if not data:
                    raise XRootDError(f"read at {offset} returned nothing before the end ({size} bytes)",
                                      path=path, url=self.url)
                offset += len(data)
        finally:
            handle.close(timeout=self.timeout)
        if self.cache_directory is None:
            return None
        deadline = time.monotonic() + wait
        while True:
            cached = self._cached(path)
            if cached is not None and cached.complete:
                return cached
            if time.monotonic() > deadline:
                held = f"{cached.cached_bytes} of {size} bytes" if cached else "nothing"
                raise XRootDError(f"the whole file was read through the cache, but after {wait:.0f} s its disk holds "
                                  f"{held}; is the cache full (disk usage watermarks) or writing slowly?",
                                  path=path, url=self.url)
            time.sleep(0.1)

    def _cached(self, path: str) -> CachedFile | None:
        try:
            return self._cache_directory(path).get(path)
        except MonitorError as err:
            raise XRootDError(str(err), path=path, url=self.url) from err

    def cached_file(self, path: str) -> CachedFile | None:
        """Return a file as the cache's disk holds it (bytes, ``.cinfo``), or None when it is not cached.

        :param path: the file's absolute path
        """
        return self._cached(path)

    def cached_files(self) -> list[CachedFile]:
        """Return the files in the cache's directory with their bytes on disk and ``.cinfo`` state."""
        try:
            return self._cache_directory().files()
        except MonitorError as err:
            raise XRootDError(str(err), url=self.url) from err

    def evict(self, path: str, *, wait: float = 45.0) -> bool:
        """Remove a file from the cache; return whether it was cached.

        The cache is asked first (``/xrdpfc_command/remove_file``, when it allows commands: it refuses a file
        in use). With the ``cache_dir`` extra, its disk is the judge: when the cache does not take the
        command, the file's ``.cinfo`` and data are removed from the disk here; when it takes it but the file
        stays (in use), the command is repeated until ``wait`` seconds have passed, then
        :class:`XRootDError` is raised. (XRootD 5.5 keeps a partly read file open for about 30 s after its
        last reader when prefetching is on.)

        :param path: the file's absolute path
        :param wait: seconds to wait for the file to leave the cache's disk
        """
        directory = self.cache_directory
        if directory is not None and self._cached(path) is None and not directory.cinfo_path(path).exists():
            return False
        accepted = self._command(f"remove_file/ {path}", path)
        if directory is None:
            if not accepted:
                raise XRootDError("the cache refused the eviction command (set allow_commands on the XCache, or "
                                  "give the connection a cache_dir extra to evict on disk)", path=path, url=self.url)
            return True
        if not accepted:
            try:
                return directory.remove(path)
            except MonitorError as err:
                raise XRootDError(str(err), path=path, url=self.url) from err
        deadline = time.monotonic() + wait
        while directory.data_path(path).exists() or directory.cinfo_path(path).exists():
            if time.monotonic() > deadline:
                raise XRootDError(f"the cache took the eviction but the file is still on its disk after {wait:.0f} s; "
                                  "it is probably open (in use): retry later", path=path, url=self.url)
            time.sleep(0.5)
            self._command(f"remove_file/ {path}", path)  # refused while the file was in use: ask again
        return True

    def _command(self, command: str, path: str) -> bool:
        """Send an XCache command (``/xrdpfc_command/...``); return whether the cache took it."""
        from XRootD import client
        from XRootD.client.flags import OpenFlags

        _set_client_env()
        handle = client.File()
        status, _ = handle.open(f"{self.url}/{COMMAND_PREFIX}{command}", OpenFlags.READ, timeout=self.timeout)
        if status.ok:  # a server that opened something is no XCache taking commands
            handle.close(timeout=self.timeout)
            return False
        if getattr(status, "errno", None) == _COMMAND_ACCEPTED:
            return True
        self.log.info("the cache at %s refused the command for %s: %s", self.url, path, status.message.strip())
        return False

    def disk_usage(self) -> DiskUsage:
        """Return the bytes the cache's files take on disk, their number, and its file system's size and free space."""
        try:
            return self._cache_directory().usage()
        except MonitorError as err:
            raise XRootDError(str(err), url=self.url) from err

    @classmethod
    def connection_extra(cls, attributes: Mapping[str, Any]) -> dict[str, Any]:
        """Return the extras of a connection to a deployed cache, from its node's attributes.

        An XCache with ``admission: model`` adds ``admission_policy`` (the policy file the smart manager
        writes) and ``bypass_log`` (the opens the cache read from the origin without writing them).

        :param attributes: the XCache (or origin) resource's attributes
        """
        extra = {}
        if attributes.get("cache_dir"):
            extra["cache_dir"] = attributes["cache_dir"]
        if attributes.get("origin"):
            extra["origin"] = f"root://{attributes['origin']}"
        for name in ("admission_policy", "bypass_log"):
            if attributes.get(name):
                extra[name] = attributes[name]
        return extra
