"""Deploy a Spark standalone cluster from TOSCA, run a job on it, scale its workers, tear it down.

The trigger form shows the template's inputs. Teardown runs even when a step fails; set the run
param ``keep_deployment`` to leave the cluster running.
"""

from __future__ import annotations

from airflow_cloud_paas import ToscaDag, packaged_template
from airflow_cloud_paas.operators.deployment import CloudPaaSScaleNodeGroupOperator
from airflow_cloud_paas.operators.spark import CloudPaaSSparkSubmitOperator
from airflow_cloud_paas.sensors.spark import CloudPaaSSparkWorkersSensor

N = 100_000

# [START howto_tosca_dag_spark]
with ToscaDag(
    packaged_template("spark_cluster"),
    dag_id="spark_cluster",
    schedule=None,
    catchup=False,
    max_active_runs=2,
) as dag:
    cluster = dag.tosca
    job = CloudPaaSSparkSubmitOperator(
        task_id="sum_of_squares",
        master_url=cluster.output("spark_master_url"),
        application_args=[N, 4],
        expect={"sum_of_squares": N * (N + 1) * (2 * N + 1) // 6},
    )
    scale_out = CloudPaaSScaleNodeGroupOperator(
        task_id="scale_workers_out", node_name="spark_worker_hosts", count="{{ params.worker_count + 2 }}"
    )
    scaled_out = CloudPaaSSparkWorkersSensor(
        task_id="workers_scaled_out", webui_url=cluster.output("spark_webui_url"),
        count="{{ params.worker_count + 2 }}",
    )
    scale_in = CloudPaaSScaleNodeGroupOperator(
        task_id="scale_workers_in", node_name="spark_worker_hosts", count="{{ params.worker_count }}"
    )
    scaled_in = CloudPaaSSparkWorkersSensor(
        task_id="workers_scaled_in", webui_url=cluster.output("spark_webui_url"), count="{{ params.worker_count }}"
    )
    job >> scale_out >> scaled_out >> scale_in >> scaled_in
    cluster.wrap(job, scale_out, scaled_out, scale_in, scaled_in)
# [END howto_tosca_dag_spark]
