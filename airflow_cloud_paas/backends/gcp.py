"""The Google Cloud backend: Compute Engine instances, VPC firewall rules and persistent disks.

A ``tosca.nodes.Compute`` instance is one Compute Engine instance: its machine type is the smallest
that fits the ``host`` capability (:func:`~airflow_cloud_paas.backends.mapping.select_size` over the
zone's machine types), its boot image the newest image of the public image family that matches the
``os`` capability (or an explicit image), its endpoints become one firewall rule per deployment, node
and source range (matched to the instance by a network tag) and a PUBLIC endpoint gives it an
external IP. A ``tosca.nodes.BlockStorage`` instance is one persistent disk, attached to the instance
that requires it or that it requires.

Tags: Compute Engine labels only allow ``[a-z0-9_-]`` (63 characters), so the cloud-paas tags become
labels with ``_`` keys (``cloud_paas_deployment``) and values made label-safe (a value that is not is
slugged and suffixed with a hash of the original: deterministic, so a filter finds it again). The
exact tags are kept too: in the instance metadata, and as JSON in the description of disks and
firewall rules (firewall rules have no labels; their names start with a hash of the deployment id,
which is how ``delete`` finds them).

A node's instances created together (:meth:`GcpBackend.create_group`) come from one ``instances.bulkInsert``,
whose properties are the same for every instance: they carry the deployment and node tags only, and their
index is read back from their deterministic, hashed name (:func:`index_from_name`). Waits and deletes list a
node's instances once per round; deletes are started back to back, not waited for one by one.
:meth:`GcpBackend.api_calls` counts every request by REST method.

Every API call goes through :class:`~airflow_cloud_paas.hooks.gcp.GceHook`, the Google provider's
:class:`~airflow.providers.google.cloud.hooks.compute.ComputeEngineHook` with the calls it lacks; every
wait is :func:`~airflow_cloud_paas.backends.base.poll_until`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import re
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from functools import cached_property
from typing import Any, ClassVar

from airflow_cloud_paas.backends.base import (
    TAG_DEPLOYMENT,
    TAG_INDEX,
    TAG_NODE,
    Backend,
    Resource,
    ResourceSpec,
    ResourceState,
    UndoSteps,
    group_create_error,
    machine_or_disk,
    poll_until,
    required_resources,
    run_undo,
    undo_on_failure,
    wait_limit,
)
from airflow_cloud_paas.backends.mapping import (
    HostRequirements,
    ImageRequirements,
    Rule,
    Size,
    security_rules,
    select_image,
    select_size,
    size_mb,
)
from airflow_cloud_paas.backends.naming import (
    SHORT_PREFIX,
    TAG_KEYS,
    digest,
    label_key,
    label_value,
    ours,
    resource_of,
    slug,
    tag_selector,
)
from airflow_cloud_paas.exceptions import BackendError, ResourceTimeoutError, UnsupportedNodeError
from airflow_cloud_paas.hooks.gcp import MAX_BULK_INSERT, SERVER_WAIT_SECONDS, GceApiError, GceHook

log = logging.getLogger(__name__)

PROVIDER = "gcp"
#: public image projects searched for an image family matching the ``os`` capability
DEFAULT_IMAGE_PROJECTS = ("ubuntu-os-cloud", "debian-cloud", "rocky-linux-cloud", "centos-cloud")
#: the smallest persistent disk Compute Engine makes (pd-standard / pd-balanced)
MIN_DISK_GB = 10

_INSTANCE = "instance"
_DISK = "disk"
#: the status of a finished operation
_DONE = "DONE"
#: the statuses of an instance on its way up (the first two) or up
_BOOTING = ("PROVISIONING", "STAGING", "RUNNING")


# ------------------------------------------------------------------------------------------ naming
def gce_labels(tags: Mapping[str, str]) -> dict[str, str]:
    """Return cloud-paas tags as Compute Engine labels.

    :param tags: the tags
    """
    return {label_key(key): label_value(str(value)) for key, value in tags.items()}


def label_filter(tags: Mapping[str, str]) -> str:
    """Return a Compute Engine list filter that selects resources by cloud-paas tags.

    :param tags: the tags wanted (a subset of deployment, node, index)
    """
    return " ".join(f'(labels.{key} = "{value}")' for key, value in gce_labels(tags).items())


def instance_name(spec: ResourceSpec) -> str:
    """Return the instance name of a node instance (or the disk name of a BlockStorage one).

    Compute Engine names are ``[a-z]([-a-z0-9]{0,61}[a-z0-9])?``: readable slugs, then the index and a
    hash of the exact deployment id, node name and index so that two different specs never share a name.

    :param spec: the spec
    """
    return node_instance_name(spec.deployment_id, spec.node_name, spec.index)


def node_instance_name(deployment_id: str, node_name: str, index: int) -> str:
    """Return the instance name of instance ``index`` of a deployment's node (see :func:`instance_name`).

    :param deployment_id: the deployment's id
    :param node_name: the node template
    :param index: the instance index
    """
    suffix = f"{index}-{digest(deployment_id, node_name, str(index))}"
    dep, node = slug(deployment_id)[:20].strip("-"), slug(node_name)[:20].strip("-")
    return "-".join(p for p in (SHORT_PREFIX, dep, node, suffix) if p)


#: the end of an instance name: ``-<index>-<8 hex digits of the hash>``
_NAME_INDEX = re.compile(r"-(\d+)-[0-9a-f]{8}$")


def index_from_name(name: str, deployment_id: str, node_name: str) -> int | None:
    """Return the index an instance name encodes for a deployment's node, or None if it is no such name.

    The name is rebuilt from the index it ends with and compared whole, hash included: a name that merely
    looks alike (another node's, a hand-made one) yields None.

    :param name: the instance name
    :param deployment_id: the deployment the instance's tags name
    :param node_name: the node the instance's tags name
    """
    match = _NAME_INDEX.search(name)
    if match is None:
        return None
    index = int(match.group(1))
    return index if node_instance_name(deployment_id, node_name, index) == name else None


def firewall_prefix(deployment_id: str) -> str:
    """Return the name prefix shared by every firewall rule of a deployment.

    :param deployment_id: the deployment's id
    """
    return f"{SHORT_PREFIX}fw-{digest(deployment_id)}-"


def firewall_tag(deployment_id: str, node_name: str) -> str:
    """Return the network tag (and firewall name stem) of a deployment's node.

    :param deployment_id: the deployment's id
    :param node_name: the node template
    """
    node = slug(node_name)[:30].strip("-")
    return f"{firewall_prefix(deployment_id)}{node + '-' if node else ''}{digest(node_name, length=6)}"


def _image_facts(project: str, family: str) -> tuple[str, str | None, str]:
    """Return (distribution, version, os) of a public image family (``ubuntu-2204-lts`` -> ubuntu, 22.04)."""
    os_type = "windows" if family.startswith("windows") or project == "windows-cloud" else "linux"
    match = re.match(r"^([a-z]+(?:-[a-z]+)*?)-(\d+)(?:-|$)", family)
    if not match:
        return family, None, os_type
    distribution, number = match.group(1), match.group(2)
    if distribution.startswith("ubuntu") and len(number) == 4:  # Ubuntu families are YYMM
        number = f"{number[:2]}.{number[2:]}"
    return distribution.split("-")[0], number, os_type


def _gpu_model(accelerator_type: str) -> str:
    """Return the short GPU model of an accelerator type (``nvidia-tesla-a100`` -> ``a100``)."""
    return re.sub(r"^nvidia-(tesla-)?", "", accelerator_type.rsplit("/", 1)[-1])


def _last(url: str | None) -> str | None:
    return url.rsplit("/", 1)[-1] if url else None


def _status(item: Mapping[str, Any] | None) -> str:
    """Return the status of an instance or disk for a message (``gone`` when it does not exist)."""
    if item is None:
        return "gone"
    message = item.get("status_message")
    return f"{item.get('status')}{f' ({message})' if message else ''}"


# ------------------------------------------------------------------------------------------ the backend
class GcpBackend(Backend):
    """Deploy Compute and BlockStorage nodes on Google Compute Engine, in one zone of one project.

    :param conn_id: the Airflow connection (type ``google_cloud_platform``)
    :param zone: the zone (default: the connection's ``zone`` extra)
    :param project_id: the project (default: the connection's project)
    :param network: the VPC network of the instances and firewall rules (default: the ``network``
        extra, else ``global/networks/default``)
    :param subnetwork: the subnetwork (default: the ``subnetwork`` extra, else the network's own)
    :param image_projects: the public image projects searched for an image matching the ``os`` capability
    :param api_endpoint: another Compute Engine endpoint (default: the ``api_endpoint`` extra)
    :param impersonation_chain: service account(s) to impersonate
    :param create_timeout: seconds an instance or disk may take to become ready
    :param delete_timeout: seconds an instance, disk or rule may take to be deleted
    :param poll_interval: seconds between two status reads
    :param partial_groups: let one bulk insert of a node's instances make fewer than asked (``minCount`` 1: what
        the zone's capacity and quota allow is kept, the rest reported), rather than all or none (the default, as
        on AWS: a node that cannot run whole costs nothing)
    """

    name: ClassVar[str] = PROVIDER
    #: Compute Engine's limit on one metadata value
    max_user_data_bytes: ClassVar[int | None] = 262144
    #: instance statuses and disk statuses (the two sets do not overlap)
    state_map: ClassVar[Mapping[str, ResourceState]] = {
        # instances
        "PROVISIONING": ResourceState.CREATING,
        "STAGING": ResourceState.CREATING,
        "RUNNING": ResourceState.RUNNING,
        "STOPPING": ResourceState.STOPPED,
        "SUSPENDING": ResourceState.STOPPED,
        "SUSPENDED": ResourceState.STOPPED,
        "STOPPED": ResourceState.STOPPED,
        "TERMINATED": ResourceState.STOPPED,
        "REPAIRING": ResourceState.ERROR,
        # disks
        "CREATING": ResourceState.CREATING,
        "RESTORING": ResourceState.CREATING,
        "READY": ResourceState.RUNNING,
        "FAILED": ResourceState.ERROR,
        "DELETING": ResourceState.DELETING,
        "UNAVAILABLE": ResourceState.ERROR,
    }

    def __init__(
        self,
        conn_id: str = "google_cloud_default",
        zone: str | None = None,
        project_id: str | None = None,
        network: str | None = None,
        subnetwork: str | None = None,
        image_projects: Sequence[str] = DEFAULT_IMAGE_PROJECTS,
        api_endpoint: str | None = None,
        impersonation_chain: str | Sequence[str] | None = None,
        create_timeout: float = 600.0,
        delete_timeout: float = 300.0,
        poll_interval: float = 2.0,
        partial_groups: bool = False,
    ) -> None:
        self.conn_id = conn_id
        self.hook = GceHook(gcp_conn_id=conn_id, api_endpoint=api_endpoint, impersonation_chain=impersonation_chain)
        self._zone = zone
        self._project_id = project_id
        self._network = network
        self._subnetwork = subnetwork
        self.image_projects = tuple(image_projects)
        self.create_timeout = create_timeout
        self.delete_timeout = delete_timeout
        self.poll_interval = poll_interval
        self.partial_groups = partial_groups
        self._explicit_images: dict[str, dict[str, Any] | None] = {}

    # ---------------------------------------------------------------- configuration
    @cached_property
    def zone(self) -> str:
        """Return the zone resources are made in."""
        zone = self._zone or self.hook.extra("zone")
        if not zone:
            raise BackendError(
                f"no zone: give the backend a 'zone' option or set the 'zone' extra of connection {self.conn_id!r}",
                provider=PROVIDER, resource=self.conn_id,
            )
        return str(zone)

    @cached_property
    def project_id(self) -> str:
        """Return the project resources are made in."""
        project = self._project_id or self.hook.project_id
        if not project:
            raise BackendError(
                f"no project: give the backend a 'project_id' option or set the 'project' extra (or a key with a "
                f"project) on connection {self.conn_id!r}",
                provider=PROVIDER, resource=self.conn_id,
            )
        return str(project)

    @property
    def network(self) -> str:
        """Return the VPC network of instances and firewall rules."""
        return self._network or self.hook.extra("network") or "global/networks/default"

    @property
    def subnetwork(self) -> str | None:
        """Return the subnetwork of instances, if one is set."""
        return self._subnetwork or self.hook.extra("subnetwork") or None

    # ---------------------------------------------------------------- catalogue (read once per backend)
    @cached_property
    def sizes(self) -> list[Size]:
        """Return the zone's machine types as sizes (deprecated ones left out)."""
        sizes = []
        for mtype in self.hook.list_machine_types(project_id=self.project_id, zone=self.zone):
            if (mtype.get("deprecated") or {}).get("state"):
                continue
            accelerators = mtype.get("accelerators") or []
            gpus = sum(int(a.get("guest_accelerator_count") or 0) for a in accelerators)
            model = _gpu_model(accelerators[0]["guest_accelerator_type"]) if accelerators else None
            sizes.append(Size(name=mtype["name"], cpus=int(mtype.get("guest_cpus") or 0),
                              mem_mb=float(mtype.get("memory_mb") or 0), gpus=gpus, gpu_model=model))
        return sizes

    @cached_property
    def images(self) -> list[dict[str, Any]]:
        """Return the newest image of each public image family, as :func:`select_image` reads them."""
        newest: dict[tuple[str, str], dict[str, Any]] = {}
        for project in self.image_projects:
            for image in self.hook.list_images(project_id=project):
                family = image.get("family")
                retired = (image.get("deprecated") or {}).get("state") or image.get("status", "READY") != "READY"
                if not family or retired:
                    continue
                key = (project, family)
                if key not in newest or image.get("creation_timestamp", "") > newest[key].get("creation_timestamp", ""):
                    newest[key] = image
        return [self._image_entry(project, image) for (project, _), image in sorted(newest.items())]

    @staticmethod
    def _image_entry(project: str, image: Mapping[str, Any]) -> dict[str, Any]:
        family = image.get("family") or ""
        distribution, version, os_type = _image_facts(project, family) if family else (None, None, None)
        return {"id": f"projects/{project}/global/images/{image['name']}", "name": image["name"],
                "family": family, "distribution": distribution, "version": version, "os": os_type,
                "created": image.get("creation_timestamp"), "project": project}

    def _explicit_image(self, ref: str, where: str) -> Mapping[str, Any]:
        """Resolve an explicit image: ``projects/P/global/images/[family/]X``, ``gce://.../X`` or a name."""
        if ref in self._explicit_images:
            found = self._explicit_images[ref]
        else:
            path = ref[len("gce://"):] if ref.startswith("gce://") else ref
            match = re.search(r"projects/([^/]+)/global/images/(family/)?([^/]+)$", path)
            if match:
                project, is_family, name = match.groups()
                candidates = [(project, None, name) if not is_family else (project, name, None)]
            else:
                name = path.rsplit("/", 1)[-1]
                # a public image's name or family, else an image of the deployment's own project
                candidates = [(e["project"], None, e["name"]) for e in self.images if e["name"] == name]
                candidates += [(e["project"], e["family"], None) for e in self.images if e["family"] == name]
                candidates.append((self.project_id, None, name))
            found = None
            for project, family, name in candidates:
                image = self.hook.get_image_dict(project_id=project, family=family, name=name)
                if image is not None:
                    found = self._image_entry(project, image)
                    break
            self._explicit_images[ref] = found
        if found is None:
            raise UnsupportedNodeError(
                f"image {ref!r} not found; give 'projects/<project>/global/images/<name>' or "
                "'projects/<project>/global/images/family/<family>' of an image the connection can read",
                provider=PROVIDER, resource=where,
            )
        return found

    # ---------------------------------------------------------------- check
    def _kind(self, spec: ResourceSpec) -> str:
        return machine_or_disk(spec, PROVIDER, "Google Compute Engine", (_INSTANCE, "instances"),
                               (_DISK, "persistent disks"))

    def _instance_plan(self, spec: ResourceSpec) -> tuple[Size, Mapping[str, Any], HostRequirements]:
        where = f"{spec.deployment_id}/{spec.node_name}"
        req = HostRequirements.from_spec(spec, PROVIDER)
        size = select_size(req, self.sizes, provider=PROVIDER, resource=where)
        image_req = ImageRequirements.from_spec(spec)
        if image_req.image:
            image = self._explicit_image(image_req.image, where)
        else:
            image = select_image(image_req, self.images, provider=PROVIDER, resource=where)
        return size, image, req

    def _disk_size_gb(self, spec: ResourceSpec) -> int:
        where = f"{spec.deployment_id}/{spec.node_name}"
        try:
            mb = size_mb(spec.properties.get("size"), field="size")
        except ValueError as err:
            raise UnsupportedNodeError(str(err), provider=PROVIDER, resource=where) from None
        if not mb:
            raise UnsupportedNodeError(
                f"block storage node '{spec.node_name}' has no 'size': give one such as '10 GB'",
                provider=PROVIDER, resource=where,
            )
        return max(MIN_DISK_GB, math.ceil(mb / 1024))

    def check(self, spec: ResourceSpec) -> None:
        """Raise :class:`UnsupportedNodeError` if no machine type, image or disk fits this node; create nothing.

        :param spec: the resource wanted (requirements may be empty)
        """
        if self._kind(spec) == _INSTANCE:
            self.check_user_data(spec)
            self._instance_plan(spec)
        else:
            self._disk_size_gb(spec)

    # ---------------------------------------------------------------- describe
    @staticmethod
    def _instance_tags(instance: Mapping[str, Any]) -> dict[str, str]:
        items = (instance.get("metadata") or {}).get("items") or []
        tags = {i["key"]: i.get("value", "") for i in items if i.get("key") in TAG_KEYS}
        if TAG_INDEX not in tags and TAG_DEPLOYMENT in tags and TAG_NODE in tags:
            # made by a bulk insert, whose metadata is the same for all: the index is in the (hashed) name
            index = index_from_name(str(instance.get("name") or ""), tags[TAG_DEPLOYMENT], tags[TAG_NODE])
            if index is not None:
                tags[TAG_INDEX] = str(index)
        return tags

    @staticmethod
    def _description_tags(item: Mapping[str, Any]) -> dict[str, str]:
        try:
            data = json.loads(item.get("description") or "{}")
        except ValueError:  # a hand-made resource's free text: not ours
            return {}
        tags = data.get("cloud-paas") if isinstance(data, Mapping) else None
        return {k: str(v) for k, v in tags.items() if k in TAG_KEYS} if isinstance(tags, Mapping) else {}

    def _instance_resource(self, instance: Mapping[str, Any]) -> Resource:
        tags = self._instance_tags(instance)
        nics = instance.get("network_interfaces") or []
        access = (nics[0].get("access_configs") or []) if nics else []
        status = str(instance.get("status"))
        attributes: dict[str, Any] = {
            "kind": _INSTANCE,
            "name": instance.get("name"),
            "zone": _last(instance.get("zone")),
            "status": status,
            "machine_type": _last(instance.get("machine_type")),
            "private_ip": nics[0].get("network_i_p") if nics else None,
            "public_ip": access[0].get("nat_i_p") if access else None,
            "network_tags": sorted((instance.get("tags") or {}).get("items") or []),
            "disks": sorted(d.get("device_name") for d in instance.get("disks") or [] if not d.get("boot")),
        }
        if instance.get("status_message"):
            attributes["status_message"] = instance["status_message"]
        return Resource(*resource_of(tags), PROVIDER, str(instance.get("name")), self.normalize_state(status),
                        attributes)

    def _disk_resource(self, disk: Mapping[str, Any]) -> Resource:
        tags = self._description_tags(disk)
        status = str(disk.get("status"))
        attributes = {
            "kind": _DISK,
            "name": disk.get("name"),
            "zone": _last(disk.get("zone")),
            "status": status,
            "size_gb": int(disk.get("size_gb") or 0),
            "type": _last(disk.get("type_")),
            "self_link": disk.get("self_link"),
            "attached_to": sorted(_last(u) for u in disk.get("users") or []),
        }
        return Resource(*resource_of(tags), PROVIDER, str(disk.get("name")), self.normalize_state(status),
                        attributes)

    def _instances(self, selector: Mapping[str, str]) -> list[dict[str, Any]]:
        # bulk-inserted instances carry no index label (see create_group): the index is matched on the exact tags
        labels = {key: value for key, value in selector.items() if key != TAG_INDEX}
        found = self.hook.list_instances(project_id=self.project_id, zone=self.zone, filter_=label_filter(labels))
        # labels may be hashed: the exact tags decide; all three must be there (else not ours)
        return [i for i in found if ours(self._instance_tags(i), selector)]

    def _disks(self, selector: Mapping[str, str]) -> list[dict[str, Any]]:
        found = self.hook.list_disks(project_id=self.project_id, zone=self.zone, filter_=label_filter(selector))
        return [d for d in found if ours(self._description_tags(d), selector)]

    def _describe(self, selector: Mapping[str, str]) -> list[Resource]:
        found = [self._instance_resource(i) for i in self._instances(selector)]
        found += [self._disk_resource(d) for d in self._disks(selector)]
        return sorted(found, key=lambda r: (r.node_name, r.index, r.attributes["kind"]))

    def describe(self, deployment_id: str, node_name: str | None = None) -> list[Resource]:
        """Return the instances and disks of a deployment (optionally of one node), sorted by node, index.

        :param deployment_id: the deployment's id
        :param node_name: only this node's resources
        """
        return self._describe(tag_selector(deployment_id, node_name))

    # ---------------------------------------------------------------- waiting
    def _wait(self, what: str, probe: Callable[[], Any], done: Callable[[Any], bool], *, resource: str,
              deadline: float | None = None, delete: bool = False, failed: Callable[[Any], str | None] | None = None,
              status: Callable[[Any], str] | None = None) -> Any:
        timeout, option = (self.delete_timeout, "delete_timeout") if delete else (self.create_timeout, "create_timeout")
        return poll_until(probe, done, timeout=timeout, deadline=deadline, interval=self.poll_interval, what=what,
                          provider=PROVIDER, resource=resource, failed=failed, status=status,
                          hint=f"raise {option}, or check the zone's capacity and the instance's serial console")

    def _wait_operation(self, op_name: str, what: str, *, zone: bool = True, deadline: float | None = None,
                        delete: bool = False) -> dict[str, Any]:
        """Wait for an operation to be DONE and return it; raise GceApiError with its first error code if it failed.

        Compute Engine's ``wait`` blocks up to two minutes on the server; when less time is left than that,
        the operation is read with ``get`` instead, so the wait never outlives its limit.
        """
        limit = wait_limit(self.delete_timeout if delete else self.create_timeout, deadline)

        def read() -> dict[str, Any]:
            server_wait = limit - time.monotonic() > SERVER_WAIT_SECONDS + self.hook.request_timeout
            if zone:
                reader = self.hook.wait_zone_operation if server_wait else self.hook.get_zone_operation
                return reader(project_id=self.project_id, zone=self.zone, name=op_name)
            reader = self.hook.wait_global_operation if server_wait else self.hook.get_global_operation
            return reader(project_id=self.project_id, name=op_name)

        op = self._wait(f"{what} (operation {op_name})", read, lambda o: o.get("status") == _DONE, resource=what,
                        deadline=deadline, delete=delete, status=lambda o: str(o.get("status")))
        errors = (op.get("error") or {}).get("errors") or []
        if errors:
            first = errors[0]
            detail = "; ".join(f"{e.get('code')}: {e.get('message')}" for e in errors)
            raise GceApiError(f"{what} failed: {detail}", status_code=op.get("http_error_status_code"),
                              reason=first.get("code"), resource=what)
        return dict(op)

    def _get_instance(self, name: str) -> dict[str, Any] | None:
        return self.hook.get_instance_dict(project_id=self.project_id, zone=self.zone, name=name)

    def _wait_instance_running(self, name: str, deadline: float | None) -> dict[str, Any]:
        def failed(instance: Mapping[str, Any] | None) -> str | None:
            if instance is None:
                return "it disappeared while booting"
            if instance.get("status") in ("TERMINATED", "STOPPED", "REPAIRING"):
                return (f"it went {instance.get('status')} while booting"
                        f"{': ' + instance['status_message'] if instance.get('status_message') else ''}")
            return None

        return dict(self._wait(f"instance {name} becoming RUNNING", lambda: self._get_instance(name),
                               lambda i: i is not None and i.get("status") == "RUNNING", resource=f"instance {name}",
                               deadline=deadline, failed=failed, status=_status))

    def _delete_instance(self, name: str) -> None:
        op = self.hook.delete_instance_nowait(project_id=self.project_id, zone=self.zone, name=name)
        if op is not None:
            self._wait_operation(op, f"delete instance {name}", delete=True)

    # ---------------------------------------------------------------- create
    def create(self, spec: ResourceSpec, *, deadline: float | None = None) -> Resource:
        """Create the instance or disk of a node instance (or return the existing one), waiting until ready.

        :param spec: the resource wanted
        :param deadline: a ``time.monotonic()`` limit on the waits, over ``create_timeout``
        """
        self.check(spec)
        if self._kind(spec) == _INSTANCE:
            return self._create_instance(spec, deadline=deadline)
        return self._create_disk(spec, deadline)

    def request(self, spec: ResourceSpec) -> Resource:
        """Insert an instance and return once Compute Engine accepted it (PROVISIONING), for a deferrable wait.

        Instances with disks to attach, and disks, are made as by :meth:`create`.

        :param spec: the resource wanted
        """
        self.check(spec)
        if self._kind(spec) != _INSTANCE or required_resources(spec, PROVIDER, _DISK):
            return self.create(spec)
        return self._create_instance(spec, wait=False)

    def api_calls(self) -> dict[str, int]:
        """Return the Compute Engine requests this backend has made so far, by REST method (``instances.list``...)."""
        return self.hook.api_calls()

    # ---------------------------------------------------------------- create a node's instances together
    def create_group(self, specs: Sequence[ResourceSpec], *, deadline: float | None = None) -> list[Resource]:
        """Create a node's instances with one bulk insert; return them RUNNING, sorted by index.

        The node's firewall rules are ensured once, before the launch; one list finds what exists (a retry launches
        only the missing indices); one ``instances.bulkInsert`` per set of instances that differ in more than their
        name makes the missing ones; one list per round waits for all of them.

        A bulk insert gives every instance the same properties, labels and metadata included, so these instances
        carry the deployment and node as labels and metadata, and their index in their name only: the name is
        deterministic and hashed (:func:`index_from_name` rebuilds it to check), so it identifies the index as
        surely as a tag. Setting an index label and metadata item afterwards would cost three more requests per
        instance (``get`` for the fingerprints, ``setLabels``, ``setMetadata``), which is what the bulk call saves.

        A bulk insert refused (quota, capacity: all or none unless ``partial_groups``), one that made fewer than
        asked, an instance that stopped while booting or a wait cut short raises one typed error naming each index
        not made: what this call launched for those indices is removed, the instances that run are kept (a retry
        completes the node; a failed attempt's cleanup deletes them unless placement's ``keep_last_attempt`` keeps
        it). Disks, and instances that attach disks, are made one by one as :meth:`create` makes them; so are
        instances found stopped, suspended, repairing or being deleted.

        :param specs: the instances wanted, distinct indices of one deployment's node
        :param deadline: a ``time.monotonic()`` limit on the waits, over ``create_timeout``
        """
        specs = self.checked_group(specs)
        if not specs:
            return []
        first = specs[0]
        if len(specs) == 1 or self._kind(first) != _INSTANCE or any(
                required_resources(spec, PROVIDER, _DISK) for spec in specs):
            return super().create_group(specs, deadline=deadline)
        where = f"{first.deployment_id}/{first.node_name}"
        node = tag_selector(first.deployment_id, first.node_name)
        wanted = {spec.index: spec for spec in specs}
        made: dict[int, Resource] = {}
        waiting: dict[str, int] = {}  # instance name -> index, waited for together
        for instance in self._instances(node):
            index = int(self._instance_tags(instance)[TAG_INDEX])
            if index not in wanted or index in made or index in waiting.values():
                continue
            if instance.get("status") in _BOOTING:
                waiting[str(instance["name"])] = index
            else:  # stopped, suspended, repairing or being deleted: settled and started as create does
                made[index] = self._create_instance(wanted[index], deadline=deadline)
        missing = [index for index in wanted if index not in made and index not in waiting.values()]
        failed: dict[int, str] = {}
        launched: list[str] = []  # what this call launched: removed again if it does not run
        undo: UndoSteps = []  # the node's firewall rules, if this call made them
        try:
            if missing:
                self._launch_group(wanted, missing, where, deadline, waiting, launched, failed, undo)
            if waiting:
                self._settle_group(waiting, node, where, deadline, made, failed)
        except BaseException as err:  # a refused list, a timeout, a task killed: never leave a launch half-made
            self._cleanup_group(node, where, launched, made, undo, err)
            raise
        if failed:
            cause = group_create_error(first.node_name, failed, made, provider=PROVIDER, resource=where)
            self._cleanup_group(node, where, launched, made, undo, cause)
            raise cause
        return [made[index] for index in sorted(made)]

    def _refusal(self, err: GceApiError) -> str:
        hint = self._hint(err)
        return f"{err.message}; {hint}" if hint else err.message

    def _launch_group(self, wanted: Mapping[int, ResourceSpec], missing: Sequence[int], where: str,
                      deadline: float | None, waiting: dict[str, int], launched: list[str], failed: dict[int, str],
                      undo: UndoSteps) -> None:
        """Ensure the node's firewall rules once, bulk-insert the missing indices, wait for that; fill ``waiting``."""
        first = wanted[missing[0]]
        try:
            self._ensure_firewalls(first, undo, deadline)
        except GceApiError as err:  # no instance can be reached as asked: none is launched
            failed.update((index, self._refusal(err)) for index in missing)
            return
        node = tag_selector(first.deployment_id, first.node_name)
        launches: dict[str, tuple[dict[str, Any], list[int]]] = {}
        for index in missing:
            spec = wanted[index]
            size, image, req = self._instance_plan(spec)  # the catalogue is cached: no request after the first
            properties = self._instance_properties(spec, node, size, image, req, security_rules(spec)[1])
            # instances that differ only in their name share one bulk insert (user data may differ per index)
            launches.setdefault(json.dumps(properties, sort_keys=True), (properties, []))[1].append(index)
        started: list[tuple[str, dict[str, int]]] = []  # (operation, instance name -> index)
        for properties, indices in launches.values():
            for start in range(0, len(indices), MAX_BULK_INSERT):
                names = {instance_name(wanted[index]): index for index in indices[start:start + MAX_BULK_INSERT]}
                try:
                    op = self.hook.bulk_insert_instances_nowait(
                        project_id=self.project_id, zone=self.zone, properties=properties, names=list(names),
                        min_count=1 if self.partial_groups else len(names), request_id=str(uuid.uuid4()))
                except GceApiError as err:  # refused at once (quota, capacity): reported, the other launches go on
                    failed.update((index, self._refusal(err)) for index in names.values())
                    continue
                launched.extend(names)
                started.append((op, names))
                log.info("Bulk-inserting %d instance(s) of %s (machine type %s)", len(names), where,
                         properties["machine_type"])
        for position, (op, names) in enumerate(started):  # all started back to back, then waited for
            try:
                self._wait_operation(op, f"bulk insert of {len(names)} instance(s) of {where}", deadline=deadline)
            except GceApiError as err:  # failed later (rolled back): whatever it left is removed with the launch
                failed.update((index, self._refusal(err)) for index in names.values())
            except BaseException:
                # cut short (the attempt's deadline, the task killed): the inserts still running would make instances
                # after the caller's cleanup deleted what it saw; let them end first (no attempt deadline)
                for other, _ in started[position:]:
                    try:
                        self._wait_operation(other, f"bulk insert of {where}, before its cleanup")
                    except Exception as err:  # noqa: BLE001 - the cause raised below is what the user must see
                        log.warning("bulk insert %s of %s did not end cleanly before its cleanup: %s", other, where,
                                    err)
                raise
        if not started:
            return
        present = set(self._named_instances(launched, node))
        for _, names in started:
            made_here = sum(name in present for name in names)
            for name, index in names.items():
                if index in failed:
                    continue
                if name in present:
                    waiting[name] = index
                else:
                    failed[index] = (f"the bulk insert made {made_here} of the {len(names)} instances asked (the "
                                     "zone's capacity or the project's quota); retry later, or use another zone or "
                                     "size")

    def _named_instances(self, names: Sequence[str], selector: Mapping[str, str]) -> dict[str, dict[str, Any]]:
        """Return the instances of these names among those of a selector (one list), by name."""
        wanted = set(names)
        return {str(i["name"]): i for i in self._instances(selector) if i.get("name") in wanted}

    def _settle_group(self, waiting: Mapping[str, int], node: Mapping[str, str], where: str, deadline: float | None,
                      made: dict[int, Resource], failed: dict[int, str]) -> None:
        """Wait until every instance of ``waiting`` runs or ended, one list per round; sort them into made/failed."""
        names = list(waiting)

        def done(found: Mapping[str, Mapping[str, Any]]) -> bool:
            # gone or stopped while booting is final too: reported below
            return all(n not in found or found[n].get("status") not in _BOOTING[:2] for n in names)

        def status(found: Mapping[str, Mapping[str, Any]]) -> str:
            counts = Counter(str(found[n].get("status")) if n in found else "gone" for n in names)
            return ", ".join(f"{state} {count}" for state, count in sorted(counts.items()))

        try:
            found = self._wait(f"{len(names)} instance(s) of {where} becoming RUNNING",
                               lambda: self._named_instances(names, node), done, resource=where, deadline=deadline,
                               status=status)
        except ResourceTimeoutError as err:
            seen = self._named_instances(names, node)
            for name, index in waiting.items():
                if (seen.get(name) or {}).get("status") == "RUNNING":
                    made[index] = self._instance_resource(seen[name])
            late = sorted(index for index in waiting.values() if index not in made)
            # the caller's cleanup deletes what this call launched and is not in ``made``
            raise ResourceTimeoutError(
                f"{err.message}; instance(s) {late} of node '{node[TAG_NODE]}' not running by then (what was launched "
                f"for them has been removed; the running ones {sorted(made)} are kept)", provider=PROVIDER,
                resource=where) from err
        for name, index in waiting.items():
            instance = found.get(name)
            if instance is not None and instance.get("status") == "RUNNING":
                made[index] = self._instance_resource(instance)
            else:
                failed[index] = f"instance {name} went {_status(instance)} while booting"

    def _cleanup_group(self, node: Mapping[str, str], where: str, launched: Sequence[str],
                       made: Mapping[int, Resource], undo: UndoSteps, cause: BaseException) -> None:
        """Delete what a failed group create launched and does not keep; its firewall rules too if nothing is left."""
        kept = {r.resource_id for r in made.values()}
        try:
            self._delete_instances([name for name in launched if name not in kept], node, where)
        except BackendError as err:
            # the cause is what the user must see; the leftover is found by tags at delete time
            log.error("cleanup after failed create of %s failed (%s); delete the deployment to retry it; cause: %s",
                      where, err, cause)
        run_undo(undo, (BackendError,), log)  # each rule goes only if no instance of the node is left

    def _delete_instances(self, names: Sequence[str], selector: Mapping[str, str], where: str) -> None:
        """Delete instances back to back, without waiting for each, then wait until all are gone: one list a round."""
        pending = [name for name in names if self.hook.delete_instance_nowait(
            project_id=self.project_id, zone=self.zone, name=name) is not None]
        if not pending:
            return
        self._wait(f"{len(pending)} instance(s) of {where} deleted", lambda: self._named_instances(pending, selector),
                   lambda found: not found, resource=where, delete=True,
                   status=lambda found: ", ".join(f"{name} {_status(i)}" for name, i in sorted(found.items())))

    def _undo_on_failure(self, spec: ResourceSpec, label: str, undo: UndoSteps,
                         failed_prefix: str = "") -> contextlib.AbstractContextManager[None]:
        return undo_on_failure(PROVIDER, spec, label, undo, log, api_error=GceApiError, hint=self._hint,
                               failed_prefix=failed_prefix)

    @staticmethod
    def _hint(err: GceApiError) -> str:
        if err.is_quota:
            return "raise the project's quota (IAM & Admin > Quotas) or free resources, then retry"
        # an operation's error code, or the reason of a bulk insert refused at once
        if (err.reason or "").upper() in ("ZONE_RESOURCE_POOL_EXHAUSTED", "ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS",
                                          "INSUFFICIENTCAPACITY"):
            return "the zone has no capacity for this machine type now: retry later, or use another zone or size"
        return ""

    def _existing_instance(self, spec: ResourceSpec) -> dict[str, Any] | None:
        for instance in sorted(self._instances(spec.tags), key=lambda i: str(i.get("creation_timestamp", ""))):
            if instance.get("status") == "REPAIRING":
                log.warning("Instance %s of %s/%s/%s is REPAIRING: replacing it", instance["name"],
                            spec.deployment_id, spec.node_name, spec.index)
                self._delete_instance(instance["name"])
                continue
            return instance
        return None

    def _firewall_bodies(self, spec: ResourceSpec, rules: Sequence[Rule]) -> list[dict[str, Any]]:
        """Return one firewall rule per source range (a rule has one set of sources for all its ports)."""
        by_cidr: dict[str, list[Rule]] = {}
        for rule in rules:
            by_cidr.setdefault(rule.cidr, []).append(rule)
        tag = firewall_tag(spec.deployment_id, spec.node_name)
        description = json.dumps({"cloud-paas": {TAG_DEPLOYMENT: spec.deployment_id, TAG_NODE: spec.node_name}})
        bodies = []
        for number, cidr in enumerate(sorted(by_cidr)):
            allowed: dict[str, list[str]] = {}
            for rule in by_cidr[cidr]:
                ports = allowed.setdefault(rule.protocol, [])
                if rule.protocol in ("tcp", "udp", "sctp"):
                    ports.append(f"{rule.port}-{rule.port_end}" if rule.port_end else str(rule.port))
            bodies.append({
                "name": f"{tag}-{number}", "network": self.network, "direction": "INGRESS", "priority": 1000,
                "description": description, "source_ranges": [cidr], "target_tags": [tag],
                "allowed": [{"I_p_protocol": proto, **({"ports": sorted(set(p))} if p else {})}
                            for proto, p in sorted(allowed.items())],
            })
        return bodies

    def _ensure_firewalls(self, spec: ResourceSpec, undo: UndoSteps, deadline: float | None) -> None:
        # a hosted endpoint not on PUBLIC opens to the RFC 1918 ranges (mapping.PRIVATE_RANGES), one rule each
        rules, _ = security_rules(spec)
        if not rules:
            return
        tag = firewall_tag(spec.deployment_id, spec.node_name)
        existing = {f["name"] for f in self.hook.list_firewalls(project_id=self.project_id,
                                                                 filter_=f'name eq "{tag}-.*"')}
        for body in self._firewall_bodies(spec, rules):
            if body["name"] in existing:
                continue
            op = self.hook.insert_firewall_nowait(project_id=self.project_id, body=body)
            undo.append((f"firewall rule {body['name']}", lambda n=body["name"]: self._delete_firewall_if_unused(
                n, spec.deployment_id, spec.node_name)))
            self._wait_operation(op, f"insert firewall rule {body['name']}", zone=False, deadline=deadline)

    def _delete_firewall(self, name: str) -> None:
        op = self.hook.delete_firewall_nowait(project_id=self.project_id, name=name)
        if op is not None:
            self._wait_operation(op, f"delete firewall rule {name}", zone=False, delete=True)

    def _delete_firewall_if_unused(self, name: str, deployment_id: str, node_name: str) -> None:
        if not self._instances(tag_selector(deployment_id, node_name)):
            self._delete_firewall(name)

    def _instance_body(self, spec: ResourceSpec, name: str, size: Size, image: Mapping[str, Any],
                       req: HostRequirements, public: bool) -> dict[str, Any]:
        return {"name": name, **self._instance_properties(spec, spec.tags, size, image, req, public),
                "machine_type": f"zones/{self.zone}/machineTypes/{size.name}"}

    def _instance_properties(self, spec: ResourceSpec, tags: Mapping[str, str], size: Size, image: Mapping[str, Any],
                             req: HostRequirements, public: bool) -> dict[str, Any]:
        """Return an instance's fields but its name, labelled ``tags`` (a bulk insert's InstanceProperties)."""
        labels = gce_labels(tags)
        nic: dict[str, Any] = {"network": self.network}
        if self.subnetwork:
            nic["subnetwork"] = self.subnetwork
        if public:
            nic["access_configs"] = [{"name": "External NAT", "type_": "ONE_TO_ONE_NAT"}]
        scheduling: dict[str, Any] = {}
        if size.gpus:  # instances with GPUs cannot live-migrate
            scheduling["on_host_maintenance"] = "TERMINATE"
        if req.preemptible:
            scheduling.update(preemptible=True, automatic_restart=False, on_host_maintenance="TERMINATE")
        body: dict[str, Any] = {
            "machine_type": size.name,  # what a bulk insert takes; a single insert takes the URL
            "labels": labels,
            # the exact tags (labels may be hashed): what describe and delete trust
            "metadata": {"items": [{"key": k, "value": v} for k, v in tags.items()]
                         # cloud-init on Compute Engine images reads the user-data key
                         + ([{"key": "user-data", "value": spec.user_data}] if spec.user_data else [])},
            "disks": [{"boot": True, "auto_delete": True, "device_name": "boot", "initialize_params": {
                "source_image": image["id"], "disk_size_gb": max(MIN_DISK_GB, math.ceil(req.disk_gb)),
                "labels": labels}}],
            "network_interfaces": [nic],
        }
        if security_rules(spec)[0]:
            body["tags"] = {"items": [firewall_tag(spec.deployment_id, spec.node_name)]}
        if scheduling:
            body["scheduling"] = scheduling
        return body

    def _create_instance(self, spec: ResourceSpec, wait: bool = True, deadline: float | None = None) -> Resource:
        size, image, req = self._instance_plan(spec)
        name = instance_name(spec)
        label = f"instance {name}"
        _, public = security_rules(spec)
        undo: UndoSteps = []
        with self._undo_on_failure(spec, label, undo):
            instance = self._existing_instance(spec)
            if not wait:  # the caller waits (a deferrable trigger polling describe)
                if instance is None:
                    self._insert_instance(spec, name, size, image, req, public, undo, deadline)
                    instance = self._get_instance(name)
                if instance is not None and instance.get("status") in ("PROVISIONING", "STAGING", "RUNNING"):
                    return self._instance_resource(instance)
            if instance is not None and instance.get("status") in (
                    "STOPPING", "SUSPENDING", "TERMINATED", "STOPPED", "SUSPENDED"):
                # stopped in the console, or a delete in flight (STOPPING, then gone): let it settle first
                instance = self._wait(f"{label} settling", lambda: self._get_instance(name),
                                      lambda i: i is None or i.get("status") not in ("STOPPING", "SUSPENDING"),
                                      resource=label, deadline=deadline, status=_status)
                if instance is not None:
                    resume = instance.get("status") == "SUSPENDED"
                    log.info("%s is %s: %s it", label, instance.get("status"), "resuming" if resume else "starting")
                    op = self.hook.start_instance_nowait(project_id=self.project_id, zone=self.zone, name=name,
                                                         resume=resume)
                    self._wait_operation(op, f"start {label}", deadline=deadline)
            if instance is None:
                self._insert_instance(spec, name, size, image, req, public, undo, deadline)
            instance = self._wait_instance_running(name, deadline)
            if self._attach_required_disks(spec, instance, deadline):
                instance = self._get_instance(name) or instance
        return self._instance_resource(instance)

    def _insert_instance(self, spec: ResourceSpec, name: str, size: Size, image: Mapping[str, Any],
                         req: HostRequirements, public: bool, undo: UndoSteps, deadline: float | None) -> None:
        self._ensure_firewalls(spec, undo, deadline)
        body = self._instance_body(spec, name, size, image, req, public)
        try:
            op = self.hook.insert_instance_nowait(project_id=self.project_id, zone=self.zone, body=body,
                                                  request_id=str(uuid.uuid4()))
        except GceApiError as err:
            if err.status_code != 409:
                raise
            log.info("instance %s was made meanwhile by another attempt: waiting for it", name)
            return
        # undo even if the operation fails: an instance may exist in a failed state
        undo.append((f"instance {name}", lambda: self._delete_instance(name)))
        log.info("Inserting instance %s (machine type %s, image %s)", name, size.name, image.get("name"))
        self._wait_operation(op, f"insert instance {name}", deadline=deadline)

    def _attach_required_disks(self, spec: ResourceSpec, instance: Mapping[str, Any], deadline: float | None) -> bool:
        """Attach the disks of the BlockStorage nodes this instance requires (same index); return if any was."""
        attached = False
        for disk in required_resources(spec, PROVIDER, _DISK):
            attached |= self._attach(disk.resource_id, str(instance["name"]), deadline)
        return attached

    def _attach(self, disk_name: str, instance_name_: str, deadline: float | None) -> bool:
        disk = self.hook.get_disk_dict(project_id=self.project_id, zone=self.zone, name=disk_name)
        if disk is None:
            raise GceApiError(f"disk {disk_name} does not exist (any more)", status_code=404, resource=disk_name)
        if any(_last(u) == instance_name_ for u in disk.get("users") or []):
            return False
        op = self.hook.attach_disk_nowait(project_id=self.project_id, zone=self.zone, instance=instance_name_,
                                          disk_link=disk["self_link"], device_name=disk_name)
        self._wait_operation(op, f"attach disk {disk_name} to {instance_name_}", deadline=deadline)
        return True

    def _wait_disk_ready(self, name: str, deadline: float | None) -> dict[str, Any]:
        def failed(disk: Mapping[str, Any] | None) -> str | None:
            if disk is None:
                return "it disappeared"
            return "disk status FAILED" if disk.get("status") == "FAILED" else None

        def read() -> dict[str, Any] | None:
            return self.hook.get_disk_dict(project_id=self.project_id, zone=self.zone, name=name)

        return dict(self._wait(f"disk {name} becoming READY", read,
                               lambda d: d is not None and d.get("status") == "READY", resource=f"disk {name}",
                               deadline=deadline, failed=failed, status=_status))

    def _delete_disk(self, name: str) -> None:
        op = self.hook.delete_disk_nowait(project_id=self.project_id, zone=self.zone, name=name)
        if op is not None:
            self._wait_operation(op, f"delete disk {name}", delete=True)

    def _create_disk(self, spec: ResourceSpec, deadline: float | None) -> Resource:
        size_gb = self._disk_size_gb(spec)
        name = instance_name(spec)
        label = f"disk {name}"
        undo: UndoSteps = []
        with self._undo_on_failure(spec, label, undo):
            disk = None
            for found in self._disks(spec.tags):
                if found.get("status") == "FAILED":  # a failed earlier attempt: replace it
                    self._delete_disk(found["name"])
                    continue
                disk = found
                break
            if disk is None:
                body: dict[str, Any] = {
                    "name": name, "size_gb": size_gb, "labels": gce_labels(spec.tags),
                    "description": json.dumps({"cloud-paas": spec.tags}),
                }
                if spec.properties.get("type"):
                    body["type_"] = f"zones/{self.zone}/diskTypes/{spec.properties['type']}"
                op = self.hook.insert_disk_nowait(project_id=self.project_id, zone=self.zone, body=body,
                                                  request_id=str(uuid.uuid4()))
                undo.append((label, lambda: self._delete_disk(name)))
                self._wait_operation(op, f"insert {label}", deadline=deadline)
            disk = self._wait_disk_ready(str(disk["name"]) if disk else name, deadline)
            for instance in required_resources(spec, PROVIDER, _INSTANCE):
                if self._attach(disk["name"], instance.resource_id, deadline):
                    disk = self.hook.get_disk_dict(project_id=self.project_id, zone=self.zone,
                                                   name=disk["name"]) or disk
        return self._disk_resource(disk)

    # ---------------------------------------------------------------- delete
    def delete(self, deployment_id: str, node_name: str | None = None, index: int | None = None) -> list[Resource]:
        """Delete instances, disks and firewall rules found by tags; return the instances and disks.

        :param deployment_id: the deployment's id
        :param node_name: only this node's resources
        :param index: only this instance
        """
        selector = tag_selector(deployment_id, node_name, index)
        targets = self._describe(selector)
        instances = [r for r in targets if r.attributes["kind"] == _INSTANCE]
        disks = [r for r in targets if r.attributes["kind"] == _DISK]
        # every delete started back to back, then one list per round until all are gone (boot disks go with them)
        self._delete_instances([r.resource_id for r in instances], tag_selector(deployment_id, node_name),
                               "/".join(str(p) for p in (deployment_id, node_name, index) if p is not None))
        for disk in disks:
            current = self.hook.get_disk_dict(project_id=self.project_id, zone=self.zone, name=disk.resource_id)
            if current is None:
                continue
            for user in current.get("users") or []:  # attached to an instance that stays
                op = self.hook.detach_disk_nowait(project_id=self.project_id, zone=self.zone, instance=_last(user),
                                                  device_name=self._device_name(_last(user), disk.resource_id))
                if op is not None:
                    self._wait_operation(op, f"detach disk {disk.resource_id}", delete=True)
            self._delete_disk(disk.resource_id)
        self._delete_firewalls(deployment_id, node_name)
        return [dataclasses.replace(r, state=ResourceState.DELETED) for r in targets]

    def _device_name(self, instance: str, disk_name: str) -> str:
        found = self._get_instance(instance) or {}
        for attached in found.get("disks") or []:
            if _last(attached.get("source")) == disk_name:
                return str(attached.get("device_name"))
        return disk_name

    def _delete_firewalls(self, deployment_id: str, node_name: str | None) -> None:
        prefix = firewall_tag(deployment_id, node_name) + "-" if node_name is not None else firewall_prefix(
            deployment_id)
        for firewall in self.hook.list_firewalls(project_id=self.project_id, filter_=f'name eq "{prefix}.*"'):
            tags = self._description_tags(firewall)
            if tags.get(TAG_DEPLOYMENT) != deployment_id or TAG_NODE not in tags:
                continue  # a hash collision or a hand-made rule: not ours
            if node_name is not None and tags[TAG_NODE] != node_name:
                continue
            if not self._instances(tag_selector(deployment_id, tags[TAG_NODE])):
                self._delete_firewall(firewall["name"])
