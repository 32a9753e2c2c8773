"""The elastic scaler's view of an HTCondor pool: idle jobs from the schedd, execute nodes from the collector."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow_cloud_paas.scaling.policy import QueuedJob, WorkerState
from airflow_cloud_paas.scaling.probe import ClusterProbe, Observation, WorkerView
from airflow_cloud_paas.services.condor.errors import CondorConfigError

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
    :param placement: ``pack`` (each round writes idle jobs' expected runtimes, see :meth:`place`) or ``fcfs``
    """

    service = "htcondor"

    def __init__(self, htcondor_conn_id: str = "htcondor_default", hook: Any = None, placement: str = "fcfs") -> None:
        if placement not in ("pack", "fcfs"):
            raise CondorConfigError(f"the elastic scaler's HTCondor placement {placement!r} is not pack or fcfs",
                                    what="placement")
        self.placement = placement
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

    def place(self, now: float) -> dict[str, Any] | None:
        """Write each idle job's expected runtime, as the simulator's ``pack`` placement learns it, into the job.

        The negotiator of a pool configured with ``placement="pack"`` ranks slots by it (see
        :mod:`airflow_cloud_paas.services.condor.placement`); this round only corrects the requests.

        :param now: the current time (epoch seconds)
        :returns: how many finished jobs it learned from, the runtimes written and the edits refused; None with
            ``placement="fcfs"``
        """
        from airflow_cloud_paas.services.condor.placement import annotate_expected_runtimes

        if self.placement != "pack":
            return None
        return annotate_expected_runtimes(self.hook.schedd, now)

    def drain(self, worker: Resource) -> None:
        """Drain the execute node (graceful: running jobs finish, no new one starts) before it is deleted.

        :param worker: the execute instance
        """
        node = self._match(worker, self.hook.slots())
        if node is not None and not node.draining:
            self.hook.drain_node(node.machine, how="graceful", reason="retired by the cloud-paas elastic scaler")
