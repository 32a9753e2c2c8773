"""TOSCA to provider mapping shared by every cloud backend.

Host capabilities pick the smallest size (flavor, instance type, machine type, VM size) that fits
from the provider's own list; OS capabilities pick the image; endpoints become firewall rules;
software configuration becomes cloud-init user data. A requirement the provider cannot honour is
an :class:`~airflow_cloud_paas.exceptions.UnsupportedNodeError`, never a silent default.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from airflow_cloud_paas.backends.base import ResourceSpec
from airflow_cloud_paas.exceptions import ToscaValidationError, UnsupportedNodeError

_UNITS_MB = {
    "b": 1 / 1024**2, "kb": 1 / 1024, "kib": 1 / 1024, "mb": 1, "mib": 1, "gb": 1024, "gib": 1024,
    "tb": 1024**2, "tib": 1024**2,
}


def size_mb(value: Any, *, field: str = "size") -> float | None:
    """Return a TOSCA scalar-unit.size (``"4 GB"``, ``"512 MiB"``, or a number of MB) in MB.

    :param value: the value
    :param field: what it is, for the error message
    """
    if value is None or value == "":
        return None
    if isinstance(value, int | float):
        return float(value)
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]+)?\s*", str(value))
    if not match or (match.group(2) and match.group(2).lower() not in _UNITS_MB):
        raise ValueError(f"{field}: {value!r} is not a size such as '4 GB' or '512 MiB'")
    number, unit = float(match.group(1)), (match.group(2) or "MB").lower()
    return number * _UNITS_MB[unit]


@dataclass(frozen=True)
class HostRequirements:
    """What a node's ``host`` (and ``os``) capabilities ask of a machine."""

    num_cpus: int = 1
    mem_mb: float = 0.0
    disk_gb: float = 0.0
    num_gpus: int = 0
    gpu_model: str | None = None
    gpu_vendor: str | None = None
    instance_type: str | None = None  # an explicit size name (INDIGO host.instance_type)
    preemptible: bool = False

    @classmethod
    def from_spec(cls, spec: ResourceSpec, provider: str) -> HostRequirements:
        """Read the host capability of a compute node.

        :param spec: the compute node's spec
        :param provider: the backend's name (for errors)
        """
        host = dict(spec.capabilities.get("host") or {})
        where = f"{spec.deployment_id}/{spec.node_name}"
        try:
            mem = size_mb(host.get("mem_size"), field="host.mem_size") or 0.0
            disk = size_mb(host.get("disk_size"), field="host.disk_size") or 0.0
        except ValueError as err:
            raise UnsupportedNodeError(str(err), provider=provider, resource=where) from None
        return cls(
            num_cpus=int(host.get("num_cpus") or 1),
            mem_mb=mem,
            disk_gb=disk / 1024,
            num_gpus=int(host.get("num_gpus") or 0),
            gpu_model=host.get("gpu_model"),
            gpu_vendor=host.get("gpu_vendor"),
            instance_type=host.get("instance_type"),
            preemptible=bool(host.get("preemptible_instance") or False),
        )


@dataclass(frozen=True)
class Size:
    """One machine size a provider offers."""

    name: str
    cpus: int
    mem_mb: float
    disk_gb: float = 0.0  # 0: no local disk limit (volumes are separate)
    gpus: int = 0
    gpu_model: str | None = None
    price: float | None = None  # per hour, when the provider tells; ties broken by it

    def fits(self, req: HostRequirements) -> bool:
        """Return whether this size satisfies the requirements.

        :param req: the requirements
        """
        if self.cpus < req.num_cpus or self.mem_mb < req.mem_mb or self.gpus < req.num_gpus:
            return False
        if req.disk_gb and self.disk_gb and self.disk_gb < req.disk_gb:
            return False
        if req.gpu_model and (self.gpu_model or "").lower() != req.gpu_model.lower():
            return False
        return True


def select_size(req: HostRequirements, sizes: Iterable[Size], *, provider: str, resource: str) -> Size:
    """Return the smallest size that fits (fewest GPUs, CPUs, memory, then price, then name).

    :param req: what the node needs
    :param sizes: the provider's sizes
    :param provider: the backend's name (for errors)
    :param resource: the node (for errors)
    """
    sizes = list(sizes)
    if req.instance_type:
        for size in sizes:
            if size.name == req.instance_type:
                if not size.fits(req):
                    raise UnsupportedNodeError(
                        f"instance type {size.name!r} ({size.cpus} CPUs, {size.mem_mb:.0f} MB, {size.gpus} GPUs) "
                        f"does not meet the host requirements {req}",
                        provider=provider,
                        resource=resource,
                    )
                return size
        raise UnsupportedNodeError(
            f"instance type {req.instance_type!r} is not offered; known: "
            f"{', '.join(sorted(s.name for s in sizes)[:20])}",
            provider=provider,
            resource=resource,
        )
    fitting = [s for s in sizes if s.fits(req)]
    if not fitting:
        raise UnsupportedNodeError(
            f"no size offers {req.num_cpus} CPUs, {req.mem_mb:.0f} MB memory, {req.disk_gb:.0f} GB disk, "
            f"{req.num_gpus} GPUs{' (' + req.gpu_model + ')' if req.gpu_model else ''} "
            f"among {len(sizes)} sizes",
            provider=provider,
            resource=resource,
        )
    return min(fitting, key=lambda s: (s.gpus, s.cpus, s.mem_mb, s.price if s.price is not None else 0, s.name))


@dataclass(frozen=True)
class ImageRequirements:
    """What a node's ``os`` capability asks of an image."""

    image: str | None = None  # an explicit image id or name
    type: str | None = None  # linux, windows
    distribution: str | None = None  # ubuntu, centos...
    version: str | None = None

    @classmethod
    def from_spec(cls, spec: ResourceSpec) -> ImageRequirements:
        """Read the os capability of a compute node.

        :param spec: the compute node's spec
        """
        os_cap = dict(spec.capabilities.get("os") or {})
        return cls(
            image=os_cap.get("image"),
            type=os_cap.get("type"),
            distribution=os_cap.get("distribution"),
            version=str(os_cap["version"]) if os_cap.get("version") is not None else None,
        )


def select_image(req: ImageRequirements, images: Sequence[Mapping[str, Any]], *, provider: str,
                 resource: str) -> Mapping[str, Any]:
    """Return the image that matches (``images``: dicts with id, name and optional os fields).

    An explicit image must exist (by id or name); otherwise the newest image whose name or fields
    match distribution and version is taken.

    :param req: what the node needs
    :param images: the provider's images
    :param provider: the backend's name (for errors)
    :param resource: the node (for errors)
    """
    if req.image:
        wanted = req.image.split("/")[-1] if req.image.startswith(("ost://", "aws://", "gce://")) else req.image
        for image in images:
            if wanted in (image.get("id"), image.get("name")):
                return image
        raise UnsupportedNodeError(f"image {req.image!r} not found", provider=provider, resource=resource)
    matches = []
    for image in images:
        text = " ".join(str(image.get(k, "")) for k in ("name", "distribution", "version", "os")).lower()
        if req.distribution and req.distribution.lower() not in text:
            continue
        if req.version and req.version.lower() not in text:
            continue
        if req.type and image.get("os") and req.type.lower() not in str(image["os"]).lower():
            continue
        matches.append(image)
    if not matches:
        raise UnsupportedNodeError(
            f"no image for os {req.type or '*'}/{req.distribution or '*'} {req.version or ''}".rstrip(),
            provider=provider,
            resource=resource,
        )
    return max(matches, key=lambda i: (str(i.get("created", "")), str(i.get("name", ""))))


#: the key of :attr:`ResourceSpec.capabilities` under which the deployer gives a compute node the endpoint
#: capabilities of the software it hosts: ``{hosted node: {capability: properties}}``
HOSTED_ENDPOINTS = "hosted_endpoints"
#: what a rule to "the deployment's private network" opens to where the backend names no narrower range
#: (the RFC 1918 private address ranges)
PRIVATE_RANGES = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")
ANYWHERE = "0.0.0.0/0"
_MAX_PORT = 65535


@dataclass(frozen=True)
class Rule:
    """One inbound firewall rule: ``port``, or ports ``port`` to ``port_end`` (both included) when a range."""

    port: int
    protocol: str = "tcp"
    cidr: str = ANYWHERE
    port_end: int | None = None


def _bad(message: str, node: str, field: str) -> ToscaValidationError:
    return ToscaValidationError(message, node=node, field=field)


def _port(value: Any, node: str, field: str, *, zero: bool = False) -> int:
    """Return a port number (1-65535, or 0 too when ``zero``); a typed error names the node and field."""
    if isinstance(value, bool) or not isinstance(value, int | str) or not str(value).strip().isdigit():
        raise _bad(f"{value!r} is not a port number", node, field)
    number = int(value)
    if not (0 if zero else 1) <= number <= _MAX_PORT:
        raise _bad(f"port {number} is outside {0 if zero else 1}-{_MAX_PORT}", node, field)
    return number


def port_range(value: Any, *, node: str, field: str) -> tuple[int, int] | None:
    """Return ``(low, high)`` of a ``[low, high]`` port range, or None for ``[0, 0]`` (any port: nothing to open).

    ``UNBOUNDED`` as the upper bound (TOSCA's range keyword) means 65535. Raises
    :class:`~airflow_cloud_paas.exceptions.ToscaValidationError` when the bounds are not ports, when
    ``low > high``, or when only one of them is 0.

    :param value: the range, e.g. ``[9700, 9800]``
    :param node: the node template it belongs to (for errors)
    :param field: where it is written (for errors), e.g. ``capabilities.daemons.port_range``
    """
    if not isinstance(value, list | tuple) or len(value) != 2:
        raise _bad(f"{value!r} is not a port range [low, high]", node, field)
    low = _port(value[0], node, field, zero=True)
    high = _MAX_PORT if value[1] == "UNBOUNDED" else _port(value[1], node, field, zero=True)
    if low == high == 0:
        return None
    if 0 in (low, high):
        raise _bad(f"port range [{low}, {high}] has only one bound at 0: give both ports, or [0, 0] for any port "
                   "(then no range is opened)", node, field)
    if low > high:
        raise _bad(f"port range [{low}, {high}] starts above its end: the low port must not exceed the high port",
                   node, field)
    return low, high


def _rule(port: int, protocol: str, cidr: str, end: int | None = None) -> Rule:
    return Rule(port, protocol, cidr, end if end is not None and end != port else None)


def _capability_rules(name: str, cap: Mapping[str, Any], *, node: str, hosted: bool,
                      private: Callable[[], Sequence[str]]) -> tuple[list[Rule], bool]:
    """Return the rules and the public-IP wish of one endpoint capability.

    A compute node's own endpoint opens its ports to ``remote_cidr`` or anywhere (INDIGO's behaviour). A
    hosted endpoint is known to be a ``tosca.capabilities.Endpoint``: its ``port`` opens too, and, unless its
    ``network_name`` is PUBLIC, its ports open only to the deployment's private network.
    """
    public = str(cap.get("network_name", "")).upper() == "PUBLIC"
    protocol = str(cap.get("protocol") or "tcp").lower()
    where = f"capabilities.{name}"

    def sources(entry: Mapping[str, Any]) -> Sequence[str]:
        if entry.get("remote_cidr"):
            return (str(entry["remote_cidr"]),)
        return (ANYWHERE,) if public or not hosted else tuple(private())

    rules: list[Rule] = []
    ports = cap.get("ports") or {}
    items = ports.items() if isinstance(ports, Mapping) else enumerate(ports) if isinstance(ports, list) else ()
    for key, entry in items:
        if not isinstance(entry, Mapping):
            continue
        field = f"{where}.ports.{key}"
        proto = str(entry.get("protocol") or "tcp").lower()  # a PortSpec's own (the endpoint's may be http)
        if entry.get("source_range") is not None:
            span = port_range(entry["source_range"], node=node, field=f"{field}.source_range")
            if span is not None:
                rules += [_rule(span[0], proto, cidr, span[1]) for cidr in sources(entry)]
            continue
        port = entry.get("source") or entry.get("port")
        if port is None:
            continue
        number = _port(port, node, f"{field}.source")
        rules += [_rule(number, proto, cidr) for cidr in sources(entry)]
    if cap.get("port") is not None and (hosted or "network_name" in cap):
        number = _port(cap["port"], node, f"{where}.port")
        rules += [_rule(number, protocol, cidr) for cidr in sources(cap)]
    if cap.get("port_range") is not None:
        span = port_range(cap["port_range"], node=node, field=f"{where}.port_range")
        if span is not None:
            rules += [_rule(span[0], protocol, cidr, span[1]) for cidr in sources(cap)]
    return rules, public


def security_rules(spec: ResourceSpec, *, private: Sequence[str] | Callable[[], Sequence[str]] = PRIVATE_RANGES,
                   ) -> tuple[tuple[Rule, ...], bool]:
    """Return the inbound rules from every endpoint capability, and whether a public IP is wanted.

    An endpoint gives rules from its ``ports`` (PortSpec map: ``source``, or ``source_range`` ``[low, high]``
    for a range; ``protocol``; ``remote_cidr``), its ``port``, and its ``port_range`` (``[low, high]``, a
    plain list so that each bound may be a ``get_input``, which tosca-parser refuses inside a TOSCA range).
    A range of ``[0, 0]`` (any port) opens nothing.

    The endpoints of the software a compute node hosts (under :data:`HOSTED_ENDPOINTS`, put there by the
    deployer) open on the compute node; those not on the PUBLIC network open only to ``private``.

    :param spec: the node's spec
    :param private: the sources of a rule to the deployment's private network (the backend's network range,
        or a name its firewall knows, such as Azure's ``VirtualNetwork``), or a function returning them, called
        only when such a rule exists
    :raises ToscaValidationError: a port or a port range is not valid (the hosting node and field are named)
    """
    cache: list[Sequence[str]] = []

    def private_sources() -> Sequence[str]:
        if not cache:
            cache.append(tuple(private() if callable(private) else private))
        return cache[0]

    rules: list[Rule] = []
    public = False
    for name, cap in spec.capabilities.items():
        if name == HOSTED_ENDPOINTS or not isinstance(cap, Mapping):
            continue
        found, wants_ip = _capability_rules(name, cap, node=spec.node_name, hosted=False, private=private_sources)
        rules += found
        public = public or wants_ip
    hosted = spec.capabilities.get(HOSTED_ENDPOINTS) or {}
    for node, caps in hosted.items() if isinstance(hosted, Mapping) else ():
        for name, cap in caps.items() if isinstance(caps, Mapping) else ():
            if isinstance(cap, Mapping):
                found, wants_ip = _capability_rules(name, cap, node=node, hosted=True, private=private_sources)
                rules += found
                public = public or wants_ip
    unique = tuple(dict.fromkeys(rules))
    return unique, public
