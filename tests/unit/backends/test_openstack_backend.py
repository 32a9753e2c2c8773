"""The OpenStack backend: the backend contract and the faults of a real cloud, against the stand-in cloud.

openstacksdk talks real HTTP to :mod:`unit.backends.openstack_fixtures` (Keystone, Nova, Neutron,
Cinder, Glance stand-ins on loopback); the probe reads the stand-in's state, never the backend.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections import Counter
from collections.abc import Iterator

import pytest
from unit.backends.contract import BackendContract, Probe, SpecFactory
from unit.backends.openstack_fixtures import (
    PASSWORD,
    USERNAME,
    OpenStackStandIn,
    running_stand_in,
)

from airflow_cloud_paas.backends import get_backend
from airflow_cloud_paas.backends.base import TAG_DEPLOYMENT, TAG_INDEX, TAG_NODE, Resource, ResourceSpec, ResourceState
from airflow_cloud_paas.backends.openstack import OpenStackBackend
from airflow_cloud_paas.exceptions import (
    BackendError,
    ResourceCreateError,
    ResourceTimeoutError,
    UnsupportedNodeError,
)
from airflow_cloud_paas.hooks.openstack import OpenStackAuthenticationError

pytestmark = pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")  # openstacksdk's own

CONN_ID = "openstack_test"
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


class OpenStackSpecs(SpecFactory):
    def compute(self, deployment_id: str, node_name: str, index: int = 0) -> ResourceSpec:
        return compute(deployment_id, node_name, index)

    def service(self, deployment_id: str, node_name: str, index: int = 0) -> ResourceSpec:
        # a public web server: server + security group with port 8080 + floating IP
        return compute(deployment_id, node_name, index, endpoint=PUBLIC_HTTP)

    def failing(self, deployment_id: str, node_name: str, index: int = 0) -> ResourceSpec:
        # the stand-in puts servers of this image in ERROR ("No valid host was found"), as a full cloud does
        return compute(deployment_id, node_name, index, os={"image": "broken-image"})


class StandInProbe(Probe):
    """Reads the stand-in cloud's state, not the backend."""

    def __init__(self, cloud: OpenStackStandIn) -> None:
        self.cloud = cloud

    def exists(self, resource: Resource) -> bool:
        self.cloud.tagged("")  # let time pass in the stand-in (BUILD -> ACTIVE, deleting -> gone)
        if resource.attributes["kind"] == "volume":
            return resource.resource_id in self.cloud.state.volumes
        server = self.cloud.state.servers.get(resource.resource_id)
        return server is not None and server["status"] == "ACTIVE" and server["_gone_at"] is None

    def count(self, deployment_id: str) -> int:
        return len(self.cloud.tagged(deployment_id))

    def tags(self, resource: Resource) -> dict[str, str]:
        state = self.cloud.state
        item = (state.volumes if resource.attributes["kind"] == "volume" else state.servers)[resource.resource_id]
        return dict(item["metadata"])

    def stop_behind_backend(self, resource: Resource) -> None:
        self.cloud.stop_server(resource.resource_id)

    @contextlib.contextmanager
    def slow_boot(self, seconds: float) -> Iterator[None]:
        before, self.cloud.build_seconds = self.cloud.build_seconds, seconds  # a server stays in BUILD that long
        try:
            yield
        finally:
            self.cloud.build_seconds = before


def set_connection(monkeypatch: pytest.MonkeyPatch, cloud: OpenStackStandIn, conn_id: str = CONN_ID, **fields) -> None:
    """Define the Airflow connection as deployments do: AIRFLOW_CONN_<ID> holding JSON."""
    conn = {"conn_type": "openstack", "host": cloud.auth_url, "login": USERNAME, "password": PASSWORD,
            "schema": "paas", "extra": {"region_name": "RegionOne"}, **fields}
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(conn))


def make_backend(conn_id: str = CONN_ID, **options) -> OpenStackBackend:
    return OpenStackBackend(conn_id, create_timeout=10, delete_timeout=10, poll_interval=0.02, **options)


@pytest.fixture
def cloud(monkeypatch: pytest.MonkeyPatch) -> Iterator[OpenStackStandIn]:
    with running_stand_in() as stand_in:
        set_connection(monkeypatch, stand_in)
        yield stand_in


@pytest.fixture
def openstack(cloud: OpenStackStandIn) -> OpenStackBackend:
    return make_backend()


class TestOpenStackBackendContract(BackendContract):
    @pytest.fixture
    def backend(self, openstack: OpenStackBackend) -> OpenStackBackend:
        return openstack

    @pytest.fixture
    def specs(self) -> SpecFactory:
        return OpenStackSpecs()

    @pytest.fixture
    def probe(self, cloud: OpenStackStandIn) -> Probe:
        return StandInProbe(cloud)


# ---------------------------------------------------------------------- mapping TOSCA -> OpenStack
def test_registry_builds_it_by_name(cloud: OpenStackStandIn) -> None:
    backend = get_backend("openstack", conn_id=CONN_ID)
    assert isinstance(backend, OpenStackBackend)
    assert backend.hook.openstack_conn_id == CONN_ID


def test_smallest_fitting_flavor_and_matching_image(openstack: OpenStackBackend, cloud: OpenStackStandIn) -> None:
    resource = openstack.create(compute("dep", "big", host={"num_cpus": 2, "mem_size": "3 GB"},
                                        os={"distribution": "ubuntu", "version": "24.04"}))
    server = cloud.state.servers[resource.resource_id]
    assert server["flavor"]["original_name"] == "m1.medium"
    assert server["image"]["id"] == next(i["id"] for i in cloud_images() if i["name"] == "ubuntu-24.04")
    assert resource.attributes["flavor"] == "m1.medium"
    assert resource.attributes["private_ips"] and resource.attributes["public_ip"] is None
    gpu = openstack.create(compute("dep", "gpu", host={"num_cpus": 1, "num_gpus": 1, "gpu_model": "A100"}))
    assert cloud.state.servers[gpu.resource_id]["flavor"]["original_name"] == "g1.a100"
    openstack.delete("dep")


def cloud_images() -> list[dict]:
    from unit.backends.openstack_fixtures import IMAGES

    return IMAGES


def test_public_endpoint_gets_rules_and_a_tagged_floating_ip(openstack: OpenStackBackend,
                                                             cloud: OpenStackStandIn) -> None:
    resource = openstack.create(compute("dep", "web", endpoint=PUBLIC_HTTP))
    (fip,) = cloud.state.floating_ips.values()
    assert resource.attributes["public_ip"] == fip["floating_ip_address"]
    assert {f"{TAG_DEPLOYMENT}=dep", f"{TAG_NODE}=web", f"{TAG_INDEX}=0"} <= set(fip["tags"])
    port = cloud.state.ports[fip["port_id"]]
    assert port["device_id"] == resource.resource_id
    (group,) = cloud.state.security_groups.values()
    assert port["security_groups"] == [group["id"]]
    assert {f"{TAG_DEPLOYMENT}=dep", f"{TAG_NODE}=web"} <= set(group["tags"])
    ingress = [r for r in group["security_group_rules"] if r["direction"] == "ingress"]
    assert [(r["protocol"], r["port_range_min"], r["port_range_max"], r["remote_ip_prefix"]) for r in ingress] == [
        ("tcp", 8080, 8080, "0.0.0.0/0")
    ]
    # a second instance shares the node's group and gets its own floating IP
    openstack.create(compute("dep", "web", 1, endpoint=PUBLIC_HTTP))
    assert len(cloud.state.security_groups) == 1 and len(cloud.state.floating_ips) == 2
    # deleting one instance keeps the group for the other; deleting the node removes it
    openstack.delete("dep", "web", 1)
    assert len(cloud.state.security_groups) == 1 and len(cloud.state.floating_ips) == 1
    openstack.delete("dep", "web")
    assert cloud.tagged("dep") == []
    assert cloud.state.ports == {}


def test_block_storage_is_a_volume_attached_to_its_server(openstack: OpenStackBackend,
                                                          cloud: OpenStackStandIn) -> None:
    volume = openstack.create(block("dep", "disk", size="1.5 GB"))
    assert volume.state == ResourceState.RUNNING and volume.attributes["size_gb"] == 2
    assert cloud.state.volumes[volume.resource_id]["metadata"][TAG_NODE] == "disk"
    server = openstack.create(compute("dep", "vm", requirements={"local_storage": (volume,)}))
    stored = cloud.state.volumes[volume.resource_id]
    assert stored["status"] == "in-use"
    assert [a["server_id"] for a in stored["attachments"]] == [server.resource_id]
    assert server.attributes["volumes"] == [volume.resource_id]
    assert [(r.node_name, r.attributes["kind"]) for r in openstack.describe("dep")] == [
        ("disk", "volume"), ("vm", "server")]
    # deleting only the volume node detaches it from the server that stays
    assert [r.node_name for r in openstack.delete("dep", "disk")] == ["disk"]
    assert volume.resource_id not in cloud.state.volumes
    assert server.resource_id in cloud.state.servers
    openstack.delete("dep")
    assert cloud.tagged("dep") == []


def test_volume_requiring_a_server_is_attached_to_it(openstack: OpenStackBackend, cloud: OpenStackStandIn) -> None:
    server = openstack.create(compute("dep", "vm"))
    volume = openstack.create(block("dep", "data", requirements={"host": (server,)}))
    assert volume.attributes["attached_to"] == [server.resource_id]
    assert openstack.create(block("dep", "data", requirements={"host": (server,)})).resource_id == volume.resource_id
    deleted = openstack.delete("dep")
    assert sorted(r.attributes["kind"] for r in deleted) == ["server", "volume"]
    assert cloud.tagged("dep") == []


# ---------------------------------------------------------------------- check: nothing is made
def requests_that_change(cloud: OpenStackStandIn) -> list[tuple[str, str]]:
    return [(m, p) for m, p in cloud.requests if m != "GET" and not p.endswith("/auth/tokens")]


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        (compute("dep", "n", host={"instance_type": "m9.huge"}), "instance type 'm9.huge' is not offered"),
        (compute("dep", "n", host={"num_cpus": 64, "mem_size": "1 TB"}), "no size offers 64 CPUs"),
        (compute("dep", "n", host={"num_gpus": 1, "gpu_model": "H100"}), "1 GPUs (H100)"),
        (compute("dep", "n", os={"image": "ost://cloud.example/no-such-image"}), "image"),
        (compute("dep", "n", os={"distribution": "windows"}), "no image for os"),
        (block("dep", "n", size=""), "has no 'size'"),
        (block("dep", "n", size="ten gigs"), "not a size"),
    ],
    ids=["flavor-not-found", "nothing-fits", "no-gpu-model", "image-not-found", "no-image", "no-size", "bad-size"],
)
def test_what_cannot_be_honoured_fails_before_anything_is_made(
    openstack: OpenStackBackend, cloud: OpenStackStandIn, spec: ResourceSpec, fragment: str
) -> None:
    with pytest.raises(UnsupportedNodeError) as err:
        openstack.check(spec)
    assert err.value.provider == "openstack" and "dep/n" in str(err.value)
    assert fragment in str(err.value)
    with pytest.raises(UnsupportedNodeError):
        openstack.create(spec)
    assert requests_that_change(cloud) == []
    assert cloud.tagged("dep") == []


def test_flavor_and_image_lists_are_read_once(openstack: OpenStackBackend, cloud: OpenStackStandIn) -> None:
    for index in range(3):
        openstack.check(compute("dep", "n", index))
    reads = [p for m, p in cloud.requests if m == "GET" and p.endswith(("/flavors/detail", "/v2/images"))]
    assert sorted(reads) == ["/compute/v2.1/flavors/detail", "/image/v2/images"]


def test_ambiguous_network_is_a_configuration_error(cloud: OpenStackStandIn) -> None:
    with pytest.raises(BackendError, match="network 'nope' not found among private") as err:
        make_backend(network="nope").check(compute("dep", "n"))
    assert "'network' option" in str(err.value)
    assert make_backend(network="private").network_id in cloud.state.networks


# ---------------------------------------------------------------------- faults of a real cloud
def test_bad_credentials_name_keystone_and_hide_the_secret(
    cloud: OpenStackStandIn, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = "Wr0ng-but-secret-passw0rd"
    set_connection(monkeypatch, cloud, password=wrong)
    caplog.set_level(logging.DEBUG)
    with pytest.raises(OpenStackAuthenticationError) as err:
        make_backend().check(compute("dep", "n"))
    assert isinstance(err.value, BackendError)
    assert err.value.provider == "openstack"
    assert cloud.auth_url in str(err.value) and CONN_ID in str(err.value)
    assert wrong not in str(err.value) and wrong not in repr(err.value.__cause__)
    assert wrong not in caplog.text
    assert cloud.tagged("dep") == []


@pytest.mark.parametrize("status", [403, 413])
def test_quota_exceeded_names_the_server_and_leaves_nothing(
    openstack: OpenStackBackend, cloud: OpenStackStandIn, status: int
) -> None:
    first = openstack.create(compute("dep", "a", endpoint=PUBLIC_HTTP))
    made_before = sorted(cloud.tagged("dep"))
    cloud.quota_instances, cloud.quota_status = 1, status
    with pytest.raises(ResourceCreateError) as err:
        openstack.create(compute("dep", "b", endpoint=PUBLIC_HTTP))
    assert err.value.provider == "openstack"
    assert err.value.resource == "server dep-b-0"
    assert f"HTTP {status}" in str(err.value) and "Quota exceeded for instances" in str(err.value)
    assert "raise the project's quota" in str(err.value)
    # b's security group, made before the refused boot, is gone again; a's things are untouched
    assert sorted(cloud.tagged("dep")) == made_before
    assert [r.resource_id for r in openstack.describe("dep")] == [first.resource_id]
    openstack.delete("dep")


def test_server_in_error_is_removed_with_what_came_with_it(openstack: OpenStackBackend,
                                                           cloud: OpenStackStandIn) -> None:
    with pytest.raises(ResourceCreateError) as err:
        openstack.create(compute("dep", "bad", os={"image": "broken-image"}, endpoint=PUBLIC_HTTP))
    assert err.value.provider == "openstack" and err.value.resource == "server dep-bad-0"
    assert "went to ERROR: No valid host was found" in str(err.value)
    assert "has been removed" in str(err.value)
    assert cloud.tagged("dep") == [] and cloud.state.ports == {}
    assert any(m == "DELETE" and "/servers/" in p for m, p in cloud.requests), "no server was ever made"


def test_server_left_in_error_by_an_earlier_attempt_is_replaced(openstack: OpenStackBackend,
                                                                cloud: OpenStackStandIn) -> None:
    first = openstack.create(compute("dep", "vm"))
    with cloud.lock:  # the hypervisor lost it: Nova shows ERROR
        cloud.state.servers[first.resource_id].update(status="ERROR", fault={"message": "hypervisor lost"})
    assert openstack.describe("dep")[0].state == ResourceState.ERROR
    again = openstack.create(compute("dep", "vm"))
    assert again.state == ResourceState.RUNNING and again.resource_id != first.resource_id
    assert list(cloud.state.servers) == [again.resource_id]
    openstack.delete("dep")


def test_a_new_backend_finds_what_a_crashed_attempt_made(cloud: OpenStackStandIn) -> None:
    made = make_backend().create(compute("dep", "web", endpoint=PUBLIC_HTTP))
    # a retry in another worker: a fresh backend, a fresh SDK session
    again = make_backend().create(compute("dep", "web", endpoint=PUBLIC_HTTP))
    assert again.resource_id == made.resource_id
    assert len(cloud.state.servers) == 1 and len(cloud.state.floating_ips) == 1
    assert len(cloud.state.security_groups) == 1
    assert [r.resource_id for r in make_backend().delete("dep")] == [made.resource_id]
    assert cloud.tagged("dep") == []


def test_orphans_without_a_server_are_found_by_tags(openstack: OpenStackBackend, cloud: OpenStackStandIn) -> None:
    openstack.create(compute("dep", "web", endpoint=PUBLIC_HTTP))
    # the server vanished (deleted in the console) but its floating IP and group stay behind
    with cloud.lock:
        server_id = next(iter(cloud.state.servers))
        cloud.state.servers[server_id]["_gone_at"] = 0
    assert openstack.describe("dep") == []
    assert {kind for kind, _ in cloud.tagged("dep")} == {"security_group", "floating_ip"}
    assert openstack.delete("dep") == []
    assert cloud.tagged("dep") == []


def test_states_map_nova_and_cinder(openstack: OpenStackBackend) -> None:
    assert openstack.normalize_state("BUILD") == ResourceState.CREATING
    assert openstack.normalize_state("ACTIVE") == ResourceState.RUNNING
    assert openstack.normalize_state("SHUTOFF") == ResourceState.STOPPED
    assert openstack.normalize_state("ERROR") == ResourceState.ERROR
    assert openstack.normalize_state("DELETED") == ResourceState.DELETED
    assert openstack.normalize_state("in-use") == ResourceState.RUNNING
    assert openstack.normalize_state("error_deleting") == ResourceState.ERROR
    assert openstack.normalize_state("deleting") == ResourceState.DELETING


def test_user_data_reaches_nova_base64_encoded(openstack: OpenStackBackend, cloud: OpenStackStandIn) -> None:
    import base64

    user_data = "#cloud-config\nruncmd:\n- [touch, /tmp/configured]\n"
    resource = openstack.create(compute("dep", "vm", user_data=user_data))
    sent = cloud.state.servers[resource.resource_id]["OS-EXT-SRV-ATTR:user_data"]
    assert base64.b64decode(sent).decode() == user_data
    too_big = "#!/bin/sh\n" + "x" * 50_000  # 50 kB: over Nova's 65535 once base64-encoded
    servers = len(cloud.state.servers)
    with pytest.raises(UnsupportedNodeError, match="over openstack's limit of 65535"):
        openstack.create(compute("dep", "big", user_data=too_big))
    assert len(cloud.state.servers) == servers


# ---------------------------------------------------------------------- a node's servers (Nova multiple create)
def group(deployment_id: str, node_name: str, indices, **kw) -> list[ResourceSpec]:
    return [compute(deployment_id, node_name, index, **kw) for index in indices]


def calls_since(backend: OpenStackBackend, before: dict[str, int]) -> Counter:
    return Counter(backend.api_calls()) - Counter(before)


def live_servers(cloud: OpenStackStandIn, deployment_id: str) -> list[dict]:
    cloud.tagged("")  # let time pass in the stand-in
    with cloud.lock:
        return [dict(s) for s in cloud.state.servers.values()
                if s["metadata"].get(TAG_DEPLOYMENT) == deployment_id and s["_gone_at"] is None]


def test_group_launches_in_one_multiple_create_and_deletes_in_bulk(openstack: OpenStackBackend,
                                                                   cloud: OpenStackStandIn) -> None:
    openstack.check(compute("dep", "wn"))  # flavors, images, networks: read once per backend, not the node's cost
    cloud.build_seconds = 0  # ACTIVE at the first look: the wait takes one round, whatever the machine's speed
    before = openstack.api_calls()
    made = openstack.create_group(group("dep", "wn", range(6), endpoint=PUBLIC_HTTP))
    calls = calls_since(openstack, before)
    assert calls["POST servers"] == 1, calls
    assert calls["GET security-groups"] == calls["POST security-groups"] == 1, "the group is ensured once"
    # one look for what exists, one to find the launch's servers, one wait round, one after the floating IPs
    assert calls["GET servers/detail"] == 4, calls
    assert calls["GET ports"] == calls["GET floatingips"] == 1 and calls["POST floatingips"] == 6, calls
    assert "POST servers/{id}/metadata" not in calls, "the index comes from the name, at no cost"
    assert [r.index for r in made] == list(range(6)) and {r.state for r in made} == {ResourceState.RUNNING}
    assert len({r.resource_id for r in made}) == 6 and all(r.attributes["public_ip"] for r in made)
    # the stand-in saw one POST /servers asking for six, and made six
    assert [(m, p) for m, p in cloud.requests if p.endswith("/servers")] == [("POST", "/compute/v2.1/servers")]
    raw = {s["id"]: s for s in live_servers(cloud, "dep")}
    assert sorted(s["name"] for s in raw.values()) == [f"dep-wn-launch-{n}" for n in range(1, 7)]
    (launch,) = {s["metadata"]["cloud-paas-launch"].split(":")[1] for s in raw.values()}
    assert launch == "0-5" and all(TAG_INDEX not in s["metadata"] for s in raw.values())
    # the index is the n-th of the launch's list (n from Nova's name), read back the same by another backend
    assert {r.resource_id: r.index for r in made} == {i: int(s["name"].rsplit("-", 1)[1]) - 1 for i, s in raw.items()}
    other = make_backend()
    assert [(r.index, r.resource_id) for r in other.describe("dep", "wn")] == [(r.index, r.resource_id) for r in made]
    (sg,) = cloud.state.security_groups.values()
    assert {g for p in cloud.state.ports.values() for g in p["security_groups"]} == {sg["id"]}
    # one instance by index, through the single path, is the same one; deleting it deletes only it
    assert openstack.create(compute("dep", "wn", 4, endpoint=PUBLIC_HTTP)).resource_id == made[4].resource_id
    openstack.delete("dep", "wn", 4)
    assert sorted(r.index for r in openstack.describe("dep", "wn")) == [0, 1, 2, 3, 5]
    assert len(cloud.state.floating_ips) == 5

    cloud.delete_seconds = 0  # gone at the first look: the wait takes one round
    before = openstack.api_calls()
    deleted = openstack.delete("dep")
    calls = calls_since(openstack, before)
    assert calls["DELETE servers/{id}"] == 5 and "GET servers/{id}" not in calls, calls  # no wait per server
    assert calls["GET servers/detail"] == 3, calls  # the listing, one wait round, the group's check
    assert sorted(r.index for r in deleted) == [0, 1, 2, 3, 5]
    assert cloud.tagged("dep") == [] and cloud.state.ports == {}


def test_group_rerun_launches_only_the_missing_indices(openstack: OpenStackBackend, cloud: OpenStackStandIn) -> None:
    first = openstack.create_group(group("dep", "wn", range(5)))
    with cloud.lock:  # two servers vanish behind the backend's back (deleted in the dashboard)
        for index in (1, 3):
            cloud.state.servers[first[index].resource_id]["_gone_at"] = 0
    retry = make_backend()
    again = retry.create_group(group("dep", "wn", range(5)))
    calls = retry.api_calls()
    assert calls["POST servers"] == 1 and "POST security-groups" not in calls, calls
    assert [r.index for r in again] == list(range(5))
    assert [again[i].resource_id for i in (0, 2, 4)] == [first[i].resource_id for i in (0, 2, 4)]
    assert {again[1].resource_id, again[3].resource_id}.isdisjoint({r.resource_id for r in first})
    relaunched = [s for s in live_servers(cloud, "dep") if s["id"] in (again[1].resource_id, again[3].resource_id)]
    assert {s["metadata"]["cloud-paas-launch"].split(":")[1] for s in relaunched} == {"1,3"}
    assert len(live_servers(cloud, "dep")) == 5
    # a third run finds everything: no launch at all; one missing index is booted alone, named by its index
    third = make_backend()
    assert [r.resource_id for r in third.create_group(group("dep", "wn", range(5)))] == [r.resource_id for r in again]
    assert "POST servers" not in third.api_calls()
    grown = third.create_group(group("dep", "wn", range(6)))
    assert cloud.state.servers[grown[5].resource_id]["name"] == "dep-wn-5"
    assert cloud.state.servers[grown[5].resource_id]["metadata"][TAG_INDEX] == "5"
    openstack.delete("dep")
    assert cloud.tagged("dep") == []


@pytest.mark.parametrize("status", [403, 413])
def test_group_short_of_quota_reports_each_missing_index(openstack: OpenStackBackend, cloud: OpenStackStandIn,
                                                         status: int) -> None:
    cloud.quota_instances, cloud.quota_status = 2, status
    with pytest.raises(ResourceCreateError) as err:
        openstack.create_group(group("dep", "wn", range(5), endpoint=PUBLIC_HTTP))
    assert err.value.provider == "openstack" and err.value.resource == "dep/wn"
    assert "server(s) [2, 3, 4] of node 'wn'" in str(err.value)
    assert "#2, #3, #4: Nova made 2 of the 5 servers asked" in str(err.value)
    # the two Nova made are kept (with their floating IPs) for a retry, or the attempt's cleanup
    assert sorted(r.index for r in openstack.describe("dep", "wn")) == [0, 1]
    assert len(cloud.state.floating_ips) == 2 and len(cloud.state.security_groups) == 1
    cloud.quota_instances = None
    before = openstack.api_calls()
    made = openstack.create_group(group("dep", "wn", range(5), endpoint=PUBLIC_HTTP))
    assert calls_since(openstack, before)["POST servers"] == 1
    assert [r.index for r in made] == list(range(5)) and len(live_servers(cloud, "dep")) == 5
    openstack.delete("dep")
    assert cloud.tagged("dep") == []


def test_group_launch_refused_leaves_nothing(openstack: OpenStackBackend, cloud: OpenStackStandIn) -> None:
    cloud.quota_instances, cloud.quota_status = 0, 413  # not even min_count (1) fits: Nova makes nothing
    with pytest.raises(ResourceCreateError) as err:
        openstack.create_group(group("dep", "wn", range(3), endpoint=PUBLIC_HTTP))
    assert "server(s) [0, 1, 2]" in str(err.value) and "HTTP 413" in str(err.value)
    assert "Quota exceeded for instances" in str(err.value) and "raise the project's quota" in str(err.value)
    assert openstack.api_calls()["POST servers"] == 1
    assert cloud.tagged("dep") == [], "the node's security group was left"


def test_group_servers_in_error_are_removed_and_named(openstack: OpenStackBackend, cloud: OpenStackStandIn) -> None:
    with pytest.raises(ResourceCreateError) as err:
        openstack.create_group(group("dep", "bad", range(3), os={"image": "broken-image"}))
    assert "server(s) [0, 1, 2] of node 'bad'" in str(err.value) and "went to ERROR: No valid host" in str(err.value)
    assert cloud.tagged("dep") == [] and cloud.state.ports == {}


def test_group_booting_past_the_deadline_times_out_and_is_removed(openstack: OpenStackBackend,
                                                                  cloud: OpenStackStandIn) -> None:
    cloud.build_seconds = 30  # the servers stay in BUILD
    started = time.monotonic()
    with pytest.raises(ResourceTimeoutError) as err:
        openstack.create_group(group("dep", "wn", range(4)), deadline=time.monotonic() + 0.5)
    assert time.monotonic() - started < 9, "the wait outlived the deadline (create_timeout is 10 s)"
    assert "provider_timeout_mins" in str(err.value) and "[0, 1, 2, 3]" in str(err.value)
    assert "BUILD 4" in str(err.value)
    assert cloud.tagged("dep") == [], "the timed-out servers or their group were left behind"


def test_group_on_a_cloud_whose_names_carry_no_count_sets_the_index(openstack: OpenStackBackend,
                                                                    cloud: OpenStackStandIn) -> None:
    cloud.multi_instance_name_template = "%(name)s-%(uuid)s"  # an operator's template, as Nova before Juno
    made = openstack.create_group(group("dep", "wn", range(3)))
    calls = openstack.api_calls()
    assert calls["POST servers"] == 1 and calls["POST servers/{id}/metadata"] == 3, calls
    assert [r.index for r in made] == [0, 1, 2]
    assert {s["id"]: s["metadata"][TAG_INDEX] for s in live_servers(cloud, "dep")} == {
        r.resource_id: str(r.index) for r in made}
    assert [(r.index, r.resource_id) for r in make_backend().describe("dep")] == [(r.index, r.resource_id)
                                                                                   for r in made]
    openstack.delete("dep")
    assert cloud.tagged("dep") == []


def test_a_launch_cut_short_before_its_index_was_set_is_found_and_removed(openstack: OpenStackBackend,
                                                                          cloud: OpenStackStandIn) -> None:
    cloud.multi_instance_name_template = "%(name)s"  # every server of a launch has the same name
    openstack.create_group(group("dep", "wn", range(3)))
    with cloud.lock:  # as if the worker died before it set the index: nothing tells the servers apart
        for server in cloud.state.servers.values():
            server["metadata"].pop(TAG_INDEX)
    left = {s["id"] for s in live_servers(cloud, "dep")}
    assert openstack.describe("dep") == [] and len(left) == 3
    retry = make_backend()
    again = retry.create_group(group("dep", "wn", range(3)))
    assert retry.api_calls()["DELETE servers/{id}"] == 3 and retry.api_calls()["POST servers"] == 1
    assert [r.index for r in again] == [0, 1, 2] and len(live_servers(cloud, "dep")) == 3
    assert left.isdisjoint(r.resource_id for r in again), "the servers without an index were kept"
    with cloud.lock:
        for server in cloud.state.servers.values():
            server["metadata"].pop(TAG_INDEX)
    openstack.delete("dep")
    assert cloud.tagged("dep") == []


def test_group_of_which_nova_made_one_gets_its_index_as_metadata(openstack: OpenStackBackend,
                                                                 cloud: OpenStackStandIn) -> None:
    cloud.quota_instances = 1  # Nova names a lone server of a multiple create without the count
    with pytest.raises(ResourceCreateError, match=r"server\(s\) \[1, 2, 3\].*Nova made 1 of the 4"):
        openstack.create_group(group("dep", "wn", range(4)))
    (server,) = live_servers(cloud, "dep")
    assert server["name"] == "dep-wn-launch" and server["metadata"][TAG_INDEX] == "0"
    assert [(r.index, r.resource_id) for r in make_backend().describe("dep")] == [(0, server["id"])]
