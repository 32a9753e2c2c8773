"""Triggers that wait, without holding a worker slot, for a SLURM job (or array) to end, or for queue demand."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow_cloud_paas.triggers.base import CloudPaaSPollingTrigger

if TYPE_CHECKING:
    from airflow_cloud_paas.hooks.slurm import SlurmHook
    from airflow_cloud_paas.services.slurm.client import PendingJob, SlurmJob

#: the pending jobs an event or XCom lists at most (the count is always whole)
MAX_LISTED = 50


def task_states(jobs: Sequence[SlurmJob]) -> list[dict[str, Any]]:
    """Return a job's tasks (one for a plain job) as small JSON-ready dicts: id, state, exit code, reason, nodes.

    :param jobs: what :meth:`~airflow_cloud_paas.hooks.slurm.SlurmHook.jobs` returned for the job
    """
    return [
        {"job_id": j.job_id, "state": j.state, "exit_code": j.exit_code, "reason": j.reason, "nodes": list(j.nodes)}
        for j in jobs
    ]


def queue_summary(pending: Sequence[PendingJob], *, demand_only: bool) -> dict[str, Any]:
    """Return the pending jobs counted as demand: ``{"pending": n, "jobs": [...]}`` (the first ``MAX_LISTED``).

    :param pending: what :meth:`~airflow_cloud_paas.hooks.slurm.SlurmHook.queue` returned (oldest first)
    :param demand_only: count only jobs a new worker would start (not those waiting for a dependency, a begin
        time, a hold: :data:`~airflow_cloud_paas.services.slurm.probe.NOT_DEMAND`)
    """
    if demand_only:
        from airflow_cloud_paas.services.slurm.probe import NOT_DEMAND

        pending = [p for p in pending if p.reason not in NOT_DEMAND]
    return {
        "pending": len(pending),
        "jobs": [
            {"job_id": p.job_id, "name": p.name, "cpus": p.cpus, "time_limit_min": p.time_limit_min, "reason": p.reason}
            for p in pending[:MAX_LISTED]
        ],
    }


class _SlurmTrigger(CloudPaaSPollingTrigger):
    """What both SLURM triggers share: the hook of their connection, made once per trigger."""

    slurm_conn_id: str

    @cached_property
    def hook(self) -> SlurmHook:
        """Return the hook of the trigger's connection."""
        from airflow_cloud_paas.hooks.slurm import SlurmHook

        return SlurmHook(slurm_conn_id=self.slurm_conn_id)


class SlurmJobTrigger(_SlurmTrigger):
    """Poll a SLURM job, or every task of a job array, through :class:`~airflow_cloud_paas.hooks.slurm.SlurmHook`.

    Events carry ``job_id`` and ``tasks`` (:func:`task_states`): ``success`` once every task is COMPLETED,
    ``failed`` once every task has ended and one did not complete (FAILED, TIMEOUT, CANCELLED, NODE_FAIL,
    OUT_OF_MEMORY, ...), ``timeout``, or ``error`` (the controller could not be asked, or no longer knows the job:
    it is forgotten ``MinJobAge`` seconds after it ends, so poll more often than that).

    :param job_id: the job (or array) id sbatch gave
    :param slurm_conn_id: the cluster's ``slurm`` connection
    :param poll_interval: seconds between polls
    :param timeout: seconds before a ``timeout`` event (``None``: no limit)
    """

    serialized_fields = ("job_id", "slurm_conn_id")

    def __init__(
        self,
        job_id: str,
        slurm_conn_id: str = "slurm_default",
        poll_interval: float = 30.0,
        timeout: float | None = None,
    ) -> None:
        super().__init__(poll_interval=poll_interval, timeout=timeout)
        self.job_id = str(job_id)
        self.slurm_conn_id = slurm_conn_id

    def subject(self) -> dict[str, Any]:
        return {"job_id": self.job_id}

    def poll(self) -> list[SlurmJob]:
        from airflow_cloud_paas.services.slurm.errors import SlurmJobNotFoundError

        tasks = self.hook.jobs(self.job_id)
        if not tasks:
            raise SlurmJobNotFoundError(
                f"the controller no longer knows job {self.job_id} (purged MinJobAge "
                "seconds after it ended): poll more often than MinJobAge",
                command=["squeue", "--json"],
            )
        return tasks

    def finished(self, state: list[SlurmJob]) -> dict[str, Any] | None:
        if not all(task.finished for task in state):
            return None
        ok = all(task.state == "COMPLETED" for task in state)
        return {"status": "success" if ok else "failed", "tasks": task_states(state)}

    def timed_out(self, state: list[SlurmJob]) -> dict[str, Any]:
        counts: dict[str, int] = {}
        for task in state:
            counts[task.state] = counts.get(task.state, 0) + 1
        shown = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
        return {"tasks": task_states(state), "message": f"not ended after {self.timeout} s ({shown})"}


class SlurmQueueDemandTrigger(_SlurmTrigger):
    """Poll a SLURM cluster's queue until at least ``min_pending`` jobs pend.

    Events: ``success`` with :func:`queue_summary`'s ``pending`` and ``jobs``, ``timeout`` (with the last count),
    or ``error`` (the controller could not be asked).

    :param slurm_conn_id: the cluster's ``slurm`` connection
    :param min_pending: pending jobs (each pending array task counts) that end the wait
    :param demand_only: count only jobs a new worker would start (see :func:`queue_summary`)
    :param poll_interval: seconds between polls
    :param timeout: seconds before a ``timeout`` event (``None``: no limit)
    """

    serialized_fields = ("slurm_conn_id", "min_pending", "demand_only")

    def __init__(
        self,
        slurm_conn_id: str = "slurm_default",
        min_pending: int = 1,
        demand_only: bool = False,
        poll_interval: float = 30.0,
        timeout: float | None = None,
    ) -> None:
        super().__init__(poll_interval=poll_interval, timeout=timeout)
        self.slurm_conn_id = slurm_conn_id
        self.min_pending = int(min_pending)
        self.demand_only = bool(demand_only)

    def subject(self) -> dict[str, Any]:
        return {"min_pending": self.min_pending}

    def poll(self) -> dict[str, Any]:
        return queue_summary(self.hook.queue(), demand_only=self.demand_only)

    def finished(self, state: dict[str, Any]) -> dict[str, Any] | None:
        return {"status": "success", **state} if state["pending"] >= self.min_pending else None

    def timed_out(self, state: dict[str, Any]) -> dict[str, Any]:
        return {
            **state,
            "message": f"{state['pending']} job(s) pending after {self.timeout} s, fewer than {self.min_pending}",
        }
