"""Values that convert losslessly to their declared type are converted with a warning; ``strict`` refuses them.

Each fixture under ``data/conversions`` holds one pattern seen in templates the INDIGO PaaS deployed. A lenient
load converts the value before validation (tosca-parser included: ``float_string.yaml`` crashed it before) and
records each conversion on the topology, in its cache entry, in ``cloud-paas validate`` and in the deployment's
events; a strict load raises the typed error naming the node and the field.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from airflow_cloud_paas.backends.local import LocalBackend
from airflow_cloud_paas.cli import main
from airflow_cloud_paas.deployer import Deployer
from airflow_cloud_paas.exceptions import ToscaValidationError
from airflow_cloud_paas.request import DeploymentRequest
from airflow_cloud_paas.store import DeploymentStore
from airflow_cloud_paas.tosca import TopologyCache, load_topology, topology_from_dict, topology_to_dict
from airflow_cloud_paas.tosca.coerce import convert_value
from airflow_cloud_paas.tosca.model import Topology

DATA = Path(__file__).resolve().parent / "data" / "conversions"


def _cap(node: str, cap: str, *path: str) -> Callable[[Topology], Any]:
    def read(t: Topology) -> Any:
        value: Any = t.nodes[node].capabilities[cap]
        for key in path:
            value = value[key]
        return value

    return read


def _default(name: str) -> Callable[[Topology], Any]:
    return lambda t: t.inputs[name].default


# fixture -> (the exact warnings, in order; (where the converted value is read, the value it must be))
CASES: dict[str, tuple[list[str], list[tuple[Callable[[Topology], Any], Any]]]] = {
    "input_string_boolean.yaml": (
        [
            "input 'enable_monitoring', field 'default': False (boolean) became 'false' (string)",
            "input 'use_gpu', field 'default': True (boolean) became 'true' (string)",
            "input 'use_gpu', field 'constraints[0].valid_values[0]': True (boolean) became 'true' (string)",
            "input 'use_gpu', field 'constraints[0].valid_values[1]': False (boolean) became 'false' (string)",
        ],
        [(_default("enable_monitoring"), "false"), (_default("use_gpu"), "true"),
         (lambda t: t.inputs["use_gpu"].constraints[0]["valid_values"], ["true", "false"])],
    ),
    "num_cpus_string.yaml": (
        [
            "node 'front', field 'capabilities.host.properties.num_cpus': '1' (string) became 1 (integer)",
            "node 'worker', field 'capabilities.host.properties.num_cpus': '4' (string) became 4 (integer)",
        ],
        [(_cap("front", "host", "num_cpus"), 1), (_cap("worker", "host", "num_cpus"), 4)],
    ),
    "float_string.yaml": (
        [
            "input 'cpus', field 'default': 2 (integer) became 2.0 (float)",
            "node 'docker_runtime', field 'capabilities.host.properties.num_cpus': '1' (string) became 1.0 (float)",
        ],
        [(_default("cpus"), 2.0), (_cap("docker_runtime", "host", "num_cpus"), 1.0)],
    ),
    "port_string.yaml": (
        [
            "node 'server', field 'capabilities.endpoint.properties.ports.http.source': '8080' (string) became "
            "8080 (tosca.datatypes.network.PortDef)",
            "node 'web', field 'capabilities.data_endpoint.properties.port': '8080' (string) became 8080 "
            "(tosca.datatypes.network.PortDef)",
        ],
        [(_cap("server", "endpoint", "ports", "http", "source"), 8080), (_cap("web", "data_endpoint", "port"), 8080),
         (lambda t: t.nodes["web"].endpoints[0].ports[0]["port"], 8080)],
    ),
    "integer_float.yaml": (
        ["node 'server', field 'capabilities.host.properties.num_cpus': 2.0 (float) became 2 (integer)"],
        [(_cap("server", "host", "num_cpus"), 2)],
    ),
    "version_number.yaml": (
        ["node 'server', field 'capabilities.os.properties.version': 1.2 (float) became '1.2' (version)"],
        [(_cap("server", "os", "version"), "1.2")],
    ),
    "boolean_string.yaml": (
        [
            "node 'switch', field 'properties.enabled': 'true' (string) became True (boolean)",
            "node 'switch', field 'properties.debug': 'False' (string) became False (boolean)",
        ],
        [(lambda t: t.nodes["switch"].properties["enabled"], True),
         (lambda t: t.nodes["switch"].properties["debug"], False)],
    ),
    "string_integer.yaml": (
        ["node 'app', field 'properties.environment_variables.PORT': 8080 (integer) became '8080' (string)"],
        [(lambda t: t.nodes["app"].properties["environment_variables"], {"PORT": "8080", "NAME": "app"})],
    ),
    "secret_input.yaml": (
        [
            "input 'admin_password', field 'default': the value was converted to string",
            "input 'pin', field 'default': the value was converted to string",
        ],
        [(_default("admin_password"), "123456"), (_default("pin"), "4321")],
    ),
    "relationship_property.yaml": (
        [
            "node 'server', field 'requirements.local_storage.relationship.properties.retries': 5.0 (float) "
            "became 5 (integer)",
            "relationship 'mount_data', field 'properties.retries': '3' (string) became 3 (integer)",
        ],
        [],
    ),
}


def _load(name: str, indigo_map: dict[str, str], **kwargs: Any) -> Topology:
    return load_topology(DATA / name, import_map=indigo_map, **kwargs)


@pytest.mark.parametrize("name", CASES)
def test_each_pattern_is_converted_with_its_warning(name: str, indigo_map: dict[str, str]) -> None:
    messages, values = CASES[name]
    topology = _load(name, indigo_map, use_cache=False)
    assert [c.message for c in topology.conversions] == messages
    for read, expected in values:
        assert read(topology) == expected
        assert type(read(topology)) is type(expected)


@pytest.mark.parametrize("name", CASES)
def test_strict_refuses_each_pattern_naming_node_and_field(name: str, indigo_map: dict[str, str]) -> None:
    first = _load(name, indigo_map, use_cache=False).conversions[0]
    with pytest.raises(ToscaValidationError) as caught:
        _load(name, indigo_map, use_cache=False, strict=True)
    err = caught.value
    assert (err.file, err.node, err.field) == (str(DATA / name), first.node, first.field)
    assert f"is not of the declared type {first.type}" in err.message


def test_a_secret_value_is_never_shown(indigo_map: dict[str, str]) -> None:
    topology = _load("secret_input.yaml", indigo_map, use_cache=False)
    shown = json.dumps([c.as_dict() for c in topology.conversions])
    assert "123456" not in shown and "4321" not in shown and '"written": "***"' in shown
    with pytest.raises(ToscaValidationError) as caught:
        _load("secret_input.yaml", indigo_map, use_cache=False, strict=True)
    assert "123456" not in str(caught.value) and "the value is not of the declared type string" in str(caught.value)


@pytest.mark.parametrize(
    ("name", "node", "field", "says"),
    [
        ("unconvertible.yaml", "server", "capabilities.host.properties.num_cpus", "is not an integer"),
        ("unconvertible_input.yaml", "release", "default", "must be a string, not float"),
        ("unconvertible_boolean.yaml", "switch", "properties.enabled", "is not a boolean"),
    ],
)
def test_what_cannot_be_converted_stays_a_typed_error(
    name: str, node: str, field: str, says: str, indigo_map: dict[str, str]
) -> None:
    for strict in (False, True):
        with pytest.raises(ToscaValidationError) as caught:
            _load(name, indigo_map, use_cache=False, strict=strict)
        assert (caught.value.node, caught.value.field) == (node, field)
        assert says in caught.value.message


def test_the_cache_carries_the_conversions_and_a_strict_load_refuses_a_cached_one(
    tmp_path: Path, indigo_map: dict[str, str]
) -> None:
    cache = tmp_path / "cache"
    built = _load("num_cpus_string.yaml", indigo_map, cache_dir=cache)
    assert topology_from_dict(topology_to_dict(built)) == built
    TopologyCache.clear_memory()  # the next loads read the disk
    again = _load("num_cpus_string.yaml", indigo_map, cache_dir=cache)
    assert again.conversions == built.conversions and len(again.conversions) == 2
    with pytest.raises(ToscaValidationError) as caught:
        _load("num_cpus_string.yaml", indigo_map, cache_dir=cache, strict=True)  # a cache hit, refused
    assert (caught.value.node, caught.value.field) == ("front", "capabilities.host.properties.num_cpus")
    strict_clean = load_topology(DATA.parent / "good.yaml", cache_dir=cache, strict=True)
    assert strict_clean.conversions == ()


@pytest.mark.parametrize(
    ("value", "type_name", "expected"),
    [
        (False, "string", "false"), (8080, "string", "8080"), (1.5, "string", 1.5),
        ("8080", "integer", 8080), (2.0, "integer", 2), (2.5, "integer", 2.5), ("+5", "integer", "+5"),
        ("007", "integer", "007"), (True, "integer", True),
        ("1", "float", 1.0), ("0.5", "float", 0.5), (1, "float", 1.0), ("1e3", "float", "1e3"),
        ("2", "number", 2), ("2.5", "number", 2.5),
        ("true", "boolean", True), ("FALSE", "boolean", False), ("yes", "boolean", "yes"), (1, "boolean", 1),
        (1.2, "version", "1.2"), (18, "version", "18"), (-1, "version", -1),
    ],
)
def test_only_lossless_conversions_are_made(value: Any, type_name: str, expected: Any) -> None:
    converted = convert_value(value, type_name)
    assert converted == expected and type(converted) is type(expected)


# ------------------------------------------------------------------------------- cloud-paas validate
def test_validate_prints_the_warnings_and_strict_refuses(capsys: pytest.CaptureFixture[str]) -> None:
    template = DATA / "input_string_boolean.yaml"
    assert main(["validate", str(template)]) == 0
    out = capsys.readouterr().out
    assert f"{template}: 4 value(s) converted to their declared type (--strict refuses them):" in out
    assert "  warning: input 'enable_monitoring', field 'default': False (boolean) became 'false' (string)" in out
    assert main(["validate", str(template), "--strict"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ToscaValidationError: ")
    assert "input 'enable_monitoring': field 'default': False is not of the declared type string" in err


def test_validate_json_lists_the_warnings(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(DATA / "secret_input.yaml"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["warnings"] == [
        {"where": "input", "node": "admin_password", "field": "default", "written": "***", "value": "***",
         "type": "string", "message": "input 'admin_password', field 'default': the value was converted to string"},
        {"where": "input", "node": "pin", "field": "default", "written": "***", "value": "***",
         "type": "string", "message": "input 'pin', field 'default': the value was converted to string"},
    ]
    assert report["inputs"] == {"admin_password": "***", "pin": "***"}  # pin is declared secret
    assert main(["validate", str(DATA.parent / "good.yaml"), "--input", "db_password=long-enough", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["warnings"] == []


# ------------------------------------------------------------------------------------- deployments
def test_a_deployment_records_and_logs_each_conversion(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    topology = load_topology(DATA / "deploy_local.yaml", use_cache=False)
    store = DeploymentStore(f"sqlite:///{tmp_path}/store.db")
    backend = LocalBackend(tmp_path / "work")
    request = DeploymentRequest.build(topology, "conv1", {}, actor="dag/run1")
    try:
        with caplog.at_level(logging.WARNING, logger="airflow_cloud_paas.deployer"):
            Deployer(request, store, backend).begin_create()
            # create_all begins the create again, as a retried task does: the events are not recorded twice
            Deployer(request, store, backend).create_all(deadline=time.monotonic() + 60)
        events = [e for e in store.get("conv1").events if e.kind == "converted"]
        assert [e.message for e in events] == [
            "input 'monitoring', field 'default': False (boolean) became 'false' (string)",
            "node 'server', field 'capabilities.host.properties.num_cpus': '1' (string) became 1 (integer)",
        ]
        assert events[1].data == {
            "where": "node", "node": "server", "field": "capabilities.host.properties.num_cpus", "written": "1",
            "value": 1, "type": "integer", "message": events[1].message,
        }
        assert store.get("conv1").status == "CREATE_COMPLETE"
        logged = [r.getMessage() for r in caplog.records
                  if r.levelno == logging.WARNING and "converted" in r.getMessage()]
        assert len(logged) == 4  # each conversion, in the log of each task that begins the create (two here)
        assert f"Deployment conv1: {DATA / 'deploy_local.yaml'}: converted {events[1].message}" in logged
    finally:
        backend.delete("conv1")


# ------------------------------------------------------------------------------------------ DAGs
def test_a_strict_tosca_dag_refuses_at_parse_and_a_lenient_one_offers_the_converted_default() -> None:
    from airflow_cloud_paas import ToscaDag

    template = DATA / "deploy_local.yaml"
    with pytest.raises(ToscaValidationError, match=r"input 'monitoring': field 'default'"):
        ToscaDag(template, dag_id="conversions_strict", schedule=None, strict=True)
    dag = ToscaDag(template, dag_id="conversions_lenient", schedule=None)
    assert dag.params["monitoring"] == "false"  # the trigger form shows the value as it will be deployed
