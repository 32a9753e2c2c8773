"""Every INDIGO example template either loads or raises a typed ToscaError, never anything else.

The examples come from indigo-dc/tosca-types (master) in ../shared/tosca/examples; their types are
mapped to the local copies of custom_types.yaml, so nothing is fetched. Each is parsed once per
session into a shared cache.
"""

from __future__ import annotations

import traceback
from pathlib import Path

import pytest

from airflow_cloud_paas.exceptions import ToscaError, ToscaValidationError
from airflow_cloud_paas.tosca import load_topology, topology_from_dict, topology_to_dict
from airflow_cloud_paas.tosca.model import Topology

EXAMPLES = (Path(__file__).resolve().parents[3] / ".." / "shared" / "tosca" / "examples").resolve()
NAMES = sorted(p.name for p in EXAMPLES.glob("*.y*ml")) if EXAMPLES.is_dir() else []

# Measured with tosca-parser 2.12.0: a regression below this count fails.
MIN_LOADED = 64
# Real defects of these templates, not of the loader: a property their types do not define.
KNOWN_BAD = {
    "node_with_availability_zone.yaml": ("deploy_on_cloudid", "properties.availability_zone"),
    "vm_docker_deepass.yml": ("deepaas_app", "properties.rclone_pass"),
}


@pytest.fixture(scope="session")
def example_results(indigo_map: dict[str, str], topology_cache: str) -> dict[str, object]:
    """Load every example once: name -> Topology, ToscaError, or (for a loader bug) another exception."""
    results: dict[str, object] = {}
    for name in NAMES:
        try:
            results[name] = load_topology(EXAMPLES / name, import_map=indigo_map, cache_dir=topology_cache)
        except Exception as err:  # noqa: BLE001 - recorded so that the per-example test can report it
            err.formatted = traceback.format_exc()  # type: ignore[attr-defined]
            results[name] = err
    return results


def test_the_corpus_is_there() -> None:
    assert len(NAMES) == 66, f"expected the 66 INDIGO examples in {EXAMPLES}"


@pytest.mark.parametrize("name", NAMES)
def test_example_loads_or_raises_a_typed_error(name: str, example_results: dict[str, object]) -> None:
    result = example_results[name]
    if isinstance(result, ToscaError):
        assert result.file == str(EXAMPLES / name)
        assert str(EXAMPLES / name) in str(result)
        return
    assert isinstance(result, Topology), getattr(result, "formatted", repr(result))
    assert sorted(result.plan) == sorted(result.nodes)
    position = {n: i for i, n in enumerate(result.plan)}
    for node in result.nodes.values():
        assert node.type_hierarchy[0] == node.type and node.type_hierarchy[-1] == "tosca.nodes.Root"
        for req in node.requirements:
            assert position[req.node] < position[node.name], f"{req.node} must come before {node.name}"
    assert topology_from_dict(topology_to_dict(result)) == result


def test_known_bad_examples_name_node_and_field(example_results: dict[str, object]) -> None:
    for name, (node, field) in KNOWN_BAD.items():
        err = example_results[name]
        assert isinstance(err, ToscaValidationError), err
        assert (err.node, err.field) == (node, field)


def test_how_many_examples_load(example_results: dict[str, object]) -> None:
    loaded = sorted(n for n, r in example_results.items() if isinstance(r, Topology))
    failed = {n: f"{type(r).__name__}: {r}" for n, r in example_results.items() if not isinstance(r, Topology)}
    print(f"\n{len(loaded)}/{len(example_results)} INDIGO examples load")
    for name, why in sorted(failed.items()):
        print(f"  {name}: {why}")
    assert len(loaded) >= MIN_LOADED, failed
