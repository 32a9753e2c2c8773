"""Fuzz the TOSCA loader: whatever it is given, it accepts the template or raises one of the package's typed errors.

Valid templates (packaged, test fixtures, an INDIGO example) are mutated, as parsed documents (a value replaced
by another of any YAML type, a key removed or added) and as text (bytes cut, repeated or inserted), and random
TOSCA-shaped documents are made from the grammar's keywords. Each goes through what a deployment does first
(``load_topology``, ``DeploymentRequest.build``, the plan's compilation); a bare KeyError, TypeError,
AttributeError, RecursionError... or a hang fails. Examples are derandomized, so CI runs the same ones.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from airflow_cloud_paas.exceptions import ToscaError
from airflow_cloud_paas.request import DeploymentRequest
from airflow_cloud_paas.tosca import indigo_import_map, load_topology

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
SHARED = (REPO.parent / "shared" / "tosca").resolve()
SEEDS = {
    "spark_cluster": REPO / "airflow_cloud_paas" / "templates" / "spark_cluster.yaml",
    "webapp": REPO / "tests" / "unit" / "cloudinit" / "data" / "webapp.yaml",
    "inputs": HERE / "corpus" / "lib" / "inputs.yaml",
    "merge_keys": HERE / "corpus" / "ok_merge_keys.yaml",
}
INDIGO_SEED = SHARED / "examples" / "hadoop_cluster.yaml"
#: what one example may take before it counts as a hang (the deadline below fails a slow one sooner)
HANG_S = 20

FUZZ = settings(
    max_examples=60,
    deadline=2000,  # ms: each example takes well under 0.1 s
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)

KEYWORDS = [
    "tosca_definitions_version", "tosca_simple_yaml_1_0", "imports", "topology_template", "node_templates",
    "node_types", "inputs", "outputs", "policies", "groups", "relationship_templates", "type", "derived_from",
    "properties", "capabilities", "requirements", "interfaces", "artifacts", "Standard", "create", "configure",
    "implementation", "host", "scalable", "endpoint", "node", "relationship", "capability", "value", "default",
    "constraints", "in_range", "valid_values", "pattern", "entry_schema", "required", "metadata", "secret",
    "get_input", "get_attribute", "get_property", "concat", "token", "join", "targets", "count",
    "default_instances", "min_instances", "max_instances", "num_cpus", "mem_size", "ports", "port", "file",
    "tosca.nodes.Compute", "tosca.nodes.SoftwareComponent", "tosca.nodes.Root", "integer", "string", "list",
    "map", "boolean", "float", "scalar-unit.size", "vm", "app", "UNBOUNDED", "SELF", "HOST", "",
]

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from(KEYWORDS), st.text(max_size=20),
)
keys = st.one_of(st.sampled_from(KEYWORDS), st.text(max_size=12), st.integers(-3, 3), st.booleans())
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(keys, inner, max_size=4)),
    max_leaves=12,
)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Return the folder the fuzzed templates are written to (beside copies of what the seeds read)."""
    path = tmp_path_factory.mktemp("fuzz")
    scripts = SEEDS["webapp"].parent / "scripts"
    if scripts.is_dir():
        for script in scripts.iterdir():
            (path / "scripts").mkdir(exist_ok=True)
            (path / "scripts" / script.name).write_bytes(script.read_bytes())
    return path


_counter = itertools.count()


def _outcome(folder: Path, data: bytes, import_map: dict[str, str] | None = None) -> BaseException | None:
    """Load, build and compile a template's bytes in a thread, failing (not hanging) past HANG_S."""
    path = folder / f"t{next(_counter)}.yaml"
    path.write_bytes(data)
    outcome: list[BaseException | None] = []

    def target() -> None:
        try:
            topology = load_topology(path, import_map=import_map, use_cache=False)
            _ = DeploymentRequest.build(topology, "fuzz", None).plan  # compiled on first use
            outcome.append(None)
        except BaseException as err:  # noqa: BLE001 - handed to the test
            outcome.append(err)

    worker = threading.Thread(target=target, daemon=True)
    worker.start()
    worker.join(HANG_S)
    assert not worker.is_alive(), f"loading did not end within {HANG_S} s:\n{data[:2000]!r}"
    path.unlink()
    return outcome[0]


def _assert_typed(error: BaseException | None, data: bytes) -> None:
    if error is not None and not isinstance(error, ToscaError):
        shown = data[:3000].decode(errors="replace")
        raise AssertionError(f"{type(error).__name__} instead of a typed error for:\n{shown}") from error


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Yield the path of every value inside a parsed document, the root included."""
    yield prefix
    if isinstance(doc, dict):
        for key, value in doc.items():
            yield from _paths(value, (*prefix, key))
    elif isinstance(doc, list):
        for index, value in enumerate(doc):
            yield from _paths(value, (*prefix, index))


def _mutate(doc: Any, path: tuple[Any, ...], action: str, new: Any, key: Any) -> Any:
    """Return the document with the value at ``path`` replaced, removed, or given one more key."""
    if not path:
        return new if action == "replace" else doc
    parent = doc
    for step in path[:-1]:
        parent = parent[step]
    last = path[-1]
    if action == "replace":
        parent[last] = new
    elif action == "remove":
        del parent[last]
    elif isinstance(parent[last], dict):
        parent[last][key] = new
    else:
        parent[last] = {key: new, "was": parent[last]}
    return doc


@st.composite
def mutated(draw: st.DrawFn, seeds: dict[str, Path]) -> bytes:
    """Draw a seed template with one to three mutations of its parsed document."""
    doc = yaml.safe_load(seeds[draw(st.sampled_from(sorted(seeds)))].read_text())
    for _ in range(draw(st.integers(1, 3))):
        paths = list(_paths(doc))
        path = draw(st.sampled_from(paths))
        action = draw(st.sampled_from(["replace", "remove", "add"]))
        doc = _mutate(doc, path, action, draw(values), draw(keys))
    return yaml.safe_dump(doc, allow_unicode=True, sort_keys=False).encode()


@st.composite
def garbled(draw: st.DrawFn) -> bytes:
    """Draw a seed template's text with bytes cut out, repeated, or inserted."""
    data = SEEDS[draw(st.sampled_from(sorted(SEEDS)))].read_bytes()
    for _ in range(draw(st.integers(1, 4))):
        start = draw(st.integers(0, len(data)))
        end = draw(st.integers(start, min(len(data), start + 40)))
        action = draw(st.sampled_from(["cut", "repeat", "insert", "truncate"]))
        if action == "cut":
            data = data[:start] + data[end:]
        elif action == "repeat":
            data = data[:end] + data[start:end] * draw(st.integers(2, 5)) + data[end:]
        elif action == "insert":
            noise = draw(st.one_of(st.binary(max_size=8), st.text(alphabet=":-[]{}&*!|>'\"#%@`,? \n\t\\0", max_size=8)
                                   .map(str.encode)))
            data = data[:start] + noise + data[start:]
        else:
            data = data[:start]
    return data


@st.composite
def shaped(draw: st.DrawFn) -> bytes:
    """Draw a random document shaped like a TOSCA template (its keywords, anything as their values)."""
    node = st.fixed_dictionaries({"type": st.sampled_from(KEYWORDS)}, optional={
        name: values for name in ("properties", "capabilities", "requirements", "interfaces", "artifacts")})
    topology = st.fixed_dictionaries({}, optional={
        "inputs": st.dictionaries(st.sampled_from(KEYWORDS), values, max_size=3),
        "node_templates": st.dictionaries(st.sampled_from(["vm", "app", "db", "x"]), node, max_size=3),
        "outputs": st.dictionaries(st.sampled_from(["ip", "url"]), values, max_size=2),
        "policies": values,
    })
    doc = draw(st.fixed_dictionaries({"tosca_definitions_version": st.one_of(
        st.just("tosca_simple_yaml_1_0"), scalars)}, optional={"topology_template": topology, "node_types": values}))
    return yaml.safe_dump(doc, allow_unicode=True).encode()


@FUZZ
@given(data=mutated(SEEDS))
def test_a_mutated_template_is_accepted_or_refused_with_a_typed_error(folder: Path, data: bytes) -> None:
    _assert_typed(_outcome(folder, data), data)


@FUZZ
@given(data=garbled())
def test_garbled_template_text_is_accepted_or_refused_with_a_typed_error(folder: Path, data: bytes) -> None:
    _assert_typed(_outcome(folder, data), data)


@FUZZ
@given(data=shaped())
def test_a_random_tosca_shaped_document_is_accepted_or_refused_with_a_typed_error(folder: Path, data: bytes) -> None:
    _assert_typed(_outcome(folder, data), data)


@pytest.mark.skipif(not INDIGO_SEED.is_file(), reason="needs ../shared/tosca (the INDIGO examples and types)")
@settings(FUZZ, max_examples=12, deadline=5000)  # the INDIGO types make each example take about 0.5 s
@given(data=mutated({"hadoop_cluster": INDIGO_SEED}))
def test_a_mutated_indigo_template_is_accepted_or_refused_with_a_typed_error(folder: Path, data: bytes) -> None:
    _assert_typed(_outcome(folder, data, indigo_import_map(SHARED / "indigo-types")), data)
