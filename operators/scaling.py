"""Elastic scaling: one round of probe, policy and update for a deployment's worker node."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from airflow_cloud_paas.operators.deployment import _CloudPaaSBaseOperator

if TYPE_CHECKING:
    from airflow.sdk import Context


class CloudPaaSElasticScaleOperator(_CloudPaaSBaseOperator):
    """Run one elastic scaling round for a worker node: read the queue, decide, drain and scale.

    The decision comes from :mod:`airflow_cloud_paas.scaling` (the code ``cloud-paas scale-sim`` replays);
    the change goes through the deployment's update path, one at a time per deployment (a concurrent
    update fails with DeploymentBusyError). The decision, its reasons and the policy's state are recorded in
    the deployment history, where the next round picks the state up.

    :param node_name: the worker node (its scalable host group is resized)
    :param service: what reports the queue: ``spark`` or ``htcondor``
    :param policy: ``static:N``, ``clues`` or ``smart``
    :param limits: min_nodes, max_nodes, max_booting, idle_time_s, spare_nodes, node_cores
    :param address: the Spark master's web UI or the HTCondor connection id (default: from the outputs)
    :param placement: ``pack`` to steer where queued jobs start by their expected runtimes each round (SLURM: node
        weights of the whole cluster; HTCondor: idle jobs' expected runtimes, with a pool rendered with
        ``placement="pack"``), or None to leave placement to the batch system (the default)
    """

    template_fields: Sequence[str] = ("deployment_id", "node_name", "service", "policy", "limits", "address",
                                      "placement")
    ui_color = "#d5f5e3"

    def __init__(
        self,
        *,
        node_name: str,
        service: str,
        policy: str = "smart",
        limits: Mapping[str, Any] | None = None,
        address: str | None = None,
        placement: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.node_name = node_name
        self.service = service
        self.policy = policy
        self.limits = limits
        self.address = address
        self.placement = placement

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_cloud_paas.scaling.elastic import ElasticScaler, ElasticTarget, probe_address
        from airflow_cloud_paas.scaling.policy import policy_from_name
        from airflow_cloud_paas.scaling.probe import make_probe

        deployer = self._deployer(context, existing="record", need_secrets=[self.node_name])
        target = ElasticTarget(deployer.deployment_id, self.node_name, self.service, self.policy,
                               dict(self.limits or {}))
        address = self.address or probe_address(target, deployer.store.get(deployer.deployment_id).outputs,
                                                deployer.store.resources(deployer.deployment_id))
        options = {"placement": self.placement} if self.placement else {}
        scaler = ElasticScaler(deployer, self.node_name, make_probe(self.service, address, **options),
                               policy_from_name(self.policy, **target.limits))
        decision = scaler.run_once()
        return {"deployment_id": deployer.deployment_id, "node_name": self.node_name, **decision.to_dict()}


class CloudPaaSListElasticTargetsOperator(_CloudPaaSBaseOperator):
    """Return, for mapping, every worker node that an ElasticScaling policy names on a deployment that is up.

    Each item holds the :class:`CloudPaaSElasticScaleOperator` arguments: deployment_id, node_name,
    service, policy, limits and address.
    """

    def execute(self, context: Context) -> list[dict[str, Any]]:
        from airflow_cloud_paas.scaling.elastic import scalable_targets

        found = scalable_targets(self.hook.store, import_map=self.import_map)
        self.log.info("%d elastic worker group(s): %s", len(found),
                      ", ".join(f"{t['deployment_id']}/{t['node_name']}" for t in found) or "none")
        return found
