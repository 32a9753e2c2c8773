"""SLURM's rules for names, CPU counts, time limits and arrays, and the slurm.conf of a local loopback cluster.

Everything here is checked before a daemon starts or a job is submitted, and fails with a
:class:`~airflow_cloud_paas.services.slurm.errors.SlurmConfigError` naming the setting.

The local cluster's workers are *FUTURE slots*: slurm.conf declares ``max_workers`` nodes with
``State=FUTURE``, each with its own ``Port`` on 127.0.0.1. A FUTURE node is hidden from the scheduler until
its slurmd registers; SLURM 22.05 then makes it available, and ``scontrol update state=FUTURE`` hides it again
once its slurmd is stopped. So workers come and go without restarting slurmctld, while the elastic engine (not
SLURM's power saving) decides when: see :mod:`airflow_cloud_paas.services.slurm.cluster`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from airflow_cloud_paas.services.slurm.errors import SlurmConfigError

#: node names: what SLURM's hostlists, our ``%n`` paths and the shell all accept
_NODE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,62}$")
#: a worker prefix ends with a letter, ``-`` or ``_``, so that ``prefix<N>`` reads back as one name per index
_PREFIX = re.compile(r"^[A-Za-z](?:[A-Za-z0-9_-]{0,30}[A-Za-z_-])?$")
_CLUSTER_NAME = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
_PARTITION = re.compile(r"^[A-Za-z0-9_-]{1,63}$")
#: names SLURM gives a meaning in node and partition lists
_RESERVED = {"all", "default", "none", "infinite", "unlimited"}
#: MaxArraySize's default: task ids must stay below it
MAX_ARRAY_SIZE = 1001
#: the most CPUs one worker may declare (slurmd may declare more than the host has, never absurdly more)
MAX_CPUS = 1024
#: the longest job name sbatch keeps
MAX_JOB_NAME = 200
#: the longest Unix socket path (sun_path holds 108 bytes, with its terminating NUL)
MAX_SOCKET_PATH = 107
INFINITE = "INFINITE"

_TIME = {
    "minutes": re.compile(r"^(?P<m>\d+)$"),
    "minutes:seconds": re.compile(r"^(?P<m>\d+):(?P<s>\d{1,2})$"),
    "hours:minutes:seconds": re.compile(r"^(?P<h>\d+):(?P<m>\d{1,2}):(?P<s>\d{1,2})$"),
    "days-hours": re.compile(r"^(?P<d>\d+)-(?P<h>\d{1,2})$"),
    "days-hours:minutes": re.compile(r"^(?P<d>\d+)-(?P<h>\d{1,2}):(?P<m>\d{1,2})$"),
    "days-hours:minutes:seconds": re.compile(r"^(?P<d>\d+)-(?P<h>\d{1,2}):(?P<m>\d{1,2}):(?P<s>\d{1,2})$"),
}
_ARRAY_RANGE = re.compile(r"^(?P<first>\d+)(?:-(?P<last>\d+)(?::(?P<step>\d+))?)?$")


def validate_node_name(name: object, *, field: str = "node name") -> str:
    """Return a node name SLURM accepts, or raise :class:`SlurmConfigError`.

    :param name: the name: a letter, then up to 62 letters, digits, ``-`` or ``_``
    :param field: the setting's name in the error
    """
    if not isinstance(name, str) or not _NODE_NAME.match(name) or name.lower() in _RESERVED:
        raise SlurmConfigError("a SLURM node name is a letter followed by up to 62 letters, digits, '-' or '_' "
                               "(no dots, brackets, commas or spaces: they are hostlist syntax), and not "
                               f"one of {sorted(_RESERVED)}", field=field, value=name)
    return name


def validate_cpus(cpus: object, *, field: str = "cpus", maximum: int = MAX_CPUS) -> int:
    """Return a CPU count (an integer from 1 to ``maximum``), or raise :class:`SlurmConfigError`.

    :param cpus: the count
    :param field: the setting's name in the error
    :param maximum: the largest count allowed
    """
    if isinstance(cpus, bool) or not isinstance(cpus, int) or not 1 <= cpus <= maximum:
        raise SlurmConfigError(f"a CPU count is a whole number from 1 to {maximum}", field=field, value=cpus)
    return cpus


def time_limit_minutes(value: object, *, field: str = "time_limit") -> int | None:
    """Return a time limit in minutes (seconds rounded up, as SLURM does), None for INFINITE/UNLIMITED.

    SLURM's forms: ``minutes``, ``minutes:seconds``, ``hours:minutes:seconds``, ``days-hours``,
    ``days-hours:minutes``, ``days-hours:minutes:seconds``; an int is minutes. Zero, negative values and
    out-of-range fields (seconds or minutes over 59 after a larger unit, hours over 23 after days) are errors.

    :param value: the limit
    :param field: the setting's name in the error
    """
    if isinstance(value, bool):
        raise SlurmConfigError("a time limit is minutes or a SLURM time string, not a boolean", field=field,
                               value=value)
    if isinstance(value, int):
        if value < 1:
            raise SlurmConfigError("a time limit is at least 1 minute (use 'INFINITE' for none)", field=field,
                                   value=value)
        return value
    if not isinstance(value, str):
        raise SlurmConfigError("a time limit is minutes (int) or a SLURM time string such as '30', '1:30:00' or "
                               "'2-12'", field=field, value=value)
    text = value.strip()
    if text.upper() in ("INFINITE", "UNLIMITED"):
        return None
    for form, pattern in _TIME.items():
        found = pattern.match(text)
        if not found:
            continue
        parts = {k: int(v) for k, v in found.groupdict().items() if v is not None}
        if "d" in parts and parts.get("h", 0) > 23:
            raise SlurmConfigError(f"hours must be 0-23 in '{form}'", field=field, value=value)
        if ("h" in parts or "d" in parts) and parts.get("m", 0) > 59:
            raise SlurmConfigError(f"minutes must be 0-59 in '{form}'", field=field, value=value)
        if parts.get("s", 0) > 59:
            raise SlurmConfigError(f"seconds must be 0-59 in '{form}'", field=field, value=value)
        seconds = ((parts.get("d", 0) * 24 + parts.get("h", 0)) * 60 + parts.get("m", 0)) * 60 + parts.get("s", 0)
        if seconds < 1:
            raise SlurmConfigError("a time limit is at least 1 second (use 'INFINITE' for none)", field=field,
                                   value=value)
        return -(-seconds // 60)
    raise SlurmConfigError(f"not a SLURM time: use one of {', '.join(_TIME)} (e.g. '30', '1:30:00', '2-12') or "
                           "INFINITE", field=field, value=value)


def format_time_limit(minutes: int | None) -> str:
    """Return a time limit as SLURM's ``days-hours:minutes:00`` (or INFINITE).

    :param minutes: the limit in minutes, None for none
    """
    if minutes is None:
        return INFINITE
    days, rest = divmod(minutes, 24 * 60)
    return f"{days}-{rest // 60:02d}:{rest % 60:02d}:00"


def array_task_ids(spec: object, *, field: str = "array") -> list[int]:
    """Return the task ids of a job array spec (``0-4``, ``1,3,5``, ``0-15:4``, ``0-99%10``).

    :param spec: sbatch's ``--array`` value
    :param field: the setting's name in the error
    """
    if not isinstance(spec, str) or not spec.strip():
        raise SlurmConfigError("an array is a spec such as '0-4', '1,3,5', '0-15:4' or '0-99%10'", field=field,
                               value=spec)
    ranges, _, limit = spec.strip().partition("%")
    if limit and (not limit.isdigit() or int(limit) < 1):
        raise SlurmConfigError("the '%' limit of an array is a whole number >= 1", field=field, value=spec)
    ids: set[int] = set()
    for part in ranges.split(","):
        found = _ARRAY_RANGE.match(part.strip())
        if not found:
            raise SlurmConfigError(f"'{part}' is not N, N-M or N-M:S", field=field, value=spec)
        first = int(found["first"])
        last = int(found["last"]) if found["last"] is not None else first
        step = int(found["step"]) if found["step"] is not None else 1
        if last < first or step < 1:
            raise SlurmConfigError(f"'{part}': the range must not go down and its step is >= 1", field=field,
                                   value=spec)
        ids.update(range(first, last + 1, step))
    if max(ids) >= MAX_ARRAY_SIZE:
        raise SlurmConfigError(f"array task ids stop below MaxArraySize ({MAX_ARRAY_SIZE})", field=field,
                               value=spec)
    return sorted(ids)


def validate_job_name(name: object, *, field: str = "job_name") -> str:
    """Return a job name sbatch keeps whole (1-200 printable characters), or raise :class:`SlurmConfigError`.

    :param name: the name
    :param field: the setting's name in the error
    """
    if not isinstance(name, str) or not 1 <= len(name) <= MAX_JOB_NAME or not name.isprintable():
        raise SlurmConfigError(f"a job name is 1 to {MAX_JOB_NAME} printable characters", field=field, value=name)
    return name


@dataclass(frozen=True)
class ClusterSpec:
    """A local SLURM cluster on loopback: one slurmctld and up to ``max_workers`` slurmd.

    :param work_dir: where slurm.conf, munge's key and socket, spool, pid and log files go
    :param max_workers: FUTURE worker slots declared in slurm.conf (the most workers at once)
    :param cpus_per_worker: CPUs each worker declares (slurmd may declare more than the host has)
    :param memory_mb: memory each worker declares (MB; not enforced: SelectTypeParameters=CR_CPU)
    :param worker_prefix: workers are named ``<prefix><N>``, N from 1
    :param cluster_name: SLURM's ClusterName
    :param partition: the one partition, holding every worker
    :param max_time: the partition's MaxTime (a SLURM time or INFINITE; sbatch refuses longer jobs)
    :param extra: more slurm.conf settings (key -> value), written last so that they win
    :param socket_dir: where the Unix sockets go, munged's and those of the jobs' step daemons (in slurmd's spool);
        by default under ``work_dir``; a short path when ``work_dir`` is so deep that a socket's path would pass
        the 107 bytes a Unix socket may have
    """

    work_dir: Path
    max_workers: int = 4
    cpus_per_worker: int = 1
    memory_mb: int = 1000
    worker_prefix: str = "worker"
    cluster_name: str = "cloudpaas"
    partition: str = "main"
    max_time: str | int = INFINITE
    extra: dict[str, str] = field(default_factory=dict)
    socket_dir: Path | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "work_dir", Path(self.work_dir).absolute())
        validate_cpus(self.max_workers, field="max_workers", maximum=256)
        validate_cpus(self.cpus_per_worker, field="cpus_per_worker")
        if isinstance(self.memory_mb, bool) or not isinstance(self.memory_mb, int) or self.memory_mb < 1:
            raise SlurmConfigError("memory is a whole number of MB >= 1", field="memory_mb", value=self.memory_mb)
        if not isinstance(self.worker_prefix, str) or not _PREFIX.match(self.worker_prefix):
            raise SlurmConfigError("a worker prefix is a letter, then letters, digits, '-' or '_', ending with a "
                                   "letter, '-' or '_' (workers are <prefix><N>)", field="worker_prefix",
                                   value=self.worker_prefix)
        if not isinstance(self.cluster_name, str) or not _CLUSTER_NAME.match(self.cluster_name):
            raise SlurmConfigError("a ClusterName is a lowercase letter, then up to 39 lowercase letters, digits or "
                                   "'_'", field="cluster_name", value=self.cluster_name)
        if (not isinstance(self.partition, str) or not _PARTITION.match(self.partition)
                or self.partition.lower() in _RESERVED):
            raise SlurmConfigError("a partition name is 1-63 letters, digits, '-' or '_'", field="partition",
                                   value=self.partition)
        time_limit_minutes(self.max_time, field="max_time")
        for key, value in self.extra.items():
            if not re.match(r"^[A-Za-z]+$", key) or "\n" in str(value):
                raise SlurmConfigError("extra slurm.conf settings are Key=value on one line", field="extra",
                                       value=key)
        longest = max(self.worker_names, key=len)
        step_socket = self.slurmd_spool_dir / longest / f"{longest}_{'9' * 10}.{'9' * 10}"  # <node>_<job>.<step>
        for what, path in (("munge socket path", self.munge_socket), ("job step sockets' paths", step_socket)):
            if len(str(path)) > MAX_SOCKET_PATH:
                raise SlurmConfigError(f"the {what} would be longer than {MAX_SOCKET_PATH} bytes: use a shorter "
                                       "work directory, or a short socket_dir", field="work_dir",
                                       value=str(self.work_dir))

    @property
    def worker_names(self) -> list[str]:
        """Return every worker slot's node name, in order."""
        return [f"{self.worker_prefix}{i}" for i in range(1, self.max_workers + 1)]

    # ------------------------------------------------------------------ paths
    @property
    def slurm_conf(self) -> Path:
        """Return slurm.conf's path."""
        return self.work_dir / "slurm.conf"

    @property
    def munge_dir(self) -> Path:
        """Return the directory of munged's key, socket, pid, seed and log."""
        return self.work_dir / "munge"

    @property
    def munge_socket(self) -> Path:
        """Return munged's socket (``AuthInfo=socket=...``)."""
        return Path(self.socket_dir or self.munge_dir) / "munge.socket"

    @property
    def munge_key(self) -> Path:
        """Return munge's key file (1024 random bytes, mode 0400)."""
        return self.munge_dir / "munge.key"

    @property
    def log_dir(self) -> Path:
        """Return the daemons' log directory."""
        return self.work_dir / "log"

    @property
    def slurmd_spool_dir(self) -> Path:
        """Return where each slurmd's spool goes (``<this>/<node>``: its jobs' step sockets are there)."""
        return Path(self.socket_dir) / "spool" if self.socket_dir else self.spool_dir

    @property
    def spool_dir(self) -> Path:
        """Return the spool directory (slurmctld's state, one subdirectory per slurmd)."""
        return self.work_dir / "spool"

    def slurmd_log(self, node: str) -> Path:
        """Return one worker's slurmd log (``SlurmdLogFile`` with ``%n``).

        :param node: the worker's name
        """
        return self.log_dir / f"slurmd-{node}.log"


def render_slurm_conf(spec: ClusterSpec, *, controller_port: int, slurmd_ports: dict[str, int]) -> str:
    """Return the cluster's slurm.conf.

    Several slurmd share the host: each node has ``NodeHostname=localhost NodeAddr=127.0.0.1`` and its own
    ``Port``, and every per-daemon path holds ``%n``. ``SlurmdParameters=config_overrides`` lets a node declare
    the CPUs it is given rather than the host's. Workers are FUTURE slots (see the module's docstring).

    :param spec: the cluster
    :param controller_port: SlurmctldPort
    :param slurmd_ports: worker name -> its slurmd port
    """
    missing = [n for n in spec.worker_names if n not in slurmd_ports]
    if missing:
        raise SlurmConfigError("every worker slot needs a port", field="slurmd_ports", value=missing)
    work, logs, spool = spec.work_dir, spec.log_dir, spec.spool_dir
    settings = {
        "ClusterName": spec.cluster_name,
        "SlurmctldHost": "localhost(127.0.0.1)",
        "SlurmctldPort": str(controller_port),
        # a default for nodes; each NodeName line sets its own Port
        "SlurmdPort": str(slurmd_ports[spec.worker_names[0]]),
        "AuthType": "auth/munge",
        "CredType": "cred/munge",
        "AuthInfo": f"socket={spec.munge_socket}",
        "SlurmUser": "root",
        "SlurmdUser": "root",
        "StateSaveLocation": str(spool / "slurmctld"),
        "SlurmdSpoolDir": str(spec.slurmd_spool_dir / "%n"),
        "SlurmctldPidFile": str(work / "slurmctld.pid"),
        "SlurmdPidFile": str(work / "slurmd-%n.pid"),
        "SlurmctldLogFile": str(logs / "slurmctld.log"),
        "SlurmdLogFile": str(logs / "slurmd-%n.log"),
        "SlurmSchedLogFile": str(logs / "sched.log"),
        "ProctrackType": "proctrack/pgid",
        "TaskPlugin": "task/none",
        "SelectType": "select/cons_tres",
        "SelectTypeParameters": "CR_CPU",
        "SlurmdParameters": "config_overrides",
        "SchedulerType": "sched/backfill",
        # react within a second to submissions, finished jobs and registrations (the defaults wait up to 60 s)
        "SchedulerParameters": "sched_interval=1,bf_interval=1",
        "MpiDefault": "none",
        "JobAcctGatherType": "jobacct_gather/none",
        "AccountingStorageType": "accounting_storage/none",
        # a job over the partition's MaxTime or size is refused by sbatch, rather than pending for ever
        "EnforcePartLimits": "ALL",
        "ReturnToService": "2",
        "SlurmctldTimeout": "30",
        "SlurmdTimeout": "30",
        # finished jobs stay visible (state, StdOut) for 10 minutes: there is no slurmdbd to ask later
        "MinJobAge": "600",
        "MaxArraySize": str(MAX_ARRAY_SIZE),
        **spec.extra,
    }
    lines = ["# written by airflow_cloud_paas.services.slurm: a local cluster on loopback"]
    lines += [f"{key}={value}" for key, value in settings.items()]
    for name in spec.worker_names:
        lines.append(f"NodeName={name} NodeHostname=localhost NodeAddr=127.0.0.1 Port={slurmd_ports[name]} "
                     f"CPUs={spec.cpus_per_worker} RealMemory={spec.memory_mb} State=FUTURE")
    max_time = format_time_limit(time_limit_minutes(spec.max_time, field="max_time"))
    lines.append(f"PartitionName={spec.partition} Nodes={','.join(spec.worker_names)} Default=YES "
                 f"MaxTime={max_time} State=UP")
    return "\n".join(lines) + "\n"


def render_client_conf(*, host: str, port: int, munge_socket: str | None, cluster_name: str = "cloudpaas") -> str:
    """Return the slurm.conf a client (sbatch, squeue, ...) needs to reach a controller it has no slurm.conf of.

    :param host: the controller's host name or address
    :param port: SlurmctldPort
    :param munge_socket: munged's socket on this machine (None: munge's default)
    :param cluster_name: the cluster's ClusterName
    """
    if not re.match(r"^[A-Za-z0-9_.:-]+$", host or ""):
        raise SlurmConfigError("the controller is a host name or address", field="host", value=host)
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise SlurmConfigError("the controller's port is 1-65535", field="port", value=port)
    name = host if _NODE_NAME.match(host) else "controller"
    lines = [f"ClusterName={cluster_name}", f"SlurmctldHost={name}({host})", f"SlurmctldPort={port}",
             "AuthType=auth/munge"]
    if munge_socket:
        lines.append(f"AuthInfo=socket={munge_socket}")
    return "\n".join(lines) + "\n"
