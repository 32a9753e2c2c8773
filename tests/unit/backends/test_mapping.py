"""TOSCA host/os/endpoint capabilities mapped onto a provider's sizes, images and firewall rules."""

from __future__ import annotations

import pytest

from airflow_cloud_paas.backends.base import ResourceSpec
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
from airflow_cloud_paas.exceptions import UnsupportedNodeError

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
