"""Render the ``condor_config`` of each role of a pool, and check it by loading it with the real bindings.

A pool has three roles, as in HTCondor's own ``use ROLE`` metaknobs and the official container images:

- ``central_manager``: the collector and the negotiator (``htcondor/cm``);
- ``submit``: the schedd, where jobs and DAGMan DAGs are queued (``htcondor/submit``);
- ``execute``: a startd with one partitionable slot (``htcondor/execute``).

:func:`render_config` writes one role's configuration from :class:`CondorPoolSettings`. It is the
reference the boot script of the VM templates (``templates/scripts/htcondor_configure.sh``) follows
line for line; the tests run that script and compare. :func:`validate_config` loads a configuration
with ``htcondor2`` in a child process (a bad file makes the bindings exit the process, and
``reload_config`` changes process-wide state) and checks what the role needs.

Security: every role requires authentication, integrity and encryption
(``use SECURITY : recommended_v9_0``) in the pool's own ``TRUST_DOMAIN``. In ``idtokens`` mode the
daemons authenticate with IDTOKENS signed by the pool's signing key; in ``password`` mode with the pool
password, IDTOKENS staying accepted so that Airflow can use a token in both modes. The secrets themselves
(see :mod:`.credentials`) are never written in a configuration file.

Stdlib only at import time: the bindings are used in the child process.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from airflow_cloud_paas.services.condor import placement as runtime_rank
from airflow_cloud_paas.services.condor.errors import CondorConfigError

ROLES = ("central_manager", "submit", "execute")
SECURITY_MODES = ("idtokens", "password")
#: the collector's well-known port
COLLECTOR_PORT = 9618
#: where the configuration of a pool is written on its machines (after the packages' own files)
CONFIG_FILE = "/etc/condor/config.d/50-cloud-paas.config"

_ROLE_KNOB = {"central_manager": "CentralManager", "submit": "Submit", "execute": "Execute"}
_ROLE_DAEMONS = {
    "central_manager": ("COLLECTOR", "NEGOTIATOR"),
    "submit": ("SCHEDD",),
    "execute": ("STARTD",),
}
_METHODS = {"idtokens": "FS, IDTOKENS", "password": "FS, PASSWORD, IDTOKENS"}
_HEADER = "# HTCondor {role} of the Cloud PaaS pool {trust_domain}: written by airflow_cloud_paas, do not edit"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$")
_HOST = re.compile(r"^(\$\([A-Za-z_]+\)|[A-Za-z0-9_.:\[\]-]+)$")
_USER = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
#: parameters read back from the bindings by :func:`validate_config`
CHECKED_PARAMS = (
    "DAEMON_LIST",
    "CONDOR_HOST",
    "COLLECTOR_HOST",
    "TRUST_DOMAIN",
    "SEC_DEFAULT_AUTHENTICATION",
    "SEC_DEFAULT_ENCRYPTION",
    "SEC_DEFAULT_INTEGRITY",
    "SEC_DEFAULT_AUTHENTICATION_METHODS",
    "SEC_CLIENT_AUTHENTICATION_METHODS",
    "ALLOW_ADMINISTRATOR",
    "ALLOW_DAEMON",
    "LOWPORT",
    "HIGHPORT",
    "CCB_ADDRESS",
    "NUM_CPUS",
    "MEMORY",
    "SLOT_TYPE_1_PARTITIONABLE",
    "START",
    "STARTD_ATTRS",
    "CloudPaaSDeployment",
    "MACHINE_RESOURCE_INVENTORY_GPUs",
    "NEGOTIATOR_PRE_JOB_RANK",
    "STARTD_JOB_ATTRS",
    "STARTD_PARTITIONABLE_SLOT_ATTRS",
    "CLAIM_WORKLIFE",
    runtime_rank.EXPECTED_END,
    runtime_rank.JOBS_END,
)
#: how the negotiator places jobs: ``fcfs`` (HTCondor's own ranking) or ``pack`` (by expected runtime, see
#: :mod:`.placement`)
PLACEMENTS = ("fcfs", "pack")


@dataclass(frozen=True)
class CondorPoolSettings:
    """What a pool's configuration depends on (no secret here: they live in :mod:`.credentials`).

    :param central_manager: the collector's address as the other machines reach it (host, IP or
        ``host:port``); on the central manager itself a macro such as ``$(IP_ADDRESS)`` is allowed
    :param trust_domain: the pool's ``TRUST_DOMAIN``, also the issuer of its IDTOKENS
    :param security_mode: ``idtokens`` or ``password``
    :param ccb: submit and execute nodes register with the collector's CCB, so they need no inbound
        connection (nodes behind NAT, containers)
    :param port_range: (``LOWPORT``, ``HIGHPORT``) the daemons listen on, for firewalls; None: any port
    :param execute_cpus: CPUs an execute node offers (None: what HTCondor detects)
    :param execute_memory_mb: memory an execute node offers in MB (None: what HTCondor detects)
    :param execute_gpus: execute nodes detect and offer their GPUs (``use FEATURE : GPUs``)
    :param admin_user: the user (``<admin_user>@<trust_domain>``) given ADMINISTRATOR rights, i.e.
        Airflow's identity, which drains and retires execute nodes; None: nobody more than the defaults
    :param deployment_id: published by execute nodes as the ``CloudPaaSDeployment`` machine attribute
    :param placement: ``fcfs`` (HTCondor's default ranking) or ``pack``: execute nodes publish when their jobs
        are expected to end and the negotiator ranks slots by it (:mod:`.placement`)
    """

    central_manager: str
    trust_domain: str
    security_mode: str = "idtokens"
    ccb: bool = False
    port_range: tuple[int, int] | None = None
    execute_cpus: int | None = None
    execute_memory_mb: int | None = None
    execute_gpus: bool = False
    admin_user: str | None = "airflow"
    deployment_id: str | None = None
    placement: str = "fcfs"

    def __post_init__(self) -> None:
        if not isinstance(self.central_manager, str) or not _HOST.match(self.central_manager):
            raise CondorConfigError(
                f"central_manager {self.central_manager!r} must be a host name, an IP address or host:port "
                "(or a macro such as $(IP_ADDRESS) on the central manager itself)", what="central_manager")
        if not isinstance(self.trust_domain, str) or not _NAME.match(self.trust_domain):
            raise CondorConfigError(
                f"trust_domain {self.trust_domain!r} must be a name of letters, digits, '.', '_' and '-'",
                what="trust_domain")
        if self.security_mode not in SECURITY_MODES:
            raise CondorConfigError(
                f"security_mode {self.security_mode!r} is not one of {', '.join(SECURITY_MODES)}",
                what="security_mode")
        if self.port_range is not None:
            if (not isinstance(self.port_range, tuple | list) or len(self.port_range) != 2
                    or not all(isinstance(p, int) and not isinstance(p, bool) for p in self.port_range)):
                raise CondorConfigError(f"port_range {self.port_range!r} must be (LOWPORT, HIGHPORT)",
                                        what="port_range")
            low, high = self.port_range
            if not 1024 <= low < high <= 65535:
                raise CondorConfigError(
                    f"port_range ({low}, {high}) must satisfy 1024 <= LOWPORT < HIGHPORT <= 65535",
                    what="port_range")
            object.__setattr__(self, "port_range", (low, high))
        for name in ("execute_cpus", "execute_memory_mb"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise CondorConfigError(f"{name} must be a positive integer or None, got {value!r}", what=name)
        if self.admin_user is not None and not _USER.match(self.admin_user):
            raise CondorConfigError(
                f"admin_user {self.admin_user!r} must be a user name (lower case letters, digits, '_', '-')",
                what="admin_user")
        if self.deployment_id is not None and not _NAME.match(self.deployment_id):
            raise CondorConfigError(f"deployment_id {self.deployment_id!r} has characters a ClassAd string "
                                    "must not hold", what="deployment_id")
        if self.placement not in PLACEMENTS:
            raise CondorConfigError(f"placement {self.placement!r} is not one of {', '.join(PLACEMENTS)}",
                                    what="placement")

    @property
    def collector_address(self) -> str:
        """Return ``host:port`` of the collector (port 9618 unless ``central_manager`` names one)."""
        if re.fullmatch(r"[^:]+:\d+", self.central_manager):
            return self.central_manager
        return f"{self.central_manager}:{COLLECTOR_PORT}"


def _check_role(role: str) -> None:
    if role not in ROLES:
        raise CondorConfigError(f"role {role!r} is not one of {', '.join(ROLES)}", what="role")


def render_config(settings: CondorPoolSettings, role: str, *, container: bool = False) -> str:
    """Return the ``condor_config`` text of one role of a pool.

    :param settings: the pool's settings
    :param role: ``central_manager``, ``submit`` or ``execute``
    :param container: for the official container images: ``CONDOR_HOST``, ``NUM_CPUS`` and ``MEMORY``
        are left to the image, which writes them from its environment variables of the same names
    """
    _check_role(role)
    lines = [_HEADER.format(role=role, trust_domain=settings.trust_domain)]
    if not container:
        lines.append(f"CONDOR_HOST = {settings.central_manager}")
    lines += [
        f"use ROLE : {_ROLE_KNOB[role]}",
        "use SECURITY : recommended_v9_0",
        f"TRUST_DOMAIN = {settings.trust_domain}",
        f"SEC_DEFAULT_AUTHENTICATION_METHODS = {_METHODS[settings.security_mode]}",
        "SEC_CLIENT_AUTHENTICATION_METHODS = $(SEC_DEFAULT_AUTHENTICATION_METHODS)",
    ]
    if settings.admin_user:
        lines.append(f"ALLOW_ADMINISTRATOR = $(ALLOW_ADMINISTRATOR) {settings.admin_user}@$(TRUST_DOMAIN)")
    if settings.port_range:
        lines += [f"LOWPORT = {settings.port_range[0]}", f"HIGHPORT = {settings.port_range[1]}"]
    if settings.ccb and role != "central_manager":
        # machines of the same private network still talk directly; others go through the collector
        lines += ["CCB_ADDRESS = $(COLLECTOR_HOST)", "PRIVATE_NETWORK_NAME = $(TRUST_DOMAIN)"]
    if role == "execute":
        lines.append("use FEATURE : PartitionableSlot")
        if settings.execute_cpus and not container:
            lines.append(f"NUM_CPUS = {settings.execute_cpus}")
        if settings.execute_memory_mb and not container:
            lines.append(f"MEMORY = {settings.execute_memory_mb}")
        if settings.execute_gpus:
            lines.append("use FEATURE : GPUs")
        if settings.deployment_id:
            lines += [f'CloudPaaSDeployment = "{settings.deployment_id}"',
                      "STARTD_ATTRS = $(STARTD_ATTRS) CloudPaaSDeployment"]
        if settings.placement == "pack":
            lines += runtime_rank.execute_config_lines()
    if role == "central_manager" and settings.placement == "pack":
        lines += runtime_rank.central_manager_config_lines()
    return "\n".join(lines) + "\n"


def image_env_config(
    central_manager: str, *, num_cpus: int = 1, memory_mb: int = 1024, reserved_disk_mb: int = 1024,
    use_pool_password: bool = False,
) -> str:
    """Return the ``01-env.conf`` the official images' ``start.sh`` writes from its environment variables.

    A container's configuration is this file followed by the one :func:`render_config` makes with
    ``container=True``; :func:`validate_config` is given both to check a container role.

    :param central_manager: ``CONDOR_HOST``
    :param num_cpus: ``NUM_CPUS`` (execute image)
    :param memory_mb: ``MEMORY`` in MB (execute image)
    :param reserved_disk_mb: ``RESERVED_DISK`` in MB (execute image)
    :param use_pool_password: ``USE_POOL_PASSWORD``
    """
    values = {"CONDOR_HOST": central_manager, "NUM_CPUS": num_cpus, "MEMORY": memory_mb,
              "RESERVED_DISK": reserved_disk_mb, "USE_POOL_PASSWORD": "yes" if use_pool_password else "no"}
    return "# This file was created by start.sh\n" + "".join(f"{k}={v}\n" for k, v in values.items())


# ------------------------------------------------------------------------------------- validation
_LOADER = r"""
import json, sys
import htcondor2
names = json.loads(sys.argv[1])
print(json.dumps({name: htcondor2.param.get(name) for name in names}))
"""


def load_params(
    text: str,
    names: tuple[str, ...] | list[str] = CHECKED_PARAMS,
    *,
    environ: Mapping[str, str] | None = None,
    timeout: float = 60.0,
) -> dict[str, str | None]:
    """Return configuration values as the ``htcondor2`` bindings read them from a configuration text.

    The text is the only configuration file (``CONDOR_CONFIG``); the child process runs with a private
    ``HOME`` and without the caller's ``_CONDOR_*`` variables, so nothing else leaks in.

    :param text: the configuration
    :param names: the parameters to read back
    :param environ: extra environment of the child (``_CONDOR_<NAME>`` variables override the file, as
        they do for the daemons)
    :param timeout: seconds the child may take
    """
    with tempfile.TemporaryDirectory(prefix="cloud-paas-condor-config-") as tmp:
        path = Path(tmp) / "condor_config"
        path.write_text(text, encoding="utf-8")
        env = {k: v for k, v in os.environ.items() if not k.upper().startswith("_CONDOR_") and k != "CONDOR_CONFIG"}
        env.update({"CONDOR_CONFIG": str(path), "HOME": tmp})
        env.update(environ or {})
        try:
            done = subprocess.run([sys.executable, "-c", _LOADER, json.dumps(list(names))], env=env, cwd=tmp,
                                  capture_output=True, text=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired as err:
            raise CondorConfigError(f"loading the configuration with htcondor2 took over {timeout} s",
                                    what="condor_config") from err
        if done.returncode != 0 or not done.stdout.strip():
            # the bindings print the file, line and problem; nothing secret is in a configuration file
            detail = " ".join((done.stderr or done.stdout).replace(str(path), "condor_config").split())[-800:]
            raise CondorConfigError(f"htcondor2 cannot load it: {detail or f'exit status {done.returncode}'}",
                                    what="condor_config")
        return json.loads(done.stdout.strip().splitlines()[-1])


def _words(value: str | None) -> list[str]:
    return [w.upper() for w in re.split(r"[\s,]+", value or "") if w]


def validate_config(
    text: str,
    role: str,
    settings: CondorPoolSettings | None = None,
    *,
    environ: Mapping[str, str] | None = None,
) -> dict[str, str | None]:
    """Load a configuration with the ``htcondor2`` bindings and check what its role needs; return what was read.

    Checked: the file loads; ``DAEMON_LIST`` runs the role's daemons and no other role's; a central
    manager address is set; authentication, integrity and encryption are required with IDTOKENS or
    PASSWORD; ``LOWPORT``/``HIGHPORT`` come together and in order; a central manager has no
    ``CCB_ADDRESS``; an execute node has a partitionable slot. Given ``settings``, the values read back
    must be theirs (trust domain, methods, ports, CCB, resources, administrator).

    :param text: the configuration text
    :param role: ``central_manager``, ``submit`` or ``execute``
    :param settings: the settings it was rendered from, to compare with
    :param environ: extra environment of the loading process (``_CONDOR_*`` overrides)
    """
    _check_role(role)
    params = load_params(text, environ=environ)
    problems: list[str] = []
    daemons = set(_words(params.get("DAEMON_LIST")))
    missing = [d for d in _ROLE_DAEMONS[role] if d not in daemons]
    if missing:
        problems.append(f"DAEMON_LIST {params.get('DAEMON_LIST')!r} lacks {', '.join(missing)}")
    foreign = sorted(d for r, ds in _ROLE_DAEMONS.items() if r != role for d in ds if d in daemons)
    if foreign:
        problems.append(f"DAEMON_LIST runs {', '.join(foreign)}, which belong to another role")
    if not (params.get("CONDOR_HOST") or "").strip():
        problems.append("CONDOR_HOST (the central manager) is not set")
    for name in ("SEC_DEFAULT_AUTHENTICATION", "SEC_DEFAULT_INTEGRITY", "SEC_DEFAULT_ENCRYPTION"):
        if (params.get(name) or "").strip().upper() != "REQUIRED":
            problems.append(f"{name} is {params.get(name)!r}, not REQUIRED")
    methods = _words(params.get("SEC_DEFAULT_AUTHENTICATION_METHODS"))
    if "IDTOKENS" not in methods and "PASSWORD" not in methods:
        problems.append(f"SEC_DEFAULT_AUTHENTICATION_METHODS {methods} has neither IDTOKENS nor PASSWORD")
    low, high = params.get("LOWPORT"), params.get("HIGHPORT")
    if (low is None) != (high is None):
        problems.append("LOWPORT and HIGHPORT must be set together")
    elif low is not None:
        if not (str(low).isdigit() and str(high).isdigit() and int(low) < int(high)):
            problems.append(f"LOWPORT {low!r} must be a port below HIGHPORT {high!r}")
    if role == "central_manager" and params.get("CCB_ADDRESS"):
        problems.append("a central manager must not use a CCB_ADDRESS (it is the CCB server)")
    if role == "execute" and str(params.get("SLOT_TYPE_1_PARTITIONABLE") or "").lower() not in ("true", "1"):
        problems.append("an execute node needs a partitionable slot (use FEATURE : PartitionableSlot)")
    if settings is not None:
        problems += _compare(params, settings, role)
    if problems:
        raise CondorConfigError("; ".join(problems), what=f"condor_config of the {role}")
    return params


def _compare(params: Mapping[str, Any], settings: CondorPoolSettings, role: str) -> list[str]:
    problems = []

    def want(name: str, expected: Any) -> None:
        got = params.get(name)
        if str(got if got is not None else "") != str(expected if expected is not None else ""):
            problems.append(f"{name} is {got!r}, expected {expected!r}")

    if "$(" not in settings.central_manager:
        want("CONDOR_HOST", settings.central_manager)
    want("TRUST_DOMAIN", settings.trust_domain)
    if _words(params.get("SEC_DEFAULT_AUTHENTICATION_METHODS")) != _words(_METHODS[settings.security_mode]):
        problems.append(f"SEC_DEFAULT_AUTHENTICATION_METHODS is {params.get('SEC_DEFAULT_AUTHENTICATION_METHODS')!r}"
                        f", expected {_METHODS[settings.security_mode]!r} ({settings.security_mode} mode)")
    if settings.port_range:
        want("LOWPORT", settings.port_range[0])
        want("HIGHPORT", settings.port_range[1])
    if role != "central_manager":
        ccb = params.get("CCB_ADDRESS")
        if settings.ccb and (not ccb or ccb != params.get("COLLECTOR_HOST")):
            problems.append(f"CCB_ADDRESS is {ccb!r}, expected the collector {params.get('COLLECTOR_HOST')!r}")
        if not settings.ccb and ccb:
            problems.append(f"CCB_ADDRESS is {ccb!r} though CCB is off")
    if settings.admin_user:
        identity = f"{settings.admin_user}@{settings.trust_domain}"
        if identity not in (params.get("ALLOW_ADMINISTRATOR") or "").split():
            problems.append(f"ALLOW_ADMINISTRATOR {params.get('ALLOW_ADMINISTRATOR')!r} lacks {identity}")
    if role == "execute":
        if settings.execute_cpus:
            want("NUM_CPUS", settings.execute_cpus)
        if settings.execute_memory_mb:
            want("MEMORY", settings.execute_memory_mb)
        if settings.execute_gpus and not params.get("MACHINE_RESOURCE_INVENTORY_GPUs"):
            problems.append("GPUs are wanted but no GPU discovery is configured (use FEATURE : GPUs)")
        if settings.deployment_id:
            want("CloudPaaSDeployment", f'"{settings.deployment_id}"')
            if "CloudPaaSDeployment" not in (params.get("STARTD_ATTRS") or "").split():
                problems.append("STARTD_ATTRS does not publish CloudPaaSDeployment")
    if settings.placement == "pack":
        problems += _compare_placement(params, role)
    return problems


def _compare_placement(params: Mapping[str, Any], role: str) -> list[str]:
    """Return what a ``pack`` placement's configuration lacks in what the bindings read back."""
    problems = []
    if role == "central_manager" and params.get("NEGOTIATOR_PRE_JOB_RANK") != runtime_rank.negotiator_pre_job_rank():
        problems.append(f"NEGOTIATOR_PRE_JOB_RANK is {params.get('NEGOTIATOR_PRE_JOB_RANK')!r}, not the packing "
                        "rank (placement=pack)")
    if role == "execute":
        lists = {"STARTD_JOB_ATTRS": runtime_rank.RUNTIME_ATTRS,
                 "STARTD_PARTITIONABLE_SLOT_ATTRS": (runtime_rank.EXPECTED_END,),
                 "STARTD_ATTRS": (runtime_rank.EXPECTED_END, runtime_rank.JOBS_END)}
        for name, wanted in lists.items():
            missing = [a for a in wanted if a.upper() not in _words(params.get(name))]
            if missing:
                problems.append(f"{name} lacks {', '.join(missing)} (placement=pack)")
        for name, expression in ((runtime_rank.EXPECTED_END, runtime_rank.expected_end_expression()),
                                 (runtime_rank.JOBS_END, runtime_rank.jobs_end_expression())):
            if params.get(name) != expression:
                problems.append(f"{name} is {params.get(name)!r}, expected {expression!r} (placement=pack)")
        if str(params.get("CLAIM_WORKLIFE")) != "0":
            problems.append(f"CLAIM_WORKLIFE is {params.get('CLAIM_WORKLIFE')!r}, expected 0 (placement=pack)")
    return problems


# ------------------------------------------------------------------------------- template inputs
#: the settings the container template's configuration inputs default to
CONTAINER_DEFAULTS = CondorPoolSettings(central_manager="cm", trust_domain="cloud-paas.pool", ccb=True)


def template_inputs(settings: CondorPoolSettings, *, container: bool = False) -> dict[str, Any]:
    """Return the TOSCA inputs of a pool template that carry these settings (secrets excluded).

    For ``templates/htcondor_pool.yaml`` (VMs) they are the settings themselves, which the boot script
    turns into each role's configuration; for ``templates/htcondor_pool_docker.yaml`` (containers) they
    are the configurations, rendered here, and the central manager's address.

    :param settings: the pool's settings
    :param container: for the container template
    """
    if container:
        inputs: dict[str, Any] = {
            "security_mode": settings.security_mode,
            "central_manager_host": settings.central_manager,
            **{f"{short}_condor_config": render_config(settings, role, container=True)
               for short, role in (("cm", "central_manager"), ("submit", "submit"), ("execute", "execute"))},
        }
        if settings.execute_cpus:
            inputs["execute_cpus"] = settings.execute_cpus
        if settings.execute_memory_mb:
            inputs["execute_memory_mb"] = settings.execute_memory_mb
        return inputs
    low, high = settings.port_range or (0, 0)
    return {
        "trust_domain": settings.trust_domain,
        "security_mode": settings.security_mode,
        "ccb": settings.ccb,
        "low_port": low,
        "high_port": high,
        "admin_user": settings.admin_user or "",
        "pool_id": settings.deployment_id or "",
    }
