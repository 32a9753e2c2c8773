"""Hook to an HTCondor pool: an Airflow connection of type ``htcondor`` names its collector and holds a token.

Connection fields: Host/Port = the collector (port 9618 by default), Password = the pool password (the
``POOL`` signing key; :mod:`airflow_cloud_paas.services.condor.credentials` keeps it there), extras
``token`` (Airflow's IDTOKEN; made from the password when absent), ``trust_domain``, ``schedd_name``
(needed when the pool has several schedds), ``admin_user`` and ``execute_token``.

Every ``htcondor2`` call of the package is made here, through a small client factory (:class:`BindingsClients`:
``Collector``, ``Schedd``, ``Startd``, ``send_command``). Tests swap it for a stand-in at the bindings'
boundary (``tests/unit/condor/standin.py``), per hook (``clients=``) or for every hook built in a block
(:func:`use_clients`, for DAG runs where operators and triggers build their own hooks). Failures are typed
:class:`~airflow_cloud_paas.services.condor.errors.CondorError` subclasses naming the pool, daemon, node or
job; no message, log line or ``repr`` ever holds the password or a token. The pool's configuration,
credentials and errors live with the rest of the HTCondor service in :mod:`airflow_cloud_paas.services.condor`.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import classad2
import htcondor2
from airflow.sdk import BaseHook

from airflow_cloud_paas.hooks import HTCONDOR_CONNECTION, ConnectionFormMixin, ui_field_behaviour
from airflow_cloud_paas.services.condor.config import COLLECTOR_PORT
from airflow_cloud_paas.services.condor.credentials import (
    PoolCredentials,
    create_token,
    credentials_from_connection,
)
from airflow_cloud_paas.services.condor.errors import (
    CondorConnectionError,
    CondorError,
    CondorJobNotFoundError,
    CondorNodeNotFoundError,
    CondorSubmitError,
)

if TYPE_CHECKING:
    from airflow.sdk import Connection

#: the DAGMan binary on a submit node (the package's path), written in a DAG's submit description
DAGMAN_PATH = "/usr/bin/condor_dagman"
#: DAEMON_OFF_PEACEFUL of HTCondor's condor_commands.h. htcondor2 25.x gives DaemonCommands.DaemonOffPeaceful
#: the value 469, which is DAEMON_ON: sent as is, it would start the daemon instead of retiring it.
DAEMON_OFF_PEACEFUL = 483
IDLE, RUNNING, REMOVED, COMPLETED, HELD, TRANSFERRING, SUSPENDED = 1, 2, 3, 4, 5, 6, 7
_JOB_ATTRS = ["ClusterId", "ProcId", "JobStatus", "JobUniverse", "RequestCpus", "RequestMemory", "RequestGPUs",
              "QDate", "EnteredCurrentStatus", "ExitCode", "ExitBySignal", "HoldReason", "RemoveReason"]
_SLOT_ATTRS = ["Name", "Machine", "State", "Activity", "Cpus", "Memory", "GPUs", "TotalSlotCpus",
               "TotalSlotMemory", "TotalSlotGPUs", "PartitionableSlot", "DynamicSlot", "Draining", "DrainReason",
               "CloudPaaSDeployment"]
_HOST = re.compile(r"^[A-Za-z0-9_.\-\[\]:]+$")

#: The connection type as ``get_provider_info()["connection-types"]`` lists it (declared in
#: :mod:`airflow_cloud_paas.hooks`; Airflow 3 builds the form from ``conn-fields`` and ``ui-field-behaviour``).
CONNECTION_TYPE: dict[str, Any] = HTCONDOR_CONNECTION
#: Extra fields of the connection form.
CONN_FIELDS: dict[str, dict[str, Any]] = CONNECTION_TYPE["conn-fields"]
#: Standard fields hidden, relabelled or hinted in the form.
UI_FIELD_BEHAVIOUR: dict[str, Any] = ui_field_behaviour(CONNECTION_TYPE)


# ------------------------------------------------------------------------------------------ results
@dataclass(frozen=True)
class IdleJob:
    """One idle job's request, for a scaling policy.

    :param job_id: ``cluster.proc``
    :param request_cpus: CPUs it asks for
    :param request_memory_mb: memory it asks for (MB)
    :param request_gpus: GPUs it asks for
    :param wait_s: seconds it has been idle
    """

    job_id: str
    request_cpus: int
    request_memory_mb: int
    request_gpus: int
    wait_s: float


@dataclass(frozen=True)
class QueueStats:
    """The schedd's queue at one time: job counts, and what the idle jobs ask for.

    :param idle: idle jobs (waiting for a slot)
    :param running: running jobs
    :param held: held jobs
    :param idle_cpus: CPUs the idle jobs request in total
    :param idle_memory_mb: memory the idle jobs request in total (MB)
    :param idle_gpus: GPUs the idle jobs request in total
    :param idle_jobs: each idle job, longest waiting first
    :param taken_at: when (seconds since the epoch)
    """

    idle: int
    running: int
    held: int
    idle_cpus: int
    idle_memory_mb: int
    idle_gpus: int
    idle_jobs: tuple[IdleJob, ...]
    taken_at: float

    @property
    def longest_wait_s(self) -> float:
        """Return how long the oldest idle job has waited (0 without one)."""
        return max((j.wait_s for j in self.idle_jobs), default=0.0)


@dataclass(frozen=True)
class ExecuteNode:
    """One execute node (startd) as the collector sees it, its slots summed.

    :param machine: the machine's name
    :param state: Unclaimed, Claimed, Drained, ... (Claimed as soon as one slot runs a job)
    :param activity: Idle, Busy, Retiring, ...
    :param cpus: CPUs it offers
    :param busy_cpus: CPUs claimed by jobs
    :param memory_mb: memory it offers (MB)
    :param busy_memory_mb: memory claimed by jobs (MB)
    :param gpus: GPUs it offers
    :param busy_gpus: GPUs claimed by jobs
    :param slots: slot ads (partitionable and dynamic)
    :param draining: whether it is draining (takes no new job)
    :param deployment_id: the ``CloudPaaSDeployment`` it publishes, if any
    """

    machine: str
    state: str
    activity: str
    cpus: int
    busy_cpus: int
    memory_mb: int
    busy_memory_mb: int
    gpus: int
    busy_gpus: int
    slots: int
    draining: bool
    deployment_id: str | None = None

    @property
    def idle(self) -> bool:
        """Return whether no job runs on it."""
        return self.busy_cpus == 0 and self.state != "Claimed"


@dataclass(frozen=True)
class ClusterStatus:
    """Where the jobs of one cluster stand, from the queue and the history.

    :param cluster_id: the cluster
    :param idle: idle jobs
    :param running: running (or transferring) jobs
    :param held: held jobs
    :param completed: jobs that exited
    :param removed: jobs that were removed
    :param exit_codes: exit codes of the completed jobs, by proc id
    :param hold_reasons: why the held jobs are held
    """

    cluster_id: int
    idle: int = 0
    running: int = 0
    held: int = 0
    completed: int = 0
    removed: int = 0
    exit_codes: tuple[int | None, ...] = ()
    hold_reasons: tuple[str, ...] = ()

    @property
    def total(self) -> int:
        """Return how many jobs the cluster has."""
        return self.idle + self.running + self.held + self.completed + self.removed

    @property
    def done(self) -> bool:
        """Return whether every job left the queue (completed or removed)."""
        return self.total > 0 and self.completed + self.removed == self.total

    @property
    def succeeded(self) -> bool:
        """Return whether every job completed with exit code 0."""
        return self.done and self.removed == 0 and all(code == 0 for code in self.exit_codes)

    def as_dict(self) -> dict[str, Any]:
        """Return a JSON-serializable summary (for a trigger event or XCom)."""
        return {"cluster_id": self.cluster_id, "idle": self.idle, "running": self.running, "held": self.held,
                "completed": self.completed, "removed": self.removed, "exit_codes": list(self.exit_codes),
                "hold_reasons": list(self.hold_reasons)}


# ---------------------------------------------------------------------------------- client factory
class CondorClients(Protocol):
    """The four calls made at the bindings' boundary (the stand-in implements the same)."""

    def collector(self, address: str, token: str | None) -> Any: ...

    def schedd(self, location: classad2.ClassAd) -> Any: ...

    def startd(self, location: classad2.ClassAd) -> Any: ...

    def send_command(self, ad: classad2.ClassAd, command: Any, target: str | None = None) -> None: ...


class BindingsClients:
    """The real clients: ``htcondor2`` objects, authenticated with the hook's IDTOKEN.

    The collector takes the token directly (``SecurityContext``); the schedd, startds and masters find
    it in a private token directory (mode 0700, one file per token) that the process's
    ``SEC_TOKEN_DIRECTORY`` points at, since their constructors take no security context.
    """

    _lock = threading.Lock()
    _token_dir: Path | None = None

    def _install(self, token: str | None) -> None:
        if not token:
            return
        with self._lock:
            if BindingsClients._token_dir is None:
                BindingsClients._token_dir = Path(tempfile.mkdtemp(prefix="cloud-paas-condor-tokens-"))
                os.chmod(BindingsClients._token_dir, 0o700)
                htcondor2.param["SEC_TOKEN_DIRECTORY"] = str(BindingsClients._token_dir)
            path = BindingsClients._token_dir / hashlib.sha256(token.encode()).hexdigest()[:24]
            if not path.exists():
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "w") as handle:
                    handle.write(token + "\n")

    def collector(self, address: str, token: str | None) -> htcondor2.Collector:
        """Return a collector client.

        :param address: ``host:port``
        :param token: an IDTOKEN
        """
        self._install(token)
        return htcondor2.Collector(address, security=htcondor2.SecurityContext(token=token) if token else None)

    def schedd(self, location: classad2.ClassAd) -> htcondor2.Schedd:
        """Return a schedd client.

        :param location: the schedd's ad
        """
        return htcondor2.Schedd(location)

    def startd(self, location: classad2.ClassAd) -> htcondor2.Startd:
        """Return a startd client.

        :param location: the startd's ad
        """
        return htcondor2.Startd(location)

    def send_command(self, ad: classad2.ClassAd, command: Any, target: str | None = None) -> None:
        """Send a daemon command.

        :param ad: the daemon's ad
        :param command: an ``htcondor2.DaemonCommands`` member or a command code
        :param target: the subsystem concerned
        """
        htcondor2.send_command(ad, command, target)


_OVERRIDE: list[CondorClients] = []


@contextlib.contextmanager
def use_clients(clients: CondorClients) -> Iterator[CondorClients]:
    """Make every hook built inside the block (by operators, triggers) use these clients, e.g. a stand-in.

    :param clients: the client factory
    """
    _OVERRIDE.append(clients)
    try:
        yield clients
    finally:
        _OVERRIDE.remove(clients)


def _bindings_error(err: Exception, what: str, fix: str) -> CondorConnectionError:
    # HTCondor's messages name daemons and addresses, never a token; keep them short
    detail = " ".join(str(err).split())[:400]
    return CondorConnectionError(f"{detail or type(err).__name__}; {fix}", what=what)


def _int(ad: classad2.ClassAd, name: str, default: int = 0) -> int:
    """Return an attribute evaluated in its ad (job requests can be expressions) as an int."""
    if name not in ad:
        return default
    try:
        value = ad.eval(name)
    except (classad2.ClassAdException, TypeError, ValueError):
        return default
    if isinstance(value, bool) or not isinstance(value, int | float):
        return default
    return int(value)


# ------------------------------------------------------------------------------------------ the hook
class HTCondorHook(ConnectionFormMixin, BaseHook):
    """Talk to an HTCondor pool: queue statistics, slots, submit jobs and DAGs, drain and retire execute nodes.

    :param htcondor_conn_id: the Airflow connection (type ``htcondor``)
    :param clients: the client factory (default: the real bindings, or the one :func:`use_clients` set)
    :param collector: a collector object to use instead of the factory's (e.g. a stand-in)
    :param schedd: a schedd object to use instead of the factory's (e.g. a stand-in)
    """

    conn_name_attr = "htcondor_conn_id"
    default_conn_name = "htcondor_default"
    conn_type = "htcondor"
    hook_name = "HTCondor"

    def __init__(
        self,
        htcondor_conn_id: str = default_conn_name,
        *,
        clients: CondorClients | None = None,
        collector: Any = None,
        schedd: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.htcondor_conn_id = htcondor_conn_id
        self._clients = clients
        if collector is not None:
            self.__dict__["collector"] = collector  # fills the cached_property
        if schedd is not None:
            self.__dict__["schedd"] = schedd

    def __repr__(self) -> str:
        return f"{type(self).__name__}(htcondor_conn_id={self.htcondor_conn_id!r})"


    # ---------------------------------------------------------------- connection -> clients
    @cached_property
    def connection(self) -> Connection:
        """Return the Airflow connection (its secrets registered with the log masker)."""
        conn = self.get_connection(self.htcondor_conn_id)
        from airflow.sdk.log import mask_secret

        for secret in (conn.password, conn.extra_dejson.get("token"), conn.extra_dejson.get("execute_token")):
            if secret:
                mask_secret(secret)
        return conn

    @property
    def extras(self) -> dict[str, Any]:
        """Return the connection's extra fields."""
        return dict(self.connection.extra_dejson)

    @property
    def collector_address(self) -> str:
        """Return ``host:port`` of the collector (Host and Port, port 9618 by default)."""
        conn = self.connection
        host = str(self.extras.get("collector") or conn.host or "").strip()
        if not host or not _HOST.match(host):
            raise CondorConnectionError(
                "has no collector address: set Host to the central manager (e.g. cm.example.org)",
                what=f"connection {self.htcondor_conn_id}")
        if re.fullmatch(r"[^:]+:\d+", host):
            return host
        return f"{host}:{conn.port or COLLECTOR_PORT}"

    @cached_property
    def token(self) -> str | None:
        """Return Airflow's IDTOKEN: the ``token`` extra, else one signed with the pool password, else None."""
        extras = self.extras
        if extras.get("token"):
            return str(extras["token"])
        password, domain = self.connection.password, extras.get("trust_domain")
        if password and domain:
            token = create_token(password, identity=f"{extras.get('admin_user') or 'airflow'}@{domain}",
                                 trust_domain=str(domain))
            from airflow.sdk.log import mask_secret

            mask_secret(token)
            return token
        return None

    def pool_credentials(self) -> PoolCredentials:
        """Return the pool credentials kept in the connection.

        See :mod:`airflow_cloud_paas.services.condor.credentials`.
        """
        return credentials_from_connection(self.connection)

    @property
    def clients(self) -> CondorClients:
        """Return the client factory: the one given, else the one :func:`use_clients` set, else the bindings."""
        if self._clients is not None:
            return self._clients
        return _OVERRIDE[-1] if _OVERRIDE else BindingsClients()

    @cached_property
    def collector(self) -> Any:
        """Return the collector client (authenticated with the token)."""
        address = self.collector_address
        try:
            return self.clients.collector(address, self.token)
        except (htcondor2.HTCondorException, ValueError) as err:
            raise _bindings_error(err, f"collector {address}",
                                  "check the address, that port 9618 is open, and the token") from err

    @cached_property
    def schedd(self) -> Any:
        """Return the schedd client: the ``schedd_name`` extra's, or the pool's only schedd."""
        name = self.extras.get("schedd_name")
        what = f"schedd {name or '(any)'} of collector {self.collector_address}"
        try:
            if name:
                location = self.collector.locate(htcondor2.DaemonTypes.Schedd, name)
            else:
                ads = self.collector.query(htcondor2.AdTypes.Schedd, None, ["Name", "MyAddress", "Machine"])
                if len(ads) != 1:
                    names = sorted(str(a.get("Name")) for a in ads)
                    raise CondorConnectionError(
                        f"the pool has {len(ads)} schedds ({', '.join(names) or 'none yet'}): set the "
                        "connection's schedd_name extra" if ads else "no schedd has registered yet; wait for "
                        "the submit node or check its configuration", what=what)
                location = ads[0]
            return self.clients.schedd(location)
        except (htcondor2.HTCondorException, ValueError) as err:
            raise _bindings_error(err, what, "check the schedd_name extra and that the submit node runs") from err

    def test_connection(self) -> tuple[bool, str]:
        """Return whether the collector answers and how many slots it knows (the UI's Test button)."""
        try:
            slots = self.collector.query(htcondor2.AdTypes.Startd, None, ["Name"])
        except (CondorError, htcondor2.HTCondorException) as err:
            return False, str(err)
        return True, f"collector {self.collector_address} answers: {len(slots)} slot(s)"

    # ---------------------------------------------------------------- queue and slots
    def _call(self, what: str, fix: str, function, *args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except (htcondor2.HTCondorException, classad2.ClassAdException) as err:
            raise _bindings_error(err, what, fix) from err

    def queue_stats(self, now: float | None = None) -> QueueStats:
        """Return the queue's job counts and what its idle jobs request.

        Scheduler- and local-universe jobs (DAGMan itself) run on the schedd: they are counted but ask
        no slot, so their requests are left out.

        :param now: the time wait times are measured to (default now)
        """
        when = time.time() if now is None else now
        ads = self._call("schedd queue", "check that the submit node runs", self.schedd.query,
                         "JobStatus == 1 || JobStatus == 2 || JobStatus == 5 || JobStatus == 6", _JOB_ATTRS)
        idle, running, held, jobs = 0, 0, 0, []
        for ad in ads:
            status = _int(ad, "JobStatus")
            if status == IDLE:
                idle += 1
                if _int(ad, "JobUniverse", 5) in (7, 12):
                    continue
                since = _int(ad, "EnteredCurrentStatus") or _int(ad, "QDate") or int(when)
                jobs.append(IdleJob(
                    job_id=f"{_int(ad, 'ClusterId')}.{_int(ad, 'ProcId')}",
                    request_cpus=_int(ad, "RequestCpus", 1),
                    request_memory_mb=_int(ad, "RequestMemory"),
                    request_gpus=_int(ad, "RequestGPUs"),
                    wait_s=max(0.0, when - since),
                ))
            elif status in (RUNNING, TRANSFERRING):
                running += 1
            elif status == HELD:
                held += 1
        jobs.sort(key=lambda j: (-j.wait_s, j.job_id))
        return QueueStats(
            idle=idle, running=running, held=held,
            idle_cpus=sum(j.request_cpus for j in jobs), idle_memory_mb=sum(j.request_memory_mb for j in jobs),
            idle_gpus=sum(j.request_gpus for j in jobs), idle_jobs=tuple(jobs), taken_at=when,
        )

    def slots(self, constraint: str | None = None) -> list[ExecuteNode]:
        """Return each execute node the collector knows, its slots summed, sorted by machine.

        :param constraint: a ClassAd expression on slot ads (e.g. ``CloudPaaSDeployment == "d1"``)
        """
        ads = self._call(f"collector {self.collector_address}", "check that the central manager runs",
                         self.collector.query, htcondor2.AdTypes.Startd, constraint, _SLOT_ATTRS)
        machines: dict[str, list[classad2.ClassAd]] = {}
        for ad in ads:
            name = str(ad.get("Machine") or str(ad.get("Name", "")).split("@")[-1])
            machines.setdefault(name, []).append(ad)
        nodes = []
        for machine, slots in sorted(machines.items()):
            pslots = [s for s in slots if s.get("PartitionableSlot") is True]
            claimed = [s for s in slots if s.get("State") == "Claimed"]
            busy = {k: sum(_int(s, k) for s in claimed) for k in ("Cpus", "Memory", "GPUs")}
            if pslots:  # a partitionable slot offers what is left; its Total* attributes are the whole node
                total = {k: sum(_int(p, f"TotalSlot{k}", _int(p, k)) for p in pslots) for k in ("Cpus", "Memory",
                                                                                                  "GPUs")}
            else:
                total = {k: sum(_int(s, k) for s in slots) for k in ("Cpus", "Memory", "GPUs")}
            main = pslots[0] if pslots else slots[0]
            nodes.append(ExecuteNode(
                machine=machine,
                state="Claimed" if claimed else str(main.get("State", "Unknown")),
                activity="Busy" if claimed and str(main.get("Activity")) != "Retiring" else str(main.get("Activity",
                                                                                                         "Unknown")),
                cpus=total["Cpus"], busy_cpus=busy["Cpus"], memory_mb=total["Memory"],
                busy_memory_mb=busy["Memory"], gpus=total["GPUs"], busy_gpus=busy["GPUs"], slots=len(slots),
                draining=any(s.get("Draining") is True for s in slots),
                deployment_id=main.get("CloudPaaSDeployment"),
            ))
        return nodes

    # ---------------------------------------------------------------- jobs
    def submit(self, description: Mapping[str, str] | str, count: int = 0, *,
               itemdata: Sequence[Mapping[str, str]] | None = None) -> int:
        """Submit the jobs of a submit description; return the cluster id.

        :param description: submit commands (a dict, or submit-file text that may end with a queue statement)
        :param count: jobs to queue per item; 0: as the queue statement says (one job without one)
        :param itemdata: item data (one dict per item), instead of the queue statement's
        """
        try:
            if isinstance(description, str):
                submit = htcondor2.Submit(description)
            else:
                submit = htcondor2.Submit({str(k): str(v) for k, v in description.items()})
        except (ValueError, TypeError, htcondor2.HTCondorException) as err:
            raise CondorSubmitError(f"the submit description does not parse ({err}); check its syntax and queue "
                                    "statement", what="submit description") from err
        kwargs: dict[str, Any] = {"count": int(count)}
        if itemdata is not None:
            kwargs["itemdata"] = iter([dict(i) for i in itemdata])
        return self._submit(submit, "submit description", **kwargs)

    def _submit(self, submit: htcondor2.Submit, what: str, **kwargs: Any) -> int:
        try:
            result = self.schedd.submit(submit, **kwargs)
        except (htcondor2.HTCondorException, ValueError, TypeError) as err:
            detail = " ".join(str(err).split())[:400]
            raise CondorSubmitError(f"the schedd refused it: {detail}", what=what) from err
        cluster = int(result.cluster())
        self.log.info("Submitted %d job(s) as cluster %d", result.num_procs(), cluster)
        return cluster

    def submit_dag(self, dag_file: str | os.PathLike, options: Mapping[str, Any] | None = None, *,
                   dagman_path: str = DAGMAN_PATH) -> int:
        """Submit a DAGMan DAG; return the cluster id of its DAGMan job.

        The bindings write ``<dag_file>.condor.sub`` next to the DAG; the DAG file and its nodes' submit
        files must be readable by the schedd (run this on the submit node or on a shared file system).

        :param dag_file: the DAG description file
        :param options: ``condor_submit_dag`` options (``maxidle``, ``batchname``, ``force``...)
        :param dagman_path: where ``condor_dagman`` is on the submit node
        """
        path = Path(dag_file)
        if not path.is_file():
            raise CondorSubmitError(f"{path} does not exist", what="DAG file")
        merged = {"DagmanPath": dagman_path, **dict(options or {})}
        try:
            submit = htcondor2.Submit.from_dag(str(path), merged)
        except (htcondor2.HTCondorException, ValueError, TypeError) as err:
            raise CondorSubmitError(f"cannot make its DAGMan job ({' '.join(str(err).split())[:400]}); check the "
                                    "DAG's syntax and options", what=f"DAG {path}") from err
        return self._submit(submit, f"DAG {path}")

    def job_status(self, cluster_id: int) -> ClusterStatus:
        """Return where the jobs of a cluster stand (queue, then history for those that left it).

        :param cluster_id: the cluster
        """
        cluster = int(cluster_id)
        constraint = f"ClusterId == {cluster}"
        what = f"cluster {cluster}"
        queued = self._call(what, "check that the submit node runs", self.schedd.query, constraint, _JOB_ATTRS)
        seen = {_int(ad, "ProcId") for ad in queued}
        gone = [ad for ad in self._call(what, "check that the submit node runs", self.schedd.history, constraint,
                                        _JOB_ATTRS, -1) if _int(ad, "ProcId") not in seen]
        if not queued and not gone:
            raise CondorJobNotFoundError("no job of it is in the queue or the history: check the cluster id and "
                                         "the schedd (schedd_name)", what=what)
        counts = {"idle": 0, "running": 0, "held": 0, "completed": 0, "removed": 0}
        exits: dict[int, int | None] = {}
        holds = []
        for ad in [*queued, *gone]:
            status = _int(ad, "JobStatus")
            if status == COMPLETED:
                counts["completed"] += 1
                exits[_int(ad, "ProcId")] = _int(ad, "ExitCode") if "ExitCode" in ad else None
            elif status == REMOVED:
                counts["removed"] += 1
            elif status == HELD:
                counts["held"] += 1
                holds.append(str(ad.get("HoldReason") or "no reason given"))
            elif status in (RUNNING, TRANSFERRING, SUSPENDED):
                counts["running"] += 1
            else:
                counts["idle"] += 1
        return ClusterStatus(cluster_id=cluster, exit_codes=tuple(exits[p] for p in sorted(exits)),
                             hold_reasons=tuple(holds), **counts)

    def remove_jobs(self, cluster_id: int, reason: str = "removed by Airflow") -> int:
        """Remove the queued jobs of a cluster; return how many were removed.

        :param cluster_id: the cluster
        :param reason: recorded in the jobs' ads and event logs
        """
        result = self._call(f"cluster {cluster_id}", "check the cluster id", self.schedd.act,
                            htcondor2.JobAction.Remove, f"ClusterId == {int(cluster_id)}", reason)
        return _int(result, "TotalSuccess")

    @staticmethod
    def read_job_log(path: str | os.PathLike) -> list[dict[str, Any]]:
        """Return the events of a job event log, read by ``htcondor2.JobEventLog``.

        :param path: the job's ``log`` file
        """
        try:
            with contextlib.closing(htcondor2.JobEventLog(str(path))) as log:
                return [{"type": htcondor2.JobEventType(event.type).name, "cluster": event.cluster,
                         "proc": event.proc, "timestamp": event.timestamp, **dict(event.items())}
                        for event in log.events(stop_after=0)]
        except htcondor2.HTCondorException as err:
            raise CondorError(f"cannot read it ({err})", what=f"job event log {path}") from err

    # ---------------------------------------------------------------- execute nodes
    def _locate(self, daemon_type: Any, machine: str) -> classad2.ClassAd:
        try:
            return self.collector.locate(daemon_type, machine)
        except htcondor2.HTCondorException as err:
            raise CondorNodeNotFoundError(
                f"the collector {self.collector_address} does not know it ({' '.join(str(err).split())[:200]}); "
                "check the name against slots()", what=f"execute node {machine}") from err

    def drain_node(self, machine: str, *, how: str = "graceful", exit_on_completion: bool = False,
                   check_expr: str | None = None, start_expr: str | None = None,
                   reason: str | None = "drained by Airflow") -> str:
        """Drain an execute node: it takes no new job; return the drain request id.

        :param machine: the machine's name (as :meth:`slots` lists it)
        :param how: ``graceful`` (jobs finish), ``quick`` (jobs finish within their retirement time) or ``fast``
            (jobs are evicted now and requeued)
        :param exit_on_completion: the startd exits once drained (the node leaves the pool)
        :param check_expr: must be true on every slot for draining to start
        :param start_expr: the START expression while draining (default: no job)
        :param reason: published as the node's ``DrainReason``
        """
        kinds = {"graceful": htcondor2.DrainTypes.Graceful, "quick": htcondor2.DrainTypes.Quick,
                 "fast": htcondor2.DrainTypes.Fast}
        if how not in kinds:
            raise ValueError(f"how={how!r} is not one of {', '.join(kinds)}")
        location = self._locate(htcondor2.DaemonTypes.Startd, machine)
        completion = htcondor2.CompletionType.Exit if exit_on_completion else htcondor2.CompletionType.Nothing
        try:
            request = self.clients.startd(location).drainJobs(kinds[how], completion, check_expr, start_expr, reason)
        except htcondor2.HTCondorException as err:
            raise _bindings_error(err, f"execute node {machine}",
                                  "Airflow's identity needs ADMINISTRATOR rights (admin_user)") from err
        self.log.info("Draining execute node %s (%s), request %s", machine, how, request)
        return str(request)

    def cancel_drain(self, machine: str, request_id: str | None = None) -> None:
        """Stop draining an execute node.

        :param machine: the machine's name
        :param request_id: the id :meth:`drain_node` returned (None: any drain)
        """
        location = self._locate(htcondor2.DaemonTypes.Startd, machine)
        try:
            self.clients.startd(location).cancelDrainJobs(request_id)
        except htcondor2.HTCondorException as err:
            raise _bindings_error(err, f"execute node {machine}", "check that it is draining") from err

    def retire_node(self, machine: str) -> None:
        """Shut an execute node's startd down peacefully: no new job, running jobs finish, then it exits.

        :param machine: the machine's name (as :meth:`slots` lists it)
        """
        location = self._locate(htcondor2.DaemonTypes.Master, machine)
        try:
            self.clients.send_command(location, DAEMON_OFF_PEACEFUL, "STARTD")
        except htcondor2.HTCondorException as err:
            raise _bindings_error(err, f"execute node {machine}",
                                  "Airflow's identity needs ADMINISTRATOR rights (admin_user)") from err
        self.log.info("Retiring execute node %s (peaceful shutdown of its startd)", machine)
