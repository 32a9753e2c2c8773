"""What a template's values read: the outputs built from a secret, the inputs a node needs (secrets by flow).

An output is secret when it is named like one or when its value expression reads a secret input, directly or
through a node property; :func:`secret_outputs` works it out from the template alone, before anything runs.
:func:`inputs_read_by` tells which inputs deploying some nodes reads, so a scale needs a secret input again
only when the instances it makes read it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from airflow_cloud_paas.secrets import is_secret_name
from airflow_cloud_paas.tosca.model import Topology


def secret_outputs(topology: Topology, secret_inputs: Iterable[str]) -> tuple[str, ...]:
    """Return the outputs whose value is, or is built from, a secret.

    An output is secret when it is named like one or when its value expression reads a secret input
    (``get_input`` anywhere inside it: ``concat``, ``join``, nested), directly or through a node property or
    attribute that does (``get_property``/``get_attribute`` of a property given by a secret input, or named
    like a secret).

    :param topology: the parsed template
    :param secret_inputs: the input names whose values are secret (declared, named so, or read from a
        connection)
    """
    secret = frozenset(secret_inputs)
    return tuple(name for name, output in topology.outputs.items()
                 if is_secret_name(name) or _reads_secret(output.value, topology, secret, set()))


def inputs_read_by(topology: Topology, node_names: Iterable[str]) -> frozenset[str]:
    """Return the inputs that deploying these nodes reads: ``get_input`` in their properties, capabilities,
    artifacts or interfaces, directly or through ``get_property``/``get_attribute`` of another node.

    :param topology: the parsed template
    :param node_names: the nodes (e.g. a scaling group's members)
    """
    found: set[str] = set()
    seen: set[str] = set()
    todo = [n for n in node_names if n in topology.nodes]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        node = topology.nodes[name]
        todo.extend(_collect([node.properties, node.capabilities, node.artifacts, node.interfaces], name,
                             node.host, found))
    return frozenset(found)


def _collect(value: Any, node: str, host: str | None, found: set[str]) -> list[str]:
    """Add the inputs ``value`` reads to ``found``; return the other nodes it reads values of."""
    if isinstance(value, list | tuple):
        return [n for v in value for n in _collect(v, node, host, found)]
    if not isinstance(value, Mapping):
        return []
    others = []
    if "get_input" in value:
        arg = value["get_input"]
        name = arg[0] if isinstance(arg, list | tuple) and arg else arg
        if isinstance(name, str):
            found.add(name)
    for function in ("get_property", "get_attribute"):
        args = value.get(function)
        if isinstance(args, list | tuple) and args and isinstance(args[0], str):
            target = {"SELF": node, "HOST": host}.get(args[0], args[0])
            if target:
                others.append(target)
    return others + [n for v in value.values() for n in _collect(v, node, host, found)]


def _reads_secret(value: Any, topology: Topology, secret: frozenset[str], seen: set[tuple[str, str]]) -> bool:
    if isinstance(value, list | tuple):
        return any(_reads_secret(v, topology, secret, seen) for v in value)
    if not isinstance(value, Mapping):
        return False
    if "get_input" in value:
        arg = value["get_input"]
        name = arg[0] if isinstance(arg, list | tuple) and arg else arg
        if isinstance(name, str) and name in secret:
            return True
    for function in ("get_property", "get_attribute"):
        args = value.get(function)
        if isinstance(args, list | tuple) and len(args) >= 2 and _node_value_is_secret(args, topology, secret, seen):
            return True
    return any(_reads_secret(v, topology, secret, seen) for v in value.values())


def _node_value_is_secret(args: Any, topology: Topology, secret: frozenset[str],
                          seen: set[tuple[str, str]]) -> bool:
    # [node, name] or [node, capability_or_requirement, name]: a property is also an attribute in TOSCA, so
    # get_attribute of a name that a property sets reads that property
    path = [a for a in args[1:] if isinstance(a, str)]
    if any(is_secret_name(part) for part in path):
        return True
    node = topology.nodes.get(args[0]) if isinstance(args[0], str) else None
    if node is None or not path or (node.name, path[-1]) in seen:
        return False
    seen.add((node.name, path[-1]))
    candidates = [node.properties.get(path[-1])]
    for capability in node.capabilities.values():
        if isinstance(capability, Mapping):
            props = capability.get("properties")
            candidates.append((props if isinstance(props, Mapping) else capability).get(path[-1]))
    return any(_reads_secret(v, topology, secret, seen) for v in candidates)
