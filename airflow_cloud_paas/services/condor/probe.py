"""The elastic scaler's view of an HTCondor pool: idle jobs from the schedd, execute nodes from the collector."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow_cloud_paas.scaling.policy import QueuedJob, WorkerState
from airflow_cloud_paas.scaling.probe import ClusterProbe, Observation, WorkerView

if TYPE_CHECKING:
    from airflow_cloud_paas.backends.base import Resource

#: resource attributes that may name the machine a startd reports (VM backends set some of these)
_NAME_ATTRIBUTES = ("hostname", "private_dns", "public_dns", "private_address", "public_address", "name",
                    "machine")


def _names(resource: Resource) -> set[str]:
    names = {str(resource.attributes[k]).lower() for k in _NAME_ATTRIBUTES if resource.attributes.get(k)}
    return names | {n.split(".")[0] for n in names if not n.replace(".", "").isdigit()}


class HTCondorProbe(ClusterProbe):
    """Read an HTCondor pool through :class:`HTCondorHook` and drain execute nodes before they go.

    An execute instance is matched to its startd by machine name (its hostname, DNS name or address
    among the resource's attributes); an instance no startd reports yet is booting.

    :param htcondor_conn_id: the pool's ``htcondor`` connection
    :param hook: a hook to use instead (tests give one bound to the stand-in)
    """

    service = "htcondor"

    def __init__(self, htcondor_conn_id: str = "htcondor_default", hook: Any = None) -> None:
        if hook is None:
            from airflow_cloud_paas.hooks.htcondor import HTCondorHook

            hook = HTCondorHook(htcondor_conn_id=htcondor_conn_id)
        self.hook = hook

    def _match(self, resource: Resource, nodes: Sequence[Any]) -> Any:
        names = _names(resource)
        for node in nodes:
            machine = node.machine.lower()
            if machine in names or machine.split(".")[0] in names:
                return node
        return None

    def observe(self, workers: Sequence[Resource], now: float) -> Observation:
        """Return the idle jobs (their request_cpus and submit time) and each execute instance's state.

        :param workers: the execute node's instances
        :param now: the current time (epoch seconds)
        """
        stats = self.hook.queue_stats(now)
        nodes = self.hook.slots()
        views = {}
        for resource in workers:
            node = self._match(resource, nodes)
            if node is None:
                continue
            if node.draining:
                state = WorkerState.DRAINING
            else:
                state = WorkerState.BUSY if node.busy_cpus else WorkerState.IDLE
            views[resource.index] = WorkerView(state, max(1, node.cpus), min(node.busy_cpus, max(1, node.cpus)))
        queued = tuple(QueuedJob(cpus=max(1, job.request_cpus), submitted_s=now - job.wait_s)
                       for job in stats.idle_jobs)
        return Observation(queued, views)

    def drain(self, worker: Resource) -> None:
        """Drain the execute node (graceful: running jobs finish, no new one starts) before it is deleted.

        :param worker: the execute instance
        """
        node = self._match(worker, self.hook.slots())
        if node is not None and not node.draining:
            self.hook.drain_node(node.machine, how="graceful", reason="retired by the cloud-paas elastic scaler")
