"""The SLURM submit operator's checks and failure messages, the sensor's settings, and both triggers' round trips.

Job behaviour comes from a real cluster (munged, slurmctld and one slurmd from Debian's ``slurm-wlm``; the module
skips, saying so, without them), started once for the module and stopped at its end. The only stand-in is
:class:`RecordedXCom`, in place of Airflow's task instance, to read what the operator pushes.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from airflow.exceptions import AirflowException
from waiting import until

from airflow_cloud_paas.hooks.slurm import SlurmHook
from airflow_cloud_paas.operators.slurm import CloudPaaSSlurmSubmitJobOperator, SlurmJobFailedError, SlurmJobWaitError
from airflow_cloud_paas.sensors.slurm import CloudPaaSSlurmQueueSensor
from airflow_cloud_paas.services.slurm.cluster import LocalSlurmCluster
from airflow_cloud_paas.services.slurm.config import ClusterSpec
from airflow_cloud_paas.services.slurm.errors import SlurmClusterError, SlurmConfigError
from airflow_cloud_paas.triggers.slurm import SlurmJobTrigger, SlurmQueueDemandTrigger

CONN = "slurm_unit"


class RecordedXCom:
    """Stands in for Airflow's task instance in the context: records what the operator pushes."""

    def __init__(self) -> None:
        self.pushed: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.pushed[key] = json.loads(json.dumps(value))  # what an XCom backend would store


def first_event(trigger: Any, timeout: float = 60.0) -> dict[str, Any]:
    """Run a trigger as the triggerer would, until its first event; return the event's payload."""

    async def run() -> dict[str, Any]:
        async for event in trigger.run():
            return event.payload
        raise AssertionError("the trigger ended without an event")

    return asyncio.run(asyncio.wait_for(run(), timeout=timeout))


def rebuilt(trigger: Any) -> Any:
    """Return the trigger as the triggerer rebuilds it: from its class path and JSON-encoded kwargs."""
    classpath, kwargs = trigger.serialize()
    module, _, name = classpath.rpartition(".")
    return getattr(importlib.import_module(module), name)(**json.loads(json.dumps(kwargs)))


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalSlurmCluster]:
    """Start a cluster of one 1-CPU worker for the module; the ``slurm_unit`` connection names it."""
    try:
        LocalSlurmCluster.executables()
    except SlurmClusterError as err:
        pytest.skip(str(err))
    work = Path(tempfile.mkdtemp(prefix="slurm-op-"))
    running = LocalSlurmCluster(ClusterSpec(work, max_workers=1, max_time=30), register_timeout=20)
    with pytest.MonkeyPatch.context() as patch:
        try:
            running.start(workers=1)
            patch.setenv(
                f"AIRFLOW_CONN_{CONN.upper()}", json.dumps({"conn_type": "slurm", "extra": running.connection_extras()})
            )
            yield running
        finally:
            running.stop()
            shutil.rmtree(work, ignore_errors=True)


@pytest.fixture
def hook(cluster: LocalSlurmCluster) -> SlurmHook:
    return SlurmHook(slurm_conn_id=CONN, timeout=15)


def submit(**kwargs: Any) -> CloudPaaSSlurmSubmitJobOperator:
    """Return a submit operator on the module's cluster that polls often."""
    return CloudPaaSSlurmSubmitJobOperator(
        task_id="submit", slurm_conn_id=CONN, **{"poll_interval": 0.2, "time_limit": 2, **kwargs}
    )


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({"wrap": "true", "cpus": 0}, "cpus"),
        ({"wrap": "true", "cpus": True}, "cpus"),
        ({"wrap": "true", "time_limit": "25:61:00"}, "time_limit"),
        ({"wrap": "true", "time_limit": 0}, "time_limit"),
        ({"wrap": "true", "job_name": "x" * 201}, "job_name"),
        ({"wrap": "true", "job_name": "tab\there"}, "job_name"),
        ({"wrap": "true", "array": "5-1"}, "array"),
        ({"wrap": "true", "array": "0-2000"}, "array"),
        ({"script": "echo no interpreter line"}, "script"),
        ({"wrap": "   "}, "wrap"),
        ({"wrap": "true", "nodelist": ["worker1.example.org"]}, "nodelist"),
        ({"wrap": "true", "poll_interval": 0}, "poll_interval"),
        ({"wrap": "true", "timeout": -5}, "timeout"),
    ],
)
@pytest.mark.parametrize("deferrable", [False, True])
def test_bad_settings_fail_typed_before_anything_is_submitted(
    hook: SlurmHook, settings: dict[str, Any], field: str, deferrable: bool
) -> None:
    before = {j.job_id for j in hook.jobs()}
    operator = submit(deferrable=deferrable, **settings)
    with pytest.raises(SlurmConfigError) as raised:
        operator.execute({})
    assert raised.value.field == field and f"{field}=" in str(raised.value)
    assert operator.job_id is None
    assert {j.job_id for j in hook.jobs()} == before, "sbatch ran"


def test_script_and_wrap_exclude_each_other() -> None:
    with pytest.raises(SlurmConfigError, match="script.*either a batch script or a command"):
        CloudPaaSSlurmSubmitJobOperator(task_id="both", script="#!/bin/sh\ntrue\n", wrap="true")
    with pytest.raises(SlurmConfigError, match="script.*either a batch script or a command"):
        CloudPaaSSlurmSubmitJobOperator(task_id="neither")


def test_templated_fields_are_checked_once_rendered(hook: SlurmHook) -> None:
    before = {j.job_id for j in hook.jobs()}
    operator = submit(wrap="echo {{ params.word }}", job_name="{{ params.name }}")
    operator.render_template_fields({"params": {"word": "hi", "name": "n" * 250}})
    assert operator.wrap == "echo hi"
    with pytest.raises(SlurmConfigError, match="job_name='n{250}'"):
        operator.execute({})
    assert {j.job_id for j in hook.jobs()} == before


def test_a_failed_job_names_its_state_exit_code_and_the_end_of_its_output(
    cluster: LocalSlurmCluster, hook: SlurmHook
) -> None:
    operator = submit(
        script="#!/bin/sh\nfor i in $(seq 1 30); do echo line $i; done\necho broke >&2\nexit 3\n",
        output_file=f"{cluster.spec.work_dir}/%j.out",
        output_tail_lines=4,
    )
    with pytest.raises(SlurmJobFailedError) as raised:
        operator.execute({})
    error = raised.value
    job_id = operator.job_id
    assert isinstance(error, AirflowException)
    assert (error.job_id, error.state, error.exit_code) == (job_id, "FAILED", 3)
    assert [t["job_id"] for t in error.failed] == [job_id]
    message = str(error)
    assert message.startswith(f"SLURM job {job_id} ended FAILED (exit code 3, reason NonZeroExitCode) on worker1")
    tail = message.split("output:\n", 1)[1]
    assert tail.splitlines() == ["line 28", "line 29", "line 30", "broke"]  # stderr joins stdout's file
    state = hook.job_state(job_id)
    assert (state.state, state.exit_code) == ("FAILED", 3)


def test_a_wait_that_times_out_leaves_the_job_and_on_kill_cancels_it(hook: SlurmHook, tmp_path: Path) -> None:
    operator = submit(wrap="sleep 60", workdir=str(tmp_path), timeout=0.5)
    with pytest.raises(SlurmJobWaitError, match=r"ended with timeout: not ended after 0.5 s \(1 (PENDING|RUNNING)\)"):
        operator.execute({})
    assert not hook.job_state(operator.job_id).finished, "the timeout alone does not end the job"
    operator.on_kill()
    ended = until("the job to be cancelled", lambda: (s := hook.job_state(operator.job_id)).finished and s, 30)
    assert ended.state == "CANCELLED"


def test_a_cancelled_job_ends_the_trigger_failed_and_the_task_names_it(hook: SlurmHook, tmp_path: Path) -> None:
    operator = submit(wrap="sleep 60", workdir=str(tmp_path), wait_for_completion=False)
    job_id = operator.execute({})
    hook.cancel(job_id)
    event = first_event(rebuilt(operator._trigger(job_id)))
    assert event["status"] == "failed" and event["job_id"] == job_id
    assert [(t["job_id"], t["state"]) for t in event["tasks"]] == [(job_id, "CANCELLED")]
    with pytest.raises(SlurmJobFailedError, match=f"SLURM job {job_id} ended CANCELLED"):
        submit(wrap="sleep 60").execute_complete({}, event)


def test_the_job_trigger_round_trips_and_reports_an_unknown_job(cluster: LocalSlurmCluster) -> None:
    trigger = SlurmJobTrigger(job_id=987654, slurm_conn_id=CONN, poll_interval=0.1, timeout=30)
    classpath, kwargs = trigger.serialize()
    assert classpath == "airflow_cloud_paas.triggers.slurm.SlurmJobTrigger"
    assert kwargs == {"job_id": "987654", "slurm_conn_id": CONN, "poll_interval": 0.1, "timeout": 30}
    assert rebuilt(trigger).serialize() == (classpath, kwargs)
    event = first_event(rebuilt(trigger))
    assert event["status"] == "error" and event["job_id"] == "987654"
    assert "no longer knows job 987654" in event["message"]
    with pytest.raises(SlurmJobWaitError, match="job 987654: the wait ended with error: .*check the connection"):
        submit(wrap="true").execute_complete({}, event)


def test_the_queue_trigger_round_trips_and_times_out_with_the_count(cluster: LocalSlurmCluster) -> None:
    trigger = SlurmQueueDemandTrigger(
        slurm_conn_id=CONN, min_pending=500, demand_only=True, poll_interval=0.1, timeout=0.5
    )
    classpath, kwargs = trigger.serialize()
    assert classpath == "airflow_cloud_paas.triggers.slurm.SlurmQueueDemandTrigger"
    assert kwargs == {
        "slurm_conn_id": CONN,
        "min_pending": 500,
        "demand_only": True,
        "poll_interval": 0.1,
        "timeout": 0.5,
    }
    event = first_event(rebuilt(trigger))
    assert event["status"] == "timeout" and event["min_pending"] == 500
    assert event["message"].endswith("fewer than 500") and isinstance(event["pending"], int)
    from airflow.sdk.exceptions import AirflowSensorTimeout, AirflowSkipException

    sensor = CloudPaaSSlurmQueueSensor(task_id="q", slurm_conn_id=CONN, min_pending=500)
    with pytest.raises(AirflowSensorTimeout, match="fewer than 500"):
        sensor.execute_complete({}, event)
    with pytest.raises(AirflowSkipException):
        CloudPaaSSlurmQueueSensor(task_id="q", slurm_conn_id=CONN, min_pending=500, soft_fail=True).execute_complete(
            {}, event
        )


@pytest.mark.parametrize("min_pending", [0, -1, True, "3"])
def test_the_sensor_waits_for_at_least_one_pending_job(min_pending: Any) -> None:
    with pytest.raises(SlurmConfigError, match="min_pending"):
        CloudPaaSSlurmQueueSensor(task_id="q", min_pending=min_pending)


def test_the_xcom_summary_holds_no_output(cluster: LocalSlurmCluster, hook: SlurmHook) -> None:
    ti = RecordedXCom()
    operator = submit(wrap="echo not-for-xcom", output_file=f"{cluster.spec.work_dir}/%j.out", job_name="small")
    job_id = operator.execute({"ti": ti})
    assert ti.pushed == {"slurm_job": {"job_id": job_id, "state": "COMPLETED", "exit_code": 0, "nodes": ["worker1"]}}
    assert hook.job_output(job_id) == "not-for-xcom\n"
