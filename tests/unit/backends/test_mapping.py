"""TOSCA host/os/endpoint capabilities mapped onto a provider's sizes, images and firewall rules."""

from __future__ import annotations

import pytest

from airflow_cloud_paas.backends.base import ResourceSpec
from airflow_cloud_paas.backends.mapping import (
    HOSTED_ENDPOINTS,
    PRIVATE_RANGES,
    HostRequirements,
    ImageRequirements,
    Rule,
    Size,
    security_rules,
    select_image,
    select_size,
    size_mb,
)
from airflow_cloud_paas.exceptions import ToscaValidationError, UnsupportedNodeError

SIZES = [
    Size("m1.small", 1, 2048, 20),
    Size("m1.medium", 2, 4096, 40),
    Size("m1.large", 4, 8192, 80),
    Size("g1.a100", 8, 65536, 200, gpus=1, gpu_model="A100"),
    Size("m1.medium-cheap", 2, 4096, 40, price=0.01),
]


def spec(**caps) -> ResourceSpec:
    return ResourceSpec("dep", "vm", 0, "tosca.nodes.indigo.Compute", capabilities=caps)


@pytest.mark.parametrize(
    ("value", "mb"), [("4 GB", 4096), ("512 MiB", 512), ("1.5 GiB", 1536), (2048, 2048), ("100", 100), (None, None)]
)
def test_size_units(value, mb):
    assert size_mb(value) == mb


def test_bad_size_is_an_error_naming_the_field():
    with pytest.raises(UnsupportedNodeError, match="host.mem_size"):
        HostRequirements.from_spec(spec(host={"mem_size": "lots"}), "aws")


def test_smallest_size_that_fits_then_cheapest():
    req = HostRequirements.from_spec(spec(host={"num_cpus": 2, "mem_size": "3 GB"}), "aws")
    # equal sizes: an unpriced one sorts as free, then by name
    assert select_size(req, SIZES, provider="aws", resource="dep/vm").name == "m1.medium"
    cheaper = [Size("a", 2, 4096, price=0.2), Size("b", 2, 4096, price=0.1)]
    assert select_size(req, cheaper, provider="aws", resource="dep/vm").name == "b"


def test_gpu_requirement_picks_the_gpu_size():
    req = HostRequirements.from_spec(spec(host={"num_gpus": 1, "gpu_model": "a100"}), "aws")
    assert select_size(req, SIZES, provider="aws", resource="dep/vm").name == "g1.a100"


def test_nothing_fits_is_a_clear_error():
    req = HostRequirements.from_spec(spec(host={"num_cpus": 64}), "openstack")
    with pytest.raises(UnsupportedNodeError) as info:
        select_size(req, SIZES, provider="openstack", resource="dep/vm")
    assert "[openstack]" in str(info.value) and "dep/vm" in str(info.value) and "64 CPUs" in str(info.value)


def test_explicit_instance_type_must_exist_and_fit():
    req = HostRequirements.from_spec(spec(host={"instance_type": "m1.large"}), "aws")
    assert select_size(req, SIZES, provider="aws", resource="r").name == "m1.large"
    with pytest.raises(UnsupportedNodeError, match="not offered"):
        select_size(HostRequirements(instance_type="x9.huge"), SIZES, provider="aws", resource="r")
    with pytest.raises(UnsupportedNodeError, match="does not meet"):
        select_size(HostRequirements(instance_type="m1.small", num_cpus=4), SIZES, provider="aws", resource="r")


def test_image_selection():
    images = [
        {"id": "i-1", "name": "ubuntu-20.04", "created": "2020"},
        {"id": "i-2", "name": "ubuntu-22.04", "created": "2022"},
        {"id": "i-3", "name": "centos-7", "created": "2019"},
    ]
    req = ImageRequirements.from_spec(spec(os={"distribution": "ubuntu", "version": 22.04}))
    assert select_image(req, images, provider="p", resource="r")["id"] == "i-2"
    assert select_image(ImageRequirements(image="ost://cloud/i-3"), images, provider="p", resource="r")["id"] == "i-3"
    with pytest.raises(UnsupportedNodeError, match="image 'nope' not found"):
        select_image(ImageRequirements(image="nope"), images, provider="p", resource="r")
    with pytest.raises(UnsupportedNodeError, match="no image"):
        select_image(ImageRequirements(distribution="debian"), images, provider="p", resource="r")


def test_endpoint_ports_become_rules_and_public_ip():
    s = spec(endpoint={"network_name": "PUBLIC", "ports": {"http": {"protocol": "tcp", "source": 80},
                                                           "dns": {"protocol": "udp", "source": 53}}})
    rules, public = security_rules(s)
    assert public is True
    assert set(rules) == {Rule(80, "tcp"), Rule(53, "udp")}
    assert security_rules(spec(endpoint={"network_name": "PRIVATE"})) == ((), False)


def test_a_port_range_becomes_one_rule_with_its_end():
    ports = {"daemons": {"protocol": "tcp", "source_range": [9700, 9800]}, "one": {"source_range": [22, 22]}}
    rules, _ = security_rules(spec(endpoint={"network_name": "PUBLIC", "ports": ports}))
    assert set(rules) == {Rule(9700, "tcp", "0.0.0.0/0", 9800), Rule(22, "tcp")}
    rules, _ = security_rules(spec(endpoint={"network_name": "PUBLIC", "port_range": [9700, "UNBOUNDED"]}))
    assert rules == (Rule(9700, "tcp", "0.0.0.0/0", 65535),)


def hosted(**caps) -> ResourceSpec:
    """A VM whose hosted node ``condor`` has these endpoint capabilities (as the deployer gives them)."""
    return spec(host={"num_cpus": 1}, **{HOSTED_ENDPOINTS: {"condor": caps}})


def test_hosted_endpoints_open_on_the_host_to_the_private_network_unless_public():
    private = hosted(daemons={"network_name": "PRIVATE", "port_range": [9700, 9800],
                              "ports": {"shared": {"protocol": "tcp", "source": 9618}}})
    rules, public = security_rules(private, private=("10.1.0.0/16",))
    assert public is False
    assert set(rules) == {Rule(9700, "tcp", "10.1.0.0/16", 9800), Rule(9618, "tcp", "10.1.0.0/16")}
    # without the backend's own range: the RFC 1918 ranges, one rule each
    rules, _ = security_rules(private)
    assert {r.cidr for r in rules} == set(PRIVATE_RANGES) and len(rules) == 2 * len(PRIVATE_RANGES)
    # no network_name is TOSCA's default, PRIVATE; a hosted endpoint's port opens without one too
    rules, _ = security_rules(hosted(api={"port": 8080}), private=("10.1.0.0/16",))
    assert rules == (Rule(8080, "tcp", "10.1.0.0/16"),)
    rules, public = security_rules(hosted(web={"network_name": "PUBLIC", "port": 443}), private=("10.1.0.0/16",))
    assert (rules, public) == ((Rule(443, "tcp"),), True)


def test_any_port_opens_nothing_and_the_private_range_is_asked_only_when_needed():
    asked = []

    def vpc() -> tuple[str, ...]:
        asked.append(1)
        return ("172.31.0.0/16",)

    assert security_rules(hosted(daemons={"port_range": [0, 0]}), private=vpc) == ((), False)
    assert asked == []
    rules, _ = security_rules(hosted(a={"port_range": [9700, 9800]}, b={"port": 9618}), private=vpc)
    assert set(rules) == {Rule(9700, "tcp", "172.31.0.0/16", 9800), Rule(9618, "tcp", "172.31.0.0/16")}
    assert asked == [1]  # once per call, however many rules


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ([9800, 9700], "starts above its end"),
        ([9700, 0], "only one bound at 0"),
        ([0, 9800], "only one bound at 0"),
        ([9700, 70000], "outside 0-65535"),
        ([9700], "is not a port range"),
        (["low", 9800], "is not a port number"),
    ],
)
def test_a_bad_range_is_a_validation_error_naming_the_hosted_node_and_field(value, message):
    with pytest.raises(ToscaValidationError, match=message) as caught:
        security_rules(hosted(daemons={"port_range": value}))
    assert (caught.value.node, caught.value.field) == ("condor", "capabilities.daemons.port_range")
    with pytest.raises(ToscaValidationError, match=message) as caught:
        security_rules(spec(endpoint={"ports": {"pool": {"source_range": value}}}))
    assert (caught.value.node, caught.value.field) == ("vm", "capabilities.endpoint.ports.pool.source_range")
