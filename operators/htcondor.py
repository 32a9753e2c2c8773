"""Operators that submit jobs to an HTCondor pool, wait for them, and drain its execute nodes."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator, conf

from airflow_cloud_paas.exceptions import CloudPaaSError
from airflow_cloud_paas.operators._defaults import CloudPaaSTaskDefaults

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_cloud_paas.hooks.htcondor import HTCondorHook


class CloudPaaSHTCondorSubmitJobOperator(CloudPaaSTaskDefaults, BaseOperator):
    """Submit jobs (or a DAGMan DAG) to an HTCondor pool; optionally wait until they end; return the cluster id.

    With ``deferrable=True`` the task submits, then waits in the triggerer
    (:class:`~airflow_cloud_paas.triggers.htcondor.CloudPaaSHTCondorJobCompleteTrigger`) and resumes in
    :meth:`execute_complete`, holding no worker slot meanwhile. The wait fails the task when a job is
    removed, exits non-zero, or (``fail_on_hold``) is held.

    :param description: submit commands (a dict, or submit-file text with its queue statement) (templated)
    :param dag_file: a DAGMan DAG file to submit instead of ``description`` (templated)
    :param dag_options: ``condor_submit_dag`` options for ``dag_file`` (``maxidle``, ``batchname``...)
    :param count: jobs per item; 0: as the queue statement says (templated)
    :param itemdata: item data, one dict per item, instead of the queue statement's (templated)
    :param wait_for_completion: wait until every job has left the queue
    :param deferrable: wait in the triggerer (default: the ``[operators] default_deferrable`` setting)
    :param poll_interval: seconds between status polls
    :param timeout: seconds to wait at most (``None``: no limit)
    :param fail_on_hold: fail as soon as a job is held
    :param htcondor_conn_id: the pool's connection
    """

    template_fields: Sequence[str] = ("description", "dag_file", "count", "itemdata")
    ui_color = "#e8f0d8"

    def __init__(
        self,
        *,
        description: Mapping[str, str] | str | None = None,
        dag_file: str | None = None,
        dag_options: Mapping[str, Any] | None = None,
        count: int = 0,
        itemdata: Sequence[Mapping[str, str]] | None = None,
        wait_for_completion: bool = False,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        poll_interval: float = 30.0,
        timeout: float | None = None,
        fail_on_hold: bool = True,
        htcondor_conn_id: str = "htcondor_default",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if (description is None) == (dag_file is None):
            raise ValueError(f"{kwargs.get('task_id')}: give exactly one of description and dag_file")
        self.description = description
        self.dag_file = dag_file
        self.dag_options = dag_options
        self.count = count
        self.itemdata = itemdata
        self.wait_for_completion = wait_for_completion
        self.deferrable = deferrable
        self.poll_interval = poll_interval
        self.timeout = timeout
        self.fail_on_hold = fail_on_hold
        self.htcondor_conn_id = htcondor_conn_id
        self.cluster_id: int | None = None

    def _hook(self) -> HTCondorHook:
        from airflow_cloud_paas.hooks.htcondor import HTCondorHook

        return HTCondorHook(htcondor_conn_id=self.htcondor_conn_id)

    def execute(self, context: Context) -> int:
        hook = self._hook()
        if self.dag_file is not None:
            self.cluster_id = hook.submit_dag(self.dag_file, self.dag_options)
        else:
            self.cluster_id = hook.submit(self.description, int(self.count or 0), itemdata=self.itemdata)
        self.log.info("Submitted cluster %d to %s", self.cluster_id, self.htcondor_conn_id)
        if not self.wait_for_completion:
            return self.cluster_id
        if self.deferrable:
            from airflow_cloud_paas.triggers.htcondor import CloudPaaSHTCondorJobCompleteTrigger

            self.defer(
                trigger=CloudPaaSHTCondorJobCompleteTrigger(
                    cluster_id=self.cluster_id,
                    htcondor_conn_id=self.htcondor_conn_id,
                    poll_interval=float(self.poll_interval),
                    timeout=float(self.timeout) if self.timeout else None,
                    fail_on_hold=self.fail_on_hold,
                ),
                method_name="execute_complete",
                timeout=timedelta(seconds=self.timeout + 60) if self.timeout else None,
            )
        return self._wait(hook, self.cluster_id)

    def _wait(self, hook: HTCondorHook, cluster_id: int) -> int:
        deadline = None if not self.timeout else time.monotonic() + self.timeout
        while True:
            status = hook.job_status(cluster_id)
            if status.done:
                return self.execute_complete({}, {**status.as_dict(),
                                                  "status": "success" if status.succeeded else "failed"})
            if status.held and self.fail_on_hold:
                return self.execute_complete({}, {**status.as_dict(), "status": "failed",
                                                  "message": f"held: {'; '.join(status.hold_reasons)}"})
            if deadline is not None and time.monotonic() >= deadline:
                return self.execute_complete({}, {**status.as_dict(), "status": "timeout",
                                                  "message": f"not done after {self.timeout} s"})
            self.log.info("Cluster %d: %d idle, %d running, %d held, %d done", cluster_id, status.idle,
                          status.running, status.held, status.completed + status.removed)
            time.sleep(self.poll_interval)

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> int:
        """Resume after the wait: return the cluster id if every job exited 0, raise otherwise.

        :param context: the task context
        :param event: the trigger's event payload
        """
        if not event:
            raise CloudPaaSError(f"HTCondor cluster {self.cluster_id}: the trigger returned no event")
        cluster = int(event.get("cluster_id", self.cluster_id or -1))
        if event.get("status") != "success":
            counts = ", ".join(f"{event.get(k, 0)} {k}" for k in ("idle", "running", "held", "completed", "removed"))
            message = f": {event['message']}" if event.get("message") else ""
            raise CloudPaaSError(
                f"HTCondor cluster {cluster} ended its wait with {event.get('status')}{message} "
                f"({counts}; exit codes {event.get('exit_codes', [])})"
            )
        self.log.info("HTCondor cluster %d: all %d job(s) exited 0", cluster, event.get("completed", 0))
        return cluster

    def on_kill(self) -> None:
        if self.cluster_id is not None:
            removed = self._hook().remove_jobs(self.cluster_id, reason=f"task {self.task_id} was killed")
            self.log.info("Removed %d job(s) of cluster %d", removed, self.cluster_id)


class CloudPaaSHTCondorDrainNodeOperator(CloudPaaSTaskDefaults, BaseOperator):
    """Drain an execute node (it takes no new job), or retire it (peaceful shutdown of its startd).

    Returns the drain request id (``None`` when retiring).

    :param machine: the execute node's machine name (templated)
    :param how: ``graceful``, ``quick`` or ``fast`` (fast evicts running jobs, which are requeued)
    :param retire: shut the startd down peacefully instead: running jobs finish, then it leaves the pool
    :param exit_on_completion: with a drain, the startd exits once drained
    :param reason: published as the node's drain reason (templated)
    :param check_expr: must be true on every slot for draining to start
    :param htcondor_conn_id: the pool's connection
    """

    template_fields: Sequence[str] = ("machine", "reason")
    ui_color = "#e8f0d8"

    def __init__(
        self,
        *,
        machine: str,
        how: str = "graceful",
        retire: bool = False,
        exit_on_completion: bool = False,
        reason: str | None = "drained by Airflow",
        check_expr: str | None = None,
        htcondor_conn_id: str = "htcondor_default",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.machine = machine
        self.how = how
        self.retire = retire
        self.exit_on_completion = exit_on_completion
        self.reason = reason
        self.check_expr = check_expr
        self.htcondor_conn_id = htcondor_conn_id

    def execute(self, context: Context) -> str | None:
        from airflow_cloud_paas.hooks.htcondor import HTCondorHook

        hook = HTCondorHook(htcondor_conn_id=self.htcondor_conn_id)
        if self.retire:
            hook.retire_node(self.machine)
            return None
        return hook.drain_node(self.machine, how=self.how, exit_on_completion=self.exit_on_completion,
                               check_expr=self.check_expr, reason=self.reason)
