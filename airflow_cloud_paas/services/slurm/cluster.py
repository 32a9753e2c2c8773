"""A local SLURM cluster on loopback, made of real daemons: its own munged, one slurmctld, slurmd workers.

Everything lives in one work directory (slurm.conf, munge's key, socket and log, spool, pid and log files); the
host's ``/etc/munge`` and ``/etc/slurm`` are never read or touched. Each daemon runs in the foreground in its own
session, so it is stopped by its process group; slurmstepd (a job's step daemon, which outlives its slurmd) is
found by the node's slurmd log it holds open and killed with the job's processes.

Workers are FUTURE slots declared in slurm.conf (:mod:`~airflow_cloud_paas.services.slurm.config`): adding one
starts ``slurmd -N <name>`` and waits until it registers; removing one drains it, checks that no job runs there
(a busy worker is left draining and :class:`SlurmNodeBusyError` raised: check again later), stops its slurmd and
hides the slot again (``state=FUTURE``). SLURM's power saving (CLOUD nodes with Resume/SuspendProgram) was not
used: slurmctld would then decide itself when to start workers and allocate pending jobs to nodes not yet up,
while here the shared elastic engine's policies decide, see pending jobs as demand and record every decision.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import psutil

from airflow_cloud_paas.services.slurm.client import SlurmClient
from airflow_cloud_paas.services.slurm.config import ClusterSpec, render_slurm_conf, validate_node_name
from airflow_cloud_paas.services.slurm.errors import (
    SlurmClusterError,
    SlurmCommandError,
    SlurmConfigError,
    SlurmNodeBusyError,
)

log = logging.getLogger(__name__)

#: the daemons and where Debian puts them
DAEMONS = ("munged", "slurmctld", "slurmd")
COMMANDS = ("sbatch", "squeue", "sinfo", "scontrol", "scancel")
INSTALL_HINT = "install SLURM and munge (Debian/Ubuntu: apt-get install slurm-wlm munge)"
_SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin", "/usr/local/sbin"])


def _free_ports(count: int) -> list[int]:
    """Return ``count`` distinct TCP ports free on 127.0.0.1 now."""
    sockets, ports = [], []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
            ports.append(sock.getsockname()[1])
    finally:
        for sock in sockets:
            sock.close()
    return ports


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _wait(check: Callable[[], Any], timeout: float, interval: float = 0.2) -> Any:
    """Return ``check()``'s first truthy value, or None after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found or time.monotonic() > deadline:
            return found
        time.sleep(interval)


def kill_tree(process: psutil.Process, sig: int = signal.SIGKILL) -> None:
    """Send ``sig`` to a process and all its descendants (children first gathered, so none is missed)."""
    try:
        family = [*process.children(recursive=True), process]
    except psutil.NoSuchProcess:
        return
    for member in family:
        try:
            member.send_signal(sig)
        except psutil.NoSuchProcess:
            pass
    _wait(lambda: not any(_alive(m) for m in family), 5.0, interval=0.05)


def step_daemons(slurmd_logs: set[str], slurm_conf: Path | None = None) -> list[psutil.Process]:
    """Return the slurmstepd processes of some workers: those holding one of their slurmd logs open.

    slurmstepd outlives slurmd, so stopping a worker must find and kill them too.

    :param slurmd_logs: the workers' slurmd log files
    :param slurm_conf: also every slurmstepd whose environment names this slurm.conf (a whole cluster)
    """
    found = []
    for process in psutil.process_iter(["name"]):
        if process.info["name"] != "slurmstepd":
            continue
        try:
            if any(f.path in slurmd_logs for f in process.open_files()) or (
                    slurm_conf is not None and process.environ().get("SLURM_CONF") == str(slurm_conf)):
                found.append(process)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def _alive(process: psutil.Process) -> bool:
    """Return whether a process still runs (a zombie waiting for init to reap it does not)."""
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


class LocalSlurmCluster:
    """One slurmctld and up to ``spec.max_workers`` slurmd on 127.0.0.1, with their own munged.

    Use it as a context manager, or call :meth:`start` and (always) :meth:`stop`::

        with LocalSlurmCluster(ClusterSpec(work_dir, max_workers=3)).start(workers=1) as cluster:
            job = cluster.client.submit(wrap="hostname")

    :param spec: the cluster (validated when built: bad names and counts fail before anything starts)
    :param start_timeout: seconds a daemon has to come up
    :param register_timeout: seconds a new slurmd has to register with slurmctld
    :param command_timeout: seconds one SLURM command may take
    """

    def __init__(self, spec: ClusterSpec, *, start_timeout: float = 30.0, register_timeout: float = 30.0,
                 command_timeout: float = 20.0) -> None:
        self.spec = spec
        self.start_timeout = start_timeout
        self.register_timeout = register_timeout
        self.client = SlurmClient(spec.slurm_conf, timeout=command_timeout)
        self._daemons: dict[str, subprocess.Popen] = {}  # "munged", "slurmctld", "slurmd:<node>"
        self._logs: list[IO[bytes]] = []
        self.controller_port: int | None = None
        self.slurmd_ports: dict[str, int] = {}

    # ------------------------------------------------------------------ facts
    @staticmethod
    def executables() -> dict[str, str]:
        """Return where each daemon and command is; raise :class:`SlurmClusterError` naming what is missing."""
        found = {name: shutil.which(name, path=_SEARCH_PATH) for name in (*DAEMONS, *COMMANDS)}
        missing = sorted(name for name, path in found.items() if not path)
        if missing:
            raise SlurmClusterError(f"{', '.join(missing)} not found: {INSTALL_HINT}")
        return {name: str(path) for name, path in found.items()}

    @property
    def workers(self) -> list[str]:
        """Return the workers whose slurmd this cluster runs, in slot order."""
        return [n for n in self.spec.worker_names if self._alive(f"slurmd:{n}")]

    @property
    def running(self) -> bool:
        """Return whether slurmctld runs."""
        return self._alive("slurmctld")

    def connection_extras(self) -> dict[str, str]:
        """Return the extras of a ``slurm`` connection to this cluster (for :class:`SlurmHook`)."""
        return {"slurm_conf": str(self.spec.slurm_conf), "munge_socket": str(self.spec.munge_socket)}

    def _alive(self, key: str) -> bool:
        process = self._daemons.get(key)
        return process is not None and process.poll() is None

    # ------------------------------------------------------------------ lifecycle
    def start(self, workers: int = 1) -> LocalSlurmCluster:
        """Write the configuration, start munged and slurmctld, then ``workers`` slurmd; return the cluster.

        On any failure everything started is stopped before the error is raised.

        :param workers: slurmd to start at once (0 to ``spec.max_workers``)
        """
        if isinstance(workers, bool) or not isinstance(workers, int) or not 0 <= workers <= self.spec.max_workers:
            raise SlurmConfigError(f"start 0 to max_workers ({self.spec.max_workers}) workers", field="workers",
                                   value=workers)
        if self._daemons:
            raise SlurmClusterError("already started: stop it first", daemon="slurmctld")
        self.executables()
        try:
            self._write_files()
            self._start_munged()
            self._start_slurmctld()
            for _ in range(workers):
                self.add_worker()
        except BaseException:
            self.stop()
            raise
        return self

    def __enter__(self) -> LocalSlurmCluster:
        if not self._daemons:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _write_files(self) -> None:
        spec = self.spec
        for directory in (spec.work_dir, spec.log_dir, spec.spool_dir / "slurmctld"):
            directory.mkdir(parents=True, exist_ok=True)
        # munged wants its own directory, not writable by others; clients need to enter it to reach the socket
        spec.munge_dir.mkdir(mode=0o711, exist_ok=True)
        os.chmod(spec.munge_dir, 0o711)
        if not spec.munge_key.exists():
            fd = os.open(spec.munge_key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
            with os.fdopen(fd, "wb") as key:
                key.write(os.urandom(1024))
        ports = _free_ports(1 + spec.max_workers)
        self.controller_port = ports[0]
        self.slurmd_ports = dict(zip(spec.worker_names, ports[1:], strict=True))
        spec.slurm_conf.write_text(render_slurm_conf(spec, controller_port=self.controller_port,
                                                     slurmd_ports=self.slurmd_ports))

    def _spawn(self, key: str, argv: list[str], log_name: str) -> subprocess.Popen:
        out = open(self.spec.log_dir / log_name, "ab")  # noqa: SIM115 - closed in stop()
        self._logs.append(out)
        env = {**os.environ, "SLURM_CONF": str(self.spec.slurm_conf)}
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env,
                                   cwd=self.spec.work_dir, start_new_session=True)
        self._daemons[key] = process
        log.info("Started %s (pid %s): %s", key, process.pid, " ".join(argv))
        return process

    def _start_munged(self) -> None:
        spec, munge = self.spec, self.spec.munge_dir
        process = self._spawn("munged", [
            self.executables()["munged"], "--foreground", "--force", f"--key-file={spec.munge_key}",
            f"--socket={spec.munge_socket}", f"--pid-file={munge / 'munged.pid'}",
            f"--log-file={munge / 'munged.log'}", f"--seed-file={munge / 'munged.seed'}",
        ], "munged.out")
        if not _wait(lambda: spec.munge_socket.exists() or process.poll() is not None, self.start_timeout) \
                or process.poll() is not None:
            raise SlurmClusterError(f"did not create its socket {spec.munge_socket}:\n"
                                    f"{_tail(spec.log_dir / 'munged.out')}\n{_tail(munge / 'munged.log')}",
                                    daemon="munged")

    def _start_slurmctld(self) -> None:
        spec = self.spec
        process = self._spawn("slurmctld", [self.executables()["slurmctld"], "-D", "-c", "-f", str(spec.slurm_conf)],
                              "slurmctld.out")
        if not _wait(lambda: process.poll() is not None or self.client.ping(), self.start_timeout) \
                or process.poll() is not None:
            raise SlurmClusterError(f"not answering on 127.0.0.1:{self.controller_port}:\n"
                                    f"{_tail(spec.log_dir / 'slurmctld.out')}\n{_tail(spec.log_dir / 'slurmctld.log')}",
                                    daemon="slurmctld")

    # ------------------------------------------------------------------ workers
    def add_worker(self, name: str | None = None) -> str:
        """Start a worker's slurmd and wait until slurmctld lists it as usable; return its name.

        A slurmd that does not register in ``register_timeout`` is stopped and reported (never waited on forever).

        :param name: the slot (default: the first one not running)
        """
        if not self.running:
            raise SlurmClusterError("the cluster is not running: start() it first", daemon="slurmctld")
        if name is None:
            free = [n for n in self.spec.worker_names if not self._alive(f"slurmd:{n}")]
            if not free:
                raise SlurmClusterError(f"all {self.spec.max_workers} worker slots run: raise max_workers",
                                        daemon="slurmd")
            name = free[0]
        validate_node_name(name)
        if name not in self.spec.worker_names:
            raise SlurmConfigError(f"not a worker slot of this cluster ({', '.join(self.spec.worker_names)})",
                                   field="node", value=name)
        if self._alive(f"slurmd:{name}"):
            return name
        process = self._spawn(f"slurmd:{name}", [self.executables()["slurmd"], "-D", "-f", str(self.spec.slurm_conf),
                                                 "-N", name], f"slurmd-{name}.out")

        def registered() -> bool:
            if process.poll() is not None:
                return True
            try:
                return any(n.name == name and n.responding for n in self.client.nodes())
            except SlurmCommandError:
                return False

        if not _wait(registered, self.register_timeout, interval=0.3) or process.poll() is not None:
            exited = process.poll()
            self._stop_slurmd(name)
            why = (f"exited with status {exited} before registering" if exited is not None
                   else f"did not register within {self.register_timeout:g} s (stopped)")
            raise SlurmClusterError(f"{why}:\n"
                                    f"{_tail(self.spec.log_dir / f'slurmd-{name}.out')}\n"
                                    f"{_tail(self.spec.slurmd_log(name))}", daemon="slurmd", node=name)
        return name

    def remove_worker(self, name: str, *, timeout: float = 0.0,
                      reason: str = "retired by airflow_cloud_paas") -> None:
        """Drain a worker and, once no job runs on it, stop its slurmd and hide its slot again.

        A worker still running jobs after ``timeout`` seconds stays drained (its jobs go on) and
        :class:`SlurmNodeBusyError` is raised: remove it again later.

        :param name: the worker
        :param timeout: seconds to wait for its jobs to end
        :param reason: the drain reason sinfo shows
        """
        if name not in self.spec.worker_names:
            validate_node_name(name)
            raise SlurmConfigError(f"not a worker slot of this cluster ({', '.join(self.spec.worker_names)})",
                                   field="node", value=name)
        if not self._alive(f"slurmd:{name}"):
            return
        self.client.drain(name, reason)

        def idle() -> bool:
            if self.client.node(name).busy:
                return False
            active = self.client.jobs(states=["RUNNING", "COMPLETING", "CONFIGURING"])
            return not any(name in job.nodes for job in active)

        if not _wait(idle, timeout, interval=0.3):
            raise SlurmNodeBusyError("still runs jobs: left draining, its jobs go on; remove it again once they "
                                     "end", daemon="slurmd", node=name)
        self._stop_slurmd(name)
        try:
            self.client.update_node(name, "FUTURE")
        except SlurmCommandError as err:  # the slurmd is stopped either way; the slot is reused at the next add
            log.warning("Could not hide worker %s again: %s", name, err)

    def _stop_slurmd(self, name: str) -> None:
        stepds = self._stepds(name)  # found while they still hold the node's log open
        self._stop_process(f"slurmd:{name}")
        for stepd in [*stepds, *self._stepds(name)]:
            kill_tree(stepd)

    def _stepds(self, node: str | None = None) -> list[psutil.Process]:
        """Return the slurmstepd of one worker (or of every worker of this cluster)."""
        logs = {str(self.spec.slurmd_log(n)) for n in ([node] if node else self.spec.worker_names)}
        return step_daemons(logs, slurm_conf=None if node else self.spec.slurm_conf)

    # ------------------------------------------------------------------ stop
    def _stop_process(self, key: str, grace: float = 5.0) -> None:
        process = self._daemons.pop(key, None)
        if process is None:
            return
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, grace)):
            try:
                os.killpg(process.pid, sig)  # its own session: the group holds its helpers (slurmscriptd)
            except ProcessLookupError:
                pass
            try:
                process.wait(wait)
                break
            except subprocess.TimeoutExpired:
                continue
        try:  # helpers that outlived the leader in its group
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def stop(self) -> None:
        """Stop every daemon of the cluster and the jobs' step daemons; leave no process behind (idempotent)."""
        if self.running:
            try:  # let running jobs end as cancelled rather than orphaned
                self.client.run("scancel", f"--partition={self.spec.partition}", timeout=5)
            except SlurmCommandError as err:
                log.info("Could not cancel the jobs before stopping: %s", err)
        stepds = self._stepds()
        for name in self.spec.worker_names:
            self._stop_process(f"slurmd:{name}")
        for stepd in [*stepds, *self._stepds()]:
            kill_tree(stepd)
        self._stop_process("slurmctld")
        self._stop_process("munged")
        for out in self._logs:
            out.close()
        self._logs.clear()
