"""The packaged Spark template and TOSCA types load with tosca-parser 2.12.0 (no network, no resolver).

The template imports the types by URL; another module maps that URL to the packaged file. Here the
import is rewritten to the file's path, so these tests check the YAML itself.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from toscaparser.common.exception import ValidationError
from toscaparser.functions import GetAttribute, GetInput
from toscaparser.tosca_template import ToscaTemplate

import airflow_cloud_paas

PACKAGE = Path(airflow_cloud_paas.__file__).parent
TYPES = PACKAGE / "tosca" / "types" / "cloud_paas_types.yaml"
TEMPLATE = PACKAGE / "templates" / "spark_cluster.yaml"
TYPES_URL = "https://raw.githubusercontent.com/airflow-cloud-paas/tosca-types/main/cloud_paas_types.yaml"


@pytest.fixture
def local_template(tmp_path: Path) -> Path:
    text = TEMPLATE.read_text()
    assert f"- cloud_paas: {TYPES_URL}" in text
    path = tmp_path / "spark_cluster.yaml"
    path.write_text(text.replace(TYPES_URL, str(TYPES)))
    return path


def nodes(template: ToscaTemplate) -> dict:
    return {n.name: n for n in template.nodetemplates}


def test_template_parses_with_defaults(local_template: Path) -> None:
    template = ToscaTemplate(path=str(local_template), parsed_params={})
    inputs = {i.name: i for i in template.inputs}
    assert {name: i.default for name, i in inputs.items()} == {
        "worker_count": 1,
        "worker_cores": 1,
        "worker_memory": "1g",
    }
    assert all(i.description for i in inputs.values())
    assert [(c.constraint_key, c.constraint_value) for c in inputs["worker_count"].constraints] == [
        ("in_range", [0, 16])
    ]
    found = nodes(template)
    assert {name: n.type for name, n in found.items()} == {
        "spark_master_host": "cloud_paas.nodes.Compute",
        "spark_master": "cloud_paas.nodes.spark.Master",
        "spark_worker_hosts": "cloud_paas.nodes.Compute",
        "spark_worker": "cloud_paas.nodes.spark.Worker",
    }
    assert found["spark_master"].get_property_value("port") == 0
    assert found["spark_master"].get_property_value("webui_port") == 0
    assert found["spark_master"].requirements == [{"host": "spark_master_host"}]
    assert found["spark_worker"].requirements == [{"host": "spark_worker_hosts"}, {"master": "spark_master"}]
    relationships = {rel.type for rel in found["spark_worker"].related.values()}
    assert relationships == {
        "tosca.relationships.HostedOn",
        "cloud_paas.relationships.spark.ConnectsToMaster",
    }
    outputs = {o.name: o.value for o in template.outputs}
    assert isinstance(outputs["spark_master_url"], GetAttribute)
    assert outputs["spark_master_url"].args == ["spark_master", "spark_url"]
    assert outputs["spark_webui_url"].args == ["spark_master", "webui_url"]


def test_worker_group_scales_with_the_input(local_template: Path) -> None:
    template = ToscaTemplate(path=str(local_template), parsed_params={"worker_count": 3, "worker_memory": "512m"})
    found = nodes(template)
    scalable = {
        p.name: p.value for p in found["spark_worker_hosts"].get_capability("scalable").get_properties_objects()
    }
    assert scalable == {"count": 3, "min_instances": 0, "max_instances": 16}
    # an unscaled Compute gets the type's default count
    master_host = found["spark_master_host"].get_capability("scalable").get_properties_objects()
    assert {p.name: p.value for p in master_host} == {"count": 1}
    memory = found["spark_worker"].get_property_value("memory")
    assert isinstance(memory, GetInput) and memory.result() == "512m"


def test_bad_input_type_is_rejected(local_template: Path) -> None:
    with pytest.raises(ValidationError, match="is not an integer"):
        ToscaTemplate(path=str(local_template), parsed_params={"worker_count": "many"})


def test_types_define_defaults(tmp_path: Path) -> None:
    template = tmp_path / "t.yaml"
    template.write_text(
        f"""
tosca_definitions_version: tosca_simple_yaml_1_0
imports:
  - {TYPES}
topology_template:
  node_templates:
    host:
      type: cloud_paas.nodes.Compute
    master:
      type: cloud_paas.nodes.spark.Master
      properties: {{spark_version: "4.3"}}
      requirements: [{{host: host}}]
    worker:
      type: cloud_paas.nodes.spark.Worker
      requirements: [{{host: host}}, {{master: master}}]
"""
    )
    found = nodes(ToscaTemplate(path=str(template)))
    worker = found["worker"]
    assert (worker.get_property_value("cores"), worker.get_property_value("memory")) == (1, "1g")
    assert found["master"].get_property_value("spark_version") == "4.3"
    assert "master" in found["master"].get_capabilities()
    compute_parents = []
    kind = found["host"].type_definition
    while kind is not None:
        compute_parents.append(kind.type)
        kind = kind.parent_type
    assert compute_parents[:2] == ["cloud_paas.nodes.Compute", "tosca.nodes.Compute"]


def test_unknown_property_is_rejected(tmp_path: Path) -> None:
    template = tmp_path / "t.yaml"
    template.write_text(
        f"""
tosca_definitions_version: tosca_simple_yaml_1_0
imports:
  - {TYPES}
topology_template:
  node_templates:
    host:
      type: cloud_paas.nodes.Compute
    worker:
      type: cloud_paas.nodes.spark.Worker
      properties: {{cpus: 2}}
      requirements: [{{host: host}}]
"""
    )
    with pytest.raises(ValidationError, match="cpus"):
        ToscaTemplate(path=str(template))
