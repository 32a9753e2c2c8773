"""Resolve a template's ``imports`` to local files, offline first.

An import is looked up, in this order:

1. the user's import map (import URL or name as written -> local file);
2. a file path, absolute or relative to the importing file's directory;
3. the package's own map (the Cloud PaaS types, by URL or by the short name ``cloud_paas_types.yaml``);
4. for an ``http(s)`` URL, the types cache directory
   (``~/.cache/airflow_cloud_paas/tosca-types/<host>/<path>``, or ``$AIRFLOW_CLOUD_PAAS_TOSCA_CACHE``),
   which may be filled by hand; on a cache miss only, the URL is fetched once and kept there.

Nothing else touches the network, so a DAG file that loads a template never waits on it once the
cache is warm. A fetch is bounded: it must end within ``timeout`` seconds in all (the DNS look-up,
connecting, the headers and the body; a server trickling bytes is cut off at the deadline) and send at
most :data:`MAX_FETCH_BYTES` (16 MiB, the size allowed for any YAML file); otherwise the import fails
with a ToscaImportError naming the URL.

Imports are bounded too: a file importing itself, directly or through others (A imports B imports
A), is refused with a ToscaImportError naming the cycle (TOSCA does not define it; tosca-parser
recursed without end), and a template may pull in at most :data:`MAX_IMPORTED_FILES` files in all.
The same file imported twice (A imports B and C, both import D) is no cycle: it is read once.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from airflow_cloud_paas.exceptions import ToscaImportError, ToscaSyntaxError
from airflow_cloud_paas.tosca._yaml import MAX_DOCUMENT_BYTES, check_size, decode, load_yaml

PACKAGED_TYPES_FILE = Path(__file__).resolve().parent / "types" / "cloud_paas_types.yaml"
PACKAGED_TYPES_URL = "https://raw.githubusercontent.com/airflow-cloud-paas/tosca-types/main/cloud_paas_types.yaml"
PACKAGED_TYPES_NAME = "cloud_paas_types.yaml"
#: more packaged types files (service families), by the same URL scheme and short name
_TYPES_DIR = Path(__file__).resolve().parent / "types"
_TYPES_BASE_URL = "https://raw.githubusercontent.com/airflow-cloud-paas/tosca-types/main/"
EXTRA_TYPES_FILES = ("deepaas_types.yaml", "galaxy_types.yaml", "htcondor_types.yaml", "slurm_types.yaml",
                     "xrootd_types.yaml")

INDIGO_TYPES_URL = "https://raw.githubusercontent.com/indigo-dc/tosca-types/{ref}/custom_types.yaml"
INDIGO_BRANCHES = ("master", "devel", "dodas_roll", "k8s", "add-ek")

TYPES_CACHE_ENV = "AIRFLOW_CLOUD_PAAS_TOSCA_CACHE"
DEFAULT_TYPES_CACHE = Path("~/.cache/airflow_cloud_paas/tosca-types")
FETCH_TIMEOUT_S = 5.0
#: the most bytes a fetched import may have (the download stops there)
MAX_FETCH_BYTES = MAX_DOCUMENT_BYTES
#: the most files one template may import, nested imports included
MAX_IMPORTED_FILES = 100
_CHUNK = 64 * 1024

_URL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")
TYPE_SECTIONS = (
    "node_types",
    "capability_types",
    "relationship_types",
    "policy_types",
    "data_types",
    "interface_types",
    "artifact_types",
    "group_types",
)


_PARSED: OrderedDict[str, Any] = OrderedDict()  # sha256 -> parsed definitions (read-only)
_PARSED_SIZE = 8
_PARSED_LOCK = threading.Lock()


def _parsed(digest: str, data: bytes, path: str) -> Any:
    """Return an imported file's YAML, parsed once per process per content (types files are big)."""
    with _PARSED_LOCK:
        if digest in _PARSED:
            _PARSED.move_to_end(digest)
            return _PARSED[digest]
    definitions = load_yaml(decode(data, path), path)
    with _PARSED_LOCK:
        _PARSED[digest] = definitions
        while len(_PARSED) > _PARSED_SIZE:
            _PARSED.popitem(last=False)
    return definitions


def default_import_map() -> dict[str, str]:
    """Return the package's own import map: the Cloud PaaS types by URL and by short name."""
    path = str(PACKAGED_TYPES_FILE)
    mapping = {PACKAGED_TYPES_URL: path, PACKAGED_TYPES_NAME: path}
    for name in EXTRA_TYPES_FILES:
        if (_TYPES_DIR / name).is_file():
            mapping[_TYPES_BASE_URL + name] = mapping[name] = str(_TYPES_DIR / name)
    return mapping


def indigo_import_map(types_dir: str | os.PathLike) -> dict[str, str]:
    """Map the INDIGO ``custom_types.yaml`` URLs to local copies named ``custom_types.<ref>.yaml``.

    Every ``custom_types.<ref>.yaml`` in the directory is mapped from
    ``https://raw.githubusercontent.com/indigo-dc/tosca-types/<ref>/custom_types.yaml`` (branches such
    as master, devel, dodas_roll, k8s, add-ek, or tags such as ``v4.0.0``) and from the same URL with
    ``refs/heads/<ref>``.

    :param types_dir: a directory holding ``custom_types.<ref>.yaml`` files
    """
    folder = Path(types_dir).expanduser().resolve()
    mapping: dict[str, str] = {}
    for path in sorted(folder.glob("custom_types.*.yaml")):
        ref = path.name[len("custom_types.") : -len(".yaml")]
        if not ref:
            continue
        mapping[INDIGO_TYPES_URL.format(ref=ref)] = str(path)
        mapping[INDIGO_TYPES_URL.format(ref=f"refs/heads/{ref}")] = str(path)
    return mapping


def types_cache_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """Return the directory where types fetched by URL are kept.

    :param cache_dir: an explicit directory; else ``$AIRFLOW_CLOUD_PAAS_TOSCA_CACHE`` or the default
    """
    chosen = cache_dir or os.environ.get(TYPES_CACHE_ENV) or DEFAULT_TYPES_CACHE
    return Path(chosen).expanduser()


def is_url(uri: str) -> bool:
    """Return whether an import is a URL rather than a file path.

    :param uri: the import as written
    """
    return bool(_URL.match(uri))


@dataclass(frozen=True)
class ImportedFile:
    """One imported file, resolved to a local path and read once."""

    uri: str  # as written (a repository import is expanded to its full URL)
    path: str  # the local file
    sha256: str
    data: bytes = field(repr=False)
    definitions: Mapping[str, Any] = field(repr=False)
    namespace_prefix: str | None = None


@dataclass(frozen=True)
class ResolvedImports:
    """A template's imports, all local: what tosca-parser is given and what the content hash covers."""

    rewritten: list[Any]  # the template's own `imports`, with every location replaced by a local file
    files: tuple[ImportedFile, ...]  # every imported file, nested ones too, depth first
    local_defs: dict[str, str]  # URL -> local file, for imports nested in imported files
    uris: tuple[str, ...]  # the template's own imports as written


class _Deadline:
    """Shut the sockets of one fetch down when its time is up, so that no read can block past it.

    A per-read socket timeout is not enough: a server sending a byte a second never trips it.

    :param seconds: the time the whole fetch may take
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.ends = time.monotonic() + seconds
        self.expired = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def __enter__(self) -> _Deadline:
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()

    def watch(self, sock: socket.socket) -> None:
        """Shut a connection's socket down at the deadline (at once if it has passed).

        :param sock: the socket of a connection just opened
        """
        with self._lock:
            self._sockets.append(sock)
            if self.expired:
                _shut(sock)

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            for sock in self._sockets:
                _shut(sock)

    def _create_connection(self, address: tuple[str, int], timeout: Any = None, source_address: Any = None,
                           **kwargs: Any) -> socket.socket:
        """``socket.create_connection`` with the host looked up within what is left of the deadline."""
        host, port = address
        last: BaseException | None = None
        for family, kind, proto, _, where in _look_up(host, port, self.ends - time.monotonic()):
            sock = socket.socket(family, kind, proto)
            try:
                sock.settimeout(max(min(timeout or self.seconds, self.ends - time.monotonic()), 0.001))
                if source_address:
                    sock.bind(source_address)
                sock.connect(where)
                return sock
            except OSError as err:
                sock.close()
                last = err
        raise last or OSError(f"no address for {host}")

    def connection(self, http_class: Any) -> Any:
        """Return a factory of ``http_class`` connections whose sockets are watched.

        :param http_class: http.client.HTTPConnection or HTTPSConnection
        """

        def make(*args: Any, **kwargs: Any) -> http.client.HTTPConnection:
            conn = http_class(*args, **kwargs)
            conn._create_connection = self._create_connection  # the look-up bounded too (TLS still checks the name)
            connect = conn.connect

            def watched_connect() -> None:
                connect()
                self.watch(conn.sock)

            conn.connect = watched_connect
            return conn

        return make


def _look_up(host: str, port: int, seconds: float) -> list[Any]:
    """Return ``getaddrinfo`` of a host, or raise socket.timeout after ``seconds`` (the system's resolver has no
    time limit of its own that a caller can set; its thread is left to finish on its own)."""
    found: list[Any] = []
    errors: list[BaseException] = []

    def look_up() -> None:
        try:
            found.extend(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))
        except BaseException as err:  # handed to the caller
            errors.append(err)

    thread = threading.Thread(target=look_up, name=f"dns-{host}", daemon=True)
    thread.start()
    thread.join(max(seconds, 0))
    if thread.is_alive():
        raise TimeoutError(f"looking up the host {host} took more than {seconds:.3g} s")
    if errors:
        raise errors[0]
    return found


def _shut(sock: socket.socket) -> None:
    # The plain socket's shutdown, also for TLS: it wakes a blocked read without touching the TLS state.
    try:
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
    except OSError:
        pass


class _WatchedHTTP(urllib.request.HTTPHandler):
    """Open http:// connections whose sockets a _Deadline watches."""

    def __init__(self, deadline: _Deadline) -> None:
        super().__init__()
        self.deadline = deadline

    def do_open(self, http_class: Any, req: Any, **kwargs: Any) -> Any:
        """Open a connection whose socket is watched (urllib's hook)."""
        return super().do_open(self.deadline.connection(http_class), req, **kwargs)


class _WatchedHTTPS(urllib.request.HTTPSHandler):
    """Open https:// connections whose sockets a _Deadline watches."""

    def __init__(self, deadline: _Deadline) -> None:
        super().__init__()
        self.deadline = deadline

    def do_open(self, http_class: Any, req: Any, **kwargs: Any) -> Any:
        """Open a connection whose socket is watched (urllib's hook)."""
        return super().do_open(self.deadline.connection(http_class), req, **kwargs)


class ImportResolver:
    """Resolve TOSCA imports to local files: user map, file path, packaged map, URL cache, fetch.

    :param import_map: import URL (or name as written) -> local file
    :param cache_dir: where types fetched by URL are kept (default ``$AIRFLOW_CLOUD_PAAS_TOSCA_CACHE``
        or ``~/.cache/airflow_cloud_paas/tosca-types``)
    :param fetch: fetch a URL that is neither mapped nor cached (once, then it is cached)
    :param timeout: seconds a fetch may take in all (connecting, headers and body)
    """

    def __init__(
        self,
        import_map: Mapping[str, str | os.PathLike] | None = None,
        *,
        cache_dir: str | os.PathLike | None = None,
        fetch: bool = True,
        timeout: float = FETCH_TIMEOUT_S,
    ) -> None:
        self.user_map = {str(k): str(Path(v).expanduser().absolute()) for k, v in (import_map or {}).items()}
        self.default_map = default_import_map()
        self.cache_dir = types_cache_dir(cache_dir)
        self.fetch = fetch
        self.timeout = timeout

    def fingerprint(self) -> str:
        """Return a digest of everything that decides where an import resolves (for cache keys)."""
        state = [sorted(self.user_map.items()), sorted(self.default_map.items()), str(self.cache_dir)]
        return hashlib.sha256(json.dumps(state).encode()).hexdigest()

    # ------------------------------------------------------------------ one location
    def locate(self, uri: str, *, importer: str, base_dir: str | None) -> str:
        """Return the local file an import stands for, fetching a URL only on a cache miss.

        :param uri: the import as written (file path or URL)
        :param importer: the file that imports it (named in errors)
        :param base_dir: directory for relative paths; None when the importer came from a URL
        """
        if uri in self.user_map:
            return self._existing(self.user_map[uri], uri, importer, "the import map entry")
        if not is_url(uri):
            candidate = Path(uri).expanduser()
            if not candidate.is_absolute():
                if base_dir is None:
                    raise ToscaImportError(
                        f"relative import '{uri}' inside a file fetched by URL cannot be resolved offline; "
                        f"map it with import_map={{'{uri}': '/path/to/file.yaml'}}",
                        file=importer,
                        field="imports",
                    )
                candidate = Path(base_dir) / candidate
            if candidate.is_file():
                return str(candidate.resolve())
            if uri in self.default_map:
                return self._existing(self.default_map[uri], uri, importer, "the packaged types file")
            raise ToscaImportError(
                f"imported file '{uri}' not found (looked for {candidate}); fix the path or map it with "
                f"import_map={{'{uri}': '/path/to/file.yaml'}}",
                file=importer,
                field="imports",
            )
        if uri in self.default_map:
            return self._existing(self.default_map[uri], uri, importer, "the packaged types file")
        if uri.startswith("file://"):
            local = urllib.parse.unquote(urllib.parse.urlparse(uri).path)
            return self._existing(local, uri, importer, "the file URL")
        return str(self._cached_or_fetched(uri, importer))

    def _existing(self, path: str, uri: str, importer: str, what: str) -> str:
        if not Path(path).is_file():
            raise ToscaImportError(
                f"import '{uri}' maps to {path} ({what}), which does not exist; fix the import map",
                file=importer,
                field="imports",
            )
        return str(Path(path).resolve())

    def cache_path(self, url: str) -> Path:
        """Return where a URL's content is (or would be) cached: ``<cache>/<host>/<path>``.

        :param url: an http(s) URL
        """
        parts = urllib.parse.urlparse(url)
        pieces = [p for p in parts.path.split("/") if p not in ("", ".", "..")]
        if parts.query:  # keep distinct queries apart without making names unreadable
            pieces[-1:] = [f"{(pieces or ['index'])[-1]}.{hashlib.sha256(parts.query.encode()).hexdigest()[:8]}"]
        safe = [re.sub(r"[^A-Za-z0-9._-]", "_", p) for p in [parts.netloc or "localhost", *pieces]]
        return self.cache_dir.joinpath(*safe)

    def _cached_or_fetched(self, url: str, importer: str) -> Path:
        target = self.cache_path(url)
        if target.is_file():
            return target.resolve()
        hint = f"pass import_map={{'{url}': '/path/to/local/copy.yaml'}} to load_topology, or put a copy at {target}"
        if not self.fetch or not url.lower().startswith(("http://", "https://")):
            raise ToscaImportError(f"cannot resolve import '{url}' offline; {hint}", file=importer, field="imports")
        data = self._download(url, importer, hint)
        load_yaml(decode(data, url), url)  # never cache something that is not YAML
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
            tmp.write_bytes(data)
            tmp.replace(target)
        except OSError as err:
            raise ToscaImportError(
                f"fetched import '{url}' but cannot write the types cache {target} ({err}); "
                f"set ${TYPES_CACHE_ENV} to a writable directory",
                file=importer,
                field="imports",
            ) from err
        return target.resolve()

    def _download(self, url: str, importer: str, hint: str) -> bytes:
        """Return a URL's body, fetched within ``self.timeout`` seconds in all and MAX_FETCH_BYTES at most.

        :param url: an http(s) URL
        :param importer: the importing file, for the error
        :param hint: how to do without the network, for the error
        """
        deadline = _Deadline(self.timeout)
        opener = urllib.request.build_opener(_WatchedHTTP(deadline), _WatchedHTTPS(deadline))
        chunks: list[bytes] = []
        size = 0
        too_big = (
            f"import '{url}' is bigger than {MAX_FETCH_BYTES // (1024 * 1024)} MiB, the most allowed for a TOSCA "
            f"YAML file; check the URL, or {hint}"
        )
        try:
            with deadline, opener.open(url, timeout=self.timeout) as answer:  # http(s) only, checked by the caller
                length = answer.headers.get("Content-Length", "")
                if length.isdigit() and int(length) > MAX_FETCH_BYTES:
                    raise ToscaImportError(too_big, file=importer, field="imports")
                while chunk := answer.read1(_CHUNK):
                    size += len(chunk)
                    if size > MAX_FETCH_BYTES:
                        raise ToscaImportError(too_big, file=importer, field="imports")
                    chunks.append(chunk)
                    if deadline.expired:
                        break
        except ToscaImportError:
            raise
        except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as err:
            if not deadline.expired and time.monotonic() < deadline.ends:
                reason = getattr(err, "reason", err)
                raise ToscaImportError(
                    f"cannot fetch import '{url}' ({reason}); {hint}", file=importer, field="imports"
                ) from err
        if deadline.expired or time.monotonic() >= deadline.ends:
            raise ToscaImportError(
                f"fetching import '{url}' took more than {self.timeout:g} s (it had sent {size:,} bytes); the server "
                f"is too slow or never ends the answer; {hint}",
                file=importer,
                field="imports",
            )
        return b"".join(chunks)

    # ------------------------------------------------------------------ a template's imports
    def resolve(
        self, imports: Any, *, template_file: str, repositories: Mapping[str, Any] | None = None
    ) -> ResolvedImports:
        """Resolve a template's ``imports`` and, depth first, those of the files it imports.

        :param imports: the template's ``imports`` value
        :param template_file: the template's path (relative imports start from its directory)
        :param repositories: the template's ``repositories`` section
        """
        files: list[ImportedFile] = []
        local_defs: dict[str, str] = {}
        seen: set[str] = set()
        chain = (str(Path(template_file).resolve()),)
        rewritten, uris = self._resolve_list(
            imports, template_file, str(Path(template_file).parent), repositories, files, local_defs, seen, chain
        )
        return ResolvedImports(rewritten=rewritten, files=tuple(files), local_defs=local_defs, uris=tuple(uris))

    def _resolve_list(
        self,
        imports: Any,
        importer: str,
        base_dir: str | None,
        repositories: Mapping[str, Any] | None,
        files: list[ImportedFile],
        local_defs: dict[str, str],
        seen: set[str],
        chain: tuple[str, ...],
    ) -> tuple[list[Any], list[str]]:
        if imports is None:
            return [], []
        if not isinstance(imports, list):
            raise ToscaSyntaxError(
                "'imports' must be a list (e.g. '- name: https://.../types.yaml')",
                file=importer,
                field="imports",
            )
        rewritten: list[Any] = []
        uris: list[str] = []
        for entry in imports:
            if isinstance(entry, str):
                path = self._one(entry, None, importer, base_dir, files, local_defs, seen, chain)
                rewritten.append(path)
                uris.append(entry)
            elif isinstance(entry, Mapping) and entry:
                new_entry = {}
                for name, spec in entry.items():
                    if isinstance(spec, str):
                        new_entry[name] = self._one(spec, None, importer, base_dir, files, local_defs, seen, chain)
                        uris.append(spec)
                    elif isinstance(spec, Mapping) and isinstance(spec.get("file"), str):
                        uri = self._with_repository(spec, repositories, importer, str(name))
                        prefix = spec.get("namespace_prefix")
                        path = self._one(uri, prefix, importer, base_dir, files, local_defs, seen, chain)
                        # tosca-parser must not look the repository up again: it would go to the network.
                        new_entry[name] = {k: v for k, v in spec.items() if k != "repository"} | {"file": path}
                        uris.append(uri)
                    else:
                        raise ToscaSyntaxError(
                            f"import '{name}' must be a file path, a URL or a mapping with 'file'",
                            file=importer,
                            field=f"imports.{name}",
                        )
                rewritten.append(new_entry)
            else:
                raise ToscaSyntaxError(
                    f"imports entry {entry!r} must be a file path, a URL or a 'name: location' mapping",
                    file=importer,
                    field="imports",
                )
        return rewritten, uris

    def _with_repository(
        self, spec: Mapping[str, Any], repositories: Mapping[str, Any] | None, importer: str, name: str
    ) -> str:
        repo = spec.get("repository")
        if repo is None:
            return spec["file"]
        definition = (repositories or {}).get(repo)
        url = definition.get("url") if isinstance(definition, Mapping) else definition
        if not isinstance(url, str):
            raise ToscaImportError(
                f"import '{name}' names repository '{repo}', which is not defined under 'repositories'",
                file=importer,
                field=f"imports.{name}.repository",
            )
        return url.strip().rstrip("/") + "/" + spec["file"].lstrip("/")

    def _one(
        self,
        uri: str,
        namespace_prefix: str | None,
        importer: str,
        base_dir: str | None,
        files: list[ImportedFile],
        local_defs: dict[str, str],
        seen: set[str],
        chain: tuple[str, ...],
    ) -> str:
        path = self.locate(uri, importer=importer, base_dir=base_dir)
        if path in chain:
            cycle = " -> ".join(Path(p).name for p in (*chain[chain.index(path) :], path))
            raise ToscaImportError(
                f"imports form a cycle ({cycle}); remove the import of '{uri}': a file must not import itself "
                "or a file that imports it",
                file=importer,
                field="imports",
            )
        if is_url(uri):
            local_defs[uri] = path
        key = f"{path}\0{namespace_prefix}"
        if key in seen:
            return path
        seen.add(key)
        if len(files) >= MAX_IMPORTED_FILES:
            raise ToscaImportError(
                f"imports more than {MAX_IMPORTED_FILES} files in all (nested imports included); import only the "
                "types files the template uses",
                file=importer,
                field="imports",
            )
        try:
            check_size(Path(path).stat().st_size, path)
            data = Path(path).read_bytes()
        except OSError as err:
            raise ToscaImportError(f"cannot read imported file {path} ({err})", file=importer, field="imports") from err
        digest = hashlib.sha256(data).hexdigest()
        definitions = _parsed(digest, data, path)
        if not isinstance(definitions, Mapping):
            raise ToscaSyntaxError(
                "an imported TOSCA definitions file must be a YAML mapping", file=path, field="imports"
            )
        files.append(
            ImportedFile(
                uri=uri,
                path=path,
                sha256=digest,
                data=data,
                definitions=definitions,
                namespace_prefix=namespace_prefix,
            )
        )
        nested = definitions.get("imports")
        if nested:
            # Relative imports inside a fetched (cached) file cannot be resolved without the network.
            from_url = is_url(uri) and Path(path).is_relative_to(self.cache_dir.resolve())
            self._resolve_list(
                nested,
                path,
                None if from_url else str(Path(path).parent),
                definitions.get("repositories"),
                files,
                local_defs,
                seen,
                (*chain, path),
            )
        return path
