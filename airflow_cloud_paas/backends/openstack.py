"""The OpenStack backend: Nova servers, Neutron security groups and floating IPs, Cinder volumes.

A ``tosca.nodes.Compute`` instance is one server: its flavor is the smallest that fits the ``host``
capability (:func:`~airflow_cloud_paas.backends.mapping.select_size` over the flavor list), its image
matches the ``os`` capability, it gets one security group per deployment and node (inbound rules from
its endpoints) and, when an endpoint is on the PUBLIC network, a floating IP. A
``tosca.nodes.BlockStorage`` instance is one Cinder volume, attached to the server that requires it
(``local_storage``) or that it requires.

Every resource carries the cloud-paas tags: Nova and Cinder as metadata, Neutron as ``key=value``
tags. ``create`` finds by those first (idempotent), ``delete`` finds everything by them, including
what a crashed attempt left. All API calls go through :class:`~airflow_cloud_paas.hooks.openstack.OpenStackHook`,
which counts them (:meth:`OpenStackBackend.api_calls`).

A node's servers created together (:meth:`OpenStackBackend.create_group`) come from one Nova multiple
create (``min_count``/``max_count``). Nova gives all of them the request's metadata and names them
``<name>-<n>`` (n = 1, 2..., its ``multi_instance_display_name_template``), so such a server carries no index
of its own: it carries its launch's index list (:data:`LAUNCH_TAG`), and its index is the n-th of that list,
read from its name, ``<deployment>-<node>-launch-<n>``. That costs no call per server; the alternative, a
metadata update per server once it is ACTIVE (Nova refuses one while it builds), costs N calls and leaves the
servers without an index until then. It is what is done only where the names do not carry the count (an
operator changed the template): there the index is set as metadata before the group is returned.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import re
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
    WaitFailed,
    group_create_error,
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
    ResourceTimeoutError,
    UnsupportedNodeError,
)
from airflow_cloud_paas.hooks.openstack import OpenStackApiError, OpenStackHook

log = logging.getLogger(__name__)

PROVIDER = "openstack"

_SERVER = "server"
_VOLUME = "volume"

#: Metadata of the servers of one multiple create: ``<launch id>:<indices>`` (e.g. ``3f9c01ab:0-3,5``); the
#: launch id tells this launch's servers from any other's, the n-th server (by name) has the n-th index.
LAUNCH_TAG = "cloud-paas-launch"
#: Nova's limit on a metadata value
_METADATA_VALUE_MAX = 255
_LAUNCH_ID_CHARS = 8


def _encode_indices(indices: Sequence[int]) -> str:
    """Return indices as runs, in their order: ``[0, 1, 2, 3, 5]`` -> ``0-3,5``."""
    runs: list[list[int]] = []
    for index in indices:
        if runs and index == runs[-1][1] + 1:
            runs[-1][1] = index
        else:
            runs.append([index, index])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


def _decode_indices(text: str) -> list[int]:
    """Return the indices of :func:`_encode_indices` output (empty if it is not such)."""
    indices: list[int] = []
    for part in filter(None, text.split(",")):
        first, _, last = part.partition("-")
        if not first.isdigit() or (last and not last.isdigit()):
            return []
        indices.extend(range(int(first), int(last or first) + 1))
    return indices


def _launch_chunks(indices: Sequence[int]) -> list[list[int]]:
    """Split indices into launches whose :data:`LAUNCH_TAG` value fits Nova's 255 characters."""
    room = _METADATA_VALUE_MAX - _LAUNCH_ID_CHARS - 1
    chunks: list[list[int]] = []
    for index in indices:
        if chunks and len(_encode_indices([*chunks[-1], index])) <= room:
            chunks[-1].append(index)
        else:
            chunks.append([index])
    return chunks


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
    @staticmethod
    def launch_name(deployment_id: str, node_name: str) -> str:
        """Return the name a multiple create of a node is asked for (Nova adds ``-<n>`` to each server's).

        :param deployment_id: the deployment's id
        :param node_name: the node template's name
        """
        return plain_name(f"{node_stem(deployment_id, node_name)}-launch", limit=240)

    def _server_index(self, server: Mapping[str, Any]) -> int | None:
        """Return a server's index: its own metadata, else its place in its launch (by name); None if neither."""
        meta = server.get("metadata") or {}
        if meta.get(TAG_INDEX) is not None:
            return int(meta[TAG_INDEX]) if str(meta[TAG_INDEX]).isdigit() else None
        if not (meta.get(LAUNCH_TAG) and meta.get(TAG_DEPLOYMENT) and meta.get(TAG_NODE)):
            return None
        indices = _decode_indices(str(meta[LAUNCH_TAG]).partition(":")[2])
        position = self._launch_position(str(server.get("name") or ""),
                                         self.launch_name(meta[TAG_DEPLOYMENT], meta[TAG_NODE]), len(indices))
        return None if position is None else indices[position]

    @staticmethod
    def _launch_position(name: str, base: str, size: int) -> int | None:
        """Return a server's place in its launch from its name (``<base>-<n>``: n - 1), or None."""
        if name == base:  # Nova adds the count only when it makes more than one: alone, or a template without it
            return 0 if size == 1 else None
        match = re.fullmatch(re.escape(base) + r"-(\d+)", name)
        position = int(match.group(1)) - 1 if match else -1
        return position if 0 <= position < size else None

    @staticmethod
    def _name_filter(deployment_id: str, node_name: str | None) -> str | None:
        """Return the regular expression that Nova's ``name`` filter matches a node's server names with."""
        if node_name is None:
            return None
        prefix = plain_name(node_stem(deployment_id, node_name)) + "-"
        # names are [A-Za-z0-9._-] (plain_name): only the dot is special, in Python and in the databases' regexps
        return None if len(prefix) > 200 else "^" + prefix.replace(".", "[.]")

    def _list_servers(self, deployment_id: str, node_name: str | None = None) -> list[dict[str, Any]]:
        """Return the servers carrying a deployment's (node's) metadata, with or without an index: one list."""
        selector = tag_selector(deployment_id, node_name)
        return [s for s in self.hook.servers(selector, name=self._name_filter(deployment_id, node_name))
                if (s.get("metadata") or {}).get(TAG_NODE)]

    def _servers(self, selector: Mapping[str, str], *, leftovers: bool = False) -> list[dict[str, Any]]:
        """Return our servers matching a tag selector, the index read as :meth:`_server_index` reads it.

        :param selector: from :func:`tag_selector`
        :param leftovers: also the servers of a launch whose index cannot be read (a launch cut short before
            their index was set): only when the selector names no index
        """
        wanted = selector.get(TAG_INDEX)
        found = []
        for server in self._list_servers(selector[TAG_DEPLOYMENT], selector.get(TAG_NODE)):
            index = self._server_index(server)
            if index is None:
                if leftovers and wanted is None and (server.get("metadata") or {}).get(LAUNCH_TAG):
                    found.append(server)
            elif wanted is None or str(index) == wanted:
                found.append(server)
        return found

    def _server_resource(self, server: Mapping[str, Any], index: int | None = None) -> Resource:
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
        index = self._server_index(server) if index is None else index
        if index is None:  # callers list only servers whose index they could read: this one changed meanwhile
            raise BackendError(f"server {server['id']} ({server.get('name')}) carries no readable index (neither "
                               f"{TAG_INDEX} metadata nor a launch name): delete the deployment to remove it",
                               provider=PROVIDER, resource=f"{meta.get(TAG_DEPLOYMENT)}/{meta.get(TAG_NODE)}")
        return Resource(meta[TAG_DEPLOYMENT], meta[TAG_NODE], index, PROVIDER, server["id"], state, attributes)

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
        found = [self._server_resource(s) for s in self._servers(selector)]
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

    def _wait_servers_gone(self, server_ids: Sequence[str], deployment_id: str, node_name: str | None = None) -> None:
        """Wait until none of these servers (of one deployment or node) is listed: one list per round."""
        ids = set(server_ids)
        if not ids:
            return
        where = "/".join(p for p in (deployment_id, node_name) if p)
        poll_until(lambda: [s for s in self._list_servers(deployment_id, node_name) if s["id"] in ids],
                   lambda left: not left, timeout=self.delete_timeout, interval=self.poll_interval,
                   what=f"deletion of {len(ids)} server(s) of {where}", provider=PROVIDER, resource=where,
                   status=lambda left: f"{len(left)} still listed",
                   hint="raise the backend's delete_timeout, or look at the cloud's console")

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
        servers = self._servers(spec.tags)
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
        if not self._servers(tag_selector(deployment_id, node_name), leftovers=True):
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
                    key_name=self.key_name, user_data=self._user_data(spec),
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

    # ---------------------------------------------------------------- group create (Nova's multiple create)
    def api_calls(self) -> dict[str, int]:
        """Return the OpenStack API requests this backend has made so far, by operation (``POST servers``...)."""
        return self.hook.api_calls()

    def create_group(self, specs: Sequence[ResourceSpec], *, deadline: float | None = None) -> list[Resource]:
        """Create a node's servers in as few Nova calls as it allows; return them ACTIVE, sorted by index.

        The node's security group is ensured once, before the launch; one list finds what exists (a retry
        launches only the missing indices, and removes what a launch cut short left without an index); one
        multiple create (``min_count`` 1, ``max_count`` the missing count) launches the missing indices (one per
        set of servers that differ in more than their index, or whose index list is too long for one metadata
        value); one list per round waits for all of them; floating IPs are bound after one port list and one
        floating IP list. A launch refused (a quota: Nova makes nothing when not even ``min_count`` fits), one
        short of what was asked (Nova makes as many as the quota allows), a server that went to ERROR or a wait
        cut short raises one typed error naming each index not made: what this call launched for those indices
        is removed, the ACTIVE servers are kept (a retry completes the node; a failed attempt's cleanup deletes
        them unless placement's ``keep_last_attempt`` keeps it). Volumes and servers that attach volumes are
        made one by one, as :meth:`create` makes them.

        :param specs: the instances wanted, distinct indices of one deployment's node
        :param deadline: a ``time.monotonic()`` limit on the waits, over ``create_timeout``
        """
        specs = self.checked_group(specs)
        if not specs:
            return []
        first = specs[0]
        if len(specs) == 1 or self._kind(first) != _SERVER or any(
                required_resources(spec, PROVIDER, _VOLUME) for spec in specs):
            return super().create_group(specs, deadline=deadline)
        deployment_id, node_name = first.deployment_id, first.node_name
        where = f"{deployment_id}/{node_name}"
        wanted = {spec.index: spec for spec in specs}
        made: dict[int, Resource] = {}
        waiting: dict[str, int] = {}  # server id -> index, waited for together
        stale: list[str] = []  # ours, but in ERROR or without a readable index: removed before the launch
        servers = self._servers(tag_selector(deployment_id, node_name), leftovers=True)
        for server in sorted(servers, key=lambda s: str(s.get("created_at") or s.get("created") or "")):
            index = self._server_index(server)
            if server.get("task_state") == "deleting":
                continue  # going: its index is launched again
            if index is None or (index in wanted and server.get("status") == "ERROR"):
                stale.append(server["id"])
            elif index not in wanted or index in made or index in waiting.values():
                continue
            elif self.normalize_state(str(server.get("status"))) == ResourceState.STOPPED:
                made[index] = self._create_server(wanted[index], deadline=deadline)  # started (or refused) as create
            else:
                waiting[server["id"]] = index
        missing = [index for index in wanted if index not in made and index not in waiting.values()]
        failed: dict[int, str] = {}
        launched: list[str] = []  # what this call launched: removed again if it does not become ACTIVE
        unindexed: dict[str, int] = {}  # launched servers whose names do not carry their index: set as metadata
        try:
            if stale:
                log.warning("Removing %d server(s) of %s in ERROR or left without an index by a launch cut short",
                            len(stale), where)
                for server_id in stale:
                    self.hook.delete_server(server_id)
                self._wait_servers_gone(stale, deployment_id, node_name)  # they count against the quota
            if missing:
                self._launch_group(wanted, missing, where, waiting, launched, unindexed, failed)
            if waiting:
                self._settle_group(waiting, deployment_id, node_name, deadline, made, failed)
            for server_id, index in unindexed.items():
                if index in made:  # Nova takes metadata only from an ACTIVE server
                    self.hook.set_server_metadata(server_id, {TAG_INDEX: str(index)})
            if made and security_rules(first)[1]:
                self._bind_floating_ips(wanted, made, failed)
        except BaseException as err:  # a refused list, a timeout, a task killed: never leave a launch half-made
            self._cleanup_group(deployment_id, node_name, launched, made, err)
            raise
        if failed:
            cause = group_create_error(node_name, failed, made, provider=PROVIDER, resource=where, what="server")
            self._cleanup_group(deployment_id, node_name, launched, made, cause)
            raise cause
        return [made[index] for index in sorted(made)]

    def _launch_group(self, wanted: Mapping[int, ResourceSpec], missing: Sequence[int], where: str,
                      waiting: dict[str, int], launched: list[str], unindexed: dict[str, int],
                      failed: dict[int, str]) -> None:
        """Launch the missing indices (the node's security group ensured first, once); fill ``waiting``."""
        first = wanted[missing[0]]
        group, _ = self._security_group(first)
        launches: dict[tuple, list[int]] = {}  # servers that differ only in their index share one launch
        for index in missing:
            spec = wanted[index]
            size, image = self._server_plan(spec)  # cached: no call after the node's first
            launches.setdefault((size.name, str(image["id"]), self._user_data(spec)), []).append(index)
        pending: dict[str, list[int]] = {}  # launch tag value -> its indices: found by one list after the launches
        for indices in launches.values():
            for chunk in _launch_chunks(indices):
                spec = wanted[chunk[0]]
                size, image = self._server_plan(spec)
                launch = f"{uuid.uuid4().hex[:_LAUNCH_ID_CHARS]}:{_encode_indices(chunk)}"
                single = len(chunk) == 1
                try:
                    server = self.hook.create_server(
                        name=self.resource_name(spec) if single else self.launch_name(spec.deployment_id,
                                                                                      spec.node_name),
                        flavor_id=self._flavor_ids[size.name], image_id=str(image["id"]), network_id=self.network_id,
                        security_group_id=group["id"], key_name=self.key_name, user_data=self._user_data(spec),
                        metadata=spec.tags if single else {**tag_selector(spec.deployment_id, spec.node_name),
                                                           LAUNCH_TAG: launch},
                        min_count=1, max_count=len(chunk),
                    )
                except OpenStackApiError as err:  # refused (a quota): its indices are reported, the others go on
                    hint = self._hint(err)
                    failed.update((index, f"{err.message}{f'; {hint}' if hint else ''}") for index in chunk)
                    continue
                log.info("Launched %d server(s) of %s %s (flavor %s, image %s)", len(chunk), where,
                         _encode_indices(chunk), size.name, image.get("name"))
                if single:
                    waiting[server["id"]] = chunk[0]
                    launched.append(server["id"])
                else:
                    pending[launch] = chunk
        if not pending:
            return
        # Nova answers a multiple create with its first server only: one list finds them all by their launch tag
        first_spec = wanted[missing[0]]
        found = self._list_servers(first_spec.deployment_id, first_spec.node_name)
        for launch, chunk in pending.items():
            mine = sorted((s for s in found if (s.get("metadata") or {}).get(LAUNCH_TAG) == launch),
                          key=lambda s: s["id"])
            positions = [self._launch_position(str(s.get("name") or ""), self.launch_name(
                first_spec.deployment_id, first_spec.node_name), len(chunk)) for s in mine]
            if None in positions or len(set(positions)) != len(positions):
                # the names do not carry Nova's count (a template without it, or Nova made one only): the servers
                # are all alike, any order is right, and the index is set as metadata once they are ACTIVE
                positions = list(range(len(mine)))
                unindexed.update((s["id"], chunk[p]) for s, p in zip(mine, positions, strict=True))
                log.warning("The servers of %s are not named <name>-<n> by this cloud (Nova's "
                            "multi_instance_display_name_template): their index is set as metadata", where)
            for server, position in zip(mine, positions, strict=True):
                waiting[server["id"]] = chunk[position]
                launched.append(server["id"])
            for position in sorted(set(range(len(chunk))) - set(positions)):
                failed[chunk[position]] = (f"Nova made {len(mine)} of the {len(chunk)} servers asked (the "
                                           "project's instance quota?); raise the quota or free resources, then retry")

    @staticmethod
    def _user_data(spec: ResourceSpec) -> str | None:
        return spec.user_data if spec.user_data is not None else spec.properties.get("user_data")

    def _settle_group(self, waiting: Mapping[str, int], deployment_id: str, node_name: str, deadline: float | None,
                      made: dict[int, Resource], failed: dict[int, str]) -> None:
        """Wait until every server of ``waiting`` is ACTIVE, in ERROR or gone (one list per round); sort them."""
        where = f"{deployment_id}/{node_name}"

        def probe() -> dict[str, dict[str, Any]]:
            return {s["id"]: s for s in self._list_servers(deployment_id, node_name) if s["id"] in waiting}

        def state(found: Mapping[str, Any], server_id: str) -> str:
            server = found.get(server_id)
            return "gone" if server is None or server.get("task_state") == "deleting" else str(server.get("status"))

        def status(found: Mapping[str, Any]) -> str:
            counts = Counter(state(found, server_id) for server_id in waiting)
            return ", ".join(f"{name} {n}" for name, n in sorted(counts.items()))

        def settled(found: Mapping[str, Any]) -> bool:
            return all(state(found, server_id) in ("ACTIVE", "ERROR", "gone") for server_id in waiting)

        try:
            found = poll_until(probe, settled, timeout=self.create_timeout, deadline=deadline,
                               interval=self.poll_interval, what=f"{len(waiting)} server(s) of {where} becoming ACTIVE",
                               provider=PROVIDER, resource=where, status=status,
                               hint="raise the backend's create_timeout, or look at the cloud's console")
        except ResourceTimeoutError as err:
            seen = probe()
            late = {i: index for i, index in waiting.items() if state(seen, i) != "ACTIVE"}
            for server_id, index in waiting.items():  # the caller's cleanup removes what was launched and is late
                if server_id not in late:
                    made[index] = self._server_resource(seen[server_id], index)
            raise ResourceTimeoutError(
                f"{err.message}; server(s) {sorted(late.values())} not ACTIVE by then (what was launched for them "
                f"has been removed; the ACTIVE ones {sorted(made)} are kept)", provider=PROVIDER,
                resource=where) from err
        for server_id, index in waiting.items():
            current = state(found, server_id)
            if current == "ACTIVE":
                made[index] = self._server_resource(found[server_id], index)
            elif current == "ERROR":
                fault = (found[server_id].get("fault") or {}).get("message") or "no fault message"
                failed[index] = f"server {server_id} went to ERROR: {fault}"
            else:
                failed[index] = f"server {server_id} disappeared while booting"

    def _bind_floating_ips(self, wanted: Mapping[int, ResourceSpec], made: dict[int, Resource],
                           failed: dict[int, str]) -> None:
        """Give each ACTIVE server of a public node its tagged floating IP: one port list, one floating IP list."""
        first = wanted[min(made)]
        ports: dict[str, list[dict[str, Any]]] = {}
        for port in self.hook.ports(device_id=[r.resource_id for r in made.values()]):
            ports.setdefault(port["device_id"], []).append(port)
        fips = self.hook.floating_ips(neutron_tags(tag_selector(first.deployment_id, first.node_name)))
        bound = False
        for index, resource in sorted(made.items()):
            tags = neutron_tags(wanted[index].tags)
            own = [f for f in fips if set(tags) <= set(f.get("tags") or [])]
            port_ids = [p["id"] for p in ports.get(resource.resource_id, [])]
            if any(f.get("port_id") in port_ids for f in own):
                continue
            try:
                for fip in own:  # left by an earlier server of this instance
                    self.hook.delete_floating_ip(fip["id"])
                if not port_ids:
                    raise OpenStackApiError(f"server {resource.resource_id} has no port to bind a floating IP to",
                                            resource=resource.resource_id)
                self.hook.create_floating_ip(network_id=self.floating_network_id, port_id=port_ids[0], tags=tags)
                bound = True
            except OpenStackApiError as err:  # its server is removed with the failed ones (if this call made it)
                hint = self._hint(err)
                failed[index] = f"floating IP: {err.message}{f'; {hint}' if hint else ''}"
                del made[index]
        if bound:  # the addresses in the resources: one list for all
            current = {s["id"]: s for s in self._list_servers(first.deployment_id, first.node_name)}
            for index, resource in made.items():
                if resource.resource_id in current:
                    made[index] = self._server_resource(current[resource.resource_id], index)

    def _cleanup_group(self, deployment_id: str, node_name: str, launched: Sequence[str], made: Mapping[int, Resource],
                       cause: BaseException) -> None:
        """Remove what a failed group create launched and does not keep; the node's group too if no server is left."""
        where = f"{deployment_id}/{node_name}"
        kept = {r.resource_id for r in made.values()}
        doomed = [server_id for server_id in launched if server_id not in kept]
        try:
            for server_id in doomed:
                self.hook.delete_server(server_id)
            self._wait_servers_gone(doomed, deployment_id, node_name)
            if not self._servers(tag_selector(deployment_id, node_name), leftovers=True):
                node_tags = neutron_tags(tag_selector(deployment_id, node_name))
                for fip in self.hook.floating_ips(node_tags):
                    self.hook.delete_floating_ip(fip["id"])
                for group in self.hook.security_groups(node_tags):
                    self._delete_group(group["id"])
        except (BackendError, WaitFailed) as cleanup_err:
            # the cause is what the user must see; the leftover is found by tags at delete time
            log.error("Cleanup after the failed create of %s failed (%s); delete the deployment to retry it; "
                      "cause: %s", where, cleanup_err, cause)

    # ---------------------------------------------------------------- delete
    def delete(self, deployment_id: str, node_name: str | None = None, index: int | None = None) -> list[Resource]:
        """Delete servers, floating IPs, volumes and security groups found by tags; return the servers and volumes.

        :param deployment_id: the deployment's id
        :param node_name: only this node's resources
        :param index: only this instance
        """
        selector = tag_selector(deployment_id, node_name, index)
        raw_servers = self._servers(selector, leftovers=True)
        volumes = [self._volume_resource(v) for v in self._tagged(self.hook.volumes(selector))]
        servers = [self._server_resource(s) for s in raw_servers if self._server_index(s) is not None]
        targets = sorted(servers + volumes, key=lambda r: (r.node_name, r.index, r.attributes["kind"]))
        for fip in self.hook.floating_ips(neutron_tags(selector)):
            self.hook.delete_floating_ip(fip["id"])
        # Nova has no bulk delete: the DELETEs go back to back, then one list per round waits for all
        for server in raw_servers:
            if server.get("task_state") != "deleting":
                self.hook.delete_server(server["id"])
        self._wait_servers_gone([s["id"] for s in raw_servers], deployment_id, node_name)
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
            if node is None or not self._servers(tag_selector(deployment_id, node), leftovers=True):
                self._delete_group(group["id"])
        return [dataclasses.replace(r, state=ResourceState.DELETED) for r in targets]
