"""The AWS backend against a real moto server process, through the amazon provider's EC2Hook.

The tests look at the emulated EC2 with their own boto3 client (never through the backend); faults are
injected at the HTTP boundary by a loopback proxy in front of moto (``FaultyEC2Endpoint``).
"""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import Iterator

import pytest
from unit.backends.aws_fixtures import (  # noqa: F401 - moto_server is a fixture
    FaultyEC2Endpoint,
    MotoServer,
    aws_connection,
    moto_server,
    still_booting,
    still_creating,
    tag_value,
)
from unit.backends.contract import BackendContract, Probe, SpecFactory

from airflow_cloud_paas.backends import get_backend
from airflow_cloud_paas.backends.aws import LAUNCH_INDICES_TAG, AWSBackend
from airflow_cloud_paas.backends.base import TAG_DEPLOYMENT, TAG_INDEX, TAG_NODE, Resource, ResourceSpec, ResourceState
from airflow_cloud_paas.exceptions import BackendError, ResourceCreateError, ResourceTimeoutError, UnsupportedNodeError

CONN_ID = "aws_cloud_paas_test"
COMPUTE = ("tosca.nodes.indigo.Compute", "tosca.nodes.Compute", "tosca.nodes.Root")
STORAGE = ("tosca.nodes.BlockStorage", "tosca.nodes.Root")
SOFTWARE = ("tosca.nodes.indigo.Galaxy", "tosca.nodes.WebServer", "tosca.nodes.SoftwareComponent", "tosca.nodes.Root")
UBUNTU = {"distribution": "ubuntu", "version": "16.04"}
LIVE = ["pending", "running", "stopping", "stopped"]


def compute(deployment_id: str, node_name: str, index: int = 0, *, host=None, os=None, **kw) -> ResourceSpec:
    capabilities = {"host": host or {"num_cpus": 1, "mem_size": "1 GB"}, "os": os or UBUNTU, **kw.pop("caps", {})}
    return ResourceSpec(deployment_id, node_name, index, COMPUTE[0], COMPUTE, capabilities=capabilities, **kw)


def live_instances(ec2, deployment_id: str) -> list[dict]:
    pages = ec2.describe_instances(Filters=[{"Name": f"tag:{TAG_DEPLOYMENT}", "Values": [deployment_id]},
                                            {"Name": "instance-state-name", "Values": LIVE}])["Reservations"]
    return [i for r in pages for i in r["Instances"]]


def by_tag(ec2, method: str, key: str, deployment_id: str) -> list[dict]:
    return getattr(ec2, method)(Filters=[{"Name": f"tag:{TAG_DEPLOYMENT}", "Values": [deployment_id]}])[key]


class AWSSpecs(SpecFactory):
    def compute(self, deployment_id: str, node_name: str, index: int = 0) -> ResourceSpec:
        return compute(deployment_id, node_name, index)

    def service(self, deployment_id: str, node_name: str, index: int = 0) -> ResourceSpec:
        # on AWS what really runs is an instance; web ports open through its security group
        ports = {"http": {"protocol": "tcp", "source": 80}}
        return compute(deployment_id, node_name, index, caps={"endpoint": {"network_name": "PUBLIC", "ports": ports}})

    def failing(self, deployment_id: str, node_name: str, index: int = 0) -> ResourceSpec:
        # the instance starts, then attaching a volume that no longer exists fails (InvalidVolume.NotFound)
        ghost = Resource(deployment_id, "disk", 0, "aws", "vol-0123456789abcdef0", ResourceState.RUNNING,
                         {"volume_id": "vol-0123456789abcdef0"})
        return compute(deployment_id, node_name, index, requirements={"local_storage": (ghost,)})


class EC2Probe(Probe):
    """Reads the emulated EC2 with a plain boto3 client."""

    def __init__(self, ec2) -> None:
        self.ec2 = ec2

    def _instance(self, instance_id: str) -> dict:
        return self.ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]

    def exists(self, resource: Resource) -> bool:
        if resource.attributes.get("kind") == "volume":
            volumes = self.ec2.describe_volumes(Filters=[{"Name": "volume-id", "Values": [resource.resource_id]}])
            return any(v["State"] in ("available", "in-use") for v in volumes["Volumes"])
        return self._instance(resource.resource_id)["State"]["Name"] == "running"

    def count(self, deployment_id: str) -> int:
        return len(live_instances(self.ec2, deployment_id))

    def tags(self, resource: Resource) -> dict[str, str]:
        return {t["Key"]: t["Value"] for t in self._instance(resource.resource_id)["Tags"]}

    def stop_behind_backend(self, resource: Resource) -> None:
        self.ec2.stop_instances(InstanceIds=[resource.resource_id])


@pytest.fixture(scope="session")
def ec2(moto_server: MotoServer):  # noqa: F811
    return moto_server.boto3_client()


@pytest.fixture(scope="session")
def aws_backend(moto_server: MotoServer) -> AWSBackend:  # noqa: F811
    aws_connection(CONN_ID, moto_server.url)
    # one backend for the session: the region's instance types are fetched once and cached
    return AWSBackend(CONN_ID, wait_timeout=30, poll_interval=0.05)


@pytest.fixture
def dep() -> Iterator[str]:
    return f"aws-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def clean(aws_backend: AWSBackend, ec2, dep: str) -> Iterator[None]:
    yield
    aws_backend.delete(dep)
    assert live_instances(ec2, dep) == [], "delete(deployment) left instances behind"


class TestAWSBackendContract(BackendContract):
    @pytest.fixture
    def backend(self, aws_backend: AWSBackend) -> AWSBackend:
        return aws_backend

    @pytest.fixture
    def specs(self) -> SpecFactory:
        return AWSSpecs()

    @pytest.fixture
    def probe(self, ec2) -> Probe:
        return EC2Probe(ec2)


# ---------------------------------------------------------------------- mapping
def test_smallest_instance_type_that_fits(aws_backend: AWSBackend, ec2, dep: str, clean) -> None:
    # the expectation is computed here from the raw API answer, not by the backend's mapping code
    raw = [t for page in ec2.get_paginator("describe_instance_types").paginate() for t in page["InstanceTypes"]]
    fitting = [t for t in raw if t["VCpuInfo"]["DefaultVCpus"] >= 2 and t["MemoryInfo"]["SizeInMiB"] >= 7 * 1024
               and not t.get("GpuInfo") and "x86_64" in t["ProcessorInfo"]["SupportedArchitectures"]]
    expected = min(fitting, key=lambda t: (t["VCpuInfo"]["DefaultVCpus"], t["MemoryInfo"]["SizeInMiB"],
                                           t["InstanceType"]))["InstanceType"]
    made = aws_backend.create(compute(dep, "vm", host={"num_cpus": 2, "mem_size": "7 GB"}))
    (instance,) = live_instances(ec2, dep)
    assert instance["InstanceType"] == expected == made.attributes["instance_type"]
    assert instance["ImageId"] == made.attributes["image_id"]
    image = ec2.describe_images(ImageIds=[instance["ImageId"]])["Images"][0]
    assert "ubuntu" in image["Name"] and "16.04" in image["Name"]

    explicit = aws_backend.create(compute(dep, "big", host={"instance_type": "m5.large"}))
    assert explicit.attributes["instance_type"] == "m5.large"


def test_requirement_nothing_fits_fails_before_anything_exists(aws_backend: AWSBackend, ec2, dep: str) -> None:
    spec = compute(dep, "monster", host={"num_cpus": 4096, "mem_size": "64 TB"})
    with pytest.raises(UnsupportedNodeError) as err:
        aws_backend.check(spec)
    assert err.value.provider == "aws" and "monster" in str(err.value)
    with pytest.raises(UnsupportedNodeError):
        aws_backend.create(spec)
    assert live_instances(ec2, dep) == []
    assert by_tag(ec2, "describe_security_groups", "SecurityGroups", dep) == []


def test_image_not_found_is_typed_and_creates_nothing(aws_backend: AWSBackend, ec2, dep: str) -> None:
    for os_cap in ({"image": "ami-00000000deadbeef"}, {"distribution": "plan9", "version": "4"}):
        spec = compute(dep, "vm", os=os_cap, caps={"endpoint": {"ports": {"ssh": {"source": 22}}}})
        with pytest.raises(UnsupportedNodeError) as err:
            aws_backend.create(spec)
        assert err.value.provider == "aws" and "vm" in str(err.value) and "image" in str(err.value)
    assert live_instances(ec2, dep) == []
    assert by_tag(ec2, "describe_security_groups", "SecurityGroups", dep) == []
    assert by_tag(ec2, "describe_key_pairs", "KeyPairs", dep) == []


def test_security_group_rules_from_endpoint_ports(aws_backend: AWSBackend, ec2, dep: str, clean) -> None:
    ports = {"http": {"protocol": "tcp", "source": 80}, "https": {"protocol": "tcp", "source": 443},
             "dns": {"protocol": "udp", "source": 53, "remote_cidr": "10.0.0.0/8"}}
    made = aws_backend.create(compute(dep, "web", caps={"endpoint": {"network_name": "PUBLIC", "ports": ports}}))
    aws_backend.create(compute(dep, "web", 1, caps={"endpoint": {"network_name": "PUBLIC", "ports": ports}}))
    (group,) = by_tag(ec2, "describe_security_groups", "SecurityGroups", dep)
    assert made.attributes["security_groups"] == [group["GroupId"]]
    rules = {(p["IpProtocol"], p["FromPort"], r["CidrIp"]) for p in group["IpPermissions"] for r in p["IpRanges"]}
    assert rules == {("tcp", 80, "0.0.0.0/0"), ("tcp", 443, "0.0.0.0/0"), ("udp", 53, "10.0.0.0/8")}
    tags = {t["Key"]: t["Value"] for t in group["Tags"]}
    assert (tags[TAG_DEPLOYMENT], tags[TAG_NODE]) == (dep, "web")
    aws_backend.delete(dep, "web", 1)
    assert by_tag(ec2, "describe_security_groups", "SecurityGroups", dep), "group removed while index 0 uses it"
    aws_backend.delete(dep)
    assert by_tag(ec2, "describe_security_groups", "SecurityGroups", dep) == []


def test_key_pair_user_data_and_volume(aws_backend: AWSBackend, ec2, dep: str, clean) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    public_key = ed25519.Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    volume = aws_backend.create(ResourceSpec(dep, "disk", 0, STORAGE[0], STORAGE, properties={"size": "3 GB"}))
    assert volume.state == ResourceState.RUNNING and volume.attributes["size_gb"] == 3
    cloud_init = "#cloud-config\nruncmd:\n  - echo hello\n"
    host = aws_backend.create(compute(
        dep, "vm", os={**UBUNTU, "credential": {"user": "ubuntu", "token_type": "public_key", "token": public_key}},
        properties={"user_data": cloud_init}, requirements={"local_storage": (volume,)}))

    (pair,) = by_tag(ec2, "describe_key_pairs", "KeyPairs", dep)
    assert host.attributes["key_name"] == pair["KeyName"]
    user_data = ec2.describe_instance_attribute(InstanceId=host.resource_id, Attribute="userData")
    assert base64.b64decode(user_data["UserData"]["Value"]).decode() == cloud_init
    (raw_volume,) = ec2.describe_volumes(VolumeIds=[volume.resource_id])["Volumes"]
    assert raw_volume["State"] == "in-use"
    assert raw_volume["Attachments"][0]["InstanceId"] == host.resource_id
    assert raw_volume["AvailabilityZone"] == host.attributes["availability_zone"]

    # a software node hosted on the instance is recorded on it and listed with the deployment
    galaxy = aws_backend.create(ResourceSpec(dep, "galaxy", 0, SOFTWARE[0], SOFTWARE,
                                             requirements={"host": (host,)}))
    assert galaxy.state == ResourceState.RUNNING and galaxy.attributes["host_id"] == host.resource_id
    assert [(r.node_name, r.attributes["kind"]) for r in aws_backend.describe(dep)] == [
        ("disk", "volume"), ("galaxy", "software"), ("vm", "instance")]

    deleted = aws_backend.delete(dep)
    assert sorted(r.node_name for r in deleted) == ["disk", "galaxy", "vm"]
    assert by_tag(ec2, "describe_key_pairs", "KeyPairs", dep) == []
    assert [v for v in by_tag(ec2, "describe_volumes", "Volumes", dep) if v["State"] != "deleted"] == []


# ---------------------------------------------------------------------- idempotency and faults
def test_retry_with_a_new_backend_returns_the_same_instance(aws_backend: AWSBackend, ec2, dep: str, clean) -> None:
    first = aws_backend.create(compute(dep, "vm"))
    again = get_backend("aws", conn_id=CONN_ID, poll_interval=0.05).create(compute(dep, "vm"))
    assert again.resource_id == first.resource_id
    assert [i["InstanceId"] for i in live_instances(ec2, dep)] == [first.resource_id]


@pytest.fixture
def faulty(moto_server: MotoServer) -> Iterator[tuple[FaultyEC2Endpoint, AWSBackend]]:  # noqa: F811
    proxy = FaultyEC2Endpoint(moto_server.url)
    url = proxy.start()
    # one attempt per call: a 5xx is not retried for seconds by botocore's default policy
    aws_connection("aws_faulty", url, config_kwargs={"retries": {"mode": "standard", "max_attempts": 1}})
    yield proxy, AWSBackend("aws_faulty", wait_timeout=30, poll_interval=0.05)
    proxy.stop()


def test_second_instance_fails_at_launch(faulty, aws_backend: AWSBackend, ec2, dep: str) -> None:
    proxy, backend = faulty
    proxy.rules.append(lambda action, params: (400, "InstanceLimitExceeded") if action == "RunInstances"
                       and tag_value(params, TAG_INDEX) == "1" else None)
    backend.create(compute(dep, "wn", 0))
    with pytest.raises(ResourceCreateError) as err:
        backend.create(compute(dep, "wn", 1))
    assert err.value.provider == "aws" and err.value.resource == f"{dep}/wn/1"
    assert "InstanceLimitExceeded" in str(err.value)
    assert [i["Tags"] for i in live_instances(ec2, dep)] and len(live_instances(ec2, dep)) == 1
    backend.delete(dep)
    assert live_instances(ec2, dep) == []
    assert by_tag(ec2, "describe_security_groups", "SecurityGroups", dep) == []


def test_5xx_after_launch_terminates_the_instance(faulty, ec2, dep: str) -> None:
    proxy, backend = faulty
    volume = backend.create(ResourceSpec(dep, "disk", 0, STORAGE[0], STORAGE, properties={"size": 1}))
    proxy.rules.append(lambda action, params: (500, "InternalError") if action == "AttachVolume" else None)
    with pytest.raises(ResourceCreateError) as err:
        backend.create(compute(dep, "vm", requirements={"local_storage": (volume,)}))
    assert "RunInstances" in proxy.seen, "the instance was never launched: the fault came too early"
    assert err.value.resource == f"{dep}/vm/0" and "InternalError" in str(err.value)
    assert live_instances(ec2, dep) == [], "a half-made instance was left behind"
    assert by_tag(ec2, "describe_security_groups", "SecurityGroups", dep) == []
    proxy.rules.clear()
    backend.delete(dep)
    assert [v for v in by_tag(ec2, "describe_volumes", "Volumes", dep) if v["State"] != "deleted"] == []


def test_instance_booting_past_the_deadline_times_out_and_is_terminated(faulty, ec2, dep: str) -> None:
    proxy, backend = faulty
    proxy.rewrites.append(still_booting)
    started = time.monotonic()
    with pytest.raises(ResourceTimeoutError) as err:
        backend.create(compute(dep, "vm"), deadline=time.monotonic() + 0.5)
    # ignoring the deadline would wait the backend's 30 s; what else it took (moto's first instance-type listing,
    # ~7 s cold, on a loaded machine) stays well below that
    assert time.monotonic() - started < 29, "the wait outlived the deadline (wait_timeout is 30 s)"
    assert err.value.provider == "aws" and err.value.resource == f"{dep}/vm/0"
    assert "provider_timeout_mins" in str(err.value) and "last seen: pending" in str(err.value)
    proxy.rewrites.clear()
    assert live_instances(ec2, dep) == [], "the timed-out instance was left behind"
    assert by_tag(ec2, "describe_security_groups", "SecurityGroups", dep) == []


def test_volume_wait_honours_the_deadline_and_removes_the_volume(faulty, ec2, dep: str) -> None:
    proxy, backend = faulty
    proxy.rewrites.append(still_creating)
    started = time.monotonic()
    with pytest.raises(ResourceTimeoutError) as err:
        backend.create(ResourceSpec(dep, "disk", 0, STORAGE[0], STORAGE, properties={"size": 1}),
                       deadline=time.monotonic() + 0.5)
    assert time.monotonic() - started < 29, "the volume wait ignored the deadline (wait_timeout is 30 s)"
    assert "provider_timeout_mins" in str(err.value) and "last seen: creating" in str(err.value)
    proxy.rewrites.clear()
    assert [v for v in by_tag(ec2, "describe_volumes", "Volumes", dep) if v["State"] != "deleted"] == []
    # the backend's own timeout cuts a wait too, and says so
    slow = AWSBackend("aws_faulty", wait_timeout=0.3, poll_interval=0.05)
    proxy.rewrites.append(still_creating)
    with pytest.raises(ResourceTimeoutError, match="own timeout of 0.3 s ran out .raise wait_timeout"):
        slow.create(ResourceSpec(dep, "disk", 0, STORAGE[0], STORAGE, properties={"size": 1}))
    proxy.rewrites.clear()
    assert [v for v in by_tag(ec2, "describe_volumes", "Volumes", dep) if v["State"] != "deleted"] == []


def test_delete_finds_leftovers_of_a_crashed_deployment(aws_backend: AWSBackend, ec2, dep: str) -> None:
    made = aws_backend.create(compute(dep, "vm", caps={"endpoint": {"ports": {"ssh": {"source": 22}}}}))
    volume = aws_backend.create(ResourceSpec(dep, "disk", 0, STORAGE[0], STORAGE, properties={"size": 1}))
    # the instance was terminated behind the backend's back; its group and the volume stay
    ec2.terminate_instances(InstanceIds=[made.resource_id])
    deleted = aws_backend.delete(dep)
    assert [r.resource_id for r in deleted] == [volume.resource_id]
    assert by_tag(ec2, "describe_security_groups", "SecurityGroups", dep) == []
    assert [v for v in by_tag(ec2, "describe_volumes", "Volumes", dep) if v["State"] != "deleted"] == []


def test_unknown_connection_is_a_clear_error(moto_server: MotoServer) -> None:  # noqa: F811
    with pytest.raises(BackendError) as err:
        AWSBackend("aws_no_such_conn").describe("any")
    assert err.value.provider == "aws" and "aws_no_such_conn" in str(err.value) and "not defined" in str(err.value)


def test_unsupported_volume_property(aws_backend: AWSBackend) -> None:
    spec = ResourceSpec("d", "disk", 0, STORAGE[0], STORAGE, properties={"volume_id": "vol-123"})
    with pytest.raises(UnsupportedNodeError, match="volume_id"):
        aws_backend.check(spec)


# ---------------------------------------------------------------------- a node's instances together
#: what a backend lists once and caches (an earlier test of the session may have paid for it)
ONCE_PER_BACKEND = ("DescribeInstanceTypes", "DescribeImages", "DescribeAvailabilityZones")


def calls_since(backend: AWSBackend, before: dict[str, int]) -> dict[str, int]:
    return {op: n - before.get(op, 0) for op, n in backend.api_calls().items() if n > before.get(op, 0)}


def group_specs(dep: str, node: str, indices) -> list[ResourceSpec]:
    ports = {"http": {"protocol": "tcp", "source": 80}}
    return [compute(dep, node, i, caps={"endpoint": {"network_name": "PUBLIC", "ports": ports}}) for i in indices]


def test_group_launches_in_one_call_and_deletes_in_bulk(aws_backend: AWSBackend, ec2, dep: str, clean) -> None:
    before = aws_backend.api_calls()
    made = aws_backend.create_group(group_specs(dep, "wn", range(6)))
    calls = calls_since(aws_backend, before)
    assert calls["RunInstances"] == 1
    assert calls["DescribeSecurityGroups"] == calls["CreateSecurityGroup"] == 1, "the group is ensured once"
    # one look for what exists, then one per poll round (moto runs instances at once: one round)
    assert calls["DescribeInstances"] <= 3, calls
    # the region's sizes, images and zones are listed once per backend (cached): not the node's cost
    assert sum(n for op, n in calls.items() if op not in ONCE_PER_BACKEND) <= 8, calls
    assert [r.index for r in made] == list(range(6)) and {r.state for r in made} == {ResourceState.RUNNING}

    raw = live_instances(ec2, dep)
    assert len(raw) == 6 and len({i["InstanceId"] for i in raw}) == 6
    assert {(tag_of(i, TAG_NODE), tag_of(i, LAUNCH_INDICES_TAG)) for i in raw} == {("wn", "0-5")}
    # the index of each instance is its launch position in the launch's index list, read back the same by
    # another backend (a retried task): EC2's AmiLaunchIndex, not the order of any listing
    by_launch = {i["InstanceId"]: i["AmiLaunchIndex"] for i in raw}
    assert {r.resource_id: r.index for r in made} == by_launch
    other = AWSBackend(CONN_ID, wait_timeout=30, poll_interval=0.05)
    assert [(r.index, r.resource_id) for r in other.describe(dep, "wn")] == [(r.index, r.resource_id) for r in made]
    (group,) = by_tag(ec2, "describe_security_groups", "SecurityGroups", dep)
    assert {g for r in made for g in r.attributes["security_groups"]} == {group["GroupId"]}

    # one instance by index, through the single path, is the same one
    assert aws_backend.create(group_specs(dep, "wn", [4])[0]).resource_id == made[4].resource_id
    aws_backend.delete(dep, "wn", 4)
    assert sorted(r.index for r in aws_backend.describe(dep, "wn")) == [0, 1, 2, 3, 5]

    before = aws_backend.api_calls()
    deleted = aws_backend.delete(dep)
    calls = calls_since(aws_backend, before)
    assert calls["TerminateInstances"] == 1
    assert calls["DescribeInstances"] <= 4, calls  # the listing, one wait round (moto), what is left
    assert sorted(r.index for r in deleted) == [0, 1, 2, 3, 5]
    assert live_instances(ec2, dep) == []
    assert by_tag(ec2, "describe_security_groups", "SecurityGroups", dep) == []


def test_group_rerun_launches_only_the_missing_indices(aws_backend: AWSBackend, ec2, dep: str, clean) -> None:
    first = aws_backend.create_group(group_specs(dep, "wn", range(5)))
    # two instances vanish behind the backend's back (a console user, a spot reclaim)
    ec2.terminate_instances(InstanceIds=[first[1].resource_id, first[3].resource_id])
    retry = AWSBackend(CONN_ID, wait_timeout=30, poll_interval=0.05)
    again = retry.create_group(group_specs(dep, "wn", range(5)))
    calls = retry.api_calls()
    assert calls["RunInstances"] == 1
    assert "CreateSecurityGroup" not in calls, "the node's existing group is reused"
    assert [r.index for r in again] == list(range(5))
    assert [again[i].resource_id for i in (0, 2, 4)] == [first[i].resource_id for i in (0, 2, 4)]
    assert {again[1].resource_id, again[3].resource_id}.isdisjoint({r.resource_id for r in first})
    assert len(live_instances(ec2, dep)) == 5
    relaunched = [i for i in live_instances(ec2, dep) if i["InstanceId"] in (again[1].resource_id,
                                                                           again[3].resource_id)]
    assert {tag_of(i, LAUNCH_INDICES_TAG) for i in relaunched} == {"1,3"}
    # and a third run finds everything: no launch at all
    third = AWSBackend(CONN_ID, wait_timeout=30, poll_interval=0.05)
    assert [r.resource_id for r in third.create_group(group_specs(dep, "wn", range(5)))] == [
        r.resource_id for r in again]
    assert "RunInstances" not in third.api_calls()


class CapacityShortfall:
    """Stand-in for a cloud that makes fewer instances than a launch asked, at the SDK boundary.

    moto always makes what is asked (its ``MinCount``); EC2 with a ``MinCount`` below ``MaxCount``, or another
    cloud's bulk API, may make fewer. Capping the request on its way out makes moto really launch only
    ``capacity`` instances, so the backend sees exactly such an answer.

    :param capacity: how many instances a launch makes at most
    """

    def __init__(self, backend: AWSBackend, capacity: int) -> None:
        self.backend, self.capacity = backend, capacity

    def _cap(self, params: dict, **_) -> None:
        params["MinCount"] = min(params["MinCount"], self.capacity)
        params["MaxCount"] = min(params["MaxCount"], self.capacity)

    def __enter__(self) -> CapacityShortfall:
        self.backend.client.meta.events.register("before-parameter-build.ec2.RunInstances", self._cap)
        return self

    def __exit__(self, *exc) -> None:
        self.backend.client.meta.events.unregister("before-parameter-build.ec2.RunInstances", self._cap)


def test_group_short_of_capacity_reports_each_missing_index(ec2, dep: str, clean) -> None:
    backend = AWSBackend(CONN_ID, wait_timeout=30, poll_interval=0.05)
    with CapacityShortfall(backend, 2), pytest.raises(ResourceCreateError) as err:
        backend.create_group(group_specs(dep, "wn", range(5)))
    assert err.value.provider == "aws" and err.value.resource == f"{dep}/wn"
    assert "instance(s) [2, 3, 4] of node 'wn'" in str(err.value)
    assert "#2, #3, #4: EC2 launched 2 of the 5 instances asked" in str(err.value)
    # what started is kept for a retry (or the attempt's cleanup), and a retry completes the node
    assert sorted(r.index for r in backend.describe(dep, "wn")) == [0, 1]
    assert by_tag(ec2, "describe_security_groups", "SecurityGroups", dep), "the group of running instances went"
    before = backend.api_calls()
    made = backend.create_group(group_specs(dep, "wn", range(5)))
    assert calls_since(backend, before)["RunInstances"] == 1
    assert [r.index for r in made] == list(range(5)) and len(live_instances(ec2, dep)) == 5


def test_group_launch_refused_leaves_nothing(faulty, ec2, dep: str) -> None:
    proxy, backend = faulty
    proxy.rules.append(lambda action, params: (400, "InsufficientInstanceCapacity") if action == "RunInstances"
                       else None)
    with pytest.raises(ResourceCreateError) as err:
        backend.create_group(group_specs(dep, "wn", range(3)))
    assert "InsufficientInstanceCapacity" in str(err.value) and "[0, 1, 2]" in str(err.value)
    assert proxy.seen.count("RunInstances") == 1
    assert live_instances(ec2, dep) == []
    assert by_tag(ec2, "describe_security_groups", "SecurityGroups", dep) == [], "the node's group was left"


def test_group_booting_past_the_deadline_times_out_and_is_terminated(faulty, ec2, dep: str) -> None:
    proxy, backend = faulty
    proxy.rewrites.append(still_booting)
    started = time.monotonic()
    with pytest.raises(ResourceTimeoutError) as err:
        backend.create_group(group_specs(dep, "wn", range(4)), deadline=time.monotonic() + 0.5)
    assert time.monotonic() - started < 29, "the wait outlived the deadline (wait_timeout is 30 s)"
    assert "provider_timeout_mins" in str(err.value) and "[0, 1, 2, 3]" in str(err.value)
    assert "pending 4" in str(err.value)
    proxy.rewrites.clear()
    assert live_instances(ec2, dep) == [], "the timed-out instances were left behind"
    assert by_tag(ec2, "describe_security_groups", "SecurityGroups", dep) == []


def tag_of(raw: dict, key: str) -> str | None:
    return {t["Key"]: t["Value"] for t in raw.get("Tags", [])}.get(key)
