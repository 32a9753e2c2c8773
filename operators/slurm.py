"""An operator that submits a batch job (or job array) to a SLURM cluster and waits until it ends."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator, conf

from airflow_cloud_paas.operators._defaults import CloudPaaSTaskDefaults
from airflow_cloud_paas.services.slurm.config import (
    array_task_ids,
    time_limit_minutes,
    validate_cpus,
    validate_job_name,
    validate_node_name,
)
from airflow_cloud_paas.services.slurm.errors import SlurmConfigError, SlurmError

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_cloud_paas.hooks.slurm import SlurmHook
    from airflow_cloud_paas.triggers.slurm import SlurmJobTrigger

#: the XCom key of the finished job's summary (id, state, exit code, nodes; never its output)
XCOM_KEY = "slurm_job"


class SlurmJobFailedError(SlurmError):
    """A SLURM job, or a task of a job array, ended without completing (FAILED, TIMEOUT, CANCELLED, NODE_FAIL...).

    :param message: what ended how, with the end of the failed task's output
    :param job_id: the job (or array) id
    :param state: the (first failed task's) state
    :param exit_code: its exit code (None if SLURM gave none)
    :param failed: every failed task: ``{"job_id", "state", "exit_code", "reason", "nodes"}``
    """

    def __init__(
        self,
        message: str,
        *,
        job_id: str,
        state: str | None,
        exit_code: int | None,
        failed: Sequence[dict[str, Any]] = (),
    ) -> None:
        self.message, self.job_id, self.state, self.exit_code = message, job_id, state, exit_code
        self.failed = list(failed)
        super().__init__(message)


class SlurmJobWaitError(SlurmError):
    """The wait for a SLURM job ended without knowing how the job ended: it timed out, or the cluster was not read.

    :param message: why, and what became of the job
    :param job_id: the job (or array) id
    """

    def __init__(self, message: str, *, job_id: str) -> None:
        self.message, self.job_id = message, job_id
        super().__init__(message)


class CloudPaaSSlurmSubmitJobOperator(CloudPaaSTaskDefaults, BaseOperator):
    """Submit a batch job (or job array) to a SLURM cluster with sbatch, wait until it ends, return its id.

    The settings are checked against SLURM's rules when the task runs, after templating and before anything is
    submitted: a bad one raises :class:`~airflow_cloud_paas.services.slurm.errors.SlurmConfigError` naming it.
    Every task COMPLETED: the job id is returned and a summary (``job_id``, ``state``, ``exit_code``, ``nodes``,
    and ``tasks`` for an array) pushed as XCom ``slurm_job``. A task FAILED, TIMEOUT, CANCELLED, NODE_FAIL,
    OUT_OF_MEMORY...: :class:`SlurmJobFailedError` names it, its state and exit code, and ends with the last lines
    of its output. With ``deferrable=True`` the wait runs in the triggerer
    (:class:`~airflow_cloud_paas.triggers.slurm.SlurmJobTrigger`) and the task resumes in :meth:`execute_complete`,
    holding no worker slot meanwhile. Killing the task cancels the job.

    The output is read where the task runs (:meth:`~airflow_cloud_paas.hooks.slurm.SlurmHook.job_output`): it
    must be on a file system shared with the cluster's nodes, else the error says it could not be read.

    :param script: the batch script's text, starting with ``#!`` (templated)
    :param wrap: a command line run as the job instead of a script (templated)
    :param cpus: CPUs of its task
    :param time_limit: minutes or a SLURM time string (``30``, ``1:30:00``, ``2-12``); None: the partition's
    :param job_name: its name (templated)
    :param array: a job array spec (``0-4``, ``1,3,5``, ``0-15:4%2``): every task must complete
    :param output_file: its output file pattern (sbatch's ``--output``: ``%j``, ``%A``, ``%a``) (templated)
    :param workdir: its working directory (templated)
    :param partition: the partition (None: the cluster's default)
    :param nodelist: nodes the job must run on
    :param extra_args: more sbatch options, passed as they are
    :param wait_for_completion: wait until the job ends (False: return its id once submitted)
    :param fetch_output: log the job's output (each task's) to the task log once it ended
    :param output_tail_lines: lines of a failed task's output in the error
    :param deferrable: wait in the triggerer (default: the ``[operators] default_deferrable`` setting)
    :param poll_interval: seconds between two polls of the job's state
    :param timeout: seconds to wait at most (None: no limit, beyond the task's ``execution_timeout``)
    :param slurm_conn_id: the cluster's ``slurm`` connection
    """

    template_fields: Sequence[str] = ("script", "wrap", "job_name", "output_file", "workdir")
    template_fields_renderers = {"script": "bash", "wrap": "bash"}
    ui_color = "#dfe8f5"

    def __init__(
        self,
        *,
        script: str | None = None,
        wrap: str | None = None,
        cpus: int = 1,
        time_limit: str | int | None = None,
        job_name: str | None = None,
        array: str | None = None,
        output_file: str | None = None,
        workdir: str | None = None,
        partition: str | None = None,
        nodelist: Sequence[str] = (),
        extra_args: Sequence[str] = (),
        wait_for_completion: bool = True,
        fetch_output: bool = False,
        output_tail_lines: int = 20,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        poll_interval: float = 30.0,
        timeout: float | None = None,
        slurm_conn_id: str = "slurm_default",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if (script is None) == (wrap is None):
            raise SlurmConfigError(
                f"task '{kwargs.get('task_id')}': give either a batch script or a command to "
                "wrap, not both nor neither",
                field="script",
            )
        self.script = script
        self.wrap = wrap
        self.cpus = cpus
        self.time_limit = time_limit
        self.job_name = job_name
        self.array = array
        self.output_file = output_file
        self.workdir = workdir
        self.partition = partition
        self.nodelist = list(nodelist)
        self.extra_args = list(extra_args)
        self.wait_for_completion = wait_for_completion
        self.fetch_output = fetch_output
        self.output_tail_lines = output_tail_lines
        self.deferrable = deferrable
        self.poll_interval = poll_interval
        self.timeout = timeout
        self.slurm_conn_id = slurm_conn_id
        self.job_id: str | None = None

    @cached_property
    def hook(self) -> SlurmHook:
        """Return the hook of the cluster's connection."""
        from airflow_cloud_paas.hooks.slurm import SlurmHook

        return SlurmHook(slurm_conn_id=self.slurm_conn_id)

    def validate(self) -> None:
        """Check every setting against SLURM's rules; raise :class:`SlurmConfigError` naming the first bad one."""
        if self.script is not None and not str(self.script).lstrip().startswith("#!"):
            raise SlurmConfigError(
                "a batch script starts with an interpreter line such as #!/bin/sh",
                field="script",
                value=str(self.script)[:40],
            )
        if self.wrap is not None and not str(self.wrap).strip():
            raise SlurmConfigError("the command to wrap is empty", field="wrap", value=self.wrap)
        validate_cpus(self.cpus)
        if self.time_limit is not None:
            time_limit_minutes(self.time_limit)
        if self.job_name is not None:
            validate_job_name(self.job_name)
        if self.array is not None:
            array_task_ids(self.array)
        for node in self.nodelist:
            validate_node_name(node, field="nodelist")
        if (
            isinstance(self.poll_interval, bool)
            or not isinstance(self.poll_interval, int | float)
            or self.poll_interval <= 0
        ):
            raise SlurmConfigError(
                "the poll interval is a number of seconds > 0", field="poll_interval", value=self.poll_interval
            )
        if self.timeout is not None and (
            isinstance(self.timeout, bool) or not isinstance(self.timeout, int | float) or self.timeout <= 0
        ):
            raise SlurmConfigError(
                "the timeout is a number of seconds > 0, or None for none", field="timeout", value=self.timeout
            )

    def _trigger(self, job_id: str) -> SlurmJobTrigger:
        from airflow_cloud_paas.triggers.slurm import SlurmJobTrigger

        return SlurmJobTrigger(
            job_id=job_id,
            slurm_conn_id=self.slurm_conn_id,
            poll_interval=float(self.poll_interval),
            timeout=float(self.timeout) if self.timeout else None,
        )

    @staticmethod
    def job_marker(context: Context) -> str | None:
        """Return the comment this task instance marks its jobs with (``airflow:<dag>/<run>/<task>/<map index>``).

        :param context: the task context (None without a task instance, e.g. in a unit test)
        """
        ti = context.get("ti") if context else None
        if ti is None or not getattr(ti, "run_id", None):
            return None
        return f"airflow:{ti.dag_id}/{ti.run_id}/{ti.task_id}/{getattr(ti, 'map_index', -1)}"

    def _earlier_job(self, marker: str) -> str | None:
        """Return the job an earlier try of this task instance submitted, if it still runs or completed.

        A retry after a lost worker (or a killed task whose job survived) waits for that job instead of submitting a
        second copy; a job that failed is submitted again. SLURM forgets finished jobs after MinJobAge.
        """
        mine = [job for job in self.hook.jobs() if job.comment == marker]
        if not mine or any(job.finished and job.state != "COMPLETED" for job in mine):
            return None
        first = mine[0]
        return str(first.array_job_id) if first.array_job_id else first.job_id

    def execute(self, context: Context) -> str:
        self.validate()
        marker = self.job_marker(context)
        ti = context.get("ti") if context else None
        earlier = self._earlier_job(marker) if marker and (getattr(ti, "try_number", 1) or 1) > 1 else None
        if earlier:
            self.job_id = earlier
            self.log.info("Found SLURM job %s, submitted by an earlier try of this task: waiting for it", earlier)
        else:
            self.job_id = self._submit(marker)
            self.log.info("Submitted SLURM job %s to %s", self.job_id, self.slurm_conn_id)
        if not self.wait_for_completion:
            return self.job_id
        trigger = self._trigger(self.job_id)
        if self.deferrable:
            self.defer(
                trigger=trigger,
                method_name="execute_complete",
                timeout=timedelta(seconds=self.timeout + 60) if self.timeout else None,
            )
        return self.execute_complete(context, trigger.wait(lambda state: self.log.info(
            "SLURM job %s: %s", trigger.job_id, ", ".join(f"{task.job_id} {task.state}" for task in state[:10]))))

    def _submit(self, marker: str | None) -> str:
        return self.hook.submit(
            self.script,
            wrap=self.wrap,
            cpus=self.cpus,
            time_limit=self.time_limit,
            job_name=self.job_name,
            array=self.array,
            output=self.output_file,
            workdir=self.workdir,
            partition=self.partition,
            nodelist=self.nodelist,
            extra_args=[*self.extra_args, *([f"--comment={marker}"] if marker else [])],
        )

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> str:
        """Resume after the wait: return the job id if every task COMPLETED, raise otherwise.

        :param context: the task context
        :param event: the trigger's event payload
        """
        if not event:
            raise SlurmJobWaitError(f"SLURM job {self.job_id}: the trigger returned no event", job_id=str(self.job_id))
        job_id = str(event.get("job_id", self.job_id))
        self.job_id = job_id
        status = event.get("status")
        if status not in ("success", "failed"):
            still = (
                "it may still run: cancel it with scancel, or wait longer"
                if status == "timeout"
                else "check the connection and the controller"
            )
            raise SlurmJobWaitError(
                f"SLURM job {job_id}: the wait ended with {status}: {event.get('message')} ({still})", job_id=job_id
            )
        tasks: list[dict[str, Any]] = list(event.get("tasks") or [])
        if self.fetch_output:
            for task in tasks:
                self.log.info(
                    "Output of SLURM job %s (%s):\n%s", task["job_id"], task["state"], self._read_output(task["job_id"])
                )
        if status == "failed":
            raise self._failure(job_id, tasks)
        summary = self._summary(job_id, tasks)
        ti = context.get("ti") if context else None
        if ti is not None:
            ti.xcom_push(key=XCOM_KEY, value=summary)
        self.log.info("SLURM job %s: %d task(s) COMPLETED on %s", job_id, len(tasks), ", ".join(summary["nodes"]))
        return job_id

    def _summary(self, job_id: str, tasks: list[dict[str, Any]]) -> dict[str, Any]:
        codes = [t["exit_code"] for t in tasks if t.get("exit_code") is not None]
        summary: dict[str, Any] = {
            "job_id": job_id,
            "state": "COMPLETED",
            "exit_code": max(codes) if codes else None,
            "nodes": sorted({n for t in tasks for n in t.get("nodes") or ()}),
        }
        if any("_" in t["job_id"] for t in tasks):  # an array: each task's own
            summary["tasks"] = [{k: t.get(k) for k in ("job_id", "state", "exit_code")} for t in tasks]
        return summary

    def _read_output(self, task_id: str) -> str:
        try:
            return self.hook.job_output(task_id)
        except SlurmError as err:  # the failure is what matters: an unreadable output only goes unshown
            return f"(its output could not be read here: {err})"

    def _tail(self, task_id: str) -> str:
        lines = self._read_output(task_id).rstrip("\n").splitlines()[-max(1, self.output_tail_lines) :]
        text = "\n".join(lines)
        return text if len(text) <= 4000 else "..." + text[-3997:]

    def _failure(self, job_id: str, tasks: list[dict[str, Any]]) -> SlurmJobFailedError:
        failed = [t for t in tasks if t["state"] != "COMPLETED"]

        def said(task: dict[str, Any]) -> str:
            reason = f", reason {task['reason']}" if task.get("reason") else ""
            where = f" on {','.join(task['nodes'])}" if task.get("nodes") else ""
            return f"{task['job_id']} {task['state']} (exit code {task.get('exit_code')}{reason}){where}"

        if len(tasks) == 1 and not any("_" in t["job_id"] for t in tasks):
            head = f"SLURM job {job_id} ended {said(failed[0]).removeprefix(job_id + ' ')}"
        else:
            head = (
                f"SLURM job array {job_id}: {len(failed)} of {len(tasks)} task(s) did not complete: "
                f"{'; '.join(said(t) for t in failed)}"
            )
        tails = [f"Last lines of {t['job_id']}'s output:\n{self._tail(t['job_id'])}" for t in failed[:3]]
        return SlurmJobFailedError(
            "\n".join([head, *tails]),
            job_id=job_id,
            state=failed[0]["state"],
            exit_code=failed[0].get("exit_code"),
            failed=failed,
        )

    def on_kill(self) -> None:
        if self.job_id is not None:
            self.hook.cancel(self.job_id)
            self.log.info("Cancelled SLURM job %s", self.job_id)
