"""The OpenStack backend: Nova servers, Neutron security groups and floating IPs, Cinder volumes.

A ``tosca.nodes.Compute`` instance is one server: its flavor is the smallest that fits the ``host``
capability (:func:`~airflow_cloud_paas.backends.mapping.select_size` over the flavor list), its image
matches the ``os`` capability, it gets one security group per deployment and node (inbound rules from
its endpoints) and, when an endpoint is on the PUBLIC network, a floating IP. A
``tosca.nodes.BlockStorage`` instance is one Cinder volume, attached to the server that requires it
(``local_storage``) or that it requires.

Every resource carries the cloud-paas tags: Nova and Cinder as metadata, Neutron as ``key=value``
tags. ``create`` finds by those first (idempotent), ``delete`` finds everything by them, including
what a crashed attempt left. All API calls go through :class:`~airflow_cloud_paas.hooks.openstack.OpenStackHook`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
from collections.abc import Callable, Mapping
from functools import cached_property
from typing import Any, ClassVar

from airflow_cloud_paas.backends.base import (
    TAG_NODE,
    Backend,
    Resource,
    ResourceSpec,
    ResourceState,
    UndoSteps,
    machine_or_disk,
    poll_until,
    required_resources,
    retry_while,
    undo_on_failure,
)
from airflow_cloud_paas.backends.mapping import (
    HostRequirements,
    ImageRequirements,
    Size,
    security_rules,
    select_image,
    select_size,
    size_mb,
)
from airflow_cloud_paas.backends.naming import (
    LONG_PREFIX,
    carries_all_tags,
    instance_stem,
    key_values,
    node_stem,
    plain_name,
    resource_of,
    tag_selector,
)
from airflow_cloud_paas.exceptions import (
    BackendError,
    ResourceCreateError,
    UnsupportedNodeError,
)
from airflow_cloud_paas.hooks.openstack import OpenStackApiError, OpenStackHook

log = logging.getLogger(__name__)

PROVIDER = "openstack"

_SERVER = "server"
_VOLUME = "volume"


def neutron_tags(tags: Mapping[str, str]) -> list[str]:
    """Return cloud-paas tags as Neutron tags (``key=value`` strings).

    :param tags: the tags
    """
    return key_values(tags)


def _gpus(extra_specs: Mapping[str, Any]) -> tuple[int, str | None]:
    """Return (GPU count, model) from a flavor's extra specs (PCI alias ``model:count`` or vGPU)."""
    alias = str(extra_specs.get("pci_passthrough:alias") or "")
    count, model = 0, None
    for part in filter(None, alias.split(",")):
        name, _, number = part.partition(":")
        count += int(number or 1)
        model = model or name
    vgpu = extra_specs.get("resources:VGPU")
    if vgpu:
        count += int(vgpu)
    return count, model


class OpenStackBackend(Backend):
    """Deploy Compute and BlockStorage nodes on an OpenStack project.

    :param conn_id: the Airflow connection (type ``openstack``)
    :param network: name or id of the servers' network (default: the connection's ``network`` extra,
        else the only non-external network the project sees)
    :param floating_network: name or id of the external network of floating IPs (default: the
        ``floating_network`` extra, else the only external network)
    :param key_name: a Nova key pair injected into servers (default: the ``key_name`` extra)
    :param create_timeout: seconds a server or volume may take to become ready
    :param delete_timeout: seconds a server or volume may take to disappear
    :param poll_interval: seconds between two status reads
    """

    name: ClassVar[str] = PROVIDER
    #: Nova's limit on user data, counted base64-encoded
    max_user_data_bytes: ClassVar[int | None] = 65535
    user_data_base64: ClassVar[bool] = True
    #: Nova server statuses (upper case) and Cinder volume statuses (lower case): the two never collide.
    state_map: ClassVar[Mapping[str, ResourceState]] = {
        # Nova
        "BUILD": ResourceState.CREATING,
        "REBUILD": ResourceState.CREATING,
        "REBOOT": ResourceState.CREATING,
        "HARD_REBOOT": ResourceState.CREATING,
        "ACTIVE": ResourceState.RUNNING,
        "PASSWORD": ResourceState.RUNNING,
        "RESIZE": ResourceState.RUNNING,
        "VERIFY_RESIZE": ResourceState.RUNNING,
        "REVERT_RESIZE": ResourceState.RUNNING,
        "MIGRATING": ResourceState.RUNNING,
        "SHUTOFF": ResourceState.STOPPED,
        "STOPPED": ResourceState.STOPPED,
        "SUSPENDED": ResourceState.STOPPED,
        "PAUSED": ResourceState.STOPPED,
        "RESCUE": ResourceState.STOPPED,
        "SHELVED": ResourceState.STOPPED,
        "SHELVED_OFFLOADED": ResourceState.STOPPED,
        "ERROR": ResourceState.ERROR,
        "DELETED": ResourceState.DELETED,
        "SOFT_DELETED": ResourceState.DELETED,
        "UNKNOWN": ResourceState.UNKNOWN,
        # Cinder
        "creating": ResourceState.CREATING,
        "downloading": ResourceState.CREATING,
        "reserved": ResourceState.CREATING,
        "attaching": ResourceState.CREATING,
        "available": ResourceState.RUNNING,
        "in-use": ResourceState.RUNNING,
        "detaching": ResourceState.RUNNING,
        "extending": ResourceState.RUNNING,
        "uploading": ResourceState.RUNNING,
        "retyping": ResourceState.RUNNING,
        "backing-up": ResourceState.RUNNING,
        "awaiting-transfer": ResourceState.STOPPED,
        "maintenance": ResourceState.STOPPED,
        "deleting": ResourceState.DELETING,
        "error": ResourceState.ERROR,
        "error_deleting": ResourceState.ERROR,
        "error_extending": ResourceState.ERROR,
        "error_restoring": ResourceState.ERROR,
        "error_backing-up": ResourceState.ERROR,
        "error_managing": ResourceState.ERROR,
    }

    def __init__(
        self,
        conn_id: str = OpenStackHook.default_conn_name,
        network: str | None = None,
        floating_network: str | None = None,
        key_name: str | None = None,
        create_timeout: float = 900.0,
        delete_timeout: float = 300.0,
        poll_interval: float = 3.0,
    ) -> None:
        self.conn_id = conn_id
        self.hook = OpenStackHook(openstack_conn_id=conn_id)
        self._network = network
        self._floating_network = floating_network
        self._key_name = key_name
        self.create_timeout = create_timeout
        self.delete_timeout = delete_timeout
        self.poll_interval = poll_interval

    # ---------------------------------------------------------------- provider catalogue (cached)
    @cached_property
    def sizes(self) -> list[Size]:
        """Return the project's flavors as sizes (read once per backend)."""
        sizes = []
        for flavor in self.hook.flavors():
            gpus, model = _gpus(flavor.get("extra_specs") or {})
            sizes.append(Size(name=flavor["name"], cpus=int(flavor.get("vcpus") or 0),
                              mem_mb=float(flavor.get("ram") or 0), disk_gb=float(flavor.get("disk") or 0),
                              gpus=gpus, gpu_model=model))
        return sizes

    @cached_property
    def _flavor_ids(self) -> dict[str, str]:
        return {f["name"]: f["id"] for f in self.hook.flavors()}

    @cached_property
    def images(self) -> list[dict[str, Any]]:
        """Return the project's images as :func:`select_image` reads them (read once per backend)."""
        return [
            {"id": i["id"], "name": i.get("name"), "distribution": i.get("os_distro"),
             "version": i.get("os_version"), "os": i.get("os_type"), "created": i.get("created_at")}
            for i in self.hook.images()
        ]

    def _pick_network(self, wanted: str | None, *, external: bool, what: str, option: str) -> str:
        networks = self.hook.networks(external=external)
        if wanted:
            for net in networks:
                if wanted in (net["id"], net.get("name")):
                    return net["id"]
            raise BackendError(
                f"{what} {wanted!r} not found among {', '.join(sorted(str(n.get('name')) for n in networks))}; "
                f"fix the {option!r} option or the connection's {option!r} extra",
                provider=PROVIDER, resource=self.conn_id,
            )
        if len(networks) != 1:
            raise BackendError(
                f"cannot choose the {what}: the project sees {len(networks)} "
                f"({', '.join(sorted(str(n.get('name')) for n in networks)) or 'none'}); "
                f"name one with the {option!r} option or the connection's {option!r} extra",
                provider=PROVIDER, resource=self.conn_id,
            )
        return networks[0]["id"]

    @cached_property
    def network_id(self) -> str:
        """Return the id of the network servers are attached to."""
        wanted = self._network or self.hook.extras.get("network")
        return self._pick_network(wanted, external=False, what="network", option="network")

    @cached_property
    def floating_network_id(self) -> str:
        """Return the id of the external network floating IPs come from."""
        wanted = self._floating_network or self.hook.extras.get("floating_network")
        return self._pick_network(wanted, external=True, what="floating IP network", option="floating_network")

    @property
    def key_name(self) -> str | None:
        """Return the key pair injected into servers, if any."""
        return self._key_name or self.hook.extras.get("key_name") or None

    # ---------------------------------------------------------------- check
    @staticmethod
    def _where(spec: ResourceSpec) -> str:
        return f"{spec.deployment_id}/{spec.node_name}/{spec.index}"

    def _kind(self, spec: ResourceSpec) -> str:
        return machine_or_disk(spec, PROVIDER, "OpenStack", (_SERVER, "servers"), (_VOLUME, "volumes"))

    def _server_plan(self, spec: ResourceSpec) -> tuple[Size, Mapping[str, Any]]:
        where = f"{spec.deployment_id}/{spec.node_name}"
        size = select_size(HostRequirements.from_spec(spec, PROVIDER), self.sizes, provider=PROVIDER, resource=where)
        image = select_image(ImageRequirements.from_spec(spec), self.images, provider=PROVIDER, resource=where)
        return size, image

    def _volume_size_gb(self, spec: ResourceSpec) -> int:
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
        return max(1, math.ceil(mb / 1024))

    def check(self, spec: ResourceSpec) -> None:
        """Raise :class:`UnsupportedNodeError` if no flavor, image or volume fits this node; create nothing.

        :param spec: the resource wanted (requirements may be empty)
        """
        if self._kind(spec) == _SERVER:
            self.check_user_data(spec)
            self._server_plan(spec)
            _, public = security_rules(spec)
            self.network_id  # noqa: B018 - resolving it validates the network configuration
            if public:
                self.floating_network_id  # noqa: B018
        else:
            self._volume_size_gb(spec)

    # ---------------------------------------------------------------- describe
    def _server_resource(self, server: Mapping[str, Any]) -> Resource:
        meta = server.get("metadata") or {}
        fixed, floating = [], []
        for addresses in (server.get("addresses") or {}).values():
            for addr in addresses:
                (floating if addr.get("OS-EXT-IPS:type") == "floating" else fixed).append(addr.get("addr"))
        state = self.normalize_state(str(server.get("status")))
        if server.get("task_state") == "deleting":
            state = ResourceState.DELETING
        flavor = server.get("flavor") or {}
        attributes: dict[str, Any] = {
            "kind": _SERVER,
            "server_id": server["id"],
            "name": server.get("name"),
            "status": server.get("status"),
            "flavor": flavor.get("original_name") or flavor.get("name") or flavor.get("id"),
            "image_id": (server.get("image") or {}).get("id"),
            "private_ips": fixed,
            "public_ip": floating[0] if floating else None,
            "volumes": sorted(v["id"] for v in server.get("attached_volumes") or [] if v.get("id")),
        }
        if server.get("fault"):
            attributes["fault"] = str((server["fault"] or {}).get("message"))
        return Resource(*resource_of(meta), PROVIDER, server["id"], state, attributes)

    def _volume_resource(self, volume: Mapping[str, Any]) -> Resource:
        meta = volume.get("metadata") or {}
        attachments = volume.get("attachments") or []
        attributes = {
            "kind": _VOLUME,
            "volume_id": volume["id"],
            "name": volume.get("name"),
            "status": volume.get("status"),
            "size_gb": volume.get("size"),
            "attached_to": sorted(a["server_id"] for a in attachments if a.get("server_id")),
            "devices": sorted(a["device"] for a in attachments if a.get("device")),
        }
        return Resource(*resource_of(meta), PROVIDER, volume["id"], self.normalize_state(str(volume.get("status"))),
                        attributes)

    @staticmethod
    def _tagged(found: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Keep only what carries all three tags (a hand-made resource with one of them is not ours)."""
        return [f for f in found if carries_all_tags(f.get("metadata"))]

    def _describe(self, selector: Mapping[str, str]) -> list[Resource]:
        found = [self._server_resource(s) for s in self._tagged(self.hook.servers(selector))]
        found += [self._volume_resource(v) for v in self._tagged(self.hook.volumes(selector))]
        return sorted(found, key=lambda r: (r.node_name, r.index, r.attributes["kind"]))

    def describe(self, deployment_id: str, node_name: str | None = None) -> list[Resource]:
        """Return the servers and volumes of a deployment (optionally of one node), sorted by node, index.

        :param deployment_id: the deployment's id
        :param node_name: only this node's resources
        """
        return self._describe(tag_selector(deployment_id, node_name))

    # ---------------------------------------------------------------- waiting
    def _wait(self, what: str, read: Callable[[], Mapping[str, Any] | None],
              done: Callable[[Mapping[str, Any] | None], bool], resource: str, *, delete: bool = False,
              deadline: float | None = None, failed: Callable[[Mapping[str, Any] | None], str | None] | None = None,
              ) -> Mapping[str, Any] | None:
        timeout, option = (self.delete_timeout, "delete_timeout") if delete else (self.create_timeout, "create_timeout")
        return poll_until(read, done, timeout=timeout, deadline=deadline, interval=self.poll_interval, what=what,
                          provider=PROVIDER, resource=resource, failed=failed,
                          status=lambda current: str(current.get("status")) if current is not None else "gone",
                          hint=f"raise the backend's {option}, or look at the cloud's console")

    def _wait_server_active(self, server_id: str, name: str, deadline: float | None) -> Mapping[str, Any]:
        def failed(server: Mapping[str, Any] | None) -> str | None:
            if server is None:
                return "it disappeared while booting"
            if server.get("status") == "ERROR":
                return str((server.get("fault") or {}).get("message") or "no fault message")
            return None

        result = self._wait(f"server {name} ({server_id}) becoming ACTIVE", lambda: self.hook.get_server(server_id),
                            lambda s: s is not None and s.get("status") == "ACTIVE", name, deadline=deadline,
                            failed=failed)
        assert result is not None
        return result

    def _wait_server_gone(self, server_id: str) -> None:
        self._wait(f"deletion of server {server_id}", lambda: self.hook.get_server(server_id), lambda s: s is None,
                   server_id, delete=True)

    def _wait_volume(self, volume_id: str, name: str, statuses: tuple[str, ...], *, deadline: float | None = None,
                     delete: bool = False) -> Mapping[str, Any]:
        def failed(volume: Mapping[str, Any] | None) -> str | None:
            if volume is None:
                return "it disappeared"
            status = str(volume.get("status"))
            return f"volume status {status}" if status.startswith("error") else None

        result = self._wait(f"volume {name} ({volume_id}) becoming {'/'.join(statuses)}",
                            lambda: self.hook.get_volume(volume_id),
                            lambda v: v is not None and v.get("status") in statuses, name, delete=delete,
                            deadline=deadline, failed=failed)
        assert result is not None
        return result

    def _wait_volume_gone(self, volume_id: str) -> None:
        self._wait(f"deletion of volume {volume_id}", lambda: self.hook.get_volume(volume_id), lambda v: v is None,
                   volume_id, delete=True)

    # ---------------------------------------------------------------- create
    @staticmethod
    def resource_name(spec: ResourceSpec) -> str:
        """Return the name given to the server or volume of a spec (``<deployment>-<node>-<index>``).

        :param spec: the spec
        """
        return plain_name(instance_stem(spec.deployment_id, spec.node_name, spec.index))

    def create(self, spec: ResourceSpec, *, deadline: float | None = None) -> Resource:
        """Create the server or volume of a node instance (or return the existing one), waiting until ready.

        :param spec: the resource wanted
        :param deadline: a ``time.monotonic()`` limit on the waits, over ``create_timeout``
        """
        self.check(spec)
        if self._kind(spec) == _SERVER:
            return self._create_server(spec, deadline=deadline)
        return self._create_volume(spec, deadline)

    def request(self, spec: ResourceSpec) -> Resource:
        """Boot a server and return while it is in BUILD, for a deferrable wait.

        Servers that need a floating IP or volumes (both want an ACTIVE server), and volumes, are made as
        by :meth:`create`.

        :param spec: the resource wanted
        """
        self.check(spec)
        if (self._kind(spec) != _SERVER or security_rules(spec)[1]
                or required_resources(spec, PROVIDER, _VOLUME)):
            return self.create(spec)
        return self._create_server(spec, wait=False)

    def _undo_on_failure(self, spec: ResourceSpec, label: str, undo: UndoSteps,
                         failed_prefix: str = "") -> contextlib.AbstractContextManager[None]:
        return undo_on_failure(PROVIDER, spec, label, undo, log, api_error=OpenStackApiError, hint=self._hint,
                               failed_prefix=failed_prefix)

    @staticmethod
    def _hint(err: OpenStackApiError) -> str:
        if err.is_quota:
            return "raise the project's quota or free resources, then retry"
        return ""

    def _existing_server(self, spec: ResourceSpec) -> dict[str, Any] | None:
        servers = self._tagged(self.hook.servers(spec.tags))
        for server in sorted(servers, key=lambda s: str(s.get("created_at") or s.get("created") or "")):
            if server.get("task_state") == "deleting":
                self._wait_server_gone(server["id"])  # a delete in flight: let it finish, then make a new one
                continue
            if server.get("status") == "ERROR":
                log.warning("Server %s of %s is in ERROR (%s): replacing it", server["id"], self._where(spec),
                            (server.get("fault") or {}).get("message"))
                self.hook.delete_server(server["id"])
                self._wait_server_gone(server["id"])
                continue
            return server
        return None

    def _security_group(self, spec: ResourceSpec) -> tuple[dict[str, Any], bool]:
        """Return the node's security group, and whether this call created it."""
        node_tags = neutron_tags(tag_selector(spec.deployment_id, spec.node_name))
        for group in self.hook.security_groups(node_tags):
            return group, False
        rules, _ = security_rules(spec)  # a hosted endpoint not on PUBLIC opens to the RFC 1918 ranges
        name = plain_name(node_stem(spec.deployment_id, spec.node_name, prefix=LONG_PREFIX))
        group = self.hook.create_security_group(
            name=name, description=f"cloud-paas deployment {spec.deployment_id}, node {spec.node_name}",
            tags=node_tags, rules=rules,
        )
        return group, True

    def _delete_group_if_unused(self, group_id: str, deployment_id: str, node_name: str) -> None:
        if not self._tagged(self.hook.servers(tag_selector(deployment_id, node_name))):
            self._delete_group(group_id)

    def _delete_group(self, group_id: str) -> None:
        # Neutron refuses (409) while a port still uses the group; ports go a moment after their server.
        retry_while(lambda: self.hook.delete_security_group(group_id),
                    lambda err: isinstance(err, OpenStackApiError) and err.status_code == 409,
                    timeout=self.delete_timeout, interval=self.poll_interval,
                    what=f"deletion of security group {group_id}", provider=PROVIDER, resource=group_id)

    def _server_undo(self, server_id: str) -> Callable[[], None]:
        def undo() -> None:
            self.hook.delete_server(server_id)
            self._wait_server_gone(server_id)
        return undo

    def _create_server(self, spec: ResourceSpec, wait: bool = True, deadline: float | None = None) -> Resource:
        size, image = self._server_plan(spec)
        name = self.resource_name(spec)
        label = f"server {name}"
        _, public = security_rules(spec)
        undo: UndoSteps = []
        with self._undo_on_failure(spec, label, undo, failed_prefix="the server went to ERROR: "):
            server = self._existing_server(spec)
            if server is None:
                group, made_group = self._security_group(spec)
                if made_group:
                    undo.append((f"security group {group['id']}", lambda g=group["id"]: self._delete_group_if_unused(
                        g, spec.deployment_id, spec.node_name)))
                server = self.hook.create_server(
                    name=name, flavor_id=self._flavor_ids[size.name], image_id=str(image["id"]),
                    network_id=self.network_id, security_group_id=group["id"], metadata=spec.tags,
                    key_name=self.key_name,
                    user_data=spec.user_data if spec.user_data is not None else spec.properties.get("user_data"),
                )
                undo.append((label, self._server_undo(server["id"])))
                log.info("Booting %s (%s, flavor %s, image %s)", label, server["id"], size.name, image.get("name"))
                if not wait:  # the caller waits (a deferrable trigger polling describe)
                    return self._server_resource(self.hook.get_server(server["id"]) or server)
            elif not wait and server.get("status") in ("BUILD", "ACTIVE"):
                return self._server_resource(server)
            elif server.get("status") == "SHUTOFF":
                log.info("%s (%s) is SHUTOFF: starting it", label, server["id"])
                self.hook.start_server(server["id"])
            elif self.normalize_state(str(server.get("status"))) == ResourceState.STOPPED:
                raise ResourceCreateError(
                    f"{label} ({server['id']}) is {server.get('status')}: resume or unshelve it, or delete the "
                    "node and deploy it again",
                    provider=PROVIDER, resource=label,
                )
            server = dict(self._wait_server_active(server["id"], name, deadline))
            if public:
                self._ensure_floating_ip(spec, server["id"])
            self._attach_required_volumes(spec, server["id"], deadline)
            server = self.hook.get_server(server["id"]) or server
        return self._server_resource(server)

    def _ensure_floating_ip(self, spec: ResourceSpec, server_id: str) -> None:
        ports = self.hook.ports(device_id=server_id)
        if not ports:
            raise OpenStackApiError(f"server {server_id} has no port to bind a floating IP to", resource=server_id)
        port_ids = {p["id"] for p in ports}
        tags = neutron_tags(spec.tags)
        for fip in self.hook.floating_ips(tags):
            if fip.get("port_id") in port_ids:
                return
            self.hook.delete_floating_ip(fip["id"])  # left by an earlier server of this instance
        fip = self.hook.create_floating_ip(network_id=self.floating_network_id, port_id=ports[0]["id"], tags=tags)
        log.info("Floating IP %s bound to server %s", fip.get("floating_ip_address"), server_id)

    def _attach_required_volumes(self, spec: ResourceSpec, server_id: str, deadline: float | None) -> None:
        """Attach the volumes of the BlockStorage nodes this server requires (same index)."""
        for volume in required_resources(spec, PROVIDER, _VOLUME):
            self._attach(volume.resource_id, server_id, deadline)

    def _attach(self, volume_id: str, server_id: str, deadline: float | None) -> None:
        volume = self.hook.get_volume(volume_id)
        if volume is None:
            raise OpenStackApiError(f"volume {volume_id} does not exist (any more)", resource=volume_id)
        if any(a.get("server_id") == server_id for a in volume.get("attachments") or []):
            return
        self.hook.attach_volume(server_id, volume_id)
        self._wait_volume(volume_id, volume.get("name") or volume_id, ("in-use",), deadline=deadline)

    def _create_volume(self, spec: ResourceSpec, deadline: float | None) -> Resource:
        size_gb = self._volume_size_gb(spec)
        name = self.resource_name(spec)
        label = f"volume {name}"
        undo: UndoSteps = []
        with self._undo_on_failure(spec, label, undo):
            volume = None
            for found in self._tagged(self.hook.volumes(spec.tags)):
                if str(found.get("status")).startswith("error") or found.get("status") == "deleting":
                    if found.get("status") != "deleting":  # a failed earlier attempt: replace it
                        self.hook.delete_volume(found["id"])
                    self._wait_volume_gone(found["id"])
                    continue
                volume = found
                break
            if volume is None:
                volume = self.hook.create_volume(name=name, size_gb=size_gb, metadata=spec.tags,
                                                 volume_type=spec.properties.get("type") or None)

                def undo_volume(volume_id: str = volume["id"]) -> None:
                    self.hook.delete_volume(volume_id)
                    self._wait_volume_gone(volume_id)

                undo.append((label, undo_volume))
            volume = dict(self._wait_volume(volume["id"], name, ("available", "in-use"), deadline=deadline))
            for server in required_resources(spec, PROVIDER, _SERVER):
                self._attach(volume["id"], server.resource_id, deadline)
            volume = self.hook.get_volume(volume["id"]) or volume
        return self._volume_resource(volume)

    # ---------------------------------------------------------------- delete
    def delete(self, deployment_id: str, node_name: str | None = None, index: int | None = None) -> list[Resource]:
        """Delete servers, floating IPs, volumes and security groups found by tags; return the servers and volumes.

        :param deployment_id: the deployment's id
        :param node_name: only this node's resources
        :param index: only this instance
        """
        selector = tag_selector(deployment_id, node_name, index)
        targets = self._describe(selector)
        for fip in self.hook.floating_ips(neutron_tags(selector)):
            self.hook.delete_floating_ip(fip["id"])
        servers = [r for r in targets if r.attributes["kind"] == _SERVER]
        volumes = [r for r in targets if r.attributes["kind"] == _VOLUME]
        for server in servers:
            self.hook.delete_server(server.resource_id)
        for server in servers:
            self._wait_server_gone(server.resource_id)
        for volume in volumes:
            current = self.hook.get_volume(volume.resource_id)
            if current is None:
                continue
            for attachment in current.get("attachments") or []:  # attached to a server we keep
                self.hook.detach_volume(attachment["server_id"], volume.resource_id)
            if current.get("attachments"):
                self._wait_volume(volume.resource_id, volume.attributes.get("name") or volume.resource_id,
                                  ("available", "error"), delete=True)
            if current.get("status") != "deleting":
                self.hook.delete_volume(volume.resource_id)
        for volume in volumes:
            self._wait_volume_gone(volume.resource_id)
        group_selector = tag_selector(deployment_id, node_name)
        for group in self.hook.security_groups(neutron_tags(group_selector)):
            node = next((t.split("=", 1)[1] for t in group.get("tags") or [] if t.startswith(f"{TAG_NODE}=")), None)
            if node is None or not self._tagged(self.hook.servers(tag_selector(deployment_id, node))):
                self._delete_group(group["id"])
        return [dataclasses.replace(r, state=ResourceState.DELETED) for r in targets]
