"""TOSCA input constraints in the trigger form: shown, and a value out of range refused, never changed.

Airflow's trigger form draws an integer or number Param as a number field whose ``min``/``max`` are
the schema's top-level ``minimum``/``maximum``; the field clamps what was typed to them when it loses
focus. A user typed -1 workers, the form sent 0, the run started a cluster with no worker and its job
waited 5 minutes. So the bounds are in an ``allOf`` sub-schema, which the field does not read and
Airflow's Param validation does (the trigger is refused with the reason), and in the description.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from airflow.exceptions import ParamValidationError

from airflow_cloud_paas.converter import input_param, topology_params
from airflow_cloud_paas.exceptions import ToscaInputError
from airflow_cloud_paas.tosca import load_topology, validate_inputs

REPO = Path(__file__).resolve().parents[3]
SPARK = REPO / "airflow_cloud_paas" / "templates" / "spark_cluster.yaml"

TEMPLATE = """\
tosca_definitions_version: tosca_simple_yaml_1_0
topology_template:
  inputs:
    ratio:
      type: float
      description: a share of the cores.
      default: 1.0
      constraints:
        - greater_than: 0.5
        - less_or_equal: 2
    slots:
      type: integer
      default: 1
      constraints:
        - in_range: [ 1, UNBOUNDED ]
        - less_than: 10
    disk:
      type: scalar-unit.size
      description: the scratch disk
      default: 2 GB
      constraints:
        - greater_or_equal: 1 GB
    flavour:
      type: string
      default: small
      constraints:
        - valid_values: [ small, large ]
  node_templates:
    host:
      type: tosca.nodes.Compute
"""


@pytest.fixture(scope="module")
def spark():
    return load_topology(str(SPARK))


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    path = tmp_path_factory.mktemp("form") / "inputs.yaml"
    path.write_text(TEMPLATE)
    return load_topology(str(path))


def test_worker_count_bounds_refuse_minus_one_and_the_form_cannot_clamp_it(spark):
    param = input_param(spark.inputs["worker_count"])
    # nothing the form's number field would clamp to
    assert "minimum" not in param.schema and "maximum" not in param.schema
    assert param.schema["type"] == "integer"
    for bad in (-1, 17):
        with pytest.raises(ParamValidationError, match="minimum|maximum"):
            input_param(spark.inputs["worker_count"]).resolve(bad)
    assert input_param(spark.inputs["worker_count"]).resolve(16) == 16
    assert param.description.endswith("Allowed: from 0 to 16.")
    assert "Spark workers" in param.description


def test_a_run_conf_out_of_range_is_refused_before_the_run(spark):
    """What Airflow's API server does with a trigger's conf: the serialized DAG's params validate it (HTTP 400)."""
    from airflow.sdk import DAG
    from airflow.serialization.serialized_objects import DagSerialization

    dag = DAG("form_check", params=topology_params(spark), schedule=None)
    served = DagSerialization.from_dict(DagSerialization.to_dict(dag))
    with pytest.raises(ParamValidationError, match="worker_count: -1 is less than the minimum of 0"):
        served.params.deep_merge({"worker_count": -1}).validate()
    assert served.params.deep_merge({"worker_count": 3}).validate()["worker_count"] == 3


def test_every_numeric_constraint_becomes_schema_and_words(synthetic):
    ratio = input_param(synthetic.inputs["ratio"])
    assert ratio.schema["allOf"] == [{"exclusiveMinimum": 0.5}, {"maximum": 2}]
    assert ratio.description == "a share of the cores. Allowed: more than 0.5 and at most 2."
    for bad in (0.5, 2.5):
        with pytest.raises(ParamValidationError):
            input_param(synthetic.inputs["ratio"]).resolve(bad)
    slots = input_param(synthetic.inputs["slots"])
    assert slots.schema["allOf"] == [{"minimum": 1}, {"exclusiveMaximum": 10}]
    assert slots.description == "Allowed: at least 1 and less than 10."
    with pytest.raises(ParamValidationError):
        input_param(synthetic.inputs["slots"]).resolve(10)
    # scalar units have no JSON Schema form: the words show the bound, the run refuses before making anything
    disk = input_param(synthetic.inputs["disk"])
    assert disk.schema["type"] == "string" and "allOf" not in disk.schema
    assert disk.description == "the scratch disk. Allowed: at least 1 GB."
    flavour = input_param(synthetic.inputs["flavour"])
    assert flavour.schema["enum"] == ["small", "large"] and flavour.description == "Allowed: one of small, large."


@pytest.mark.parametrize(
    ("inputs", "words"),
    [
        ({"worker_count": -1}, ["input worker_count", "-1", "from 0 to 16", "in_range"]),
        ({"worker_count": "17"}, ["input worker_count", "from 0 to 16"]),
    ],
)
def test_validate_inputs_names_the_input_and_the_range(spark, inputs, words):
    with pytest.raises(ToscaInputError) as err:
        validate_inputs(spark, inputs)
    assert err.value.node == "worker_count" and err.value.field == "constraints"
    for word in words:
        assert word in str(err.value)


def test_validate_inputs_checks_scalar_units_and_floats(synthetic):
    with pytest.raises(ToscaInputError, match="input disk: '512 MB' is not allowed: it must be at least 1 GB"):
        validate_inputs(synthetic, {"disk": "512 MB"})
    with pytest.raises(ToscaInputError, match="input ratio: 0.5 is not allowed: it must be more than 0.5"):
        validate_inputs(synthetic, {"ratio": 0.5})
    assert validate_inputs(synthetic, {"disk": "1 GiB", "ratio": 2})["disk"] == "1 GiB"
