"""A model folder as one file, for hosts that do not share a disk with Airflow: pack it, fetch it, check it.

:func:`pack_model` writes an exported model (``model.pt`` + ``model.json``) as a ``.tar.gz`` holding just those two
files; :func:`fetch_model` puts such an archive (from ``http(s)://`` or ``file://``) into a model folder on the
serving host - a DEEPaaS container at start, a VM at boot - and checks it: the download is bounded in bytes and
time (each read and the whole download), packed and unpacked, the archive may hold only the two files (no links, no
paths leading out), and ``model.pt`` must match the SHA-256 its ``model.json`` records. A folder that already holds
the model of the same URL is kept (a restarted container does not download again); another URL's replaces it. An
error shows the URL without its credentials and query (a presigned URL's signature). Errors are
:class:`~airflow_cloud_paas.services.training.errors.ExportedModelError` naming the URL or the file.

Nothing here imports Airflow or torch (it runs in DEEPaaS's environment):
``python -m airflow_cloud_paas.services.training.archive fetch URL FOLDER``.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import os
import shutil
import sys
import tarfile
import tempfile
import time
import urllib.request
import zlib
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

from airflow_cloud_paas.services.training.errors import ExportedModelError
from airflow_cloud_paas.services.training.export import METADATA_NAME, WEIGHTS_NAME, verify_files

#: the largest archive fetched, in bytes (``CLOUD_PAAS_MODEL_MAX_BYTES`` overrides it)
MAX_BYTES = 8 << 30
MAX_BYTES_ENV = "CLOUD_PAAS_MODEL_MAX_BYTES"
_MEMBERS = (WEIGHTS_NAME, METADATA_NAME)
_CHUNK = 1 << 20


def pack_model(model_dir: str | Path, archive: str | Path) -> Path:
    """Write a checked model folder as a ``.tar.gz`` of its two files; return the archive's path.

    :param model_dir: the exported model's folder
    :param archive: the archive to write (replaced atomically)
    """
    source = Path(model_dir)
    verify_files(source)
    target = Path(archive)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    with tarfile.open(partial, "w:gz") as tar:
        for name in _MEMBERS:
            tar.add(source / name, arcname=name, recursive=False)
    os.replace(partial, target)
    return target


def _limit() -> int:
    text = os.environ.get(MAX_BYTES_ENV)
    return int(text) if text and text.isdigit() else MAX_BYTES


def shown(url: str) -> str:
    """Return a URL as errors and logs may show it: without credentials, query or fragment (a presigned URL's
    signature is in its query).

    :param url: the URL
    """
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit((parts.scheme, netloc, parts.path, "", "")) + ("?..." if parts.query else "")


def _download(url: str, target: Path, *, timeout: float, total_timeout: float) -> None:
    parts = urlsplit(url)
    limit, where = _limit(), shown(url)
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise ExportedModelError("a file:// URL must name a local file", path=where)
        source = Path(unquote(parts.path))
        if not source.is_file():
            raise ExportedModelError("no such file", path=where)
        if source.stat().st_size > limit:
            raise ExportedModelError(f"is larger than {limit} bytes ({MAX_BYTES_ENV})", path=where)
        shutil.copyfile(source, target)
        return
    if parts.scheme not in ("http", "https"):
        raise ExportedModelError("a model archive's URL must be http(s):// or file://", path=where)
    deadline = time.monotonic() + total_timeout
    request = urllib.request.Request(urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[-1])))
    if parts.username is not None:  # user:password@ in the URL: sent as HTTP basic authentication
        pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
        request.add_header("Authorization", "Basic " + base64.b64encode(pair).decode())
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer, open(target, "wb") as out:  # noqa: S310
            size = 0
            while chunk := answer.read(_CHUNK):
                size += len(chunk)
                if size > limit:
                    raise ExportedModelError(f"is larger than {limit} bytes ({MAX_BYTES_ENV})", path=where)
                if time.monotonic() > deadline:
                    raise ExportedModelError(f"took more than {total_timeout:.0f} s to download", path=where)
                out.write(chunk)
    except (OSError, ValueError) as err:  # URLError, HTTPError, timeouts, InvalidURL; their text may repeat the URL
        reason = getattr(err, "code", None) or getattr(err, "reason", None) or type(err).__name__
        raise ExportedModelError(f"cannot be downloaded: {reason}", path=where) from None


def _source_file(target: Path) -> Path:
    """Return the file beside a model folder recording which URL filled it (its SHA-256: the URL may be secret)."""
    return target.with_name(f".{target.name}.source")


def _url_digest(url: str) -> str:
    return hashlib.sha256(url.encode()).hexdigest()


def fetch_model(url: str, model_dir: str | Path, *, timeout: float = 300.0, total_timeout: float = 3600.0) -> Path:
    """Put the model archive at ``url`` into ``model_dir``; return the folder.

    A folder that already holds the model of the same URL is kept (checked again); one of another URL is replaced.

    :param url: the archive's ``http(s)://`` or ``file://`` URL (a :func:`pack_model` archive)
    :param model_dir: the model folder to fill
    :param timeout: seconds a network read may stall
    :param total_timeout: seconds the whole download may take
    """
    target = Path(model_dir)
    source = _source_file(target)
    if (target / METADATA_NAME).is_file() and source.is_file() and source.read_text() == _url_digest(url):
        verify_files(target)
        return target
    where = shown(url)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        archive = staging / "model.tar.gz"
        _download(url, archive, timeout=timeout, total_timeout=total_timeout)
        unpacked = staging / "model"
        unpacked.mkdir()
        try:
            with tarfile.open(archive, "r:*") as tar:
                members = tar.getmembers()
                names = sorted(m.name for m in members)
                if names != sorted(_MEMBERS) or not all(m.isfile() for m in members):
                    raise ExportedModelError(f"must hold only the files {', '.join(_MEMBERS)}, got {names[:5]}",
                                             path=where)
                if sum(m.size for m in members) > _limit():  # a small archive that unpacks into a huge file
                    raise ExportedModelError(f"unpacks to more than {_limit()} bytes ({MAX_BYTES_ENV})", path=where)
                tar.extractall(unpacked, filter="data")
        except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as err:  # not a tar, or cut short
            raise ExportedModelError(f"is not a whole model archive (a .tar.gz of pack_model): {err}",
                                     path=where) from None
        verify_files(unpacked)
        if target.exists():  # another URL's model (an update): replaced whole, never mixed
            old = staging / "previous"
            os.replace(target, old)
        os.replace(unpacked, target)
        source.write_text(_url_digest(url))
    except OSError as err:
        raise ExportedModelError(f"cannot be written: {err}", path=target) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def main(argv: list[str] | None = None) -> int:
    """``fetch URL FOLDER`` or ``pack FOLDER ARCHIVE``; exit 2 with the reason on a bad model.

    :param argv: the arguments (default: the process's)
    """
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 3 or args[0] not in ("fetch", "pack"):
        print("usage: python -m airflow_cloud_paas.services.training.archive fetch URL FOLDER | pack FOLDER ARCHIVE",
              file=sys.stderr)
        return 2
    try:
        done = fetch_model(args[1], args[2]) if args[0] == "fetch" else pack_model(args[1], args[2])
    except ExportedModelError as err:
        print(f"ExportedModelError: {err}", file=sys.stderr)
        return 2
    print(done)
    return 0


if __name__ == "__main__":
    sys.exit(main())
