"""Neutral, frozen dataclasses for a parsed TOSCA service template (the cosmos pattern).

A :class:`Topology` is built once per template content (see :mod:`airflow_cloud_paas.tosca.loader`)
and never re-parsed at DAG-parse time. Property values keep TOSCA intrinsic functions
(``{"get_input": name}``) until :mod:`airflow_cloud_paas.tosca.resolve` is given the run's input values
(:func:`~airflow_cloud_paas.tosca.resolve.resolved_nodes`); nothing here imports it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class InputDef:
    """One topology input: becomes one Airflow DAG Param."""

    name: str
    type: str = "string"
    description: str = ""
    default: Any = None
    required: bool = True
    has_default: bool = False
    constraints: tuple[Mapping[str, Any], ...] = ()
    entry_schema: Mapping[str, Any] | None = None
    #: the template declares it secret: a credential datatype, or ``metadata: {secret: true}``
    declared_secret: bool = False

    @property
    def is_secret(self) -> bool:
        """Return whether the value must never be shown: declared secret, or named like a secret."""
        from airflow_cloud_paas.secrets import is_secret_name

        return self.declared_secret or is_secret_name(self.name)


@dataclass(frozen=True)
class OutputDef:
    """One topology output; ``value`` keeps its intrinsic function (get_attribute, concat, ...)."""

    name: str
    value: Any
    description: str = ""


@dataclass(frozen=True)
class Scalable:
    """The scalable capability of a node: how many instances, within which bounds."""

    count: Any = 1  # an int, or {"get_input": name} until resolved
    min_instances: Any = 0
    max_instances: Any = None  # None = unbounded


@dataclass(frozen=True)
class Endpoint:
    """An endpoint capability: ports to open and whether the address is public."""

    name: str
    ports: tuple[Mapping[str, Any], ...] = ()  # [{"port": 8080, "protocol": "tcp", "source": ...}]
    network_name: str = "PRIVATE"
    dns_name: str | None = None
    properties: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Requirement:
    """One requirement of a node: a named edge to another node template."""

    name: str  # e.g. host, dependency, master
    node: str  # target node template name
    relationship: str | None = None  # relationship type, if given
    capability: str | None = None


@dataclass(frozen=True)
class NodeTemplate:
    """One node template, with its type chain, properties and relations."""

    name: str
    type: str
    type_hierarchy: tuple[str, ...] = ()  # the type and all ancestors, most specific first
    properties: Mapping[str, Any] = field(default_factory=dict)
    capabilities: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    requirements: tuple[Requirement, ...] = ()
    scalable: Scalable | None = None
    endpoints: tuple[Endpoint, ...] = ()
    artifacts: Mapping[str, Any] = field(default_factory=dict)
    interfaces: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""

    @property
    def host(self) -> str | None:
        """Return the name of the node this one is hosted on, if any."""
        for req in self.requirements:
            if req.name == "host":
                return req.node
        return None

    def is_a(self, type_name: str) -> bool:
        """Return whether the node is of this type or derives from it.

        :param type_name: a TOSCA type name
        """
        return type_name == self.type or type_name in self.type_hierarchy


@dataclass(frozen=True)
class Policy:
    """A topology policy (placement, scaling, SLA...)."""

    name: str
    type: str
    targets: tuple[str, ...] = ()
    properties: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Conversion:
    """A value of the template converted to its declared type (a warning, not a refusal).

    Made by :mod:`airflow_cloud_paas.tosca.coerce` where the conversion loses nothing (``default: False`` for a
    string input became ``'false'``, ``num_cpus: "1"`` for a float became ``1.0``).
    """

    where: str  # input, node, relationship or policy
    node: str  # its name
    field: str  # e.g. default, properties.port, capabilities.host.properties.num_cpus
    written: Any  # the value as the YAML reads it
    value: Any  # what it became
    type: str  # the declared TOSCA type
    secret: bool = False  # the value belongs to a secret input: never shown

    @property
    def message(self) -> str:
        """Return the warning in words: where, the value as written and what it became (no secret value)."""
        place = f"{self.where} '{self.node}', field '{self.field}'"
        if self.secret:
            return f"{place}: the value was converted to {self.type}"
        return f"{place}: {self.written!r} ({_kind(self.written)}) became {self.value!r} ({self.type})"

    def as_dict(self) -> dict[str, Any]:
        """Return the conversion as JSON data for output and events, a secret value masked."""
        from airflow_cloud_paas.secrets import MASK

        written, value = (MASK, MASK) if self.secret else (self.written, self.value)
        return {"where": self.where, "node": self.node, "field": self.field, "written": written, "value": value,
                "type": self.type, "message": self.message}


def _kind(value: Any) -> str:
    names = {bool: "boolean", int: "integer", float: "float", str: "string"}
    return names.get(type(value), type(value).__name__)


@dataclass(frozen=True)
class Topology:
    """A whole parsed service template."""

    source: str  # file path (or "<string>")
    content_hash: str  # sha256 of the template and all it imports
    description: str = ""
    inputs: Mapping[str, InputDef] = field(default_factory=dict)
    nodes: Mapping[str, NodeTemplate] = field(default_factory=dict)
    outputs: Mapping[str, OutputDef] = field(default_factory=dict)
    policies: tuple[Policy, ...] = ()
    imports: tuple[str, ...] = ()
    template_text: str = ""  # the template's own text (stored with each deployment)
    plan: tuple[str, ...] = ()  # node names in deployment order (requirements first)
    #: values converted to their declared type as the template was loaded (inputs, nodes, relationships, policies)
    conversions: tuple[Conversion, ...] = ()
