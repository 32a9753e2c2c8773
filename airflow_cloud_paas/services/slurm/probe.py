"""The elastic scaler's view of a SLURM cluster: pending jobs from squeue, workers from sinfo, drain by scontrol."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow_cloud_paas.scaling.policy import QueuedJob, WorkerState
from airflow_cloud_paas.scaling.probe import ClusterProbe, Observation, WorkerView
from airflow_cloud_paas.services.slurm.client import SlurmClient
from airflow_cloud_paas.services.slurm.errors import SlurmConfigError

if TYPE_CHECKING:
    from airflow_cloud_paas.backends.base import Resource
    from airflow_cloud_paas.services.slurm.client import SlurmNode

#: resource attributes that may name a worker's SLURM node, the first one set wins
NAME_ATTRIBUTES = ("slurm_node", "hostname", "private_dns", "name")
#: pending reasons that no new worker would end (a dependency, a start time, a hold)
NOT_DEMAND = frozenset({"Dependency", "DependencyNeverSatisfied", "BeginTime", "JobHeldUser", "JobHeldAdmin",
                        "PartitionDown", "PartitionInactive", "PartitionTimeLimit"})


def node_name(resource: Resource) -> str | None:
    """Return the SLURM node name of a worker instance (its ``slurm_node`` attribute, else its short host name).

    :param resource: the worker instance
    """
    for key in NAME_ATTRIBUTES:
        value = resource.attributes.get(key)
        if value:
            return str(value) if key == "slurm_node" else str(value).split(".")[0]
    return None


class SlurmProbe(ClusterProbe):
    """Read a SLURM cluster through :class:`~airflow_cloud_paas.hooks.slurm.SlurmHook`; drain workers before they go.

    Each pending job (each pending task of an array) is queued demand with its requested CPUs and submit time,
    unless it waits for something no worker gives (a dependency, a begin time, a hold). A worker instance is
    matched to its node by name (:func:`node_name`); one the controller does not show as responding yet is
    booting. A node with DRAIN set is draining, one with allocated CPUs busy, else idle.

    :param slurm_conn_id: the cluster's ``slurm`` connection, or the absolute path of its slurm.conf (a cluster on
        this machine, e.g. on the local backend: its ``slurm_conf`` output)
    :param hook: a hook (or :class:`~airflow_cloud_paas.services.slurm.client.SlurmClient`) to use instead
    :param placement: ``pack`` (each round sets node weights so that jobs pack by expected runtime, see
        :meth:`place`) or ``fcfs`` (the weights are left to slurm.conf)
    """

    service = "slurm"

    def __init__(self, slurm_conn_id: str = "slurm_default", hook: Any = None, placement: str = "fcfs") -> None:
        if placement not in ("pack", "fcfs"):
            raise SlurmConfigError("the elastic scaler's SLURM placement is pack or fcfs", field="placement",
                                   value=placement)
        self.placement = placement
        if hook is None and os.path.isabs(slurm_conn_id):
            hook = SlurmClient(slurm_conn_id)
        elif hook is None:
            from airflow_cloud_paas.hooks.slurm import SlurmHook

            hook = SlurmHook(slurm_conn_id=slurm_conn_id)
        self.hook = hook

    @staticmethod
    def _view(node: SlurmNode) -> WorkerView | None:
        if not node.responding:
            return None
        cores = max(1, node.cpus)
        if node.draining:
            state = WorkerState.DRAINING
        else:
            state = WorkerState.BUSY if node.busy else WorkerState.IDLE
        return WorkerView(state, cores, min(node.alloc_cpus, cores))

    def observe(self, workers: Sequence[Resource], now: float) -> Observation:
        """Return the pending jobs and each worker instance's state.

        :param workers: the worker node's instances
        :param now: the current time (epoch seconds)
        """
        queued = tuple(QueuedJob(cpus=max(1, job.cpus), submitted_s=job.submitted_s)
                       for job in self.hook.queue() if job.reason not in NOT_DEMAND)
        nodes = {n.name: n for n in self.hook.nodes()}
        views = {}
        for resource in workers:
            node = nodes.get(node_name(resource) or "")
            view = self._view(node) if node is not None else None
            if view is not None:
                views[resource.index] = view
        return Observation(queued, views)

    def place(self, now: float) -> dict[str, Any] | None:
        """Set the node weights that make SLURM pack jobs by expected runtime; return what was decided.

        See :mod:`airflow_cloud_paas.services.slurm.placement`: the oldest job that can start next goes to the node
        whose jobs are expected to end closest after it, as the simulator's ``pack`` placement would place it.

        :param now: the current time (epoch seconds)
        :returns: the weights, the job they were chosen for and what changed; None with ``placement="fcfs"``
        """
        from airflow_cloud_paas.services.slurm.placement import apply_weights

        if self.placement != "pack":
            return None
        client = self.hook if isinstance(self.hook, SlurmClient) else self.hook.get_conn()
        return apply_weights(client, now).to_dict()

    def drain(self, worker: Resource) -> None:
        """Drain the worker's node (its running jobs finish, no new one starts) before it is deleted.

        :param worker: the worker instance
        """
        name = node_name(worker)
        if not name:
            return
        nodes = {n.name: n for n in self.hook.nodes()}
        node = nodes.get(name)
        if node is not None and not node.draining:
            self.hook.drain(name, reason="retired by the cloud-paas elastic scaler")
