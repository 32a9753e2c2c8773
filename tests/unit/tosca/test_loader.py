"""load_topology: every field of a good template, and one typed error per kind of bad template."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest

from airflow_cloud_paas.exceptions import (
    ToscaCycleError,
    ToscaError,
    ToscaImportError,
    ToscaSyntaxError,
    ToscaUnknownTypeError,
    ToscaValidationError,
)
from airflow_cloud_paas.tosca import LAYER_VERSION, load_topology
from airflow_cloud_paas.tosca.model import Endpoint, Policy, Requirement, Scalable, Topology

DATA = Path(__file__).resolve().parent / "data"


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> Topology:
    return load_topology(DATA / "good.yaml", cache_dir=str(tmp_path_factory.mktemp("cache")))


def test_good_template_top_level_fields(good: Topology) -> None:
    assert good.source == str(DATA / "good.yaml")
    assert len(good.content_hash) == 64
    assert good.description == "A small web application: a scalable group of web servers in front of a database."
    assert good.imports == ("types/app_types.yaml",)
    assert good.template_text == (DATA / "good.yaml").read_text()
    assert set(good.nodes) == {"db_host", "database", "web_hosts", "web", "web_plugin"}
    # requirements first, ties broken by name: the same order every time
    assert good.plan == ("db_host", "database", "web_hosts", "web", "web_plugin")
    assert good.policies == (
        Policy(name="keep_apart", type="tosca.policies.Placement", targets=("web_hosts", "db_host"), properties={}),
    )


def test_good_template_inputs(good: Topology) -> None:
    count = good.inputs["web_count"]
    assert (count.type, count.default, count.has_default, count.required) == ("integer", 2, True, True)
    assert count.description == "number of web servers"
    assert count.constraints == ({"in_range": [1, 8]},)
    password = good.inputs["db_password"]
    assert (password.has_default, password.required, password.default) == (False, True, None)
    assert good.inputs["labels"].required is False
    assert good.inputs["labels"].entry_schema == {"type": "string"}
    assert good.inputs["admin_emails"].entry_schema == {"type": "string", "constraints": [{"pattern": "[^@]+@[^@]+"}]}


def test_good_template_nodes_keep_functions_and_type_chain(good: Topology) -> None:
    web = good.nodes["web"]
    assert web.type == "app.nodes.WebApp"
    assert web.type_hierarchy == (
        "app.nodes.WebApp",
        "tosca.nodes.WebServer",
        "tosca.nodes.SoftwareComponent",
        "tosca.nodes.Root",
    )
    assert web.is_a("tosca.nodes.SoftwareComponent") and not web.is_a("tosca.nodes.Compute")
    # intrinsic functions are kept as written; the type's default fills what the template omits
    assert web.properties == {
        "greeting": {"concat": ["Hello from ", {"get_input": "db_engine"}]},
        "db_address": {"get_attribute": ["db_host", "private_address"]},
        "workers": 4,
    }
    assert web.requirements == (
        Requirement("host", "web_hosts", "tosca.relationships.HostedOn", "tosca.capabilities.Container"),
        Requirement("database", "database", "tosca.relationships.ConnectsTo", "tosca.capabilities.Endpoint.Database"),
    )
    assert web.host == "web_hosts"
    assert web.artifacts == {"site": {"file": "site.tar.gz", "type": "tosca.artifacts.File"}}
    assert web.interfaces == {"Standard": {"configure": {"inputs": {"debug": {"get_input": "debug"}}}}}
    assert web.description == "the web server software"
    assert good.nodes["database"].properties["password"] == {"get_input": "db_password"}


def test_good_template_scalable_and_endpoints(good: Topology) -> None:
    hosts = good.nodes["web_hosts"]
    assert hosts.scalable == Scalable(count={"get_input": "web_count"}, min_instances=1, max_instances=8)
    assert hosts.capabilities["host"] == {"mem_size": {"get_input": "web_mem"}}
    # a custom capability type derived from tosca.capabilities.Endpoint is an endpoint
    (endpoint,) = hosts.endpoints
    assert endpoint.name == "endpoint"
    assert (endpoint.network_name, endpoint.dns_name) == ("PUBLIC", "web")
    assert endpoint.ports == (
        {"name": "http", "port": 80, "protocol": "tcp", "source": 80},
        {"name": "https", "port": 443, "protocol": "tcp", "source": 443},
    )
    assert good.nodes["database"].endpoints == (
        Endpoint(
            name="database_endpoint",
            ports=({"name": "port", "port": 5432, "protocol": "tcp"},),
            network_name="PRIVATE",
            dns_name=None,
            properties={"port": 5432},
        ),
    )
    assert good.nodes["db_host"].scalable is None and good.nodes["db_host"].endpoints == ()


def test_good_template_outputs_stay_raw(good: Topology) -> None:
    assert good.outputs["web_url"].value == {
        "concat": ["http://", {"get_attribute": ["web_hosts", "public_address", 0]}, "/"]
    }
    assert good.outputs["web_url"].description == "the public URL"
    assert good.outputs["engine"].value == {"get_property": ["database", "engine"]}


def test_content_hash_covers_imports_and_layer(tmp_path: Path, good: Topology) -> None:
    shutil.copytree(DATA / "types", tmp_path / "types")
    shutil.copy(DATA / "good.yaml", tmp_path / "good.yaml")
    same = load_topology(tmp_path / "good.yaml", use_cache=False)
    assert same.content_hash == good.content_hash  # the path is not part of the content
    types = tmp_path / "types" / "app_types.yaml"
    types.write_text(types.read_text().replace("default: 4", "default: 8"))
    changed = load_topology(tmp_path / "good.yaml", use_cache=False)
    assert changed.content_hash != good.content_hash
    assert changed.nodes["web"].properties["workers"] == 8
    assert "tosca-parser==2.12.0" in LAYER_VERSION


def test_tosca_parser_logging_is_silenced(caplog: pytest.LogCaptureFixture) -> None:
    # good.yaml has a required input without default: tosca-parser logs a warning for it
    with caplog.at_level(logging.DEBUG):
        load_topology(DATA / "good.yaml", use_cache=False)
    assert [r for r in caplog.records if r.name.startswith("tosca")] == []


BAD = [
    ("invalid_yaml.yaml", ToscaSyntaxError, None, None, "line 7"),
    ("not_a_template.yaml", ToscaSyntaxError, None, None, "YAML mapping"),
    ("no_version.yaml", ToscaSyntaxError, None, "tosca_definitions_version", "tosca_definitions_version"),
    ("unknown_type.yaml", ToscaUnknownTypeError, "server", "type", "tosca.nodes.DoesNotExist"),
    ("unknown_relationship.yaml", ToscaUnknownTypeError, "app", "requirements.host.relationship", "Teleports"),
    ("unknown_policy_type.yaml", ToscaUnknownTypeError, "spread", "type", "tosca.policies.Nonexistent"),
    ("cyclic.yaml", ToscaCycleError, "c", "requirements.dependency", "a -> b -> c -> a"),
    ("unresolvable_import.yaml", ToscaImportError, None, "imports", "http://127.0.0.1:9/tosca/remote_types.yaml"),
    ("missing_import_file.yaml", ToscaImportError, None, "imports", "types/does_not_exist.yaml"),
    ("unknown_target.yaml", ToscaValidationError, "app", "requirements.host", "'nowhere'"),
    ("unknown_property.yaml", ToscaValidationError, "app", "properties.colour", "colour"),
    ("unknown_capability.yaml", ToscaValidationError, "server", "capabilities.teleporter", "teleporter"),
    (
        "bad_capability_value.yaml",
        ToscaValidationError,
        "server",
        "capabilities.host.properties.num_cpus",
        "tosca-parser",
    ),
    # tosca-parser's message names neither node nor property: both come from where it was checking
    ("wrong_property_type.yaml", ToscaValidationError, "app", "properties.tags", "is not a list"),
    ("undeclared_input.yaml", ToscaValidationError, "server", "capabilities.host.properties.num_cpus", "cpu_count"),
    ("bad_input_default.yaml", ToscaValidationError, "cpus", "default", "integer"),
]


@pytest.mark.parametrize(("name", "error", "node", "field", "says"), BAD, ids=[b[0] for b in BAD])
def test_bad_template_raises_typed_error_naming_file_node_field(
    name: str, error: type[ToscaError], node: str | None, field: str | None, says: str
) -> None:
    with pytest.raises(error) as caught:
        load_topology(DATA / name, use_cache=False)
    err = caught.value
    assert type(err) is error
    assert err.file == str(DATA / name)
    assert (err.node, err.field) == (node, field)
    text = str(err)
    assert text.startswith(str(DATA / name))
    assert says in text
    if node:
        assert f"{err.kind} '{node}'" in text and err.kind == ("input" if name == "bad_input_default.yaml" else "node")
    if field:
        assert f"field '{field}'" in text


def test_tosca_parser_collector_is_restored_after_a_failure() -> None:
    from toscaparser.common.exception import ExceptionCollector

    original = ExceptionCollector.__dict__["appendException"]
    with pytest.raises(ToscaValidationError):
        load_topology(DATA / "wrong_property_type.yaml", use_cache=False)
    assert ExceptionCollector.__dict__["appendException"] is original


def test_unresolvable_import_tells_how_to_fix() -> None:
    with pytest.raises(ToscaImportError, match="import_map=") as caught:
        load_topology(DATA / "unresolvable_import.yaml", use_cache=False)
    assert "Connection refused" in str(caught.value) or "refused" in str(caught.value).lower()


def test_missing_file_is_a_typed_error(tmp_path: Path) -> None:
    with pytest.raises(ToscaSyntaxError, match="cannot read the template") as caught:
        load_topology(tmp_path / "absent.yaml")
    assert caught.value.file == str(tmp_path / "absent.yaml")


def test_bad_templates_are_not_cached(tmp_path: Path) -> None:
    with pytest.raises(ToscaUnknownTypeError):
        load_topology(DATA / "unknown_type.yaml", cache_dir=str(tmp_path))
    assert list(tmp_path.glob("*.json")) == []


TEMPLATE_USING = """\
tosca_definitions_version: tosca_simple_yaml_1_0
imports:
  - lib.yaml
topology_template:
  node_templates:
    server:
      type: tosca.nodes.Compute
    thing:
      type: lib.nodes.Thing
      requirements:
        - host: server
"""


@pytest.mark.parametrize(
    ("library", "error", "node", "field", "says"),
    [
        ("node_types: {lib.nodes.Thing: {derived_from: [unclosed\n", ToscaSyntaxError, None, None, "invalid YAML"),
        (
            "node_types: {lib.nodes.Thing: {derived_from: lib.nodes.Missing}}\n",
            ToscaUnknownTypeError,
            "thing",
            "lib.nodes.Thing.derived_from",
            "lib.nodes.Missing",
        ),
        (
            # not used by the template, but tosca-parser would crash on it
            "node_types:\n  lib.nodes.Thing:\n    derived_from: tosca.nodes.SoftwareComponent\n"
            "    capabilities: {feed: {type: lib.capabilities.Missing}}\n",
            ToscaUnknownTypeError,
            "thing",
            "capabilities.feed.type",
            "lib.capabilities.Missing",
        ),
    ],
    ids=["yaml-error", "unknown-parent", "unknown-capability-type"],
)
def test_errors_inside_an_imported_file_name_that_file(
    tmp_path: Path, library: str, error: type[ToscaError], node: str | None, field: str | None, says: str
) -> None:
    (tmp_path / "lib.yaml").write_text("tosca_definitions_version: tosca_simple_yaml_1_0\n" + library)
    (tmp_path / "t.yaml").write_text(TEMPLATE_USING)
    with pytest.raises(error, match=says) as caught:
        load_topology(tmp_path / "t.yaml", use_cache=False)
    assert (caught.value.file, caught.value.node, caught.value.field) == (str(tmp_path / "lib.yaml"), node, field)


def test_unsupported_definitions_version(tmp_path: Path) -> None:
    (tmp_path / "t.yaml").write_text("tosca_definitions_version: tosca_simple_yaml_9_9\n")
    with pytest.raises(ToscaSyntaxError, match="tosca_simple_yaml_1_3") as caught:
        load_topology(tmp_path / "t.yaml", use_cache=False)
    assert caught.value.field == "tosca_definitions_version"
