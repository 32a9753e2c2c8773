"""The local backend: each node instance is a real process on this machine, its state kept on disk.

Every instance lives in ``<work_root>/<deployment_id>/<node_name>/<index>/`` with a
``resource.json`` (pid, process start time, argv, ports, attributes, state, tags) and a
``process.log``. A retried task, a new process, reads that file and finds what an earlier attempt
made: ``create`` of a running instance starts nothing, a dead one is restarted on the same ports.
Processes start in their own session (``start_new_session=True``) so they outlive the Airflow task
that made them, and ``delete`` stops the whole process group.

What runs for a node type is decided by a *local driver* (Libcloud's driver idea at node level):
``tosca.nodes.Compute`` and its descendants are the local host itself (no process); Spark masters
and workers come from :mod:`airflow_cloud_paas.services.spark.local`, XRootD from
:mod:`airflow_cloud_paas.services.xcache.local`, SLURM from
:mod:`airflow_cloud_paas.services.slurm.local`. Register more with :func:`register_local_driver`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import functools
import importlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import psutil

from airflow_cloud_paas.backends.base import Backend, Resource, ResourceSpec, ResourceState, poll_until
from airflow_cloud_paas.exceptions import (
    BackendError,
    ResourceCreateError,
    ResourceTimeoutError,
    UnsupportedNodeError,
)

log = logging.getLogger(__name__)

PROVIDER = "local"
RECORD_FILE = "resource.json"
LOG_FILE = "process.log"
#: where the work root is read from when none is given (e.g. by ``get_backend("local")`` in a task)
WORK_ROOT_ENV = "AIRFLOW_CLOUD_PAAS_LOCAL_ROOT"

# Record states written to resource.json (native to this backend, mapped by ``state_map``).
_CREATING = "creating"
_RUNNING = "running"


@dataclass(frozen=True)
class Launch:
    """How to start the process of one node instance.

    ``argv`` is written to ``resource.json`` and ``env`` is not: pass secrets through ``env``.

    :param argv: the command line
    :param env: variables added to this process's environment
    :param stop_signal: the signal asking the process to stop gracefully (name, e.g. ``SIGTERM``)
    :param data: driver-private values kept in ``resource.json`` (read back by ``ready``/``before_stop``)
    """

    argv: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)
    stop_signal: str = "SIGTERM"
    data: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class ProcessRecord:
    """What ``resource.json`` holds for one node instance."""

    deployment_id: str
    node_name: str
    index: int
    node_type: str
    resource_id: str
    state: str
    work_dir: str
    log_file: str
    pid: int | None = None
    create_time: float | None = None  # the process's start time (epoch seconds), for people and old records
    # The process's identity: its start in clock ticks since boot, and that boot. Exact, unlike
    # ``create_time`` (whole-second boot time + 10 ms ticks): a reused pid has another tick or boot.
    start_ticks: int | None = None
    boot_id: str | None = None
    argv: list[str] = field(default_factory=list)
    ports: dict[str, int] = field(default_factory=dict)
    attributes: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    type_hierarchy: list[str] = field(default_factory=list)  # to find its driver again at delete time
    depends_on: list[str] = field(default_factory=list)  # nodes it requires: deleted after it
    stop_signal: str = "SIGTERM"
    created_at: float = 0.0
    ready_at: float | None = None
    restarts: int = 0

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ProcessRecord:
        """Build a record from the parsed ``resource.json``.

        :param data: the parsed file
        """
        known = cls.__dataclass_fields__
        return cls(**{k: v for k, v in data.items() if k in known})


class LocalDriver:
    """What the local backend runs for a node type; the defaults describe a process-less node.

    Subclass it and register an instance with :func:`register_local_driver`.

    A driver whose ``runs_to_completion`` is true starts a job, not a service: its process is meant to end, and
    ``ready`` says whether it ended well (e.g. a result file); the instance is then RUNNING with no process (its
    work done, its attributes kept), a deferrable wait (:meth:`LocalBackend.request`) returns at once, and
    :meth:`LocalBackend.describe` reports the job's end when it comes.
    """

    #: the process is a job that ends (``ready``: it ended well), not a service that keeps running
    runs_to_completion: bool = False

    def check(self, spec: ResourceSpec) -> None:
        """Raise :class:`UnsupportedNodeError` if this node's properties cannot be honoured here.

        :param spec: the resource wanted (requirements may be empty)
        """

    def ports(self, spec: ResourceSpec) -> dict[str, int]:
        """Return the ports the instance needs, name -> number (0 = pick a free port).

        :param spec: the resource wanted
        """
        return {}

    def command(self, spec: ResourceSpec, work_dir: Path, ports: Mapping[str, int]) -> Launch | None:
        """Return how to start the instance's process, or None when no process is needed.

        :param spec: the resource wanted
        :param work_dir: the instance's own directory (the process's cwd)
        :param ports: the ports chosen, name -> number
        """
        return None

    def ready(self, record: ProcessRecord) -> bool:
        """Return whether the started process serves (the readiness probe); never raise for "not yet".

        :param record: the instance's record (pid, ports, data)
        """
        return True

    def attributes(self, spec: ResourceSpec, record: ProcessRecord) -> dict[str, Any]:
        """Return the TOSCA attributes of the ready instance.

        :param spec: the resource wanted
        :param record: the instance's record
        """
        return {}

    def before_stop(self, record: ProcessRecord) -> None:
        """Drain the instance before its stop signal (e.g. decommission a worker); best effort.

        :param record: the instance's record
        """

    def after_stop(self, record: ProcessRecord) -> None:
        """Clean up what outlives the instance's processes (e.g. daemons they left in other sessions); best effort.

        Called once its process group is gone, on every stop of a recorded instance (graceful or not).

        :param record: the instance's record
        """


class ComputeDriver(LocalDriver):
    """A Compute node on the local backend is the local host: a work directory, no process."""

    def attributes(self, spec: ResourceSpec, record: ProcessRecord) -> dict[str, Any]:
        """Return the host's addresses (loopback: everything binds to 127.0.0.1).

        :param spec: the resource wanted
        :param record: the instance's record
        """
        return {"public_address": "127.0.0.1", "private_address": "127.0.0.1"}


class ElasticClusterDriver(LocalDriver):
    """INDIGO's ``tosca.nodes.indigo.ElasticCluster`` (CLUES) on the local backend: nothing to run.

    What CLUES did (power workers on and off with the queue) is the elastic engine's job here: the scaling DAGs
    scale the cluster's ``wn`` node with the ``clues`` policy (:mod:`airflow_cloud_paas.scaling.elastic`).
    """

    def attributes(self, spec: ResourceSpec, record: ProcessRecord) -> dict[str, Any]:
        """Return who scales the cluster.

        :param spec: the resource wanted
        :param record: the instance's record
        """
        return {"elasticity": "cloud_paas_elastic_scaling (clues policy)"}


# node type -> driver, or "module:attribute" imported on first use (keeps optional packages lazy)
_DRIVERS: dict[str, LocalDriver | str] = {
    "tosca.nodes.Compute": "airflow_cloud_paas.backends.local:ComputeDriver",
    "cloud_paas.nodes.spark.Master": "airflow_cloud_paas.services.spark.local:SparkMasterDriver",
    "cloud_paas.nodes.spark.Worker": "airflow_cloud_paas.services.spark.local:SparkWorkerDriver",
    "cloud_paas.nodes.xrootd.Origin": "airflow_cloud_paas.services.xcache.local:XRootDOriginDriver",
    "cloud_paas.nodes.xrootd.XCache": "airflow_cloud_paas.services.xcache.local:XCacheDriver",
    "cloud_paas.nodes.slurm.Controller": "airflow_cloud_paas.services.slurm.local:SlurmControllerDriver",
    "cloud_paas.nodes.slurm.Worker": "airflow_cloud_paas.services.slurm.local:SlurmWorkerDriver",
    # INDIGO's elastic-cluster types deploy the same way (their Ansible roles are not run)
    "tosca.nodes.indigo.ElasticCluster": "airflow_cloud_paas.backends.local:ElasticClusterDriver",
    "tosca.nodes.indigo.LRMS.FrontEnd.Slurm": "airflow_cloud_paas.services.slurm.local:SlurmControllerDriver",
    "tosca.nodes.indigo.LRMS.WorkerNode.Slurm": "airflow_cloud_paas.services.slurm.local:SlurmWorkerDriver",
    "cloud_paas.nodes.galaxy.Portal": "airflow_cloud_paas.services.galaxy.local:GalaxyPortalDriver",
    "cloud_paas.nodes.galaxy.Flavour": "airflow_cloud_paas.services.galaxy.local:GalaxyFlavourDriver",
    # INDIGO's Laniakea types (their Ansible roles are not run)
    "tosca.nodes.indigo.GalaxyPortal": "airflow_cloud_paas.services.galaxy.local:GalaxyPortalDriver",
    "tosca.nodes.indigo.GalaxyShedTool": "airflow_cloud_paas.services.galaxy.local:GalaxyFlavourDriver",
    "tosca.nodes.indigo.GalaxyWN": "airflow_cloud_paas.services.galaxy.local:GalaxyHelperDriver",
    "tosca.nodes.indigo.GalaxyReferenceData": "airflow_cloud_paas.services.galaxy.local:GalaxyHelperDriver",
    "tosca.nodes.indigo.LRMS.FrontEnd.Local": "airflow_cloud_paas.services.galaxy.local:GalaxyHelperDriver",
    "cloud_paas.nodes.deepaas.ModelServer": "airflow_cloud_paas.services.training.serving:ModelServerDriver",
    "cloud_paas.nodes.deepaas.TrainingJob": "airflow_cloud_paas.services.training.local:TrainingJobDriver",
}

# Popen objects of the processes this Python process started, so they are reaped (no zombies).
_CHILDREN: dict[int, subprocess.Popen] = {}


def property_port(properties: Mapping[str, Any], name: str = "port") -> int:
    """Return the port a node's property asks for; 0 (a free one) when it is absent, 0 or not a port number.

    :param properties: the node's properties
    :param name: the property
    """
    port = properties.get(name) or 0
    return int(port) if isinstance(port, int) and not isinstance(port, bool) and 0 < port < 65536 else 0


def register_local_driver(node_type: str, driver: LocalDriver | str) -> None:
    """Make the local backend run ``driver`` for ``node_type`` and every type derived from it.

    :param node_type: a TOSCA node type name
    :param driver: a driver instance, or ``"module:attribute"`` naming a driver class or instance
    """
    _DRIVERS[node_type] = driver


def _resolve_driver(entry: LocalDriver | str) -> LocalDriver:
    if not isinstance(entry, str):
        return entry
    module_name, _, attr = entry.partition(":")
    target = getattr(importlib.import_module(module_name), attr)
    return target() if isinstance(target, type) else target


def _lookup(table: Mapping[str, LocalDriver | str], types: tuple[str, ...]) -> LocalDriver | None:
    for type_name in types:  # most specific first: a driver for a subtype wins over its parent's
        if type_name in table:
            return _resolve_driver(table[type_name])
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # as servers do: a port in TIME_WAIT after its server died is free, a listened-on one is not
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


# Older records have only ``create_time``: a later process differs by at least one 10 ms clock tick.
_CREATE_TIME_TOLERANCE = 0.005


@functools.cache
def _boot_id() -> str | None:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:  # not Linux
        return None


def _start_ticks(pid: int) -> int | None:
    """Return when a process started, in clock ticks since boot (Linux); None if gone or not Linux."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and ')': fields 3... follow its last ')'.
    return int(stat[stat.rindex(b")") + 1 :].split()[19])  # field 22, starttime


def _reap_children() -> None:
    for child in list(_CHILDREN.values()):
        child.poll()  # an exited child of ours is reaped instead of lingering as a zombie


def _wait_gone(procs: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    """Wait until the processes are gone or zombies (a zombie of another parent never disappears); return the rest."""
    pending = list(procs)

    def still_running() -> list[psutil.Process]:
        nonlocal pending
        _reap_children()
        still = []
        for proc in pending:
            try:
                if proc.status() != psutil.STATUS_ZOMBIE:
                    still.append(proc)
            except psutil.NoSuchProcess:
                continue
        pending = still
        return pending

    try:
        return poll_until(still_running, lambda left: not left, timeout=timeout, interval=0.05,
                          what=f"processes {sorted(p.pid for p in procs)} to stop", provider=PROVIDER, resource=None)
    except ResourceTimeoutError:
        return pending


def _check_name(value: str, what: str) -> str:
    if not value or value in (".", "..") or "/" in value or "\0" in value or value.startswith("."):
        raise BackendError(
            f"{what} {value!r} cannot name a directory; use letters, digits, '-', '_' or '.' (not first)",
            provider=PROVIDER,
        )
    return value


def _log_tail(path: Path, limit: int = 2000) -> str:
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - limit))
            return fh.read().decode("utf-8", "replace").strip()
    except OSError:
        return "(no log)"


class LocalBackend(Backend):
    """Run node instances as real processes on this machine, with their state on disk.

    :param work_root: the directory holding one sub-directory per deployment (default: the
        ``AIRFLOW_CLOUD_PAAS_LOCAL_ROOT`` variable, else ``$AIRFLOW_HOME/cloud_paas/work``)
    :param drivers: node type -> driver for this backend only (override the global registry)
    :param ready_timeout: seconds an instance may take to become ready
    :param job_timeout: seconds a job (a driver that ``runs_to_completion``) may take to end, when waited for
    :param stop_timeout: seconds a process may take to stop after its stop signal before SIGKILL
    :param poll_interval: seconds between readiness probes
    """

    name: ClassVar[str] = PROVIDER
    state_map: ClassVar[Mapping[str, ResourceState]] = {
        # psutil process states
        psutil.STATUS_RUNNING: ResourceState.RUNNING,
        psutil.STATUS_SLEEPING: ResourceState.RUNNING,
        psutil.STATUS_DISK_SLEEP: ResourceState.RUNNING,
        psutil.STATUS_IDLE: ResourceState.RUNNING,
        psutil.STATUS_WAKING: ResourceState.RUNNING,
        psutil.STATUS_PARKED: ResourceState.RUNNING,
        psutil.STATUS_STOPPED: ResourceState.STOPPED,
        psutil.STATUS_TRACING_STOP: ResourceState.STOPPED,
        psutil.STATUS_ZOMBIE: ResourceState.STOPPED,
        psutil.STATUS_DEAD: ResourceState.STOPPED,
        # this backend's own
        "missing": ResourceState.STOPPED,  # no process with the recorded pid and start time
        "host": ResourceState.RUNNING,  # a process-less instance (the local host)
        _CREATING: ResourceState.CREATING,  # started, not yet ready
    }

    def __init__(
        self,
        work_root: str | Path | None = None,
        *,
        drivers: Mapping[str, LocalDriver | str] | None = None,
        ready_timeout: float = 120.0,
        job_timeout: float = 86400.0,
        stop_timeout: float = 10.0,
        poll_interval: float = 0.25,
    ) -> None:
        if work_root is None:
            work_root = os.environ.get(WORK_ROOT_ENV) or (
                Path(os.environ.get("AIRFLOW_HOME") or Path.home() / "airflow") / "cloud_paas" / "work"
            )
        self.work_root = Path(work_root).expanduser().resolve()
        self.drivers = dict(drivers or {})
        self.ready_timeout = float(ready_timeout)
        self.job_timeout = float(job_timeout)
        self.stop_timeout = float(stop_timeout)
        self.poll_interval = float(poll_interval)

    # ------------------------------------------------------------------ paths and records
    def work_dir(self, deployment_id: str, node_name: str, index: int) -> Path:
        """Return the directory of one node instance.

        :param deployment_id: the deployment's id
        :param node_name: the node template's name
        :param index: the instance index
        """
        if not isinstance(index, int) or index < 0:
            raise BackendError(f"index must be an integer >= 0, got {index!r}", provider=PROVIDER)
        return (
            self.work_root
            / _check_name(deployment_id, "deployment id")
            / _check_name(node_name, "node name")
            / str(index)
        )

    def record(self, deployment_id: str, node_name: str, index: int) -> ProcessRecord | None:
        """Return the on-disk record of one node instance, or None.

        :param deployment_id: the deployment's id
        :param node_name: the node template's name
        :param index: the instance index
        """
        return self._read(self.work_dir(deployment_id, node_name, index))

    @staticmethod
    def _read(work_dir: Path) -> ProcessRecord | None:
        path = work_dir / RECORD_FILE
        try:
            return ProcessRecord.from_json(json.loads(path.read_text()))
        except FileNotFoundError:
            return None
        except (ValueError, TypeError) as err:
            raise BackendError(
                f"{path} is not a valid record ({err}); delete the instance to clean it up",
                provider=PROVIDER,
                resource=str(work_dir),
            ) from err

    @staticmethod
    def _write(record: ProcessRecord) -> None:
        path = Path(record.work_dir) / RECORD_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(record), indent=2, sort_keys=True))
        os.replace(tmp, path)  # atomic: a crashed writer never leaves half a record

    def _records(self, deployment_id: str, node_name: str | None = None) -> list[ProcessRecord]:
        root = self.work_root / _check_name(deployment_id, "deployment id")
        node_dirs = [root / _check_name(node_name, "node name")] if node_name else sorted(root.glob("*"))
        found = []
        for node_dir in node_dirs:
            if not node_dir.is_dir() or node_dir.name.startswith("."):
                continue
            for index_dir in node_dir.iterdir():
                if index_dir.is_dir() and index_dir.name.isdigit():
                    record = self._read(index_dir)
                    if record is not None:
                        found.append(record)
        return sorted(found, key=lambda r: (r.node_name, r.index))

    @contextlib.contextmanager
    def _lock(self, deployment_id: str, node_name: str, index: int) -> Iterator[None]:
        # One creator/deleter per instance across processes (a retry racing a slow first attempt).
        work_dir = self.work_dir(deployment_id, node_name, index)
        work_dir.parent.mkdir(parents=True, exist_ok=True)
        with open(work_dir.parent / f".{index}.lock", "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    # ------------------------------------------------------------------ processes
    @staticmethod
    def _process(record: ProcessRecord) -> psutil.Process | None:
        """Return the recorded process if it still exists and is the same one (not a reused pid)."""
        if record.pid is None:
            return None
        child = _CHILDREN.get(record.pid)
        if child is not None:
            child.poll()  # reap it if it exited, so it is gone rather than a zombie
        try:
            proc = psutil.Process(record.pid)
            if record.start_ticks is not None:
                # Exact: a process started even one tick later, or before a reboot, is not ours.
                if record.boot_id != _boot_id() or _start_ticks(record.pid) != record.start_ticks:
                    return None
            elif (
                record.create_time is not None
                and abs(proc.create_time() - record.create_time) > _CREATE_TIME_TOLERANCE
            ):
                return None
            return proc
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            return None

    def _native_state(self, record: ProcessRecord) -> str:
        if record.pid is None:
            return "host" if record.state == _RUNNING else _CREATING
        proc = self._process(record)
        if proc is None:
            return "missing"
        try:
            status = proc.status()
        except psutil.NoSuchProcess:
            return "missing"
        if record.state == _CREATING and self.state_map.get(status) == ResourceState.RUNNING:
            return _CREATING
        return status

    def _alive(self, record: ProcessRecord) -> bool:
        return self.normalize_state(self._native_state(record)) in (
            ResourceState.RUNNING,
            ResourceState.CREATING,
        )

    @staticmethod
    def _members(record: ProcessRecord | None, under: Path) -> list[psutil.Process]:
        """Return the processes of an instance: its process group, plus any process working under its dir.

        The cwd sweep also finds what a crash left untracked (started, but the record not yet written).
        """
        _reap_children()
        # The group id is trusted only while its leader is the recorded process (a reused pid is not
        # ours) and leads its own group, as every process this backend starts does.
        leader = LocalBackend._process(record) if record is not None else None
        pgid = None
        if leader is not None:
            with contextlib.suppress(ProcessLookupError):
                pgid = leader.pid if os.getpgid(leader.pid) == leader.pid else None
        prefix = str(under)
        me = os.getpid()
        found = []
        for proc in psutil.process_iter(["pid", "status"]):
            if proc.pid == me or proc.info["status"] == psutil.STATUS_ZOMBIE:
                continue  # a zombie is already stopped; only its parent can remove it
            try:
                if pgid is not None and os.getpgid(proc.pid) == pgid:
                    found.append(proc)
                    continue
                cwd = proc.cwd().removesuffix(" (deleted)")
                if cwd == prefix or cwd.startswith(prefix + os.sep):
                    found.append(proc)
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess, ProcessLookupError):
                continue
        return found

    def _stop(self, record: ProcessRecord | None, under: Path, *, graceful: bool = True) -> None:
        """Stop every process of an instance: drain, stop signal, wait, SIGKILL what is left."""
        members = self._members(record, under)
        if members:
            self._stop_members(record, under, members, graceful=graceful)
        driver = self._driver_for_types((record.node_type, *record.type_hierarchy)) if record else None
        if driver is not None:
            try:
                driver.after_stop(record)
            except Exception:  # best effort, as draining: the processes are already stopped
                log.warning("cleaning up after %s/%s[%d] failed", record.deployment_id, record.node_name,
                            record.index, exc_info=True)

    def _stop_members(self, record: ProcessRecord | None, under: Path, members: list[psutil.Process], *,
                      graceful: bool) -> None:
        if graceful and record is not None and self._alive(record):
            driver = self._driver_for_types((record.node_type, *record.type_hierarchy))
            if driver is not None:
                try:
                    driver.before_stop(record)
                except Exception:  # draining is best effort: the stop below must still happen
                    log.warning(
                        "draining %s/%s[%d] failed",
                        record.deployment_id,
                        record.node_name,
                        record.index,
                        exc_info=True,
                    )
        stop_signal = getattr(signal, record.stop_signal, signal.SIGTERM) if record else signal.SIGTERM
        for proc in members:
            with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                proc.send_signal(stop_signal if graceful else signal.SIGKILL)
        alive = _wait_gone(members, self.stop_timeout if graceful else 5.0)
        for proc in alive:
            log.warning("process %d did not stop after %s; killing it", proc.pid, stop_signal.name)
            with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                proc.kill()
        _wait_gone(alive, 5.0)
        for proc in members:
            child = _CHILDREN.pop(proc.pid, None)
            if child is not None:
                child.poll()
        # A process spawned into the group while it was stopping (e.g. an executor) dies now.
        for proc in self._members(record, under):
            with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                proc.kill()

    # ------------------------------------------------------------------ drivers
    def _driver_for_types(self, types: tuple[str, ...]) -> LocalDriver | None:
        return _lookup(self.drivers, types) or _lookup(_DRIVERS, types)

    def driver(self, spec: ResourceSpec) -> LocalDriver:
        """Return the driver that runs this node, or raise :class:`UnsupportedNodeError`.

        :param spec: the resource wanted
        """
        types = (spec.node_type, *(t for t in spec.type_hierarchy if t != spec.node_type))
        driver = self._driver_for_types(types)
        if driver is None:
            known = ", ".join(sorted({*self.drivers, *_DRIVERS}))
            raise UnsupportedNodeError(
                f"node '{spec.node_name}' of type '{spec.node_type}' cannot run on the local backend: "
                f"no local driver handles it or its parent types ({known}). Deploy it on a cloud backend, "
                "or register a driver with airflow_cloud_paas.backends.local.register_local_driver()",
                provider=PROVIDER,
                resource=f"{spec.deployment_id}/{spec.node_name}",
            )
        return driver

    # ------------------------------------------------------------------ Backend API
    def check(self, spec: ResourceSpec) -> None:
        """Raise :class:`UnsupportedNodeError` if no local driver can run this node; touch nothing.

        :param spec: the resource wanted (requirements may be empty)
        """
        self.work_dir(spec.deployment_id, spec.node_name, spec.index)  # names must be usable as dirs
        self.driver(spec).check(spec)

    def create(self, spec: ResourceSpec, *, deadline: float | None = None) -> Resource:
        """Start the instance (or return the running one) and wait until it is ready.

        :param spec: the resource wanted
        :param deadline: a ``time.monotonic()`` limit on the wait, over ``ready_timeout``
        """
        return self._create(spec, deadline=deadline, wait=True)

    def request(self, spec: ResourceSpec) -> Resource:
        """Start a job (a driver that ``runs_to_completion``) and return at once; wait for any other instance.

        :meth:`describe` reports the job RUNNING once it ended well, ERROR (with its ``error``) once it failed.

        :param spec: the resource wanted
        """
        return self._create(spec, deadline=None, wait=not self.driver(spec).runs_to_completion)

    def _create(self, spec: ResourceSpec, *, deadline: float | None, wait: bool) -> Resource:
        driver = self.driver(spec)
        driver.check(spec)
        work_dir = self.work_dir(spec.deployment_id, spec.node_name, spec.index)
        with self._lock(spec.deployment_id, spec.node_name, spec.index):
            previous = self._read(work_dir)
            if previous is not None:
                state = self.normalize_state(self._native_state(previous))
                if state == ResourceState.RUNNING:
                    return self._resource(previous)
                if state == ResourceState.CREATING and previous.pid is not None:
                    # An earlier attempt started it and died while waiting: wait for that process.
                    return self._await_ready(driver, spec, previous, deadline) if wait else self._resource(previous)
                log.info(
                    "%s/%s[%d] is %s; restarting it",
                    spec.deployment_id,
                    spec.node_name,
                    spec.index,
                    state.value,
                )
            self._stop(previous, work_dir, graceful=False)  # leftovers of a crash hold ports
            return self._start(driver, spec, work_dir, previous, deadline, wait=wait)

    def _choose_ports(self, spec: ResourceSpec, wanted: Mapping[str, int], previous: Mapping[str, int]) -> dict:
        ports = {}
        for name, port in wanted.items():
            port = int(port or 0)
            if port:
                if not _port_free(port):
                    raise ResourceCreateError(
                        f"port {port} ({name}) is in use on 127.0.0.1; set the property to 0 to pick a free port",
                        provider=PROVIDER,
                        resource=f"{spec.deployment_id}/{spec.node_name}/{spec.index}",
                    )
            elif previous.get(name) and _port_free(previous[name]):
                port = previous[name]  # a restarted instance keeps its address, so its clients still find it
            else:
                port = _free_port()
            ports[name] = port
        return ports

    def _start(
        self, driver: LocalDriver, spec: ResourceSpec, work_dir: Path, previous: ProcessRecord | None,
        deadline: float | None = None, *, wait: bool = True,
    ) -> Resource:
        where = f"{spec.deployment_id}/{spec.node_name}/{spec.index}"
        work_dir.mkdir(parents=True, exist_ok=True)
        record = ProcessRecord(
            deployment_id=spec.deployment_id,
            node_name=spec.node_name,
            index=spec.index,
            node_type=spec.node_type,
            resource_id=f"local-{uuid.uuid4().hex[:12]}",
            state=_CREATING,
            work_dir=str(work_dir),
            log_file=str(work_dir / LOG_FILE),
            tags=dict(spec.tags),
            type_hierarchy=list(spec.type_hierarchy),
            depends_on=sorted({r.node_name for rs in spec.requirements.values() for r in rs}),
            created_at=time.time(),
            restarts=(previous.restarts + 1) if previous else 0,
        )
        try:
            record.ports = self._choose_ports(spec, driver.ports(spec), previous.ports if previous else {})
            launch = driver.command(spec, work_dir, record.ports)
            if launch is None:  # nothing to run: the instance is its directory
                record.attributes = dict(driver.attributes(spec, record))
                record.state = _RUNNING
                record.ready_at = time.time()
                self._write(record)
                return self._resource(record)
            record.argv = list(launch.argv)
            record.data = dict(launch.data)
            record.stop_signal = launch.stop_signal
            self._write(record)  # before the process exists: a crash now leaves a record delete can find
            with open(record.log_file, "ab") as out:
                try:
                    child = subprocess.Popen(
                        record.argv,
                        cwd=work_dir,
                        env={**os.environ, **launch.env},
                        stdin=subprocess.DEVNULL,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,  # its own process group: outlives the task, stopped as one
                        close_fds=True,
                    )
                except OSError as err:
                    raise ResourceCreateError(
                        f"cannot start {record.argv[0]!r}: {err}; check that it is installed",
                        provider=PROVIDER,
                        resource=where,
                    ) from err
            _CHILDREN[child.pid] = child
            record.pid = child.pid
            record.start_ticks = _start_ticks(child.pid)
            record.boot_id = _boot_id()
            try:
                record.create_time = psutil.Process(child.pid).create_time()
            except psutil.NoSuchProcess:
                record.create_time = time.time()
            self._write(record)
        except BackendError as err:
            self._discard(record, err)
            raise
        except Exception as err:  # a driver's own failure: typed, naming the resource, cause chained
            self._discard(record, err)
            raise ResourceCreateError(
                f"the {type(driver).__name__} driver failed: {err}", provider=PROVIDER, resource=where
            ) from err
        except BaseException as err:
            self._discard(record, err)
            raise
        return self._await_ready(driver, spec, record, deadline) if wait else self._resource(record)

    def _await_ready(self, driver: LocalDriver, spec: ResourceSpec, record: ProcessRecord,
                     deadline: float | None = None) -> Resource:
        where = f"{spec.deployment_id}/{spec.node_name}/{spec.index}"

        def failed(ready: bool) -> str | None:
            if self._alive(record) or (driver.runs_to_completion and driver.ready(record)):
                return None  # a job that ended well just now: the next probe sees it ready
            child = _CHILDREN.get(record.pid or -1)
            code = child.poll() if child is not None else None
            return (f"the process exited{f' with code {code}' if code is not None else ''} before it was "
                    f"ready; command: {' '.join(record.argv)}; last log lines:\n{_log_tail(Path(record.log_file))}")

        try:
            job = driver.runs_to_completion
            poll_until(lambda: driver.ready(record), bool, timeout=self.job_timeout if job else self.ready_timeout,
                       deadline=deadline,
                       interval=self.poll_interval, what=f"{type(driver).__name__} process {record.pid} ready",
                       provider=PROVIDER, resource=where, failed=failed,
                       failure=lambda reason: ResourceCreateError(reason, provider=PROVIDER, resource=where),
                       status=lambda _: f"running, not ready; last log lines:\n{_log_tail(Path(record.log_file))}",
                       hint="raise LocalBackend(job_timeout=...) for a longer job" if job
                       else "raise LocalBackend(ready_timeout=...) on a slow machine")
            self._mark_ready(driver, spec, record)
        except BaseException as err:
            self._discard(record, err)
            raise
        log.info("%s ready in %.1f s", where, record.ready_at - record.created_at)
        return self._resource(record)

    def _mark_ready(self, driver: LocalDriver, spec: ResourceSpec | None, record: ProcessRecord) -> None:
        """Record an instance as ready (RUNNING), with its attributes; a finished job keeps no process."""
        record.attributes = dict(driver.attributes(spec, record))
        if driver.runs_to_completion:
            _CHILDREN.pop(record.pid or -1, None)
            record.pid = record.start_ticks = record.create_time = None  # done: nothing left to stop
        record.state = _RUNNING
        record.ready_at = time.time()
        self._write(record)

    def _discard(self, record: ProcessRecord, cause: BaseException) -> None:
        """Remove a failed instance (process and directory) without masking why it failed."""
        try:
            self._stop(record, Path(record.work_dir), graceful=False)
            shutil.rmtree(record.work_dir, ignore_errors=True)
        except Exception as cleanup_error:
            log.exception("cleaning up %s after a failed create failed", record.work_dir)
            cause.add_note(f"cleanup also failed: {cleanup_error}; delete the deployment to retry it")

    def describe(self, deployment_id: str, node_name: str | None = None) -> list[Resource]:
        """Return the instances of a deployment (optionally of one node), with their live state.

        :param deployment_id: the deployment's id
        :param node_name: only this node's instances
        """
        return [self._settle(r) for r in self._records(deployment_id, node_name)]

    def _settle(self, record: ProcessRecord) -> Resource:
        """Return an instance's resource; a job started without waiting is recorded as ended once it ended."""
        driver = None
        if record.state == _CREATING and record.pid is not None:
            driver = self._driver_for_types((record.node_type, *record.type_hierarchy))
        if driver is None or not driver.runs_to_completion or self._alive(record):
            return self._resource(record)
        with self._lock(record.deployment_id, record.node_name, record.index):
            fresh = self._read(Path(record.work_dir))
            if fresh is None or fresh.state != _CREATING or fresh.pid != record.pid:
                return self._resource(fresh or record)  # another process recorded its end first
            if driver.ready(fresh):
                self._mark_ready(driver, None, fresh)
                return self._resource(fresh)
        child = _CHILDREN.get(record.pid or -1)
        code = child.poll() if child is not None else None
        error = (f"the job exited{f' with code {code}' if code is not None else ''} without finishing; last log "
                 f"lines:\n{_log_tail(Path(record.log_file))}")
        resource = self._resource(record, ResourceState.ERROR)
        return dataclasses.replace(resource, attributes={**resource.attributes, "error": error})

    def _resource(self, record: ProcessRecord, state: ResourceState | None = None) -> Resource:
        attributes = dict(record.attributes)
        attributes.update(work_dir=record.work_dir, pid=record.pid, log_file=record.log_file if record.pid else None)
        return Resource(
            deployment_id=record.deployment_id,
            node_name=record.node_name,
            index=record.index,
            backend=self.name,
            resource_id=record.resource_id,
            state=state or self.normalize_state(self._native_state(record)),
            attributes=attributes,
        )

    def delete(self, deployment_id: str, node_name: str | None = None, index: int | None = None) -> list[Resource]:
        """Stop and remove instances: all of a deployment, of one node, or one; return what was deleted.

        Dependents go first (a worker before its master), so a graceful drain can still reach them.

        :param deployment_id: the deployment's id
        :param node_name: only this node's instances
        :param index: only this instance (needs ``node_name``)
        """
        if index is not None and node_name is None:
            raise BackendError("deleting one index needs its node name", provider=PROVIDER)
        root = self.work_root / _check_name(deployment_id, "deployment id")
        if node_name is None:
            scope = root
        elif index is None:
            scope = root / _check_name(node_name, "node name")
        else:
            scope = self.work_dir(deployment_id, node_name, index)
        if not scope.exists():
            return []
        records = [r for r in self._records(deployment_id, node_name) if index is None or r.index == index]
        deleted = []
        for record in self._stop_order(records):
            with self._lock(record.deployment_id, record.node_name, record.index):
                self._stop(record, Path(record.work_dir))
                shutil.rmtree(record.work_dir, ignore_errors=True)
            deleted.append(self._resource(record, ResourceState.DELETED))
        self._stop(None, scope)  # anything a crash left untracked (a directory without a record)
        shutil.rmtree(scope, ignore_errors=True)
        return deleted

    @staticmethod
    def _stop_order(records: list[ProcessRecord]) -> list[ProcessRecord]:
        remaining = {r.node_name for r in records}
        depends = {r.node_name: set(r.depends_on) for r in records}
        order: list[str] = []
        while remaining:
            # nodes nothing remaining depends on go first; a cycle (never in a valid plan) breaks by name
            free = sorted(n for n in remaining if not any(n in depends[m] for m in remaining if m != n))
            batch = free or sorted(remaining)
            order += batch
            remaining -= set(batch)
        rank = {name: i for i, name in enumerate(order)}
        return sorted(records, key=lambda r: (rank[r.node_name], -r.index))
