"""What a container node asks of a container engine: the one reading shared by the Docker and Kubernetes backends.

Three families of node types are read here:

- ``tosca.nodes.Container.Application`` (the packaged ``cloud_paas.nodes.Container``): the container of its
  ``image`` property, with ``command`` (split like a shell), ``environment``, ``cpus``, ``memory``, ``data_path``;
- INDIGO's ``tosca.nodes.indigo.Container.Application.Docker`` and its ``.Marathon`` (a service) and ``.Chronos``
  (a job that runs to completion) variants, which ran on Mesos: the image is the ``file`` of the node's
  ``tosca.artifacts.Deployment.Image.Container.Docker`` artifact (or an ``image`` property); ``command`` runs in
  ``/bin/sh -c`` as Marathon and Chronos ran it (it replaces the image's CMD, never its ENTRYPOINT);
  ``environment_variables``, ``privileged``, ``force_pull_image``, ``labels`` (``HAPROXY_GROUP: external``, the
  marathon-lb exposure, publishes the ports on every address); a Chronos job's ``retries``;
- INDIGO's ``tosca.nodes.indigo.Container.Runtime.Docker``, the host of such an application: no container of its
  own but the container's resource envelope, read from its ``host`` capability (``num_cpus``, ``mem_size``,
  ``num_gpus``, ``gpu_vendor``, ``publish_ports``, ``volumes``). The backend keeps it as a *record* (a labelled
  object that runs nothing) whose attributes carry the capability; the application reads it from its live host
  at create time, and the record reports ``publish_ports`` with each ``target`` filled (the host or service
  port), which INDIGO outputs read (``get_attribute: [docker_runtime, host, publish_ports, 0, target]``).

INDIGO's Onedata space nodes (``tosca.nodes.indigo.OnedataSpace``, ``.OnedataServiceSpace``), which the INDIGO
orchestrator filled from the user's Onedata account, are records too: their attributes are only what their
properties give, with a warning.

What the engines cannot honour (a Mesos placement constraint, a Chronos ``schedule``, ``uris`` the Mesos fetcher
downloaded, a volume driver) is a warning, logged by ``check`` and kept in the resource's ``warnings``
attribute; what would change the result silently (a host path volume, an unknown protocol) is an
:class:`~airflow_cloud_paas.exceptions.UnsupportedNodeError` naming the node and the field.
"""

from __future__ import annotations

import json
import logging
import shlex
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from airflow_cloud_paas.backends.base import Resource, ResourceSpec
from airflow_cloud_paas.backends.mapping import size_mb
from airflow_cloud_paas.exceptions import UnsupportedNodeError
from airflow_cloud_paas.tosca.resolve import _get_attribute, _text  # get_attribute's one evaluator; text of a value

log = logging.getLogger(__name__)

CONTAINER_TYPE = "tosca.nodes.Container.Application"
COMPUTE_TYPE = "tosca.nodes.Compute"
INDIGO_APPLICATION = "tosca.nodes.indigo.Container.Application.Docker"
INDIGO_JOB = "tosca.nodes.indigo.Container.Application.Docker.Chronos"
#: a container that runs to completion (the packaged types)
JOB_TYPE = "cloud_paas.nodes.ContainerJob"
INDIGO_RUNTIME = "tosca.nodes.indigo.Container.Runtime.Docker"
ONEDATA_TYPES = ("tosca.nodes.indigo.OnedataSpace", "tosca.nodes.indigo.OnedataServiceSpace")
IMAGE_ARTIFACT = "tosca.artifacts.Deployment.Image.Container.Docker"
DEFAULT_COMPUTE_IMAGE = "busybox:stable"
DEFAULT_COMPUTE_COMMAND = ("sleep", "infinity")
#: the label that names, on an application's container, the runtime node it is hosted on
HOST_LABEL = "cloud-paas-host"
#: the resource attribute under which a runtime record carries its ``host`` capability
ENVELOPE = "envelope"
_PROTOCOLS = ("tcp", "udp", "sctp")
#: the transport of the application protocols an endpoint capability may name
_TRANSPORT_OF = {"http": "tcp", "https": "tcp", "grpc": "tcp", "ssh": "tcp", "root": "tcp", "xroot": "tcp"}
_VOLUME_MODES = ("rw", "ro")


@dataclass(frozen=True)
class PortBinding:
    """One published port: the container's port, its protocol, and the host port (None: any free one)."""

    container_port: int
    protocol: str = "tcp"
    host_port: int | None = None

    @property
    def key(self) -> str:
        """Return Docker's port key (``8080/tcp``)."""
        return f"{self.container_port}/{self.protocol}"


@dataclass(frozen=True)
class VolumeMount:
    """One persistent volume of a container: its name (unique in the instance), where it is mounted, and how."""

    name: str
    path: str
    read_only: bool = False


@dataclass(frozen=True)
class ContainerRequirements:
    """What one node asks of a container engine (Docker or Kubernetes).

    :param kind: ``container`` (a long-running service), ``job`` (runs to completion: exit code 0 is success),
        ``compute`` (a placeholder host) or ``record`` (no container: a labelled object keeping ``record``)
    :param image: the image reference (empty for a record)
    :param command: the command that replaces the image's entrypoint (None: the image's own)
    :param args: the arguments that replace the image's CMD (None: the image's own)
    :param environment: environment variables (a value may still be a ``get_attribute`` read at create time)
    :param cpus: CPUs (fractions allowed; None: no limit)
    :param mem_mb: memory limit in MB (None: no limit)
    :param gpus: GPUs
    :param gpu_vendor: the GPUs' vendor (lower case; None: the engine's default)
    :param volumes: the persistent volumes
    :param ports: the published ports
    :param public: whether the ports are published on every address, not only loopback / inside the cluster
    :param privileged: run the container privileged
    :param force_pull: pull the image even when the engine has it
    :param labels: the application's own labels (INDIGO ``labels``)
    :param retries: how many times a failed job is run again
    :param fs_group: the group that owns the container's volumes (Kubernetes ``fsGroup``), so an image that does
        not run as root can write to a fresh volume (None: the engine's default)
    :param host: the runtime node the container is hosted on (None: none)
    :param record: what a record keeps (its attributes)
    :param warnings: what is not honoured, in words naming the node and the field
    """

    kind: str
    image: str
    command: tuple[str, ...] | None = None
    args: tuple[str, ...] | None = None
    environment: Mapping[str, Any] = field(default_factory=dict)
    cpus: float | None = None
    mem_mb: float | None = None
    gpus: int = 0
    gpu_vendor: str | None = None
    volumes: tuple[VolumeMount, ...] = ()
    ports: tuple[PortBinding, ...] = ()
    public: bool = False
    privileged: bool = False
    force_pull: bool = False
    labels: Mapping[str, str] = field(default_factory=dict)
    retries: int = 0
    fs_group: int | None = None
    host: str | None = None
    record: Mapping[str, Any] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()

    @property
    def data_path(self) -> str | None:
        """Return where the first persistent volume is mounted (None: no volume)."""
        return self.volumes[0].path if self.volumes else None

    @classmethod
    def from_spec(
        cls,
        spec: ResourceSpec,
        *,
        provider: str,
        compute_image: str = DEFAULT_COMPUTE_IMAGE,
        compute_command: tuple[str, ...] | None = DEFAULT_COMPUTE_COMMAND,
    ) -> ContainerRequirements:
        """Read a node's properties, artifacts, capabilities and live host; raise :class:`UnsupportedNodeError`.

        :param spec: the node instance wanted (its ``host`` requirement, when present, is the live runtime record)
        :param provider: the backend's name (for errors and warnings)
        :param compute_image: the image of a Compute (host) node without an ``os.image``
        :param compute_command: the command that keeps a host container alive
        """
        where = f"{spec.deployment_id}/{spec.node_name}/{spec.index}"

        def unsupported(message: str) -> UnsupportedNodeError:
            return UnsupportedNodeError(
                f"node '{spec.node_name}' of type '{spec.node_type}': {message}", provider=provider, resource=where
            )

        warnings: list[str] = []

        def warn(field_name: str, message: str) -> None:
            warnings.append(f"{provider}: node '{spec.node_name}' field '{field_name}': {message}")

        props = dict(spec.properties)
        if spec.is_a(INDIGO_RUNTIME):
            host = dict(spec.capabilities.get("host") or {})
            envelope = _envelope(host, unsupported, warn)
            return cls(kind="record", image="", record={ENVELOPE: host}, warnings=tuple(warnings), **envelope)
        if any(spec.is_a(t) for t in ONEDATA_TYPES):
            return cls(kind="record", image="", record=_onedata(spec.node_type, props, warn), warnings=tuple(warnings))
        indigo = spec.is_a(INDIGO_APPLICATION)
        command = args = None
        if spec.is_a(CONTAINER_TYPE):
            image = props.get("image") or _artifact_image(spec.artifacts)
            if not image or not isinstance(image, str):
                raise unsupported(
                    "needs an 'image' property (an image reference such as 'nginx:1.27') or an artifact of type "
                    f"{IMAGE_ARTIFACT} whose 'file' is one"
                )
            kind = "job" if spec.is_a(INDIGO_JOB) or spec.is_a(JOB_TYPE) else "container"
            if indigo and props.get("command"):
                args = ("/bin/sh", "-c", str(props["command"]))  # as Marathon and Chronos ran a command
            else:
                command = _command(props.get("command"))
        elif spec.is_a(COMPUTE_TYPE):
            kind = "compute"
            image = (spec.capabilities.get("os") or {}).get("image") or compute_image
            command = tuple(compute_command) if compute_command else None
        else:
            raise unsupported(
                f"{provider} runs only types derived from {CONTAINER_TYPE} (INDIGO's {INDIGO_APPLICATION} and its "
                f"Marathon and Chronos variants, on a {INDIGO_RUNTIME}) or {COMPUTE_TYPE}; deploy this node on "
                "another backend"
            )
        env = props.get("environment") or props.get("environment_variables") or {}
        if not isinstance(env, Mapping):
            raise unsupported(f"'environment' must be a map of strings, got {type(env).__name__}")
        host_cap = {} if indigo else dict(spec.capabilities.get("host") or {})
        try:
            cpus = props.get("cpus") if props.get("cpus") is not None else host_cap.get("num_cpus")
            cpus = float(cpus) if cpus is not None else None
            mem = size_mb(
                props.get("memory") if props.get("memory") is not None else host_cap.get("mem_size"), field="memory"
            )
        except (TypeError, ValueError) as err:
            raise unsupported(str(err)) from None
        if cpus is not None and cpus <= 0:
            raise unsupported(f"cpus must be > 0, got {cpus}")
        data_path = props.get("data_path") or None
        if data_path is not None and not str(data_path).startswith("/"):
            raise unsupported(f"data_path must be an absolute path in the container, got {data_path!r}")
        volumes = (VolumeMount("data", str(data_path)),) if data_path else ()
        ports, public = _ports(spec, unsupported)
        labels = {str(k): str(v) for k, v in (props.get("labels") or {}).items()} if indigo else {}
        fields: dict[str, Any] = {} if indigo else _gpus(props, unsupported)
        fs_group = None if indigo else props.get("fs_group")
        if fs_group is not None and (isinstance(fs_group, bool) or not isinstance(fs_group, int) or fs_group < 0):
            raise unsupported(f"fs_group must be a group id (an integer >= 0), got {fs_group!r}")
        runtime = _runtime(spec)
        if runtime is not None:  # the live record of the runtime it is hosted on: the container's envelope
            name, capability = runtime
            envelope = _envelope(capability, unsupported, lambda f, m: None)  # the runtime's check warned
            cpus = cpus if cpus is not None else envelope["cpus"]
            mem = mem or envelope["mem_mb"]
            ports = tuple({p.key: p for p in (*envelope["ports"], *ports)}.values())
            volumes = (*volumes, *envelope["volumes"])
            fields = {"gpus": envelope["gpus"], "gpu_vendor": envelope["gpu_vendor"], "host": name}
        if indigo:
            _indigo_warnings(props, kind, warn)
            public = public or labels.get("HAPROXY_GROUP", "").lower() == "external"
        retries = props.get("retries") if kind == "job" else None
        if retries is not None and (isinstance(retries, bool) or not isinstance(retries, int) or retries < 0):
            raise unsupported(f"retries must be a non-negative integer, got {retries!r}")
        return cls(
            kind=kind,
            image=str(image),
            command=command,
            args=args,
            environment={str(k): v if _is_function(v) else _text(v) for k, v in env.items()},
            cpus=cpus,
            mem_mb=mem or None,
            volumes=volumes,
            ports=ports,
            public=public,
            privileged=bool(props.get("privileged")) if indigo else False,
            force_pull=bool(props.get("force_pull_image")) if indigo else False,
            labels=labels,
            retries=retries or 0,
            fs_group=fs_group,
            warnings=tuple(warnings),
            **fields,
        )

    def live_environment(self, read: Callable[[str], Sequence[Mapping[str, Any]]]) -> dict[str, str]:
        """Return the environment with each ``get_attribute`` value read from the deployed nodes' attributes.

        :param read: node name -> the attributes of its live instances, in index order
        """
        env = {}
        for key, value in self.environment.items():
            if _is_function(value):
                name, fn_args = next(iter(value.items()))
                node = fn_args[0] if name == "get_attribute" and isinstance(fn_args, list) and fn_args else None
                value = _get_attribute(fn_args, {node: list(read(node))}) if isinstance(node, str) else None
            env[key] = _text(value)
        return env


def _gpus(props: Mapping[str, Any], unsupported: Callable[[str], UnsupportedNodeError]) -> dict[str, Any]:
    """Return the GPUs a container node asks for itself (``num_gpus``, ``gpu_vendor``); none when it names none."""
    gpus = props.get("num_gpus")
    if gpus in (None, 0):
        return {}
    if isinstance(gpus, bool) or not isinstance(gpus, int) or gpus < 0:
        raise unsupported(f"num_gpus must be an integer >= 0, got {gpus!r}")
    vendor = props.get("gpu_vendor")
    if vendor is not None and (not isinstance(vendor, str) or not vendor.strip().isalnum()):
        raise unsupported(f"gpu_vendor must be a vendor's name (nvidia, amd, intel), got {vendor!r}")
    return {"gpus": gpus, "gpu_vendor": vendor.strip().lower() if vendor else None}


def record_attributes(record: Mapping[str, Any], live_ports: Mapping[str, int] | None = None) -> dict[str, Any]:
    """Return the attributes a record reports: what it keeps, and, for a runtime, its published ports.

    A runtime's ``publish_ports`` are its capability's, each ``target`` filled: the one given, else the port
    the engine published the container's port on (``live_ports``: ``8787/tcp`` -> host port), else the source
    (a Kubernetes Service publishes the source port).

    :param record: what the record keeps (:attr:`ContainerRequirements.record`)
    :param live_ports: the live host port of each of the hosted container's ports, where the engine chose them
    """
    attributes = dict(record)
    capability = record.get(ENVELOPE)
    if isinstance(capability, Mapping):
        ports = []
        for entry in capability.get("publish_ports") or ():
            if not isinstance(entry, Mapping):
                continue
            entry = dict(entry)
            key = f"{entry.get('source')}/{str(entry.get('protocol') or 'tcp').lower()}"
            if entry.get("target") is None:
                entry["target"] = (live_ports or {}).get(key) if live_ports is not None else entry.get("source")
            ports.append(entry)
        attributes["publish_ports"] = ports
    return attributes


def encode_record(record: Mapping[str, Any]) -> str:
    """Return what a record keeps as JSON text (a label value, a ConfigMap entry).

    :param record: the record's attributes
    """
    return json.dumps(record, sort_keys=True, default=str)


def decode_record(text: str | None) -> dict[str, Any]:
    """Return what :func:`encode_record` wrote (an empty mapping for nothing or damaged text).

    :param text: the JSON text
    """
    try:
        found = json.loads(text or "{}")
    except ValueError:
        return {}
    return found if isinstance(found, dict) else {}


def log_warnings(req: ContainerRequirements) -> None:
    """Log each warning of a node (``cloud-paas validate`` and the task log show them).

    :param req: the node's requirements
    """
    for message in req.warnings:
        log.warning("%s", message)


# ---------------------------------------------------------------------- the parts
def _is_function(value: Any) -> bool:
    return isinstance(value, Mapping) and len(value) == 1 and next(iter(value)) in ("get_attribute", "get_property")


def _command(value: Any) -> tuple[str, ...] | None:
    if value is None or value == "" or value == []:
        return None
    if isinstance(value, str):
        return tuple(shlex.split(value))
    return tuple(str(v) for v in value)


def _artifact_image(artifacts: Mapping[str, Any]) -> str | None:
    """Return the ``file`` of the node's Docker image artifact (``image`` first), or None."""
    named = artifacts.get("image")
    ordered = [named] if named is not None else []
    ordered += [a for k, a in artifacts.items() if k != "image"]
    for artifact in ordered:
        if isinstance(artifact, str):
            return artifact or None
        if isinstance(artifact, Mapping) and artifact.get("type", IMAGE_ARTIFACT) == IMAGE_ARTIFACT:
            return str(artifact.get("file") or "") or None
    return None


def _runtime(spec: ResourceSpec) -> tuple[str, Mapping[str, Any]] | None:
    """Return (runtime node, its host capability) when the node's live host is a runtime record."""
    for resource in spec.requirements.get("host") or ():
        if isinstance(resource, Resource) and isinstance(resource.attributes.get(ENVELOPE), Mapping):
            return resource.node_name, resource.attributes[ENVELOPE]
    return None


def _ports(spec: ResourceSpec, unsupported) -> tuple[tuple[PortBinding, ...], bool]:
    """Collect the published ports from the endpoint capabilities and the ``ports`` property."""
    entries: list[Mapping[str, Any]] = []
    public = False
    for cap in spec.capabilities.values():
        if not isinstance(cap, Mapping):
            continue
        if str(cap.get("network_name") or "").upper() == "PUBLIC":
            public = True
        if cap.get("port") is not None and ("network_name" in cap or "protocol" in cap):
            entries.append({"source": cap["port"], "protocol": cap.get("protocol", "tcp")})
        listed = cap.get("ports") or cap.get("publish_ports") or {}
        entries.extend(
            e for e in (listed.values() if isinstance(listed, Mapping) else listed) if isinstance(e, Mapping)
        )
    for entry in spec.properties.get("ports") or ():
        entries.append(entry if isinstance(entry, Mapping) else {"source": entry})
    return _bindings(entries, unsupported), public


def _bindings(entries: Sequence[Mapping[str, Any]], unsupported) -> tuple[PortBinding, ...]:
    found: dict[str, PortBinding] = {}
    for entry in entries:
        try:
            port = int(entry.get("source", entry.get("port")))
            host_port = int(entry["target"]) if entry.get("target") is not None else None
        except (TypeError, ValueError):
            raise unsupported(f"port {dict(entry)!r} is not a number") from None
        protocol = str(entry.get("protocol") or "tcp").lower()
        # an Endpoint's protocol may name the application's (tosca.capabilities.Endpoint: http, https...)
        protocol = _TRANSPORT_OF.get(protocol, protocol)
        if protocol not in _PROTOCOLS:
            raise unsupported(f"protocol {protocol!r} is not one of {', '.join(_PROTOCOLS)}")
        for number in (port, host_port):
            if number is not None and not 0 < number < 65536:
                raise unsupported(f"port {number} is outside 1-65535")
        binding = PortBinding(port, protocol, host_port)
        found.setdefault(binding.key, binding)
    return tuple(found.values())


def _envelope(host: Mapping[str, Any], unsupported, warn) -> dict[str, Any]:
    """Read a runtime's ``host`` capability (tosca.capabilities.indigo.Container.Docker) into requirement fields."""
    try:
        cpus = float(host["num_cpus"]) if host.get("num_cpus") is not None else None
        mem = size_mb(host.get("mem_size"), field="capabilities.host.mem_size")
        gpus = int(host.get("num_gpus") or 0)
    except (TypeError, ValueError) as err:
        raise unsupported(f"capabilities.host: {err}") from None
    if cpus is not None and cpus <= 0:
        raise unsupported(f"capabilities.host.num_cpus must be > 0, got {cpus}")
    if gpus < 0:
        raise unsupported(f"capabilities.host.num_gpus must be >= 0, got {gpus}")
    listed = host.get("publish_ports") or []
    if not isinstance(listed, list) or not all(isinstance(e, Mapping) for e in listed):
        raise unsupported("capabilities.host.publish_ports must be a list of PortSpec maps (source, target, protocol)")
    volumes = tuple(_volume(v, i, unsupported, warn) for i, v in enumerate(host.get("volumes") or ()))
    for name in ("disk_size", "cpu_frequency", "gpu_model"):
        if host.get(name) not in (None, ""):
            warn(f"capabilities.host.{name}", f"{host[name]!r} is not enforced")
    if host.get("publish_all"):
        warn("capabilities.host.publish_all", "is not honoured: publish each port in publish_ports")
    vendor = str(host["gpu_vendor"]).lower() if host.get("gpu_vendor") else None
    return {"cpus": cpus, "mem_mb": mem or None, "gpus": gpus, "gpu_vendor": vendor,
            "ports": _bindings(listed, unsupported), "volumes": volumes}


def _volume(value: Any, position: int, unsupported, warn) -> VolumeMount:
    """Read one Marathon volume, ``name:/container/path[:rw|ro[:dvdi:driver]]``, as a persistent named volume."""
    where = f"capabilities.host.volumes[{position}]"
    parts = str(value).split(":") if isinstance(value, str) else []
    if len(parts) < 2 or not parts[0] or not parts[1].startswith("/"):
        raise unsupported(f"{where}: {value!r} is not 'name:/path/in/container[:rw|ro]'")
    if parts[0].startswith("/"):
        raise unsupported(f"{where}: {value!r} binds a path of the host, which a deployment may not do; use a "
                          "volume name instead of the host path")
    mode = parts[2] if len(parts) > 2 and parts[2] else "rw"
    if mode not in _VOLUME_MODES:
        raise unsupported(f"{where}: mode {mode!r} is not one of {', '.join(_VOLUME_MODES)}")
    if parts[3:]:
        warn(where, f"volume options {':'.join(parts[3:])!r} (Mesos' docker volume driver) are replaced by the "
                    "engine's own volumes")
    return VolumeMount(parts[0], parts[1], mode == "ro")


def _onedata(node_type: str, props: Mapping[str, Any], warn) -> dict[str, Any]:
    """Return the attributes of an Onedata space record: only what the properties give."""
    providers = props.get("oneproviders") or []
    found = {
        "space": props.get("space"),
        "onezone": props.get("onezone"),
        "selected_provider": providers[0] if isinstance(providers, list) and providers else None,
        "path": props.get("path"),
    }
    # never the token: a record is a label or a ConfigMap, readable by whoever lists them
    missing = sorted({"token", *(k for k, v in found.items() if v in (None, ""))})
    warn("type", f"{node_type} was resolved by the INDIGO orchestrator from the user's Onedata account, which is "
                 f"not done here: its attributes {', '.join(missing)} are empty (give space, oneproviders and "
                 "onezone as properties, and a token to the container as a conn:// input)")
    return found


def _indigo_warnings(props: Mapping[str, Any], kind: str, warn) -> None:
    """Warn about each INDIGO property that ran on Mesos and has no equivalent here."""
    for position, constraint in enumerate(props.get("constraints") or ()):
        warn(f"constraints[{position}]", f"the Mesos placement constraint {list(constraint)!r} is not honoured")
    if props.get("uris"):
        warn("uris", f"{len(props['uris'])} URI(s) that the Mesos fetcher downloaded into the sandbox are not "
                     "fetched: download them in the command, or build them into the image")
    if props.get("secrets"):
        warn("secrets", "Marathon secrets are not passed: give the values as environment_variables from conn:// "
                        "inputs")
    if kind == "job" and props.get("schedule"):
        warn("schedule", f"the Chronos schedule {props['schedule']!r} is not honoured: the job runs once, when "
                         "deployed; repeat it with the DAG's schedule")
    if props.get("enable_https"):
        warn("enable_https", "the marathon-lb TLS termination is not made: the ports serve what the container "
                             "serves")
