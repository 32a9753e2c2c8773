"""HTCondor operators under test (tests/unit/condor): a deferrable submit that waits for its jobs, and a drain."""

from __future__ import annotations

from airflow.sdk import DAG, Param

from airflow_cloud_paas.operators.htcondor import (
    CloudPaaSHTCondorDrainNodeOperator,
    CloudPaaSHTCondorSubmitJobOperator,
)

with DAG(
    dag_id="test_htcondor_deferrable_submit",
    schedule=None,
    params={"log": Param("/tmp/htcondor-test.log", type="string"), "exit_code": Param(0, type="integer")},
) as dag:
    CloudPaaSHTCondorSubmitJobOperator(
        task_id="submit_and_wait",
        description={
            "executable": "/bin/echo",
            "arguments": "hello from airflow",
            "request_cpus": "1",
            "request_memory": "64",
            "log": "{{ params.log }}",
            "MY.StandInExitCode": "{{ params.exit_code }}",
        },
        count=2,
        wait_for_completion=True,
        deferrable=True,
        poll_interval=0.2,
        timeout=60,
        htcondor_conn_id="htcondor_unit",
    )

with DAG(dag_id="test_htcondor_drain_node", schedule=None, params={"machine": Param("wn1", type="string")}) as dag2:
    CloudPaaSHTCondorDrainNodeOperator(
        task_id="drain", machine="{{ params.machine }}", reason="scale in", htcondor_conn_id="htcondor_unit"
    )
