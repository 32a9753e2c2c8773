"""TOSCA to provider mapping shared by every cloud backend.

Host capabilities pick the smallest size (flavor, instance type, machine type, VM size) that fits
from the provider's own list; OS capabilities pick the image; endpoints become firewall rules;
software configuration becomes cloud-init user data. A requirement the provider cannot honour is
an :class:`~airflow_cloud_paas.exceptions.UnsupportedNodeError`, never a silent default.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from airflow_cloud_paas.backends.base import ResourceSpec
from airflow_cloud_paas.exceptions import UnsupportedNodeError

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


@dataclass(frozen=True)
class Rule:
    """One inbound firewall rule."""

    port: int
    protocol: str = "tcp"
    cidr: str = "0.0.0.0/0"
    port_end: int | None = None


def security_rules(spec: ResourceSpec) -> tuple[tuple[Rule, ...], bool]:
    """Return the inbound rules from every endpoint capability, and whether a public IP is wanted.

    :param spec: the node's spec
    """
    rules: list[Rule] = []
    public = False
    for cap in spec.capabilities.values():
        if not isinstance(cap, Mapping):
            continue
        if str(cap.get("network_name", "")).upper() == "PUBLIC":
            public = True
        ports = cap.get("ports") or {}
        for entry in ports.values() if isinstance(ports, Mapping) else ports:
            if not isinstance(entry, Mapping):
                continue
            port = entry.get("source") or entry.get("port")
            if port is None:
                continue
            rules.append(Rule(int(port), str(entry.get("protocol", "tcp")).lower(),
                              str(entry.get("remote_cidr", "0.0.0.0/0")), entry.get("source_range")))
        if cap.get("port") is not None and "network_name" in cap:
            rules.append(Rule(int(cap["port"]), str(cap.get("protocol", "tcp")).lower()))
    unique = tuple(dict.fromkeys(rules))
    return unique, public
