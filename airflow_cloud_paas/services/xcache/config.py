"""Render the configuration files of an XRootD origin (data server) and an XCache (proxy file cache).

The settings are dataclasses filled from a node's TOSCA properties (:func:`origin_settings`,
:func:`xcache_settings`); every value is checked when the settings are made, and a bad one raises
:class:`XRootDConfigError` naming the property. What is rendered is, line for line, what
``templates/scripts/xrootd_configure.sh`` writes on a VM (the unit tests compare the two).

Sizes are written the XRootD way: a number with an optional binary suffix (``k``, ``m``, ``g``, ``t``;
``KB``, ``KiB``, ``MB``... are accepted and mean the same powers of 1024). XCache's constraints, measured
on XRootD 5.5.3: ``pfc.ram`` at least 1 GiB, ``pfc.blocksize`` a multiple of 4 KiB from 4 KiB to
512 MiB, and the low disk-usage watermark below the high one. With a ``cache_size``, the watermarks are
fractions of it (written as absolute sizes); without one, fractions of the cache directory's disk.

Pure Python (no Airflow import): the CLI, DAG tasks and the local backend's drivers use it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from airflow_cloud_paas.services.xcache.admission import decisionlib_directive
from airflow_cloud_paas.services.xcache.errors import XCacheError

#: XRootD's well-known port
DEFAULT_PORT = 1094
#: XCache refuses a smaller pfc.ram (XRootD 5.5.3 fails to start)
MIN_RAM = 1 << 30
MIN_BLOCK_SIZE = 4 << 10
MAX_BLOCK_SIZE = 512 << 20
#: the path prefix under which XCache takes commands (file eviction) when they are allowed
COMMAND_PREFIX = "/xrdpfc_command/"
#: values of the XCache's ``admission`` property: every miss written (XCache's default), or the smart
#: manager's policy (the decision library of :mod:`~.admission`)
ADMISSION_MODES = ("all", "model")

_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*$", re.IGNORECASE)
_HOST = re.compile(r"^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?)$")
_PATH = re.compile(r"^/[A-Za-z0-9._~+@%=/-]*$")


class XRootDConfigError(XCacheError, ValueError):
    """A setting of an XRootD origin or XCache has a bad value.

    :param message: what is wrong and how to fix it
    :param field: the TOSCA property (or setting) concerned
    """

    def __init__(self, message: str, *, field: str | None = None) -> None:
        self.message = message
        self.field = field
        super().__init__(f"property '{field}': {message}" if field else message)


# ------------------------------------------------------------------------------------------ values
def parse_size(value: Any, *, field: str) -> int:
    """Return a size in bytes from ``1g``, ``512k``, ``1.5 GiB``, ``64KB`` (all binary) or a byte count.

    :param value: the size
    :param field: the property it comes from (named in errors)
    """
    if isinstance(value, bool):
        raise XRootDConfigError(f"expected a size such as 1g or 512k, got {value!r}", field=field)
    if isinstance(value, int):
        number = value
    else:
        match = _SIZE.match(str(value)) if isinstance(value, str | float) else None
        if match is None:
            raise XRootDConfigError(
                f"expected a size such as 1g, 512k or 64KiB (binary units), got {value!r}", field=field
            )
        digits, unit = match.group(1), _UNITS[match.group(2).lower()]
        # integers stay exact; a fraction is rounded down to whole bytes, as the VM script does
        number = int(digits) * unit if "." not in digits else int(float(digits) * unit)
    if number <= 0:
        raise XRootDConfigError(f"a size must be positive, got {value!r}", field=field)
    return number


def format_size(size: int) -> str:
    """Return a byte count the way XRootD writes sizes: the largest exact binary suffix (``1g``, ``64k``).

    :param size: bytes
    """
    for suffix in ("t", "g", "m", "k"):
        unit = _UNITS[suffix]
        if size % unit == 0:
            return f"{size // unit}{suffix}"
    return str(size)


def _fraction(value: Any, *, field: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise XRootDConfigError(f"expected a fraction between 0 and 1 (e.g. 0.9), got {value!r}", field=field) from None
    if isinstance(value, bool) or not 0.0 < number <= 1.0:
        raise XRootDConfigError(f"expected a fraction between 0 and 1 (e.g. 0.9), got {value!r}", field=field)
    return number


def _port(value: Any, *, field: str = "port", allow_zero: bool = False) -> int:
    try:
        port = int(value)
    except (TypeError, ValueError):
        raise XRootDConfigError(f"expected a TCP port number, got {value!r}", field=field) from None
    if isinstance(value, bool) or str(port) != str(value).strip() or not (0 if allow_zero else 1) <= port <= 65535:
        raise XRootDConfigError(f"expected a port in {0 if allow_zero else 1}-65535, got {value!r}", field=field)
    return port


def _directory(value: Any, *, field: str) -> str:
    if not isinstance(value, str) or not value.startswith("/") or not _PATH.match(value):
        raise XRootDConfigError(
            f"expected an absolute directory path of letters, digits and ._~+@%=/- (no spaces), got {value!r}",
            field=field,
        )
    return value.rstrip("/") or "/"


def _file(value: Any, *, field: str) -> str:
    if not isinstance(value, str) or not _PATH.match(value) or value.endswith("/") or "/../" in f"{value}/":
        raise XRootDConfigError(
            f"expected an absolute file path of letters, digits and ._~+@%=/- (no spaces, no '..'), got {value!r}",
            field=field,
        )
    return value


def admission_mode(value: Any, *, field: str = "admission") -> str:
    """Return an XCache's admission mode, ``all`` (every miss written) or ``model`` (the manager's policy).

    :param value: the property's value (empty: ``all``)
    :param field: the property it comes from (named in errors)
    """
    mode = "all" if value is None or value == "" else value
    if mode not in ADMISSION_MODES:
        raise XRootDConfigError(f"expected one of {', '.join(ADMISSION_MODES)}, got {value!r}", field=field)
    return mode


def _exports(value: Any, *, field: str = "exports") -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, Sequence) or not value:
        raise XRootDConfigError(f"expected a non-empty list of absolute paths (e.g. ['/store']), got {value!r}",
                                field=field)
    paths = []
    for entry in value:
        if not isinstance(entry, str) or not _PATH.match(entry) or "/../" in f"{entry}/" or "//" in entry:
            raise XRootDConfigError(
                f"exported path {entry!r} must be absolute, without '..', '//' or spaces (e.g. /store)", field=field
            )
        normalized = entry.rstrip("/") or "/"
        if normalized.startswith(COMMAND_PREFIX.rstrip("/")):
            raise XRootDConfigError(f"{COMMAND_PREFIX} is reserved for XCache's commands", field=field)
        if normalized not in paths:
            paths.append(normalized)
    return tuple(paths)


def parse_address(value: Any, *, field: str, default_port: int | None = DEFAULT_PORT) -> tuple[str, int]:
    """Return (host, port) from ``host:port``, ``[v6]:port``, ``root://host:port`` or ``host``.

    :param value: the address
    :param field: the property it comes from (named in errors)
    :param default_port: the port when none is given (None: a port is required)
    """
    text = str(value or "").strip()
    for scheme in ("root://", "roots://", "xroot://", "udp://"):  # the VM script strips the same
        if text.lower().startswith(scheme):
            text = text[len(scheme):]
            break
    text = text.split("/", 1)[0]
    if "@" in text:
        raise XRootDConfigError("an address must not carry credentials (user@host); give host:port", field=field)
    host, port_text = text, None
    if text.startswith("["):
        end = text.find("]")
        host, rest = text[: end + 1], text[end + 1 :]
        if rest:
            if not rest.startswith(":"):
                raise XRootDConfigError(f"expected host:port, got {value!r}", field=field)
            port_text = rest[1:]
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    if not host or not _HOST.match(host):
        raise XRootDConfigError(f"expected host:port (e.g. origin.example.org:1094), got {value!r}", field=field)
    if port_text is None:
        if default_port is None:
            raise XRootDConfigError(f"expected host:port with a port, got {value!r}", field=field)
        return host, default_port
    return host, _port(port_text, field=field)


def _hosts(value: Any, *, field: str = "allow_hosts") -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value] if value else []
    hosts = []
    for entry in value or ():
        if not isinstance(entry, str) or not (_HOST.match(entry) or re.match(r"^[A-Za-z0-9*.-]+$", entry)):
            raise XRootDConfigError(f"expected host names or patterns (e.g. localhost, *.example.org), got {entry!r}",
                                    field=field)
        hosts.append(entry)
    return tuple(hosts)


# ------------------------------------------------------------------------------------------ settings
@dataclass(frozen=True)
class OriginSettings:
    """An XRootD data server exporting paths of a local directory.

    :param data_dir: the directory served (``oss.localroot``): ``/store/f`` is ``<data_dir>/store/f``
    :param port: the TCP port (``xrd.port``)
    :param exports: the exported paths (``all.export``)
    :param admin_dir: where xrootd keeps its admin socket and pid file (None: its default)
    :param allow_hosts: only these hosts may connect (``xrd.allow host``); empty: any host
    """

    data_dir: str
    port: int = DEFAULT_PORT
    exports: tuple[str, ...] = ("/",)
    admin_dir: str | None = None
    allow_hosts: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "data_dir", _directory(self.data_dir, field="data_dir"))
        object.__setattr__(self, "port", _port(self.port))
        object.__setattr__(self, "exports", _exports(self.exports))
        if self.admin_dir is not None:
            object.__setattr__(self, "admin_dir", _directory(self.admin_dir, field="admin_dir"))
        object.__setattr__(self, "allow_hosts", _hosts(self.allow_hosts))


@dataclass(frozen=True)
class XCacheSettings:
    """An XCache: an XRootD proxy that keeps what it reads from its origin on local disk.

    :param origin: the origin's address (``host:port`` or ``root://host:port``)
    :param cache_dir: where cached files and their ``.cinfo`` files are kept (``oss.localroot``)
    :param port: the TCP port clients read through
    :param exports: the paths served (``all.export``)
    :param ram: the memory for blocks in flight (``pfc.ram``, at least 1g)
    :param block_size: the unit the cache fetches and stores (``pfc.blocksize``)
    :param cache_size: the disk space the cache may use (None: the whole disk of ``cache_dir``)
    :param low_watermark: purging stops below this fraction of the cache size (``pfc.diskusage``)
    :param high_watermark: purging starts above this fraction of the cache size
    :param prefetch: blocks read ahead per file (``pfc.prefetch``; None: XRootD's default)
    :param purge_interval_s: seconds between disk-usage checks (None: XRootD's default, 300)
    :param monitor: ``host:port`` that receives the cache's UDP monitoring (file-close JSON records)
    :param monitor_flush_s: seconds the monitoring buffers records before sending them
    :param allow_commands: take cache commands under ``/xrdpfc_command/`` (eviction by clients)
    :param admin_dir: where xrootd keeps its admin socket and pid file (None: its default)
    :param allow_hosts: only these hosts may connect; empty: any host
    :param admission_library: the decision library that chooses which missed files are written
        (``pfc.decisionlib``; :func:`~.admission.build_library`); None: every miss is written
    :param admission_policy: the policy file the library reads (required with the library; it need not
        exist yet: without it the library admits every file)
    :param bypass_log: where the library appends the opens it did not cache (None: nowhere)
    """

    origin: str
    cache_dir: str
    port: int = DEFAULT_PORT
    exports: tuple[str, ...] = ("/",)
    ram: int | str = "1g"
    block_size: int | str = "1m"
    cache_size: int | str | None = None
    low_watermark: float | str = 0.90
    high_watermark: float | str = 0.95
    prefetch: int | None = None
    purge_interval_s: int | None = None
    monitor: str | None = None
    monitor_flush_s: int = 5
    allow_commands: bool = False
    admin_dir: str | None = None
    allow_hosts: tuple[str, ...] = ()
    admission_library: str | None = None
    admission_policy: str | None = None
    bypass_log: str | None = None
    _origin_address: tuple[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        setattr_ = object.__setattr__
        host, port = parse_address(self.origin, field="origin")
        setattr_(self, "_origin_address", (host, port))
        setattr_(self, "origin", f"{host}:{port}")
        setattr_(self, "cache_dir", _directory(self.cache_dir, field="cache_dir"))
        setattr_(self, "port", _port(self.port))
        setattr_(self, "exports", _exports(self.exports))
        ram = parse_size(self.ram, field="ram")
        if ram < MIN_RAM:
            raise XRootDConfigError(f"XCache needs at least 1g of RAM (pfc.ram), got {self.ram!r}", field="ram")
        setattr_(self, "ram", ram)
        block = parse_size(self.block_size, field="block_size")
        if not MIN_BLOCK_SIZE <= block <= MAX_BLOCK_SIZE or block % MIN_BLOCK_SIZE:
            raise XRootDConfigError(
                f"the block size must be a multiple of 4k from 4k to 512m, got {self.block_size!r}",
                field="block_size",
            )
        setattr_(self, "block_size", block)
        if self.cache_size is not None and self.cache_size != "":
            setattr_(self, "cache_size", parse_size(self.cache_size, field="cache_size"))
        else:
            setattr_(self, "cache_size", None)
        low = _fraction(self.low_watermark, field="low_watermark")
        high = _fraction(self.high_watermark, field="high_watermark")
        if low >= high:
            raise XRootDConfigError(
                f"the low watermark ({low:g}) must be below the high watermark ({high:g})", field="low_watermark"
            )
        setattr_(self, "low_watermark", low)
        setattr_(self, "high_watermark", high)
        if self.cache_size is not None and self.cache_size * high < MIN_BLOCK_SIZE * 16:
            raise XRootDConfigError(f"a cache of {self.cache_size} bytes is too small to hold anything",
                                    field="cache_size")
        for name, low_bound in (("prefetch", 0), ("purge_interval_s", 1)):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < low_bound):
                raise XRootDConfigError(f"expected an integer >= {low_bound}, got {value!r}", field=name)
        if self.monitor:
            mhost, mport = parse_address(self.monitor, field="monitor", default_port=None)
            setattr_(self, "monitor", f"{mhost}:{mport}")
        else:
            setattr_(self, "monitor", None)
        if isinstance(self.monitor_flush_s, bool) or not isinstance(self.monitor_flush_s, int) \
                or self.monitor_flush_s < 1:
            raise XRootDConfigError(f"expected whole seconds >= 1, got {self.monitor_flush_s!r}",
                                    field="monitor_flush_s")
        if self.admin_dir is not None:
            setattr_(self, "admin_dir", _directory(self.admin_dir, field="admin_dir"))
        setattr_(self, "allow_hosts", _hosts(self.allow_hosts))
        setattr_(self, "allow_commands", bool(self.allow_commands))
        for name in ("admission_library", "admission_policy", "bypass_log"):
            value = getattr(self, name)
            setattr_(self, name, None if value is None or value == "" else _file(value, field=name))
        if self.admission_library is None:
            for name in ("admission_policy", "bypass_log"):
                if getattr(self, name) is not None:
                    raise XRootDConfigError("is used by the decision library only: set admission_library too",
                                            field=name)
        elif self.admission_policy is None:
            raise XRootDConfigError("the decision library needs the policy file it reads (it need not exist yet)",
                                    field="admission_policy")

    @property
    def origin_host(self) -> str:
        """Return the origin's host."""
        return self._origin_address[0]

    @property
    def origin_port(self) -> int:
        """Return the origin's port."""
        return self._origin_address[1]

    def disk_usage(self) -> tuple[str, str]:
        """Return the low and high watermarks as ``pfc.diskusage`` takes them."""
        if self.cache_size is None:
            return f"{self.low_watermark:g}", f"{self.high_watermark:g}"
        # absolute sizes in KiB: a number without a unit would be read as a fraction
        low = int(self.cache_size * self.low_watermark) // 1024
        high = int(self.cache_size * self.high_watermark) // 1024
        return f"{low}k", f"{high}k"


# ------------------------------------------------------------------------------------------ rendering
def _common(port: int, admin_dir: str | None, allow_hosts: Iterable[str]) -> list[str]:
    lines = [f"xrd.port {port}"]
    lines += [f"xrd.allow host {host}" for host in allow_hosts]
    if admin_dir:
        lines += [f"all.adminpath {admin_dir}", f"all.pidpath {admin_dir}"]
    return lines


def render_origin_config(settings: OriginSettings) -> str:
    """Return the xrootd configuration file of an origin (data server).

    :param settings: the origin's settings
    """
    lines = ["# XRootD origin (data server): written by airflow_cloud_paas, do not edit"]
    lines += _common(settings.port, settings.admin_dir, settings.allow_hosts)
    lines.append(f"oss.localroot {settings.data_dir}")
    lines += [f"all.export {path}" for path in settings.exports]
    return "\n".join(lines) + "\n"


def render_xcache_config(settings: XCacheSettings) -> str:
    """Return the xrootd configuration file of an XCache in front of its origin.

    :param settings: the cache's settings
    """
    lines = [f"# XCache (proxy file cache) of root://{settings.origin}: written by airflow_cloud_paas, do not edit"]
    lines += _common(settings.port, settings.admin_dir, settings.allow_hosts)
    lines += [f"all.export {path}" for path in settings.exports]
    lines += [
        "ofs.osslib libXrdPss.so",
        "pss.cachelib libXrdPfc.so",
        f"pss.origin {settings.origin}",
        f"oss.localroot {settings.cache_dir}",
        f"pfc.ram {format_size(settings.ram)}",
        f"pfc.blocksize {format_size(settings.block_size)}",
    ]
    low, high = settings.disk_usage()
    usage = f"pfc.diskusage {low} {high}"
    if settings.purge_interval_s is not None:
        usage += f" purgeinterval {settings.purge_interval_s}"
    lines.append(usage)
    if settings.prefetch is not None:
        lines.append(f"pfc.prefetch {settings.prefetch}")
    if settings.admission_library is not None:
        lines.append(decisionlib_directive(settings.admission_library, settings.admission_policy, settings.bypass_log))
    if settings.allow_commands:
        lines += [f"all.export {COMMAND_PREFIX}", "pfc.allow_xrdpfc_command"]
    if settings.monitor:
        flush = settings.monitor_flush_s
        lines.append(f"xrootd.monitor all flush {flush}s window {flush}s dest pfc {settings.monitor}")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------ from TOSCA
def _given(properties: Mapping[str, Any], name: str) -> Any:
    value = properties.get(name)
    return None if value is None or value == "" else value


def origin_settings(properties: Mapping[str, Any], *, data_dir: str | None = None, port: int | None = None,
                    admin_dir: str | None = None, allow_hosts: Iterable[str] = ()) -> OriginSettings:
    """Build an origin's settings from the TOSCA properties of a ``cloud_paas.nodes.xrootd.Origin`` node.

    :param properties: the node's properties
    :param data_dir: the directory served when the ``data_dir`` property is empty
    :param port: the port to use instead of the ``port`` property (a free port picked by a backend)
    :param admin_dir: xrootd's admin directory
    :param allow_hosts: only these hosts may connect
    """
    chosen = _given(properties, "data_dir") or data_dir
    if chosen is None:
        raise XRootDConfigError("no directory to serve: set the data_dir property", field="data_dir")
    return OriginSettings(
        data_dir=chosen,
        port=port if port is not None else _port(properties.get("port") or DEFAULT_PORT),
        exports=tuple(_exports(_given(properties, "exports") or ["/"])),
        admin_dir=admin_dir,
        allow_hosts=tuple(allow_hosts),
    )


def xcache_settings(properties: Mapping[str, Any], *, origin: str | None = None, cache_dir: str | None = None,
                    port: int | None = None, admin_dir: str | None = None, allow_hosts: Iterable[str] = (),
                    admission_library: str | None = None, admission_policy: str | None = None,
                    bypass_log: str | None = None) -> XCacheSettings:
    """Build an XCache's settings from the TOSCA properties of a ``cloud_paas.nodes.xrootd.XCache`` node.

    The ``admission`` property picks what the cache writes on a miss: ``all`` (XCache's default, every
    file) or ``model`` (the smart manager's policy, read by the decision library whose paths the backend
    supplies here; they are ignored with ``all``).

    :param properties: the node's properties
    :param origin: the origin's address when the ``origin`` property is empty (the required origin node's)
    :param cache_dir: the cache directory when the ``cache_dir`` property is empty
    :param port: the port to use instead of the ``port`` property (a free port picked by a backend)
    :param admin_dir: xrootd's admin directory
    :param allow_hosts: only these hosts may connect
    :param admission_library: the built decision library (with ``admission: model``)
    :param admission_policy: the policy file it reads (with ``admission: model``)
    :param bypass_log: where it logs bypassed opens (with ``admission: model``; None: nowhere)
    """
    chosen_origin = _given(properties, "origin") or origin
    if chosen_origin is None:
        raise XRootDConfigError(
            "no origin: set the origin property (host:port) or add an origin requirement to an Origin node",
            field="origin",
        )
    chosen_dir = _given(properties, "cache_dir") or cache_dir
    if chosen_dir is None:
        raise XRootDConfigError("no cache directory: set the cache_dir property", field="cache_dir")
    optional = {
        name: _given(properties, name)
        for name in ("ram", "block_size", "cache_size", "low_watermark", "high_watermark", "prefetch",
                     "purge_interval_s", "monitor_flush_s")
        if _given(properties, name) is not None
    }
    if admission_mode(properties.get("admission")) == "model":
        if not admission_library or not admission_policy:
            raise XRootDConfigError(
                "'model' needs the cloud-paas decision library and a policy file, which this backend does not "
                "provide (the local backend's XCache driver builds them); use 'all' here",
                field="admission",
            )
        optional.update(admission_library=admission_library, admission_policy=admission_policy,
                        bypass_log=bypass_log)
    return XCacheSettings(
        origin=chosen_origin,
        cache_dir=chosen_dir,
        port=port if port is not None else _port(properties.get("port") or DEFAULT_PORT),
        exports=tuple(_exports(_given(properties, "exports") or ["/"])),
        monitor=_given(properties, "monitor"),
        allow_commands=bool(properties.get("allow_commands", False)),
        admin_dir=admin_dir,
        allow_hosts=tuple(allow_hosts),
        **optional,
    )


#: the environment variable a container's command writes to its configuration file (see xrootd_types.yaml)
CONTAINER_CONFIG_ENV = "CLOUD_PAAS_XROOTD_CONFIG"


def container_environment(settings: OriginSettings | XCacheSettings) -> dict[str, str]:
    """Return the environment of a ``cloud_paas.nodes.xrootd.*Container`` node for these settings.

    :param settings: the origin's or cache's settings (directories as seen inside the container)
    """
    if isinstance(settings, OriginSettings):
        return {CONTAINER_CONFIG_ENV: render_origin_config(settings)}
    return {CONTAINER_CONFIG_ENV: render_xcache_config(settings)}
