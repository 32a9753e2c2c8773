"""The AWS backend: EC2 instances, security groups, key pairs and EBS volumes through the ``EC2Hook``.

Every call goes through the amazon provider's :class:`~airflow.providers.amazon.aws.hooks.ec2.EC2Hook`
(``client_type``) and an ``aws`` Airflow connection (``region_name`` and, for an emulator such as the
moto server, ``endpoint_url`` in its extra), the way the provider's own EC2 operators call it.

What is made per node type:

- ``tosca.nodes.Compute`` and descendants: one EC2 instance per index; the instance type is the
  smallest that fits the ``host`` capability among the region's types (fetched once per backend),
  the image comes from the ``os`` capability; a security group per deployment and node holds the
  endpoint ports (also those of the software it hosts, open to the VPC's own ranges unless PUBLIC); a
  key pair per deployment and node when the ``os`` credential carries a public key; the
  ``user_data`` property becomes the instance's user data; the volumes of the
  ``local_storage``/``attachment`` requirements are attached.
- ``tosca.nodes.BlockStorage``: one EBS volume per index, in the backend's availability zone.
- Software nodes hosted on an instance of this backend: recorded as a tag on the host instance
  (``cloud-paas-sw:<node>:<index>``); their configuration is left to the service layer.

Everything carries the ``TAG_*`` tags, so ``create`` finds what an earlier attempt made and ``delete``
finds everything of a deployment, also of one that crashed half-way. A node's instances created together
(:meth:`AWSBackend.create_group`) come from one RunInstances call and carry their index as their launch
position in the launch's index list (:data:`LAUNCH_INDICES_TAG`); waits and deletes describe a node's
instances in one call per round. :meth:`AWSBackend.api_calls` counts every EC2 call by operation.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from functools import cached_property
from typing import Any, ClassVar

from airflow.exceptions import AirflowNotFoundException
from airflow.providers.amazon.aws.hooks.ec2 import EC2Hook
from botocore.exceptions import BotoCoreError, ClientError
from botocore.parsers import ResponseParserError

from airflow_cloud_paas.backends.base import (
    TAG_INDEX,
    TAG_NODE,
    Backend,
    Resource,
    ResourceSpec,
    ResourceState,
    group_create_error,
    poll_until,
    retry_while,
)
from airflow_cloud_paas.backends.catalog import cached
from airflow_cloud_paas.backends.mapping import (
    HostRequirements,
    ImageRequirements,
    Size,
    security_rules,
    select_image,
    select_size,
    size_mb,
)
from airflow_cloud_paas.backends.naming import LONG_PREFIX, node_stem, resource_of, tag_selector
from airflow_cloud_paas.exceptions import (
    BackendError,
    ResourceCreateError,
    ResourceTimeoutError,
    UnsupportedNodeError,
)

log = logging.getLogger(__name__)

PROVIDER = "aws"
COMPUTE_TYPE = "tosca.nodes.Compute"
BLOCK_STORAGE_TYPE = "tosca.nodes.BlockStorage"
#: node types recorded on their host instance (their own configuration is the service layer's)
HOSTED_TYPES = ("tosca.nodes.SoftwareComponent", "tosca.nodes.Database", "tosca.nodes.WebApplication")
#: tag key prefix of a software node recorded on its host instance
SOFTWARE_TAG_PREFIX = "cloud-paas-sw:"
#: requirement names through which a compute node names the volumes to attach (INDIGO uses local_storage)
STORAGE_REQUIREMENTS = ("local_storage", "attachment")
#: seconds the region's instance types are reused by every task process (see backends/catalog.py)
CATALOG_TTL = 6 * 3600.0
#: device names for attached volumes, in requirement order
#: marks an instance's own root volume (deleted with it), so it is not taken for a BlockStorage node
ROOT_VOLUME_TAG = "cloud-paas-root-volume"
_DEVICES = tuple(f"/dev/sd{c}" for c in "fghijklmnop")
_LIVE_INSTANCE_STATES = ("pending", "running", "stopping", "stopped")
#: on instances launched together by :meth:`AWSBackend.create_group`: the node indices of the launch, in launch
#: order ("0-19", "3,5-7"); instance k of the launch (its ``AmiLaunchIndex``) has the k-th. The whole group is
#: tagged by its one RunInstances call (no tag call per instance, no untagged window a crash could leave)
LAUNCH_INDICES_TAG = "cloud-paas-launch-indices"
#: EC2's limit on a tag value
_MAX_TAG_VALUE = 256
_GONE_ERRORS = ("InvalidInstanceID.NotFound", "InvalidGroup.NotFound", "InvalidKeyPair.NotFound",
                "InvalidVolume.NotFound")


def _error_code(err: BaseException) -> str:
    return err.response.get("Error", {}).get("Code", "") if isinstance(err, ClientError) else ""


def _tags(items: Sequence[Mapping[str, str]] | None) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in items or ()}


def _encode_indices(indices: Sequence[int]) -> str:
    """Return indices as ranges in their order: [0, 1, 2, 5, 7, 8] -> "0-2,5,7-8"."""
    parts: list[str] = []
    start = prev = None
    for index in [*indices, None]:
        if start is not None and index is not None and index == prev + 1:
            prev = index
            continue
        if start is not None:
            parts.append(str(start) if start == prev else f"{start}-{prev}")
        start = prev = index
    return ",".join(parts)


def _decode_indices(text: str) -> list[int]:
    """Return the indices of :func:`_encode_indices` text, in order."""
    indices: list[int] = []
    for part in filter(None, text.split(",")):
        first, _, last = part.partition("-")
        indices.extend(range(int(first), int(last or first) + 1))
    return indices


def _launch_chunks(indices: Sequence[int]) -> list[list[int]]:
    """Split indices into launches whose :data:`LAUNCH_INDICES_TAG` value fits EC2's tag limit."""
    chunks: list[list[int]] = [[]]
    for index in indices:
        if chunks[-1] and len(_encode_indices([*chunks[-1], index])) > _MAX_TAG_VALUE:
            chunks.append([])
        chunks[-1].append(index)
    return [c for c in chunks if c]


def _instance_tags(raw: Mapping[str, Any]) -> dict[str, str]:
    """Return an instance's tags, its index read from its launch's index list where it has no index tag."""
    tags = _tags(raw.get("Tags"))
    if TAG_INDEX not in tags and LAUNCH_INDICES_TAG in tags:
        indices = _decode_indices(tags[LAUNCH_INDICES_TAG])
        position = int(raw.get("AmiLaunchIndex", 0))
        if position < len(indices):
            tags[TAG_INDEX] = str(indices[position])
    return tags


def _tag_spec(kind: str, tags: Mapping[str, str]) -> list[dict[str, Any]]:
    return [{"ResourceType": kind, "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}]


def _filters(deployment_id: str, node_name: str | None = None, index: int | None = None) -> list[dict[str, Any]]:
    """Return EC2 filters that select resources by the cloud-paas tags."""
    return [{"Name": f"tag:{key}", "Values": [value]}
            for key, value in tag_selector(deployment_id, node_name, index).items()]


def _node_tags(deployment_id: str, node_name: str) -> dict[str, str]:
    """Return the tags of a node's shared resources (security group, key pair): every index of the node."""
    return {**tag_selector(deployment_id, node_name), TAG_INDEX: "*"}


def _public_key(spec: ResourceSpec) -> str | None:
    """Return the SSH public key the node's os (or endpoint) credential carries, if any."""
    for cap_name in ("os", "endpoint"):
        credential = (spec.capabilities.get(cap_name) or {}).get("credential")
        if not isinstance(credential, Mapping):
            continue
        token = str(credential.get("token") or "").strip()
        kind = str(credential.get("token_type") or "").lower()
        if token and (kind in ("public_key", "ssh_key", "ssh-key") or token.startswith(("ssh-", "ecdsa-"))):
            return token
    return None


class AWSBackend(Backend):
    """Deploy node instances as EC2 instances and EBS volumes through the amazon provider's ``EC2Hook``.

    :param conn_id: the Airflow ``aws`` connection (``region_name``/``endpoint_url`` in its extra)
    :param region_name: overrides the connection's region
    :param availability_zone: where instances and volumes go (default: the region's first zone), so
        that volumes can be attached to instances
    :param subnet_id: launch instances in this subnet (default: the default VPC)
    :param wait_timeout: seconds to wait for an instance to run or terminate, or a volume to be ready
    :param poll_interval: seconds between two state polls
    """

    name: ClassVar[str] = PROVIDER
    #: EC2's limit on user data, counted before base64
    max_user_data_bytes: ClassVar[int | None] = 16384
    state_map: ClassVar[Mapping[str, ResourceState]] = {
        # instances
        "pending": ResourceState.CREATING,
        "running": ResourceState.RUNNING,
        "shutting-down": ResourceState.DELETING,
        "terminated": ResourceState.DELETED,
        "stopping": ResourceState.STOPPED,
        "stopped": ResourceState.STOPPED,
        # volumes
        "creating": ResourceState.CREATING,
        "available": ResourceState.RUNNING,
        "in-use": ResourceState.RUNNING,
        "deleting": ResourceState.DELETING,
        "deleted": ResourceState.DELETED,
        "error": ResourceState.ERROR,
    }

    def __init__(
        self,
        conn_id: str = "aws_default",
        *,
        region_name: str | None = None,
        availability_zone: str | None = None,
        subnet_id: str | None = None,
        wait_timeout: float = 600.0,
        poll_interval: float = 5.0,
    ) -> None:
        self.conn_id = conn_id
        self.region_name = region_name
        self._availability_zone = availability_zone
        self.subnet_id = subnet_id
        self.wait_timeout = wait_timeout
        self.poll_interval = poll_interval
        self._sizes: dict[str, tuple[Size, ...]] = {}  # architecture -> sizes (the region's list, cached)
        self._images: dict[tuple, list[dict[str, Any]]] = {}
        self._calls: Counter[str] = Counter()  # EC2 operation -> calls made (see api_calls)
        self._api_seconds = 0.0  # time spent in EC2 calls (see api_seconds)
        self._calls_lock = threading.Lock()

    # ------------------------------------------------------------------ provider access
    @cached_property
    def hook(self) -> EC2Hook:
        """Return the EC2 hook (client API) of the connection."""
        return EC2Hook(api_type="client_type", aws_conn_id=self.conn_id, region_name=self.region_name)

    @cached_property
    def client(self) -> Any:
        """Return the hook's boto3 EC2 client (the provider's operators call it the same way)."""
        try:
            # the provider silently falls back to boto3's default credentials when the connection is
            # missing; a deployment must not land on whatever account the worker happens to have
            self.hook.get_connection(self.conn_id)
        except AirflowNotFoundException as err:
            raise BackendError(
                f"Airflow connection {self.conn_id!r} is not defined: create an 'aws' connection "
                "(login/password = access key id/secret, region_name and, for an emulator, endpoint_url "
                "in its extra)",
                provider=PROVIDER, resource=self.conn_id,
            ) from err
        try:
            client = self.hook.conn
        except (BotoCoreError, ClientError, ValueError) as err:
            raise BackendError(f"cannot build an EC2 client from connection {self.conn_id!r}: {err}",
                               provider=PROVIDER, resource=self.conn_id) from err
        # every call the client makes (each page of a paginator too) passes here, whoever calls it
        client.meta.events.register("before-call.ec2", self._count_call)
        client.meta.events.register("after-call.ec2", self._time_call)
        client.meta.events.register("after-call-error.ec2", self._time_call)
        return client

    def _count_call(self, model: Any = None, context: dict[str, Any] | None = None, **_: Any) -> None:
        with self._calls_lock:
            self._calls[getattr(model, "name", "unknown")] += 1
        if context is not None:
            context["cloud_paas_started"] = time.monotonic()

    def _time_call(self, context: dict[str, Any] | None = None, **_: Any) -> None:
        started = (context or {}).pop("cloud_paas_started", None)
        if started is not None:
            with self._calls_lock:
                self._api_seconds += time.monotonic() - started

    def api_seconds(self) -> float:
        """Return the seconds spent in EC2 calls so far (each call's send, retries and answer)."""
        with self._calls_lock:
            return self._api_seconds

    def api_calls(self) -> dict[str, int]:
        """Return the EC2 API calls this backend has made so far, by operation (RunInstances, DescribeInstances...)."""
        with self._calls_lock:
            return dict(self._calls)

    def _call(self, resource: str, method: str, **kwargs: Any) -> Any:
        """Call the EC2 API; turn a failure into a BackendError naming provider and resource."""
        try:
            return getattr(self.client, method)(**kwargs)
        except ClientError as err:
            raise BackendError(f"EC2 {method} failed: {err}", provider=PROVIDER, resource=resource) from err
        except (BotoCoreError, ResponseParserError) as err:  # the parser's error is not a BotoCoreError
            raise BackendError(f"EC2 {method} failed (endpoint unreachable, timed out or garbled?): {err}",
                               provider=PROVIDER, resource=resource) from err

    def _paginate(self, resource: str, method: str, key: str, **kwargs: Any) -> list[dict[str, Any]]:
        try:
            return [item for page in self.client.get_paginator(method).paginate(**kwargs) for item in page[key]]
        except (ClientError, BotoCoreError, ResponseParserError) as err:
            raise BackendError(f"EC2 {method} failed: {err}", provider=PROVIDER, resource=resource) from err

    @property
    def availability_zone(self) -> str:
        """Return the zone of every instance and volume (volumes attach only within one zone)."""
        if self._availability_zone is None:
            if self.subnet_id:
                subnets = self._call(self.subnet_id, "describe_subnets", SubnetIds=[self.subnet_id])["Subnets"]
                self._availability_zone = subnets[0]["AvailabilityZone"]
            else:
                zones = self._call("zones", "describe_availability_zones",
                                   Filters=[{"Name": "state", "Values": ["available"]}])["AvailabilityZones"]
                if not zones:
                    raise BackendError("the region has no available zone", provider=PROVIDER)
                self._availability_zone = sorted(z["ZoneName"] for z in zones)[0]
        return self._availability_zone

    # ------------------------------------------------------------------ mapping
    def sizes(self, architecture: str | None = None) -> tuple[Size, ...]:
        """Return the region's instance types (fetched once per backend), optionally of one CPU architecture.

        :param architecture: x86_64, arm64... (the image's)
        """
        key = architecture or "*"
        if key not in self._sizes:
            if "*" not in self._sizes:
                raw = cached("aws-instance-types", {"endpoint": self.client.meta.endpoint_url,
                                                    "region": self.client.meta.region_name},
                             CATALOG_TTL, lambda: self._paginate("instance-types", "describe_instance_types",
                                                                 "InstanceTypes"))
                self._sizes["*"] = tuple(self._size(t) for t in raw)
                self._arch = {t["InstanceType"]: set(t.get("ProcessorInfo", {}).get("SupportedArchitectures", []))
                              for t in raw}
            if key != "*":
                self._sizes[key] = tuple(s for s in self._sizes["*"] if architecture in self._arch[s.name])
        return self._sizes[key]

    @staticmethod
    def _size(raw: Mapping[str, Any]) -> Size:
        gpus = (raw.get("GpuInfo") or {}).get("Gpus") or []
        storage = raw.get("InstanceStorageInfo") or {}
        return Size(
            name=raw["InstanceType"],
            cpus=int(raw.get("VCpuInfo", {}).get("DefaultVCpus", 0)),
            mem_mb=float(raw.get("MemoryInfo", {}).get("SizeInMiB", 0)),
            disk_gb=0.0 if not storage else float(storage.get("TotalSizeInGB", 0)),
            gpus=sum(int(g.get("Count", 0)) for g in gpus),
            gpu_model=gpus[0].get("Name") if gpus else None,
        )

    def images(self, req: ImageRequirements, resource: str) -> list[dict[str, Any]]:
        """Return the images that may match the os requirements, as dicts for ``select_image``.

        :param req: the os requirements
        :param resource: the node (for errors)
        """
        key = (req.image, req.distribution, req.version)
        if key not in self._images:
            wanted = req.image.split("/")[-1] if req.image else None
            if wanted and wanted.startswith("ami-"):
                kwargs: dict[str, Any] = {"ImageIds": [wanted]}
            elif wanted:
                kwargs = {"Filters": [{"Name": "name", "Values": [wanted]}]}
            else:
                # never list every public image of a region: filter by name on the server side
                pattern = "*" + "*".join(p for p in (req.distribution, req.version) if p) + "*"
                kwargs = {"Filters": [{"Name": "name", "Values": [pattern]},
                                      {"Name": "state", "Values": ["available"]}]}
            try:
                raw = self.client.describe_images(**kwargs)["Images"]
            except ClientError as err:
                if _error_code(err).startswith("InvalidAMIID"):
                    raw = []
                else:
                    raise BackendError(f"EC2 describe_images failed: {err}", provider=PROVIDER,
                                       resource=resource) from err
            except (BotoCoreError, ResponseParserError) as err:
                raise BackendError(f"EC2 describe_images failed: {err}", provider=PROVIDER,
                                   resource=resource) from err
            self._images[key] = [
                {
                    "id": i["ImageId"],
                    "name": i.get("Name", ""),
                    "created": i.get("CreationDate", ""),
                    "os": i.get("PlatformDetails") or i.get("Platform") or "linux",
                    "architecture": i.get("Architecture", "x86_64"),
                    "root_device": i.get("RootDeviceName"),
                }
                for i in raw
            ]
        return self._images[key]

    def _kind(self, spec: ResourceSpec) -> str:
        if spec.is_a(COMPUTE_TYPE):
            return "compute"
        if spec.is_a(BLOCK_STORAGE_TYPE):
            return "volume"
        hosts = spec.requirements.get("host") or ()
        if any(spec.is_a(t) for t in HOSTED_TYPES) or any(r.backend == PROVIDER for r in hosts):
            return "software"
        raise UnsupportedNodeError(
            f"node '{spec.node_name}' of type '{spec.node_type}' cannot be deployed on aws: supported are "
            f"{COMPUTE_TYPE}, {BLOCK_STORAGE_TYPE} and {', '.join(HOSTED_TYPES)} hosted on an instance "
            "(and their descendants)",
            provider=PROVIDER,
            resource=f"{spec.deployment_id}/{spec.node_name}",
        )

    def _plan_compute(self, spec: ResourceSpec) -> tuple[Mapping[str, Any], Size]:
        where = f"{spec.deployment_id}/{spec.node_name}"
        image_req = ImageRequirements.from_spec(spec)
        image = select_image(image_req, self.images(image_req, where), provider=PROVIDER, resource=where)
        size = select_size(HostRequirements.from_spec(spec, PROVIDER), self.sizes(image["architecture"]),
                           provider=PROVIDER, resource=where)
        return image, size

    def check(self, spec: ResourceSpec) -> None:
        """Raise :class:`UnsupportedNodeError` if the node's type, size or image is not available; create nothing.

        :param spec: the resource wanted
        """
        kind = self._kind(spec)
        where = f"{spec.deployment_id}/{spec.node_name}"
        if kind == "compute":
            self._plan_compute(spec)
            self.check_user_data(spec)
            if spec.properties.get("user_data") is not None and not isinstance(spec.properties["user_data"], str):
                raise UnsupportedNodeError("property user_data must be a string (cloud-init text)",
                                           provider=PROVIDER, resource=where)
        elif kind == "volume":
            if spec.properties.get("volume_id"):
                raise UnsupportedNodeError(
                    "attaching an existing volume (property volume_id) is not supported on aws: "
                    "give size (and optionally snapshot_id) instead",
                    provider=PROVIDER, resource=where)
            try:
                size_mb(spec.properties.get("size"), field="size")
            except ValueError as err:
                raise UnsupportedNodeError(str(err), provider=PROVIDER, resource=where) from None

    # ------------------------------------------------------------------ describe
    def _instances(self, deployment_id: str, node_name: str | None = None,
                   index: int | None = None) -> list[dict[str, Any]]:
        # the index is matched here: instances launched together carry it in their launch's index list
        filters = _filters(deployment_id, node_name)
        filters.append({"Name": "instance-state-name", "Values": list(_LIVE_INSTANCE_STATES)})
        return [i for r in self._paginate(deployment_id, "describe_instances", "Reservations", Filters=filters)
                for i in r["Instances"] if index is None or self._matches(i, None, index)]

    def _volumes(self, deployment_id: str, node_name: str | None = None,
                 index: int | None = None) -> list[dict[str, Any]]:
        return [v for v in self._paginate(deployment_id, "describe_volumes", "Volumes",
                                          Filters=_filters(deployment_id, node_name, index))
                if v["State"] not in ("deleting", "deleted") and ROOT_VOLUME_TAG not in _tags(v.get("Tags"))]

    def _instance_resource(self, raw: Mapping[str, Any]) -> Resource:
        tags = _instance_tags(raw)
        return Resource(
            *resource_of(tags),
            backend=PROVIDER,
            resource_id=raw["InstanceId"],
            state=self.normalize_state(raw["State"]["Name"]),
            attributes={
                "kind": "instance",
                "instance_id": raw["InstanceId"],
                "instance_type": raw.get("InstanceType"),
                "image_id": raw.get("ImageId"),
                "public_address": raw.get("PublicIpAddress"),
                "private_address": raw.get("PrivateIpAddress"),
                "availability_zone": raw.get("Placement", {}).get("AvailabilityZone"),
                "key_name": raw.get("KeyName"),
                "security_groups": sorted(g["GroupId"] for g in raw.get("SecurityGroups", [])),
                "volumes": sorted(m["Ebs"]["VolumeId"] for m in raw.get("BlockDeviceMappings", [])
                                  if m.get("DeviceName") in _DEVICES),
            },
        )

    def _software_resources(self, raw: Mapping[str, Any]) -> list[Resource]:
        host = self._instance_resource(raw)
        found = []
        for key, node_type in _tags(raw.get("Tags")).items():
            if not key.startswith(SOFTWARE_TAG_PREFIX):
                continue
            node_name, _, index = key[len(SOFTWARE_TAG_PREFIX):].rpartition(":")
            found.append(Resource(
                deployment_id=host.deployment_id, node_name=node_name, index=int(index), backend=PROVIDER,
                resource_id=f"{host.resource_id}/{node_name}/{index}", state=host.state,
                attributes={"kind": "software", "node_type": node_type, "host_id": host.resource_id,
                            "public_address": host.attributes["public_address"],
                            "private_address": host.attributes["private_address"]},
            ))
        return found

    def _volume_resource(self, raw: Mapping[str, Any]) -> Resource:
        tags = _tags(raw.get("Tags"))
        attached = [a["InstanceId"] for a in raw.get("Attachments", []) if a.get("State") in ("attaching", "attached")]
        return Resource(
            *resource_of(tags),
            backend=PROVIDER,
            resource_id=raw["VolumeId"],
            state=self.normalize_state(raw["State"]),
            attributes={
                "kind": "volume",
                "volume_id": raw["VolumeId"],
                "size_gb": raw.get("Size"),
                "availability_zone": raw.get("AvailabilityZone"),
                "attached_to": attached[0] if attached else None,
            },
        )

    def describe(self, deployment_id: str, node_name: str | None = None) -> list[Resource]:
        """Return the live instances, volumes and hosted software of a deployment, sorted by node and index.

        :param deployment_id: the deployment's id
        :param node_name: only this node's resources
        """
        instances = self._instances(deployment_id)
        found = [self._instance_resource(i) for i in instances]
        for raw in instances:
            found.extend(self._software_resources(raw))
        found.extend(self._volume_resource(v) for v in self._volumes(deployment_id, node_name))
        if node_name is not None:
            found = [r for r in found if r.node_name == node_name]
        return sorted(found, key=lambda r: (r.node_name, r.index, r.resource_id))

    # ------------------------------------------------------------------ create
    def create(self, spec: ResourceSpec, *, deadline: float | None = None) -> Resource:
        """Create the instance, volume or software record (or return the existing one), waiting until RUNNING.

        :param spec: the resource wanted
        :param deadline: a ``time.monotonic()`` limit on the waits, over ``wait_timeout``
        """
        self.check(spec)
        kind = self._kind(spec)
        if kind == "volume":
            return self._create_volume(spec, deadline)
        if kind == "software":
            return self._create_software(spec, deadline)
        return self._create_instance(spec, deadline=deadline)

    def request(self, spec: ResourceSpec) -> Resource:
        """Launch an instance and return at once (PENDING -> CREATING), for a deferrable wait.

        Instances with volumes to attach, volumes and software records are made as by :meth:`create`.

        :param spec: the resource wanted
        """
        self.check(spec)
        volumes = [r for name in STORAGE_REQUIREMENTS for r in spec.requirements.get(name, ())]
        if self._kind(spec) != "compute" or volumes:
            return self.create(spec)
        return self._create_instance(spec, wait=False)

    def _where(self, spec: ResourceSpec) -> str:
        return f"{spec.deployment_id}/{spec.node_name}/{spec.index}"

    def create_group(self, specs: Sequence[ResourceSpec], *, deadline: float | None = None) -> list[Resource]:
        """Create a node's instances in as few EC2 calls as it allows; return them RUNNING, sorted by index.

        The node's security group and key pair are ensured once, before the launch; one describe finds what
        exists (a retry launches only the missing indices); one RunInstances launches the missing indices (one
        per set of instances that differ in more than their index), tagged with its index list (see
        :data:`LAUNCH_INDICES_TAG`); one describe per round waits for all of them. A launch short of capacity
        (EC2 made fewer than asked), a launch refused, an instance that ended while starting or a wait cut
        short raises one typed error naming each index not made: what this call launched for those indices is
        removed; the instances that run are kept (a retry completes the node; a failed attempt's cleanup deletes
        them unless placement's ``keep_last_attempt`` keeps it). Volumes, software records and instances that
        attach volumes are made one by one, as :meth:`create` makes them.

        :param specs: the instances wanted, distinct indices of one deployment's node
        :param deadline: a ``time.monotonic()`` limit on the waits, over ``wait_timeout``
        """
        specs = self.checked_group(specs)
        if not specs:
            return []
        first = specs[0]
        attaches = any(spec.requirements.get(name) for spec in specs for name in STORAGE_REQUIREMENTS)
        if len(specs) == 1 or self._kind(first) != "compute" or attaches:
            return super().create_group(specs, deadline=deadline)
        deployment_id, node_name = first.deployment_id, first.node_name
        where = f"{deployment_id}/{node_name}"
        wanted = {spec.index: spec for spec in specs}
        made: dict[int, Resource] = {}
        waiting: dict[str, int] = {}  # instance id -> index, waited for together
        for raw in self._instances(deployment_id, node_name):
            index = int(_instance_tags(raw).get(TAG_INDEX, -1))
            if index not in wanted or index in made or index in waiting.values():
                continue
            if raw["State"]["Name"] in ("stopping", "stopped"):  # stopped behind our back: started as create does
                made[index] = self._create_instance(wanted[index], deadline=deadline)
            else:
                waiting[raw["InstanceId"]] = index
        missing = [index for index in wanted if index not in made and index not in waiting.values()]
        failed: dict[int, str] = {}
        launched: list[str] = []  # what this call launched: removed again if it does not run
        try:
            if missing:
                self._launch_group(wanted, missing, where, waiting, launched, failed)
            if waiting:
                self._settle_group(waiting, where, deadline, made, failed)
        except BaseException as err:  # a refused describe, a task timeout: never leave what was launched half-made
            self._cleanup_group(deployment_id, node_name, launched, made, err)
            raise
        if failed:
            cause = group_create_error(node_name, failed, made, provider=PROVIDER, resource=where)
            self._cleanup_group(deployment_id, node_name, [], made, cause)
            raise cause
        return [made[index] for index in sorted(made)]

    def request_group(self, specs: Sequence[ResourceSpec]) -> list[Resource]:
        """Launch a node's missing instances as :meth:`create_group` does, and return at once (for a deferrable wait).

        One describe finds what exists, one RunInstances per set of identical instances launches the rest, one
        describe reads them back (PENDING -> CREATING); the caller polls :meth:`describe`. A launch refused or short
        of capacity raises as :meth:`create_group` does, keeping what was launched for the other indices.

        :param specs: the instances wanted, distinct indices of one deployment's node
        """
        specs = self.checked_group(specs)
        attaches = any(spec.requirements.get(name) for spec in specs for name in STORAGE_REQUIREMENTS)
        if len(specs) <= 1 or self._kind(specs[0]) != "compute" or attaches:
            return super().request_group(specs)
        deployment_id, node_name = specs[0].deployment_id, specs[0].node_name
        where = f"{deployment_id}/{node_name}"
        wanted = {spec.index: spec for spec in specs}
        found: dict[int, dict[str, Any]] = {}
        for raw in self._instances(deployment_id, node_name):
            index = int(_instance_tags(raw).get(TAG_INDEX, -1))
            if index in wanted and index not in found:
                found[index] = raw
        restart = [i for i, raw in found.items() if raw["State"]["Name"] in ("stopping", "stopped")]
        missing = [index for index in wanted if index not in found]
        waiting: dict[str, int] = {}
        failed: dict[int, str] = {}
        launched: list[str] = []
        try:
            if missing:
                self._launch_group(wanted, missing, where, waiting, launched, failed)
        except BaseException as err:  # never leave a launch half-recorded: what it made goes
            self._cleanup_group(deployment_id, node_name, launched, {}, err)
            raise
        if failed:
            cause = group_create_error(node_name, failed, [*found, *waiting.values()], provider=PROVIDER,
                                       resource=where)
            self._cleanup_group(deployment_id, node_name, [], {}, cause)
            raise cause
        seen = self._describe_ids(list(waiting), where) if waiting else {}
        made = {index: self._instance_resource(raw) for index, raw in found.items() if index not in restart}
        for instance_id, index in waiting.items():
            raw = seen.get(instance_id)  # a fresh id EC2 does not show yet is still launching
            made[index] = (self._instance_resource(raw) if raw is not None else Resource(
                deployment_id, node_name, index, backend=PROVIDER, resource_id=instance_id,
                state=ResourceState.CREATING, attributes={"kind": "instance", "instance_id": instance_id}))
        for index in restart:  # stopped behind our back: started as request does
            made[index] = self.request(wanted[index])
        return [made[index] for index in sorted(made)]

    def _launch_group(self, wanted: Mapping[int, ResourceSpec], missing: Sequence[int], where: str,
                      waiting: dict[str, int], launched: list[str], failed: dict[int, str]) -> None:
        """Launch the missing indices (the node's group and key pair ensured first, once); fill ``waiting``."""
        first = wanted[missing[0]]
        group_id = self._ensure_security_group(first)
        key_name = self._ensure_key_pair(first)
        launches: dict[tuple, list[int]] = {}  # instances that differ only in their index share one launch
        for index in missing:
            spec = wanted[index]
            image, size = self._plan_compute(spec)  # cached: no call after the node's first
            key = (image["id"], size.name, self._user_data(spec), HostRequirements.from_spec(spec, PROVIDER).disk_gb)
            launches.setdefault(key, []).append(index)
        for indices in launches.values():
            for chunk in _launch_chunks(indices):
                spec = wanted[chunk[0]]
                image, size = self._plan_compute(spec)
                tags = spec.tags if len(chunk) == 1 else {
                    **tag_selector(spec.deployment_id, spec.node_name), LAUNCH_INDICES_TAG: _encode_indices(chunk)}
                try:
                    reply = self._call(where, "run_instances",
                                       **self._launch_kwargs(spec, image, size, group_id, key_name, tags, len(chunk)))
                except BackendError as err:  # refused (a quota): its indices are reported, the other launches go on
                    failed.update((index, err.message) for index in chunk)
                    continue
                positions = set()
                for raw in reply["Instances"]:
                    position = int(raw.get("AmiLaunchIndex", 0))
                    positions.add(position)
                    waiting[raw["InstanceId"]] = chunk[position]
                    launched.append(raw["InstanceId"])
                for position, index in enumerate(chunk):
                    if position not in positions:
                        failed[index] = (f"EC2 launched {len(reply['Instances'])} of the {len(chunk)} instances asked "
                                         "(insufficient capacity?)")
                log.info("launched %d of %d instance(s) (%s, %s) for %s %s", len(positions), len(chunk), size.name,
                         image["id"], where, _encode_indices(chunk))

    def _settle_group(self, waiting: Mapping[str, int], where: str, deadline: float | None,
                      made: dict[int, Resource], failed: dict[int, str]) -> None:
        """Wait for every instance of ``waiting`` to run or end, one describe per round; sort them into made/failed."""
        try:
            found = self._wait_instances(list(waiting), ("running",), where, deadline)
        except ResourceTimeoutError as err:
            seen = self._describe_ids(list(waiting), where)
            late = {i: index for i, index in waiting.items() if (seen.get(i) or {}).get("State", {}).get("Name")
                    != "running"}
            # the caller's cleanup terminates what this call launched and is not in ``made``
            for instance_id, index in waiting.items():
                if instance_id not in late:
                    made[index] = self._instance_resource(seen[instance_id])
            raise ResourceTimeoutError(
                f"{err.message}; instance(s) {sorted(late.values())} not running by then (what was launched for them "
                f"has been removed; the running ones {sorted(made)} are kept)", provider=PROVIDER,
                resource=where) from err
        for instance_id, index in waiting.items():
            raw = found[instance_id]
            if raw["State"]["Name"] == "running":
                made[index] = self._instance_resource(raw)
            else:
                reason = (raw.get("StateReason") or {}).get("Message", "no reason given")
                failed[index] = f"instance {instance_id} went to {raw['State']['Name']} while starting: {reason}"

    def _cleanup_group(self, deployment_id: str, node_name: str, launched: Sequence[str], made: Mapping[int, Resource],
                       cause: BaseException) -> None:
        """Terminate what a failed group create launched and does not keep; the node's group too if nothing is left."""
        where = f"{deployment_id}/{node_name}"
        kept = {r.resource_id for r in made.values()}
        try:
            self._terminate([i for i in launched if i not in kept], where)
            if not self._instances(deployment_id, node_name):
                self._delete_shared(deployment_id, node_name)
        except (BackendError, ClientError, BotoCoreError, ResponseParserError) as cleanup_err:
            # the cause is what the user must see; the leftover is found by tags at delete time
            log.error("cleanup after failed create of %s failed (%s); delete the deployment to retry it; cause: %s",
                      where, cleanup_err, cause)

    def _terminate(self, instance_ids: Sequence[str], where: str) -> None:
        """Terminate instances in one call and wait until all are gone (one describe per round, no deadline)."""
        if instance_ids:
            self._call(where, "terminate_instances", InstanceIds=list(instance_ids))
            self._wait_instances(instance_ids, ("terminated",), where)

    def _describe_ids(self, instance_ids: Sequence[str], where: str) -> dict[str, dict[str, Any]]:
        """Return the instances of these ids that EC2 shows (a fresh id may not show yet), by id."""
        found: dict[str, dict[str, Any]] = {}
        for start in range(0, len(instance_ids), 200):  # EC2 takes at most 200 values per filter
            ids = list(instance_ids[start:start + 200])
            for reservation in self._paginate(where, "describe_instances", "Reservations",
                                              Filters=[{"Name": "instance-id", "Values": ids}]):
                found.update((i["InstanceId"], i) for i in reservation["Instances"])
        return found

    def _wait_instances(self, instance_ids: Sequence[str], states: Sequence[str], where: str,
                        deadline: float | None = None) -> dict[str, dict[str, Any]]:
        """Wait until every instance is in one of ``states`` (or has ended, when waiting for it to run).

        One describe per round for all of them. An instance no longer shown counts as terminated.
        """
        starting = "running" in states
        ended = ("shutting-down", "terminated")

        def state(found: Mapping[str, Any], instance_id: str) -> str:
            raw = found.get(instance_id)
            return raw["State"]["Name"] if raw else ("unknown" if starting else "terminated")

        def done(found: Mapping[str, Any]) -> bool:
            return all(state(found, i) in states or (starting and state(found, i) in ended) for i in instance_ids)

        def status(found: Mapping[str, Any]) -> str:
            counts = Counter(state(found, i) for i in instance_ids)
            return ", ".join(f"{name} {n}" for name, n in sorted(counts.items()))

        return self._wait(f"{len(instance_ids)} instance(s) {'/'.join(states)}",
                          lambda: self._describe_ids(instance_ids, where), done, where, deadline, status=status)

    def _create_instance(self, spec: ResourceSpec, wait: bool = True, deadline: float | None = None) -> Resource:
        where = self._where(spec)
        existing = self._instances(spec.deployment_id, spec.node_name, spec.index)
        if existing and not wait and existing[0]["State"]["Name"] in ("pending", "running"):
            return self._instance_resource(existing[0])
        if existing:
            raw = existing[0]
            state = raw["State"]["Name"]
            if state in ("stopping", "stopped"):
                # stopped behind our back (console, spot interruption): start it again, keep its id
                log.info("starting stopped instance %s of %s", raw["InstanceId"], where)
                self._wait_instance(raw["InstanceId"], ("stopped",), where, deadline)
                self._call(where, "start_instances", InstanceIds=[raw["InstanceId"]])
            return self._instance_resource(self._wait_instance(raw["InstanceId"], ("running",), where, deadline))

        image, size = self._plan_compute(spec)
        volumes = [r for name in STORAGE_REQUIREMENTS for r in spec.requirements.get(name, ())]
        group_id = self._ensure_security_group(spec)
        key_name = self._ensure_key_pair(spec)
        kwargs = self._launch_kwargs(spec, image, size, group_id, key_name, spec.tags, 1)
        instance_id = None
        try:
            reply = self._call(where, "run_instances", **kwargs)
            instance_id = reply["Instances"][0]["InstanceId"]
            log.info("launched %s (%s, %s) for %s", instance_id, size.name, image["id"], where)
            if not wait:  # the caller waits (a deferrable trigger polling describe)
                launched = dict(reply["Instances"][0])
                launched.setdefault("Tags", [{"Key": k, "Value": v} for k, v in spec.tags.items()])
                return self._instance_resource(launched)
            self._wait_instance(instance_id, ("running",), where, deadline)
            for device, volume in zip(_DEVICES, volumes, strict=False):
                self._attach(instance_id, volume, device, where, deadline)
            raw = self._wait_instance(instance_id, ("running",), where, deadline)
        except BaseException as err:  # also task timeouts: never leave a half-made instance behind
            self._cleanup_failed_instance(spec, instance_id, err)
            if isinstance(err, ResourceTimeoutError | ResourceCreateError):
                raise
            if isinstance(err, BackendError):
                raise ResourceCreateError(f"{err.message} (what was made has been removed)",
                                          provider=PROVIDER, resource=where) from err
            raise
        return self._instance_resource(raw)

    def _launch_kwargs(self, spec: ResourceSpec, image: Mapping[str, Any], size: Size, group_id: str,
                       key_name: str | None, tags: Mapping[str, str], count: int) -> dict[str, Any]:
        """Return the RunInstances arguments that launch up to ``count`` instances of a node, tagged ``tags``."""
        kwargs: dict[str, Any] = {
            "ImageId": image["id"],
            "InstanceType": size.name,
            # all or none: short of capacity, EC2 refuses the launch (InsufficientInstanceCapacity) rather than make
            # part of a node that cannot run whole; an answer with fewer instances is still reported per index
            "MinCount": count,
            "MaxCount": count,
            "SecurityGroupIds": [group_id],
            "Placement": {"AvailabilityZone": self.availability_zone},
            "TagSpecifications": _tag_spec("instance", tags) + _tag_spec("volume", {**tags, ROOT_VOLUME_TAG: "true"}),
        }
        if self.subnet_id:
            kwargs["SubnetId"] = self.subnet_id
        if key_name:
            kwargs["KeyName"] = key_name
        user_data = self._user_data(spec)
        if user_data:  # boto3 base64-encodes it
            kwargs["UserData"] = user_data
        disk_gb = HostRequirements.from_spec(spec, PROVIDER).disk_gb
        if disk_gb and image.get("root_device"):
            kwargs["BlockDeviceMappings"] = [{"DeviceName": image["root_device"],
                                              "Ebs": {"VolumeSize": max(1, math.ceil(disk_gb)),
                                                      "DeleteOnTermination": True}}]
        return kwargs

    @staticmethod
    def _user_data(spec: ResourceSpec) -> str | None:
        return spec.user_data if spec.user_data is not None else spec.properties.get("user_data")

    def _cleanup_failed_instance(self, spec: ResourceSpec, instance_id: str | None, cause: BaseException) -> None:
        """Terminate a half-made instance and the node's shared resources if nothing else uses them."""
        try:
            if instance_id:
                self._call(self._where(spec), "terminate_instances", InstanceIds=[instance_id])
                self._wait_instance(instance_id, ("terminated",), self._where(spec))
            if not self._instances(spec.deployment_id, spec.node_name):
                self._delete_shared(spec.deployment_id, spec.node_name)
        except (BackendError, ClientError, BotoCoreError, ResponseParserError) as cleanup_err:
            # the cause is what the user must see; the leftover is found by tags at delete time
            log.error("cleanup after failed create of %s failed (%s); delete the deployment to retry it; "
                      "cause: %s", self._where(spec), cleanup_err, cause)

    def _wait(self, what: str, probe: Callable[[], Any], done: Callable[[Any], bool], where: str,
              deadline: float | None, *, failed: Callable[[Any], str | None] | None = None,
              status: Callable[[Any], str] | None = None) -> Any:
        return poll_until(probe, done, timeout=self.wait_timeout, deadline=deadline, interval=self.poll_interval,
                          what=what, provider=PROVIDER, resource=where, failed=failed, status=status,
                          failure=lambda reason: ResourceCreateError(reason, provider=PROVIDER, resource=where),
                          hint="raise wait_timeout, or check the resource in the EC2 console")

    def _wait_instance(self, instance_id: str, states: Sequence[str], where: str,
                       deadline: float | None = None) -> dict[str, Any]:
        def read() -> dict[str, Any] | None:
            try:
                found = self.client.describe_instances(InstanceIds=[instance_id])["Reservations"]
            except ClientError as err:
                # eventual consistency: a fresh instance id may not be visible yet
                if _error_code(err) != "InvalidInstanceID.NotFound":
                    raise BackendError(f"EC2 describe_instances failed: {err}", provider=PROVIDER,
                                       resource=where) from err
                return None
            except (BotoCoreError, ResponseParserError) as err:  # a timeout, a lost connection: typed, the cause named
                raise BackendError(f"EC2 describe_instances failed: {err}", provider=PROVIDER,
                                   resource=where) from err
            return found[0]["Instances"][0] if found and found[0]["Instances"] else None

        def state(raw: Mapping[str, Any] | None) -> str:
            return raw["State"]["Name"] if raw else "unknown"

        def failed(raw: Mapping[str, Any] | None) -> str | None:
            if "running" in states and state(raw) in ("shutting-down", "terminated"):
                reason = (raw or {}).get("StateReason", {}).get("Message", "no reason given")
                return f"instance {instance_id} went to {state(raw)} while starting: {reason}"
            return None

        return self._wait(f"instance {instance_id} {'/'.join(states)}", read,
                          lambda raw: raw is not None and state(raw) in states, where, deadline, failed=failed,
                          status=state)

    def _attach(self, instance_id: str, volume: Resource, device: str, where: str, deadline: float | None) -> None:
        volume_id = volume.attributes.get("volume_id") or volume.resource_id
        self._wait_volume(volume_id, ("available", "in-use"), where, deadline)
        self._call(where, "attach_volume", InstanceId=instance_id, VolumeId=volume_id, Device=device)
        log.info("attached %s to %s as %s", volume_id, instance_id, device)

    def _wait_volume(self, volume_id: str, states: Sequence[str], where: str,
                     deadline: float | None = None) -> dict[str, Any]:
        def failed(raw: Mapping[str, Any]) -> str | None:
            return f"volume {volume_id} is in state error" if raw["State"] == "error" else None

        return self._wait(f"volume {volume_id} {'/'.join(states)}",
                          lambda: self._call(where, "describe_volumes", VolumeIds=[volume_id])["Volumes"][0],
                          lambda raw: raw["State"] in states, where, deadline, failed=failed,
                          status=lambda raw: raw["State"])

    @staticmethod
    def _group_name(deployment_id: str, node_name: str) -> str:
        """Return the name of a node's security group and key pair (``cloud-paas-<deployment>-<node>``)."""
        return node_stem(deployment_id, node_name, prefix=LONG_PREFIX)

    def _ensure_security_group(self, spec: ResourceSpec) -> str:
        where = self._where(spec)
        node_tags = _node_tags(spec.deployment_id, spec.node_name)
        found = self._call(where, "describe_security_groups",
                           Filters=_filters(spec.deployment_id, spec.node_name))["SecurityGroups"]
        if found:
            group_id = found[0]["GroupId"]
        else:
            kwargs: dict[str, Any] = {
                "GroupName": self._group_name(spec.deployment_id, spec.node_name),
                "Description": f"cloud-paas {spec.deployment_id} {spec.node_name}",
                "TagSpecifications": _tag_spec("security-group", node_tags),
            }
            if self.subnet_id:
                subnet = self._call(where, "describe_subnets", SubnetIds=[self.subnet_id])["Subnets"][0]
                kwargs["VpcId"] = subnet["VpcId"]
            group_id = self._call(where, "create_security_group", **kwargs)["GroupId"]
        rules, _public = security_rules(spec, private=lambda: self._vpc_cidrs(spec, where))
        permissions = [
            {"IpProtocol": r.protocol, "FromPort": r.port, "ToPort": r.port_end or r.port,
             "IpRanges": [{"CidrIp": r.cidr}]}
            for r in rules
        ]
        if permissions:
            try:
                self.client.authorize_security_group_ingress(GroupId=group_id, IpPermissions=permissions)
            except (ClientError, BotoCoreError, ResponseParserError) as err:  # a timeout too: a BackendError
                # a retry, or another index of the node, already added them
                if _error_code(err) != "InvalidPermission.Duplicate":
                    raise BackendError(f"EC2 authorize_security_group_ingress failed: {err}",
                                       provider=PROVIDER, resource=where) from err
        return group_id

    def _vpc_cidrs(self, spec: ResourceSpec, where: str) -> tuple[str, ...]:
        """Return the IPv4 ranges of the VPC the node's instances go in: the subnet's VPC, else the default VPC.

        These are the sources of a rule to the deployment's private network (a hosted endpoint not on PUBLIC).
        """
        if self.subnet_id:
            vpc_id = self._call(where, "describe_subnets", SubnetIds=[self.subnet_id])["Subnets"][0]["VpcId"]
            vpcs = self._call(where, "describe_vpcs", VpcIds=[vpc_id])["Vpcs"]
        else:
            vpcs = self._call(where, "describe_vpcs", Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"]
        cidrs = [assoc["CidrBlock"] for vpc in vpcs for assoc in vpc.get("CidrBlockAssociationSet") or []
                 if (assoc.get("CidrBlockState") or {}).get("State", "associated") == "associated"]
        cidrs = cidrs or [vpc["CidrBlock"] for vpc in vpcs if vpc.get("CidrBlock")]
        if not cidrs:
            raise UnsupportedNodeError(
                f"node '{spec.node_name}' opens ports to the private network, but the region has no default VPC: "
                "give the backend a subnet_id", provider=PROVIDER, resource=where)
        return tuple(dict.fromkeys(cidrs))

    def _ensure_key_pair(self, spec: ResourceSpec) -> str | None:
        public_key = _public_key(spec)
        if not public_key:
            return None
        where = self._where(spec)
        name = self._group_name(spec.deployment_id, spec.node_name)
        found = self._call(where, "describe_key_pairs",
                           Filters=_filters(spec.deployment_id, spec.node_name))["KeyPairs"]
        if found:
            return found[0]["KeyName"]
        node_tags = _node_tags(spec.deployment_id, spec.node_name)
        self._call(where, "import_key_pair", KeyName=name, PublicKeyMaterial=public_key.encode(),
                   TagSpecifications=_tag_spec("key-pair", node_tags))
        return name

    def _create_volume(self, spec: ResourceSpec, deadline: float | None) -> Resource:
        where = self._where(spec)
        existing = self._volumes(spec.deployment_id, spec.node_name, spec.index)
        if existing:
            raw = self._wait_volume(existing[0]["VolumeId"], ("available", "in-use"), where, deadline)
            return self._volume_resource(raw)
        size = size_mb(spec.properties.get("size"), field="size") or 1024.0
        kwargs: dict[str, Any] = {
            "AvailabilityZone": self.availability_zone,
            "Size": max(1, math.ceil(size / 1024)),
            "TagSpecifications": _tag_spec("volume", spec.tags),
        }
        if spec.properties.get("snapshot_id"):
            kwargs["SnapshotId"] = spec.properties["snapshot_id"]
        volume_id = self._call(where, "create_volume", **kwargs)["VolumeId"]
        try:
            raw = self._wait_volume(volume_id, ("available",), where, deadline)
        except BaseException as err:
            try:
                self._call(where, "delete_volume", VolumeId=volume_id)
            except BackendError as cleanup_err:
                log.error("cannot delete failed volume %s (%s); cause: %s", volume_id, cleanup_err, err)
            raise
        return self._volume_resource(raw)

    def _create_software(self, spec: ResourceSpec, deadline: float | None) -> Resource:
        where = self._where(spec)
        hosts = [r for r in spec.requirements.get("host", ()) if r.backend == PROVIDER]
        if not hosts:
            raise UnsupportedNodeError(
                f"node '{spec.node_name}' of type '{spec.node_type}' needs a host instance on aws "
                "(requirement 'host' to a Compute node deployed with this backend)",
                provider=PROVIDER, resource=where)
        # software on software (an application on a web server): the instance is the host's host
        host_id = hosts[0].attributes.get("host_id") or hosts[0].resource_id
        self._call(where, "create_tags", Resources=[host_id],
                   Tags=[{"Key": f"{SOFTWARE_TAG_PREFIX}{spec.node_name}:{spec.index}", "Value": spec.node_type}])
        raw = self._wait_instance(host_id, ("running",), where, deadline)
        (software,) = [r for r in self._software_resources(raw) if (r.node_name, r.index) ==
                       (spec.node_name, spec.index)]
        return software

    # ------------------------------------------------------------------ delete
    def delete(self, deployment_id: str, node_name: str | None = None, index: int | None = None) -> list[Resource]:
        """Terminate instances (and wait), then delete volumes, security groups and key pairs found by tags.

        :param deployment_id: the deployment's id
        :param node_name: only this node's resources
        :param index: only this instance
        """
        where = "/".join(str(p) for p in (deployment_id, node_name, index) if p is not None)
        deleted: list[Resource] = []
        # software records live on their host: remove the tag (or go with the host)
        instances = self._instances(deployment_id)
        for raw in instances:
            for software in self._software_resources(raw):
                if node_name in (None, software.node_name) and index in (None, software.index):
                    self._call(where, "delete_tags", Resources=[raw["InstanceId"]],
                               Tags=[{"Key": f"{SOFTWARE_TAG_PREFIX}{software.node_name}:{software.index}"}])
                    deleted.append(self._gone(software))
        doomed = [i for i in instances if self._matches(i, node_name, index)]
        if doomed:
            ids = [i["InstanceId"] for i in doomed]
            self._terminate(ids, where)
            deleted.extend(self._gone(self._instance_resource(i)) for i in doomed)
        for raw in self._volumes(deployment_id, node_name, index):
            deleted.append(self._gone(self._volume_resource(raw)))
            self._delete_volume(raw, where)
        # shared per-node resources go when no instance of their node is left (this delete holds the deployment's
        # action: nothing launches meanwhile, so what was listed and not terminated is what is left)
        gone = {i["InstanceId"] for i in doomed}
        remaining = {_tags(i.get("Tags")).get(TAG_NODE) for i in instances if i["InstanceId"] not in gone}
        if node_name is not None:
            remaining &= {node_name}
        self._delete_shared(deployment_id, node_name, keep=remaining)
        return sorted(deleted, key=lambda r: (r.node_name, r.index, r.resource_id))

    @staticmethod
    def _matches(raw: Mapping[str, Any], node_name: str | None, index: int | None) -> bool:
        tags = _instance_tags(raw)
        return (node_name is None or tags.get(TAG_NODE) == node_name) and (
            index is None or tags.get(TAG_INDEX) == str(index))

    @staticmethod
    def _gone(resource: Resource) -> Resource:
        return Resource(resource.deployment_id, resource.node_name, resource.index, resource.backend,
                        resource.resource_id, ResourceState.DELETED, resource.attributes)

    def _delete_volume(self, raw: Mapping[str, Any], where: str) -> None:
        volume_id = raw["VolumeId"]
        for attachment in raw.get("Attachments", []):
            if attachment.get("State") in ("attaching", "attached"):
                self._ignore_gone(where, "detach_volume", VolumeId=volume_id, InstanceId=attachment["InstanceId"],
                                  Force=True)
        if raw.get("Attachments"):
            self._wait_volume(volume_id, ("available",), where)
        self._ignore_gone(where, "delete_volume", VolumeId=volume_id)

    def _delete_shared(self, deployment_id: str, node_name: str | None, keep: set | frozenset = frozenset()) -> None:
        where = "/".join(p for p in (deployment_id, node_name) if p)
        filters = _filters(deployment_id, node_name)
        for group in self._call(where, "describe_security_groups", Filters=filters)["SecurityGroups"]:
            if _tags(group.get("Tags")).get(TAG_NODE) not in keep:
                self._delete_group(group["GroupId"], where)
        for pair in self._call(where, "describe_key_pairs", Filters=filters)["KeyPairs"]:
            if _tags(pair.get("Tags")).get(TAG_NODE) not in keep:
                self._ignore_gone(where, "delete_key_pair", KeyName=pair["KeyName"])

    def _delete_group(self, group_id: str, where: str) -> None:
        def attempt() -> None:
            try:
                self.client.delete_security_group(GroupId=group_id)
            except (ClientError, BotoCoreError, ResponseParserError) as err:
                if _error_code(err) not in _GONE_ERRORS:
                    raise BackendError(f"cannot delete security group {group_id}: {err}", provider=PROVIDER,
                                       resource=where) from err

        # a terminated instance keeps its group for a while on real AWS
        retry_while(attempt, lambda err: _error_code(err.__cause__) == "DependencyViolation",
                    timeout=self.wait_timeout, interval=self.poll_interval,
                    what=f"deletion of security group {group_id}", provider=PROVIDER, resource=where)

    def _ignore_gone(self, where: str, method: str, **kwargs: Any) -> None:
        try:
            getattr(self.client, method)(**kwargs)
        except (ClientError, BotoCoreError, ResponseParserError) as err:
            if _error_code(err) not in _GONE_ERRORS:
                raise BackendError(f"EC2 {method} failed: {err}", provider=PROVIDER, resource=where) from err

