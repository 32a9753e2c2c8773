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
