"""Inputs checked per run, intrinsic functions evaluated, instance counts and scaling groups."""

from __future__ import annotations

from pathlib import Path

import pytest

from airflow_cloud_paas.exceptions import ToscaInputError, ToscaValidationError
from airflow_cloud_paas.tosca import (
    instance_count,
    load_topology,
    resolve_outputs,
    resolve_value,
    resolved_node,
    resolved_nodes,
    scaling_group,
    validate_inputs,
)
from airflow_cloud_paas.tosca.model import Scalable, Topology

DATA = Path(__file__).resolve().parent / "data"
GOOD = str(DATA / "good.yaml")
PASSWORD = "s3cret-pass"


@pytest.fixture(scope="module")
def topo(tmp_path_factory: pytest.TempPathFactory) -> Topology:
    return load_topology(GOOD, cache_dir=str(tmp_path_factory.mktemp("cache")))


def test_defaults_are_filled_and_digit_strings_become_integers(topo: Topology) -> None:
    values = validate_inputs(topo, {"db_password": PASSWORD, "web_count": "3", "labels": {"team": "a"}})
    assert values == {
        "web_count": 3,
        "web_mem": "2 GB",
        "db_password": PASSWORD,
        "db_engine": "postgres",
        "admin_emails": ["admin@example.org"],
        "labels": {"team": "a"},
        "debug": False,
        "ratio": 0.5,
    }
    assert validate_inputs(topo, {"db_password": PASSWORD, "labels": None})["labels"] is None


def test_missing_required_input(topo: Topology) -> None:
    with pytest.raises(ToscaInputError) as caught:
        validate_inputs(topo, {})
    err = caught.value
    assert (err.file, err.node, err.field) == (GOOD, "db_password", "inputs")
    assert "required input" in str(err) and GOOD in str(err) and "input 'db_password'" in str(err)


def test_unknown_input_name(topo: Topology) -> None:
    with pytest.raises(ToscaInputError, match="unknown input") as caught:
        validate_inputs(topo, {"db_password": PASSWORD, "web_cuont": 2})
    assert caught.value.node == "web_cuont" and "web_count" in str(caught.value)


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("web_count", "many", "must be an integer"),
        ("web_count", 2.5, "must be an integer"),
        ("web_count", True, "must be an integer"),
        ("debug", "yes", "must be true or false"),
        ("ratio", "0.1", "must be a number"),
        ("web_mem", "lots", "scalar-unit.size"),
        ("db_engine", 3, "must be a string"),
        ("admin_emails", "a@b.c", "must be a list"),
        ("labels", ["x"], "must be a map"),
        ("labels", {"team": 1}, "key 'team' must be a string"),
    ],
)
def test_wrongly_typed_input(topo: Topology, name: str, value: object, says: str) -> None:
    with pytest.raises(ToscaInputError, match=says) as caught:
        validate_inputs(topo, {"db_password": PASSWORD, name: value})
    assert (caught.value.file, caught.value.node, caught.value.field) == (GOOD, name, "type")


@pytest.mark.parametrize(
    ("name", "value", "constraint"),
    [
        ("web_count", 9, "in_range"),
        ("web_count", "0", "in_range"),
        ("web_mem", "512 MB", "greater_or_equal"),
        ("db_engine", "oracle", "valid_values"),
        ("admin_emails", ["admin@example.org", "nobody"], "pattern"),
        ("ratio", 1.0, "less_than"),
    ],
)
def test_constraint_violation(topo: Topology, name: str, value: object, constraint: str) -> None:
    with pytest.raises(ToscaInputError, match=constraint) as caught:
        validate_inputs(topo, {"db_password": PASSWORD, name: value})
    assert (caught.value.node, caught.value.field) == (name, "constraints")


def test_scalar_units_compare_by_magnitude(topo: Topology) -> None:
    assert validate_inputs(topo, {"db_password": PASSWORD, "web_mem": "1024 MiB"})["web_mem"] == "1024 MiB"


def test_secret_values_never_appear_in_errors(topo: Topology) -> None:
    with pytest.raises(ToscaInputError, match="min_length") as caught:
        validate_inputs(topo, {"db_password": "hunter2"})
    assert "hunter2" not in str(caught.value)


def test_resolve_value_replaces_get_input_and_keeps_runtime_functions() -> None:
    inputs = {"name": "web", "ports": [80, 443], "conf": {"a": {"b": 7}}}
    value = {
        "plain": 1,
        "port": {"get_input": ["ports", 1]},
        "deep": {"get_input": ["conf", "a", "b"]},
        "url": {"concat": ["http://", {"get_input": "name"}, ":", {"get_input": ["ports", 0]}]},
        "half": {"concat": ["http://", {"get_attribute": [{"get_input": "name"}, "public_address"]}]},
        "part": {"token": [{"concat": ["a-b", "-c"]}, "-", 2]},
        "list": [{"get_input": "name"}, {"get_property": ["SELF", "port"]}],
    }
    assert resolve_value(value, inputs) == {
        "plain": 1,
        "port": 443,
        "deep": 7,
        "url": "http://web:80",
        "half": {"concat": ["http://", {"get_attribute": ["web", "public_address"]}]},
        "part": "c",
        "list": ["web", {"get_property": ["SELF", "port"]}],
    }


def test_resolve_value_without_the_input_names_it() -> None:
    with pytest.raises(ToscaInputError, match="'missing'") as caught:
        resolve_value({"get_input": "missing"}, {}, file="t.yaml", node="n", field="properties.p")
    assert (caught.value.file, caught.value.node, caught.value.field) == ("t.yaml", "n", "properties.p")


def test_optional_input_without_value_resolves_to_none(topo: Topology) -> None:
    values = validate_inputs(topo, {"db_password": PASSWORD})
    assert resolve_value({"labels": {"get_input": "labels"}}, values) == {"labels": None}


def test_resolved_nodes_gives_every_node_in_plan_order(topo: Topology) -> None:
    nodes = resolved_nodes(topo, {"db_password": PASSWORD, "web_count": 3})
    assert tuple(nodes) == topo.plan
    assert nodes["web_hosts"].scalable.count == 3
    with pytest.raises(ToscaInputError):
        resolved_nodes(topo, {})


def test_resolved_node(topo: Topology) -> None:
    inputs = validate_inputs(topo, {"db_password": PASSWORD, "web_count": 4, "db_engine": "mysql"})
    hosts = resolved_node(topo, "web_hosts", inputs)
    assert hosts.scalable == Scalable(count=4, min_instances=1, max_instances=8)
    assert hosts.capabilities["host"] == {"mem_size": "2 GB"}
    web = resolved_node(topo, "web", inputs)
    assert web.properties["greeting"] == "Hello from mysql"
    assert web.properties["db_address"] == {"get_attribute": ["db_host", "private_address"]}
    assert web.interfaces == {"Standard": {"configure": {"inputs": {"debug": False}}}}
    assert resolved_node(topo, "database", inputs).properties["password"] == PASSWORD
    # the cached topology itself is untouched
    assert topo.nodes["web"].properties["greeting"] == {"concat": ["Hello from ", {"get_input": "db_engine"}]}
    with pytest.raises(ToscaValidationError, match="no such node template"):
        resolved_node(topo, "nope", inputs)


def test_instance_count_follows_the_host_chain(topo: Topology) -> None:
    inputs = validate_inputs(topo, {"db_password": PASSWORD, "web_count": "5"})
    assert instance_count(topo, "web_hosts", inputs) == 5
    assert instance_count(topo, "web", inputs) == 5  # hosted on web_hosts
    assert instance_count(topo, "web_plugin", inputs) == 5  # hosted on web, itself on web_hosts
    assert instance_count(topo, "database", inputs) == 1  # its host is not scalable
    assert instance_count(topo, "db_host", inputs) == 1
    assert instance_count(topo, "web", {}) == 2  # the input's default


def test_instance_count_rejects_a_bad_count(topo: Topology) -> None:
    with pytest.raises(ToscaInputError, match="non-negative integer") as caught:
        instance_count(topo, "web", {"web_count": "-x"})
    assert caught.value.node == "web_hosts"


def test_scaling_group(topo: Topology) -> None:
    assert scaling_group(topo, "web_hosts") == ("web_hosts", "web", "web_plugin")
    assert scaling_group(topo, "web") == ("web", "web_plugin")
    assert scaling_group(topo, "db_host") == ("db_host", "database")


def test_resolve_outputs(topo: Topology) -> None:
    inputs = validate_inputs(topo, {"db_password": PASSWORD, "db_engine": "mysql"})
    attributes = {
        "web_hosts": [
            {"public_address": ["203.0.113.5"], "private_address": "10.0.0.5"},
            {"public_address": ["203.0.113.6"], "private_address": "10.0.0.6"},
        ],
        "db_host": [{"private_address": "10.0.0.9"}],
    }
    assert resolve_outputs(topo, inputs, attributes) == {
        "web_url": "http://203.0.113.5/",
        "web_addresses": ["10.0.0.5", "10.0.0.6"],
        "engine": "mysql",
    }
    # before anything exists, attributes are None and concat skips them
    assert resolve_outputs(topo, inputs, {})["web_url"] == "http:///"



_BOUNDED = """tosca_definitions_version: tosca_simple_yaml_1_0
topology_template:
  inputs:
    n: {{type: integer, default: 2}}
    lo: {{type: integer, default: 1}}
    hi: {{type: integer, default: 4}}
  node_templates:
    group:
      type: tosca.nodes.Compute
      capabilities:
        scalable:
          properties: {{default_instances: {count}, min_instances: {low}, max_instances: {high}}}
    app:
      type: tosca.nodes.SoftwareComponent
      requirements:
        - host: group
"""


def _bounded(tmp_path: Path, count: object = "{ get_input: n }", low: object = "{ get_input: lo }",
             high: object = "{ get_input: hi }") -> Topology:
    path = tmp_path / "bounded.yaml"
    path.write_text(_BOUNDED.format(count=count, low=low, high=high))
    return load_topology(path, use_cache=False)


def test_an_instance_count_within_its_bounds(tmp_path: Path) -> None:
    topology = _bounded(tmp_path)
    assert [instance_count(topology, "app", {"n": n}) for n in (1, 4)] == [1, 4]
    assert instance_count(topology, "app", {"n": 0, "lo": 0}) == 0
    assert instance_count(topology, "app", {"n": 10_000, "hi": 10**9}) == 10_000


@pytest.mark.parametrize(
    ("bounds", "inputs", "error", "field", "says"),
    [
        ({}, {"n": 5}, ToscaInputError, "count", "instance count 5 is outside the allowed range [1, 4]"),
        ({}, {"n": 5}, ToscaInputError, "count", "fix input 'n'"),
        ({}, {"n": 0}, ToscaInputError, "count", "instance count 0 is outside the allowed range [1, 4]"),
        ({}, {"n": 10**9, "hi": 10**9}, ToscaInputError, "count", "outside the allowed range [1, 10000]"),
        ({"high": 10**9}, {"n": 10_001}, ToscaInputError, "count", "at most 10000"),
        ({}, {"lo": 5}, ToscaValidationError, "min_instances", "min_instances 5 is above max_instances 4"),
        ({}, {"hi": -1}, ToscaInputError, "max_instances", "max_instances -1 is not a non-negative integer"),
        ({"count": 2.5}, {}, ToscaInputError, "count", "count 2.5 is not a non-negative integer"),
        ({"low": 1.5}, {}, ToscaInputError, "min_instances", "min_instances 1.5 is not a non-negative integer; "
         "fix the template"),
    ],
)
def test_an_instance_count_outside_its_bounds_is_refused(tmp_path: Path, bounds, inputs, error, field, says) -> None:
    from airflow_cloud_paas.plan import compile_plan

    topology = _bounded(tmp_path, **bounds)
    with pytest.raises(error) as caught:
        compile_plan(topology, inputs)  # what validate and every create compile first
    assert type(caught.value) is error and says in str(caught.value)
    assert (caught.value.node, caught.value.field) == ("group", f"capabilities.scalable.{field}")
