"""The SLURM submit operator and queue sensor against a real cluster: jobs and arrays run, fail, defer and are killed.

munged, slurmctld and slurmd run for real (Debian's ``slurm-wlm`` and ``munge``; ``make system-deps``); the tests
skip, saying so, without them. The deferrable paths run as Airflow runs them: ``execute`` raises ``TaskDeferred``,
the trigger is rebuilt from its serialized form and run on an event loop to its event, and a fresh operator resumes
in ``execute_complete``. Each test's cluster is stopped in its fixture's finally, which fails the test if any SLURM
or munge process of it is left. The only stand-in is :class:`RecordedXCom`, in place of Airflow's task instance.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import psutil
import pytest
from airflow.exceptions import AirflowException
from airflow.sdk import PokeReturnValue
from airflow.sdk.exceptions import TaskDeferred
from deferral import resume
from slurm_processes import cluster_processes
from waiting import until

from airflow_cloud_paas.hooks.slurm import SlurmHook
from airflow_cloud_paas.operators.slurm import CloudPaaSSlurmSubmitJobOperator, SlurmJobFailedError
from airflow_cloud_paas.sensors.slurm import CloudPaaSSlurmQueueSensor
from airflow_cloud_paas.services.slurm.cluster import LocalSlurmCluster
from airflow_cloud_paas.services.slurm.config import ClusterSpec
from airflow_cloud_paas.services.slurm.errors import SlurmClusterError
from airflow_cloud_paas.triggers.slurm import SlurmJobTrigger, SlurmQueueDemandTrigger

pytestmark = pytest.mark.integration

CONN = "slurm_live_ops"


class RecordedXCom:
    """Stands in for Airflow's task instance in the context: records what the operator pushes."""

    def __init__(self) -> None:
        self.pushed: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.pushed[key] = json.loads(json.dumps(value))  # what an XCom backend would store


def job_processes(work_dir: Path, name: str) -> list[psutil.Process]:
    """Return the processes called ``name`` that run under a slurmstepd of the cluster in ``work_dir``."""
    found = []
    for stepd in cluster_processes(work_dir):
        try:
            if stepd.name() == "slurmstepd":
                found += [c for c in stepd.children(recursive=True) if c.name() == name]
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
    return found


@pytest.fixture
def start_cluster(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[int], LocalSlurmCluster]]:
    """Return a function starting a cluster of up to 3 one-CPU workers (``workers`` at once) named by ``CONN``."""
    try:
        LocalSlurmCluster.executables()
    except SlurmClusterError as err:
        pytest.skip(str(err))
    work = Path(tempfile.mkdtemp(prefix="slurm-ops-"))
    started: list[LocalSlurmCluster] = []

    def start(workers: int) -> LocalSlurmCluster:
        cluster = LocalSlurmCluster(ClusterSpec(work, max_workers=3, max_time=30), register_timeout=20)
        started.append(cluster)
        cluster.start(workers=workers)
        monkeypatch.setenv(
            f"AIRFLOW_CONN_{CONN.upper()}", json.dumps({"conn_type": "slurm", "extra": cluster.connection_extras()})
        )
        return cluster

    try:
        yield start
    finally:
        for cluster in started:
            cluster.stop()
        left = cluster_processes(work)
        for process in left:  # never leave a daemon behind, but fail the test whose teardown did
            process.kill()
        shutil.rmtree(work, ignore_errors=True)
        assert not left, f"stop() left {[(p.pid, p.name()) for p in left]}"


def submit(**kwargs: Any) -> CloudPaaSSlurmSubmitJobOperator:
    """Return a submit operator on the test's cluster that polls often."""
    return CloudPaaSSlurmSubmitJobOperator(
        task_id="submit", slurm_conn_id=CONN, **{"poll_interval": 0.2, "time_limit": 2, **kwargs}
    )


def test_a_job_runs_in_the_worker_and_its_output_is_logged(
    start_cluster: Callable[[int], LocalSlurmCluster], capfd: pytest.CaptureFixture[str]
) -> None:
    cluster = start_cluster(1)
    hook = SlurmHook(slurm_conn_id=CONN)
    ti = RecordedXCom()
    operator = submit(
        script="#!/bin/sh\necho hello from $SLURMD_NODENAME with $SLURM_CPUS_PER_TASK cpu\n",
        job_name="hello",
        output_file=f"{cluster.spec.work_dir}/%j.out",
        fetch_output=True,
        deferrable=False,
    )
    job_id = operator.execute({"ti": ti})
    assert job_id == operator.job_id and job_id.isdigit()
    state = hook.job_state(job_id)
    assert (state.state, state.exit_code, state.name, state.cpus) == ("COMPLETED", 0, "hello", 1)
    assert hook.job_output(job_id) == "hello from worker1 with 1 cpu\n"
    logged = capfd.readouterr().out  # the task log (Airflow's structlog writes the task's records there)
    assert f"Output of SLURM job {job_id} (COMPLETED):\nhello from worker1 with 1 cpu" in logged
    assert ti.pushed == {"slurm_job": {"job_id": job_id, "state": "COMPLETED", "exit_code": 0, "nodes": ["worker1"]}}


def test_a_deferred_job_is_submitted_first_then_waited_for_by_its_trigger(
    start_cluster: Callable[[int], LocalSlurmCluster],
) -> None:
    cluster = start_cluster(1)
    hook = SlurmHook(slurm_conn_id=CONN)
    settings = {
        "wrap": "sleep 1; echo deferred on $SLURMD_NODENAME",
        "deferrable": True,
        "timeout": 60,
        "output_file": f"{cluster.spec.work_dir}/%j.out",
    }
    operator = submit(**settings)
    with pytest.raises(TaskDeferred) as deferred:
        operator.execute({})
    job_id = operator.job_id
    assert isinstance(deferred.value.trigger, SlurmJobTrigger) and deferred.value.trigger.job_id == job_id
    assert (deferred.value.method_name, deferred.value.timeout) == ("execute_complete", timedelta(seconds=120))
    assert not hook.job_state(job_id).finished, "submitted before deferring, and only the wait deferred"

    ti = RecordedXCom()
    assert resume(deferred.value, lambda: submit(**settings), {"ti": ti}) == job_id
    assert hook.job_state(job_id).state == "COMPLETED"
    assert hook.job_output(job_id) == "deferred on worker1\n"
    assert ti.pushed["slurm_job"] == {"job_id": job_id, "state": "COMPLETED", "exit_code": 0, "nodes": ["worker1"]}


@pytest.mark.parametrize("deferrable", [False, True])
def test_a_job_exiting_3_fails_the_task_with_its_exit_code_and_output(
    start_cluster: Callable[[int], LocalSlurmCluster], deferrable: bool
) -> None:
    cluster = start_cluster(1)
    settings = {
        "wrap": "echo computing; echo cannot go on >&2; exit 3",
        "deferrable": deferrable,
        "output_file": f"{cluster.spec.work_dir}/%j.out",
    }
    operator = submit(**settings)
    with pytest.raises(SlurmJobFailedError) as raised:
        if deferrable:
            with pytest.raises(TaskDeferred) as deferred:
                operator.execute({})
            resume(deferred.value, lambda: submit(**settings), {})
        else:
            operator.execute({})
    job_id = operator.job_id
    assert isinstance(raised.value, AirflowException)
    assert (raised.value.job_id, raised.value.state, raised.value.exit_code) == (job_id, "FAILED", 3)
    assert str(raised.value) == (
        f"SLURM job {job_id} ended FAILED (exit code 3, reason NonZeroExitCode) on worker1\n"
        f"Last lines of {job_id}'s output:\ncomputing\ncannot go on"
    )


def test_an_array_waits_for_every_task_and_names_the_failed_ones(
    start_cluster: Callable[[int], LocalSlurmCluster],
) -> None:
    cluster = start_cluster(2)
    hook = SlurmHook(slurm_conn_id=CONN)
    out = cluster.spec.work_dir
    ti = RecordedXCom()
    array = submit(
        script="#!/bin/sh\nsleep 1\necho task $SLURM_ARRAY_TASK_ID of $SLURM_ARRAY_JOB_ID\n",
        array="0-2",
        output_file=f"{out}/%A_%a.out",
    )
    job_id = array.execute({"ti": ti})
    tasks = [f"{job_id}_{t}" for t in range(3)]
    assert [hook.job_state(t).state for t in tasks] == ["COMPLETED"] * 3
    assert [hook.job_output(t) for t in tasks] == [f"task {t} of {job_id}\n" for t in range(3)]
    summary = ti.pushed["slurm_job"]
    assert (summary["job_id"], summary["state"], summary["exit_code"]) == (job_id, "COMPLETED", 0)
    assert sorted(t["job_id"] for t in summary["tasks"]) == tasks
    assert set(summary["nodes"]) <= {"worker1", "worker2"} and summary["nodes"]

    settings = {
        "script": "#!/bin/sh\necho task $SLURM_ARRAY_TASK_ID\n[ $SLURM_ARRAY_TASK_ID -ne 1 ] || exit 3\n",
        "array": "0-2",
        "output_file": f"{out}/%A_%a.out",
        "deferrable": True,
    }
    failing = submit(**settings)
    with pytest.raises(TaskDeferred) as deferred:
        failing.execute({})
    with pytest.raises(SlurmJobFailedError) as raised:
        resume(deferred.value, lambda: submit(**settings), {})
    job_id = failing.job_id
    assert [t["job_id"] for t in raised.value.failed] == [f"{job_id}_1"]
    assert (raised.value.state, raised.value.exit_code) == ("FAILED", 3)
    message = str(raised.value)
    assert message.startswith(
        f"SLURM job array {job_id}: 1 of 3 task(s) did not complete: {job_id}_1 FAILED "
        "(exit code 3, reason NonZeroExitCode)"
    )
    assert message.endswith(f"Last lines of {job_id}_1's output:\ntask 1")
    assert [hook.job_state(f"{job_id}_{t}").state for t in (0, 2)] == ["COMPLETED"] * 2, "the others still ran"


def test_the_queue_sensor_sees_jobs_pending_without_workers(start_cluster: Callable[[int], LocalSlurmCluster]) -> None:
    cluster = start_cluster(0)
    hook = SlurmHook(slurm_conn_id=CONN)
    work = str(cluster.spec.work_dir)
    assert hook.nodes() == [] and hook.queue() == []
    poking = CloudPaaSSlurmQueueSensor(
        task_id="q", slurm_conn_id=CONN, min_pending=3, poke_interval=0.2, timeout=60, deferrable=False
    )
    poked = poking.poke({})
    assert isinstance(poked, PokeReturnValue)
    assert (poked.is_done, poked.xcom_value) == (False, {"pending": 0, "jobs": []})

    jobs = [
        submit(
            wrap="echo queued", job_name=f"queued{i}", cpus=1, time_limit=3, workdir=work, wait_for_completion=False
        ).execute({})
        for i in range(2)
    ]
    held = submit(
        wrap="echo held", job_name="held", workdir=work, extra_args=["--hold"], wait_for_completion=False
    ).execute({})
    summary = poking.execute({})  # Airflow's poke loop: satisfied at once, the summary is its XCom value
    assert summary["pending"] == 3
    assert [(j["job_id"], j["name"], j["cpus"], j["time_limit_min"]) for j in summary["jobs"]] == [
        (jobs[0], "queued0", 1, 3),
        (jobs[1], "queued1", 1, 3),
        (held, "held", 1, 2),
    ]
    assert summary["jobs"][2]["reason"] == "JobHeldUser"

    # demand only: the held job is not work a new worker would start
    demand = CloudPaaSSlurmQueueSensor(
        task_id="d", slurm_conn_id=CONN, min_pending=3, demand_only=True, poke_interval=0.1, timeout=60, deferrable=True
    )
    with pytest.raises(TaskDeferred) as deferred:
        demand.execute({})
    trigger = deferred.value.trigger
    assert isinstance(trigger, SlurmQueueDemandTrigger)
    assert trigger.serialize()[1] == {
        "slurm_conn_id": CONN,
        "min_pending": 3,
        "demand_only": True,
        "poll_interval": 0.1,
        "timeout": 60.0,
    }
    assert trigger.finished(trigger.poll()) is None, "two jobs are demand, the held one is not"
    third = submit(wrap="echo queued", job_name="queued2", workdir=work, wait_for_completion=False).execute({})
    seen = resume(deferred.value, lambda: demand, {})
    assert seen["pending"] == 3 and [j["job_id"] for j in seen["jobs"]] == [*jobs, third]

    # a worker comes: the demand runs, the held job stays
    cluster.add_worker()
    until("the queued jobs to run", lambda: all(hook.job_state(j).state == "COMPLETED" for j in [*jobs, third]), 60)
    assert [p.job_id for p in hook.queue()] == [held]


def test_killing_the_task_cancels_its_job(start_cluster: Callable[[int], LocalSlurmCluster]) -> None:
    cluster = start_cluster(1)
    hook = SlurmHook(slurm_conn_id=CONN)
    operator = submit(wrap="sleep 120", workdir=str(cluster.spec.work_dir), deferrable=False)
    raised: list[BaseException] = []

    def run() -> None:
        try:
            operator.execute({})
        except BaseException as err:  # reported to the test below
            raised.append(err)

    worker = threading.Thread(target=run)
    worker.start()
    try:
        until("the job to run", lambda: operator.job_id and hook.job_state(operator.job_id).state == "RUNNING", 30)
        sleeps = until("the job's sleep under its slurmstepd", lambda: job_processes(cluster.spec.work_dir, "sleep"))
        operator.on_kill()
    finally:
        worker.join(timeout=60)
    assert not worker.is_alive(), "the wait in the worker saw the job end"
    assert len(raised) == 1 and isinstance(raised[0], SlurmJobFailedError)
    assert raised[0].state == "CANCELLED" and f"SLURM job {operator.job_id} ended CANCELLED" in str(raised[0])
    assert hook.job_state(operator.job_id).state == "CANCELLED"
    until(
        "the job's sleep to be gone",
        lambda: not [p for p in sleeps if p.is_running() and p.status() != psutil.STATUS_ZOMBIE],
        30,
    )


class TryOf(RecordedXCom):
    """A task instance of one run, at a given try (what the operator's job marker is made of)."""

    def __init__(self, try_number: int) -> None:
        super().__init__()
        self.dag_id, self.run_id, self.task_id, self.map_index = "d", "manual__1", "submit", -1
        self.try_number = try_number


def test_a_retry_waits_for_the_job_an_earlier_try_submitted_and_resubmits_a_failed_one(
    start_cluster: Callable[[int], LocalSlurmCluster],
) -> None:
    cluster = start_cluster(1)
    hook = SlurmHook(slurm_conn_id=CONN)
    settings = {"wrap": "sleep 2; echo once", "deferrable": True, "output_file": f"{cluster.spec.work_dir}/%j.out"}
    first = submit(**settings)
    with pytest.raises(TaskDeferred):
        first.execute({"ti": TryOf(1)})  # the try's worker is lost while it waits
    assert hook.jobs(first.job_id)[0].comment == "airflow:d/manual__1/submit/-1"

    retry = submit(**settings)
    with pytest.raises(TaskDeferred) as deferred:
        retry.execute({"ti": TryOf(2)})
    assert retry.job_id == first.job_id, "the retry found the running job instead of submitting a second one"
    assert resume(deferred.value, lambda: submit(**settings), {"ti": TryOf(2)}) == first.job_id
    assert len([j for j in hook.jobs() if j.comment == "airflow:d/manual__1/submit/-1"]) == 1

    failing = {**settings, "wrap": "exit 4"}
    bad = submit(**{**failing, "deferrable": False})
    other = TryOf(1)
    other.run_id = "manual__2"
    with pytest.raises(SlurmJobFailedError):
        bad.execute({"ti": other})
    again = submit(**{**failing, "deferrable": False})
    other.try_number = 2
    with pytest.raises(SlurmJobFailedError):
        again.execute({"ti": other})
    assert again.job_id != bad.job_id, "a failed job is submitted again, not waited for"
