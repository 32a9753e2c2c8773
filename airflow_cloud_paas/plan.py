"""Compile a deployment request into a plan: every node resolved once, every resource spec precomputed.

:func:`compile_plan` is the one place where a topology and a run's inputs become what a backend is
asked to make. :meth:`DeploymentPlan.check` is what ``cloud-paas validate --backend``, the provider
fallback's fit test and a create all use, so the three can never disagree about what is deployable:
hosted endpoints, security rules, user data and its per-provider size limit are checked by all of them.
The plan holds no store, no backend and no Airflow code.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airflow_cloud_paas.backends.base import Resource, ResourceSpec
from airflow_cloud_paas.backends.mapping import HOSTED_ENDPOINTS, security_rules
from airflow_cloud_paas.cloudinit import (
    check_artifact_files,
    hosted_software,
    is_compute,
    render_user_data,
    uses_attributes,
)
from airflow_cloud_paas.exceptions import ToscaValidationError
from airflow_cloud_paas.tosca import instance_count, resolved_node, validate_inputs
from airflow_cloud_paas.tosca.model import NodeTemplate, Topology

if TYPE_CHECKING:
    from airflow_cloud_paas.backends.base import Backend

#: the deployment id a plan's specs carry when no deployment exists yet (validation, fit tests)
PLAN_ONLY_ID = "validate"


@dataclass(frozen=True)
class NodePlan:
    """One node template of a plan: resolved once, with the parts of its resource spec precomputed.

    :param name: the node template's name
    :param node: the node with ``get_input`` resolved
    :param count: how many instances the run asks for
    :param capabilities: the spec's capabilities (for a VM, with the endpoints of the software it hosts)
    :param user_data: the VM's user data, rendered without live attributes (None: not a VM, or nothing to run)
    :param live_user_data: whether the user data reads attributes of deployed nodes (``get_attribute``), so a
        create renders it again from the live resources
    """

    name: str
    node: NodeTemplate
    count: int
    capabilities: Mapping[str, Mapping[str, Any]]
    user_data: str | None = dataclasses.field(default=None, repr=False)
    live_user_data: bool = False

    @property
    def compute(self) -> bool:
        """Return whether the node is a machine that boots with user data."""
        return is_compute(self.node)


@dataclass(frozen=True)
class DeploymentPlan:
    """Every node of a topology, resolved for one run's inputs, in deployment order.

    :param topology: the parsed template
    :param inputs: the validated input values (defaults filled; connection references already resolved)
    :param nodes: node name -> its plan, in deployment order
    """

    topology: Topology
    inputs: Mapping[str, Any]
    nodes: Mapping[str, NodePlan]

    @property
    def order(self) -> tuple[str, ...]:
        """Return the node names in deployment order (every requirement before what requires it)."""
        return tuple(self.nodes)

    def node(self, name: str) -> NodePlan:
        """Return one node's plan, or raise naming the nodes that exist.

        :param name: the node template
        """
        try:
            return self.nodes[name]
        except KeyError:
            raise ToscaValidationError(f"no such node template; known: {', '.join(sorted(self.nodes))}",
                                       file=self.topology.source, node=name) from None

    def spec(
        self,
        deployment_id: str,
        node_name: str,
        index: int,
        requirements: Mapping[str, tuple[Resource, ...]] | None = None,
        attributes: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
    ) -> ResourceSpec:
        """Return the resource spec of one instance of a node.

        :param deployment_id: the deployment
        :param node_name: the node template
        :param index: the instance index
        :param requirements: requirement name -> the live resources of its target (empty when validating)
        :param attributes: node name -> attributes of deployed instances, for user data that reads them
        """
        planned = self.node(node_name)
        user_data = planned.user_data
        if planned.live_user_data and attributes is not None:
            user_data = render_user_data(self.topology, node_name, self.inputs, attributes,
                                         explicit=planned.node.properties.get("user_data"), resolved=self._resolved)
        node = planned.node
        return ResourceSpec(
            deployment_id=deployment_id,
            node_name=node_name,
            index=index,
            node_type=node.type,
            type_hierarchy=node.type_hierarchy,
            properties=dict(node.properties),
            capabilities={k: dict(v) for k, v in planned.capabilities.items()},
            requirements=dict(requirements or {}),
            user_data=user_data,
            artifacts=dict(node.artifacts),
        )

    @property
    def _resolved(self) -> dict[str, NodeTemplate]:
        return {name: planned.node for name, planned in self.nodes.items()}

    def check(self, backend: Backend, deployment_id: str = PLAN_ONLY_ID) -> tuple[str, ...]:
        """Raise a typed error if any node cannot be deployed on this backend; touch nothing.

        The backend checks each node's spec as a create would see it (flavors, images, endpoints and security
        rules, user data and its size limit), before any requirement exists. Return the warnings of what the
        backend deploys without honouring it, in plan order.

        :param backend: the backend to deploy on
        :param deployment_id: the deployment (only named in messages)
        """
        warnings: list[str] = []
        for name in self.nodes:
            warnings.extend(backend.check(self.spec(deployment_id, name, 0)) or ())
        return tuple(warnings)


def compile_plan(topology: Topology, inputs: Mapping[str, Any] | None,
                 withheld: Collection[str] = ()) -> DeploymentPlan:
    """Resolve every node of a topology once for a run's inputs and precompute its resource spec parts.

    Everything a template can get wrong for these inputs is raised here as a typed error naming the
    node and field, before any record or resource exists: input values and constraints, instance counts,
    ports and port ranges, boot operations and their files.

    :param topology: the parsed template
    :param inputs: the run's input values (connection references already resolved); validated here
    :param withheld: inputs whose value is withheld (see :func:`~airflow_cloud_paas.tosca.validate_inputs`)
    """
    values = validate_inputs(topology, inputs, withheld)
    resolved = {name: resolved_node(topology, name, values) for name in topology.plan}
    nodes: dict[str, NodePlan] = {}
    for name in topology.plan:
        node = resolved[name]
        capabilities: dict[str, Any] = {k: dict(v) for k, v in node.capabilities.items()}
        user_data, live = None, False
        if is_compute(node):
            hosted = hosted_software(topology, name)
            endpoints = {h: resolved[h].endpoints for h in hosted}
            if any(endpoints.values()):
                # the ports of the software it hosts open on this machine (see mapping.security_rules)
                capabilities[HOSTED_ENDPOINTS] = {h: {e.name: dict(e.properties) for e in found}
                                                  for h, found in endpoints.items() if found}
            user_data = render_user_data(topology, name, values, None, explicit=node.properties.get("user_data"),
                                         resolved=resolved)
            live = any(uses_attributes(topology.nodes[h]) for h in hosted)
        planned = NodePlan(name=name, node=node, count=instance_count(topology, name, values),
                           capabilities=capabilities, user_data=user_data, live_user_data=live)
        if planned.compute:
            try:  # a bad port or port range is refused here, before any backend is asked
                security_rules(DeploymentPlan(topology, values, {name: planned}).spec(PLAN_ONLY_ID, name, 0))
            except ToscaValidationError as err:
                raise ToscaValidationError(err.message, file=topology.source, node=err.node,
                                           field=err.field) from None
        check_artifact_files(topology, topology.nodes[name])  # what the user data reads is checked above
        nodes[name] = planned
    return DeploymentPlan(topology=topology, inputs=values, nodes=nodes)
