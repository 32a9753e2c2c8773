"""The TOSCA layer: load a service template once into neutral dataclasses, then resolve it per run.

Nothing here imports tosca-parser at module level: it is imported only when a template has to be
parsed (a cache miss), so that importing this package from a DAG file stays cheap.
"""

from __future__ import annotations

from airflow_cloud_paas.tosca.cache import TopologyCache, topology_from_dict, topology_to_dict
from airflow_cloud_paas.tosca.imports import ImportResolver, default_import_map, indigo_import_map
from airflow_cloud_paas.tosca.loader import LAYER_VERSION, load_topology
from airflow_cloud_paas.tosca.model import (
    Conversion,
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
    instance_count,
    resolve_outputs,
    resolve_value,
    resolved_node,
    resolved_nodes,
    scaling_group,
    scaling_root,
    validate_inputs,
)

__all__ = [
    "LAYER_VERSION",
    "Conversion",
    "Endpoint",
    "ImportResolver",
    "InputDef",
    "NodeTemplate",
    "OutputDef",
    "Policy",
    "Requirement",
    "Scalable",
    "Topology",
    "TopologyCache",
    "default_import_map",
    "indigo_import_map",
    "instance_count",
    "load_topology",
    "resolve_outputs",
    "resolve_value",
    "resolved_node",
    "resolved_nodes",
    "scaling_group",
    "scaling_root",
    "topology_from_dict",
    "topology_to_dict",
    "validate_inputs",
]
