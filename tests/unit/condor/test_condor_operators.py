"""The job trigger and the operators against the pool stand-in; a deferrable submit really defers in dag.test()."""

from __future__ import annotations

import asyncio
import logging
import os

import pytest

from airflow_cloud_paas.exceptions import CloudPaaSError
from airflow_cloud_paas.hooks.htcondor import HTCondorHook, use_clients
from airflow_cloud_paas.operators.htcondor import CloudPaaSHTCondorDrainNodeOperator, CloudPaaSHTCondorSubmitJobOperator
from airflow_cloud_paas.triggers.htcondor import CloudPaaSHTCondorJobCompleteTrigger


def _first_event(trigger):
    async def run():
        async for event in trigger.run():
            return event.payload

    return asyncio.run(asyncio.wait_for(run(), timeout=30))


def test_the_trigger_serializes_to_its_installed_class_path() -> None:
    trigger = CloudPaaSHTCondorJobCompleteTrigger(7, "htcondor_x", poll_interval=0.5, timeout=10)
    path, kwargs = trigger.serialize()
    assert path == "airflow_cloud_paas.triggers.htcondor.CloudPaaSHTCondorJobCompleteTrigger"
    assert CloudPaaSHTCondorJobCompleteTrigger(**kwargs).serialize() == (path, kwargs)
    import json

    json.dumps(kwargs)  # JSON-serializable


def test_the_trigger_waits_for_every_job_then_reports(connection, pool, tmp_path) -> None:
    pool.auto_tick = True  # each query moves the pool on: idle -> running -> completed
    hook = HTCondorHook(connection, clients=pool)
    ok = hook.submit({"executable": "/bin/true", "log": str(tmp_path / "l")}, count=2)
    bad = hook.submit({"executable": "/bin/false", "MY.StandInExitCode": "1"})
    with use_clients(pool):
        event = _first_event(CloudPaaSHTCondorJobCompleteTrigger(ok, connection, poll_interval=0.01))
        assert event["status"] == "success" and event["completed"] == 2 and event["exit_codes"] == [0, 0]
        event = _first_event(CloudPaaSHTCondorJobCompleteTrigger(bad, connection, poll_interval=0.01))
        assert event["status"] == "failed" and event["exit_codes"] == [1]
        held = hook.submit({"executable": "/bin/true", "hold": "true"})
        event = _first_event(CloudPaaSHTCondorJobCompleteTrigger(held, connection, poll_interval=0.01))
        assert event["status"] == "failed" and "held: submitted on hold" in event["message"]
        event = _first_event(CloudPaaSHTCondorJobCompleteTrigger(held, connection, poll_interval=0.01, timeout=0.05,
                                                                 fail_on_hold=False))
        assert event["status"] == "timeout" and event["held"] == 1
        event = _first_event(CloudPaaSHTCondorJobCompleteTrigger(4242, connection, poll_interval=0.01))
        assert event["status"] == "error" and "cluster 4242" in event["message"]


def test_the_submit_operator_defers_and_resumes(connection, pool) -> None:
    from airflow.sdk.exceptions import TaskDeferred

    operator = CloudPaaSHTCondorSubmitJobOperator(
        task_id="submit", description={"executable": "/bin/true"}, wait_for_completion=True, deferrable=True,
        poll_interval=1, timeout=30, htcondor_conn_id=connection)
    with use_clients(pool), pytest.raises(TaskDeferred) as deferred:
        operator.execute({})
    trigger = deferred.value.trigger
    assert isinstance(trigger, CloudPaaSHTCondorJobCompleteTrigger)
    assert (trigger.cluster_id, deferred.value.method_name) == (operator.cluster_id, "execute_complete")
    assert pool.schedd_.query(f"ClusterId == {operator.cluster_id}")  # submitted before deferring
    assert operator.execute_complete({}, {"status": "success", "cluster_id": 1, "completed": 1}) == 1
    with pytest.raises(CloudPaaSError, match=r"cluster 1 ended its wait with failed: held: x \(0 idle"):
        operator.execute_complete({}, {"status": "failed", "cluster_id": 1, "message": "held: x"})


def test_the_submit_operator_can_wait_in_the_worker_or_not_at_all(connection, pool) -> None:
    pool.auto_tick = True
    with use_clients(pool):
        waiting = CloudPaaSHTCondorSubmitJobOperator(
            task_id="w", description="executable = /bin/true\nqueue 3\n", wait_for_completion=True,
            poll_interval=0.01, htcondor_conn_id=connection)
        cluster = waiting.execute({})
        assert HTCondorHook(connection, clients=pool).job_status(cluster).completed == 3
        failing = CloudPaaSHTCondorSubmitJobOperator(
            task_id="f", description={"executable": "/bin/true", "MY.StandInExitCode": "2"},
            wait_for_completion=True, poll_interval=0.01, htcondor_conn_id=connection)
        with pytest.raises(CloudPaaSError, match=r"exit codes \[2\]"):
            failing.execute({})
        pool.auto_tick = False
        fire_and_forget = CloudPaaSHTCondorSubmitJobOperator(
            task_id="n", description={"executable": "/bin/true"}, htcondor_conn_id=connection)
        cluster = fire_and_forget.execute({})
        assert HTCondorHook(connection, clients=pool).job_status(cluster).idle == 1
        fire_and_forget.on_kill()
        assert HTCondorHook(connection, clients=pool).job_status(cluster).removed == 1
    with pytest.raises(ValueError, match="exactly one of description and dag_file"):
        CloudPaaSHTCondorSubmitJobOperator(task_id="x", description={"executable": "/bin/true"}, dag_file="a.dag")


def _dag(dag_id: str):
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=os.path.join(os.environ["AIRFLOW__CORE__DAGS_FOLDER"], "htcondor_deferrable_submit.py"))
    assert bag.import_errors == {}, bag.import_errors
    return bag.dags[dag_id]


@pytest.mark.parametrize(("exit_code", "state"), [(0, "success"), (5, "failed")])
def test_a_deferrable_submit_runs_its_trigger_under_dag_test(airflow_db, connection, credentials, pool, tmp_path,
                                                             caplog, exit_code, state) -> None:
    import htcondor2

    pool.auto_tick = True
    caplog.set_level(logging.INFO)
    log = tmp_path / "jobs.log"
    with use_clients(pool):
        run = _dag("test_htcondor_deferrable_submit").test(run_conf={"log": str(log), "exit_code": exit_code})
    (ti,) = run.get_task_instances()
    assert (run.state, ti.state) == (state, state)
    assert "running trigger in line" in caplog.text, "the operator deferred and its trigger ran"
    events = list(htcondor2.JobEventLog(str(log)).events(stop_after=0))
    codes = [e["ReturnValue"] for e in events if e.type == htcondor2.JobEventType.JOB_TERMINATED]
    assert codes == [exit_code, exit_code]  # both jobs ran to the end before the task resumed
    for secret in credentials.secret_values():
        assert secret not in caplog.text


def test_the_drain_operator_drains_or_retires(airflow_db, connection, pool) -> None:
    with use_clients(pool):
        run = _dag("test_htcondor_drain_node").test(run_conf={"machine": "wn1.standin"})
        assert run.state == "success"
        nodes = {n.machine: n for n in HTCondorHook(connection, clients=pool).slots()}
        assert nodes["wn1.standin"].draining and not nodes["wn2.standin"].draining
        CloudPaaSHTCondorDrainNodeOperator(task_id="r", machine="wn2.standin", retire=True,
                                           htcondor_conn_id=connection).execute({})
        assert [n.machine for n in HTCondorHook(connection, clients=pool).slots()] == ["wn1.standin"]
