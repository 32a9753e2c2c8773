"""Local drivers for XRootD: an origin (data server) and an XCache as real xrootd processes on loopback.

Registered with the local backend for ``cloud_paas.nodes.xrootd.Origin`` and ``cloud_paas.nodes.xrootd.XCache``.
xrootd is the distribution's (Debian: ``apt-get install xrootd-server xrootd-server-plugins``). It refuses to
run as root, so a backend running as root starts it with ``-R xrootd`` (the packages' user) and hands it
its directories. Those cannot live in the instance's work directory, whose parents (``$AIRFLOW_HOME``,
pytest's ``tmp_path``) the ``xrootd`` user usually cannot enter: each instance gets its own directory
under a runtime root (``$AIRFLOW_CLOUD_PAAS_XROOTD_ROOT``, default ``/var/tmp/cloud-paas-xrootd``)
holding ``xrootd.cfg``, ``admin/`` and the scratch ``data/`` (origin) or ``cache/`` (XCache). A small
shell wrapper removes that directory when xrootd ends, so ``delete`` leaves nothing behind; a directory
named by the ``data_dir``/``cache_dir`` property is the user's and is never removed.

xrootd listens on every interface (5.5 cannot bind one address) but admits loopback clients only
(``xrd.allow host 127.0.0.1`` and ``[::1]``). It logs to standard error, which the backend keeps in ``process.log``.

An XCache with ``admission: model`` loads the project's decision library (:mod:`~.admission`), built once
with the distribution's XRootD headers (Debian: ``libxrootd-server-dev`` and ``g++``) into a build directory
the ``xrootd`` user can read. Its policy file (``admission.policy``, written by the smart manager; none at
start, so every file is admitted) and its bypass log (``bypass.log``, appended to by xrootd) live in the
instance's runtime directory, which belongs to the ``xrootd`` user.
"""

from __future__ import annotations

import functools
import grp
import logging
import os
import pwd
import shutil
import socket
import stat
import struct
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from airflow_cloud_paas.backends.base import ResourceSpec
from airflow_cloud_paas.backends.local import PROVIDER, Launch, LocalDriver, ProcessRecord
from airflow_cloud_paas.exceptions import ResourceCreateError, UnsupportedNodeError
from airflow_cloud_paas.services.xcache import admission
from airflow_cloud_paas.services.xcache.config import (
    XRootDConfigError,
    admission_mode,
    origin_settings,
    render_origin_config,
    render_xcache_config,
    xcache_settings,
)

log = logging.getLogger(__name__)

ORIGIN_TYPE = "cloud_paas.nodes.xrootd.Origin"
XCACHE_TYPE = "cloud_paas.nodes.xrootd.XCache"
#: where instances' directories are made when the driver is not given one
RUNTIME_ROOT_ENV = "AIRFLOW_CLOUD_PAAS_XROOTD_ROOT"
DEFAULT_RUNTIME_ROOT = "/var/tmp/cloud-paas-xrootd"
#: the user xrootd switches to when started by root (the one Debian's and EPEL's packages create)
DEFAULT_USER = "xrootd"
LOOPBACK = "127.0.0.1"
#: the only clients xrootd admits (by address: the name of 127.0.0.1 differs between systems)
LOOPBACK_CLIENTS = ("127.0.0.1", "[::1]")
#: in an XCache's runtime directory with ``admission: model``: the manager's policy, the library's log
POLICY_FILE = "admission.policy"
BYPASS_LOG = "bypass.log"
_INSTALL_HINT = "install XRootD (Debian/Ubuntu: apt-get install xrootd-server xrootd-server-plugins)"
# Remove the instance's runtime directory (and its node's and deployment's, once empty) when xrootd has
# ended, however it ended. The shell traps the stop signal so that it outlives xrootd (it runs the trap only
# after its foreground child exits); a trap with a handler, unlike an ignored signal, is not inherited.
_WRAPPER = (
    'rt=$1; shift; trap : TERM INT HUP; "$@"; rc=$?; rm -rf -- "$rt"; '
    'rmdir -- "${rt%/*}" "${rt%/*/*}" 2>/dev/null; exit $rc'
)


def _where(spec: ResourceSpec) -> str:
    return f"{spec.deployment_id}/{spec.node_name}"


@functools.cache
def xrootd_version(executable: str = "xrootd") -> str | None:
    """Return the installed xrootd's version (``v5.5.3``), or None when it cannot be run.

    :param executable: the xrootd program
    """
    try:
        done = subprocess.run([executable, "-v"], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    text = (done.stdout + done.stderr).strip()
    return text.splitlines()[-1].strip() if text else None


def _shared_library_present(name: str) -> bool | None:
    """Return whether the dynamic linker knows ``lib<name>-5.so``/``lib<name>.so`` (None: cannot tell)."""
    try:
        done = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    if done.returncode != 0:
        return None
    return f"lib{name}-5.so" in done.stdout or f"lib{name}.so" in done.stdout


def xrootd_ping(host: str, port: int, timeout: float = 1.0) -> bool:
    """Return whether an xroot server answers the protocol's handshake on host:port (never raise).

    The client's 20-byte handshake gets a 16-byte answer, status 0, from a server that serves the
    protocol: what every XRootD client does first, without its library.

    :param host: the server
    :param port: its port
    :param timeout: seconds to wait
    """
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(struct.pack(">5i", 0, 0, 0, 4, 2012))
            answer = b""
            while len(answer) < 16:
                chunk = sock.recv(16 - len(answer))
                if not chunk:
                    return False
                answer += chunk
    except OSError:
        return False
    _stream, status, length = struct.unpack(">2sHI", answer[:8])
    return status == 0 and length == 8


def _reachable(path: Path, user: pwd.struct_passwd, *, write: bool) -> bool:
    """Return whether ``user`` may enter every parent of ``path`` and read (or write) it (mode bits only)."""
    groups = {user.pw_gid} | {g.gr_gid for g in _groups_of(user.pw_name)}

    def allowed(info: os.stat_result, bits: tuple[int, int, int]) -> bool:
        owner, group, other = bits
        if info.st_uid == user.pw_uid:
            return bool(info.st_mode & owner)
        if info.st_gid in groups:
            return bool(info.st_mode & group)
        return bool(info.st_mode & other)

    try:
        resolved = path.resolve(strict=True)
        for parent in reversed(resolved.parents):
            if not allowed(parent.stat(), (stat.S_IXUSR, stat.S_IXGRP, stat.S_IXOTH)):
                return False
        info = resolved.stat()
    except OSError:
        return False
    wanted = (stat.S_IWUSR, stat.S_IWGRP, stat.S_IWOTH) if write else (stat.S_IRUSR, stat.S_IRGRP, stat.S_IROTH)
    return allowed(info, wanted) and allowed(info, (stat.S_IXUSR, stat.S_IXGRP, stat.S_IXOTH))


def _groups_of(name: str) -> list[grp.struct_group]:
    return [g for g in grp.getgrall() if name in g.gr_mem]


class _XRootDDriver(LocalDriver):
    """What the origin and XCache drivers share: runtime directories, the user switch, the process."""

    role: ClassVar[str]  # origin or xcache: the ROLE of the VM script
    scratch: ClassVar[str]  # the instance's scratch directory when the property is empty
    dir_property: ClassVar[str]

    def __init__(self, runtime_root: str | os.PathLike | None = None, *, user: str = DEFAULT_USER,
                 executable: str = "xrootd") -> None:
        self._runtime_root = runtime_root
        self.user = user
        self.executable = executable

    # ------------------------------------------------------------------ environment
    @property
    def runtime_root(self) -> Path:
        """Return the directory holding the instances' directories."""
        chosen = self._runtime_root or os.environ.get(RUNTIME_ROOT_ENV) or DEFAULT_RUNTIME_ROOT
        return Path(chosen).expanduser().absolute()

    def runtime_dir(self, spec: ResourceSpec) -> Path:
        """Return one instance's directory (config, admin socket, scratch data).

        :param spec: the resource wanted
        """
        return self.runtime_root / spec.deployment_id / spec.node_name / str(spec.index)

    @property
    def switches_user(self) -> bool:
        """Return whether xrootd is started as root and must switch to :attr:`user`."""
        return os.geteuid() == 0

    def _account(self) -> pwd.struct_passwd | None:
        if not self.switches_user:
            return None
        return pwd.getpwnam(self.user)

    def check(self, spec: ResourceSpec) -> None:
        """Raise :class:`UnsupportedNodeError` without xrootd, without its user, or for a bad property.

        :param spec: the resource wanted (requirements may be empty)
        """
        if shutil.which(self.executable) is None:
            raise UnsupportedNodeError(
                f"node '{spec.node_name}' ({spec.node_type}) needs xrootd, which is not installed: {_INSTALL_HINT}",
                provider=PROVIDER, resource=_where(spec),
            )
        if self.switches_user:
            try:
                pwd.getpwnam(self.user)
            except KeyError:
                raise UnsupportedNodeError(
                    f"node '{spec.node_name}': xrootd refuses to run as root and cannot switch to user "
                    f"'{self.user}', which does not exist; {_INSTALL_HINT} (the package creates the user), "
                    "or run the local backend as an unprivileged user",
                    provider=PROVIDER, resource=_where(spec),
                ) from None
        try:
            self._settings(spec, port=1094, directory="/check", origin="127.0.0.1:1094")
        except XRootDConfigError as err:
            raise UnsupportedNodeError(
                f"node '{spec.node_name}' ({spec.node_type}): {err}", provider=PROVIDER, resource=_where(spec)
            ) from err

    def _settings(self, spec: ResourceSpec, *, port: int, directory: str, origin: str | None = None,
                  admin_dir: str | None = None):
        raise NotImplementedError

    def ports(self, spec: ResourceSpec) -> dict[str, int]:
        """Return the xroot port (0 = pick a free one).

        :param spec: the resource wanted
        """
        return {"port": int(spec.properties.get("port") or 0)}

    # ------------------------------------------------------------------ directories
    def _prepare_runtime(self, spec: ResourceSpec, account: pwd.struct_passwd | None) -> Path:
        root = self.runtime_root
        root.mkdir(parents=True, exist_ok=True)
        info = root.lstat()
        if stat.S_ISLNK(info.st_mode) or info.st_uid != os.geteuid():
            raise ResourceCreateError(
                f"the XRootD runtime directory {root} is a link or belongs to another user; remove it or set "
                f"${RUNTIME_ROOT_ENV} to a directory of your own",
                provider=PROVIDER, resource=_where(spec),
            )
        runtime = self.runtime_dir(spec)
        # a directory left by a killed instance (its wrapper could not clean up): start afresh
        shutil.rmtree(runtime, ignore_errors=True)
        for directory in (*reversed(runtime.relative_to(root).parents), runtime.relative_to(root)):
            path = root / directory
            path.mkdir(exist_ok=True)
            path.chmod(0o755)  # xrootd must pass through every level
        root.chmod(root.stat().st_mode | stat.S_IXOTH | stat.S_IROTH)
        (runtime / "admin").mkdir()
        if account is not None:
            os.chown(runtime, account.pw_uid, account.pw_gid)
            os.chown(runtime / "admin", account.pw_uid, account.pw_gid)
        if account is not None and not _reachable(runtime, account, write=True):
            raise ResourceCreateError(
                f"user '{self.user}' cannot reach {runtime}: a parent directory is closed to it; set "
                f"${RUNTIME_ROOT_ENV} to a directory under one it can enter (e.g. /var/tmp/cloud-paas-xrootd)",
                provider=PROVIDER, resource=_where(spec),
            )
        return runtime

    def _own_directory(self, spec: ResourceSpec, runtime: Path, account: pwd.struct_passwd | None,
                       *, write: bool) -> Path:
        """Return the directory served or cached to: the property's, else the instance's scratch one."""
        given = spec.properties.get(self.dir_property)
        if not given:
            path = runtime / self.scratch
            path.mkdir()
            if account is not None:
                os.chown(path, account.pw_uid, account.pw_gid)
            return path
        path = Path(str(given))
        if not path.exists():
            path.mkdir(parents=True)
            if account is not None:
                os.chown(path, account.pw_uid, account.pw_gid)
        if account is not None and not _reachable(path, account, write=write):
            fix = f"chown -R {self.user}: {path}" if write else f"chmod -R o+rX {path}"
            raise ResourceCreateError(
                f"property '{self.dir_property}': user '{self.user}' cannot {'write' if write else 'read'} {path} "
                f"(or enter a parent directory); fix it, e.g. {fix}",
                provider=PROVIDER, resource=_where(spec),
            )
        return path

    def _launch(self, spec: ResourceSpec, runtime: Path, config: str, port: int,
                account: pwd.struct_passwd | None, data: Mapping[str, Any]) -> Launch:
        config_file = runtime / "xrootd.cfg"
        config_file.write_text(config)
        config_file.chmod(0o644)
        xrootd = [shutil.which(self.executable) or self.executable]
        if account is not None:
            xrootd += ["-R", self.user]
        xrootd += ["-c", str(config_file), "-p", str(port), "-n", f"{spec.node_name}-{spec.index}"]
        argv = ("sh", "-c", _WRAPPER, "xrootd-wrapper", str(runtime), *xrootd)
        return Launch(argv=argv, data={"runtime_dir": str(runtime), "config_file": str(config_file), **data})

    # ------------------------------------------------------------------ state
    def ready(self, record: ProcessRecord) -> bool:
        """Return whether xrootd answers the xroot handshake on its port.

        :param record: the instance's record
        """
        return xrootd_ping(LOOPBACK, record.ports["port"])

    def _attributes(self, record: ProcessRecord) -> dict[str, Any]:
        port = record.ports["port"]
        return {
            "root_url": f"root://{LOOPBACK}:{port}",
            "endpoint": f"{LOOPBACK}:{port}",
            "host": LOOPBACK,
            "port": port,
            "config_file": record.data["config_file"],
            "runtime_dir": record.data["runtime_dir"],
            "xrootd_version": xrootd_version(self.executable),
        }


class XRootDOriginDriver(_XRootDDriver):
    """Run an XRootD origin (data server) on loopback, exporting paths of its data directory.

    :param runtime_root: where instances' directories are made (default ``$AIRFLOW_CLOUD_PAAS_XROOTD_ROOT``,
        else ``/var/tmp/cloud-paas-xrootd``); the ``xrootd`` user must be able to enter it
    :param user: the user xrootd switches to when the backend runs as root
    :param executable: the xrootd program
    """

    role = "origin"
    scratch = "data"
    dir_property = "data_dir"

    def _settings(self, spec: ResourceSpec, *, port: int, directory: str, origin: str | None = None,
                  admin_dir: str | None = None):
        return origin_settings(spec.properties, data_dir=directory, port=port, admin_dir=admin_dir,
                               allow_hosts=LOOPBACK_CLIENTS)

    def command(self, spec: ResourceSpec, work_dir: Path, ports: Mapping[str, int]) -> Launch:
        """Write the origin's configuration and return how to start xrootd with it.

        :param spec: the resource wanted
        :param work_dir: the instance's directory (its process.log)
        :param ports: the chosen ports
        """
        account = self._account()
        runtime = self._prepare_runtime(spec, account)
        data_dir = self._own_directory(spec, runtime, account, write=False)
        settings = self._settings(spec, port=ports["port"], directory=str(data_dir),
                                  admin_dir=str(runtime / "admin"))
        for export in settings.exports:  # an exported path that does not exist answers "no such file"
            exported = data_dir / export.lstrip("/")
            if not exported.exists():
                exported.mkdir(parents=True)
                if account is not None and not spec.properties.get("data_dir"):
                    os.chown(exported, account.pw_uid, account.pw_gid)
        return self._launch(spec, runtime, render_origin_config(settings), ports["port"], account,
                            {"data_dir": str(data_dir), "exports": list(settings.exports)})

    def attributes(self, spec: ResourceSpec, record: ProcessRecord) -> dict[str, Any]:
        """Return root_url, endpoint, host, port, data_dir, exports, config_file and xrootd_version.

        :param spec: the resource wanted
        :param record: the instance's record
        """
        return {**self._attributes(record), "data_dir": record.data["data_dir"], "exports": record.data["exports"]}


class XCacheDriver(_XRootDDriver):
    """Run an XCache on loopback in front of its origin: the required origin node's, or the ``origin`` property.

    :param runtime_root: where instances' directories are made (default ``$AIRFLOW_CLOUD_PAAS_XROOTD_ROOT``,
        else ``/var/tmp/cloud-paas-xrootd``); the ``xrootd`` user must be able to enter it
    :param user: the user xrootd switches to when the backend runs as root
    :param executable: the xrootd program
    :param plugin_dir: where the admission library is built (default ``$AIRFLOW_CLOUD_PAAS_XCACHE_PLUGIN_DIR``,
        else ``/var/tmp/cloud-paas-xcache-plugins``); the ``xrootd`` user must be able to read it
    """

    role = "xcache"
    scratch = "cache"
    dir_property = "cache_dir"

    def __init__(self, runtime_root: str | os.PathLike | None = None, *, user: str = DEFAULT_USER,
                 executable: str = "xrootd", plugin_dir: str | os.PathLike | None = None) -> None:
        super().__init__(runtime_root, user=user, executable=executable)
        self.plugin_dir = plugin_dir

    def check(self, spec: ResourceSpec) -> None:
        """Raise :class:`UnsupportedNodeError` without xrootd, its user, the cache plugin, or for a bad property.

        With ``admission: model``, also without the XRootD headers or a C++ compiler (unless the decision
        library is already built).

        :param spec: the resource wanted (requirements may be empty)
        """
        super().check(spec)
        for library in ("XrdPss", "XrdPfc"):
            if _shared_library_present(library) is False:
                raise UnsupportedNodeError(
                    f"node '{spec.node_name}' ({spec.node_type}) needs XRootD's proxy and cache plugins "
                    f"(lib{library}-5.so), which are not installed: {_INSTALL_HINT}",
                    provider=PROVIDER, resource=_where(spec),
                )
        if self._admission(spec) == "model":
            try:
                admission.check_build(self.plugin_dir)
            except admission.AdmissionError as err:
                raise UnsupportedNodeError(
                    f"node '{spec.node_name}' ({spec.node_type}), property 'admission': 'model' needs the "
                    f"cloud-paas decision library, which cannot be built here: {err}",
                    provider=PROVIDER, resource=_where(spec),
                ) from err

    @staticmethod
    def _admission(spec: ResourceSpec) -> str:
        try:
            return admission_mode(spec.properties.get("admission"))
        except XRootDConfigError as err:
            raise UnsupportedNodeError(
                f"node '{spec.node_name}' ({spec.node_type}): {err}", provider=PROVIDER, resource=_where(spec)
            ) from err

    def admission_paths(self, spec: ResourceSpec) -> dict[str, str] | None:
        """Return the decision library, policy file and bypass log of an ``admission: model`` cache, else None.

        The library's path is where :func:`~.admission.build_library` puts it; nothing is built here.

        :param spec: the resource wanted
        """
        if self._admission(spec) != "model":
            return None
        runtime = self.runtime_dir(spec)
        try:
            library = admission.library_path(self.plugin_dir)
        except admission.AdmissionError as err:
            raise UnsupportedNodeError(f"node '{spec.node_name}': {err}", provider=PROVIDER,
                                       resource=_where(spec)) from err
        return {"admission_library": str(library), "admission_policy": str(runtime / POLICY_FILE),
                "bypass_log": str(runtime / BYPASS_LOG)}

    def _settings(self, spec: ResourceSpec, *, port: int, directory: str, origin: str | None = None,
                  admin_dir: str | None = None):
        return xcache_settings(spec.properties, origin=origin, cache_dir=directory, port=port, admin_dir=admin_dir,
                               allow_hosts=LOOPBACK_CLIENTS, **(self.admission_paths(spec) or {}))

    def _build_admission(self, spec: ResourceSpec, account: pwd.struct_passwd | None) -> Path:
        """Build (or find) the decision library and check that xrootd's user can load it."""
        try:
            library = admission.build_library(self.plugin_dir)
        except admission.AdmissionError as err:
            raise ResourceCreateError(f"node '{spec.node_name}', property 'admission': {err}", provider=PROVIDER,
                                      resource=f"{_where(spec)}/{spec.index}") from err
        if account is not None and not _reachable(library, account, write=False):
            raise ResourceCreateError(
                f"node '{spec.node_name}', property 'admission': user '{self.user}' cannot read the decision "
                f"library {library} (or enter a parent directory); set ${admission.BUILD_DIR_ENV} to a directory "
                "it can enter (e.g. /var/tmp/cloud-paas-xcache-plugins)",
                provider=PROVIDER, resource=f"{_where(spec)}/{spec.index}",
            )
        return library

    @staticmethod
    def _origin(spec: ResourceSpec) -> str | None:
        if spec.properties.get("origin"):
            return None  # the property wins; settings read it
        origins = spec.requirements.get("origin") or ()
        endpoint = origins[0].attributes.get("endpoint") if origins else None
        if not endpoint:
            raise ResourceCreateError(
                f"node '{spec.node_name}' has no origin: set its origin property (host:port) or require an Origin "
                f"node that is deployed first (found {len(origins)} origin resource(s) with an endpoint attribute)",
                provider=PROVIDER, resource=f"{_where(spec)}/{spec.index}",
            )
        return str(endpoint)

    def command(self, spec: ResourceSpec, work_dir: Path, ports: Mapping[str, int]) -> Launch:
        """Write the cache's configuration and return how to start xrootd with it.

        :param spec: the resource wanted
        :param work_dir: the instance's directory (its process.log)
        :param ports: the chosen ports
        """
        origin = self._origin(spec)
        account = self._account()
        if self._admission(spec) == "model":  # before the runtime directory: a failed build leaves nothing behind
            self._build_admission(spec, account)
        # a fresh runtime directory: no policy file yet (every file admitted until the manager writes one)
        runtime = self._prepare_runtime(spec, account)
        cache_dir = self._own_directory(spec, runtime, account, write=True)
        settings = self._settings(spec, port=ports["port"], directory=str(cache_dir), origin=origin,
                                  admin_dir=str(runtime / "admin"))
        data = {
            "cache_dir": str(cache_dir),
            "origin": settings.origin,
            "monitor": settings.monitor,
            "block_size": settings.block_size,
            "ram": settings.ram,
            "allow_commands": settings.allow_commands,
            "exports": list(settings.exports),
            "admission": "model" if settings.admission_library else "all",
            "admission_library": settings.admission_library,
            "admission_policy": settings.admission_policy,
            "bypass_log": settings.bypass_log,
        }
        return self._launch(spec, runtime, render_xcache_config(settings), ports["port"], account, data)

    def attributes(self, spec: ResourceSpec, record: ProcessRecord) -> dict[str, Any]:
        """Return root_url, endpoint, host, port, cache_dir, origin, monitor, block_size, ram and more.

        With ``admission: model``, ``admission_policy`` (the file the smart manager writes) and ``bypass_log``
        (the opens the cache did not write) name files in the instance's runtime directory; otherwise None.

        :param spec: the resource wanted
        :param record: the instance's record
        """
        keys = ("cache_dir", "origin", "monitor", "block_size", "ram", "allow_commands", "exports")
        optional = {"admission": "all", "admission_policy": None, "bypass_log": None}
        return {**self._attributes(record), **{k: record.data[k] for k in keys},
                **{k: record.data.get(k, default) for k, default in optional.items()}}
