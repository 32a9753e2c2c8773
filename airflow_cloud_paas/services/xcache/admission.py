"""Admission control of a live XCache: which missed files it writes to its disk, decided by the popularity model.

XCache (XrdPfc) asks its *decision libraries* whether to cache a file when the file is opened; a file
declined is read straight from the origin and never written. This project's library,
``libXrdPfcCloudPaaSAdmission.so`` (source: ``admission/XrdPfcCloudPaaSAdmission.cc``, built here with
:func:`build_library` against the distribution's XRootD headers), decides by **dataset** (a file's
directory) from a small policy file the smart manager rewrites (:class:`AdmissionPolicy`):

.. code-block:: text

    # cloud-paas XCache admission policy
    default bypass
    admit /store/mc/DS000042/NANOAOD
    bypass /store/data/Run2022

The longest matching directory wins; a file already on the cache's disk is always admitted (its blocks
are served from there); without a policy file (or before the first is written) every file is admitted,
as XCache does without a decision library. The library re-reads the file when it changes.

A bypassed read leaves no ``.cinfo`` file and no monitoring record, so the library appends each bypassed
open to a *bypass log* (``<epoch seconds> <path>`` per line) that :func:`drain_bypass_log` turns into
access records: the model keeps learning how popular bypassed datasets are, and admits them once they
earn it. No Airflow import here.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from airflow_cloud_paas.services.xcache.errors import XCacheError

#: the decision library's C++ source, shipped with the package
SOURCE = Path(__file__).with_name("admission") / "XrdPfcCloudPaaSAdmission.cc"
LIBRARY_NAME = "libXrdPfcCloudPaaSAdmission.so"
#: where :func:`build_library` keeps built libraries unless told otherwise
BUILD_DIR_ENV = "AIRFLOW_CLOUD_PAAS_XCACHE_PLUGIN_DIR"
DEFAULT_BUILD_DIR = "/var/tmp/cloud-paas-xcache-plugins"
#: the headers the library is compiled against (Debian: libxrootd-server-dev and libxrootd-dev)
HEADER = "XrdPfc/XrdPfcDecision.hh"
INCLUDE_DIRS = ("/usr/include/xrootd", "/usr/local/include/xrootd")
HEADER_HINT = "install the XRootD server headers (Debian/Ubuntu: apt-get install libxrootd-server-dev g++)"
POLICY_HEADER = "# cloud-paas XCache admission policy: written by airflow_cloud_paas, do not edit"


class AdmissionError(XCacheError):
    """The admission library cannot be built, or a policy or bypass log is invalid.

    :param message: what is wrong and how to fix it
    :param path: the file concerned
    :param line: the 1-based line number in that file
    """

    def __init__(self, message: str, *, path: str | os.PathLike | None = None, line: int | None = None) -> None:
        self.path = None if path is None else str(path)
        self.line = line
        where = [self.path] if self.path else []
        if line is not None:
            where.append(f"line {line}")
        super().__init__(f"{', '.join(where)}: {message}" if where else message)


# ------------------------------------------------------------------------------------------ policy
def _directory(value: str, *, where: str) -> str:
    text = str(value).strip()
    if not text.startswith("/") or any(c.isspace() for c in text) or "\0" in text:
        raise AdmissionError(f"{where}: a dataset must be an absolute directory without spaces, got {value!r}")
    text = text.rstrip("/") or "/"
    if "/../" in f"{text}/" or "/./" in f"{text}/":
        raise AdmissionError(f"{where}: '.' and '..' are not allowed in a dataset, got {value!r}")
    return text


@dataclass(frozen=True)
class AdmissionPolicy:
    """Which datasets a cache writes on a miss (the decision library's policy file).

    :param admit: directories whose files (and their subdirectories') are cached
    :param bypass: directories whose files are read from the origin without caching
    :param default_admit: what happens to a file no rule names
    """

    admit: frozenset[str] = field(default_factory=frozenset)
    bypass: frozenset[str] = field(default_factory=frozenset)
    default_admit: bool = False

    def __post_init__(self) -> None:
        admit = frozenset(_directory(d, where="admit") for d in self.admit)
        bypass = frozenset(_directory(d, where="bypass") for d in self.bypass)
        both = sorted(admit & bypass)
        if both:
            raise AdmissionError(f"a dataset cannot be both admitted and bypassed: {', '.join(both[:5])}")
        object.__setattr__(self, "admit", admit)
        object.__setattr__(self, "bypass", bypass)
        object.__setattr__(self, "default_admit", bool(self.default_admit))

    def decide(self, path: str) -> bool:
        """Return whether a missed file would be cached (the library's rule: the longest directory wins).

        :param path: the file's path
        """
        directory = path
        while "/" in directory:
            directory = directory.rpartition("/")[0]
            key = directory or "/"
            if key in self.admit:
                return True
            if key in self.bypass:
                return False
            if not directory:
                break
        return self.default_admit

    def render(self) -> str:
        """Return the policy file's text."""
        lines = [POLICY_HEADER, f"default {'admit' if self.default_admit else 'bypass'}"]
        lines += [f"admit {d}" for d in sorted(self.admit)]
        lines += [f"bypass {d}" for d in sorted(self.bypass)]
        return "\n".join(lines) + "\n"

    @classmethod
    def parse(cls, text: str, *, path: str | os.PathLike | None = None) -> AdmissionPolicy:
        """Read a policy file's text (strictly: a line the library would ignore is an error here).

        :param text: the file's text
        :param path: the file, for error messages
        """
        admit, bypass, default = set(), set(), True
        for number, raw in enumerate(text.splitlines(), 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            verb, _, arg = line.replace("\t", " ").partition(" ")  # the library splits on any blank
            arg = arg.strip()
            if verb == "default" and arg in ("admit", "bypass"):
                default = arg == "admit"
            elif verb in ("admit", "bypass") and arg:
                try:
                    (admit if verb == "admit" else bypass).add(_directory(arg, where=verb))
                except AdmissionError as err:
                    raise AdmissionError(str(err), path=path, line=number) from None
            else:
                raise AdmissionError(f"expected 'default admit|bypass', 'admit <dir>' or 'bypass <dir>', got {raw!r}",
                                     path=path, line=number)
        try:
            return cls(frozenset(admit), frozenset(bypass), default)
        except AdmissionError as err:
            raise AdmissionError(str(err), path=path) from None

    def write(self, target: str | os.PathLike) -> Path:
        """Replace the policy file atomically (the library never reads half a file); return its path.

        :param target: the policy file
        """
        target = Path(target)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
        try:
            with os.fdopen(fd, "w") as out:
                out.write(self.render())
            os.chmod(tmp, 0o644)  # the xrootd user reads it
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return target


def _expressible(name: str) -> bool:
    try:
        return _directory(name, where="dataset") == name
    except AdmissionError:
        return False


def policy_from_model(model: Any, now: float | None = None, *, cached: Iterable[str] = ()) -> AdmissionPolicy:
    """Return the policy that admits what the popularity model would write now, and bypasses the rest.

    A dataset is admitted when the model lets its files be written (:meth:`PopularityModel.may_write`:
    enough tasks and a rate above the write threshold); every other dataset the model knows is bypassed,
    and so is a dataset it has never seen (the default). Files already cached are served whatever the policy.
    A dataset whose name the policy file cannot hold (a relative name, a blank in it) is left to the default.

    :param model: a :class:`~airflow_cloud_paas.services.xcache.model.PopularityModel`
    :param now: the time to judge at (default: the latest access the model saw)
    :param cached: paths in the cache (their datasets are listed, so the file says what happens to them)
    """
    if now is None:
        now = model.now_s if model.now_s is not None else time.time()
    threshold = model.write_threshold(now)
    admit, bypass = set(), set()
    for name, st in model.datasets.items():
        if _expressible(name):
            (admit if model.may_write(st, now, threshold) is not None else bypass).add(name)
    for path in cached:
        name = path.rpartition("/")[0]
        if _expressible(name) and name not in admit:
            bypass.add(name)
    return AdmissionPolicy(frozenset(admit), frozenset(bypass), default_admit=False)


# ------------------------------------------------------------------------------------------ bypass log
@dataclass(frozen=True)
class BypassedOpen:
    """One open the cache did not cache (a line of the bypass log).

    :param time_s: when, epoch seconds
    :param path: the file
    """

    time_s: float
    path: str


def parse_bypass_log(text: str, *, path: str | os.PathLike | None = None) -> list[BypassedOpen]:
    """Return the opens a bypass log's text lists; a torn last line (being written) is skipped.

    :param text: the log's text
    :param path: the log, for error messages
    """
    found = []
    lines = text.split("\n")
    complete = lines[:-1]  # what follows the last newline is not finished yet
    for number, line in enumerate(complete, 1):
        if not line.strip():
            continue
        stamp, _, name = line.partition(" ")
        try:
            when = float(stamp)
        except ValueError:
            raise AdmissionError(f"expected '<epoch seconds> <path>', got {line[:200]!r}", path=path,
                                 line=number) from None
        if not name.startswith("/"):
            raise AdmissionError(f"expected an absolute path after the time, got {name[:200]!r}", path=path,
                                 line=number)
        found.append(BypassedOpen(when, name))
    return found


def drain_bypass_log(log_path: str | os.PathLike, *, grace_s: float = 0.05
                     ) -> Iterator[tuple[Path, list[BypassedOpen]]]:
    """Take the bypass log's records for ingestion: yield ``(file, opens)`` per file, then delete the file.

    The log is renamed first (the library opens it anew for every record, so new records start a new
    file); a taken file whose consumer raised is left in place and yielded again next time, so no
    record is lost (they are stored under idempotent keys).

    :param log_path: the bypass log the library appends to
    :param grace_s: seconds to wait after the rename before reading: a record whose writer opened the log
        just before it still lands in the taken file (the library writes each record right after opening)
    """
    log_path = Path(log_path)
    if log_path.exists():
        taken = log_path.with_name(f"{log_path.name}.taken-{time.time_ns()}")
        os.replace(log_path, taken)
        if grace_s > 0:
            time.sleep(grace_s)
    for taken in sorted(log_path.parent.glob(f"{log_path.name}.taken-*")):
        opens = parse_bypass_log(taken.read_text(errors="replace") + "\n", path=taken)
        yield taken, opens
        taken.unlink(missing_ok=True)


# ------------------------------------------------------------------------------------------ building
def _include_dir() -> str | None:
    for directory in INCLUDE_DIRS:
        if (Path(directory) / HEADER).is_file():
            return directory
    return None


#: how the library is compiled (part of its build key: a change rebuilds it)
CXX_FLAGS = ("-std=c++17", "-O2", "-fPIC", "-shared")
LIBRARIES = ("-lXrdUtils",)


def library_path(build_dir: str | os.PathLike | None = None, *, source: str | os.PathLike = SOURCE) -> Path:
    """Return where :func:`build_library` keeps the library built from ``source`` (built or not).

    :param build_dir: the build directory (default: ``$AIRFLOW_CLOUD_PAAS_XCACHE_PLUGIN_DIR`` or
        ``/var/tmp/cloud-paas-xcache-plugins``)
    :param source: the library's source
    """
    source = Path(source)
    try:
        code = source.read_bytes()
    except OSError:
        raise AdmissionError("the decision library's source is missing from the package", path=source) from None
    digest = hashlib.sha256(code + "\0".join(CXX_FLAGS + LIBRARIES).encode()).hexdigest()[:16]
    directory = Path(build_dir or os.environ.get(BUILD_DIR_ENV) or DEFAULT_BUILD_DIR).absolute()
    return directory / digest / LIBRARY_NAME


def check_build(build_dir: str | os.PathLike | None = None, *, compiler: str | None = None,
                source: str | os.PathLike = SOURCE) -> Path:
    """Raise :class:`AdmissionError` when the library is not built and cannot be; return its path.

    Nothing is compiled or written: this is what a backend checks before it starts anything.

    :param build_dir: as for :func:`build_library`
    :param compiler: the C++ compiler (default: ``$CXX`` or ``g++``)
    :param source: the library's source
    """
    target = library_path(build_dir, source=source)
    if target.is_file():
        return target
    if _include_dir() is None:
        raise AdmissionError(f"the XRootD header {HEADER} is not installed (looked in {', '.join(INCLUDE_DIRS)}): "
                             f"{HEADER_HINT}")
    cxx = compiler or os.environ.get("CXX") or "g++"
    if shutil.which(cxx) is None:
        raise AdmissionError(f"no C++ compiler '{cxx}' on PATH: {HEADER_HINT}")
    return target


def _open_to_all(directory: Path) -> None:
    # xrootd (another user) loads the library: it must enter every directory made here, and read the file
    mode = directory.stat().st_mode
    if mode & 0o055 != 0o055:
        try:
            directory.chmod(mode | 0o055)
        except OSError as err:
            raise AdmissionError(f"cannot open the build directory to other users ({err.strerror}): run "
                                 f"chmod go+rx on it, or choose another with ${BUILD_DIR_ENV}",
                                 path=directory) from None


def build_library(build_dir: str | os.PathLike | None = None, *, compiler: str | None = None,
                  source: str | os.PathLike = SOURCE) -> Path:
    """Compile the decision library (once per source version) and return its path.

    :param build_dir: where to keep it (default: ``$AIRFLOW_CLOUD_PAAS_XCACHE_PLUGIN_DIR`` or
        ``/var/tmp/cloud-paas-xcache-plugins``); it must be readable by the user xrootd runs as
    :param compiler: the C++ compiler (default: ``$CXX`` or ``g++``)
    :param source: the library's source
    """
    source = Path(source)
    target = check_build(build_dir, compiler=compiler, source=source)
    if target.is_file():
        return target
    include = _include_dir()
    cxx = compiler or os.environ.get("CXX") or "g++"
    directory = target.parent.parent
    made = not directory.exists()
    target.parent.mkdir(parents=True, exist_ok=True)
    if made:
        directory.chmod(0o755)
    _open_to_all(directory)
    _open_to_all(target.parent)
    # a name of its own: concurrent builders (processes or threads) never write the same file
    fd, partial_name = tempfile.mkstemp(prefix=f".{LIBRARY_NAME}.", dir=target.parent)
    os.close(fd)
    partial = Path(partial_name)
    command = [cxx, *CXX_FLAGS, f"-I{include}", "-o", str(partial), str(source), *LIBRARIES]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    except (OSError, subprocess.SubprocessError) as err:
        partial.unlink(missing_ok=True)
        raise AdmissionError(f"cannot run the compiler ({' '.join(command)}): {err}") from None
    if result.returncode != 0:
        partial.unlink(missing_ok=True)
        raise AdmissionError(f"compiling the decision library failed ({' '.join(command)}):\n"
                             f"{result.stderr.strip()[-2000:]}")
    partial.chmod(0o755)
    os.replace(partial, target)
    return target


def decisionlib_directive(library: str | os.PathLike, policy_file: str | os.PathLike,
                          bypass_log: str | os.PathLike | None = None) -> str:
    """Return the ``pfc.decisionlib`` line of an XCache configuration.

    :param library: the built library
    :param policy_file: the policy file it reads
    :param bypass_log: where it appends bypassed opens (None: nowhere)
    """
    words = [str(library), str(policy_file)] + ([str(bypass_log)] if bypass_log else [])
    for word in words:
        if not word.startswith("/") or any(c.isspace() for c in word):
            raise AdmissionError(f"the decision library's paths must be absolute and without spaces, got {word!r}")
    return "pfc.decisionlib " + " ".join(words)


def summary(policy: AdmissionPolicy) -> Mapping[str, Any]:
    """Return a short, JSON-able description of a policy (for XCom and logs).

    :param policy: the policy
    """
    return {"default": "admit" if policy.default_admit else "bypass", "admitted_datasets": len(policy.admit),
            "bypassed_datasets": len(policy.bypass)}
