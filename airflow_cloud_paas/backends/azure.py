"""The Azure backend: virtual machines, NICs, public IPs, network security groups and managed disks.

Credentials come from the Microsoft Azure provider's ``azure`` connection, read the way
:class:`~airflow.providers.microsoft.azure.hooks.base_azure.AzureBaseHook` reads it (client id and
secret in login/password with ``tenantId`` in the extra, else ``DefaultAzureCredential``;
``subscriptionId`` in the extra). The provider's ``AzureComputeHook`` only starts and stops VMs, so
:class:`~airflow_cloud_paas.hooks.azure.AzureVirtualMachinesHook` (an ``AzureBaseHook``) hands out the
azure-mgmt compute, network and resource clients built on that credential, and turns their errors into
:class:`~airflow_cloud_paas.hooks.azure.AzureApiError`. Every wait (long-running operations included) is
:func:`~airflow_cloud_paas.backends.base.poll_until`.

What is made per node type:

- ``tosca.nodes.Compute`` and descendants: one VM per index, its size the smallest that fits the
  ``host`` capability among ``virtual_machine_sizes.list(location)`` (read once), its image from the
  ``os`` capability (an explicit ``publisher:offer:sku[:version]`` URN or image resource id, or a
  publisher/offer/sku mapped from distribution and version, checked to exist in the location); one
  NIC per VM on the deployment's virtual network, one network security group per node (inbound
  rules from its endpoints), a public IP when an endpoint is on the PUBLIC network; the OS disk goes
  with the VM (``deleteOption: Delete``); the disks of ``local_storage``/``attachment`` requirements
  are attached.
- ``tosca.nodes.BlockStorage``: one empty managed disk per index, attached to the VM it requires.

A node's N VMs (:meth:`AzureBackend.create_group`): Azure has no call that makes N plain VMs (a scale
set is another resource), so the node's shared resources are ensured once, then every missing index's
public IP, NIC and VM PUT is started at once, kind by kind, and all are waited for together with one
list of the resource group per round; deletes likewise begin every deletion, then wait for all.
:meth:`AzureBackend.api_calls` counts every ARM request by operation.

Everything lives in one resource group per deployment (``cloud-paas-<deployment>``, made here and
deleted with the deployment) or in a configured existing group (never deleted); either way every
resource carries the ``TAG_*`` tags, so ``create`` finds what an earlier attempt made and ``delete``
finds everything of a deployment, node or instance, also after a crash.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import logging
import math
import re
from collections import Counter
from collections.abc import Callable, Collection, Hashable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import cached_property
from typing import Any, ClassVar, TypeVar

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
    run_undo,
    undo_on_failure,
)
from airflow_cloud_paas.backends.mapping import HostRequirements, Rule, Size, security_rules, select_size, size_mb
from airflow_cloud_paas.backends.naming import (
    LONG_PREFIX,
    bounded_name,
    instance_stem,
    node_stem,
    ours,
    resource_of,
    tag_selector,
    tags_match,
)
from airflow_cloud_paas.exceptions import BackendError, ResourceCreateError, ResourceTimeoutError, UnsupportedNodeError
from airflow_cloud_paas.hooks.azure import AzureApiError, AzureVirtualMachinesHook, plain

log = logging.getLogger(__name__)

PROVIDER = "azure"
#: requirement names through which a compute node names the disks to attach (INDIGO uses local_storage)
STORAGE_REQUIREMENTS = ("local_storage", "attachment")
_VM = "vm"
_DISK = "disk"

#: (distribution, version) -> marketplace (publisher, offer, sku); the first version listed per
#: distribution is its default when the os capability gives none
IMAGE_MAP: dict[tuple[str, str], tuple[str, str, str]] = {
    ("ubuntu", "22.04"): ("Canonical", "0001-com-ubuntu-server-jammy", "22_04-lts-gen2"),
    ("ubuntu", "24.04"): ("Canonical", "ubuntu-24_04-lts", "server"),
    ("ubuntu", "20.04"): ("Canonical", "0001-com-ubuntu-server-focal", "20_04-lts-gen2"),
    ("debian", "12"): ("Debian", "debian-12", "12-gen2"),
    ("debian", "11"): ("Debian", "debian-11", "11-gen2"),
    ("almalinux", "9"): ("almalinux", "almalinux-x86_64", "9-gen2"),
    ("almalinux", "8"): ("almalinux", "almalinux-x86_64", "8-gen2"),
    ("rhel", "9"): ("RedHat", "RHEL", "9-lvm-gen2"),
    ("rhel", "8"): ("RedHat", "RHEL", "8-lvm-gen2"),
    ("centos", "7"): ("OpenLogic", "CentOS", "7_9-gen2"),
}
_DISTRIBUTION_ALIASES = {"redhat": "rhel", "red hat": "rhel", "alma": "almalinux"}
#: VM sizes with GPUs -> (count, model): the size list of the location does not tell (extend with ``gpu_sizes``)
GPU_SIZES: dict[str, tuple[int, str]] = {
    "Standard_NC4as_T4_v3": (1, "T4"), "Standard_NC8as_T4_v3": (1, "T4"), "Standard_NC16as_T4_v3": (1, "T4"),
    "Standard_NC64as_T4_v3": (4, "T4"),
    "Standard_NC6s_v3": (1, "V100"), "Standard_NC12s_v3": (2, "V100"), "Standard_NC24s_v3": (4, "V100"),
    "Standard_NC24ads_A100_v4": (1, "A100"), "Standard_NC48ads_A100_v4": (2, "A100"),
    "Standard_NC96ads_A100_v4": (4, "A100"), "Standard_ND96asr_v4": (8, "A100"),
    "Standard_ND96amsr_A100_v4": (8, "A100"),
    "Standard_NC40ads_H100_v5": (1, "H100"), "Standard_NC80adis_H100_v5": (2, "H100"),
    "Standard_ND96isr_H100_v5": (8, "H100"),
}
_QUOTA_CODES = ("QuotaExceeded", "OperationNotAllowed", "SkuNotAvailable")
#: how many long-running operations a group create or a bulk delete starts at once: each start is one HTTPS round
#: trip that ARM answers once it has accepted the operation (about a second for a VM); the waits that follow are one
#: list per round for all of them, whatever their number. Below the SDK transport's pool of 10 connections per host.
MAX_PARALLEL_STARTS = 8
#: provisioning states that end a network resource's PUT
_SETTLED = ("Succeeded", "Failed", "Canceled")
_NOT_FOUND = ("ResourceGroupNotFound", "ResourceNotFound", "NotFound")
#: what a group create made for one index: (kind, the SDK's operations of that kind, name), oldest first
_Made = list[tuple[str, Any, str]]
_K = TypeVar("_K", bound=Hashable)


def azure_name(text: str, limit: int = 64) -> str:
    """Return ``text`` as an Azure resource name (:func:`~airflow_cloud_paas.backends.naming.bounded_name`).

    :param text: the wanted name
    :param limit: the resource type's maximum length
    """
    return bounded_name(text, limit)


def _public_key(spec: ResourceSpec) -> str | None:
    """Return the SSH public key the node's os (or endpoint) credential carries, if any."""
    for cap_name in ("os", "endpoint"):
        credential = (spec.capabilities.get(cap_name) or {}).get("credential")
        if isinstance(credential, Mapping):
            token = str(credential.get("token") or "").strip()
            if token.startswith(("ssh-", "ecdsa-")):
                return token
    return None


@dataclasses.dataclass(frozen=True)
class _VmPlan:
    size: Size
    image: dict[str, str]
    public_key: str
    rules: tuple[Rule, ...]
    public: bool
    os_disk_gb: int | None


class AzureBackend(Backend):
    """Deploy Compute and BlockStorage nodes as Azure VMs and managed disks.

    :param conn_id: the Airflow ``azure`` connection
    :param location: the Azure region (default: the connection's ``location`` extra, else the
        configured resource group's)
    :param resource_group: an existing resource group to put everything in (found by tags, never
        deleted); default: one group per deployment, made and deleted here
    :param resource_group_prefix: the prefix of per-deployment group names
    :param subnet_id: an existing subnet for the NICs (default: a virtual network per deployment)
    :param address_space: the per-deployment virtual network's address space
    :param admin_username: the VMs' administrator
    :param ssh_public_key: the administrator's key when the node's os credential gives none
    :param os_disk_type: the OS disks' storage type
    :param disk_sku: the BlockStorage disks' SKU (a node's ``type`` property overrides it)
    :param gpu_sizes: more VM sizes with GPUs, name -> (count, model), over :data:`GPU_SIZES`
    :param create_timeout: seconds a VM, disk or network resource may take to be made
    :param delete_timeout: seconds a deletion may take
    :param poll_interval: seconds between two polls of a long-running operation
    """

    name: ClassVar[str] = PROVIDER
    #: Azure's limit on customData, counted decoded
    max_user_data_bytes: ClassVar[int | None] = 65535
    #: VM instance-view status codes (power state wins over provisioning state) and disk states
    state_map: ClassVar[Mapping[str, ResourceState]] = {
        "PowerState/starting": ResourceState.CREATING,
        "PowerState/running": ResourceState.RUNNING,
        "PowerState/stopping": ResourceState.STOPPED,
        "PowerState/stopped": ResourceState.STOPPED,
        "PowerState/deallocating": ResourceState.STOPPED,
        "PowerState/deallocated": ResourceState.STOPPED,
        "PowerState/unknown": ResourceState.UNKNOWN,
        "ProvisioningState/creating": ResourceState.CREATING,
        "ProvisioningState/updating": ResourceState.CREATING,
        "ProvisioningState/migrating": ResourceState.CREATING,
        "ProvisioningState/succeeded": ResourceState.RUNNING,
        "ProvisioningState/failed": ResourceState.ERROR,
        "ProvisioningState/canceled": ResourceState.ERROR,
        "ProvisioningState/deleting": ResourceState.DELETING,
        # managed disks (diskState)
        "Unattached": ResourceState.RUNNING,
        "Attached": ResourceState.RUNNING,
        "Reserved": ResourceState.RUNNING,
        "ActiveSAS": ResourceState.RUNNING,
        "ActiveSASFrozen": ResourceState.RUNNING,
        "ReadyToUpload": ResourceState.CREATING,
        "ActiveUpload": ResourceState.CREATING,
        "Frozen": ResourceState.STOPPED,
    }

    def __init__(
        self,
        conn_id: str = AzureVirtualMachinesHook.default_conn_name,
        location: str | None = None,
        resource_group: str | None = None,
        resource_group_prefix: str = f"{LONG_PREFIX}-",
        subnet_id: str | None = None,
        address_space: str = "10.0.0.0/16",
        admin_username: str = "cloudadmin",
        ssh_public_key: str | None = None,
        os_disk_type: str = "StandardSSD_LRS",
        disk_sku: str = "StandardSSD_LRS",
        gpu_sizes: Mapping[str, tuple[int, str]] | None = None,
        create_timeout: float = 1800.0,
        delete_timeout: float = 900.0,
        poll_interval: float = 5.0,
    ) -> None:
        self.conn_id = conn_id
        self.hook = AzureVirtualMachinesHook(conn_id, polling_interval=poll_interval)
        self._location = location
        self.resource_group = resource_group
        self.resource_group_prefix = resource_group_prefix
        self.subnet_id = subnet_id
        self.address_space = address_space
        self.admin_username = admin_username
        self.ssh_public_key = ssh_public_key
        self.os_disk_type = os_disk_type
        self.disk_sku = disk_sku
        self.gpu_sizes = {**GPU_SIZES, **(gpu_sizes or {})}
        self.create_timeout = create_timeout
        self.delete_timeout = delete_timeout
        self.poll_interval = poll_interval

    # ---------------------------------------------------------------- calls
    def _call(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        with self.hook.errors(what):
            return fn(*args, **kwargs)

    def _list(self, what: str, pager: Callable[[], Iterable[Any]]) -> list[dict[str, Any]]:
        """Return every item of a list call, or [] when the resource group does not exist."""
        try:
            with self.hook.errors(what):
                return [plain(item) for item in pager()]
        except AzureApiError as err:
            if err.code in ("ResourceGroupNotFound", "NotFound") or err.status_code == 404:
                return []
            raise

    def _poll(self, what: str, probe: Callable[[], Any], done: Callable[[Any], bool], *, resource: str,
              deadline: float | None = None, delete: bool = False, failed: Callable[[Any], str | None] | None = None,
              status: Callable[[Any], str] | None = None) -> Any:
        """Wait with :func:`poll_until`, for ``create_timeout`` (or ``delete_timeout``) cut to ``deadline``."""
        timeout, option = (self.delete_timeout, "delete_timeout") if delete else (self.create_timeout, "create_timeout")
        return poll_until(probe, done, timeout=timeout, deadline=deadline, interval=self.poll_interval, what=what,
                          provider=PROVIDER, resource=resource, failed=failed, status=status,
                          hint=f"raise {option}, or look at the resource in the Azure portal")

    def _wait_lro(self, what: str, poller: Any, *, deadline: float | None = None, delete: bool = False) -> Any:
        """Wait for a long-running operation (its poller polls ARM in its own thread); return its result."""
        self._poll(what, poller.done, bool, resource=what, deadline=deadline, delete=delete,
                   status=lambda _: f"operation {poller.status()}")
        with self.hook.errors(what):
            result = poller.result()
        return plain(result) if result is not None else None

    def _run(self, what: str, start: Callable[..., Any], *args: Any, deadline: float | None = None,
             delete: bool = False) -> Any:
        """Start a long-running operation and wait for its end."""
        poller = self._call(what, start, *args)
        return self._wait_lro(what, poller, deadline=deadline, delete=delete)

    def api_calls(self) -> dict[str, int]:
        """Return the ARM calls this backend has made so far, by operation (``virtualMachines.createOrUpdate``...).

        A long-running operation's status polls count as ``operations.get``; Entra ID's token requests are not ARM
        calls and are not counted.
        """
        return self.hook.api_calls()

    def _start_all(self, starts: Mapping[_K, tuple[str, Callable[..., Any], tuple[Any, ...]]],
                   ) -> dict[_K, AzureApiError]:
        """Start long-running operations without waiting for their ends; return ARM's refusals by key.

        A bounded pool of threads sends the starts, at most :data:`MAX_PARALLEL_STARTS` at once (the SDK's clients
        are thread-safe): each start is a round trip that ARM answers once it has accepted the operation, so N of them
        one after the other would cost N round trips before the first VM is even asked for. ``polling=False``: no
        poller (and no poller thread) per operation; the caller waits for all of them with one list per round
        (:meth:`_wait_listed`). Any other error is raised once every start has ended.

        :param starts: key -> (what is done, for messages; the SDK's ``begin_*`` method; its arguments)
        """
        if not starts:
            return {}

        def start(key: _K) -> None:
            what, begin, args = starts[key]
            self._call(what, begin, *args, polling=False)

        # clients are cached properties: built here, once, not by the first threads at the same time
        _ = self.hook.compute, self.hook.network
        pool = ThreadPoolExecutor(max_workers=min(len(starts), MAX_PARALLEL_STARTS), thread_name_prefix="azure-start")
        try:
            futures = {key: pool.submit(start, key) for key in starts}
            pool.shutdown(wait=True)
        except BaseException:
            # cut short (the task killed): the queued starts must not create what the caller's cleanup cannot see
            pool.shutdown(wait=True, cancel_futures=True)
            raise
        refused: dict[_K, AzureApiError] = {}
        for key, future in futures.items():  # all have ended: leaving the pool waited for them
            try:
                future.result()
            except AzureApiError as err:
                refused[key] = err
        return refused

    def _wait_listed(self, kind: str, group: str, where: str, lister: Callable[[], Iterable[Any]],
                     names: Collection[str], settled: Callable[[Mapping[str, Any] | None], bool],
                     status: Callable[[Mapping[str, Any] | None], str], *, deadline: float | None = None,
                     delete: bool = False, seen: dict[str, dict[str, Any]] | None = None) -> dict[str, dict[str, Any]]:
        """Wait until every named resource of one kind is settled, listing the resource group once per round.

        Return the last look, by name (a resource not listed is absent). Azure has no call that reads several
        long-running operations at once, but one list of the group shows every resource's provisioning state: N
        resources cost one call per round, not N status polls.

        :param kind: what the resources are (``VM``, ``NIC``...), for messages
        :param group: the resource group
        :param where: the deployment/node, for errors
        :param lister: lists the resources of that kind in the group (one call)
        :param names: the resources waited for
        :param settled: whether a resource (None: not listed) is done with, either way
        :param status: its state in a word, for the timeout message
        :param deadline: a ``time.monotonic()`` limit, over ``create_timeout`` (``delete_timeout`` if ``delete``)
        :param delete: whether this waits for deletions
        :param seen: filled with each round's look, so a caller still has the last one when the wait times out
        """
        wanted = set(names)
        last = seen if seen is not None else {}
        if not wanted:
            return last

        def probe() -> dict[str, dict[str, Any]]:
            found = {str(item.get("name")): item for item in self._list(f"listing {kind}s of {group}", lister)
                     if str(item.get("name")) in wanted}
            last.clear()
            last.update(found)
            return found

        def summary(found: Mapping[str, Any]) -> str:
            counts = Counter(status(found.get(name)) for name in wanted)
            return ", ".join(f"{state} {n}" for state, n in sorted(counts.items()))

        return self._poll(f"{len(wanted)} {kind}(s) {'gone' if delete else 'ready'}", probe,
                          lambda found: all(settled(found.get(name)) for name in wanted), resource=where,
                          deadline=deadline, delete=delete, status=summary)

    def _delete_all(self, kind: str, operations: Any, names: Collection[str], group: str, where: str,
                    lister: Callable[[], Iterable[Any]] | None = None) -> None:
        """Delete resources of one kind: begin every deletion, then wait for all together (one list per round).

        What is already gone is fine; ARM's refusals are raised together once the accepted deletions are over.

        :param kind: what they are (``VM``, ``NIC``...)
        :param operations: the SDK's operations of that kind (``begin_delete``, ``list``)
        :param names: the resources
        :param group: their resource group
        :param where: the deployment/node, for errors
        :param lister: lists that kind in the group (default ``operations.list(group)``)
        """
        if not names:
            return
        refused = self._start_all({name: (f"deleting {kind} {name}", operations.begin_delete, (group, name))
                                   for name in names})
        refused = {name: err for name, err in refused.items()
                   if err.status_code != 404 and err.code not in _NOT_FOUND}
        self._wait_listed(kind, group, where, lister or (lambda: operations.list(group)),
                          [name for name in names if name not in refused], lambda item: item is None,
                          lambda item: "gone" if item is None else str(
                              (item.get("properties") or {}).get("provisioningState") or "listed"), delete=True)
        if refused:
            raise BackendError("; ".join(err.message for err in refused.values()), provider=PROVIDER,
                               resource=where)

    # ---------------------------------------------------------------- catalogue (cached)
    @cached_property
    def location(self) -> str:
        """Return the region everything is made in."""
        location = self._location or self.hook.extras.get("location")
        if not location and self.resource_group:
            group = self._call(f"reading resource group {self.resource_group}", self.hook.resources.resource_groups.get,
                               self.resource_group)
            location = plain(group)["location"]
        if not location:
            raise BackendError("no Azure location: give the 'location' option or the connection's 'location' extra",
                               provider=PROVIDER, resource=self.conn_id)
        return str(location)

    @cached_property
    def sizes(self) -> list[Size]:
        """Return the VM sizes of the location (read once per backend)."""
        found = self._call(f"listing VM sizes of {self.location}",
                           lambda: [plain(s) for s in self.hook.compute.virtual_machine_sizes.list(self.location)])
        sizes = []
        for item in found:
            gpus, model = self.gpu_sizes.get(item["name"], (0, None))
            sizes.append(Size(name=item["name"], cpus=int(item.get("numberOfCores") or 0),
                              mem_mb=float(item.get("memoryInMB") or 0), gpus=gpus, gpu_model=model))
        return sizes

    @cached_property
    def _image_versions(self) -> dict[tuple[str, str, str], list[str]]:
        return {}

    def _image_exists(self, publisher: str, offer: str, sku: str) -> list[str]:
        key = (publisher, offer, sku)
        if key not in self._image_versions:
            found = self._list(
                f"listing versions of image {publisher}:{offer}:{sku}",
                lambda: self.hook.compute.virtual_machine_images.list(self.location, publisher, offer, sku),
            )
            self._image_versions[key] = [str(v.get("name")) for v in found]
        return self._image_versions[key]

    # ---------------------------------------------------------------- check
    @staticmethod
    def _where(spec: ResourceSpec) -> str:
        return f"{spec.deployment_id}/{spec.node_name}"

    def _kind(self, spec: ResourceSpec) -> str:
        return machine_or_disk(spec, PROVIDER, "Azure", (_VM, "virtual machines"), (_DISK, "managed disks"))

    def _image(self, spec: ResourceSpec) -> dict[str, str]:
        where = self._where(spec)
        os_cap = dict(spec.capabilities.get("os") or {})
        explicit = str(os_cap.get("image") or "").removeprefix("azr://")
        if explicit.startswith("/subscriptions/"):
            return {"id": explicit}  # a managed or gallery image: Azure checks it at creation
        if explicit:
            parts = re.split(r"[:/]", explicit)
            if len(parts) not in (3, 4) or not all(parts):
                raise UnsupportedNodeError(
                    f"image {os_cap['image']!r} is neither publisher:offer:sku[:version] nor an image resource id",
                    provider=PROVIDER, resource=where)
            publisher, offer, sku = parts[:3]
            version = parts[3] if len(parts) == 4 else "latest"
        else:
            if str(os_cap.get("type") or "linux").lower() != "linux":
                raise UnsupportedNodeError(
                    f"os type {os_cap.get('type')!r} needs an explicit image (os.image = publisher:offer:sku)",
                    provider=PROVIDER, resource=where)
            distribution = str(os_cap.get("distribution") or "ubuntu").lower()
            distribution = _DISTRIBUTION_ALIASES.get(distribution, distribution)
            known = [v for d, v in IMAGE_MAP if d == distribution]
            wanted = str(os_cap["version"]) if os_cap.get("version") is not None else (known[0] if known else "")
            match = next((v for v in known if v == wanted or v.split(".")[0] == wanted), None)
            if match is None:
                raise UnsupportedNodeError(
                    f"no image for os {distribution} {wanted}".rstrip() + "; known: "
                    + ", ".join(f"{d} {v}" for d, v in IMAGE_MAP) + " (or give os.image = publisher:offer:sku)",
                    provider=PROVIDER, resource=where)
            publisher, offer, sku = IMAGE_MAP[(distribution, match)]
            version = "latest"
        versions = self._image_exists(publisher, offer, sku)
        if not versions or (version != "latest" and version not in versions):
            raise UnsupportedNodeError(
                f"image {publisher}:{offer}:{sku}:{version} not found in {self.location} "
                "(see `az vm image list --all --publisher ... --location ...`)",
                provider=PROVIDER, resource=where)
        return {"publisher": publisher, "offer": offer, "sku": sku, "version": version}

    def _vm_plan(self, spec: ResourceSpec) -> _VmPlan:
        where = self._where(spec)
        req = HostRequirements.from_spec(spec, PROVIDER)
        size = select_size(req, self.sizes, provider=PROVIDER, resource=where)
        image = self._image(spec)
        key = _public_key(spec) or self.ssh_public_key
        if not key:
            raise UnsupportedNodeError(
                "an Azure Linux VM needs an SSH public key: give os.credential.token (token_type public_key) or "
                "the backend's ssh_public_key option",
                provider=PROVIDER, resource=where)
        # a hosted endpoint not on PUBLIC opens to the NSG service tag of the virtual network's own ranges
        rules, public = security_rules(spec, private=("VirtualNetwork",))
        os_disk_gb = max(30, math.ceil(req.disk_gb)) if req.disk_gb else None
        return _VmPlan(size, image, key, rules, public, os_disk_gb)

    def _disk_size_gb(self, spec: ResourceSpec) -> int:
        where = self._where(spec)
        try:
            mb = size_mb(spec.properties.get("size"), field="size")
        except ValueError as err:
            raise UnsupportedNodeError(str(err), provider=PROVIDER, resource=where) from None
        if not mb:
            raise UnsupportedNodeError(f"block storage node '{spec.node_name}' has no 'size': give one such as "
                                       "'10 GB'", provider=PROVIDER, resource=where)
        return max(1, math.ceil(mb / 1024))

    def check(self, spec: ResourceSpec) -> None:
        """Raise :class:`UnsupportedNodeError` if no size, image or disk fits this node; create nothing.

        :param spec: the resource wanted (requirements may be empty)
        """
        if self._kind(spec) == _VM:
            self.check_user_data(spec)
            self._vm_plan(spec)
        else:
            self._disk_size_gb(spec)

    # ---------------------------------------------------------------- names
    def group_name(self, deployment_id: str) -> str:
        """Return the resource group of a deployment.

        :param deployment_id: the deployment
        """
        return self.resource_group or azure_name(f"{self.resource_group_prefix}{deployment_id}", 90)

    @staticmethod
    def resource_name(spec: ResourceSpec) -> str:
        """Return the name of the VM or disk of a spec (``<deployment>-<node>-<index>``).

        :param spec: the spec
        """
        return azure_name(instance_stem(spec.deployment_id, spec.node_name, spec.index), 64)

    def _arm_id(self, group: str, kind: str, name: str) -> str:
        return f"/subscriptions/{self.hook.subscription_id}/resourceGroups/{group}/providers/{kind}/{name}"

    # ---------------------------------------------------------------- describe
    def vm_state(self, vm: Mapping[str, Any]) -> tuple[ResourceState, str]:
        """Return the normalized and native state of a VM read with its instance view.

        :param vm: the VM's REST JSON
        """
        props = vm.get("properties") or {}
        provisioning = str(props.get("provisioningState") or "")
        statuses = [str(s.get("code")) for s in (props.get("instanceView") or {}).get("statuses") or []]
        power = next((s for s in statuses if s.startswith("PowerState/")), None)
        native = f"ProvisioningState/{provisioning.lower()}"
        if provisioning.lower() in ("failed", "canceled", "deleting") or power is None:
            return self.normalize_state(native), native
        return self.normalize_state(power), power

    def _vm_resource(self, vm: Mapping[str, Any], nics: Mapping[str, Any], pips: Mapping[str, Any]) -> Resource:
        tags = vm.get("tags") or {}
        props = vm.get("properties") or {}
        state, native = self.vm_state(vm)
        private_ip = public_ip = None
        for ref in (props.get("networkProfile") or {}).get("networkInterfaces") or []:
            nic = nics.get(str(ref.get("id")).lower()) or {}
            for conf in (nic.get("properties") or {}).get("ipConfigurations") or []:
                cprops = conf.get("properties") or {}
                private_ip = private_ip or cprops.get("privateIPAddress")
                pip = pips.get(str((cprops.get("publicIPAddress") or {}).get("id")).lower()) or {}
                public_ip = public_ip or (pip.get("properties") or {}).get("ipAddress")
        storage = props.get("storageProfile") or {}
        attributes = {
            "kind": _VM,
            "name": vm.get("name"),
            "resource_group": vm["id"].split("/")[4],
            "location": vm.get("location"),
            "vm_size": (props.get("hardwareProfile") or {}).get("vmSize"),
            "provisioning_state": props.get("provisioningState"),
            "status": native,
            "image": dict(storage.get("imageReference") or {}),
            "private_ip": private_ip,
            "public_ip": public_ip,
            "data_disks": sorted(str((d.get("managedDisk") or {}).get("id")) for d in storage.get("dataDisks") or []),
        }
        return Resource(*resource_of(tags), PROVIDER, vm["id"], state, attributes)

    def _disk_resource(self, disk: Mapping[str, Any]) -> Resource:
        tags = disk.get("tags") or {}
        props = disk.get("properties") or {}
        provisioning = str(props.get("provisioningState") or "")
        if provisioning in ("Failed", "Canceled"):
            state = ResourceState.ERROR
        elif provisioning == "Deleting":
            state = ResourceState.DELETING
        elif provisioning in ("Creating", "Updating") and not props.get("diskState"):
            state = ResourceState.CREATING
        else:
            state = self.normalize_state(str(props.get("diskState")))
        attributes = {
            "kind": _DISK,
            "name": disk.get("name"),
            "resource_group": disk["id"].split("/")[4],
            "size_gb": props.get("diskSizeGB"),
            "sku": (disk.get("sku") or {}).get("name"),
            "status": props.get("diskState"),
            "attached_to": disk.get("managedBy"),
        }
        return Resource(*resource_of(tags), PROVIDER, disk["id"], state, attributes)

    def _vms(self, group: str, selector: Mapping[str, str]) -> list[dict[str, Any]]:
        found = self._list(f"listing VMs of {group}",
                           lambda: self.hook.compute.virtual_machines.list(group, expand="instanceView"))
        return [vm for vm in found if ours(vm.get("tags"), selector)]

    def _tagged(self, what: str, pager: Callable[[], Iterable[Any]], selector: Mapping[str, str],
                *, instance: bool = True) -> list[dict[str, Any]]:
        found = self._list(what, pager)
        return [x for x in found
                if (ours(x.get("tags"), selector) if instance else tags_match(x.get("tags"), selector))]

    def _describe(self, group: str, selector: Mapping[str, str]) -> list[Resource]:
        vms = self._vms(group, selector)
        found: list[Resource] = []
        if vms:
            nics = {n["id"].lower(): n for n in self._list(f"listing NICs of {group}",
                                                           lambda: self.hook.network.network_interfaces.list(group))}
            pips = {p["id"].lower(): p for p in self._list(
                f"listing public IPs of {group}", lambda: self.hook.network.public_ip_addresses.list(group))}
            found = [self._vm_resource(vm, nics, pips) for vm in vms]
        disks = self._tagged(f"listing disks of {group}",
                             lambda: self.hook.compute.disks.list_by_resource_group(group), selector)
        found += [self._disk_resource(d) for d in disks]
        return sorted(found, key=lambda r: (r.node_name, r.index, r.attributes["kind"]))

    def describe(self, deployment_id: str, node_name: str | None = None) -> list[Resource]:
        """Return the VMs and disks of a deployment (optionally of one node), sorted by node, index.

        :param deployment_id: the deployment's id
        :param node_name: only this node's resources
        """
        return self._describe(self.group_name(deployment_id), tag_selector(deployment_id, node_name))

    # ---------------------------------------------------------------- create
    def create(self, spec: ResourceSpec, *, deadline: float | None = None) -> Resource:
        """Create the VM or disk of a node instance (or return the existing one), waiting until it runs.

        :param spec: the resource wanted
        :param deadline: a ``time.monotonic()`` limit on the waits, over ``create_timeout``
        """
        if self._kind(spec) == _VM:
            self.check_user_data(spec)
            return self._create_vm(spec, self._vm_plan(spec), deadline=deadline)
        return self._create_disk(spec, self._disk_size_gb(spec), deadline)

    def request(self, spec: ResourceSpec) -> Resource:
        """Start creating a VM and return without waiting for it to run, for a deferrable wait.

        Its network resources are made first (seconds); the VM's own long-running operation is left to
        Azure, and a trigger polls its state. Disks are made as by :meth:`create`.

        :param spec: the resource wanted
        """
        if self._kind(spec) != _VM:
            return self.create(spec)
        self.check_user_data(spec)
        return self._create_vm(spec, self._vm_plan(spec), wait=False)

    def create_group(self, specs: Sequence[ResourceSpec], *, deadline: float | None = None) -> list[Resource]:
        """Create a node's VMs together (or find them); return them RUNNING, sorted by index.

        Azure has no call that makes N plain VMs (a scale set is another resource), so: one list finds the node's
        VMs (a retry makes only the missing indices); the resource group, virtual network and the node's network
        security group are ensured once, before anything per index; then each kind is made for every missing index
        at once, public IPs, NICs, VMs (a NIC needs its IP made, a VM its NIC): every PUT started (:meth:`_start_all`),
        then one wait over all of them, one list per round (:meth:`_wait_listed`). A refused PUT (a quota), a VM
        that failed (no capacity) or a wait cut short raises one typed error naming each index not made; what this
        call made for those indices is removed, newest kind first, each kind in bulk; the VMs that run are kept (a
        retry completes the node; a failed attempt's cleanup deletes them unless placement's ``keep_last_attempt``).
        Disks, and VMs that attach disks, are made one by one as :meth:`create` makes them; so are the indices
        whose VM an earlier attempt left stopped, failed or being deleted.

        :param specs: the instances wanted, distinct indices of one deployment's node
        :param deadline: a ``time.monotonic()`` limit on the waits, over ``create_timeout``
        """
        specs = self.checked_group(specs)
        if not specs:
            return []
        first = specs[0]
        if len(specs) == 1 or self._kind(first) != _VM or any(self._required_disks(s) for s in specs):
            return super().create_group(specs, deadline=deadline)
        plans: dict[int, _VmPlan] = {}
        for spec in specs:  # everything that can be refused before anything is made (sizes, images: read once)
            self.check_user_data(spec)
            plans[spec.index] = self._vm_plan(spec)
        deployment_id, node_name = first.deployment_id, first.node_name
        where = self._where(first)
        group = self.group_name(deployment_id)
        wanted = {spec.index: spec for spec in specs}
        made: dict[int, Resource] = {}
        failed: dict[int, str] = {}
        waiting: dict[int, str] = {}  # index -> name of a VM an earlier attempt started: waited for with the new ones
        for vm in self._vms(group, tag_selector(deployment_id, node_name)):
            index = int((vm.get("tags") or {}).get(TAG_INDEX, -1))
            if index not in wanted or index in waiting or index in made or index in failed:
                continue
            if self.vm_state(vm)[0] in (ResourceState.CREATING, ResourceState.RUNNING, ResourceState.PENDING):
                waiting[index] = vm["name"]
                continue
            try:  # stopped behind our back, failed, being deleted: as create handles it
                made[index] = self._create_vm(wanted[index], plans[index], deadline=deadline)
            except ResourceCreateError as err:
                failed[index] = err.message
        missing = [index for index in wanted if index not in made and index not in waiting and index not in failed]
        shared: UndoSteps = []  # the shared resources this call made: removed again if nothing of the node is left
        launched: dict[int, _Made] = {}  # what this call made per index: removed again for an index not made
        try:
            if missing:
                vms = self._launch_group(wanted, plans, missing, group, where, shared, launched, failed, deadline)
                waiting.update(vms)
            if waiting:
                self._settle_group(wanted, waiting, group, where, deadline, made, failed)
        except BaseException as err:  # a timeout, a refused list, the task killed: nothing half-made is left
            problems = self._cleanup_group(group, where, launched, [i for i in launched if i not in made], shared)
            if isinstance(err, ResourceTimeoutError):
                late = sorted(i for i in wanted if i not in made)
                cleanup = (f"cleanup also failed, delete the deployment to retry it: {'; '.join(problems)}"
                           if problems else "what was made for them has been removed")
                raise ResourceTimeoutError(
                    f"{err.message}; VM(s) {late} of node '{node_name}' not running by then ({cleanup}; the running "
                    f"ones {sorted(made)} are kept)", provider=PROVIDER, resource=where) from err
            raise
        if failed:
            problems = self._cleanup_group(group, where, launched, sorted(failed), shared)
            cleanup = (f"cleanup also failed, delete the deployment to retry it: {'; '.join(problems)}" if problems
                       else "what was made for them has been removed")
            raise group_create_error(node_name, failed, made, provider=PROVIDER, resource=where, what="VM",
                                     cleanup=cleanup)
        return [made[index] for index in sorted(made)]

    def _launch_group(self, wanted: Mapping[int, ResourceSpec], plans: Mapping[int, _VmPlan], missing: Sequence[int],
                      group: str, where: str, shared: UndoSteps, launched: dict[int, _Made], failed: dict[int, str],
                      deadline: float | None) -> dict[int, str]:
        """Ensure the node's shared resources once, then make the missing indices' IPs, NICs and VMs, each kind
        together; return the started VMs' names by index (what was refused is in ``failed``)."""
        first = wanted[missing[0]]
        if self._ensure_group(group, first.deployment_id):
            shared.append((f"resource group {group}", lambda: self._delete_group_if_empty(group)))
        subnet_id = self._ensure_subnet(group, first.deployment_id, shared, deadline)
        nsg_id = self._ensure_nsg(first, group, plans[first.index].rules, shared, deadline)
        names = {index: self.resource_name(wanted[index]) for index in missing}
        network = self.hook.network
        pip_ids = self._make_network(
            "public IP", network.public_ip_addresses, group, where, deadline, launched, failed,
            {index: (f"{names[index]}-pip", {"location": self.location, "tags": dict(wanted[index].tags),
                                             "sku": {"name": "Standard"},
                                             "properties": {"publicIPAllocationMethod": "Static"}})
             for index in missing if plans[index].public})
        nic_bodies = {}
        for index in missing:
            if index in failed:
                continue
            ip_conf: dict[str, Any] = {"subnet": {"id": subnet_id}, "privateIPAllocationMethod": "Dynamic"}
            if index in pip_ids:
                ip_conf["publicIPAddress"] = {"id": pip_ids[index]}
            nic_bodies[index] = (f"{names[index]}-nic", {
                "location": self.location, "tags": dict(wanted[index].tags), "properties": {
                    "ipConfigurations": [{"name": "ipconfig1", "properties": ip_conf}],
                    "networkSecurityGroup": {"id": nsg_id}}})
        nic_ids = self._make_network("NIC", network.network_interfaces, group, where, deadline, launched, failed,
                                     nic_bodies)
        operations = self.hook.compute.virtual_machines
        starts = {}
        for index, nic_id in nic_ids.items():
            body = self._vm_body(wanted[index], plans[index], names[index], nic_id, [])
            starts[index] = (f"creating virtual machine {names[index]}", operations.begin_create_or_update,
                             (group, names[index], body))
            launched.setdefault(index, []).append(("VM", operations, names[index]))
        log.info("Creating %d VM(s) of %s (size %s) in %s", len(starts), where, plans[missing[0]].size.name, group)
        self._note_refusals(self._start_all(starts), starts, launched, failed)
        return {index: names[index] for index in starts if index not in failed}

    def _make_network(self, kind: str, operations: Any, group: str, where: str, deadline: float | None,
                      launched: dict[int, _Made], failed: dict[int, str],
                      bodies: Mapping[int, tuple[str, dict[str, Any]]]) -> dict[int, str]:
        """Make one network resource per index, all started, then waited for together; return their ids by index."""
        starts = {index: (f"creating {kind} {name}", operations.begin_create_or_update, (group, name, body))
                  for index, (name, body) in bodies.items()}
        for index, (name, _) in bodies.items():  # before the start: a start whose answer was lost made it too
            launched.setdefault(index, []).append((kind, operations, name))
        self._note_refusals(self._start_all(starts), starts, launched, failed)
        started = {index: name for index, (name, _) in bodies.items() if index not in failed}

        def state(item: Mapping[str, Any] | None) -> str:
            return "not listed" if item is None else str((item.get("properties") or {}).get("provisioningState"))

        found = self._wait_listed(kind, group, where, lambda: operations.list(group), started.values(),
                                  lambda item: state(item) in _SETTLED, state, deadline=deadline)
        ids = {}
        for index, name in started.items():
            if state(found[name]) == "Succeeded":
                ids[index] = found[name]["id"]
            else:
                failed[index] = f"{kind} {name} went to provisioningState {state(found[name])}"
        return ids

    def _note_refusals(self, refused: Mapping[int, AzureApiError], starts: Mapping[int, tuple[str, Any, Any]],
                       launched: dict[int, _Made], failed: dict[int, str]) -> None:
        """Record ARM's refusals of starts as the reasons of their indices."""
        for index, err in refused.items():
            what = starts[index][0]
            hint = self._hint(err)
            # the same refusal reads the same for every index (one line for all in the error), the name aside
            failed[index] = err.message.removeprefix(f"{what}: ") + (f"; {hint}" if hint else "")
            if err.status_code is not None and 400 <= err.status_code < 500:
                launched[index].pop()  # refused outright: nothing was made to remove

    def _settle_group(self, wanted: Mapping[int, ResourceSpec], waiting: Mapping[int, str], group: str, where: str,
                      deadline: float | None, made: dict[int, Resource], failed: dict[int, str]) -> None:
        """Wait for the VMs together (one list of the group's VMs per round) until each runs or fails; sort them."""
        operations = self.hook.compute.virtual_machines
        seen: dict[str, dict[str, Any]] = {}

        def state(vm: Mapping[str, Any] | None) -> ResourceState:
            return ResourceState.PENDING if vm is None else self.vm_state(vm)[0]

        def keep_running() -> None:  # one describe (VMs, NICs, IPs) for all that run
            running = {index for index, name in waiting.items() if state(seen.get(name)) == ResourceState.RUNNING}
            if running:
                first = next(iter(wanted.values()))
                described = {r.index: r for r in self._describe(group, tag_selector(first.deployment_id,
                                                                                    first.node_name))
                             if r.attributes["kind"] == _VM}
                made.update((index, described[index]) for index in running if index in described)

        try:
            self._wait_listed("VM", group, where, lambda: operations.list(group, expand="instanceView"),
                              waiting.values(), lambda vm: state(vm) in (
                                  ResourceState.RUNNING, ResourceState.ERROR, ResourceState.STOPPED,
                                  ResourceState.DELETING),
                              lambda vm: "not listed" if vm is None else self.vm_state(vm)[1], deadline=deadline,
                              seen=seen)
        except ResourceTimeoutError:
            keep_running()  # the VMs that run by then are kept; the caller removes the others
            raise
        keep_running()
        for index, name in waiting.items():
            if index not in made:
                failed[index] = self._vm_failure(name, seen.get(name))

    def _vm_failure(self, name: str, vm: Mapping[str, Any] | None) -> str:
        """Say why a VM of a group is not running, from its instance view (its error status, with a hint)."""
        if vm is None:
            return f"VM {name} vanished while being made"
        native = self.vm_state(vm)[1]
        statuses = ((vm.get("properties") or {}).get("instanceView") or {}).get("statuses") or []
        error = next((st for st in statuses if str(st.get("level")) == "Error"), None)
        if error is None:
            return f"the VM went to {native}"
        code = str(error.get("code") or "").rsplit("/", 1)[-1]
        message = str(error.get("message") or error.get("displayStatus") or "")
        hint = self._hint(AzureApiError(message, code=code))
        return f"the VM went to {native}: {code}: {message}" + (f"; {hint}" if hint else "")

    def _cleanup_group(self, group: str, where: str, launched: Mapping[int, _Made], indices: Iterable[int],
                       shared: UndoSteps) -> list[str]:
        """Remove what a group create made for these indices, then its shared resources if nothing uses them.

        Newest kind first (VMs, NICs, public IPs: Azure refuses to delete a NIC in use), each kind deleted in bulk
        and waited for together, never within the attempt's deadline. Return what could not be removed (logged,
        never raised: the cause matters more).
        """
        by_kind: dict[str, tuple[Any, list[str]]] = {}
        for index in indices:
            for kind, operations, name in launched.get(index, ()):
                by_kind.setdefault(kind, (operations, []))[1].append(name)
        problems = []
        for kind in ("VM", "NIC", "public IP"):
            if kind in by_kind:
                operations, names = by_kind[kind]
                try:
                    self._delete_all(kind, operations, names, group, where)
                except BackendError as err:
                    log.warning("Cleanup of the %ss %s of %s failed: %s", kind, names, where, err)
                    problems.append(f"{kind}s {names}: {err.message}")
        return problems + run_undo(shared, (BackendError, WaitFailed), log)

    def _undo_on_failure(self, spec: ResourceSpec, label: str, undo: UndoSteps,
                         failed_prefix: str = "") -> contextlib.AbstractContextManager[None]:
        return undo_on_failure(PROVIDER, spec, label, undo, log, api_error=AzureApiError, hint=self._hint,
                               failed_prefix=failed_prefix)

    @staticmethod
    def _hint(err: AzureApiError) -> str:
        if err.code in _QUOTA_CODES and "quota" in err.message.lower():
            return "request a quota increase for the region (Portal > Subscriptions > Usage + quotas) or free cores"
        if err.code in ("AllocationFailed", "ZonalAllocationFailed", "SkuNotAvailable"):
            return "try another size (host.instance_type) or region, or retry later"
        return ""

    def _ensure_group(self, group: str, deployment_id: str) -> bool:
        """Make the deployment's resource group if it is ours and missing; return whether this call made it."""
        if self.resource_group:
            return False
        if self._call(f"checking resource group {group}", self.hook.resources.resource_groups.check_existence, group):
            return False
        self._call(f"creating resource group {group}", self.hook.resources.resource_groups.create_or_update, group,
                   {"location": self.location, "tags": {TAG_DEPLOYMENT: deployment_id}})
        log.info("Made resource group %s in %s", group, self.location)
        return True

    def _ensure_subnet(self, group: str, deployment_id: str, undo: UndoSteps, deadline: float | None) -> str:
        """Return the NICs' subnet id; a virtual network made here is an undo step (removed unless used)."""
        if self.subnet_id:
            return self.subnet_id
        name = azure_name(f"{deployment_id}-vnet", 64)
        vnet_id = self._arm_id(group, "Microsoft.Network/virtualNetworks", name)
        subnet_id = f"{vnet_id}/subnets/default"
        existing = self._list(f"listing virtual networks of {group}",
                              lambda: self.hook.network.virtual_networks.list(group))
        if any(v["id"].lower() == vnet_id.lower() for v in existing):
            return subnet_id
        what = f"creating virtual network {name}"
        poller = self._call(what, self.hook.network.virtual_networks.begin_create_or_update, group, name, {
            "location": self.location, "tags": {TAG_DEPLOYMENT: deployment_id},
            "properties": {"addressSpace": {"addressPrefixes": [self.address_space]},
                           "subnets": [{"name": "default", "properties": {
                               "addressPrefix": self.address_space.replace("/16", "/20")}}]}})
        undo.append((f"virtual network {vnet_id}", lambda: self._delete_vnet_if_unused(group, vnet_id)))
        self._wait_lro(what, poller, deadline=deadline)
        return subnet_id

    @staticmethod
    def _nsg_rules(rules: Iterable[Rule]) -> list[dict[str, Any]]:
        out = []
        for number, rule in enumerate(rules):
            protocol = {"tcp": "Tcp", "udp": "Udp", "icmp": "Icmp"}.get(rule.protocol, "*")
            ports = f"{rule.port}-{rule.port_end}" if rule.port_end and rule.port_end != rule.port else str(rule.port)
            out.append({"name": azure_name(f"in-{rule.protocol}-{ports}", 80), "properties": {
                "priority": 1000 + 10 * number, "direction": "Inbound", "access": "Allow", "protocol": protocol,
                "sourceAddressPrefix": "*" if rule.cidr == "0.0.0.0/0" else rule.cidr, "sourcePortRange": "*",
                "destinationAddressPrefix": "*", "destinationPortRange": ports}})
        return out

    def _nsg_name(self, deployment_id: str, node_name: str) -> str:
        return azure_name(f"{node_stem(deployment_id, node_name)}-nsg", 80)

    def _existing_vm(self, spec: ResourceSpec, group: str) -> dict[str, Any] | None:
        for vm in self._vms(group, spec.tags):
            state, native = self.vm_state(vm)
            if state == ResourceState.DELETING:
                self._wait_vm_gone(group, vm["name"])
                continue
            if state == ResourceState.ERROR:
                log.warning("VM %s of %s is %s: replacing it", vm["name"], self._where(spec), native)
                self._run(f"deleting failed VM {vm['name']}", self.hook.compute.virtual_machines.begin_delete,
                          group, vm["name"], delete=True)
                continue
            return vm
        return None

    def _wait_vm_gone(self, group: str, name: str) -> None:
        def present() -> bool:
            listed = self._list(f"listing VMs of {group}", lambda: self.hook.compute.virtual_machines.list(group))
            return any(v["name"] == name for v in listed)

        self._poll(f"deletion of VM {name}", present, lambda there: not there, resource=name, delete=True,
                   status=lambda _: "it still exists")

    def _get_vm(self, group: str, name: str) -> dict[str, Any]:
        return plain(self._call(f"reading VM {name}", self.hook.compute.virtual_machines.get, group, name,
                                 expand="instanceView"))

    def _wait_vm_running(self, group: str, name: str, deadline: float | None) -> dict[str, Any]:
        def failed(vm: Mapping[str, Any]) -> str | None:
            state, native = self.vm_state(vm)
            return native if state == ResourceState.ERROR else None

        return self._poll(f"VM {name} running", lambda: self._get_vm(group, name),
                          lambda vm: self.vm_state(vm)[0] == ResourceState.RUNNING, resource=name, deadline=deadline,
                          failed=failed, status=lambda vm: self.vm_state(vm)[1])

    def _vm_body(self, spec: ResourceSpec, plan: _VmPlan, name: str, nic_id: str,
                 data_disks: list[dict[str, Any]]) -> dict[str, Any]:
        user = self.admin_username
        os_disk: dict[str, Any] = {"name": f"{name}-osdisk", "createOption": "FromImage", "deleteOption": "Delete",
                                   "managedDisk": {"storageAccountType": self.os_disk_type}}
        if plan.os_disk_gb:
            os_disk["diskSizeGB"] = plan.os_disk_gb
        os_profile: dict[str, Any] = {
            "computerName": azure_name(f"{spec.node_name}-{spec.index}", 63).lower(),
            "adminUsername": user,
            "linuxConfiguration": {"disablePasswordAuthentication": True, "ssh": {"publicKeys": [
                {"path": f"/home/{user}/.ssh/authorized_keys", "keyData": plan.public_key}]}},
        }
        user_data = spec.user_data if spec.user_data is not None else spec.properties.get("user_data")
        if user_data:
            os_profile["customData"] = base64.b64encode(str(user_data).encode()).decode()
        return {
            "location": self.location,
            "tags": dict(spec.tags),
            "properties": {
                "hardwareProfile": {"vmSize": plan.size.name},
                "storageProfile": {"imageReference": plan.image, "osDisk": os_disk, "dataDisks": data_disks},
                "osProfile": os_profile,
                "networkProfile": {"networkInterfaces": [{"id": nic_id, "properties": {"primary": True}}]},
            },
        }

    def _required_disks(self, spec: ResourceSpec) -> list[str]:
        """Return the ids of the disks of the BlockStorage nodes this VM requires (same index)."""
        return [r.resource_id for r in required_resources(spec, PROVIDER, _DISK)]

    def _create_vm(self, spec: ResourceSpec, plan: _VmPlan, wait: bool = True,
                   deadline: float | None = None) -> Resource:
        group = self.group_name(spec.deployment_id)
        name = self.resource_name(spec)
        label = f"virtual machine {name}"
        undo: UndoSteps = []
        with self._undo_on_failure(spec, label, undo, failed_prefix="the VM went to "):
            vm = self._existing_vm(spec, group)
            if vm is None:
                if self._ensure_group(group, spec.deployment_id):
                    undo.append((f"resource group {group}", lambda: self._delete_group_if_empty(group)))
                subnet_id = self._ensure_subnet(group, spec.deployment_id, undo, deadline)
                nsg_id = self._ensure_nsg(spec, group, plan.rules, undo, deadline)
                pip_id = None
                if plan.public:
                    pip_id = self._put(undo, "Microsoft.Network/publicIPAddresses", group, f"{name}-pip",
                                       self.hook.network.public_ip_addresses,
                                       {"location": self.location, "tags": dict(spec.tags),
                                        "sku": {"name": "Standard"},
                                        "properties": {"publicIPAllocationMethod": "Static"}}, deadline)
                ip_conf: dict[str, Any] = {"subnet": {"id": subnet_id}, "privateIPAllocationMethod": "Dynamic"}
                if pip_id:
                    ip_conf["publicIPAddress"] = {"id": pip_id}
                nic_id = self._put(undo, "Microsoft.Network/networkInterfaces", group, f"{name}-nic",
                                   self.hook.network.network_interfaces,
                                   {"location": self.location, "tags": dict(spec.tags), "properties": {
                                       "ipConfigurations": [{"name": "ipconfig1", "properties": ip_conf}],
                                       "networkSecurityGroup": {"id": nsg_id}}}, deadline)
                data_disks = [{"lun": lun, "createOption": "Attach", "managedDisk": {"id": disk_id}}
                              for lun, disk_id in enumerate(self._required_disks(spec))]
                body = self._vm_body(spec, plan, name, nic_id, data_disks)
                log.info("Creating %s (size %s, image %s) in %s", label, plan.size.name, plan.image, group)
                poller = self._call(f"creating {label}", self.hook.compute.virtual_machines.begin_create_or_update,
                                    group, name, body)
                # the VM exists from here on: undo deletes it before its NIC (which Azure refuses otherwise)
                undo.append((label, lambda: self._run(
                    f"deleting {label}", self.hook.compute.virtual_machines.begin_delete, group, name,
                    delete=True)))
                if wait:  # else the caller waits (a deferrable trigger polling describe)
                    self._wait_lro(f"creating {label}", poller, deadline=deadline)
            elif not wait and self.vm_state(vm)[0] in (ResourceState.CREATING, ResourceState.RUNNING,
                                                       ResourceState.PENDING):
                name = vm["name"]
            else:
                state, native = self.vm_state(vm)
                if state == ResourceState.STOPPED:
                    log.info("%s is %s: starting it", label, native)
                    self._run(f"starting {label}", self.hook.compute.virtual_machines.begin_start, group, vm["name"],
                              deadline=deadline)
                name = vm["name"]
                self._attach_disks(group, name, self._required_disks(spec), deadline)
            if wait:
                self._wait_vm_running(group, name, deadline)
        (resource,) = [r for r in self.describe(spec.deployment_id, spec.node_name) if r.index == spec.index
                       and r.attributes["kind"] == _VM]
        return resource

    def _put(self, undo: UndoSteps, kind: str, group: str, name: str, operations: Any, body: dict[str, Any],
             deadline: float | None) -> str:
        """Create (or update) one network resource; register its deletion as an undo step; return its id."""
        what = f"{kind.split('/')[1][:-1]} {name}"
        poller = self._call(f"creating {what}", operations.begin_create_or_update, group, name, body)
        # registered before the wait: a wait cut short still removes what Azure goes on making
        undo.append((what, lambda: self._run(f"deleting {what}", operations.begin_delete, group, name,
                                             delete=True)))
        made = self._wait_lro(f"creating {what}", poller, deadline=deadline)
        return made["id"] if made else self._arm_id(group, kind, name)

    def _ensure_nsg(self, spec: ResourceSpec, group: str, rules: Iterable[Rule], undo: UndoSteps,
                    deadline: float | None) -> str:
        """Return the node's network security group (shared by its instances), making it if missing."""
        name = self._nsg_name(spec.deployment_id, spec.node_name)
        selector = tag_selector(spec.deployment_id, spec.node_name)
        for nsg in self._tagged(f"listing network security groups of {group}",
                                lambda: self.hook.network.network_security_groups.list(group), selector,
                                instance=False):
            return nsg["id"]
        what = f"creating network security group {name}"
        poller = self._call(what, self.hook.network.network_security_groups.begin_create_or_update, group, name,
                            {"location": self.location, "tags": selector,
                             "properties": {"securityRules": self._nsg_rules(rules)}})
        undo.append((f"network security group {name}",
                     lambda: self._delete_nsg_if_unused(group, name, spec.deployment_id, spec.node_name)))
        made = self._wait_lro(what, poller, deadline=deadline)
        return made["id"] if made else self._arm_id(group, "Microsoft.Network/networkSecurityGroups", name)

    def _attach_disks(self, group: str, vm_name: str, disk_ids: list[str], deadline: float | None) -> None:
        """Attach these disks to a VM that runs already (a PUT of the VM with more data disks)."""
        if not disk_ids:
            return
        vm = self._get_vm(group, vm_name)
        storage = vm["properties"]["storageProfile"]
        attached = {str(d["managedDisk"]["id"]).lower() for d in storage.get("dataDisks") or []}
        missing = [d for d in disk_ids if d.lower() not in attached]
        if not missing:
            return
        luns = {int(d["lun"]) for d in storage.get("dataDisks") or []}
        free = (n for n in range(64) if n not in luns)
        disks = list(storage.get("dataDisks") or [])
        disks += [{"lun": next(free), "createOption": "Attach", "managedDisk": {"id": d}} for d in missing]
        self._update_data_disks(group, vm, disks, deadline)

    def _update_data_disks(self, group: str, vm: dict[str, Any], disks: list[dict[str, Any]],
                           deadline: float | None = None) -> None:
        body = {"location": vm["location"], "tags": vm.get("tags") or {}, "properties": {
            key: vm["properties"][key] for key in ("hardwareProfile", "storageProfile", "osProfile", "networkProfile")
            if key in vm["properties"]}}
        body["properties"]["storageProfile"] = {**vm["properties"]["storageProfile"], "dataDisks": disks}
        self._run(f"updating the data disks of VM {vm['name']}",
                  self.hook.compute.virtual_machines.begin_create_or_update, group, vm["name"], body,
                  deadline=deadline)

    def _create_disk(self, spec: ResourceSpec, size_gb: int, deadline: float | None) -> Resource:
        group = self.group_name(spec.deployment_id)
        name = self.resource_name(spec)
        label = f"disk {name}"
        undo: UndoSteps = []
        with self._undo_on_failure(spec, label, undo):
            found = self._tagged(f"listing disks of {group}",
                                 lambda: self.hook.compute.disks.list_by_resource_group(group), spec.tags)
            disk = next((d for d in found if d["properties"].get("provisioningState") not in ("Failed", "Deleting")),
                        None)
            if disk is None:
                if self._ensure_group(group, spec.deployment_id):
                    undo.append((f"resource group {group}", lambda: self._delete_group_if_empty(group)))
                sku = str(spec.properties.get("type") or self.disk_sku)
                poller = self._call(f"creating {label}", self.hook.compute.disks.begin_create_or_update, group, name,
                                    {"location": self.location, "tags": dict(spec.tags), "sku": {"name": sku},
                                     "properties": {"creationData": {"createOption": "Empty"},
                                                    "diskSizeGB": size_gb}})
                undo.append((label, lambda: self._run(f"deleting {label}", self.hook.compute.disks.begin_delete,
                                                      group, name, delete=True)))
                self._wait_lro(f"creating {label}", poller, deadline=deadline)
            for vm in required_resources(spec, PROVIDER, _VM):
                self._attach_disks(vm.attributes["resource_group"], vm.attributes["name"],
                                   [self._arm_id(group, "Microsoft.Compute/disks", name)], deadline)
        (resource,) = [r for r in self.describe(spec.deployment_id, spec.node_name) if r.index == spec.index
                       and r.attributes["kind"] == _DISK]
        return resource

    # ---------------------------------------------------------------- delete
    def _delete_group_if_empty(self, group: str) -> None:
        left = self._list(f"listing resources of {group}",
                          lambda: self.hook.resources.resources.list_by_resource_group(group))
        if not left:
            self._run(f"deleting resource group {group}", self.hook.resources.resource_groups.begin_delete, group,
                      delete=True)

    def _delete_vnet_if_unused(self, group: str, vnet_id: str) -> None:
        nics = self._list(f"listing NICs of {group}", lambda: self.hook.network.network_interfaces.list(group))
        if not nics:
            self._run(f"deleting virtual network {vnet_id}", self.hook.network.virtual_networks.begin_delete, group,
                      vnet_id.rsplit("/", 1)[1], delete=True)

    def _delete_nsg_if_unused(self, group: str, name: str, deployment_id: str, node_name: str) -> None:
        if not self._vms(group, tag_selector(deployment_id, node_name)):
            self._run(f"deleting network security group {name}",
                      self.hook.network.network_security_groups.begin_delete, group, name, delete=True)

    def delete(self, deployment_id: str, node_name: str | None = None, index: int | None = None) -> list[Resource]:
        """Delete the VMs, disks and network resources found by tags; return the VMs and disks deleted.

        Each kind goes in bulk: every deletion begun, then one wait for all of them (one list per round), VMs first
        (their NICs and disks are in use until they are gone). Deleting a whole deployment also deletes its
        resource group, unless a group was configured.

        :param deployment_id: the deployment's id
        :param node_name: only this node's resources
        :param index: only this instance
        """
        group = self.group_name(deployment_id)
        where = "/".join(str(p) for p in (deployment_id, node_name, index) if p is not None)
        selector = tag_selector(deployment_id, node_name, index)
        targets = self._describe(group, selector)
        compute, network = self.hook.compute, self.hook.network
        self._delete_all("VM", compute.virtual_machines,
                         [r.attributes["name"] for r in targets if r.attributes["kind"] == _VM], group, where)
        whole = node_name is None
        if whole and not self.resource_group:
            if self._call(f"checking resource group {group}", self.hook.resources.resource_groups.check_existence,
                          group):
                # what is left (NICs, IPs, groups, disks, network) goes with the group
                self._run(f"deleting resource group {group}", self.hook.resources.resource_groups.begin_delete, group,
                          delete=True)
            return [dataclasses.replace(r, state=ResourceState.DELETED) for r in targets]
        sweeps = ((network.network_interfaces, "NIC"), (network.public_ip_addresses, "public IP"))
        for operations, what in sweeps:  # NICs before the IPs they hold
            found = self._tagged(f"listing {what}s of {group}", lambda o=operations: o.list(group), selector)
            self._delete_all(what, operations, [item["name"] for item in found], group, where)
        disks = [r for r in targets if r.attributes["kind"] == _DISK]
        for disk in disks:
            if disk.attributes.get("attached_to"):  # attached to a VM that stays: detach it first
                vm_name = str(disk.attributes["attached_to"]).rsplit("/", 1)[1]
                vm_group = str(disk.attributes["attached_to"]).split("/")[4]
                vm = self._get_vm(vm_group, vm_name)
                kept = [d for d in vm["properties"]["storageProfile"].get("dataDisks") or []
                        if str(d["managedDisk"]["id"]).lower() != disk.resource_id.lower()]
                self._update_data_disks(vm_group, vm, kept)
        self._delete_all("disk", compute.disks, [d.attributes["name"] for d in disks], group, where,
                         lister=lambda: compute.disks.list_by_resource_group(group))
        group_selector = tag_selector(deployment_id, node_name)
        nsgs = self._tagged(f"listing network security groups of {group}",
                            lambda: network.network_security_groups.list(group), group_selector, instance=False)
        if nsgs:
            left = {(vm.get("tags") or {}).get(TAG_NODE) for vm in self._vms(group, group_selector)}
            self._delete_all("network security group", network.network_security_groups,
                             [nsg["name"] for nsg in nsgs if (nsg.get("tags") or {}).get(TAG_NODE) not in left],
                             group, where)
        if whole:
            vnets = self._tagged(f"listing virtual networks of {group}", lambda: network.virtual_networks.list(group),
                                 {TAG_DEPLOYMENT: deployment_id}, instance=False)
            self._delete_all("virtual network", network.virtual_networks, [v["name"] for v in vnets], group, where)
        return [dataclasses.replace(r, state=ResourceState.DELETED) for r in targets]
