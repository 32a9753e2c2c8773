"""SLURM's user commands (sbatch, squeue, sinfo, scontrol, scancel) run for Python, their JSON read into dataclasses.

:class:`SlurmClient` is what :class:`~airflow_cloud_paas.hooks.slurm.SlurmHook` and the local cluster run every
command through: one slurm.conf (``SLURM_CONF``) names the controller and munge's socket, each command runs with a
timeout, and every failure is a typed :class:`~airflow_cloud_paas.services.slurm.errors.SlurmCommandError` naming the
command and what it said. SLURM 22.05's ``squeue --json`` and ``sinfo --json`` (OpenAPI v0.0.38) are read; no
slurmrestd is needed.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from airflow_cloud_paas.services.slurm.config import (
    array_task_ids,
    format_time_limit,
    time_limit_minutes,
    validate_cpus,
    validate_job_name,
    validate_node_name,
)
from airflow_cloud_paas.services.slurm.errors import (
    SlurmCommandError,
    SlurmConfigError,
    SlurmJobNotFoundError,
    SlurmNodeNotFoundError,
    SlurmTimeoutError,
)

#: what the JSON gives as time_limit for INFINITE (NO_VAL and INFINITE of 32 bits)
_NO_LIMIT = {0xFFFFFFFE, 0xFFFFFFFF}
_INSTALL_HINT = "install SLURM's client commands (Debian/Ubuntu: apt-get install slurm-client, or slurm-wlm)"
_JOB_ID = re.compile(r"^\d+(?:_\d+)?$")
#: node states (sinfo's base state, lowercase) in which a node accepts work
USABLE_STATES = frozenset({"idle", "mixed", "allocated", "completing"})


@dataclass(frozen=True)
class SlurmJob:
    """One job (or one array task) as the controller knows it.

    :param job_id: ``123``, or ``123_4`` for task 4 of array 123
    :param name: the job name
    :param state: PENDING, RUNNING, COMPLETED, FAILED, CANCELLED, TIMEOUT, ...
    :param reason: why it pends (Resources, Priority, ...) or None
    :param cpus: CPUs it asks for (or holds)
    :param time_limit_min: its time limit in minutes, None for none
    :param submitted_s: when it was submitted (epoch seconds)
    :param started_s: when it started (epoch seconds), None before
    :param nodes: the nodes it runs or ran on
    :param exit_code: its exit status, once finished (128 + the signal's number when a signal ended it)
    :param array_job_id: the array's id, None outside an array
    :param array_task_id: the task's index, None outside an array
    :param comment: the job's comment (``sbatch --comment``; the submit operator marks its jobs with it)
    :param ended_s: when it ended (epoch seconds); while it runs, when its time limit ends it; None if unknown
    """

    job_id: str
    name: str
    state: str
    reason: str | None
    cpus: int
    time_limit_min: int | None
    submitted_s: float | None
    started_s: float | None
    nodes: tuple[str, ...]
    exit_code: int | None
    array_job_id: int | None = None
    array_task_id: int | None = None
    comment: str | None = None
    ended_s: float | None = None

    @property
    def finished(self) -> bool:
        """Return whether the job has ended (in any way)."""
        return self.state not in ("PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "SUSPENDED", "REQUEUED",
                                  "RESIZING", "SIGNALING", "STAGE_OUT", "REQUEUE_HOLD", "REQUEUE_FED")


@dataclass(frozen=True)
class PendingJob:
    """One job waiting in the queue (each pending task of an array counts once).

    :param job_id: ``123`` or ``123_4``
    :param name: the job name
    :param cpus: CPUs it requests
    :param time_limit_min: its time limit in minutes, None for none
    :param submitted_s: when it was submitted (epoch seconds)
    :param reason: why it pends (Resources, Priority, BeginTime, ...)
    """

    job_id: str
    name: str
    cpus: int
    time_limit_min: int | None
    submitted_s: float | None
    reason: str | None


@dataclass(frozen=True)
class SlurmNode:
    """One node as sinfo reports it.

    :param name: the node name
    :param state: its base state, lowercase (idle, mixed, allocated, down, ...)
    :param flags: its state flags (DRAIN, NOT_RESPONDING, COMPLETING, ...)
    :param cpus: CPUs it offers
    :param alloc_cpus: CPUs allocated to jobs
    :param reason: why it is drained or down
    :param partitions: the partitions it is in
    :param weight: its scheduling weight (SLURM gives a job the lowest-weight nodes that fit it), None if not shown
    """

    name: str
    state: str
    flags: tuple[str, ...]
    cpus: int
    alloc_cpus: int
    reason: str | None
    partitions: tuple[str, ...] = ()
    weight: int | None = None

    @property
    def draining(self) -> bool:
        """Return whether it takes no new job (drained or draining)."""
        return "DRAIN" in self.flags

    @property
    def responding(self) -> bool:
        """Return whether its slurmd answers and it can run jobs (not down, not unreachable)."""
        return self.state in USABLE_STATES and "NOT_RESPONDING" not in self.flags

    @property
    def busy(self) -> bool:
        """Return whether jobs hold some of its CPUs."""
        return self.alloc_cpus > 0 or self.state in ("allocated", "mixed", "completing")


def _int(value: Any) -> int | None:
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, Mapping):  # later data parsers wrap numbers as {"set": ..., "number": ...}
        return _int(value.get("number")) if value.get("set", True) else None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _limit(value: Any) -> int | None:
    minutes = _int(value)
    return None if minutes is None or minutes in _NO_LIMIT else minutes


def _when(value: Any) -> float | None:
    seconds = _int(value)
    return float(seconds) if seconds else None


def _exit_code(value: Any) -> int | None:
    """Return a job's exit code from squeue's ``exit_code``.

    SLURM 22.05 gives the raw wait status (``exit 3`` reads 768; scontrol shows ``ExitCode=3:0``); later data
    parsers give ``{"return_code": ..., "signal": {"id": ...}}``. A signal reads as 128 + its number, as in a shell.
    """
    if isinstance(value, Mapping) and ("return_code" in value or "signal" in value):
        signal = value.get("signal")
        number = _int(signal.get("id") if isinstance(signal, Mapping) else signal)
        return 128 + number if number else _int(value.get("return_code"))
    status = _int(value)
    if status is None:
        return None
    return os.WEXITSTATUS(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status)


def _state(value: Any) -> str:
    if isinstance(value, list):  # later data parsers give a list of flags
        return str(value[0]) if value else "UNKNOWN"
    return str(value or "UNKNOWN")


def parse_jobs(document: Mapping[str, Any]) -> list[SlurmJob]:
    """Return the jobs of ``squeue --json``'s answer, each array task apart (pending ones too).

    :param document: the parsed JSON
    """
    jobs = []
    for raw in document.get("jobs", []):
        array_id = _int(raw.get("array_job_id")) or None
        task_id = _int(raw.get("array_task_id"))
        task_string = str(raw.get("array_task_string") or "")
        if array_id and task_id is None and task_string:  # the array's tasks still pending, as one record
            tasks: list[tuple[str, int | None]] = [(f"{array_id}_{t}", t)
                                                   for t in array_task_ids(task_string, field="array_task_string")]
        elif array_id and task_id is not None:
            tasks = [(f"{array_id}_{task_id}", task_id)]
        else:
            tasks = [(str(_int(raw.get("job_id"))), None)]
        reason = raw.get("state_reason")
        nodes = str(raw.get("nodes") or "")
        for job_id, task in tasks:
            jobs.append(SlurmJob(
                job_id=job_id, name=str(raw.get("name") or ""), state=_state(raw.get("job_state")),
                reason=None if reason in (None, "", "None") else str(reason), cpus=_int(raw.get("cpus")) or 1,
                time_limit_min=_limit(raw.get("time_limit")), submitted_s=_when(raw.get("submit_time")),
                started_s=_when(raw.get("start_time")), nodes=tuple(n for n in nodes.split(",") if n),
                exit_code=_exit_code(raw.get("exit_code")), array_job_id=array_id, array_task_id=task,
                comment=str(raw.get("comment")) if raw.get("comment") else None, ended_s=_when(raw.get("end_time")),
            ))
    return jobs


def parse_nodes(document: Mapping[str, Any]) -> list[SlurmNode]:
    """Return the nodes of ``sinfo --json``'s answer (each once).

    :param document: the parsed JSON
    """
    nodes: dict[str, SlurmNode] = {}
    for raw in document.get("nodes", []):
        name = str(raw.get("name") or "")
        if not name or name in nodes:
            continue
        state = raw.get("state")
        flags = [str(f).upper() for f in raw.get("state_flags") or []]
        if isinstance(state, list):  # later data parsers: ["IDLE", "DRAIN"]
            flags += [str(f).upper() for f in state[1:]]
            state = state[0] if state else "unknown"
        nodes[name] = SlurmNode(
            name=name, state=str(state or "unknown").lower(), flags=tuple(flags), cpus=_int(raw.get("cpus")) or 0,
            alloc_cpus=_int(raw.get("alloc_cpus")) or 0, reason=str(raw.get("reason") or "") or None,
            partitions=tuple(raw.get("partitions") or ()), weight=_int(raw.get("weight")),
        )
    return list(nodes.values())


def _job_id(job_id: object) -> str:
    text = str(job_id).strip()
    if isinstance(job_id, bool) or not _JOB_ID.match(text):
        raise SlurmConfigError("a job id is a number, or <array id>_<task id>", field="job_id", value=job_id)
    return text


class SlurmClient:
    """Runs SLURM's commands against the controller one slurm.conf names.

    :param slurm_conf: the slurm.conf the commands read (``SLURM_CONF``): it names the controller and munge's socket
    :param timeout: seconds one command may take
    :param bin_dir: where the commands are (default: found on PATH)
    """

    def __init__(self, slurm_conf: str | os.PathLike, *, timeout: float = 30.0,
                 bin_dir: str | os.PathLike | None = None) -> None:
        self.slurm_conf = Path(slurm_conf)
        self.timeout = float(timeout)
        self.bin_dir = Path(bin_dir) if bin_dir else None

    @property
    def env(self) -> dict[str, str]:
        """Return the environment the commands run in (this process's, with ``SLURM_CONF``)."""
        return {**os.environ, "SLURM_CONF": str(self.slurm_conf)}

    def run(self, command: str, *args: str, stdin: str | None = None, timeout: float | None = None) -> str:
        """Run one SLURM command; return its standard output.

        :param command: sbatch, squeue, sinfo, scontrol or scancel
        :param args: its arguments
        :param stdin: text to feed it (sbatch reads a script there)
        :param timeout: seconds (default: the client's)
        """
        program = str(self.bin_dir / command) if self.bin_dir else command
        argv = [program, *args]
        if not self.slurm_conf.is_file():
            raise SlurmCommandError(f"slurm.conf {self.slurm_conf} does not exist: point the connection's slurm_conf "
                                    "extra at the cluster's, or give the controller's host and port", command=argv)
        try:
            done = subprocess.run(argv, input=stdin, capture_output=True, text=True, env=self.env,
                                  timeout=timeout or self.timeout, check=False)
        except FileNotFoundError:
            raise SlurmCommandError(f"{command} is not installed: {_INSTALL_HINT}", command=argv) from None
        except subprocess.TimeoutExpired as err:
            stderr = err.stderr.decode() if isinstance(err.stderr, bytes) else (err.stderr or "")
            raise SlurmTimeoutError(f"no answer within {timeout or self.timeout:g} s: is slurmctld running at the "
                                    f"address {self.slurm_conf} names?", command=argv, stderr=stderr) from None
        if done.returncode != 0:
            stderr = done.stderr or done.stdout
            lowered = stderr.lower()
            if "invalid job id" in lowered:
                raise SlurmJobNotFoundError("no such job (never submitted, or purged after MinJobAge)",
                                            command=argv, returncode=done.returncode, stderr=stderr)
            if "invalid node name" in lowered or "node name specified" in lowered:
                raise SlurmNodeNotFoundError("no such node (or a FUTURE slot whose slurmd is not running)",
                                             command=argv, returncode=done.returncode, stderr=stderr)
            raise SlurmCommandError("failed", command=argv, returncode=done.returncode, stderr=stderr)
        return done.stdout

    def _json(self, command: str, *args: str) -> dict[str, Any]:
        out = self.run(command, *args, "--json")
        try:
            document = json.loads(out)
        except json.JSONDecodeError as err:
            raise SlurmCommandError(f"--json gave no JSON ({err.msg}): SLURM 22.05+ is needed",
                                    command=[command, *args]) from None
        errors = [e for e in document.get("errors") or [] if e]
        if errors:
            raise SlurmCommandError(f"the answer holds errors: {errors}", command=[command, *args])
        return document

    # ------------------------------------------------------------------ jobs
    def submit(self, script: str | None = None, *, wrap: str | None = None, cpus: int = 1,
               time_limit: str | int | None = None, job_name: str | None = None, array: str | None = None,
               output: str | None = None, workdir: str | None = None, partition: str | None = None,
               nodelist: Sequence[str] = (), extra_args: Iterable[str] = ()) -> str:
        """Submit a batch job with sbatch; return its id.

        :param script: the batch script's text (``#!/bin/sh`` first), or None with ``wrap``
        :param wrap: a command line run as the job (``sbatch --wrap``), instead of a script
        :param cpus: CPUs for its one task (``--cpus-per-task``)
        :param time_limit: minutes or a SLURM time string (None: the partition's default)
        :param job_name: ``--job-name``
        :param array: a job array spec (``0-4``, ``1,3,5``, ``0-15:4%2``)
        :param output: the output file pattern (``%j`` job id, ``%A``/``%a`` array id/task); default
            ``slurm-%j.out`` (``slurm-%A_%a.out`` for arrays) in ``workdir``
        :param workdir: the job's working directory (``--chdir``)
        :param partition: the partition (default: the cluster's default)
        :param nodelist: nodes the job must run on (``--nodelist``)
        :param extra_args: more sbatch options, passed as they are
        """
        if (script is None) == (wrap is None):
            raise SlurmConfigError("give either a batch script or a command to wrap, not both nor neither",
                                   field="script")
        args = ["--parsable", f"--cpus-per-task={validate_cpus(cpus)}", "--ntasks=1"]
        if time_limit is not None:
            args.append(f"--time={format_time_limit(time_limit_minutes(time_limit))}")
        if job_name is not None:
            args.append(f"--job-name={validate_job_name(job_name)}")
        if array is not None:
            array_task_ids(array)
            args.append(f"--array={array}")
        if output is not None:
            args.append(f"--output={output}")
        if workdir is not None:
            args.append(f"--chdir={workdir}")
        if partition is not None:
            args.append(f"--partition={partition}")
        if nodelist:
            args.append(f"--nodelist={','.join(validate_node_name(n, field='nodelist') for n in nodelist)}")
        args += list(extra_args)
        if wrap is not None:
            args.append(f"--wrap={wrap}")
        elif not script.lstrip().startswith("#!"):
            raise SlurmConfigError("a batch script starts with an interpreter line such as #!/bin/sh",
                                   field="script", value=script[:40])
        out = self.run("sbatch", *args, stdin=script)
        job_id = out.strip().split(";")[0]
        if not job_id.isdigit():
            raise SlurmCommandError(f"no job id in its answer {out.strip()!r}", command=["sbatch", *args])
        return job_id

    def jobs(self, job_id: str | int | None = None, *, states: Sequence[str] = ()) -> list[SlurmJob]:
        """Return the controller's jobs (each array task apart), or one job's (an array's: all its tasks).

        SLURM 22.05's ``squeue --json`` ignores ``--jobs`` and ``--states``: the filtering is done here.

        :param job_id: a job (``123``), array task (``123_4``) or array (``123``); None for all
        :param states: only jobs in these states (PENDING, RUNNING, ...)
        """
        found = parse_jobs(self._json("squeue"))
        if job_id is not None:
            wanted = _job_id(job_id)
            if "_" in wanted:
                found = [j for j in found if j.job_id == wanted]
            else:
                found = [j for j in found if j.job_id == wanted or str(j.array_job_id) == wanted]
        if states:
            wanted_states = {s.upper() for s in states}
            found = [j for j in found if j.state in wanted_states]
        return found

    def job(self, job_id: str | int) -> SlurmJob:
        """Return one job or array task.

        :param job_id: ``123`` or ``123_4``
        """
        wanted = _job_id(job_id)
        found = self.jobs(wanted)
        if not found:
            raise SlurmJobNotFoundError(f"no job {wanted} (never submitted, or purged after MinJobAge)",
                                        command=["squeue", "--json"])
        if len(found) > 1:
            raise SlurmConfigError(f"job {wanted} is an array of {len(found)} tasks: ask for one as {wanted}_<task>",
                                   field="job_id", value=job_id)
        return found[0]

    def output_path(self, job_id: str | int) -> Path:
        """Return the file a job writes its standard output to (``StdOut`` of ``scontrol show job``).

        :param job_id: ``123`` or ``123_4``
        """
        wanted = _job_id(job_id)
        out = self.run("scontrol", "--oneliner", "show", "job", wanted)
        paths = re.findall(r"(?:^|\s)StdOut=(\S+)", out)
        if len(paths) != 1:
            raise SlurmCommandError(f"{len(paths)} StdOut fields for job {wanted}: ask for one array task",
                                    command=["scontrol", "show", "job", wanted])
        return Path(paths[0])

    def job_output(self, job_id: str | int) -> str:
        """Return what a job wrote to its standard output so far (the file must be readable here).

        :param job_id: ``123`` or ``123_4``
        """
        path = self.output_path(job_id)
        try:
            return path.read_text(errors="replace")
        except FileNotFoundError:
            raise SlurmCommandError(f"job {job_id}'s output {path} does not exist here (not started yet, or "
                                    "written on another machine's file system)",
                                    command=["scontrol", "show", "job", str(job_id)]) from None

    def cancel(self, job_id: str | int, *, signal: str | None = None) -> None:
        """Cancel a job, an array task or a whole array (or send it a signal).

        :param job_id: ``123`` or ``123_4``
        :param signal: a signal name (``USR1``) to send instead of cancelling
        """
        args = [f"--signal={signal}"] if signal else []
        self.run("scancel", *args, _job_id(job_id))

    def queue(self) -> list[PendingJob]:
        """Return the pending jobs, oldest first, each pending array task once, with their requests."""
        pending = [PendingJob(j.job_id, j.name, j.cpus, j.time_limit_min, j.submitted_s, j.reason)
                   for j in self.jobs(states=["PENDING"])]
        return sorted(pending, key=lambda p: (p.submitted_s or 0.0, *map(int, p.job_id.split("_"))))

    # ------------------------------------------------------------------ nodes
    def nodes(self) -> list[SlurmNode]:
        """Return every node the controller shows (FUTURE slots whose slurmd never registered are hidden)."""
        return parse_nodes(self._json("sinfo"))

    def node(self, name: str) -> SlurmNode:
        """Return one node.

        :param name: its name
        """
        found = [n for n in self.nodes() if n.name == validate_node_name(name)]
        if not found:
            raise SlurmNodeNotFoundError(f"node '{name}' is not shown (unknown, or a FUTURE slot not started)",
                                         command=["sinfo", "--json"])
        return found[0]

    def update_node(self, name: str, state: str, reason: str | None = None) -> None:
        """Set a node's state (``scontrol update nodename=... state=...``).

        :param name: the node
        :param state: DRAIN, RESUME, FUTURE, DOWN, ...
        :param reason: why (needed by DRAIN and DOWN)
        """
        args = ["update", f"nodename={validate_node_name(name)}", f"state={state}"]
        if reason:
            args.append(f"reason={reason}")
        self.run("scontrol", *args)

    def set_weight(self, name: str, weight: int) -> None:
        """Set a node's scheduling weight (``scontrol update nodename=... weight=...``): lower weights are used first.

        The weight lasts until slurmctld restarts without its state or reads slurm.conf again (``scontrol
        reconfig``): the elastic engine sets it again every round.

        :param name: the node
        :param weight: 1 to 4294967294 (SLURM's 32-bit weights, INFINITE excluded)
        """
        if isinstance(weight, bool) or not isinstance(weight, int) or not 1 <= weight < 0xFFFFFFFF:
            raise SlurmConfigError("a node weight is a whole number from 1 to 4294967294", field="weight",
                                   value=weight)
        self.run("scontrol", "update", f"nodename={validate_node_name(name)}", f"weight={weight}")

    def drain(self, name: str, reason: str = "drained by cloud-paas") -> None:
        """Drain a node: its running jobs finish, no new one starts there.

        :param name: the node
        :param reason: why (shown by sinfo)
        """
        self.update_node(name, "DRAIN", reason)

    def resume(self, name: str) -> None:
        """Let a drained node take jobs again.

        :param name: the node
        """
        self.update_node(name, "RESUME")

    def ping(self) -> bool:
        """Return whether the controller answers (``scontrol ping``); never raise for a down controller."""
        try:
            return " is UP" in self.run("scontrol", "ping")
        except SlurmCommandError:
            return False
