"""Convert the template values that convert losslessly to their declared TOSCA type, and record each one.

Templates the INDIGO PaaS deployed write values that its orchestrator took but that differ from the declared type:
a string input with ``default: False``, ``num_cpus: "1"`` for a float, a port as ``"8080"``, an integer as ``2.0``,
a version as ``16.04``. Before the template is validated (by this package and by tosca-parser), each such value is
replaced by the value of its declared type, and a :class:`~airflow_cloud_paas.tosca.model.Conversion` says where,
what was written and what it became. A strict load refuses the first one instead (:func:`refusal`).

Only conversions that lose nothing are made:

=========== ==========================================================================
type        converted from
=========== ==========================================================================
string      a boolean (``false``/``true``) or an integer (``8080`` -> ``'8080'``)
integer     a string of digits (``"8080"``, no sign or leading zero), a whole float (``2.0``)
float       an integer (``1`` -> ``1.0``), a decimal string (``"1"``, ``"0.5"``)
number      an integer or decimal string
boolean     the strings ``true``/``false`` (as YAML writes them: ``true``, ``True``, ``TRUE``)
version     a number (``1.2`` -> ``'1.2'``)
=========== ==========================================================================

Data types derived from one of these (``PortDef`` is an integer) convert the same way; lists and maps with an
``entry_schema`` and the fields of a data type are walked. Anything else is left as written, for validation to
refuse with a typed error naming the node and the field.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping
from typing import Any

from airflow_cloud_paas.exceptions import ToscaValidationError
from airflow_cloud_paas.tosca.model import Conversion
from airflow_cloud_paas.tosca.resolve import is_function
from airflow_cloud_paas.tosca.typedefs import TypeRegistry, UnknownParentError

#: the value types a leaf value is converted to
CONVERTIBLE = ("string", "integer", "float", "number", "boolean", "version")
#: the types of a value that are not data types (tosca-parser's, plus scalar-unit.bitrate)
_SIMPLE = frozenset({
    *CONVERTIBLE, "timestamp", "range", "list", "map", "scalar-unit.size", "scalar-unit.time",
    "scalar-unit.frequency", "scalar-unit.bitrate",
})
#: short names tosca-parser accepts for normative data types
_ALIASES = {"PortDef": "tosca.datatypes.network.PortDef", "PortSpec": "tosca.datatypes.network.PortSpec"}
_BOOLEANS = {"true": True, "True": True, "TRUE": True, "false": False, "False": False, "FALSE": False}
#: integers within this bound are exactly floats
_EXACT = 2**53
_UNCHANGED = object()


def convert_template(
    raw: Mapping[str, Any], registry: TypeRegistry, is_secret_input: Callable[[str, Any], bool]
) -> tuple[dict[str, Any], tuple[Conversion, ...]]:
    """Return a copy of a template with every losslessly convertible value converted, and the conversions made.

    Input defaults (and the operands of their constraints), node template properties, capability properties,
    relationship properties (templates and requirements) and policy properties are converted to the types their
    definitions declare (inherited ones included). What is malformed is left for the loader to refuse.

    :param raw: the template as read from YAML (not changed)
    :param registry: the types the template can use
    :param is_secret_input: (input name, its definition) -> whether its value must never be shown
    """
    tpl = copy.deepcopy(dict(raw))
    walker = _Walker(registry)
    topology = tpl.get("topology_template")
    if not isinstance(topology, dict):
        return tpl, ()
    inputs = topology.get("inputs")
    for name, spec in inputs.items() if isinstance(inputs, dict) else ():
        if isinstance(spec, dict) and isinstance(spec.get("type"), str):
            walker.input(str(name), spec, is_secret_input(str(name), spec))
    nodes = topology.get("node_templates")
    for name, spec in nodes.items() if isinstance(nodes, dict) else ():
        if isinstance(spec, dict):
            walker.node(str(name), spec)
    relationships = topology.get("relationship_templates")
    for name, spec in relationships.items() if isinstance(relationships, dict) else ():
        if isinstance(spec, dict):
            walker.entity("relationship", str(name), spec, "relationship", "properties")
    policies = topology.get("policies")
    for item in policies if isinstance(policies, list) else ():
        if isinstance(item, dict) and len(item) == 1 and isinstance(next(iter(item.values())), dict):
            name, spec = next(iter(item.items()))
            walker.entity("policy", str(name), spec, "policy", "properties")
    return tpl, tuple(walker.found)


def refusal(conversion: Conversion, file: str) -> ToscaValidationError:
    """Return the error a strict load raises for a value that would need this conversion.

    :param conversion: the conversion a lenient load makes
    :param file: the template, named in the error
    """
    shown = "the value" if conversion.secret else repr(conversion.written)
    fix = "" if conversion.secret else f"; write {conversion.value!r}"
    return ToscaValidationError(
        f"{shown} is not of the declared type {conversion.type}{fix} (a load that is not strict converts it, "
        "with a warning)",
        file=file,
        node=conversion.node,
        field=conversion.field,
        kind=conversion.where,
    )


def convert_value(value: Any, type_name: str) -> Any:
    """Return a leaf value converted losslessly to a TOSCA value type, or the value itself when it cannot be.

    :param value: a value as YAML reads it
    :param type_name: one of :data:`CONVERTIBLE` (any other type leaves the value as it is)
    """
    if isinstance(value, bool):
        return ("true" if value else "false") if type_name == "string" else value
    if isinstance(value, int):
        if type_name == "string":
            return str(value)
        if type_name == "float" and abs(value) <= _EXACT:
            return float(value)
        if type_name == "version" and value >= 0:
            return str(value)
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            return value
        if type_name == "integer" and value.is_integer() and abs(value) <= _EXACT:
            return int(value)
        if type_name == "version" and value >= 0 and "e" not in repr(value):
            return repr(value)
        return value
    if isinstance(value, str):
        if type_name == "integer":
            return _integer(value)
        if type_name in ("float", "number"):
            number = _integer(value)
            if number is not value:
                return float(number) if type_name == "float" and abs(number) <= _EXACT else number
            return _decimal(value)
        if type_name == "boolean":
            return _BOOLEANS.get(value, value)
    return value


def _integer(text: str) -> Any:
    """Return a string of digits as an int when it reads back the same (no sign, space or leading zero)."""
    try:
        number = int(text)
    except ValueError:
        return text
    return number if str(number) == text else text


def _decimal(text: str) -> Any:
    """Return a decimal string (``"0.5"``, ``"-1.25"``) as a float when it reads back the same."""
    whole, dot, fraction = text.partition(".")
    if not dot or not fraction.isdigit() or _integer(whole) is whole:
        return text
    number = float(text)
    return number if math.isfinite(number) else text


def _entry(schema: Any) -> tuple[Any, Any]:
    """Return (type, nested entry schema) of an ``entry_schema``."""
    if isinstance(schema, Mapping):
        return schema.get("type"), schema.get("entry_schema")
    return schema, None


class _Walker:
    """Walk the values of a template against their definitions, converting them and recording each conversion."""

    def __init__(self, registry: TypeRegistry) -> None:
        self.registry = registry
        self.found: list[Conversion] = []

    # ------------------------------------------------------------------- places
    def input(self, name: str, spec: dict[str, Any], secret: bool) -> None:
        """Convert an input's default and the operands of its constraints to its type."""
        where = {"where": "input", "node": name, "secret": secret}
        if "default" in spec:
            spec["default"] = self.value(spec["default"], spec["type"], spec.get("entry_schema"), "default", where)
        constraints = spec.get("constraints")
        for index, constraint in enumerate(constraints if isinstance(constraints, list) else ()):
            if not isinstance(constraint, dict) or len(constraint) != 1:
                continue
            op, operand = next(iter(constraint.items()))
            path = f"constraints[{index}].{op}"
            if op in ("valid_values", "in_range") and isinstance(operand, list):
                constraint[op] = [self._operand(v, spec["type"], f"{path}[{i}]", where) for i, v in enumerate(operand)]
            elif op in ("equal", "greater_than", "greater_or_equal", "less_than", "less_or_equal"):
                constraint[op] = self._operand(operand, spec["type"], path, where)

    def _operand(self, operand: Any, type_name: str, path: str, where: Mapping[str, Any]) -> Any:
        """Convert a constraint's operand, so that it compares with the values of the input's type.

        A number stays as written where its conversion compares equal (``less_than: 1`` for a float).
        """
        if operand == "UNBOUNDED" or (isinstance(operand, int | float) and not isinstance(operand, bool)
                                      and self._base(type_name) in ("float", "number")):
            return operand
        return self.value(operand, type_name, None, path, where)

    def node(self, name: str, spec: dict[str, Any]) -> None:
        """Convert a node template's properties, capability properties and requirement relationship properties."""
        node_type = self.registry.resolve(spec.get("type"), "node")
        if node_type is None:
            return
        self.section(spec, "properties", self._merged(node_type, "node", "properties"), "properties",
                     {"where": "node", "node": name})
        capabilities = spec.get("capabilities")
        definitions = self._merged(node_type, "node", "capabilities")
        for cap_name, cap_spec in capabilities.items() if isinstance(capabilities, dict) else ():
            definition = definitions.get(cap_name)
            written = definition.get("type") if isinstance(definition, Mapping) else definition
            cap_type = self.registry.resolve(written, "capability")
            if cap_type is None or not isinstance(cap_spec, dict):
                continue
            props = self._merged(cap_type, "capability", "properties")
            refined = definition.get("properties") if isinstance(definition, Mapping) else None
            props.update(refined if isinstance(refined, Mapping) else {})
            self.section(cap_spec, "properties", props, f"capabilities.{cap_name}.properties",
                         {"where": "node", "node": name})
        requirements = spec.get("requirements")
        for item in requirements if isinstance(requirements, list) else ():
            if not isinstance(item, dict) or len(item) != 1:
                continue
            req_name, req = next(iter(item.items()))
            relationship = req.get("relationship") if isinstance(req, dict) else None
            if isinstance(relationship, dict):
                self.entity("node", name, relationship, "relationship", "properties",
                            f"requirements.{req_name}.relationship.properties")

    def entity(self, where: str, name: str, spec: dict[str, Any], kind: str, section: str,
               path: str | None = None) -> None:
        """Convert one section of properties of a typed entity (relationship, policy) to its type's definitions."""
        entity_type = self.registry.resolve(spec.get("type"), kind)
        if entity_type is not None:
            self.section(spec, section, self._merged(entity_type, kind, section), path or section,
                         {"where": where, "node": name})

    def section(self, spec: dict[str, Any], key: str, definitions: Mapping[str, Any], path: str,
                where: Mapping[str, Any]) -> None:
        """Convert every value of ``spec[key]`` that a definition types."""
        values = spec.get(key)
        if not isinstance(values, dict):
            return
        for prop, value in values.items():
            definition = definitions.get(prop)
            if isinstance(definition, Mapping):
                values[prop] = self.value(value, definition.get("type"), definition.get("entry_schema"),
                                          f"{path}.{prop}", where)

    # ------------------------------------------------------------------- values
    def value(self, value: Any, type_name: Any, entry_schema: Any, path: str, where: Mapping[str, Any]) -> Any:
        """Return a value converted to a type (walking lists, maps and data type fields), recording each change."""
        if value is None or is_function(value):
            return value
        base = self._base(type_name)
        if base in CONVERTIBLE:
            converted = convert_value(value, base)
            if converted is not value:
                self.found.append(Conversion(field=path, written=value, value=converted, type=str(type_name),
                                             **where))
            return converted
        if base in ("list", "map") and entry_schema is not None:
            item_type, item_schema = _entry(entry_schema)
            if base == "list" and isinstance(value, list):
                return [self.value(v, item_type, item_schema, f"{path}[{i}]", where) for i, v in enumerate(value)]
            if base == "map" and isinstance(value, dict):
                return {k: self.value(v, item_type, item_schema, f"{path}.{k}", where) for k, v in value.items()}
        if base is not None and base not in _SIMPLE and isinstance(value, dict):
            fields = self._merged(base, "data", "properties")
            return {
                k: self.value(v, fields[k].get("type"), fields[k].get("entry_schema"), f"{path}.{k}", where)
                if isinstance(fields.get(k), Mapping) else v
                for k, v in value.items()
            }
        return value

    def _base(self, type_name: Any) -> str | None:
        """Return the simple type a type name stands for, the canonical name of a data type, or None if unknown.

        A data type with a ``type`` key (tosca-parser's ``PortDef``: ``type: integer``) or derived from a simple
        type is that simple type.
        """
        if not isinstance(type_name, str):
            return None
        name = _ALIASES.get(type_name, type_name)
        if name in _SIMPLE:
            return name
        canonical = self.registry.resolve(name, "data")
        current, seen = canonical, set()
        while current is not None and current not in seen:
            seen.add(current)
            definition = self.registry.definition(current)
            parent = definition.get("type") or definition.get("derived_from")
            parent = _ALIASES.get(parent, parent) if isinstance(parent, str) else None
            if parent in _SIMPLE:
                return parent
            current = self.registry.resolve(parent, "data")
        return canonical

    def _merged(self, name: str, kind: str, section: str) -> dict[str, Any]:
        try:
            return self.registry.merged(name, kind, section)
        except UnknownParentError:  # refused by the loader, naming the type
            return {}
