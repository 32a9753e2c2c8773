"""Every cloud-paas operator has a bounded run time and does not outlive the worker process that runs it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from datetime import timedelta
from pathlib import Path

import psutil
import pytest
from airflow.sdk import DAG, BaseOperator

from airflow_cloud_paas.operators import deployment, htcondor, scaling, spark, xcache
from airflow_cloud_paas.operators._defaults import CloudPaaSTaskDefaults


def _operators() -> list[type]:
    found = []
    for module in (deployment, htcondor, scaling, spark, xcache):
        for value in vars(module).values():
            if (isinstance(value, type) and issubclass(value, BaseOperator) and value.__module__ == module.__name__
                    and not value.__name__.startswith("_")):
                found.append(value)
    return found


def test_every_operator_has_the_task_defaults():
    operators = _operators()
    assert len(operators) >= 15
    assert [op.__name__ for op in operators if not issubclass(op, CloudPaaSTaskDefaults)] == []


def test_a_dag_without_a_timeout_gets_the_default_and_one_with_a_timeout_keeps_it():
    with DAG("defaults_none"):
        bare = deployment.CloudPaaSReconcileOperator(task_id="bare")
        own = deployment.CloudPaaSReconcileOperator(task_id="own", execution_timeout=timedelta(seconds=7))
    with DAG("defaults_dag", default_args={"execution_timeout": timedelta(minutes=5)}):
        from_dag = spark.CloudPaaSSparkSubmitOperator(task_id="from_dag", master_url="spark://127.0.0.1:7077")
    assert bare.execution_timeout == CloudPaaSTaskDefaults.default_execution_timeout
    assert own.execution_timeout == timedelta(seconds=7)
    assert from_dag.execution_timeout == timedelta(minutes=5)


CHILD = textwrap.dedent("""
    import os, sys, time
    from airflow_cloud_paas.operators._defaults import stop_with_parent
    pid = os.fork()
    if pid == 0:  # the task process: asks to stop with its parent (the supervisor), then works forever
        assert stop_with_parent()
        open(sys.argv[1], "w").write(str(os.getpid()))
        time.sleep(600)
        os._exit(0)
    time.sleep(600)  # the supervisor, killed by the test
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_task_process_stops_when_its_supervisor_dies(tmp_path: Path):
    pid_file = tmp_path / "task.pid"
    supervisor = subprocess.Popen([sys.executable, "-c", CHILD, str(pid_file)])
    try:
        deadline = time.monotonic() + 120
        while not (pid_file.exists() and pid_file.read_text()):
            assert time.monotonic() < deadline and supervisor.poll() is None, "the task process never started"
            time.sleep(0.05)
        task = psutil.Process(int(pid_file.read_text()))
        os.kill(supervisor.pid, signal.SIGKILL)
        supervisor.wait(timeout=60)
        task.wait(timeout=60)  # raises TimeoutExpired if it outlived its supervisor
    finally:
        supervisor.kill()
