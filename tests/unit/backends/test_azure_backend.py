"""The Azure backend: the backend contract and the faults of a real cloud, against the stand-in Azure.

azure-identity and the azure-mgmt clients talk real HTTPS to :mod:`unit.backends.azure_fixtures`
(Entra ID token endpoint and ARM stand-ins on loopback, a self-signed certificate trusted through the
connection's ``connection_verify`` extra); the credential is the real ``ClientSecretCredential`` built
from the Airflow connection. The probe reads the stand-in's state, never the backend.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator

import pytest
from azure.core.exceptions import HttpResponseError
from unit.backends.azure_fixtures import (
    CLIENT_ID,
    CLIENT_SECRET,
    LOCATION,
    SUBSCRIPTION_ID,
    TENANT_ID,
    AzureStandIn,
    running_stand_in,
)
from unit.backends.contract import BackendContract, Probe, SpecFactory

from airflow_cloud_paas.backends import get_backend
from airflow_cloud_paas.backends.azure import AzureBackend
from airflow_cloud_paas.backends.base import TAG_DEPLOYMENT, TAG_INDEX, TAG_NODE, Resource, ResourceSpec, ResourceState
from airflow_cloud_paas.exceptions import BackendError, ResourceCreateError, ResourceTimeoutError, UnsupportedNodeError
from airflow_cloud_paas.hooks.azure import AzureAuthenticationError, arm_operation

CONN_ID = "azure_test"
SSH_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeKeyForTheStandInOnly cloud-paas@test"
COMPUTE_HIERARCHY = ("tosca.nodes.indigo.Compute", "tosca.nodes.Compute", "tosca.nodes.Root")
BLOCK_HIERARCHY = ("tosca.nodes.BlockStorage", "tosca.nodes.Root")
HOST = {"num_cpus": 1, "mem_size": "1 GB"}
UBUNTU = {"type": "linux", "distribution": "ubuntu", "version": "22.04"}
PUBLIC_HTTP = {"network_name": "PUBLIC", "ports": {"http": {"protocol": "tcp", "source": 8080}}}


def compute(deployment_id: str, node_name: str, index: int = 0, *, host: dict | None = None,
            os: dict | None = None, endpoint: dict | None = None, **kw) -> ResourceSpec:
    capabilities = {"host": host or HOST, "os": os or UBUNTU}
    if endpoint:
        capabilities["endpoint"] = endpoint
    return ResourceSpec(deployment_id, node_name, index, "tosca.nodes.indigo.Compute", COMPUTE_HIERARCHY,
                        capabilities=capabilities, **kw)


def block(deployment_id: str, node_name: str, index: int = 0, size: str = "10 GB", **kw) -> ResourceSpec:
    return ResourceSpec(deployment_id, node_name, index, "tosca.nodes.BlockStorage", BLOCK_HIERARCHY,
                        properties={"size": size}, **kw)


class AzureSpecs(SpecFactory):
    def compute(self, deployment_id: str, node_name: str, index: int = 0) -> ResourceSpec:
        return compute(deployment_id, node_name, index)

    def service(self, deployment_id: str, node_name: str, index: int = 0) -> ResourceSpec:
        # a public web server: VM + NIC + public IP + the node's network security group with port 8080
        return compute(deployment_id, node_name, index, endpoint=PUBLIC_HTTP)

    def failing(self, deployment_id: str, node_name: str, index: int = 0) -> ResourceSpec:
        # the stand-in fails allocation of this size (AllocationFailed), as a region out of capacity does
        return compute(deployment_id, node_name, index, host={"instance_type": "Standard_F2s_v2"},
                       endpoint=PUBLIC_HTTP)


class StandInProbe(Probe):
    """Reads the stand-in Azure's state, not the backend."""

    def __init__(self, cloud: AzureStandIn, backend: AzureBackend) -> None:
        self.cloud = cloud
        self.backend = backend

    def exists(self, resource: Resource) -> bool:
        found = self.cloud.get(resource.resource_id)
        if found is None or found.get("_gone_at") is not None:
            return False
        if resource.attributes["kind"] == "disk":
            return True
        return found["properties"]["provisioningState"] == "Succeeded" and found.get("_power") == "running"

    def count(self, deployment_id: str) -> int:
        # everything of the deployment but its virtual network, which outlives a scale to 0 on purpose
        # (delete(deployment) removes it with the group: the other tests check cloud.resources == {})
        found = self.cloud.of_deployment(deployment_id, self.backend.group_name(deployment_id))
        return len([r for r in found if "/virtualnetworks/" not in r.lower()])

    def tags(self, resource: Resource) -> dict[str, str]:
        return dict(self.cloud.get(resource.resource_id)["tags"])

    def stop_behind_backend(self, resource: Resource) -> None:
        self.cloud.deallocate_behind_backend(resource.resource_id)

    @contextlib.contextmanager
    def slow_boot(self, seconds: float) -> Iterator[None]:
        before, self.cloud.build_seconds = self.cloud.build_seconds, seconds  # a VM stays Creating that long
        try:
            yield
        finally:
            self.cloud.build_seconds = before


def set_connection(monkeypatch: pytest.MonkeyPatch, cloud: AzureStandIn, conn_id: str = CONN_ID, **fields) -> None:
    """Define the Airflow connection as deployments do: AIRFLOW_CONN_<ID> holding JSON."""
    extra = {"tenantId": TENANT_ID, "subscriptionId": SUBSCRIPTION_ID, "location": LOCATION,
             # the stand-in is a private cloud to the SDK: its own authority and ARM endpoint, its own CA
             "authority_host": cloud.base, "resource_manager_url": cloud.base,
             "connection_verify": str(cloud.ca_bundle)}
    conn = {"conn_type": "azure", "login": CLIENT_ID, "password": CLIENT_SECRET, "extra": extra, **fields}
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(conn))


def make_backend(conn_id: str = CONN_ID, **options) -> AzureBackend:
    return AzureBackend(conn_id, ssh_public_key=SSH_KEY, create_timeout=10, delete_timeout=10, poll_interval=0.01,
                        **options)


@pytest.fixture
def cloud(monkeypatch: pytest.MonkeyPatch) -> Iterator[AzureStandIn]:
    with running_stand_in() as stand_in:
        stand_in.allocation_failures.add("Standard_F2s_v2")
        set_connection(monkeypatch, stand_in)
        yield stand_in


@pytest.fixture
def azure(cloud: AzureStandIn) -> AzureBackend:
    return make_backend()


class TestAzureBackendContract(BackendContract):
    @pytest.fixture
    def backend(self, azure: AzureBackend) -> AzureBackend:
        return azure

    @pytest.fixture
    def specs(self) -> SpecFactory:
        return AzureSpecs()

    @pytest.fixture
    def probe(self, cloud: AzureStandIn, azure: AzureBackend) -> Probe:
        return StandInProbe(cloud, azure)


# ---------------------------------------------------------------------- mapping TOSCA -> Azure
def test_registry_builds_it_by_name(cloud: AzureStandIn) -> None:
    backend = get_backend("azure", conn_id=CONN_ID)
    assert isinstance(backend, AzureBackend)
    assert backend.hook.conn_id == CONN_ID
    assert backend.hook.subscription_id == SUBSCRIPTION_ID


def test_smallest_fitting_size_and_mapped_image(azure: AzureBackend, cloud: AzureStandIn) -> None:
    resource = azure.create(compute("dep", "big", host={"num_cpus": 2, "mem_size": "6 GB", "disk_size": "50 GB"},
                                    os={"distribution": "debian", "version": "12"}))
    vm = cloud.get(resource.resource_id)
    assert vm["properties"]["hardwareProfile"]["vmSize"] == "Standard_D2s_v5"
    assert vm["properties"]["storageProfile"]["imageReference"] == {
        "publisher": "Debian", "offer": "debian-12", "sku": "12-gen2", "version": "latest"}
    assert vm["properties"]["storageProfile"]["osDisk"]["diskSizeGB"] == 50
    ssh = vm["properties"]["osProfile"]["linuxConfiguration"]
    assert ssh["disablePasswordAuthentication"] is True and ssh["ssh"]["publicKeys"][0]["keyData"] == SSH_KEY
    assert resource.attributes["vm_size"] == "Standard_D2s_v5" and resource.attributes["private_ip"]
    assert resource.attributes["public_ip"] is None and resource.attributes["resource_group"] == "cloud-paas-dep"
    assert cloud.find("publicIPAddresses") == []
    default = azure.create(compute("dep", "plain", os={"type": "linux"}))
    assert cloud.get(default.resource_id)["properties"]["storageProfile"]["imageReference"]["offer"] == (
        "0001-com-ubuntu-server-jammy")
    gpu = azure.create(compute("dep", "gpu", host={"num_cpus": 1, "num_gpus": 1, "gpu_model": "a100"}))
    assert gpu.attributes["vm_size"] == "Standard_NC24ads_A100_v4"
    azure.delete("dep")
    assert cloud.of_deployment("dep", "cloud-paas-dep") == []
    assert cloud.groups == {}


def test_public_endpoint_gets_rules_and_a_tagged_public_ip(azure: AzureBackend, cloud: AzureStandIn) -> None:
    resource = azure.create(compute("dep", "web", endpoint=PUBLIC_HTTP))
    (pip,) = cloud.find("publicIPAddresses")
    assert resource.attributes["public_ip"] == pip["properties"]["ipAddress"]
    assert pip["tags"] == {TAG_DEPLOYMENT: "dep", TAG_NODE: "web", TAG_INDEX: "0"}
    (nic,) = cloud.find("networkInterfaces")
    assert nic["properties"]["virtualMachine"]["id"] == resource.resource_id
    (nsg,) = cloud.find("networkSecurityGroups")
    assert nic["properties"]["networkSecurityGroup"]["id"] == nsg["id"]
    assert nsg["tags"] == {TAG_DEPLOYMENT: "dep", TAG_NODE: "web"}
    (rule,) = nsg["properties"]["securityRules"]
    assert {k: rule["properties"][k] for k in ("direction", "access", "protocol", "destinationPortRange",
                                                "sourceAddressPrefix")} == {
        "direction": "Inbound", "access": "Allow", "protocol": "Tcp", "destinationPortRange": "8080",
        "sourceAddressPrefix": "*"}
    # a second instance shares the node's group and gets its own public IP
    azure.create(compute("dep", "web", 1, endpoint=PUBLIC_HTTP))
    assert len(cloud.find("networkSecurityGroups")) == 1 and len(cloud.find("publicIPAddresses")) == 2
    # deleting one instance keeps the group for the other; deleting the node removes it, not the network
    azure.delete("dep", "web", 1)
    assert len(cloud.find("networkSecurityGroups")) == 1 and len(cloud.find("publicIPAddresses")) == 1
    assert len(cloud.find("networkInterfaces")) == 1 and len(cloud.find("disks")) == 1  # the OS disk of #0
    azure.delete("dep", "web")
    assert [r["type"] for r in cloud.resources.values()] == ["Microsoft.Network/virtualNetworks"]
    azure.delete("dep")
    assert cloud.resources == {} and cloud.groups == {}


def test_block_storage_is_a_managed_disk_attached_to_its_vm(azure: AzureBackend, cloud: AzureStandIn) -> None:
    disk = azure.create(block("dep", "data", size="1.5 GB"))
    assert disk.state == ResourceState.RUNNING and disk.attributes["size_gb"] == 2
    assert cloud.get(disk.resource_id)["tags"][TAG_NODE] == "data"
    vm = azure.create(compute("dep", "vm", requirements={"local_storage": (disk,)}))
    stored = cloud.get(disk.resource_id)
    assert stored["managedBy"] == vm.resource_id and stored["properties"]["diskState"] == "Attached"
    assert vm.attributes["data_disks"] == [disk.resource_id]
    assert [(r.node_name, r.attributes["kind"]) for r in azure.describe("dep")] == [("data", "disk"), ("vm", "vm")]
    # deleting only the disk node detaches it from the VM that stays
    assert [r.node_name for r in azure.delete("dep", "data")] == ["data"]
    assert cloud.get(disk.resource_id) is None
    assert cloud.get(vm.resource_id)["properties"]["storageProfile"]["dataDisks"] == []
    azure.delete("dep")
    assert cloud.resources == {}


def test_disk_requiring_a_vm_is_attached_to_it(azure: AzureBackend, cloud: AzureStandIn) -> None:
    vm = azure.create(compute("dep", "vm"))
    disk = azure.create(block("dep", "data", requirements={"host": (vm,)}))
    assert disk.attributes["attached_to"] == vm.resource_id
    assert azure.create(block("dep", "data", requirements={"host": (vm,)})).resource_id == disk.resource_id
    assert sorted(r.attributes["kind"] for r in azure.delete("dep")) == ["disk", "vm"]
    assert cloud.resources == {} and cloud.groups == {}


def test_configured_resource_group_is_filtered_by_tags_and_kept(cloud: AzureStandIn) -> None:
    shared = make_backend()
    with cloud.lock:  # an existing group holding someone else's VM network
        cloud.groups["shared-rg"] = {"id": f"/subscriptions/{SUBSCRIPTION_ID}/resourceGroups/shared-rg",
                                     "name": "shared-rg", "location": LOCATION, "tags": {},
                                     "properties": {"provisioningState": "Succeeded"}}
    backend = make_backend(resource_group="shared-rg")
    one = backend.create(compute("dep-a", "vm"))
    two = backend.create(compute("dep-b", "vm"))
    assert one.attributes["resource_group"] == two.attributes["resource_group"] == "shared-rg"
    assert [r.resource_id for r in backend.describe("dep-a")] == [one.resource_id]
    assert [r.resource_id for r in backend.delete("dep-a")] == [one.resource_id]
    assert "shared-rg" in cloud.groups and cloud.get(two.resource_id) is not None
    assert all(r["tags"].get(TAG_DEPLOYMENT) != "dep-a" for r in cloud.resources.values())
    backend.delete("dep-b")
    assert cloud.resources == {} and "shared-rg" in cloud.groups
    assert shared.describe("dep-a") == []


# ---------------------------------------------------------------------- check: nothing is made
def requests_that_change(cloud: AzureStandIn) -> list[tuple[str, str]]:
    return [(m, p) for m, p in cloud.requests if m not in ("GET", "HEAD") and "/oauth2/" not in p]


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        (compute("dep", "n", host={"instance_type": "Standard_M416ms_v2"}), "is not offered"),
        (compute("dep", "n", host={"num_cpus": 64, "mem_size": "1 TB"}), "no size offers 64 CPUs"),
        (compute("dep", "n", host={"num_gpus": 1, "gpu_model": "H100"}), "1 GPUs (H100)"),
        (compute("dep", "n", os={"image": "Canonical:no-such-offer:22_04-lts"}), "not found in westeurope"),
        (compute("dep", "n", os={"image": "azr://Canonical/0001-com-ubuntu-server-jammy/22_04-lts-gen2/1.0"}),
         "22_04-lts-gen2:1.0 not found"),
        (compute("dep", "n", os={"distribution": "ubuntu", "version": "18.04"}), "no image for os ubuntu 18.04"),
        (compute("dep", "n", os={"distribution": "almalinux", "version": "9"}), "almalinux-x86_64:9-gen2:latest"),
        (compute("dep", "n", os={"distribution": "gentoo"}), "no image for os gentoo"),
        (compute("dep", "n", os={"type": "windows"}), "needs an explicit image"),
        (block("dep", "n", size=""), "has no 'size'"),
        (block("dep", "n", size="ten gigs"), "not a size"),
    ],
    ids=["size-not-offered", "nothing-fits", "no-gpu-model", "image-not-found", "version-not-found",
         "unmapped-version", "mapped-but-absent", "unmapped-distribution", "windows", "no-size", "bad-size"],
)
def test_what_cannot_be_honoured_fails_before_anything_is_made(
    azure: AzureBackend, cloud: AzureStandIn, spec: ResourceSpec, fragment: str
) -> None:
    with pytest.raises(UnsupportedNodeError) as err:
        azure.check(spec)
    assert err.value.provider == "azure" and "dep/n" in str(err.value)
    assert fragment in str(err.value)
    with pytest.raises(UnsupportedNodeError):
        azure.create(spec)
    assert requests_that_change(cloud) == []
    assert cloud.resources == {} and cloud.groups == {}


def test_a_vm_needs_an_ssh_key(cloud: AzureStandIn) -> None:
    backend = AzureBackend(CONN_ID, poll_interval=0.01)
    with pytest.raises(UnsupportedNodeError, match="needs an SSH public key"):
        backend.check(compute("dep", "n"))
    keyed = compute("dep", "n", os={**UBUNTU, "credential": {"user": "x", "token_type": "public_key",
                                                             "token": SSH_KEY}})
    backend.check(keyed)


def test_sizes_and_images_are_read_once(azure: AzureBackend, cloud: AzureStandIn) -> None:
    for index in range(3):
        azure.check(compute("dep", "n", index))
    reads = [p for m, p in cloud.requests if m == "GET" and p.endswith(("/vmSizes", "/versions"))]
    assert [p.rsplit("/", 1)[1] for p in reads] == ["vmSizes", "versions"]


# ---------------------------------------------------------------------- faults of a real cloud
def test_bad_secret_names_the_connection_and_hides_the_secret(
    cloud: AzureStandIn, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = "Wr0ng-but-secret.client~secret"
    set_connection(monkeypatch, cloud, password=wrong)
    caplog.set_level(logging.DEBUG)
    with pytest.raises(AzureAuthenticationError) as err:
        make_backend().check(compute("dep", "n"))
    assert isinstance(err.value, BackendError) and err.value.provider == "azure"
    assert CONN_ID in str(err.value) and "AADSTS7000215" in str(err.value)
    assert wrong not in str(err.value) and wrong not in caplog.text
    assert err.value.__cause__ is None
    assert [m for m, p in cloud.requests if "/subscriptions/" in p] == []


def test_missing_subscription_is_a_configuration_error(cloud: AzureStandIn, monkeypatch: pytest.MonkeyPatch) -> None:
    set_connection(monkeypatch, cloud, extra={"tenantId": TENANT_ID, "location": LOCATION})
    with pytest.raises(BackendError, match="no 'subscriptionId'"):
        make_backend().check(compute("dep", "n"))


def test_quota_exceeded_names_the_vm_and_leaves_nothing(azure: AzureBackend, cloud: AzureStandIn) -> None:
    first = azure.create(compute("dep", "a", endpoint=PUBLIC_HTTP))
    made_before = cloud.of_deployment("dep", "cloud-paas-dep")
    cloud.quota_cores = 2
    with pytest.raises(ResourceCreateError) as err:
        azure.create(compute("dep", "b", host={"num_cpus": 2}, endpoint=PUBLIC_HTTP))
    assert err.value.provider == "azure"
    assert err.value.resource == "virtual machine dep-b-0"
    assert "HTTP 409 OperationNotAllowed" in str(err.value) and "Total Regional Cores quota" in str(err.value)
    assert "request a quota increase" in str(err.value) and "has been removed" in str(err.value)
    # b's NSG, public IP and NIC, made before the refused VM, are gone again; a's things are untouched
    assert cloud.of_deployment("dep", "cloud-paas-dep") == made_before
    assert [r.resource_id for r in azure.describe("dep")] == [first.resource_id]
    azure.delete("dep")


def test_quota_on_the_first_vm_leaves_no_group_behind(azure: AzureBackend, cloud: AzureStandIn) -> None:
    cloud.quota_cores = 0
    with pytest.raises(ResourceCreateError, match="OperationNotAllowed"):
        azure.create(compute("dep", "a", endpoint=PUBLIC_HTTP))
    assert cloud.resources == {} and cloud.groups == {}


def test_allocation_failure_removes_the_failed_vm_and_its_parts(azure: AzureBackend, cloud: AzureStandIn) -> None:
    with pytest.raises(ResourceCreateError) as err:
        azure.create(AzureSpecs().failing("dep", "bad"))
    assert err.value.resource == "virtual machine dep-bad-0"
    assert "AllocationFailed" in str(err.value) and "try another size" in str(err.value)
    assert cloud.resources == {} and cloud.groups == {}
    assert any(m == "DELETE" and "/virtualMachines/" in p for m, p in cloud.requests), "no VM was ever made"


def test_vm_left_failed_by_an_earlier_attempt_is_replaced(azure: AzureBackend, cloud: AzureStandIn) -> None:
    first = azure.create(compute("dep", "vm"))
    with cloud.lock:  # the platform lost it: provisioning Failed
        cloud.resources[first.resource_id.lower()]["properties"]["provisioningState"] = "Failed"
    assert azure.describe("dep")[0].state == ResourceState.ERROR
    again = azure.create(compute("dep", "vm"))
    assert again.state == ResourceState.RUNNING
    assert cloud.get(again.resource_id)["properties"]["vmId"] != "" and len(cloud.find("virtualMachines")) == 1
    assert any(m == "DELETE" and "/virtualMachines/" in p for m, p in cloud.requests)
    azure.delete("dep")


def test_a_new_backend_finds_what_a_crashed_attempt_made(cloud: AzureStandIn) -> None:
    made = make_backend().create(compute("dep", "web", endpoint=PUBLIC_HTTP))
    again = make_backend().create(compute("dep", "web", endpoint=PUBLIC_HTTP))
    assert again.resource_id == made.resource_id
    assert [len(cloud.find(k)) for k in ("virtualMachines", "publicIPAddresses", "networkSecurityGroups")] == [1, 1, 1]
    assert [r.resource_id for r in make_backend().delete("dep")] == [made.resource_id]
    assert cloud.resources == {} and cloud.groups == {}


def test_orphans_without_a_vm_are_found_by_tags(cloud: AzureStandIn) -> None:
    backend = make_backend(resource_group="kept")
    with cloud.lock:
        cloud.groups["kept"] = {"id": f"/subscriptions/{SUBSCRIPTION_ID}/resourceGroups/kept", "name": "kept",
                                "location": LOCATION, "tags": {}, "properties": {"provisioningState": "Succeeded"}}
    backend.create(compute("dep", "web", endpoint=PUBLIC_HTTP))
    with cloud.lock:  # the VM vanished (deleted in the portal) but its NIC, IP and NSG stay behind
        (vm,) = cloud.find("virtualMachines")
        cloud.resources[vm["id"].lower()]["_gone_at"] = 0
    assert backend.describe("dep") == []
    assert {r["type"].split("/")[1] for r in cloud.resources.values()} == {
        "networkInterfaces", "publicIPAddresses", "networkSecurityGroups", "virtualNetworks"}
    assert backend.delete("dep") == []
    assert cloud.resources == {} and "kept" in cloud.groups


def test_states_map_power_and_provisioning(azure: AzureBackend) -> None:
    def vm(provisioning: str, *codes: str) -> dict:
        return {"properties": {"provisioningState": provisioning,
                               "instanceView": {"statuses": [{"code": c} for c in codes]}}}

    assert azure.vm_state(vm("Creating", "ProvisioningState/creating"))[0] == ResourceState.CREATING
    assert azure.vm_state(vm("Succeeded", "ProvisioningState/succeeded", "PowerState/running"))[0] == (
        ResourceState.RUNNING)
    assert azure.vm_state(vm("Succeeded", "PowerState/deallocated")) == (ResourceState.STOPPED,
                                                                       "PowerState/deallocated")
    assert azure.vm_state(vm("Failed", "PowerState/running"))[0] == ResourceState.ERROR
    assert azure.vm_state(vm("Deleting", "PowerState/running"))[0] == ResourceState.DELETING
    assert azure.normalize_state("Unattached") == ResourceState.RUNNING
    assert azure.normalize_state("PowerState/starting") == ResourceState.CREATING


def test_user_data_is_the_vms_custom_data(azure: AzureBackend, cloud: AzureStandIn) -> None:
    import base64

    user_data = "#cloud-config\nruncmd:\n- [touch, /tmp/configured]\n"
    resource = azure.create(compute("dep", "vm", user_data=user_data))
    custom = cloud.get(resource.resource_id)["properties"]["osProfile"]["customData"]
    assert base64.b64decode(custom).decode() == user_data


# ---------------------------------------------------------------------- a node's VMs together
def calls_since(backend: AzureBackend, before: dict[str, int]) -> dict[str, int]:
    return {op: n - before.get(op, 0) for op, n in backend.api_calls().items() if n - before.get(op, 0)}


def group_specs(deployment_id: str, node_name: str, indices, **kw) -> list[ResourceSpec]:
    return [compute(deployment_id, node_name, index, **kw) for index in indices]


def names_of(cloud: AzureStandIn, kind: str) -> set[str]:
    return {r["name"] for r in cloud.find(kind) if r.get("_gone_at") is None}


def puts_of(cloud: AzureStandIn, kind: str, since: int = 0) -> list[str]:
    return sorted(p.rsplit("/", 1)[1] for m, p in cloud.requests[since:] if m == "PUT" and f"/{kind}/" in p)


@pytest.mark.parametrize(
    ("method", "url", "operation"),
    [("PUT", "/subscriptions/s/resourceGroups/g/providers/Microsoft.Compute/virtualMachines/vm-1",
      "virtualMachines.createOrUpdate"),
     ("GET", "/subscriptions/s/resourceGroups/g/providers/Microsoft.Compute/virtualMachines?$expand=instanceView",
      "virtualMachines.list"),
     ("POST", "/subscriptions/s/resourceGroups/g/providers/Microsoft.Compute/virtualMachines/vm-1/start",
      "virtualMachines.start"),
     ("GET", "/subscriptions/s/providers/Microsoft.Network/locations/westeurope/operations/42", "operations.get"),
     ("GET", "/subscriptions/s/operationresults/42", "operations.get"),
     ("HEAD", "/subscriptions/s/resourcegroups/g", "resourceGroups.checkExistence"),
     ("GET", "/subscriptions/s/resourcegroups/g/resources", "resources.list")],
)
def test_each_arm_request_is_counted_as_its_operation(method: str, url: str, operation: str) -> None:
    assert arm_operation(method, f"https://management.azure.com{url}") == operation


def test_group_is_made_kind_by_kind_and_deleted_in_bulk(azure: AzureBackend, cloud: AzureStandIn) -> None:
    cloud.build_seconds = cloud.resource_seconds = cloud.delete_seconds = 0  # each wait is one round
    before = azure.api_calls()
    made = azure.create_group([AzureSpecs().service("dep", "wn", i) for i in (5, 3, 1, 0, 2, 4)])
    calls = calls_since(azure, before)
    assert [r.index for r in made] == list(range(6)) and {r.state for r in made} == {ResourceState.RUNNING}
    assert all(r.attributes["public_ip"] and r.attributes["private_ip"] for r in made)
    # Azure has no bulk PUT of plain VMs: one PUT per index and kind, all started before any is waited for
    for kind in ("virtualMachines", "networkInterfaces", "publicIPAddresses"):
        assert calls[f"{kind}.createOrUpdate"] == 6, calls
    # the node's shared resources are ensured once, before the launch
    for kind in ("resourceGroups", "virtualNetworks", "networkSecurityGroups"):
        assert calls[f"{kind}.createOrUpdate"] == 1, calls
    # the waits are one list per round for all (find + one round + describe), not one status poll per resource;
    # the only status polls are the shared network's and group's
    assert calls["virtualMachines.list"] == 3 and calls["networkInterfaces.list"] == 2, calls
    assert calls.get("operations.get", 0) <= 2 and "virtualMachines.get" not in calls, calls
    assert len(names_of(cloud, "virtualMachines")) == 6 and len(names_of(cloud, "networkSecurityGroups")) == 1
    (nsg,) = cloud.find("networkSecurityGroups")
    assert {n["properties"]["networkSecurityGroup"]["id"] for n in cloud.find("networkInterfaces")} == {nsg["id"]}

    before = azure.api_calls()
    deleted = azure.delete("dep", "wn")
    calls = calls_since(azure, before)
    assert sorted(r.index for r in deleted) == list(range(6))
    for kind in ("virtualMachines", "networkInterfaces", "publicIPAddresses"):
        assert calls[f"{kind}.delete"] == 6, calls
    # begun together, waited for together: one list per round of each kind, no per-resource status poll
    assert calls["virtualMachines.list"] <= 3 and "operations.get" not in calls, calls
    assert [r["type"] for r in cloud.resources.values()] == ["Microsoft.Network/virtualNetworks"]
    azure.delete("dep")
    assert cloud.resources == {} and cloud.groups == {}


def test_group_rerun_makes_only_the_missing_indices(azure: AzureBackend, cloud: AzureStandIn) -> None:
    first = azure.create_group(group_specs("dep", "wn", range(5)))
    with cloud.lock:  # two VMs deleted in the portal (their NICs stay behind)
        for index in (1, 3):
            cloud.resources[first[index].resource_id.lower()]["_gone_at"] = 0
    retry = make_backend()
    seen = len(cloud.requests)
    again = retry.create_group(group_specs("dep", "wn", range(5)))
    calls = retry.api_calls()
    assert puts_of(cloud, "virtualMachines", seen) == ["dep-wn-1", "dep-wn-3"]
    assert puts_of(cloud, "networkInterfaces", seen) == ["dep-wn-1-nic", "dep-wn-3-nic"]
    assert "networkSecurityGroups.createOrUpdate" not in calls and "virtualNetworks.createOrUpdate" not in calls
    assert [r.index for r in again] == list(range(5))
    assert [again[i].resource_id for i in (0, 2, 4)] == [first[i].resource_id for i in (0, 2, 4)]
    assert {r.state for r in again} == {ResourceState.RUNNING} and len(names_of(cloud, "virtualMachines")) == 5
    # a third run finds everything: nothing is made
    third = make_backend()
    assert [r.resource_id for r in third.create_group(group_specs("dep", "wn", range(5)))] == [
        r.resource_id for r in again]
    assert not [op for op in third.api_calls() if op.endswith(".createOrUpdate")]
    azure.delete("dep")


def test_group_short_of_capacity_reports_each_missing_index(azure: AzureBackend, cloud: AzureStandIn) -> None:
    cloud.allocation_capacity["Standard_B1s"] = 3  # the region runs out of the size part-way through the node
    cloud.resource_seconds = 0.2  # a NIC PUT before its IP is made would be refused (ReferencedResourceNotProvisioned)
    with pytest.raises(ResourceCreateError) as err:
        azure.create_group([AzureSpecs().service("dep", "wn", i) for i in range(5)])
    running = sorted(r.index for r in azure.describe("dep", "wn"))
    missing = sorted(set(range(5)) - set(running))
    assert len(running) == 3 and len(missing) == 2  # which ones lost the race is the cloud's choice
    assert err.value.provider == "azure" and err.value.resource == "dep/wn"
    assert f"VM(s) {missing} of node 'wn'" in str(err.value)
    assert f"#{missing[0]}, #{missing[1]}: the VM went to ProvisioningState/failed: AllocationFailed" in str(err.value)
    assert "try another size" in str(err.value) and f"running VM(s) {running} are kept" in str(err.value)
    # nothing of the failed indices is left; the running ones keep their parts and the node's group
    for index in missing:
        assert not {f"dep-wn-{index}", f"dep-wn-{index}-nic", f"dep-wn-{index}-pip"} & (
            names_of(cloud, "virtualMachines") | names_of(cloud, "networkInterfaces")
            | names_of(cloud, "publicIPAddresses"))
    assert len(names_of(cloud, "networkInterfaces")) == len(names_of(cloud, "publicIPAddresses")) == 3
    assert len(names_of(cloud, "networkSecurityGroups")) == 1
    # capacity back: a retry makes exactly the missing ones
    cloud.allocation_capacity.clear()
    seen = len(cloud.requests)
    made = azure.create_group([AzureSpecs().service("dep", "wn", i) for i in range(5)])
    assert puts_of(cloud, "virtualMachines", seen) == [f"dep-wn-{i}" for i in missing]
    assert [r.index for r in made] == list(range(5))
    azure.delete("dep")
    assert cloud.resources == {} and cloud.groups == {}


def test_group_over_quota_names_the_refused_vms(azure: AzureBackend, cloud: AzureStandIn) -> None:
    cloud.quota_cores = 2  # two 1-core VMs fit: of four concurrent PUTs, two are refused (409)
    with pytest.raises(ResourceCreateError) as err:
        azure.create_group(group_specs("dep", "wn", range(4)))
    running = sorted(r.index for r in azure.describe("dep", "wn"))
    missing = sorted(set(range(4)) - set(running))
    assert len(running) == 2 and f"VM(s) {missing} of node 'wn'" in str(err.value)
    assert "HTTP 409 OperationNotAllowed" in str(err.value) and "request a quota increase" in str(err.value)
    assert names_of(cloud, "networkInterfaces") == {f"dep-wn-{i}-nic" for i in running}
    azure.delete("dep")


def test_group_refused_entirely_leaves_nothing(azure: AzureBackend, cloud: AzureStandIn) -> None:
    cloud.quota_cores = 0
    with pytest.raises(ResourceCreateError) as err:
        azure.create_group([AzureSpecs().service("dep", "wn", i) for i in range(3)])
    assert "VM(s) [0, 1, 2] of node 'wn'" in str(err.value) and "OperationNotAllowed" in str(err.value)
    assert "has been removed" in str(err.value) and "cleanup also failed" not in str(err.value)
    assert sum(1 for m, p in cloud.requests if m == "PUT" and "/virtualMachines/" in p) == 3
    # the IPs, NICs, node's group, network and resource group this call made are gone with them
    assert cloud.resources == {} and cloud.groups == {}


def test_group_past_the_deadline_times_out_and_is_removed(azure: AzureBackend, cloud: AzureStandIn) -> None:
    import time

    kept = azure.create(compute("dep", "fast"))
    cloud.build_seconds = 30  # create_timeout is 10 s: only the deadline can end the wait in time
    started = time.monotonic()
    with pytest.raises(ResourceTimeoutError) as err:
        azure.create_group(group_specs("dep", "wn", range(4)), deadline=time.monotonic() + 0.5)
    assert time.monotonic() - started < 8, "the wait outlived the deadline"
    assert "provider_timeout_mins" in str(err.value) and "VM(s) [0, 1, 2, 3] of node 'wn'" in str(err.value)
    assert "4 VM(s) ready: not done" in str(err.value) and "last seen: PowerState/starting 4" in str(err.value)
    assert "has been removed" in str(err.value)
    assert [r.resource_id for r in azure.describe("dep")] == [kept.resource_id]
    assert not [n for n in names_of(cloud, "networkInterfaces") | names_of(cloud, "networkSecurityGroups")
                if n.startswith("dep-wn")]
    azure.delete("dep")
    assert cloud.resources == {} and cloud.groups == {}


def test_stand_in_refuses_a_nic_on_an_ip_still_being_made(azure: AzureBackend, cloud: AzureStandIn) -> None:
    # why a group makes its IPs, then its NICs: ARM's network RP refuses to use what is not Succeeded yet
    azure.create_group(group_specs("dep", "wn", range(2)))  # the group, network and node's NSG
    cloud.resource_seconds = 5
    network = azure.hook.network
    pip = network.public_ip_addresses.begin_create_or_update(
        "cloud-paas-dep", "early-pip", {"location": LOCATION, "properties": {}}, polling=False).result()
    subnet = next(iter(cloud.find("virtualNetworks")))["properties"]["subnets"][0]["id"]
    body = {"location": LOCATION, "properties": {"ipConfigurations": [{"name": "c", "properties": {
        "subnet": {"id": subnet}, "publicIPAddress": {"id": pip.id}}}]}}
    with pytest.raises(HttpResponseError, match="ReferencedResourceNotProvisioned"):
        network.network_interfaces.begin_create_or_update("cloud-paas-dep", "early-nic", body, polling=False)
