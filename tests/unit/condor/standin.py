"""A STAND-IN for an HTCondor pool at the ``htcondor2`` bindings' boundary, for tests: no daemon runs here.

No HTCondor daemon can be installed on the machines this project is tested on, so the schedd, the
collector and the startds are replaced, at the narrowest boundary, by objects with the same method
names and signatures as the ``htcondor2`` ones :class:`~airflow_cloud_paas.hooks.htcondor.HTCondorHook` calls.
Everything else is the real thing:

- jobs are real ``classad2.ClassAd`` objects made from a real ``htcondor2.Submit`` (its commands,
  macros, queue statement and item data, expanded by the bindings' own ``Submit.expand``);
- constraints and projections are real ClassAd expressions, evaluated by ``classad2``;
- a job runs on a slot only if the two ads match both ways (``ClassAd.symmetricMatch``), as in the
  negotiator; a partitionable slot is carved into dynamic slots as a startd does;
- every job writes a real job event log (the classic format) that ``htcondor2.JobEventLog`` reads;
- given the pool's signing key, tokens are checked as a daemon would (signature, issuer = trust domain),
  and administrator commands (drain, peaceful shutdown) need an administrator identity;
- daemon commands are decoded by their wire code (``condor_commands.h``), not by the Python enum's name;
- ``Schedd.edit`` sets job attributes as ClassAd expressions, for the job's owner only.

What it does NOT emulate: networking, the shadow and the starter (a job's executable is never run; it
"runs" for ``run_ticks`` calls of :meth:`StandInPool.tick`, then exits with ``MY.StandInExitCode``, 0 by
default), file transfer, fair share and priorities beyond ``JobPrio`` order, the real defaults of
``request_memory``/``request_disk`` (128 MB and none here), claim reuse, preemption, DAGMan itself
(a DAGMan job is a scheduler-universe job that runs and exits like any other), and the exact wording
of the daemons' errors (they are raised as ``htcondor2.HTCondorException`` with a similar message).

Time only moves when :meth:`StandInPool.tick` is called, or, with ``auto_tick=True``, once before each
schedd query (so a poller such as a trigger sees jobs progress).
"""

from __future__ import annotations

import copy
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import classad2
import htcondor2

from airflow_cloud_paas.services.condor.credentials import read_token
from airflow_cloud_paas.services.condor.errors import CondorCredentialError

IDLE, RUNNING, REMOVED, COMPLETED, HELD = 1, 2, 3, 4, 5
_UNIVERSES = {"standard": 1, "vanilla": 5, "docker": 5, "container": 5, "scheduler": 7, "grid": 9, "java": 10,
              "parallel": 11, "local": 12, "vm": 13}
_SIZE = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*([KMGTP]?)(I?B)?\s*$", re.IGNORECASE)
_ID_MACROS = re.compile(r"\$\((Cluster|ClusterId|Process|ProcId|Step|ItemIndex|Row)\)", re.IGNORECASE)
_JOB_ID = re.compile(r"^\s*(\d+)(?:\.(\d+))?\s*$")
#: daemon command codes (HTCondor's condor_commands.h) -> names; the codes are what goes on the wire
DAEMON_COMMANDS = {453: "Restart", 454: "DaemonsOff", 455: "DaemonsOn", 461: "DaemonsOffFast", 467: "DaemonOff",
                   468: "DaemonOffFast", 469: "DaemonOn", 483: "DaemonOffPeaceful", 484: "DaemonsOffPeaceful",
                   485: "RestartPeaceful", 60004: "Reconfig", 60005: "OffGraceful", 60006: "OffFast",
                   60015: "OffPeaceful", 60016: "SetPeacefulShutdown"}
#: submit commands -> job ad attributes, with how the value is converted
_COMMANDS: dict[str, tuple[str, str]] = {
    "executable": ("Cmd", "path"),
    "arguments": ("Args", "string"),
    "args": ("Args", "string"),
    "input": ("In", "path"),
    "output": ("Out", "path"),
    "error": ("Err", "path"),
    "log": ("UserLog", "path"),
    "environment": ("Environment", "string"),
    "request_cpus": ("RequestCpus", "int"),
    "request_memory": ("RequestMemory", "mb"),
    "request_disk": ("RequestDisk", "kb"),
    "request_gpus": ("RequestGPUs", "int"),
    "priority": ("JobPrio", "int"),
    "batch_name": ("JobBatchName", "string"),
    "accounting_group": ("AcctGroup", "string"),
    "accounting_group_user": ("AcctGroupUser", "string"),
    "docker_image": ("DockerImage", "string"),
    "container_image": ("ContainerImage", "string"),
    "notification": ("JobNotification", "string"),
}


def _fail(message: str) -> htcondor2.HTCondorException:
    return htcondor2.HTCondorException(message)


def _size(value: str, unit: str) -> int | None:
    """Return a submit-language size (``2GB``, ``512``, ``1.5 G``) in MB (``unit='mb'``) or KB (``'kb'``)."""
    match = _SIZE.match(value)
    if not match:
        return None
    number, prefix = float(match.group(1)), (match.group(2) or "").upper()
    if not prefix:  # no unit: request_memory is in MB, request_disk in KB
        return int(number)
    kib = number * 1024 ** " KMGTP".index(prefix) / 1024
    return int(-(-kib // (1024 if unit == "mb" else 1)))


def _truthy(value: str) -> bool:
    return value.strip().lower() in ("true", "yes", "1", "t", "y")


def _ids(value: str, cluster: int, proc: int, row: int) -> str:
    names = {"cluster": cluster, "clusterid": cluster, "process": proc, "procid": proc, "step": 0,
             "itemindex": row, "row": row}
    return _ID_MACROS.sub(lambda m: str(names[m.group(1).lower()]), value)


def _constraint(spec: Any) -> classad2.ExprTree:
    if isinstance(spec, classad2.ExprTree):
        return spec
    text = "true" if spec is None or str(spec).strip() == "" else str(spec)
    try:
        return classad2.ExprTree(text)
    except classad2.ClassAdException as err:
        raise _fail(f"Unable to parse constraint {text!r}") from err


def _matches(expr: classad2.ExprTree, ad: classad2.ClassAd) -> bool:
    return expr.eval(ad) is True


def _project(ad: classad2.ClassAd, projection: Iterable[str] | None) -> classad2.ClassAd:
    names = list(projection or [])
    if not names:
        return copy.deepcopy(ad)
    out = classad2.ClassAd()
    for name in names:
        if name in ad:
            out[name] = ad.lookup(name)  # the ad being assigned to keeps its own copy
    return out


@dataclass
class _Job:
    ad: classad2.ClassAd
    log: str | None
    ticks_run: int = 0
    slot: str | None = None


@dataclass
class _Machine:
    name: str
    address: str
    pslot: classad2.ClassAd
    dynamic: dict[str, classad2.ClassAd] = field(default_factory=dict)
    draining: bool = False
    exit_when_drained: bool = False
    retiring: bool = False
    drain_id: str | None = None
    next_dslot: int = 1


class StandInPool:
    """A pool of one collector, one schedd and execute nodes, held in memory; the hook's client factory.

    It offers the four calls :class:`~.hook.HTCondorHook` makes at the bindings' boundary
    (:meth:`collector`, :meth:`schedd`, :meth:`startd`, :meth:`send_command`) plus the pool-side controls a
    test drives (:meth:`add_execute_node`, :meth:`tick`).

    :param address: the collector's ``host:port`` (a hook must be configured with it)
    :param schedd_name: the schedd's name
    :param trust_domain: the pool's trust domain (the issuer tokens must have)
    :param pool_password: the signing key; set, a token signed with it is required (else any or none)
    :param administrators: identities allowed to drain and shut down startds (``user@domain``)
    :param run_ticks: ticks a job runs before it exits
    :param auto_tick: tick once before each schedd query
    :param clock: the time source (seconds since the epoch)
    """

    def __init__(
        self,
        *,
        address: str = "cm.standin:9618",
        schedd_name: str = "submit.standin",
        trust_domain: str = "standin.cloud-paas",
        pool_password: str | None = None,
        administrators: Iterable[str] = (),
        run_ticks: int = 1,
        auto_tick: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.address = address
        self.trust_domain = trust_domain
        self._pool_password = pool_password
        self.administrators = set(administrators)
        self.run_ticks = run_ticks
        self.auto_tick = auto_tick
        self.clock = clock
        self.machines: dict[str, _Machine] = {}
        self.identity: str | None = None
        self.lock = threading.RLock()
        self.schedd_ = StandInSchedd(self, schedd_name)
        self.collector_ = StandInCollector(self)
        self.commands: list[tuple[str, str, str | None]] = []  # (daemon, command, target) received

    def __repr__(self) -> str:  # never the signing key
        return f"StandInPool(address={self.address!r}, machines={sorted(self.machines)})"

    # ------------------------------------------------------------------ the hook's client factory
    def collector(self, address: str | None, token: str | None = None) -> StandInCollector:
        """Return the collector at ``address``, authenticating with ``token`` as a daemon would.

        :param address: ``host:port`` of the collector
        :param token: an IDTOKEN
        """
        if address != self.address:
            raise _fail(f"Failed to connect to collector {address}: no collector listens there")
        if self._pool_password is not None:
            if not token:
                raise _fail("AUTHENTICATE:1003:Failed to authenticate with any method")
            try:
                claims = read_token(token, self._pool_password, trust_domain=self.trust_domain)
            except CondorCredentialError as err:
                raise _fail(f"AUTHENTICATE:1003:Failed to authenticate with any method ({err.message})") from None
            self.identity = claims["sub"]
        elif token:
            self.identity = read_token(token)["sub"]
        return self.collector_

    def schedd(self, location: classad2.ClassAd | None = None) -> StandInSchedd:
        """Return the schedd a ``Schedd`` ad locates.

        :param location: the schedd's ad, as :meth:`StandInCollector.locate` returns it
        """
        if location is not None and location.get("Name") != self.schedd_.name:
            raise _fail(f"Unable to locate schedd {location.get('Name')!r}")
        return self.schedd_

    def startd(self, location: classad2.ClassAd) -> StandInStartd:
        """Return the startd a ``Startd`` ad locates.

        :param location: the startd's ad
        """
        machine = self.machines.get(str(location.get("Machine") or location.get("Name")))
        if machine is None:
            raise _fail(f"Unable to locate startd {location.get('Name')!r}")
        return StandInStartd(self, machine.name)

    def send_command(self, ad: classad2.ClassAd, command: Any, target: str | None = None) -> None:
        """Deliver a daemon command (``htcondor2.send_command``): the master of an execute node obeys it.

        :param ad: the daemon's ad (a ``Master`` ad)
        :param command: an ``htcondor2.DaemonCommands`` member or a command code
        :param target: the subsystem the master passes it to (``STARTD``)
        """
        # decoded by its code, as a daemon does (not by the Python enum's name)
        name = DAEMON_COMMANDS.get(int(command), f"command {int(command)}")
        self.require_administrator(f"send {name}")
        with self.lock:
            machine = self.machines.get(str(ad.get("Machine") or ad.get("Name")))
            if machine is None:
                raise _fail(f"Unable to locate master {ad.get('Name')!r}")
            self.commands.append((machine.name, name, target))
            if name in ("DaemonOffPeaceful", "DaemonsOffPeaceful") and target in (None, "STARTD"):
                machine.retiring = True  # no new job; the startd exits once its jobs are done
                machine.pslot["START"] = False
                self._finish_drains()
            elif name in ("DaemonOffFast", "DaemonsOffFast", "DaemonOff", "DaemonsOff"):
                for slot in list(machine.dynamic):
                    self._evict(machine, slot, "The startd was shut down")
                self._remove(machine.name)
            else:
                raise _fail(f"the stand-in does not emulate the {name} command")

    def require_administrator(self, what: str) -> None:
        """Raise a permission error unless the authenticated identity is an administrator.

        :param what: the refused action, named in the error
        """
        if self._pool_password is not None and self.identity not in self.administrators:
            raise _fail(f"PERMISSION DENIED to {self.identity} to {what} (needs ADMINISTRATOR)")

    # ------------------------------------------------------------------ the pool side
    def add_execute_node(self, machine: str, *, cpus: int = 1, memory_mb: int = 1024, gpus: int = 0,
                         attributes: Mapping[str, Any] | None = None) -> classad2.ClassAd:
        """Start an execute node: one partitionable slot with these resources; return its slot ad.

        :param machine: the machine's name
        :param cpus: CPUs offered
        :param memory_mb: memory offered (MB)
        :param gpus: GPUs offered
        :param attributes: more machine attributes (values are ClassAd literals or ``ExprTree``)
        """
        with self.lock:
            address = f"<10.0.{len(self.machines) // 250}.{len(self.machines) % 250 + 10}:9618?alias={machine}>"
            ad = classad2.ClassAd()
            for key, value in {
                "MyType": "Machine", "TargetType": "Job", "Name": f"slot1@{machine}", "Machine": machine,
                "MyAddress": address, "SlotID": 1, "PartitionableSlot": True, "State": "Unclaimed",
                "Activity": "Idle", "Cpus": cpus, "TotalSlotCpus": cpus, "Memory": memory_mb,
                "TotalSlotMemory": memory_mb, "GPUs": gpus, "TotalSlotGPUs": gpus, "Disk": 10_000_000,
                "OpSys": "LINUX", "Arch": "X86_64", "START": True, "Draining": False,
                "EnteredCurrentState": int(self.clock()),
            }.items():
                ad[key] = value
            ad["Requirements"] = classad2.ExprTree(
                "START && (TARGET.RequestCpus <= MY.Cpus) && (TARGET.RequestMemory <= MY.Memory) && "
                "(TARGET.RequestGPUs =?= undefined || TARGET.RequestGPUs <= MY.GPUs)")
            for key, value in (attributes or {}).items():
                ad[key] = value
            self.machines[machine] = _Machine(machine, address, ad)
            return copy.deepcopy(ad)

    def slot_ads(self) -> list[classad2.ClassAd]:
        """Return every slot ad (partitionable and dynamic), as the collector holds them."""
        with self.lock:
            return [ad for m in self.machines.values() for ad in (m.pslot, *m.dynamic.values())]

    def tick(self, count: int = 1) -> None:
        """Move time on: running jobs advance (and exit), then one negotiation cycle, then drains finish.

        :param count: how many ticks
        """
        for _ in range(count):
            with self.lock:
                self.schedd_.advance()
                self.negotiate()
                self._finish_drains()

    def negotiate(self) -> int:
        """Match idle jobs to slots (both ads' Requirements), carving dynamic slots; return how many started."""
        started = 0
        with self.lock:
            for job in self.schedd_.idle_jobs():
                if job.ad.get("JobUniverse") in (7, 12):  # scheduler/local universe: runs on the schedd itself
                    self.schedd_.start(job, None, self.schedd_.address)
                    started += 1
                    continue
                for machine in sorted(self.machines.values(), key=lambda m: m.name):
                    if machine.draining or machine.retiring or not job.ad.symmetricMatch(machine.pslot):
                        continue
                    slot = self._carve(machine, job.ad)
                    self.schedd_.start(job, slot, machine.address)
                    started += 1
                    break
        return started

    def _carve(self, machine: _Machine, job: classad2.ClassAd) -> str:
        cpus, memory = int(job.eval("RequestCpus")), int(job.eval("RequestMemory"))
        gpus = job.get("RequestGPUs")
        gpus = int(job.eval("RequestGPUs")) if gpus is not None else 0
        name = f"slot1_{machine.next_dslot}@{machine.name}"
        machine.next_dslot += 1
        dslot = copy.deepcopy(machine.pslot)
        for key, value in {"Name": name, "PartitionableSlot": False, "DynamicSlot": True, "State": "Claimed",
                           "Activity": "Busy", "Cpus": cpus, "Memory": memory, "GPUs": gpus,
                           "RemoteOwner": job.get("User"), "JobId": f"{job['ClusterId']}.{job['ProcId']}",
                           "EnteredCurrentState": int(self.clock())}.items():
            dslot[key] = value
        machine.dynamic[name] = dslot
        for key, value in (("Cpus", cpus), ("Memory", memory), ("GPUs", gpus)):
            machine.pslot[key] = int(machine.pslot[key]) - value
        return name

    def release_slot(self, machine_name: str, slot: str) -> None:
        """Give a dynamic slot's resources back to its partitionable slot.

        :param machine_name: the machine
        :param slot: the dynamic slot's name
        """
        machine = self.machines.get(machine_name)
        if machine is None or slot not in machine.dynamic:
            return
        dslot = machine.dynamic.pop(slot)
        for key in ("Cpus", "Memory", "GPUs"):
            machine.pslot[key] = int(machine.pslot[key]) + int(dslot[key])

    def _evict(self, machine: _Machine, slot: str, reason: str) -> None:
        self.schedd_.evict(slot, reason)
        self.release_slot(machine.name, slot)

    def _finish_drains(self) -> None:
        for machine in list(self.machines.values()):
            if not (machine.draining or machine.retiring) or machine.dynamic:
                continue
            if machine.retiring or machine.exit_when_drained:
                self._remove(machine.name)
            else:
                machine.pslot["State"], machine.pslot["Activity"] = "Drained", "Idle"

    def _remove(self, machine_name: str) -> None:
        self.machines.pop(machine_name, None)


class StandInCollector:
    """The collector: slot, schedd and master ads, queried with real ClassAd constraints.

    :param pool: the stand-in pool
    """

    def __init__(self, pool: StandInPool) -> None:
        self._pool = pool

    def _ads(self, ad_type: Any) -> list[classad2.ClassAd]:
        kind = getattr(ad_type, "name", str(ad_type))
        pool = self._pool
        out: list[classad2.ClassAd] = []
        if kind in ("Startd", "Any"):
            out += pool.slot_ads()
        if kind in ("Schedd", "Any"):
            out.append(pool.schedd_.ad())
        if kind in ("Master", "Any"):
            for machine in pool.machines.values():
                ad = classad2.ClassAd()
                for key, value in (("MyType", "DaemonMaster"), ("Name", machine.name), ("Machine", machine.name),
                                   ("MyAddress", machine.address)):
                    ad[key] = value
                out.append(ad)
        if kind in ("StartDaemon", "Any"):
            for machine in pool.machines.values():
                ad = classad2.ClassAd()
                for key, value in (("MyType", "StartD"), ("Name", machine.name), ("Machine", machine.name),
                                   ("MyAddress", machine.address)):
                    ad[key] = value
                out.append(ad)
        return out

    def query(self, ad_type: Any = htcondor2.AdTypes.Any, constraint: str | None = None,
              projection: list[str] | None = None, statistics: str | None = None) -> list[classad2.ClassAd]:
        """Return the ads of a type that satisfy the constraint, projected (``Collector.query``).

        :param ad_type: an ``htcondor2.AdTypes`` member
        :param constraint: a ClassAd expression
        :param projection: attributes to keep
        :param statistics: ignored
        """
        expr = _constraint(constraint)
        with self._pool.lock:
            return [_project(ad, projection) for ad in self._ads(ad_type) if _matches(expr, ad)]

    def locate(self, daemon_type: Any, name: str | None = None) -> classad2.ClassAd:
        """Return the location ad of one daemon (``Collector.locate``).

        :param daemon_type: an ``htcondor2.DaemonTypes`` member
        :param name: the daemon's name (a machine name for a startd or a master)
        """
        kind = getattr(daemon_type, "name", str(daemon_type))
        with self._pool.lock:
            if kind == "Schedd" and name in (None, self._pool.schedd_.name):
                return self._pool.schedd_.ad()
            if kind in ("Startd", "Master") and name is not None and name in self._pool.machines:
                ad_type = "StartDaemon" if kind == "Startd" else "Master"
                return next(a for a in self._ads(ad_type) if a.get("Name") == name)
            if kind == "Collector":
                ad = classad2.ClassAd()
                ad["Name"], ad["MyAddress"] = self._pool.address, f"<{self._pool.address}>"
                return ad
        raise _fail(f"Unable to locate daemon {kind} {name or ''}".strip())

    def locateAll(self, daemon_type: Any) -> list[classad2.ClassAd]:  # noqa: N802 - the bindings' name
        """Return the location ads of every daemon of a type (``Collector.locateAll``).

        :param daemon_type: an ``htcondor2.DaemonTypes`` member
        """
        kind = getattr(daemon_type, "name", str(daemon_type))
        return self._ads({"Startd": "StartDaemon"}.get(kind, kind))


class StandInStartd:
    """One execute node's startd: drain and cancel a drain (``htcondor2.Startd``).

    :param pool: the stand-in pool
    :param machine: the machine's name
    """

    def __init__(self, pool: StandInPool, machine: str) -> None:
        self._pool, self._machine = pool, machine

    def drainJobs(  # noqa: N802 - the bindings' name
        self, drain_type: Any = htcondor2.DrainTypes.Graceful, on_completion: Any = htcondor2.CompletionType.Nothing,
        check_expr: str | None = None, start_expr: str | None = None, reason: str | None = None,
    ) -> str:
        """Start draining: no new job (unless ``start_expr``), running ones end as ``drain_type`` says; return an id.

        :param drain_type: Graceful/Quick (jobs finish) or Fast (jobs are evicted now)
        :param on_completion: ``CompletionType.Exit`` makes the startd exit once drained
        :param check_expr: must be true on every slot for draining to start
        :param start_expr: the START expression while draining (default false)
        :param reason: why, published as ``DrainReason``
        """
        pool = self._pool
        pool.require_administrator("drain")
        with pool.lock:
            machine = pool.machines.get(self._machine)
            if machine is None:
                raise _fail(f"Unable to locate startd {self._machine}")
            if check_expr and not all(_matches(_constraint(check_expr), ad)
                                      for ad in (machine.pslot, *machine.dynamic.values())):
                raise _fail(f"Draining check expression {check_expr!r} is false on {self._machine}")
            machine.draining = True
            machine.exit_when_drained = getattr(on_completion, "name", "") == "Exit"
            machine.drain_id = f"drain-{self._machine}-{int(pool.clock() * 1000)}"
            machine.pslot["Draining"] = True
            machine.pslot["DrainReason"] = reason or "by command"
            machine.pslot["START"] = _constraint(start_expr) if start_expr else False
            if machine.dynamic:
                machine.pslot["State"], machine.pslot["Activity"] = "Drained", "Retiring"
            if getattr(drain_type, "name", "") == "Fast":
                for slot in list(machine.dynamic):
                    pool._evict(machine, slot, "The startd is draining fast")
            pool._finish_drains()
            return machine.drain_id

    def cancelDrainJobs(self, request_id: str | None = None) -> None:  # noqa: N802 - the bindings' name
        """Stop draining: the slot accepts jobs again.

        :param request_id: the id :meth:`drainJobs` returned (None: any)
        """
        pool = self._pool
        pool.require_administrator("cancel a drain")
        with pool.lock:
            machine = pool.machines.get(self._machine)
            if machine is None or not machine.draining:
                raise _fail(f"No drain in progress on {self._machine}")
            if request_id is not None and request_id != machine.drain_id:
                raise _fail(f"No drain {request_id!r} on {self._machine}")
            machine.draining, machine.exit_when_drained, machine.drain_id = False, False, None
            machine.pslot["Draining"], machine.pslot["START"] = False, True
            machine.pslot["State"], machine.pslot["Activity"] = "Unclaimed", "Idle"


class StandInSchedd:
    """The schedd: a job queue of real ClassAds, its history, job actions and event logs (``htcondor2.Schedd``).

    :param pool: the stand-in pool
    :param name: the schedd's name
    """

    def __init__(self, pool: StandInPool, name: str) -> None:
        self._pool = pool
        self.name = name
        self.address = f"<10.0.0.2:9618?alias={name}>"
        self._jobs: dict[tuple[int, int], _Job] = {}
        self._history: list[classad2.ClassAd] = []
        self._next_cluster = 1

    def ad(self) -> classad2.ClassAd:
        """Return the schedd's own ad, with its job counts."""
        ad = classad2.ClassAd()
        counts = {IDLE: 0, RUNNING: 0, HELD: 0}
        for job in self._jobs.values():
            status = int(job.ad["JobStatus"])
            counts[status] = counts.get(status, 0) + 1
        for key, value in (("MyType", "Scheduler"), ("Name", self.name), ("Machine", self.name),
                           ("MyAddress", self.address), ("TotalIdleJobs", counts[IDLE]),
                           ("TotalRunningJobs", counts[RUNNING]), ("TotalHeldJobs", counts[HELD])):
            ad[key] = value
        return ad

    # ------------------------------------------------------------------ htcondor2.Schedd methods
    def submit(self, description: htcondor2.Submit, count: int = 0, spool: bool = False,
               itemdata: Iterator[str] | Iterator[dict] | None = None, queue: str | None = None,
               ) -> htcondor2.SubmitResult:
        """Queue the jobs of a submit description; return a real ``htcondor2.SubmitResult``.

        :param description: the ``htcondor2.Submit`` object
        :param count: jobs per item (0: the queue statement's count, 1 without one)
        :param spool: not emulated (jobs are queued as usual)
        :param itemdata: item data overriding the queue statement's (dicts, or strings for its variables)
        :param queue: a queue statement replacing the description's
        """
        if not isinstance(description, htcondor2.Submit):
            raise TypeError("description must be an htcondor2.Submit object")
        if queue is not None and (count or itemdata is not None):
            raise ValueError("queue and count/itemdata are mutually exclusive")
        source = description
        if queue is not None:
            source = htcondor2.Submit(dict(description.items()))
            source.setQArgs(queue[len("queue "):] if queue.lower().startswith("queue ") else queue)
        qargs = (source.getQArgs() or "").strip()
        leading = re.match(r"^(\d+)\b", qargs)
        per_item = count or (int(leading.group(1)) if leading else 1)
        items = self._items(source, itemdata)
        pool = self._pool
        owner = (pool.identity or "nobody").split("@")[0]
        with pool.lock:
            cluster = self._next_cluster
            self._next_cluster += 1
            now = int(pool.clock())
            ads = []
            for row, item in enumerate(items):
                for _ in range(per_item):
                    proc = len(ads)
                    ads.append(self._job_ad(source, item, cluster, proc, row, owner, now))
            if not ads:
                raise _fail("Submit produced no jobs (empty item data)")
            for ad in ads:
                job = _Job(ad, ad.get("UserLog"))
                self._jobs[(cluster, int(ad["ProcId"]))] = job
                self._event(job, 0, f"Job submitted from host: {self.address}")
                if int(ad["JobStatus"]) == HELD:
                    self._event(job, 12, f"Job was held.\n\t{ad['HoldReason']}\n\tCode 1 Subcode 0")
        return htcondor2.SubmitResult(cluster, 0, len(ads), copy.deepcopy(ads[0]), None)

    def query(self, constraint: str | classad2.ExprTree = "True", projection: list[str] | None = None,
              callback: Callable[[classad2.ClassAd], Any] | None = None, limit: int = -1, opts: Any = None,
              ) -> list[classad2.ClassAd]:
        """Return the queued jobs that satisfy the constraint, projected (``Schedd.query``).

        :param constraint: a ClassAd expression
        :param projection: attributes to keep
        :param callback: called on each ad; its non-None results are returned instead
        :param limit: at most this many ads (-1: all)
        :param opts: ignored
        """
        if self._pool.auto_tick:
            self._pool.tick()
        expr = _constraint(constraint)
        with self._pool.lock:
            found = [_project(j.ad, projection) for _, j in sorted(self._jobs.items()) if _matches(expr, j.ad)]
        if limit is not None and limit >= 0:
            found = found[:limit]
        if callback is not None:
            found = [r for r in (callback(ad) for ad in found) if r is not None]
        return found

    def history(self, constraint: str | classad2.ExprTree | None = None, projection: list[str] | None = None,
                match: int = -1, since: Any = None) -> list[classad2.ClassAd]:
        """Return jobs that left the queue, newest first (``Schedd.history``).

        :param constraint: a ClassAd expression
        :param projection: attributes to keep
        :param match: at most this many ads (-1: all)
        :param since: ignored
        """
        expr = _constraint(constraint)
        with self._pool.lock:
            found = [_project(ad, projection) for ad in reversed(self._history) if _matches(expr, ad)]
        return found if match is None or match < 0 else found[:match]

    def act(self, action: Any, job_spec: Any, reason: str | None = None) -> classad2.ClassAd:
        """Remove, hold or release jobs (``Schedd.act``); return the summary ad.

        :param action: an ``htcondor2.JobAction`` member (Remove, RemoveX, Hold, Release)
        :param job_spec: a cluster id, ``"cluster.proc"`` ids, a list of them, or a constraint
        :param reason: recorded in the job ads and event logs
        """
        name = getattr(action, "name", str(action))
        with self._pool.lock:
            targets = self._select(job_spec)
            result = {"TotalSuccess": 0, "TotalBadStatus": 0, "TotalNotFound": 0 if targets else 1,
                      "TotalJobAds": len(targets)}
            for job in targets:
                status = int(job.ad["JobStatus"])
                if name in ("Remove", "RemoveX") and status not in (REMOVED, COMPLETED):
                    self._leave(job, REMOVED, 9, f"Job was aborted.\n\t{reason or 'via condor_rm'}")
                elif name == "Hold" and status in (IDLE, RUNNING):
                    self._stop(job)
                    job.ad["JobStatus"], job.ad["HoldReason"] = HELD, reason or "via condor_hold"
                    job.ad["HoldReasonCode"], job.ad["EnteredCurrentStatus"] = 1, int(self._pool.clock())
                    self._event(job, 12, f"Job was held.\n\t{job.ad['HoldReason']}\n\tCode 1 Subcode 0")
                elif name == "Release" and status == HELD:
                    job.ad["JobStatus"], job.ad["EnteredCurrentStatus"] = IDLE, int(self._pool.clock())
                    del job.ad["HoldReason"]
                    self._event(job, 13, f"Job was released.\n\t{reason or 'via condor_release'}")
                elif name in ("Remove", "RemoveX", "Hold", "Release"):
                    result["TotalBadStatus"] += 1
                    continue
                else:
                    raise _fail(f"the stand-in does not emulate the {name} action")
                result["TotalSuccess"] += 1
        ad = classad2.ClassAd()
        for key, value in result.items():
            ad[key] = value
        return ad

    def edit(self, job_spec: Any, attr: str, value: str | classad2.ExprTree, flags: Any = 0) -> int:
        """Set an attribute of the jobs ``job_spec`` selects (``Schedd.edit``); return how many were edited.

        As a schedd does, only a job's owner may edit it (queue super users are not emulated).

        :param job_spec: a cluster id, ``"cluster.proc"`` ids, a list of them, or a constraint
        :param attr: the attribute
        :param value: its new value, a ClassAd expression (text or ``ExprTree``)
        :param flags: ignored
        """
        owner = (self._pool.identity or "nobody").split("@")[0]
        with self._pool.lock:
            jobs = self._select(job_spec)
            for job in jobs:
                if job.ad.get("Owner") != owner:
                    raise _fail(f"PERMISSION DENIED to {owner} to edit job {job.ad['ClusterId']}.{job.ad['ProcId']} "
                                f"of {job.ad.get('Owner')}")
            for job in jobs:
                job.ad[attr] = value if isinstance(value, classad2.ExprTree) else self._expression(str(value), attr)
        return len(jobs)

    # ------------------------------------------------------------------ pool-side helpers
    def idle_jobs(self) -> list[_Job]:
        """Return idle jobs in negotiation order (JobPrio high first, then submission order)."""
        idle = [j for j in self._jobs.values() if int(j.ad["JobStatus"]) == IDLE]
        return sorted(idle, key=lambda j: (-int(j.ad.get("JobPrio") or 0), int(j.ad["ClusterId"]),
                                           int(j.ad["ProcId"])))

    def start(self, job: _Job, slot: str | None, host: str) -> None:
        """Mark a matched job running on a slot (or on the schedd) and log its execute event.

        :param job: the job
        :param slot: the dynamic slot's name, None for a job that runs on the schedd
        :param host: the executing host's address
        """
        now = int(self._pool.clock())
        job.slot, job.ticks_run = slot, 0
        job.ad["JobStatus"], job.ad["EnteredCurrentStatus"], job.ad["JobCurrentStartDate"] = RUNNING, now, now
        job.ad["NumJobStarts"] = int(job.ad.get("NumJobStarts") or 0) + 1
        job.ad["RemoteHost"] = slot or self.name
        extra = f"\n\tSlotName: {slot}" if slot else ""
        self._event(job, 1, f"Job executing on host: {host}{extra}")

    def advance(self) -> None:
        """Advance every running job by one tick; those that ran ``run_ticks`` ticks exit."""
        for job in [j for j in self._jobs.values() if int(j.ad["JobStatus"]) == RUNNING]:
            job.ticks_run += 1
            wanted = job.ad.get("StandInRunTicks")
            if job.ticks_run < (int(job.ad.eval("StandInRunTicks")) if wanted is not None else self._pool.run_ticks):
                continue
            code = int(job.ad.eval("StandInExitCode")) if job.ad.get("StandInExitCode") is not None else 0
            job.ad["ExitCode"], job.ad["ExitBySignal"], job.ad["CompletionDate"] = code, False, int(self._pool.clock())
            self._leave(job, COMPLETED, 5, "Job terminated.\n\t(1) Normal termination (return value "
                        f"{code})\n{_USAGE}")

    def evict(self, slot: str, reason: str) -> None:
        """Put the job of a slot back to idle (the startd evicted it) and log the eviction.

        :param slot: the dynamic slot's name
        :param reason: why
        """
        for job in self._jobs.values():
            if job.slot == slot and int(job.ad["JobStatus"]) == RUNNING:
                job.slot = None
                job.ad["JobStatus"], job.ad["EnteredCurrentStatus"] = IDLE, int(self._pool.clock())
                job.ad["LastVacateReason"] = reason
                self._event(job, 4, f"Job was evicted.\n\t(0) Job was not checkpointed.\n{_RUN_USAGE}")

    # ------------------------------------------------------------------ internals
    def _items(self, source: htcondor2.Submit, itemdata: Any) -> list[dict[str, str]]:
        if itemdata is None:
            data = source.itemdata()
            return [dict(i) if isinstance(i, Mapping) else {"Item": str(i)} for i in data] if data else [{}]
        items: list[dict[str, str]] = []
        names = [n.strip() for n in re.split(r"[,\s]+", (source.getQArgs() or "").split(" in ")[0]
                                              .split(" from ")[0]) if n.strip() and not n.strip().isdigit()]
        for item in itemdata:
            if isinstance(item, Mapping):
                items.append({str(k): str(v) for k, v in item.items()})
            else:
                values = [v.strip() for v in str(item).split(",")]
                keys = names or ["Item"]
                items.append(dict(zip(keys, values + [""] * (len(keys) - len(values)), strict=False)))
        return items

    def _job_ad(self, source: htcondor2.Submit, item: Mapping[str, str], cluster: int, proc: int, row: int,
                owner: str, now: int) -> classad2.ClassAd:
        raw = {k: _ids(v, cluster, proc, row) for k, v in source.items()}
        per_job = htcondor2.Submit({**raw, **{k: v for k, v in item.items() if k.lower() not in
                                              {c.lower() for c in raw}}})
        commands = {k.lower(): k for k in per_job.keys()}

        def value(command: str) -> str | None:
            key = commands.get(command)
            if key is None:
                return None
            try:
                return per_job.expand(key)
            except KeyError:  # a macro the bindings cannot expand here: keep the text
                return per_job[key]

        ad = classad2.ClassAd()
        iwd = value("initialdir") or value("initial_dir") or os.getcwd()
        universe = (value("universe") or "vanilla").strip().lower()
        if universe not in _UNIVERSES:
            raise _fail(f"Submit: unknown universe {universe!r}")
        base: dict[str, Any] = {
            "MyType": "Job", "TargetType": "Machine", "ClusterId": cluster, "ProcId": proc,
            "GlobalJobId": f"{self.name}#{cluster}.{proc}#{now}", "Owner": owner,
            "User": f"{owner}@{self._pool.trust_domain}", "QDate": now, "EnteredCurrentStatus": now,
            "JobStatus": IDLE, "JobUniverse": _UNIVERSES[universe], "Iwd": iwd, "RequestCpus": 1,
            "RequestMemory": 128, "JobPrio": 0, "NumJobStarts": 0,
        }
        for key, val in base.items():
            ad[key] = val
        if not value("executable"):
            raise _fail("Submit: no executable was given")
        for command, (attribute, kind) in _COMMANDS.items():
            text = value(command)
            if text is None or text == "":
                continue
            if kind == "path":
                ad[attribute] = text if os.path.isabs(text) or "://" in text else os.path.join(iwd, text)
            elif kind == "string" and attribute == "Args" and len(text) > 1 and text[0] == text[-1] == '"':
                ad["Arguments"] = text[1:-1].replace('""', '"')  # the new syntax, as condor_submit stores it
            elif kind == "string":
                ad[attribute] = text
            elif kind == "int" and re.fullmatch(r"\s*-?\d+\s*", text):
                ad[attribute] = int(text)
            elif kind in ("mb", "kb") and _size(text, kind) is not None:
                ad[attribute] = _size(text, kind)
            else:
                ad[attribute] = self._expression(text, command)
        for key in per_job.keys():  # +Attr / MY.Attr: custom job attributes, as ClassAd expressions
            if key.startswith("+") or key.upper().startswith("MY."):
                name = key[1:] if key.startswith("+") else key[3:]
                ad[name] = self._expression(value(key.lower()) or per_job[key], key)
        if _truthy(value("hold") or "false"):
            ad["JobStatus"], ad["HoldReason"], ad["HoldReasonCode"] = HELD, "submitted on hold at user's request", 15
        if ad["JobUniverse"] not in (7, 12):
            # as condor_submit does, the job also requires a slot big enough for what it requests
            clauses = [f"({value('requirements')})"] if value("requirements") else []
            clauses += ["(TARGET.Cpus >= RequestCpus)", "(TARGET.Memory >= RequestMemory)"]
            if "RequestGPUs" in ad:
                clauses.append("(TARGET.GPUs >= RequestGPUs)")
            ad["Requirements"] = self._expression(" && ".join(clauses), "requirements")
        return ad

    @staticmethod
    def _expression(text: str, command: str) -> classad2.ExprTree:
        try:
            return classad2.ExprTree(text)
        except classad2.ClassAdException as err:
            raise _fail(f"Submit: {command} = {text!r} is not a valid ClassAd expression") from err

    def _select(self, job_spec: Any) -> list[_Job]:
        if isinstance(job_spec, int) and not isinstance(job_spec, bool):
            return [j for (c, _), j in sorted(self._jobs.items()) if c == job_spec]
        if isinstance(job_spec, list | tuple):
            found = []
            for spec in job_spec:
                found += self._select(str(spec))
            return found
        match = _JOB_ID.match(str(job_spec)) if isinstance(job_spec, str) else None
        if match:
            cluster, proc = int(match.group(1)), match.group(2)
            return [j for (c, p), j in sorted(self._jobs.items()) if c == cluster and (proc is None or p == int(proc))]
        expr = _constraint(job_spec)
        return [j for _, j in sorted(self._jobs.items()) if _matches(expr, j.ad)]

    def _stop(self, job: _Job) -> None:
        if job.slot is not None:
            self._pool.release_slot(job.slot.split("@", 1)[1], job.slot)
            job.slot = None

    def _leave(self, job: _Job, status: int, event: int, text: str) -> None:
        self._stop(job)
        job.ad["JobStatus"], job.ad["EnteredCurrentStatus"] = status, int(self._pool.clock())
        self._event(job, event, text)
        self._jobs.pop((int(job.ad["ClusterId"]), int(job.ad["ProcId"])), None)
        self._history.append(job.ad)

    def _event(self, job: _Job, number: int, text: str) -> None:
        """Append one event to the job's log, in the classic format ``htcondor2.JobEventLog`` reads."""
        if not job.log:
            return
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self._pool.clock()))
        ident = f"({int(job.ad['ClusterId']):03d}.{int(job.ad['ProcId']):03d}.000)"
        os.makedirs(os.path.dirname(os.path.abspath(job.log)), exist_ok=True)
        with open(job.log, "a", encoding="utf-8") as handle:
            handle.write(f"{number:03d} {ident} {stamp} {text}\n...\n")


_RUN_USAGE = ("\t\tUsr 0 00:00:00, Sys 0 00:00:00  -  Run Remote Usage\n"
              "\t\tUsr 0 00:00:00, Sys 0 00:00:00  -  Run Local Usage\n"
              "\t0  -  Run Bytes Sent By Job\n\t0  -  Run Bytes Received By Job")
_USAGE = ("\t\tUsr 0 00:00:00, Sys 0 00:00:00  -  Run Remote Usage\n"
          "\t\tUsr 0 00:00:00, Sys 0 00:00:00  -  Run Local Usage\n"
          "\t\tUsr 0 00:00:00, Sys 0 00:00:00  -  Total Remote Usage\n"
          "\t\tUsr 0 00:00:00, Sys 0 00:00:00  -  Total Local Usage\n"
          "\t0  -  Run Bytes Sent By Job\n\t0  -  Run Bytes Received By Job\n"
          "\t0  -  Total Bytes Sent By Job\n\t0  -  Total Bytes Received By Job")
