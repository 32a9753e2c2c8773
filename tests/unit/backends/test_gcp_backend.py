"""The GCP backend: the backend contract and the faults of a real cloud, against the stand-in Compute Engine.

The Google provider's ComputeEngineHook builds the real google-cloud-compute clients (REST transport)
from a ``google_cloud_platform`` connection with ``is_anonymous`` and an ``api_endpoint`` extra that
points them at :mod:`unit.backends.gcp_fixtures` over plain HTTP on loopback; the probe reads the
stand-in's state, never the backend.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Iterator

import pytest
from unit.backends.contract import BackendContract, Probe, SpecFactory
from unit.backends.gcp_fixtures import (
    PROJECT,
    ZONE,
    ComputeEngineStandIn,
    connection_json,
    running_stand_in,
)

from airflow_cloud_paas.backends import get_backend
from airflow_cloud_paas.backends.base import TAG_DEPLOYMENT, TAG_INDEX, TAG_NODE, Resource, ResourceSpec, ResourceState
from airflow_cloud_paas.backends.gcp import GcpBackend
from airflow_cloud_paas.exceptions import BackendError, ResourceCreateError, ResourceTimeoutError, UnsupportedNodeError

CONN_ID = "gcp_test"
COMPUTE_HIERARCHY = ("tosca.nodes.indigo.Compute", "tosca.nodes.Compute", "tosca.nodes.Root")
BLOCK_HIERARCHY = ("tosca.nodes.BlockStorage", "tosca.nodes.Root")
HOST = {"num_cpus": 1, "mem_size": "1 GB"}
UBUNTU = {"type": "linux", "distribution": "ubuntu", "version": "22.04"}
PUBLIC_HTTP = {"network_name": "PUBLIC", "ports": {"http": {"protocol": "tcp", "source": 8080}}}
LABEL = re.compile(r"[a-z0-9_-]{0,63}")


def compute(deployment_id: str, node_name: str, index: int = 0, *, host: dict | None = None,
            os: dict | None = None, endpoint: dict | None = None, **kw) -> ResourceSpec:
    capabilities = {"host": host or HOST, "os": os or UBUNTU}
    if endpoint:
        capabilities["endpoint"] = endpoint
    return ResourceSpec(deployment_id, node_name, index, "tosca.nodes.indigo.Compute", COMPUTE_HIERARCHY,
                        capabilities=capabilities, **kw)


def block(deployment_id: str, node_name: str, index: int = 0, size: str = "20 GB", **kw) -> ResourceSpec:
    return ResourceSpec(deployment_id, node_name, index, "tosca.nodes.BlockStorage", BLOCK_HIERARCHY,
                        properties={"size": size}, **kw)


class GcpSpecs(SpecFactory):
    def compute(self, deployment_id: str, node_name: str, index: int = 0) -> ResourceSpec:
        return compute(deployment_id, node_name, index)

    def service(self, deployment_id: str, node_name: str, index: int = 0) -> ResourceSpec:
        # a public web server: instance + firewall rule for port 8080 + external IP
        return compute(deployment_id, node_name, index, endpoint=PUBLIC_HTTP)

    def failing(self, deployment_id: str, node_name: str, index: int = 0) -> ResourceSpec:
        # the stand-in's zone has no capacity for n2-standard-8 (ZONE_RESOURCE_POOL_EXHAUSTED), after the
        # node's firewall rule has been made
        return compute(deployment_id, node_name, index, host={"instance_type": "n2-standard-8"}, endpoint=PUBLIC_HTTP)


class StandInProbe(Probe):
    """Reads the stand-in Compute Engine's state, not the backend."""

    def __init__(self, cloud: ComputeEngineStandIn) -> None:
        self.cloud = cloud

    def exists(self, resource: Resource) -> bool:
        self.cloud.tick()
        if resource.attributes["kind"] == "disk":
            return resource.resource_id in self.cloud.state.disks
        inst = self.cloud.state.instances.get(resource.resource_id)
        return inst is not None and inst["status"] == "RUNNING" and inst["_gone_at"] is None

    def count(self, deployment_id: str) -> int:
        return len(self.cloud.owned(deployment_id))

    def tags(self, resource: Resource) -> dict[str, str]:
        inst = self.cloud.state.instances[resource.resource_id]
        return {i["key"]: i["value"] for i in inst["metadata"]["items"]}

    def stop_behind_backend(self, resource: Resource) -> None:
        self.cloud.stop_instance(resource.resource_id)

    @contextlib.contextmanager
    def slow_boot(self, seconds: float) -> Iterator[None]:
        before, self.cloud.boot_seconds = self.cloud.boot_seconds, seconds  # PROVISIONING, then STAGING
        try:
            yield
        finally:
            self.cloud.boot_seconds = before


def make_backend(conn_id: str = CONN_ID, **options) -> GcpBackend:
    return GcpBackend(conn_id, create_timeout=10, delete_timeout=10, poll_interval=0.01, **options)


@pytest.fixture
def cloud(monkeypatch: pytest.MonkeyPatch) -> Iterator[ComputeEngineStandIn]:
    with running_stand_in() as stand_in:
        monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", connection_json(stand_in))
        yield stand_in


@pytest.fixture
def gcp(cloud: ComputeEngineStandIn) -> GcpBackend:
    return make_backend()


class TestGcpBackendContract(BackendContract):
    @pytest.fixture
    def backend(self, gcp: GcpBackend) -> GcpBackend:
        return gcp

    @pytest.fixture
    def specs(self) -> SpecFactory:
        return GcpSpecs()

    @pytest.fixture
    def probe(self, cloud: ComputeEngineStandIn) -> Probe:
        return StandInProbe(cloud)


def mutations(cloud: ComputeEngineStandIn) -> list[tuple[str, str]]:
    return [(m, p) for m, p in cloud.requests if m != "GET" and not p.endswith("/wait")]


# ---------------------------------------------------------------------- the connection and the hook
def test_registry_builds_it_through_the_providers_hook(cloud: ComputeEngineStandIn) -> None:
    backend = get_backend("gcp", conn_id=CONN_ID)
    assert isinstance(backend, GcpBackend)
    from airflow.providers.google.cloud.hooks.compute import ComputeEngineHook
    from google.auth.credentials import AnonymousCredentials

    assert isinstance(backend.hook, ComputeEngineHook) and backend.hook.gcp_conn_id == CONN_ID
    assert isinstance(backend.hook.get_credentials(), AnonymousCredentials)  # the connection's is_anonymous
    assert (backend.project_id, backend.zone) == (PROJECT, ZONE)
    assert backend.hook.get_client_options().api_endpoint == cloud.endpoint


def test_missing_zone_is_a_configuration_error(cloud: ComputeEngineStandIn, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_GCP_NOZONE", connection_json(cloud, zone=""))
    with pytest.raises(BackendError, match="no zone: give the backend a 'zone' option") as err:
        make_backend("gcp_nozone").check(compute("dep", "n"))
    assert err.value.provider == "gcp"
    assert make_backend("gcp_nozone", zone=ZONE).zone == ZONE


# ---------------------------------------------------------------------- mapping TOSCA -> Compute Engine
def test_smallest_machine_type_and_newest_image_of_the_family(gcp: GcpBackend, cloud: ComputeEngineStandIn) -> None:
    small = gcp.create(compute("dep", "small"))
    inst = cloud.state.instances[small.resource_id]
    assert inst["machineType"].endswith("/machineTypes/e2-micro")
    boot = cloud.state.disks[small.resource_id]
    assert boot["sourceImage"].endswith("projects/ubuntu-os-cloud/global/images/ubuntu-2204-jammy-v20250110")
    assert small.attributes["machine_type"] == "e2-micro"
    assert small.attributes["private_ip"].startswith("10.132.") and small.attributes["public_ip"] is None

    big = gcp.create(compute("dep", "big", host={"num_cpus": 3, "mem_size": "12 GB", "disk_size": "50 GB"},
                             os={"distribution": "rocky", "version": "9"}))
    assert big.attributes["machine_type"] == "e2-standard-4"
    assert cloud.state.disks[big.resource_id]["sourceImage"].endswith("rocky-linux-9-v20250114")
    assert cloud.state.disks[big.resource_id]["sizeGb"] == "50"

    gpu = gcp.create(compute("dep", "gpu", host={"num_cpus": 1, "num_gpus": 1, "gpu_model": "A100"}))
    assert gpu.attributes["machine_type"] == "a2-highgpu-1g"
    assert cloud.state.instances[gpu.resource_id]["scheduling"]["onHostMaintenance"] == "TERMINATE"
    gcp.delete("dep")
    assert cloud.owned("dep") == []


def test_explicit_image_by_family_and_by_name(gcp: GcpBackend, cloud: ComputeEngineStandIn) -> None:
    by_family = gcp.create(compute("dep", "a", os={"image": "projects/debian-cloud/global/images/family/debian-12"}))
    assert cloud.state.disks[by_family.resource_id]["sourceImage"].endswith("debian-12-bookworm-v20250113")
    own = gcp.create(compute("dep", "b", os={"image": "gce://europe-west1-b/custom-galaxy-image"}))
    assert cloud.state.disks[own.resource_id]["sourceImage"].endswith(f"{PROJECT}/global/images/custom-galaxy-image")
    gcp.delete("dep")


def test_labels_are_label_safe_and_deterministic(gcp: GcpBackend, cloud: ComputeEngineStandIn) -> None:
    deployment = "Dep_ID.With.UPPER-" + "x" * 70
    resource = gcp.create(compute(deployment, "Web.Node", 3))
    assert (resource.deployment_id, resource.node_name, resource.index) == (deployment, "Web.Node", 3)
    labels = cloud.state.instances[resource.resource_id]["labels"]
    assert set(labels) == {"cloud_paas_deployment", "cloud_paas_node", "cloud_paas_index"}
    assert all(LABEL.fullmatch(v) for v in labels.values())
    assert labels["cloud_paas_index"] == "3"
    assert labels["cloud_paas_node"].startswith("web-node-") and labels["cloud_paas_deployment"] != deployment
    # the exact tags live in the metadata; a fresh backend finds the same instance through the labels
    assert StandInProbe(cloud).tags(resource) == {TAG_DEPLOYMENT: deployment, TAG_NODE: "Web.Node", TAG_INDEX: "3"}
    assert make_backend().create(compute(deployment, "Web.Node", 3)).resource_id == resource.resource_id
    assert len(cloud.state.instances) == 1
    assert [r.node_name for r in make_backend().describe(deployment)] == ["Web.Node"]
    gcp.delete(deployment)
    assert cloud.owned(deployment) == []


def test_lists_follow_pages(gcp: GcpBackend, cloud: ComputeEngineStandIn) -> None:
    cloud.page_size = 2
    made = gcp.scale(lambda i: compute("dep", "w", i), 5)
    assert [r.index for r in made] == [0, 1, 2, 3, 4]
    served = cloud.later_pages_served
    assert len(gcp.describe("dep", "w")) == 5
    assert cloud.later_pages_served >= served + 2  # 5 instances, 2 a page: pages 2 and 3 were read
    gcp.delete("dep")


def test_public_endpoint_gets_a_firewall_rule_by_target_tag_and_an_external_ip(
    gcp: GcpBackend, cloud: ComputeEngineStandIn
) -> None:
    resource = gcp.create(compute("dep", "web", endpoint={
        "network_name": "PUBLIC",
        "ports": {"http": {"protocol": "tcp", "source": 8080}, "dns": {"protocol": "udp", "source": 53},
                  "admin": {"protocol": "tcp", "source": 22, "remote_cidr": "10.0.0.0/8"}}}))
    assert resource.attributes["public_ip"].startswith("34.")
    inst = cloud.state.instances[resource.resource_id]
    (tag,) = inst["tags"]["items"]
    rules = sorted(cloud.state.firewalls.values(), key=lambda f: f["sourceRanges"])
    assert [(f["sourceRanges"], f["targetTags"], f["direction"]) for f in rules] == [
        (["0.0.0.0/0"], [tag], "INGRESS"), (["10.0.0.0/8"], [tag], "INGRESS")]
    assert rules[0]["allowed"] == [{"IPProtocol": "tcp", "ports": ["8080"]}, {"IPProtocol": "udp", "ports": ["53"]}]
    assert rules[1]["allowed"] == [{"IPProtocol": "tcp", "ports": ["22"]}]
    # a second instance shares the node's rules; deleting one instance keeps them, the node removes them
    gcp.create(compute("dep", "web", 1, endpoint=PUBLIC_HTTP))
    assert len(cloud.state.firewalls) == 2
    gcp.delete("dep", "web", 1)
    assert len(cloud.state.firewalls) == 2
    gcp.delete("dep", "web")
    assert cloud.state.firewalls == {} and cloud.owned("dep") == []


def test_block_storage_is_a_disk_attached_to_its_instance(gcp: GcpBackend, cloud: ComputeEngineStandIn) -> None:
    disk = gcp.create(block("dep", "data", size="15.5 GB"))
    assert disk.state == ResourceState.RUNNING and disk.attributes["size_gb"] == 16
    assert cloud.state.disks[disk.resource_id]["labels"]["cloud_paas_node"] == "data"
    vm = gcp.create(compute("dep", "vm", requirements={"local_storage": (disk,)}))
    stored = cloud.state.disks[disk.resource_id]
    assert [u.rsplit("/", 1)[-1] for u in stored["users"]] == [vm.resource_id]
    assert vm.attributes["disks"] == [disk.resource_id]
    # the boot disk carries the labels too, but is the instance's, not a BlockStorage node
    assert [(r.node_name, r.attributes["kind"]) for r in gcp.describe("dep")] == [("data", "disk"), ("vm", "instance")]
    # deleting only the disk node detaches it from the instance that stays
    assert [r.node_name for r in gcp.delete("dep", "data")] == ["data"]
    assert disk.resource_id not in cloud.state.disks and vm.resource_id in cloud.state.instances
    assert cloud.state.instances[vm.resource_id]["disks"][1:] == []
    gcp.delete("dep")
    assert cloud.owned("dep") == []


def test_disk_requiring_an_instance_is_attached_to_it(gcp: GcpBackend, cloud: ComputeEngineStandIn) -> None:
    vm = gcp.create(compute("dep", "vm"))
    disk = gcp.create(block("dep", "data", requirements={"host": (vm,)}))
    assert disk.attributes["attached_to"] == [vm.resource_id]
    assert gcp.create(block("dep", "data", requirements={"host": (vm,)})).resource_id == disk.resource_id
    assert sorted(r.attributes["kind"] for r in gcp.delete("dep")) == ["disk", "instance"]
    assert cloud.owned("dep") == []


# ---------------------------------------------------------------------- check: nothing is made
@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        (compute("dep", "n", host={"instance_type": "m9-huge"}), "instance type 'm9-huge' is not offered"),
        (compute("dep", "n", host={"num_cpus": 96, "mem_size": "1 TB"}), "no size offers 96 CPUs"),
        (compute("dep", "n", host={"num_gpus": 1, "gpu_model": "H100"}), "1 GPUs (H100)"),
        (compute("dep", "n", host={"instance_type": "n1-standard-1"}), "not offered"),  # deprecated
        (compute("dep", "n", os={"image": "projects/nope-cloud/global/images/family/nope-1"}), "image"),
        (compute("dep", "n", os={"image": "no-such-image"}), "'no-such-image' not found"),
        (compute("dep", "n", os={"distribution": "windows"}), "no image for os"),
        (compute("dep", "n", os={"distribution": "ubuntu", "version": "18.04"}), "no image for os"),  # deprecated
        (block("dep", "n", size=""), "has no 'size'"),
    ],
    ids=["type-not-found", "nothing-fits", "no-gpu-model", "deprecated-type", "image-project-not-found",
         "image-not-found", "no-image", "deprecated-image", "no-size"],
)
def test_what_cannot_be_honoured_fails_before_anything_is_made(
    gcp: GcpBackend, cloud: ComputeEngineStandIn, spec: ResourceSpec, fragment: str
) -> None:
    with pytest.raises(UnsupportedNodeError) as err:
        gcp.check(spec)
    assert err.value.provider == "gcp" and "dep/n" in str(err.value)
    assert fragment in str(err.value)
    with pytest.raises(UnsupportedNodeError):
        gcp.create(spec)
    assert mutations(cloud) == []
    assert cloud.owned("dep") == []


def test_machine_types_and_images_are_read_once(gcp: GcpBackend, cloud: ComputeEngineStandIn) -> None:
    for index in range(3):
        gcp.check(compute("dep", "n", index))
    reads = sorted(p for m, p in cloud.requests if m == "GET" and p.endswith(("/machineTypes", "/global/images")))
    assert reads == sorted([f"/compute/v1/projects/{PROJECT}/zones/{ZONE}/machineTypes"] + [
        f"/compute/v1/projects/{p}/global/images"
        for p in ("ubuntu-os-cloud", "debian-cloud", "rocky-linux-cloud", "centos-cloud")])


# ---------------------------------------------------------------------- faults of a real cloud
def test_quota_exceeded_names_gcp_and_the_instance_and_leaves_nothing(
    gcp: GcpBackend, cloud: ComputeEngineStandIn
) -> None:
    first = gcp.create(compute("dep", "a", endpoint=PUBLIC_HTTP))
    made_before = cloud.owned("dep")
    cloud.quota_cpus = 2  # e2-micro has 2 vCPUs: the region is full
    spec = compute("dep", "b", endpoint=PUBLIC_HTTP)
    with pytest.raises(ResourceCreateError) as err:
        gcp.create(spec)
    assert err.value.provider == "gcp"
    from airflow_cloud_paas.backends.gcp import instance_name

    assert err.value.resource == f"instance {instance_name(spec)}"
    assert "QUOTA_EXCEEDED: Quota 'CPUS' exceeded" in str(err.value)
    assert "raise the project's quota" in str(err.value) and "has been removed" in str(err.value)
    # b's firewall rule, made before the refused insert, is gone; a's things are untouched
    assert cloud.owned("dep") == made_before
    assert any(m == "POST" and p.endswith("/instances") for m, p in mutations(cloud)[-4:])
    assert [r.resource_id for r in gcp.describe("dep")] == [first.resource_id]
    gcp.delete("dep")


def test_instance_that_never_runs_times_out_and_is_removed(cloud: ComputeEngineStandIn) -> None:
    cloud.stuck_machine_types.add("e2-standard-2")
    backend = GcpBackend(CONN_ID, create_timeout=0.5, delete_timeout=10, poll_interval=0.01)
    with pytest.raises(ResourceTimeoutError) as err:
        backend.create(compute("dep", "stuck", host={"instance_type": "e2-standard-2"}, endpoint=PUBLIC_HTTP))
    assert err.value.provider == "gcp" and "STAGING" in str(err.value)
    assert "what was made is removed" in str(err.value)
    assert cloud.owned("dep") == []
    assert any(m == "DELETE" and "/instances/" in p for m, p in cloud.requests)


def test_a_new_backend_finds_what_a_crashed_attempt_made(cloud: ComputeEngineStandIn) -> None:
    made = make_backend().create(compute("dep", "web", endpoint=PUBLIC_HTTP))
    again = make_backend().create(compute("dep", "web", endpoint=PUBLIC_HTTP))
    assert again.resource_id == made.resource_id
    assert len(cloud.state.instances) == 1 and len(cloud.state.firewalls) == 1
    assert [r.resource_id for r in make_backend().delete("dep")] == [made.resource_id]
    assert cloud.owned("dep") == []


def test_orphan_firewall_rule_without_an_instance_is_found_and_deleted(
    gcp: GcpBackend, cloud: ComputeEngineStandIn
) -> None:
    gcp.create(compute("dep", "web", endpoint=PUBLIC_HTTP))
    with cloud.lock:  # the instance was deleted in the console; its firewall rule stays behind
        name = next(iter(cloud.state.instances))
        cloud.state.instances[name]["_gone_at"] = 0
    assert gcp.describe("dep") == []
    assert [k for k, _ in cloud.owned("dep")] == ["firewall"]
    assert gcp.delete("dep") == []
    assert cloud.owned("dep") == []


def test_hand_made_lookalikes_are_not_ours(gcp: GcpBackend, cloud: ComputeEngineStandIn) -> None:
    mine = gcp.create(compute("dep", "web"))
    with cloud.lock:  # someone copies the labels onto another instance, without the metadata tags
        twin = dict(cloud.state.instances[mine.resource_id], name="hand-made", metadata={"items": []})
        cloud.state.instances["hand-made"] = twin
    assert [r.resource_id for r in gcp.describe("dep")] == [mine.resource_id]
    gcp.delete("dep")
    assert "hand-made" in cloud.state.instances


def test_stopped_instance_is_started_again(gcp: GcpBackend, cloud: ComputeEngineStandIn) -> None:
    first = gcp.create(compute("dep", "vm"))
    cloud.stop_instance(first.resource_id)
    assert gcp.describe("dep")[0].state == ResourceState.STOPPED
    again = gcp.create(compute("dep", "vm"))
    assert again.resource_id == first.resource_id and again.state == ResourceState.RUNNING
    assert any(m == "POST" and p.endswith(f"/instances/{first.resource_id}/start") for m, p in cloud.requests)
    gcp.delete("dep")


def test_states_map_instances_and_disks(gcp: GcpBackend) -> None:
    assert gcp.normalize_state("PROVISIONING") == ResourceState.CREATING
    assert gcp.normalize_state("STAGING") == ResourceState.CREATING
    assert gcp.normalize_state("RUNNING") == ResourceState.RUNNING
    assert gcp.normalize_state("STOPPING") == ResourceState.STOPPED
    assert gcp.normalize_state("TERMINATED") == ResourceState.STOPPED
    assert gcp.normalize_state("SUSPENDED") == ResourceState.STOPPED
    assert gcp.normalize_state("REPAIRING") == ResourceState.ERROR
    assert gcp.normalize_state("READY") == ResourceState.RUNNING
    assert gcp.normalize_state("FAILED") == ResourceState.ERROR
    assert gcp.normalize_state("DELETING") == ResourceState.DELETING


def test_create_during_a_delete_in_flight_waits_then_makes_a_new_one(gcp: GcpBackend,
                                                                     cloud: ComputeEngineStandIn) -> None:
    first = gcp.create(compute("dep", "vm"))
    with cloud.lock:  # a delete from the console is in flight: STOPPING, gone in 0.2 s
        cloud.state.instances[first.resource_id].update(status="STOPPING", _gone_at=time.monotonic() + 0.2)
        old_id = cloud.state.instances[first.resource_id]["id"]
    again = gcp.create(compute("dep", "vm"))
    assert again.state == ResourceState.RUNNING
    assert cloud.state.instances[again.resource_id]["id"] != old_id  # a new instance, same deterministic name
    assert len(cloud.state.instances) == 1
    gcp.delete("dep")


def test_user_data_goes_to_the_user_data_metadata_key(gcp: GcpBackend, cloud: ComputeEngineStandIn) -> None:
    user_data = "#cloud-config\nruncmd:\n- [touch, /tmp/configured]\n"
    resource = gcp.create(compute("dep", "vm", user_data=user_data))
    items = {i["key"]: i["value"] for i in cloud.state.instances[resource.resource_id]["metadata"]["items"]}
    assert items["user-data"] == user_data
    assert items[TAG_DEPLOYMENT] == "dep"  # the exact tags are still there
    assert {r.resource_id for r in gcp.describe("dep", "vm")} == {resource.resource_id}


# ---------------------------------------------------------------------- a node's instances together (bulkInsert)
def _bulk_posts(cloud: ComputeEngineStandIn) -> list[str]:
    return [p for m, p in cloud.requests if m == "POST" and p.endswith("/instances/bulkInsert")]


def _since(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {op: n - before.get(op, 0) for op, n in after.items() if n != before.get(op, 0)}


def test_group_launches_in_one_bulk_insert_and_deletes_in_bulk(cloud: ComputeEngineStandIn) -> None:
    from airflow_cloud_paas.backends.gcp import index_from_name, instance_name

    # polls slower than the stand-in boots: the rounds of the wait do not depend on how many instances there are
    backend = GcpBackend(CONN_ID, create_timeout=10, delete_timeout=10, poll_interval=0.1)
    specs = [compute("dep", "web", i, endpoint=PUBLIC_HTTP) for i in range(6)]
    backend.check(specs[0])  # the catalogue is read once per backend, not per launch: left out of the count
    before = backend.api_calls()
    made = backend.create_group(specs)
    calls = _since(before, backend.api_calls())
    assert [r.index for r in made] == list(range(6))
    assert [r.resource_id for r in made] == [instance_name(s) for s in specs]
    assert all(r.state == ResourceState.RUNNING and StandInProbe(cloud).exists(r) for r in made)
    # one bulk insert, one firewall rule, no per-instance insert or get; lists bounded whatever the count
    assert len(_bulk_posts(cloud)) == 1 and len(cloud.state.firewalls) == 1
    (body,) = cloud.bulk_requests
    assert (int(body["count"]), int(body["minCount"])) == (6, 6)  # all or none (int64: strings in JSON)
    assert sorted(body["perInstanceProperties"]) == sorted(instance_name(s) for s in specs)
    assert body["instanceProperties"]["machineType"] == "e2-micro"  # a bare name, as bulkInsert wants it
    assert calls["instances.bulkInsert"] == 1 and calls["firewalls.insert"] == 1
    assert "instances.insert" not in calls and "instances.get" not in calls
    assert calls["instances.list"] <= 5, calls
    # the shared properties carry deployment and node; the index is read back from the hashed name
    inst = cloud.state.instances[made[3].resource_id]
    assert "cloud_paas_index" not in inst["labels"] and inst["labels"]["cloud_paas_node"] == "web"
    assert TAG_INDEX not in {i["key"] for i in inst["metadata"]["items"]}
    assert index_from_name(made[3].resource_id, "dep", "web") == 3
    assert index_from_name(made[3].resource_id, "dep", "other") is None
    assert index_from_name(made[3].resource_id.replace("-3-", "-03-"), "dep", "web") is None
    assert [(r.node_name, r.index) for r in make_backend().describe("dep")] == [("web", i) for i in range(6)]
    # a per-index create (a fresh backend) finds a bulk-made instance: nothing is inserted
    assert make_backend().create(specs[4]).resource_id == made[4].resource_id
    assert len(cloud.state.instances) == 6

    # delete: six deletes back to back, then one list per round until all are gone; no operation is waited for
    before = backend.api_calls()
    assert sorted(r.index for r in backend.delete("dep", "web", 5)) == [5]
    assert sorted(r.index for r in backend.delete("dep")) == list(range(5))
    calls = _since(before, backend.api_calls())
    assert calls["instances.delete"] == 6 and calls["firewalls.delete"] == 1
    assert "zoneOperations.wait" not in calls and "zoneOperations.get" not in calls
    assert cloud.owned("dep") == []


def test_group_rerun_launches_only_the_missing_indices(gcp: GcpBackend, cloud: ComputeEngineStandIn) -> None:
    from airflow_cloud_paas.backends.gcp import instance_name

    specs = [compute("dep", "w", i) for i in range(4)]
    made = gcp.create_group(specs)
    ids = {r.index: cloud.state.instances[r.resource_id]["id"] for r in made}
    with cloud.lock:  # index 2 deleted in the console
        cloud.state.instances[made[2].resource_id]["_gone_at"] = 0
    assert [r.index for r in gcp.describe("dep")] == [0, 1, 3]
    again = make_backend().create_group(specs)
    assert [r.index for r in again] == [0, 1, 2, 3]
    assert len(cloud.bulk_requests) == 2
    rerun = cloud.bulk_requests[-1]
    assert list(rerun["perInstanceProperties"]) == [instance_name(specs[2])] and int(rerun["count"]) == 1
    for index in (0, 1, 3):  # the same instances, untouched
        assert cloud.state.instances[again[index].resource_id]["id"] == ids[index]
    assert cloud.state.instances[again[2].resource_id]["id"] != ids[2]
    # a re-run with nothing missing launches nothing
    assert [r.resource_id for r in gcp.create_group(specs)] == [r.resource_id for r in again]
    assert len(cloud.bulk_requests) == 2
    gcp.delete("dep")
    assert cloud.owned("dep") == []


@pytest.mark.parametrize("fault", ["quota", "capacity"])
def test_group_refused_up_front_names_each_index_and_keeps_what_ran(
    gcp: GcpBackend, cloud: ComputeEngineStandIn, fault: str
) -> None:
    def spec(index: int) -> ResourceSpec:
        return compute("dep", "w", index, host={"instance_type": "e2-standard-2"}, endpoint=PUBLIC_HTTP)

    first = gcp.create_group([spec(0), spec(1)])
    if fault == "quota":
        cloud.quota_cpus = 6  # 2 vCPUs each: room for one more, not the two asked (all or none)
    else:
        cloud.exhausted_machine_types.add("e2-standard-2")
    with pytest.raises(ResourceCreateError) as err:
        gcp.create_group([spec(i) for i in range(4)])
    message = str(err.value)
    assert err.value.provider == "gcp" and err.value.resource == "dep/w"
    assert "cannot create instance(s) [2, 3] of node 'w': #2, #3:" in message
    if fault == "quota":
        assert "Quota 'CPUS' exceeded" in message and "raise the project's quota" in message
    else:
        assert "does not have enough resources" in message and "use another zone or size" in message
    assert "running instance(s) [0, 1] are kept" in message
    # refused at once: nothing was made for #2 and #3; #0 and #1 and their firewall rule stay
    assert [(r.index, r.resource_id) for r in gcp.describe("dep")] == [(r.index, r.resource_id) for r in first]
    assert len(cloud.state.instances) == 2 and len(cloud.state.firewalls) == 1
    assert mutations(cloud)[-1][1].endswith("/instances/bulkInsert")  # the refused launch was the last change
    gcp.delete("dep")
    assert cloud.owned("dep") == []


def test_group_refused_whole_leaves_nothing(gcp: GcpBackend, cloud: ComputeEngineStandIn) -> None:
    with pytest.raises(ResourceCreateError, match=r"cannot create instance\(s\) \[0, 1, 2\] of node 'svc'"):
        gcp.create_group([GcpSpecs().failing("dep", "svc", i) for i in range(3)])  # n2-standard-8: no capacity
    assert cloud.owned("dep") == []  # the node's firewall rule, made before the launch, is gone too
    assert len(_bulk_posts(cloud)) == 1


def test_partial_group_keeps_what_the_quota_allowed_and_names_the_rest(cloud: ComputeEngineStandIn) -> None:
    backend = make_backend(partial_groups=True)
    cloud.quota_cpus = 4  # e2-micro has 2 vCPUs: two of the four fit
    with pytest.raises(ResourceCreateError) as err:
        backend.create_group([compute("dep", "w", i, endpoint=PUBLIC_HTTP) for i in range(4)])
    assert int(cloud.bulk_requests[-1]["minCount"]) == 1  # what capacity allows
    # which two Compute Engine makes is its choice: the error names the others, whichever they are
    kept = backend.describe("dep")
    assert len(kept) == 2 and {r.state for r in kept} == {ResourceState.RUNNING}
    running = [r.index for r in kept]
    missing = sorted(set(range(4)) - set(running))
    message = str(err.value)
    assert f"cannot create instance(s) {missing} of node 'w'" in message
    assert "the bulk insert made 2 of the 4 instances asked" in message
    assert f"running instance(s) {running} are kept" in message
    assert sorted(cloud.state.instances) == sorted(r.resource_id for r in kept) and len(cloud.state.firewalls) == 1
    # with room again, a retry launches only the two missing
    cloud.quota_cpus = None
    again = backend.create_group([compute("dep", "w", i, endpoint=PUBLIC_HTTP) for i in range(4)])
    assert [r.index for r in again] == [0, 1, 2, 3] and int(cloud.bulk_requests[-1]["count"]) == 2
    backend.delete("dep")
    assert cloud.owned("dep") == []


def test_group_booting_past_the_deadline_times_out_and_is_deleted(
    gcp: GcpBackend, cloud: ComputeEngineStandIn
) -> None:
    def spec(index: int) -> ResourceSpec:
        return compute("dep", "w", index, host={"instance_type": "e2-standard-2"})

    first = gcp.create_group([spec(0), spec(1)])
    cloud.stuck_machine_types.add("e2-standard-2")  # what is made from now on never leaves STAGING
    with pytest.raises(ResourceTimeoutError) as err:
        gcp.create_group([spec(i) for i in range(4)], deadline=time.monotonic() + 0.5)
    message = str(err.value)
    assert err.value.provider == "gcp" and "provider_timeout_mins" in message
    assert "instance(s) [2, 3] of node 'w' not running by then" in message and "STAGING 2" in message
    assert "the running ones [0, 1] are kept" in message
    # what this call launched is deleted (not just asked to be); what ran before stays
    assert sorted(cloud.state.instances) == sorted(r.resource_id for r in first)
    assert [r.index for r in gcp.describe("dep")] == [0, 1]
    gcp.delete("dep")
    assert cloud.owned("dep") == []


def test_bulk_insert_follows_the_api(gcp: GcpBackend, cloud: ComputeEngineStandIn) -> None:
    """The stand-in's bulkInsert, through the real client: what the backend relies on, and what it must avoid."""
    from airflow_cloud_paas.backends.gcp import GceApiError

    plan = gcp._instance_plan(compute("dep", "n"))
    properties = gcp._instance_properties(compute("dep", "n"), {TAG_DEPLOYMENT: "dep", TAG_NODE: "n"}, *plan,
                                          public=False)
    hook = gcp.hook

    def bulk(names: list[str], min_count: int, **override) -> dict:
        op = hook.bulk_insert_instances_nowait(project_id=PROJECT, zone=ZONE, properties={**properties, **override},
                                               names=names, min_count=min_count, request_id="0d8ab7c3-bulk")
        return hook.wait_zone_operation(project_id=PROJECT, zone=ZONE, name=op)

    # a machine type URL: the operation ends in INTERNAL_ERROR, nothing is made
    done = bulk(["a-1"], 1, machine_type=f"zones/{ZONE}/machineTypes/e2-micro")
    assert done["error"]["errors"][0]["code"] == "INTERNAL_ERROR" and cloud.state.instances == {}
    # minCount below count: what fits is made, and the operation says how many
    cloud.quota_cpus = 4
    done = bulk(["a-1", "a-2", "a-3"], 1)
    status = done["instances_bulk_insert_operation_metadata"]["per_location_status"][f"zones/{ZONE}"]
    assert (status["target_vm_count"], status["created_vm_count"]) == (3, 2) and "error" not in done
    made = sorted(cloud.state.instances)
    assert len(made) == 2 and set(made) < {"a-1", "a-2", "a-3"}
    # minCount not reachable: refused at once; a taken name: refused at once
    with pytest.raises(GceApiError) as err:
        bulk(["b-1", "b-2"], 1)
    assert (err.value.status_code, err.value.reason) == (403, "quotaExceeded")
    cloud.quota_cpus = None
    with pytest.raises(GceApiError) as err:
        bulk([made[0], "b-1"], 2)
    assert err.value.status_code == 409 and sorted(cloud.state.instances) == made
