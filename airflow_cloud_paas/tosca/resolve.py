"""Give a parsed topology the values of one run: inputs checked, intrinsic functions evaluated.

Deploy-time functions (``get_input``, ``concat``, ``token``) are evaluated by :func:`resolve_value`;
``get_attribute`` and ``get_property`` stay in place until the resources exist, when
:func:`resolve_outputs` evaluates the outputs from the resources' attributes.

``get_attribute`` semantics (kept simple; INDIGO templates use exactly these forms):

* ``[node, attr]``: with one instance, that instance's value; with several, the values of all
  instances in index order, lists flattened (``[wn, private_address]`` -> every worker's address).
* ``[node, attr, i, ...]``: the ``i``-th item of that flattened list, then the next keys/indexes
  (``[server, public_address, 0]`` -> the first public address, whether an instance reports a
  single address or a list).
* ``[node, capability, attr, ...]``: when the instances have no ``capability`` attribute, the
  capability name is skipped (``[server, endpoint, credential, 0]`` reads ``credential``).
* An attribute no instance reports evaluates to None.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime
import math
import re
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import regex

from airflow_cloud_paas.exceptions import ToscaInputError, ToscaValidationError
from airflow_cloud_paas.tosca.model import Endpoint, InputDef, NodeTemplate, Scalable, Topology

FUNCTIONS = frozenset(
    {
        "get_input",
        "get_property",
        "get_attribute",
        "get_operation_output",
        "get_nodes_of_type",
        "get_artifact",
        "concat",
        "token",
        "join",
    }
)
_KEYWORDS = frozenset({"SELF", "HOST", "SOURCE", "TARGET"})

_SCALAR_UNITS = {
    "scalar-unit.size": {
        "b": 1,
        "kb": 1000,
        "kib": 1024,
        "mb": 1000**2,
        "mib": 1024**2,
        "gb": 1000**3,
        "gib": 1024**3,
        "tb": 1000**4,
        "tib": 1024**4,
    },
    "scalar-unit.time": {"d": 86400, "h": 3600, "m": 60, "s": 1, "ms": 1e-3, "us": 1e-6, "ns": 1e-9},
    "scalar-unit.frequency": {"hz": 1, "khz": 1e3, "mhz": 1e6, "ghz": 1e9},
    "scalar-unit.bitrate": {
        "bps": 1,
        "kbps": 1e3,
        "kibps": 1024,
        "mbps": 1e6,
        "mibps": 1024**2,
        "gbps": 1e9,
        "gibps": 1024**3,
        "tbps": 1e12,
        "tibps": 1024**4,
    },
}
_SCALAR = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]+)\s*$")
_VERSION = re.compile(r"^\d+\.\d+(\.\d+(\.[A-Za-z0-9_]+(-\d+)?)?)?$")
_INTEGER = re.compile(r"^[+-]?\d+$")
#: the most instances of one node a plan may ask for: a guard against a typo or a hostile input (10**9), far above
#: any real group (the packaged templates allow 100); ``max_instances`` narrows it
MAX_INSTANCES = 10_000


def is_function(value: Any) -> bool:
    """Return whether a value is a TOSCA intrinsic function (a one-key mapping like ``{get_input: x}``).

    :param value: any property value
    """
    return isinstance(value, Mapping) and len(value) == 1 and next(iter(value)) in FUNCTIONS


def non_text_key(value: Any, path: str) -> tuple[str, Any] | None:
    """Return (where, key) of the first mapping key inside a value that is not a string, or None.

    YAML reads ``0:``, ``true:`` or ``null:`` as a number, a boolean or None; TOSCA names and map keys are text.

    :param value: any value
    :param path: where the value is, for the answer
    """
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                return path, key
            found = non_text_key(item, f"{path}.{key}")
            if found is not None:
                return found
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            found = non_text_key(item, f"{path}[{index}]")
            if found is not None:
                return found
    return None


# ------------------------------------------------------------------------------------------ types
class _BadValue(ValueError):
    """A value does not fit a TOSCA type or constraint (message only, no value for secrets).

    :param message: what is wrong
    :param kind: ``type`` or ``constraints``
    """

    def __init__(self, message: str, kind: str = "type") -> None:
        super().__init__(message)
        self.kind = kind


def scalar_to_base(value: Any, type_name: str) -> float:
    """Return a scalar-unit value in its base unit (bytes, seconds, Hz, bps).

    :param value: e.g. ``"4 GB"``
    :param type_name: ``scalar-unit.size``, ``.time``, ``.frequency`` or ``.bitrate``
    """
    units = _SCALAR_UNITS[type_name]
    match = _SCALAR.match(value) if isinstance(value, str) else None
    if not match or match.group(2).lower() not in units:
        raise _BadValue(f"is not a {type_name} (a number and a unit among {', '.join(sorted(units))})")
    return float(match.group(1)) * units[match.group(2).lower()]


def check_value(value: Any, type_name: str, entry_schema: Any = None) -> Any:
    """Return the value checked against a TOSCA type (a digit string becomes an integer).

    :param value: the value given
    :param type_name: the TOSCA type (string, integer, float, boolean, list, map, version,
        scalar-unit.*, timestamp, range; other names are data types and must be maps)
    :param entry_schema: the entry schema of a list or map
    """
    if type_name == "string":
        if not isinstance(value, str):
            raise _BadValue(f"must be a string, not {type(value).__name__}")
        if "\0" in value:  # no file, command, environment or database text can hold it
            raise _BadValue("must not hold a NUL character ('\\0')")
        return value
    if type_name == "integer":
        if isinstance(value, str) and _INTEGER.match(value.strip()):
            return int(value.strip())  # from a CLI or form field
        if isinstance(value, bool) or not isinstance(value, int):
            raise _BadValue(f"must be an integer, not {type(value).__name__}")
        return value
    if type_name == "float":
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise _BadValue(f"must be a number, not {type(value).__name__}")
        return float(value)
    if type_name == "boolean":
        if not isinstance(value, bool):
            raise _BadValue(f"must be true or false, not {type(value).__name__}")
        return value
    if type_name in _SCALAR_UNITS:
        scalar_to_base(value, type_name)
        return value
    if type_name == "version":
        text = str(value) if isinstance(value, int | float) and not isinstance(value, bool) else value
        if not isinstance(text, str) or not _VERSION.match(text):
            raise _BadValue("must be a version like 1.2 or 1.2.3")
        return text
    if type_name == "timestamp":
        if not isinstance(value, str | datetime.date):
            raise _BadValue("must be a timestamp (ISO 8601)")
        return value
    if type_name == "range":
        if (
            not isinstance(value, Sequence)
            or isinstance(value, str)
            or len(value) != 2
            or not all((isinstance(v, int) and not isinstance(v, bool)) or v == "UNBOUNDED" for v in value)
        ):
            raise _BadValue("must be a range [low, high] of integers (or UNBOUNDED)")
        return list(value)
    entry_type, entry_constraints = _entry(entry_schema)
    found = non_text_key(value, "value")
    if found is not None:
        raise _BadValue(f"has a key {found[1]!r} ({type(found[1]).__name__}) at {found[0]}: map keys are text")
    if type_name == "list":
        if not isinstance(value, Sequence) or isinstance(value, str | bytes):
            raise _BadValue(f"must be a list, not {type(value).__name__}")
        items = list(value)
        if entry_type:
            for index, item in enumerate(items):
                items[index] = _entry_check(item, entry_type, entry_constraints, f"item {index}")
        return items
    if type_name == "map" or type_name.startswith("tosca.datatypes.") or "." in type_name:
        # Data types are checked as maps only: their fields are validated when the template loads.
        if not isinstance(value, Mapping):
            raise _BadValue(f"must be a map, not {type(value).__name__}")
        result = dict(value)
        if type_name == "map" and entry_type:
            for key, item in result.items():
                result[key] = _entry_check(item, entry_type, entry_constraints, f"key {key!r}")
        return result
    return value  # an unknown simple type: tosca-parser has accepted the template


def _entry(entry_schema: Any) -> tuple[str | None, Sequence[Mapping[str, Any]]]:
    if isinstance(entry_schema, str):
        return entry_schema, ()
    if isinstance(entry_schema, Mapping):
        return entry_schema.get("type"), entry_schema.get("constraints") or ()
    return None, ()


def _entry_check(item: Any, entry_type: str, constraints: Sequence[Mapping[str, Any]], where: str) -> Any:
    try:
        item = check_value(item, entry_type)
        check_constraints(item, entry_type, constraints)
    except _BadValue as err:
        raise _BadValue(f"{where} {err}", err.kind) from None
    return item


def _comparable(value: Any, type_name: str) -> Any:
    if type_name in _SCALAR_UNITS:
        return scalar_to_base(value, type_name)
    if type_name == "version":
        return tuple(int(p) if p.isdigit() else p for p in re.split(r"[.-]", str(value)))
    return value


def check_constraints(value: Any, type_name: str, constraints: Sequence[Mapping[str, Any]]) -> None:
    """Raise if a value breaks one of the TOSCA constraints of its definition.

    :param value: the checked value
    :param type_name: its TOSCA type (scalar units compare by magnitude)
    :param constraints: e.g. ``[{"in_range": [1, 8]}, {"valid_values": [...]}]``
    """
    for constraint in constraints or ():
        if not isinstance(constraint, Mapping):
            continue
        for op, limit in constraint.items():
            if not _satisfies(value, type_name, op, limit):
                raise _BadValue(
                    f"is not allowed: it must be {constraint_text(op, limit)} (constraint {op}: {limit!r})",
                    "constraints",
                )


def constraint_text(op: str, limit: Any) -> str:
    """Return a TOSCA constraint in words, as in "it must be ...": ``in_range: [0, 16]`` -> ``from 0 to 16``.

    :param op: the constraint's operator (``in_range``, ``greater_or_equal``, ``valid_values``, ...)
    :param limit: its argument
    """
    if op == "in_range" and isinstance(limit, Sequence) and not isinstance(limit, str) and len(limit) == 2:
        low, high = limit
        if low == "UNBOUNDED" and high == "UNBOUNDED":
            return "any value"
        if low == "UNBOUNDED":
            return f"at most {high}"
        if high == "UNBOUNDED":
            return f"at least {low}"
        return f"from {low} to {high}"
    if op == "valid_values" and isinstance(limit, Sequence) and not isinstance(limit, str):
        return "one of " + ", ".join(str(v) for v in limit)
    words = {
        "equal": "equal to {}",
        "greater_than": "more than {}",
        "greater_or_equal": "at least {}",
        "less_than": "less than {}",
        "less_or_equal": "at most {}",
        "length": "of length {}",
        "min_length": "at least {} long",
        "max_length": "at most {} long",
        "pattern": "matching the pattern {}",
    }
    return words[op].format(limit) if op in words else f"{op} {limit}"


def constraints_text(constraints: Sequence[Mapping[str, Any]]) -> str:
    """Return every constraint of a definition in words, joined by "and" (empty without constraints).

    :param constraints: e.g. ``[{"in_range": [1, 8]}]``
    """
    return " and ".join(
        constraint_text(op, limit) for c in constraints or () if isinstance(c, Mapping) for op, limit in c.items()
    )


#: seconds one ``pattern`` constraint may take on one value: a pattern with nested repeats such as
#: ``(a|aa)+$`` backtracks for ever on a long value, so it is matched by the ``regex`` module with a time
#: bound (a pattern that needs longer is refused as unusable).
PATTERN_TIMEOUT_S = 1.0


def pattern_matches(pattern: str, value: str) -> bool:
    """Return whether a whole value matches a TOSCA ``pattern`` constraint, in bounded time.

    Raise _BadValue if the pattern is not a regular expression or takes over PATTERN_TIMEOUT_S.

    :param pattern: the constraint's regular expression (Python syntax, as tosca-parser reads it)
    :param value: the checked string
    """
    try:
        return regex.fullmatch(pattern, value, timeout=PATTERN_TIMEOUT_S) is not None
    except regex.error as err:
        raise _BadValue(
            f"cannot be checked: its pattern constraint {pattern!r} is not a valid regular expression ({err}); "
            "fix the pattern",
            "constraints",
        ) from None
    except TimeoutError:
        raise _BadValue(
            f"cannot be checked: matching the pattern constraint {pattern!r} took over {PATTERN_TIMEOUT_S:g} s "
            "(nested repeats such as '(a|aa)+' backtrack without end); simplify the pattern",
            "constraints",
        ) from None


def _satisfies(value: Any, type_name: str, op: str, limit: Any) -> bool:
    try:
        if op in ("length", "min_length", "max_length"):
            size = len(value)
            return {"length": size == limit, "min_length": size >= limit, "max_length": size <= limit}[op]
        if op == "pattern":
            return isinstance(value, str) and pattern_matches(str(limit), value)
        if op == "valid_values":
            return any(_comparable(value, type_name) == _comparable(v, type_name) for v in limit)
        if op == "in_range":
            low, high = limit
            mine = _comparable(value, type_name)
            return (low == "UNBOUNDED" or mine >= _comparable(low, type_name)) and (
                high == "UNBOUNDED" or mine <= _comparable(high, type_name)
            )
        mine, theirs = _comparable(value, type_name), _comparable(limit, type_name)
        compare = {
            "equal": lambda: mine == theirs,
            "greater_than": lambda: mine > theirs,
            "greater_or_equal": lambda: mine >= theirs,
            "less_than": lambda: mine < theirs,
            "less_or_equal": lambda: mine <= theirs,
        }.get(op)
        return compare() if compare else True  # unknown (e.g. schema) constraints are tosca-parser's job
    except _BadValue:
        raise
    except (TypeError, ValueError) as err:
        raise _BadValue(f"cannot be checked against {op}: {limit!r} ({err})", "constraints") from None


def check_input_value(definition: InputDef, value: Any) -> Any:
    """Return one input value checked against its definition, or raise ValueError with the reason.

    :param definition: the input definition
    :param value: the value given
    """
    value = check_value(value, definition.type, definition.entry_schema)
    check_constraints(value, definition.type, definition.constraints)
    return value


# ----------------------------------------------------------------------------------------- inputs
def validate_inputs(topology: Topology, values: Mapping[str, Any] | None,
                    withheld: Collection[str] = ()) -> dict[str, Any]:
    """Return every input's value for a run: given values checked, defaults filled.

    A value of None counts as not given. A string of digits is accepted for an integer input.

    :param topology: the parsed template
    :param values: input name -> value (from DAG params, the CLI or the API)
    :param withheld: inputs whose value is withheld (a stored secret that a scale does not read): kept as given
        (the mask), never checked
    """
    values = dict(values or {})
    unknown = sorted(set(values) - set(topology.inputs))
    if unknown:
        known = ", ".join(sorted(topology.inputs)) or "none"
        raise ToscaInputError(
            f"unknown input(s) {', '.join(unknown)}; the template declares: {known}",
            file=topology.source,
            node=unknown[0],
            field="inputs",
            kind="input",
        )
    result: dict[str, Any] = {}
    for name, definition in topology.inputs.items():
        value = values.get(name)
        if name in withheld:
            result[name] = value
            continue
        if value is None:
            if definition.has_default:
                result[name] = copy.deepcopy(definition.default)
                continue
            if definition.required:
                raise ToscaInputError(
                    f"required input has no value and no default; pass {name}=<{definition.type}>",
                    file=topology.source,
                    node=name,
                    field="inputs",
                    kind="input",
                )
            result[name] = None
            continue
        try:
            result[name] = check_input_value(definition, value)
        except _BadValue as err:
            shown = "the value given" if definition.is_secret else f"{value!r}"
            allowed = constraints_text(definition.constraints)
            hint = "" if err.kind == "constraints" else f"; pass a value of type {definition.type}" + (
                f" that is {allowed}" if allowed else "")
            raise ToscaInputError(
                f"input {name}: {shown} {err}{hint}",
                file=topology.source,
                node=name,
                field=err.kind,
                kind="input",
            ) from None
    return result


def _effective_inputs(topology: Topology, inputs: Mapping[str, Any] | None) -> dict[str, Any]:
    # Every declared input has a value here (None for an optional one without default), so that a
    # get_input of it resolves; a None given means "not given", as in validate_inputs.
    merged = {n: (d.default if d.has_default else None) for n, d in topology.inputs.items()}
    merged.update({k: v for k, v in (inputs or {}).items() if v is not None or k not in merged})
    return merged


# ------------------------------------------------------------------------------------- functions
def resolve_value(
    value: Any,
    inputs: Mapping[str, Any],
    *,
    file: str | None = None,
    node: str | None = None,
    field: str | None = None,
) -> Any:
    """Return a value with ``get_input`` replaced, and ``concat``/``token`` evaluated where possible.

    ``get_attribute`` and ``get_property`` are kept (their arguments resolved) for the runtime.

    :param value: a property value, possibly with intrinsic functions
    :param inputs: the run's input values (see :func:`validate_inputs`)
    :param file: the template, named in errors
    :param node: the node concerned, named in errors
    :param field: the property concerned, named in errors
    """
    where = {"file": file, "node": node, "field": field}
    if isinstance(value, Mapping):
        if is_function(value):
            name, args = next(iter(value.items()))
            if name == "get_input":
                return _get_input(args, inputs, where)
            resolved = resolve_value(args, inputs, **where)
            if name == "concat":
                return _concat(resolved) if _plain(resolved) else {name: resolved}
            if name == "join":
                return _join(resolved) if _plain(resolved) else {name: resolved}
            if name == "token":
                return _token(resolved, where) if _plain(resolved) else {name: resolved}
            return {name: resolved}
        return {k: resolve_value(v, inputs, **where) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [resolve_value(v, inputs, **where) for v in value]
    return value


def _plain(value: Any) -> bool:
    if is_function(value):
        return False
    if isinstance(value, Mapping):
        return all(_plain(v) for v in value.values())
    if isinstance(value, list | tuple):
        return all(_plain(v) for v in value)
    return True


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _concat(args: Any) -> str:
    return "".join(_text(a) for a in (args if isinstance(args, list) else [args]))


def _join(args: Any) -> str:
    parts = args[0] if isinstance(args, list) and args else []
    separator = args[1] if isinstance(args, list) and len(args) > 1 else ""
    return _text(separator).join(_text(p) for p in parts)


def _token(args: Any, where: Mapping[str, Any]) -> Any:
    if not isinstance(args, list) or len(args) != 3 or not isinstance(args[2], int):
        raise ToscaValidationError("token takes [string, separator characters, index]", **where)
    text, separators, index = _text(args[0]), _text(args[1]), args[2]
    parts = re.split("|".join(re.escape(c) for c in separators), text) if separators else [text]
    return parts[index] if -len(parts) <= index < len(parts) else None


def _get_input(args: Any, inputs: Mapping[str, Any], where: Mapping[str, Any]) -> Any:
    name, *path = args if isinstance(args, list) and args else [args]
    if not isinstance(name, str) or name not in inputs:
        raise ToscaInputError(
            f"get_input refers to input '{name}', which has no value; pass it or give it a default",
            **where,
        )
    return _walk(copy.deepcopy(inputs[name]), path)


def _walk(value: Any, path: Sequence[Any]) -> Any:
    for key in path:
        if isinstance(value, Mapping):
            value = value.get(key)
        elif isinstance(value, list | tuple) and isinstance(key, int) and -len(value) <= key < len(value):
            value = value[key]
        else:
            return None
    return value


# ------------------------------------------------------------------------------------ topology
def _node(topology: Topology, node_name: str) -> NodeTemplate:
    try:
        return topology.nodes[node_name]
    except KeyError:
        raise ToscaValidationError(
            f"no such node template; known: {', '.join(sorted(topology.nodes)) or 'none'}",
            file=topology.source,
            node=node_name,
        ) from None


def resolved_node(topology: Topology, node_name: str, inputs: Mapping[str, Any] | None) -> NodeTemplate:
    """Return a node with ``get_input`` resolved in its properties, capabilities, endpoints and scaling.

    :param topology: the parsed template
    :param node_name: the node template
    :param inputs: the run's input values (defaults are filled for those missing)
    """
    node = _node(topology, node_name)
    values = _effective_inputs(topology, inputs)

    def res(value: Any, field: str) -> Any:
        return resolve_value(value, values, file=topology.source, node=node_name, field=field)

    scalable = node.scalable
    if scalable is not None:
        scalable = Scalable(
            count=res(scalable.count, "capabilities.scalable.count"),
            min_instances=res(scalable.min_instances, "capabilities.scalable.min_instances"),
            max_instances=res(scalable.max_instances, "capabilities.scalable.max_instances"),
        )
    endpoints = tuple(
        Endpoint(
            name=e.name,
            ports=tuple(res(p, f"capabilities.{e.name}.ports") for p in e.ports),
            network_name=res(e.network_name, f"capabilities.{e.name}.network_name"),
            dns_name=res(e.dns_name, f"capabilities.{e.name}.dns_name"),
            properties=res(e.properties, f"capabilities.{e.name}"),
        )
        for e in node.endpoints
    )
    return dataclasses.replace(
        node,
        properties={k: res(v, f"properties.{k}") for k, v in node.properties.items()},
        capabilities={c: res(p, f"capabilities.{c}") for c, p in node.capabilities.items()},
        scalable=scalable,
        endpoints=endpoints,
        artifacts=res(node.artifacts, "artifacts"),
        interfaces=res(node.interfaces, "interfaces"),
    )


def resolved_nodes(topology: Topology, inputs: Mapping[str, Any] | None = None) -> dict[str, NodeTemplate]:
    """Return every node, in plan order, with the run's inputs checked and ``get_input`` resolved.

    :param topology: the parsed template
    :param inputs: input name -> value; defaults fill the rest
    """
    values = validate_inputs(topology, inputs)
    return {name: resolved_node(topology, name, values) for name in topology.plan}


def instance_count(topology: Topology, node_name: str, inputs: Mapping[str, Any] | None) -> int:
    """Return how many instances of a node to deploy: its scalable count, else its host's, else 1.

    The count, ``min_instances`` and ``max_instances`` must be non-negative integers (``2.5`` is refused, not
    rounded), ``min_instances <= count <= max_instances``, and the count at most :data:`MAX_INSTANCES`; else a
    typed error names the node, the field and the input to fix.

    :param topology: the parsed template
    :param node_name: the node template
    :param inputs: the run's input values
    """
    values = _effective_inputs(topology, inputs)
    seen: set[str] = set()
    current = _node(topology, node_name)
    while current.scalable is None and current.host and current.name not in seen:
        seen.add(current.name)
        current = _node(topology, current.host)
    if current.scalable is None:
        return 1
    where = {"file": topology.source, "node": current.name}

    def fix(raw: Any) -> str:
        name = raw.get("get_input") if isinstance(raw, Mapping) else None
        return f"fix input '{name}'" if isinstance(name, str) else "fix the template"

    def whole(key: str, raw: Any) -> int | None:
        value = resolve_value(raw, values, field=f"capabilities.scalable.{key}", **where)
        if key == "max_instances" and (value is None or value == "UNBOUNDED"):
            return None
        if isinstance(value, str) and _INTEGER.match(value.strip()):
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ToscaInputError(f"{key} {value!r} is not a non-negative integer; {fix(raw)}",
                                  field=f"capabilities.scalable.{key}", **where)
        return value

    count = whole("count", current.scalable.count)
    low = whole("min_instances", current.scalable.min_instances if current.scalable.min_instances is not None else 0)
    high = whole("max_instances", current.scalable.max_instances)
    if high is not None and low > high:
        raise ToscaValidationError(f"min_instances {low} is above max_instances {high}; fix the scalable bounds",
                                   field="capabilities.scalable.min_instances", **where)
    if count > MAX_INSTANCES or not low <= count <= (high if high is not None else count):
        top = min(high, MAX_INSTANCES) if high is not None else MAX_INSTANCES
        raise ToscaInputError(f"instance count {count} is outside the allowed range [{low}, {top}] (min_instances, "
                              f"max_instances, at most {MAX_INSTANCES}); {fix(current.scalable.count)}",
                              field="capabilities.scalable.count", **where)
    return count


def scaling_root(topology: Topology, node_name: str) -> str:
    """Return the scalable node whose group ``node_name`` belongs to: itself, or the nearest host that scales.

    :param topology: the parsed template (or a plan's nodes: the structure is the same)
    :param node_name: a node of the group
    """
    node = _node(topology, node_name)
    seen = set()
    while node.scalable is None and node.host and node.name not in seen:
        seen.add(node.name)
        node = _node(topology, node.host)
    if node.scalable is None:
        raise ToscaValidationError(
            "is not scalable: neither it nor its host has a 'scalable' capability",
            file=topology.source,
            node=node_name,
            field="capabilities.scalable",
        )
    return node.name


def scaling_group(topology: Topology, node_name: str) -> tuple[str, ...]:
    """Return a node and every node hosted on it, directly or not, in plan order.

    :param topology: the parsed template
    :param node_name: the group's root (usually a scalable compute node)
    """
    _node(topology, node_name)
    members = {node_name}
    for name in topology.plan:  # plan order puts every host before what it hosts
        host = topology.nodes[name].host
        if host in members:
            members.add(name)
    order = [n for n in topology.plan if n in members]
    return tuple(order) if node_name in order else (node_name, *order)


def resolve_outputs(
    topology: Topology,
    inputs: Mapping[str, Any] | None,
    attributes: Mapping[str, Sequence[Mapping[str, Any]]],
) -> dict[str, Any]:
    """Evaluate every output from the input values and the deployed instances' attributes.

    :param topology: the parsed template
    :param inputs: the run's input values
    :param attributes: node name -> one attribute mapping per instance, in index order
    """
    values = _effective_inputs(topology, inputs)
    return {
        name: _evaluate(output.value, topology, values, attributes, name) for name, output in topology.outputs.items()
    }


def _evaluate(
    value: Any,
    topology: Topology,
    inputs: Mapping[str, Any],
    attributes: Mapping[str, Sequence[Mapping[str, Any]]],
    output: str,
    resolved: Mapping[str, NodeTemplate] | None = None,
) -> Any:
    def again(v: Any) -> Any:
        return _evaluate(v, topology, inputs, attributes, output, resolved)

    where = {"file": topology.source, "node": output, "field": "value"}
    if isinstance(value, Mapping):
        if not is_function(value):
            return {k: again(v) for k, v in value.items()}
        name, args = next(iter(value.items()))
        if name == "get_input":
            return _get_input(again(args), inputs, where)
        args = again(args)
        if name == "concat":
            return _concat(args)
        if name == "join":
            return _join(args)
        if name == "token":
            return _token(args, where)
        if name == "get_attribute":
            return _get_attribute(args, attributes)
        if name == "get_property":
            return _get_property(args, topology, inputs, resolved)
        return {name: args}  # not evaluable here (get_operation_output...)
    if isinstance(value, list | tuple):
        return [again(v) for v in value]
    return value


def _get_attribute(args: Any, attributes: Mapping[str, Sequence[Mapping[str, Any]]]) -> Any:
    if not isinstance(args, list) or len(args) < 2:
        return None
    node, attr, *path = args
    instances = [i for i in attributes.get(node, ()) if isinstance(i, Mapping)]
    if instances and not any(attr in i for i in instances) and path and isinstance(path[0], str):
        attr, *path = path  # [node, capability, attribute, ...]: the capability name is skipped
    present = [i[attr] for i in instances if attr in i]
    if not present:
        return None
    if len(instances) == 1 and not (path and isinstance(path[0], int)):
        return _walk(present[0], path)
    flat: list[Any] = []  # every instance's value, lists flattened, in index order
    for item in present:
        flat.extend(item if isinstance(item, list | tuple) else [item])
    return _walk(flat, path)


def _get_property(args: Any, topology: Topology, inputs: Mapping[str, Any],
                  resolved: Mapping[str, NodeTemplate] | None = None) -> Any:
    if not isinstance(args, list) or len(args) < 2 or args[0] not in topology.nodes:
        return None
    # a compiled plan passes its nodes, resolved once for these inputs
    node = (resolved or {}).get(args[0]) or resolved_node(topology, args[0], inputs)
    name, *path = args[1:]
    if name in node.properties:
        return _walk(node.properties[name], path)
    if path and name in node.capabilities:
        prop, *rest = path
        return _walk(node.capabilities[name].get(prop), rest)
    for req in node.requirements:  # [node, requirement, property]: the target's property
        if req.name == name and path:
            return _get_property([req.node, *path], topology, inputs, resolved)
    return None
