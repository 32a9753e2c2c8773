"""Load a TOSCA service template once into a :class:`~airflow_cloud_paas.tosca.model.Topology`.

The template is read as YAML (values kept as written, intrinsic functions included), its imports
resolved offline (:mod:`airflow_cloud_paas.tosca.imports`), checked here for what tosca-parser
misses or crashes on (unknown types, requirement targets, cycles, undeclared inputs), then
validated by tosca-parser 2.12 (types and property values). Before any of these checks, a value that converts
losslessly to its declared type is converted (:mod:`airflow_cloud_paas.tosca.coerce`), and the conversion is kept
on the topology as a warning; a strict load refuses it instead. tosca-parser's collected errors are
translated into the typed errors of :mod:`airflow_cloud_paas.exceptions`, each naming the file
and, where known, the node and field.

The result is cached by content hash (:mod:`airflow_cloud_paas.tosca.cache`): a hit costs a few
file hashes and never imports tosca-parser, so DAG files may call :func:`load_topology` freely.

Loading is bounded, so that no template can hang validation, DAG parsing or a task: the YAML of
every file (:mod:`airflow_cloud_paas.tosca._yaml`: size, alias expansion, nesting, names defined
twice), the imports (:mod:`airflow_cloud_paas.tosca.imports`: cycles, count, fetch deadline and
size), ``derived_from`` cycles, :data:`MAX_NODE_TEMPLATES` node templates, and ``pattern``
constraints (matched with a time bound, tosca-parser's own check included). Past a bound the
template is refused with a typed error naming it.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import heapq
import logging
import os
import re
import sys
import threading
import traceback
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from airflow_cloud_paas.exceptions import (
    ToscaCycleError,
    ToscaError,
    ToscaImportError,
    ToscaSyntaxError,
    ToscaUnknownTypeError,
    ToscaValidationError,
)
from airflow_cloud_paas.tosca._yaml import check_size, decode, load_yaml
from airflow_cloud_paas.tosca.cache import TopologyCache
from airflow_cloud_paas.tosca.coerce import convert_template, refusal
from airflow_cloud_paas.tosca.imports import ImportedFile, ImportResolver, ResolvedImports
from airflow_cloud_paas.tosca.model import (
    Endpoint,
    InputDef,
    NodeTemplate,
    OutputDef,
    Policy,
    Requirement,
    Scalable,
    Topology,
)
from airflow_cloud_paas.tosca.resolve import (
    _BadValue,
    check_input_value,
    is_function,
    non_text_key,
    pattern_matches,
)
from airflow_cloud_paas.tosca.typedefs import TypeRegistry, UnknownParentError

log = logging.getLogger(__name__)

#: more node templates than this is refused (a template is one deployment; the checks and
#: tosca-parser's validation grow with it). With the YAML bounds of
#: :mod:`airflow_cloud_paas.tosca._yaml` (16 MiB a file, 1,000,000 expanded YAML nodes, nesting 100
#: deep, no recursive alias, no name defined twice) and those of the imports (no import cycle, at
#: most :data:`~airflow_cloud_paas.tosca.imports.MAX_IMPORTED_FILES` files, fetched within a deadline
#: and a size cap) and of ``pattern`` constraints (matched with a time bound), a hostile template
#: is refused with a typed error in bounded time instead of hanging validation, DAG parsing or a task.
MAX_NODE_TEMPLATES = 1000
#: tosca-parser's errors kept for the report: it compares each new one with all those before (50,000 unknown
#: properties took hours), and the first few say what to fix
MAX_COLLECTED_ERRORS = 100

# Part of every content hash: bump it when what a Topology holds, or how it is built, changes.
# 5: converts values to their declared type where nothing is lost, and keeps the conversions
LAYER_VERSION = "airflow_cloud_paas.tosca/5 tosca-parser==2.12.0"
TOSCA_VERSIONS = ("tosca_simple_yaml_1_0", "tosca_simple_yaml_1_2", "tosca_simple_yaml_1_3")

_PARSER_LOCK = threading.Lock()  # tosca-parser collects errors in a process-wide list
_ENDPOINT = "tosca.capabilities.Endpoint"
_RUNTIME_NODES = frozenset({"SELF", "HOST", "SOURCE", "TARGET"})


def load_topology(
    source: str | os.PathLike,
    *,
    import_map: Mapping[str, str] | None = None,
    cache_dir: str | os.PathLike | None = None,
    use_cache: bool = True,
    strict: bool = False,
) -> Topology:
    """Load a TOSCA service template into a Topology, from the cache when its content is unchanged.

    A value that converts losslessly to its declared type (``default: False`` for a string input, ``"8080"``
    for a port) is converted, and the conversion recorded in :attr:`Topology.conversions`.

    :param source: the template file (``.yaml``/``.yml``)
    :param import_map: import URL (or name as written) -> local file, for imports not reachable offline
    :param cache_dir: the topology cache directory (default ``$AIRFLOW_CLOUD_PAAS_TOPOLOGY_CACHE`` or
        ``~/.cache/airflow_cloud_paas/topologies``)
    :param use_cache: look up and store the result in the cache
    :param strict: refuse a value that is not of its declared type, converted or not, with a
        ToscaValidationError naming the node and field, instead of converting it
    """
    file = str(source)
    try:
        file = str(Path(source).expanduser().resolve())
        check_size(Path(file).stat().st_size, file)
        data = Path(file).read_bytes()
    except (OSError, ValueError) as err:  # ValueError: a NUL character in the path
        reason = getattr(err, "strerror", None) or err
        raise ToscaSyntaxError(f"cannot read the template ({reason}); check the path", file=file) from err
    resolver = ImportResolver(import_map)
    cache = TopologyCache(cache_dir) if use_cache else None
    key = _manifest_key(data, file, resolver)
    if cache is not None:
        found = cache.lookup(key)
        if found is not None:
            return _checked(_located(found, file), strict)

    text = decode(data, file)
    raw = _top_level(load_yaml(text, file), file)
    resolved = resolver.resolve(raw.get("imports"), template_file=file, repositories=raw.get("repositories"))
    digest = content_hash(data, resolved.files)
    files = [(f.path, f.sha256) for f in resolved.files]
    if cache is not None:
        found = cache.get(digest)
        if found is not None:  # the same content elsewhere (another directory or import map)
            cache.put(key, found, files)
            return _checked(_located(found, file), strict)
    topology = _build(file, text, raw, resolved, digest, strict)
    if cache is not None:
        cache.put(key, topology, files)
    return topology


def content_hash(template: bytes, files: Sequence[ImportedFile]) -> str:
    """Return the sha256 of the layer version, the template bytes and every imported file's bytes.

    :param template: the template's bytes
    :param files: the resolved imports, in resolution order
    """
    digest = hashlib.sha256(LAYER_VERSION.encode())
    digest.update(b"\0template\0" + template)
    for item in files:
        digest.update(b"\0import\0" + item.uri.encode() + b"\0" + (item.namespace_prefix or "").encode() + b"\0")
        digest.update(item.data)
    return digest.hexdigest()


def _manifest_key(data: bytes, file: str, resolver: ImportResolver) -> str:
    # Relative imports depend on the directory and the rest on the map, so both are in the key.
    digest = hashlib.sha256(LAYER_VERSION.encode())
    for part in (str(Path(file).parent).encode(), resolver.fingerprint().encode(), data):
        digest.update(b"\0" + part)
    return digest.hexdigest()


def _located(topology: Topology, file: str) -> Topology:
    return topology if topology.source == file else dataclasses.replace(topology, source=file)


def _checked(topology: Topology, strict: bool) -> Topology:
    # The cache holds what a lenient load built: a strict load refuses it if it needed a conversion.
    if strict and topology.conversions:
        raise refusal(topology.conversions[0], topology.source)
    return topology


def _top_level(raw: Any, file: str) -> dict[str, Any]:
    if not isinstance(raw, Mapping):
        raise ToscaSyntaxError(
            "is not a TOSCA service template: the document must be a YAML mapping starting with "
            "'tosca_definitions_version: tosca_simple_yaml_1_0'",
            file=file,
        )
    version = raw.get("tosca_definitions_version")
    if not version:
        raise ToscaSyntaxError(
            "is not a TOSCA service template: add 'tosca_definitions_version: tosca_simple_yaml_1_0'",
            file=file,
            field="tosca_definitions_version",
        )
    return dict(raw)


# --------------------------------------------------------------------------------- the build
def _build(
    file: str, text: str, raw: dict[str, Any], resolved: ResolvedImports, digest: str, strict: bool = False
) -> Topology:
    from toscaparser.elements.entity_type import EntityType, update_definitions

    version = raw["tosca_definitions_version"]
    extensions = _extension_versions()
    if version not in TOSCA_VERSIONS and version not in extensions:
        raise ToscaSyntaxError(
            f"unsupported tosca_definitions_version '{version}'; use one of: "
            + ", ".join((*TOSCA_VERSIONS, *extensions)),
            file=file,
            field="tosca_definitions_version",
        )
    if version in extensions:
        update_definitions(version)  # NFV/MEC types, as tosca-parser itself does for these versions
    sources = [(f.path, f.definitions, f.namespace_prefix) for f in resolved.files] + [(file, raw, None)]
    registry = TypeRegistry.from_sections(EntityType.TOSCA_DEF, sources)
    cycle = registry.derivation_cycle()
    if cycle is not None:
        raise ToscaValidationError(
            f"types derive from each other in a cycle ({' -> '.join(cycle)}); make '{cycle[-2]}' derive "
            "from a type outside the cycle"
            + (" (a normative type cannot be redefined as derived from itself)" if len(cycle) == 2 else ""),
            file=registry.origin(cycle[0]) or file,
            field=f"{cycle[0]}.derived_from",
        )

    raw, conversions = convert_template(raw, registry, lambda name, spec: _secret_input(name, spec, registry, file))
    if strict and conversions:
        raise refusal(conversions[0], file)
    topology_tpl = _mapping(raw.get("topology_template"), file, "topology_template")
    inputs = _inputs(_mapping(topology_tpl.get("inputs"), file, "inputs"), file, registry)
    node_tpls = _mapping(topology_tpl.get("node_templates"), file, "node_templates")
    if len(node_tpls) > MAX_NODE_TEMPLATES:
        raise ToscaValidationError(
            f"defines {len(node_tpls):,} node templates, more than the {MAX_NODE_TEMPLATES:,} allowed; split the "
            "topology into several templates, or scale one node template with 'instance_count' or a "
            "scalable capability",
            file=file,
            field="node_templates",
        )
    rel_tpls = _mapping(topology_tpl.get("relationship_templates"), file, "relationship_templates")
    groups = _mapping(topology_tpl.get("groups"), file, "groups")
    nodes = {str(name): _node(str(name), spec, node_tpls, rel_tpls, registry, file) for name, spec in node_tpls.items()}
    policies = _policies(topology_tpl.get("policies"), nodes, groups, registry, file)
    outputs = _outputs(_mapping(topology_tpl.get("outputs"), file, "outputs"), file)
    _check_references(inputs, node_tpls, outputs, file)
    plan = _plan(nodes, file)

    _validate_with_tosca_parser(file, raw, resolved, inputs, tuple(nodes))

    description = raw.get("description") or topology_tpl.get("description") or ""
    return Topology(
        source=file,
        content_hash=digest,
        description=str(description).strip(),
        inputs=inputs,
        nodes=nodes,
        outputs=outputs,
        policies=policies,
        imports=resolved.uris,
        template_text=text,
        plan=plan,
        conversions=conversions,
    )


def _extension_versions() -> tuple[str, ...]:
    from toscaparser.tosca_template import ToscaTemplate

    return tuple(v for v in ToscaTemplate.VALID_TEMPLATE_VERSIONS if v not in TOSCA_VERSIONS)


def _mapping(value: Any, file: str, field: str, node: str | None = None) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ToscaValidationError(f"'{field}' must be a mapping, not {type(value).__name__}", file=file, node=node,
                                   field=field)
    return value


def _inputs(specs: Mapping[str, Any], file: str, registry: TypeRegistry) -> dict[str, InputDef]:
    inputs: dict[str, InputDef] = {}
    for name, spec in specs.items():
        name = str(name)
        if not isinstance(spec, Mapping):
            raise ToscaValidationError(
                "an input definition must be a mapping with at least 'type'",
                file=file,
                node=name, kind="input",
                field="inputs",
            )
        if not isinstance(spec.get("type"), str):
            raise ToscaValidationError(
                "an input needs a 'type' (string, integer, float, boolean, list, map, scalar-unit.size, ...)",
                file=file,
                node=name, kind="input",
                field="type",
            )
        if spec["type"] not in _SIMPLE_TYPES and registry.resolve(spec["type"], "data") is None:
            raise ToscaUnknownTypeError(
                f"unknown input type '{spec['type']}'; use one of {', '.join(_SIMPLE_TYPES)}, or a data type "
                "defined under data_types",
                file=file,
                node=name, kind="input",
                field="type",
            )
        constraints = spec.get("constraints") or []
        if not isinstance(constraints, list):
            raise ToscaValidationError("'constraints' must be a list", file=file, node=name, kind="input",
                                       field="constraints")
        for index, constraint in enumerate(constraints):
            problem = _constraint_problem(constraint)
            if problem:
                raise ToscaValidationError(problem, file=file, node=name, kind="input", field=f"constraints[{index}]")
        definition = InputDef(
            name=name,
            type=str(spec.get("type", "string")),
            description=str(spec.get("description") or "").strip(),
            default=spec.get("default"),
            required=bool(spec.get("required", True)),
            has_default=spec.get("default") is not None,
            constraints=tuple(constraints),
            entry_schema=spec.get("entry_schema"),
            declared_secret=_declared_secret(name, spec, registry, file),
        )
        if definition.has_default:
            try:
                check_input_value(definition, definition.default)
            except _BadValue as err:
                shown = "the default" if definition.is_secret else f"default {definition.default!r}"
                raise ToscaValidationError(f"{shown} {err}", file=file, node=name, kind="input",
                                           field="default") from None
        inputs[name] = definition
    return inputs


#: the TOSCA types of a value that are not data types (tosca-parser's, plus scalar-unit.bitrate)
_SIMPLE_TYPES = (
    "string", "integer", "float", "number", "boolean", "timestamp", "version", "range", "list", "map",
    "scalar-unit.size", "scalar-unit.time", "scalar-unit.frequency", "scalar-unit.bitrate", "PortDef", "PortSpec",
)
_COMPARISONS = frozenset({"equal", "greater_than", "greater_or_equal", "less_than", "less_or_equal"})
_LENGTHS = frozenset({"length", "min_length", "max_length"})
_CONSTRAINTS = ("in_range", "valid_values", "pattern", *sorted(_COMPARISONS), *sorted(_LENGTHS))


def _constraint_problem(constraint: Any) -> str | None:
    """Return what is wrong with one constraint clause of an input, or None if it is well formed.

    An input's constraints are checked by this package, not tosca-parser, when a value is given: a clause that
    cannot be checked would otherwise fail only then, or be skipped (an unknown operator).
    """
    if not isinstance(constraint, Mapping) or len(constraint) != 1:
        return f"a constraint must be one 'operator: value' mapping such as {{in_range: [1, 8]}}, not {constraint!r}"
    op, limit = next(iter(constraint.items()))
    if op not in _CONSTRAINTS:
        return f"unknown constraint operator {op!r}; use one of {', '.join(_CONSTRAINTS)}"
    if op == "in_range":
        if not isinstance(limit, list) or len(limit) != 2:
            return f"in_range takes a list of two bounds [low, high], not {limit!r}"
        low, high = limit
        numbers = all(isinstance(v, int | float) and not isinstance(v, bool) for v in limit)
        if numbers and low > high:
            return f"in_range [{low}, {high}] has its low bound above its high bound; write [{high}, {low}]"
    elif op == "valid_values" and (not isinstance(limit, list) or not limit):
        return f"valid_values takes a non-empty list of the allowed values, not {limit!r}"
    elif op in _LENGTHS and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        return f"{op} takes a non-negative integer, not {limit!r}"
    elif op in _COMPARISONS and isinstance(limit, list | Mapping):
        return f"{op} takes a single value, not {limit!r}"
    elif op == "pattern":
        if not isinstance(limit, str):
            return f"pattern takes a regular expression (a string), not {limit!r}"
        try:
            pattern_matches(limit, "")
        except _BadValue as err:
            return f"the input {err}"
    return None


#: inputs of this datatype (or one derived from it) hold credentials
CREDENTIAL_TYPE = "tosca.datatypes.Credential"


def _declared_secret(name: str, spec: Mapping[str, Any], registry: TypeRegistry, file: str) -> bool:
    """Return whether an input is declared secret: a credential datatype, or ``metadata: {secret: true}``."""
    metadata = _mapping(spec.get("metadata"), file, f"inputs.{name}.metadata")
    flags = {"metadata.secret": metadata.get("secret"), "secret": spec.get("secret")}
    for field, flag in flags.items():
        if flag is not None and not isinstance(flag, bool):
            raise ToscaValidationError(f"'{field}' must be true or false, not {flag!r}", file=file, node=name,
                                       field=field, kind="input")
    data_type = registry.resolve(spec.get("type"), "data")
    return any(flags.values()) or (data_type is not None and registry.derives_from(data_type, CREDENTIAL_TYPE, "data"))


def _secret_input(name: str, spec: Any, registry: TypeRegistry, file: str) -> bool:
    """Return whether an input's value must never be shown (declared secret or named like one)."""
    try:
        return InputDef(name=name, declared_secret=_declared_secret(name, spec, registry, file)).is_secret
    except ToscaError:  # a malformed declaration is refused when the inputs are read; show nothing meanwhile
        return True


def _node(
    name: str,
    spec: Any,
    node_tpls: Mapping[str, Any],
    rel_tpls: Mapping[str, Any],
    registry: TypeRegistry,
    file: str,
) -> NodeTemplate:
    if not isinstance(spec, Mapping):
        raise ToscaValidationError("a node template must be a mapping with 'type'", file=file, node=name)
    written = spec.get("type")
    if not isinstance(written, str) or not written:
        raise ToscaValidationError(
            "node template has no 'type'; add e.g. 'type: tosca.nodes.Compute'",
            file=file,
            node=name,
            field="type",
        )
    node_type = registry.resolve(written, "node")
    if node_type is None:
        raise ToscaUnknownTypeError(
            f"unknown node type '{written}'; define it under node_types or import the file that defines it",
            file=file,
            node=name,
            field="type",
        )
    try:
        hierarchy = registry.hierarchy(node_type, "node")
    except UnknownParentError as err:
        raise ToscaUnknownTypeError(
            f"{err}; define '{err.parent}' or import the file that defines it",
            file=err.origin or file,
            node=name,
            field=f"{err.type_name}.derived_from",
        ) from None

    capability_defs = registry.merged(node_type, "node", "capabilities")
    capabilities: dict[str, dict[str, Any]] = {}
    for cap_name, cap_spec in _mapping(spec.get("capabilities"), file, "capabilities", name).items():
        if cap_name not in capability_defs:
            raise ToscaValidationError(
                f"type '{node_type}' has no capability '{cap_name}'; known: "
                + (", ".join(sorted(capability_defs)) or "none"),
                file=file,
                node=name,
                field=f"capabilities.{cap_name}",
            )
        if not isinstance(cap_spec, Mapping):  # tosca-parser crashes on anything else, an empty one included
            raise ToscaValidationError(
                f"capability '{cap_name}' must be a mapping with 'properties', not {type(cap_spec).__name__}",
                file=file,
                node=name,
                field=f"capabilities.{cap_name}",
            )
        capabilities[str(cap_name)] = dict(
            _mapping(cap_spec.get("properties"), file, f"capabilities.{cap_name}.properties", name)
        )

    # Every capability of the type must be known, used or not: tosca-parser crashes on any other.
    cap_types = {}
    for cap_name, definition in capability_defs.items():
        cap_types[cap_name] = _capability_type(definition, registry)
        if cap_types[cap_name] is None:
            declared_by = next(
                (t for t in hierarchy if cap_name in (registry.definition(t).get("capabilities") or {})), node_type
            )
            raise ToscaUnknownTypeError(
                f"capability '{cap_name}' of type '{declared_by}' has an unknown type "
                f"{_written_type(definition)!r}; define it under capability_types or import its definition",
                file=registry.origin(declared_by) or file,
                node=name,
                field=f"capabilities.{cap_name}.type",
            )
    endpoints = [
        _endpoint(cap_name, props)
        for cap_name, props in capabilities.items()
        if registry.derives_from(cap_types[cap_name], _ENDPOINT, "capability")
    ]

    props: dict[str, Any] = {}
    for prop_name, prop_def in registry.merged(node_type, "node", "properties").items():
        if isinstance(prop_def, Mapping) and prop_def.get("default") is not None:
            props[prop_name] = copy.deepcopy(prop_def["default"])  # template values override below
    props.update(_mapping(spec.get("properties"), file, "properties", name))

    scalable = None
    if "scalable" in capabilities:
        sprops = capabilities["scalable"]
        scalable = Scalable(
            count=sprops.get("count", sprops.get("default_instances", 1)),
            min_instances=sprops.get("min_instances", 0),
            max_instances=sprops.get("max_instances"),
        )

    artifacts = dict(_mapping(spec.get("artifacts"), file, "artifacts", name))
    interfaces = _interfaces(name, node_type, hierarchy, spec, registry, file)
    for section, value in (("properties", props), ("capabilities", capabilities), ("artifacts", artifacts),
                           ("interfaces", interfaces)):
        found = non_text_key(value, section)
        if found is not None:  # they end up as JSON, environment variables and Ansible variables
            where, key = found
            raise ToscaValidationError(
                f"key {key!r} ({type(key).__name__}) is not text: names and map keys are; quote it",
                file=file, node=name, field=where)
    return NodeTemplate(
        name=name,
        type=node_type,
        type_hierarchy=hierarchy,
        properties=props,
        capabilities=capabilities,
        requirements=_requirements(name, spec.get("requirements"), node_type, node_tpls, rel_tpls, registry, file),
        scalable=scalable,
        endpoints=tuple(endpoints),
        artifacts=artifacts,
        interfaces=interfaces,
        description=str(spec.get("description") or "").strip(),
    )


#: keys of an interface definition that are not operations
_INTERFACE_KEYS = frozenset({"type", "inputs", "notifications", "description", "derived_from"})


def _interfaces(node_name: str, node_type: str, hierarchy: Sequence[str], spec: Mapping[str, Any],
                registry: TypeRegistry, file: str) -> dict[str, dict[str, dict[str, Any]]]:
    """Return interface -> operation -> {implementation, inputs}, merged from the types down to the template.

    INDIGO types carry the implementations (Ansible playbooks); templates override or add inputs.
    """
    merged: dict[str, dict[str, dict[str, Any]]] = {}
    layers = [(registry.definition(t).get("interfaces"), registry.origin(t) or file) for t in reversed(hierarchy)]
    layers.append((_mapping(spec.get("interfaces"), file, "interfaces", node_name), file))
    for layer, origin in layers:
        if not isinstance(layer, Mapping):
            continue
        for interface, operations in layer.items():
            if not isinstance(operations, Mapping):
                raise ToscaValidationError(f"interface '{interface}' must be a mapping of operations",
                                           file=origin, node=node_name, field=f"interfaces.{interface}")
            if isinstance(operations.get("operations"), Mapping):  # TOSCA 1.3 nests them
                operations = {**operations, **operations["operations"]}
            target = merged.setdefault(str(interface), {})
            for name, definition in operations.items():
                if name in _INTERFACE_KEYS or name == "operations" or definition is None:
                    continue
                if isinstance(definition, str):
                    definition = {"implementation": definition}
                if not isinstance(definition, Mapping):
                    raise ToscaValidationError(
                        "an operation is an implementation string or a mapping with 'implementation' and 'inputs'",
                        file=origin, node=node_name, field=f"interfaces.{interface}.{name}")
                before = target.get(str(name), {})
                inputs = {**(before.get("inputs") or {}), **_mapping(definition.get("inputs"), origin,
                                                                      f"interfaces.{interface}.{name}.inputs",
                                                                      node_name)}
                target[str(name)] = {**before, **copy.deepcopy(dict(definition)), "inputs": copy.deepcopy(inputs)}
    return {name: ops for name, ops in merged.items() if ops}


def _written_type(definition: Any) -> Any:
    return definition.get("type") if isinstance(definition, Mapping) else definition


def _capability_type(definition: Any, registry: TypeRegistry) -> str | None:
    return registry.resolve(_written_type(definition), "capability")


def _endpoint(name: str, props: Mapping[str, Any]) -> Endpoint:
    ports: list[dict[str, Any]] = []
    spec = props.get("ports")
    items = spec.items() if isinstance(spec, Mapping) else enumerate(spec) if isinstance(spec, list) else ()
    for port_name, port in items:
        if isinstance(port, Mapping):
            # INDIGO opens `source`; a standard PortSpec may give only `target`.
            number = port.get("source", port.get("target"))
            ports.append({"name": str(port_name), "port": number, **port})
    if props.get("port") is not None:
        ports.append({"name": "port", "port": props["port"], "protocol": props.get("protocol", "tcp")})
    network = props.get("network_name", "PRIVATE")
    return Endpoint(
        name=name,
        ports=tuple(ports),
        network_name=network if network is not None else "PRIVATE",
        dns_name=props.get("dns_name"),
        properties=dict(props),
    )


def _requirements(
    name: str,
    reqs: Any,
    node_type: str,
    node_tpls: Mapping[str, Any],
    rel_tpls: Mapping[str, Any],
    registry: TypeRegistry,
    file: str,
) -> tuple[Requirement, ...]:
    if reqs is None:
        return ()
    if not isinstance(reqs, list):
        raise ToscaValidationError(
            "'requirements' must be a list of 'name: target' entries",
            file=file,
            node=name,
            field="requirements",
        )
    definitions = registry.requirement_definitions(node_type)
    result = []
    for index, item in enumerate(reqs):
        if not isinstance(item, Mapping) or len(item) != 1:
            raise ToscaValidationError(
                "each requirement must be a single 'name: target' mapping",
                file=file,
                node=name,
                field=f"requirements[{index}]",
            )
        req_name, spec = next(iter(item.items()))
        field = f"requirements.{req_name}"
        if isinstance(spec, str):
            target, relationship, capability = spec, None, None
        elif isinstance(spec, Mapping):
            target, relationship, capability = (
                spec.get("node"),
                spec.get("relationship"),
                spec.get("capability"),
            )
        else:
            raise ToscaValidationError(
                "a requirement's target must be a node name or a mapping with 'node'",
                file=file,
                node=name,
                field=field,
            )
        if target is None:
            continue  # an abstract requirement (node_filter only): nothing to order or connect here
        if not isinstance(target, str) or target not in node_tpls:
            raise ToscaValidationError(
                f"requirement '{req_name}' targets node template '{target}', which does not exist; known: "
                + ", ".join(sorted(map(str, node_tpls))),
                file=file,
                node=name,
                field=field,
            )
        definition = definitions.get(req_name)
        definition = definition if isinstance(definition, Mapping) else {}
        rel_type = _relationship_type(relationship, rel_tpls, registry)
        if relationship is not None and rel_type is None:
            raise ToscaUnknownTypeError(
                f"unknown relationship type {_written_type(relationship)!r}; use a relationship type or "
                "a relationship template name",
                file=file,
                node=name,
                field=f"{field}.relationship",
            )
        if relationship is None and definition.get("relationship") is not None:
            rel_type = _relationship_type(definition["relationship"], rel_tpls, registry) or str(
                _written_type(definition["relationship"])
            )
        if capability is None:
            capability = definition.get("capability")
        result.append(
            Requirement(
                name=str(req_name),
                node=target,
                relationship=rel_type,
                capability=str(capability) if capability is not None else None,
            )
        )
    return tuple(result)


def _relationship_type(relationship: Any, rel_tpls: Mapping[str, Any], registry: TypeRegistry) -> str | None:
    if relationship is None:
        return None
    if isinstance(relationship, str) and relationship in rel_tpls:
        rel_tpl = rel_tpls[relationship]
        written = rel_tpl.get("type") if isinstance(rel_tpl, Mapping) else None
        return registry.resolve(written, "relationship")
    return registry.resolve(_written_type(relationship), "relationship")


def _policies(
    specs: Any,
    nodes: Mapping[str, NodeTemplate],
    groups: Mapping[str, Any],
    registry: TypeRegistry,
    file: str,
) -> tuple[Policy, ...]:
    if specs is None:
        return ()
    if not isinstance(specs, list):
        raise ToscaValidationError(
            "'policies' must be a list of 'name: definition' entries", file=file, field="policies"
        )
    result = []
    for index, item in enumerate(specs):
        if not isinstance(item, Mapping) or len(item) != 1 or not isinstance(next(iter(item.values())), Mapping):
            raise ToscaValidationError(
                "each policy must be a single 'name: {type: ...}' mapping",
                file=file,
                field=f"policies[{index}]",
            )
        name, spec = next(iter(item.items()))
        name = str(name)
        written = spec.get("type")
        policy_type = registry.resolve(written, "policy")
        if policy_type is None:
            raise ToscaUnknownTypeError(
                f"unknown policy type {written!r}; define it under policy_types or import its definition",
                file=file,
                node=name,
                field="type",
            )
        targets = spec.get("targets") or []
        if not isinstance(targets, list):
            raise ToscaValidationError(
                "'targets' must be a list of node or group names", file=file, node=name, field="targets"
            )
        missing = [t for t in targets if not isinstance(t, str) or (t not in nodes and t not in groups)]
        if missing:
            raise ToscaValidationError(
                f"policy targets {missing} are neither node templates nor groups",
                file=file,
                node=name,
                field="targets",
            )
        result.append(
            Policy(
                name=name,
                type=policy_type,
                targets=tuple(str(t) for t in targets),
                properties=dict(_mapping(spec.get("properties"), file, "properties")),
            )
        )
    return tuple(result)


def _outputs(specs: Mapping[str, Any], file: str) -> dict[str, OutputDef]:
    outputs = {}
    for name, spec in specs.items():
        name = str(name)
        if not isinstance(spec, Mapping) or "value" not in spec:
            raise ToscaValidationError("an output must be a mapping with 'value'", file=file, node=name, field="value",
                                       kind="output")
        outputs[name] = OutputDef(name=name, value=spec["value"], description=str(spec.get("description") or ""))
    return outputs


def _functions(value: Any, path: str) -> Iterator[tuple[str, Any, str]]:
    """Yield (function name, arguments, path) for every intrinsic function inside a value."""
    if isinstance(value, Mapping):
        if is_function(value):
            name, args = next(iter(value.items()))
            yield name, args, path
            yield from _functions(args, path)
        else:
            for key, item in value.items():
                yield from _functions(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _functions(item, f"{path}[{index}]")


def _check_references(
    inputs: Mapping[str, InputDef],
    node_tpls: Mapping[str, Any],
    outputs: Mapping[str, OutputDef],
    file: str,
) -> None:
    """Raise for a get_input of an undeclared input or a function naming an unknown node."""
    # Policies are left out: tosca-parser accepts undeclared inputs there (an INDIGO example relies
    # on it), and they only fail if a backend resolves that policy property.
    owners: list[tuple[str, str, str, Any]] = [("node", str(n), "", s) for n, s in node_tpls.items()]
    owners += [("output", name, "value", out.value) for name, out in outputs.items()]
    for kind, owner, base, value in owners:
        for function, args, path in _functions(value, base):
            if function == "get_input":
                name = args[0] if isinstance(args, list) and args else args
                if not isinstance(name, str) or name not in inputs:
                    raise ToscaValidationError(
                        f"get_input refers to input {name!r}, which is not declared; declare it under "
                        f"topology_template.inputs (declared: {', '.join(inputs) or 'none'})",
                        file=file,
                        node=owner,
                        field=path,
                        kind=kind,
                    )
            elif function in ("get_attribute", "get_property"):
                target = args[0] if isinstance(args, list) and args else None
                if not isinstance(target, str) or (target not in node_tpls and target not in _RUNTIME_NODES):
                    raise ToscaValidationError(
                        f"{function} refers to node template {target!r}, which does not exist",
                        file=file,
                        node=owner,
                        field=path,
                        kind=kind,
                    )


def _plan(nodes: Mapping[str, NodeTemplate], file: str) -> tuple[str, ...]:
    """Return the nodes in deployment order (requirements first, ties by name), or raise on a cycle."""
    _check_cycles(nodes, file)
    waiting = {name: {r.node for r in node.requirements if r.node != name} for name, node in nodes.items()}
    dependents: dict[str, list[str]] = {name: [] for name in nodes}
    for name, needs in waiting.items():
        for need in needs:
            dependents[need].append(name)
    ready = [name for name, needs in waiting.items() if not needs]
    heapq.heapify(ready)
    order = []
    while ready:
        name = heapq.heappop(ready)
        order.append(name)
        for dependent in dependents[name]:
            waiting[dependent].discard(name)
            if not waiting[dependent]:
                heapq.heappush(ready, dependent)
    return tuple(order)


def _check_cycles(nodes: Mapping[str, NodeTemplate], file: str) -> None:
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    for start in sorted(nodes):
        if state.get(start):
            continue
        path: list[tuple[str, str]] = []  # (node, requirement that leads on)
        stack: list[tuple[str, Iterator[Requirement]]] = [(start, iter(nodes[start].requirements))]
        state[start] = 1
        while stack:
            name, reqs = stack[-1]
            req = next(reqs, None)
            if req is None:
                state[name] = 2
                stack.pop()
                if path:
                    path.pop()
                continue
            if state.get(req.node) == 1:
                members = [n for n, _ in path] + [name]
                cycle = members[members.index(req.node) :] + [req.node]
                raise ToscaCycleError(
                    f"requirements form a cycle: {' -> '.join(cycle)}; remove one of these requirements",
                    file=file,
                    node=name,
                    field=f"requirements.{req.name}",
                )
            if not state.get(req.node):
                state[req.node] = 1
                path.append((name, req.name))
                stack.append((req.node, iter(nodes[req.node].requirements)))


# ------------------------------------------------------------------------------ tosca-parser
@contextlib.contextmanager
def _quiet_tosca_parser() -> Iterator[None]:
    """Silence tosca-parser's loggers (it logs every problem it also reports) for one parse."""
    loggers = [logging.getLogger(name) for name in ("tosca", "tosca.model", "toscaparser")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def _validate_with_tosca_parser(
    file: str,
    raw: Mapping[str, Any],
    resolved: ResolvedImports,
    inputs: Mapping[str, InputDef],
    nodes: Sequence[str],
) -> None:
    from toscaparser.common.exception import ExceptionCollector
    from toscaparser.common.exception import ValidationError as ParserValidationError
    from toscaparser.tosca_template import ToscaTemplate

    tpl = copy.deepcopy(dict(raw))  # tosca-parser changes what it is given
    if "imports" in tpl:
        tpl["imports"] = copy.deepcopy(resolved.rewritten)
    _tame_scalable(tpl, inputs)
    _tame_secret_inputs(tpl, inputs)
    params = {name: copy.deepcopy(d.default) for name, d in inputs.items() if d.has_default}
    with _PARSER_LOCK, _quiet_tosca_parser(), _locating_errors(), _bounded_patterns(file), _strict_integers():
        try:
            ToscaTemplate(yaml_dict_tpl=tpl, parsed_params=params, local_defs=dict(resolved.local_defs))
        except ParserValidationError as err:
            # The translation carries every collected message; tosca-parser's own report adds only traces.
            raise _translate(list(ExceptionCollector.getExceptions()), file, nodes, str(err)) from None
        except ToscaError:
            raise
        except Exception as err:  # tosca-parser crashes (TypeError, KeyError...) on some invalid templates
            raise _crashed(err, file, nodes) from err
        finally:
            ExceptionCollector.stop()
            ExceptionCollector.clear()


def _tame_scalable(tpl: Mapping[str, Any], inputs: Mapping[str, InputDef]) -> None:
    """Replace functions in scalable bounds by their input defaults, and drop bad bounds, for tosca-parser only.

    tosca-parser 2.12 compares ``default_instances`` with the bounds and raises TypeError on a
    ``{get_input: ...}``; our own model keeps the function and checks the value at run time.
    """
    nodes = (tpl.get("topology_template") or {}).get("node_templates") or {}
    for spec in nodes.values() if isinstance(nodes, Mapping) else ():
        caps = spec.get("capabilities") if isinstance(spec, Mapping) else None
        scalable = caps.get("scalable") if isinstance(caps, Mapping) else None
        props = scalable.get("properties") if isinstance(scalable, Mapping) else None
        if not isinstance(props, dict):
            continue
        for key in ("default_instances", "min_instances", "max_instances", "count"):
            value = props.get(key)
            if not is_function(value):
                continue
            name = value.get("get_input")
            default = inputs[name].default if isinstance(name, str) and name in inputs else None
            if isinstance(default, int) and not isinstance(default, bool):
                props[key] = default
            else:
                del props[key]
        # A fraction, a word or UNBOUNDED is left to instance_count, which refuses a bad one naming the node and
        # field when the plan is compiled; tosca-parser would truncate a fraction, and compares default_instances
        # with both bounds (TypeError when one is missing: an absent max_instances is unbounded here).
        for key in ("default_instances", "min_instances", "max_instances"):
            if key in props and (isinstance(props[key], bool) or not isinstance(props[key], int)):
                del props[key]
        if not {"min_instances", "max_instances"} <= props.keys():
            props.pop("default_instances", None)


def _tame_secret_inputs(tpl: Mapping[str, Any], inputs: Mapping[str, InputDef]) -> None:
    """Hide what declares an input secret from tosca-parser only, which knows neither.

    tosca-parser 2.12 rejects ``metadata``/``secret`` on an input and any datatype as an input's type; our
    own model keeps both (see :func:`_declared_secret`) and checks a credential value as a map.
    """
    specs = (tpl.get("topology_template") or {}).get("inputs") or {}
    for name, spec in specs.items() if isinstance(specs, Mapping) else ():
        if not isinstance(spec, dict):
            continue
        spec.pop("metadata", None)
        spec.pop("secret", None)
        definition = inputs.get(str(name))
        if definition is not None and definition.declared_secret and "." in definition.type:
            spec["type"] = "map"


_CATEGORIES: tuple[tuple[type[ToscaError], frozenset[str]], ...] = (
    (ToscaSyntaxError, frozenset({"InvalidTemplateVersion"})),
    (ToscaImportError, frozenset({"ImportError", "URLException", "ModuleNotFoundError"})),
    (ToscaUnknownTypeError, frozenset({"InvalidTypeError", "InvalidNodeTypeError", "UnsupportedTypeError"})),
)


def _category(exc: BaseException) -> type[ToscaError]:
    name = type(exc).__name__
    if name == "MissingRequiredFieldError" and "tosca_definitions_version" in _message(exc):
        return ToscaSyntaxError
    for category, names in _CATEGORIES:
        if name in names:
            return category
    return ToscaValidationError


def _message(exc: BaseException) -> str:
    if isinstance(exc, KeyError) and exc.args:
        return str(exc.args[0])
    return str(exc).strip()


_UNKNOWN_FIELD = re.compile(r'^"(\w+)" of template "([^"]+)" contains unknown field "([^"]+)"')
_FIELD = re.compile(r'(?:field|property|Property|parameter|capability) "([^"]+)"')


def _locate(message: str, nodes: Sequence[str]) -> tuple[str | None, str | None]:
    node = next((n for n in nodes if f'"{n}"' in message), None)
    field = _FIELD.search(message)
    return node, field.group(1) if field else None


def _translate(collected: Sequence[BaseException], file: str, nodes: Sequence[str], report: str) -> ToscaError:
    """Turn tosca-parser's collected errors into one typed error (the most fundamental kind first)."""
    if not collected:
        return ToscaValidationError(f"tosca-parser rejected the template: {report.strip()}", file=file)
    order = [ToscaSyntaxError, ToscaImportError, ToscaUnknownTypeError, ToscaValidationError]
    chosen = min((_category(e) for e in collected), key=order.index)
    primary = next(e for e in collected if _category(e) is chosen)
    messages = [_message(e) for e in collected]
    text = _message(primary)
    match = _UNKNOWN_FIELD.match(text)
    if match:  # '"properties" of template' also stands for a capability's properties: where says which
        where = getattr(primary, "_cloud_paas_where", (None, None))[1] or ""
        section = where if where.startswith("capabilities.") and where.endswith(".properties") else match.group(1)
        node, field = match.group(2), f"{section}.{match.group(3)}"
    else:  # where tosca-parser was when it collected the error; else what the message names
        node, field = getattr(primary, "_cloud_paas_where", (None, None))
        named_node, named_field = _locate(text, nodes)
        node, field = node or named_node, field or named_field
    others = [m for m in messages if m != text]
    if others:
        text += f" (also: {'; '.join(others[:5])}{'; ...' if len(others) > 5 else ''})"
    return chosen(text, file=file, node=node, field=field)


def _where(frames: Iterable[FrameType]) -> tuple[str | None, str | None]:
    """Return the (node, field) tosca-parser was checking, from its frames, innermost first."""
    from toscaparser.entity_template import EntityTemplate
    from toscaparser.parameters import Input, Output
    from toscaparser.policy import Policy as ParserPolicy
    from toscaparser.properties import Property

    node = capability = prop = None
    frames = iter(frames)
    for frame in frames:
        owner = frame.f_locals.get("self")
        if prop is None and isinstance(owner, Property):
            prop = owner.name
        elif isinstance(owner, EntityTemplate | ParserPolicy) and getattr(owner, "name", None):
            # `cap` is set while tosca-parser checks a capability's properties, in this frame or a caller's
            for caller in frames if "cap" not in frame.f_locals else ():
                if caller.f_locals.get("self") is not owner:
                    break
                if "cap" in caller.f_locals:
                    frame = caller
                    break
            cap = frame.f_locals.get("cap")
            capability = cap if isinstance(cap, str) else None
            node = owner.name
            break
        elif isinstance(owner, Input | Output):
            return owner.name, "default" if isinstance(owner, Input) else "value"
    if prop is None:
        return node, f"capabilities.{capability}.properties" if capability else None
    return node, f"capabilities.{capability}.properties.{prop}" if capability else f"properties.{prop}"


def _stack(frame: FrameType | None) -> Iterator[FrameType]:
    while frame is not None:
        yield frame
        frame = frame.f_back


@contextlib.contextmanager
def _bounded_patterns(file: str) -> Iterator[None]:
    """Make tosca-parser match ``pattern`` constraints in bounded time, for one parse (under _PARSER_LOCK).

    tosca-parser matches them with :mod:`re`, which backtracks for ever on a pattern such as
    ``(a|aa)+$``; the whole value is matched instead by :func:`~airflow_cloud_paas.tosca.resolve.pattern_matches`.

    :param file: the template, named in the error
    """
    from toscaparser.elements.constraints import Pattern

    def is_valid(constraint: Any, value: Any) -> bool:
        try:
            return isinstance(value, str) and pattern_matches(str(constraint.constraint_value), value)
        except _BadValue as err:
            node, field = _where(_stack(sys._getframe(1)))
            shown = f"property '{constraint.property_name}'"
            raise ToscaValidationError(f"{shown} {err}", file=file, node=node, field=field) from None

    original = Pattern.__dict__["_is_valid"]
    Pattern._is_valid = is_valid
    try:
        yield
    finally:
        Pattern._is_valid = original


@contextlib.contextmanager
def _strict_integers() -> Iterator[None]:
    """Make tosca-parser refuse a float or a boolean where an integer is due, for one parse (under _PARSER_LOCK).

    tosca-parser 2.12 accepts whatever ``int()`` takes, so ``num_cpus: 1.5`` became 1 and ``true`` became 1;
    a string of digits is still accepted, as this package's inputs accept it.
    """
    from toscaparser.common.exception import ExceptionCollector
    from toscaparser.utils import validateutils

    original = validateutils.__dict__["validate_integer"]

    def validate_integer(value: Any) -> Any:
        if isinstance(value, bool | float):
            ExceptionCollector.appendException(ValueError(f'"{value}" is not an integer.'))
            return value
        return original(value)

    validateutils.validate_integer = validate_integer
    try:
        yield
    finally:
        validateutils.validate_integer = original


@contextlib.contextmanager
def _locating_errors() -> Iterator[None]:
    """Tag every error tosca-parser collects with the node and field it was checking; keep the first ones only.

    tosca-parser's messages (e.g. '"x" is not a list.') often name neither; the live stack does.
    Called under _PARSER_LOCK; the original collector method is always put back.
    """
    from toscaparser.common.exception import ExceptionCollector

    original = ExceptionCollector.__dict__["appendException"]

    def append(exception: BaseException) -> None:
        if ExceptionCollector.collecting and len(ExceptionCollector.exceptions) >= MAX_COLLECTED_ERRORS:
            return  # enough to report; tosca-parser's de-duplication takes time quadratic in their number
        with contextlib.suppress(AttributeError):  # a few built-in exception types take no attributes
            exception._cloud_paas_where = _where(_stack(sys._getframe(1)))  # type: ignore[attr-defined]
        original.__func__(exception)

    ExceptionCollector.appendException = staticmethod(append)
    try:
        yield
    finally:
        ExceptionCollector.appendException = original


def _crashed(err: Exception, file: str, nodes: Sequence[str]) -> ToscaError:
    """Describe a tosca-parser crash, naming the node and property it was validating if possible."""
    frames = [frame for frame, _ in traceback.walk_tb(err.__traceback__)]
    node, field = _where(reversed(frames))
    if node is None:
        node, _ = _locate(str(err), nodes)
    return ToscaValidationError(
        f"tosca-parser could not validate the template ({type(err).__name__}: {err}); check the types of "
        "the values given to this node's properties and capabilities",
        file=file,
        node=node,
        field=field,
    )
