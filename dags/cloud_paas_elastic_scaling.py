"""Elastic scaling of every deployment whose template has an ElasticScaling policy.

Two ways to run the same round (:class:`~airflow_cloud_paas.operators.scaling.CloudPaaSElasticScaleOperator`):

* ``cloud_paas_elastic_scaling``: every 5 minutes, one mapped task per elastic worker group;
* ``cloud_paas_elastic_scaling_on_demand``: a continuous DAG whose deferrable sensor waits in the
  triggerer until work queues up somewhere, then scales just those groups (scale-in happens in the
  scheduled DAG: an idle cluster queues nothing).
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import DAG

from airflow_cloud_paas.operators.scaling import CloudPaaSElasticScaleOperator, CloudPaaSListElasticTargetsOperator
from airflow_cloud_paas.sensors.scaling import CloudPaaSQueueDemandSensor

# [START howto_operator_cloud_paas_elastic_scaling]
with DAG(
    dag_id="cloud_paas_elastic_scaling",
    schedule=timedelta(minutes=5),
    catchup=False,
    max_active_runs=1,
    tags=["cloud-paas", "scaling"],
    doc_md=__doc__,
) as scheduled:
    targets = CloudPaaSListElasticTargetsOperator(task_id="elastic_targets")
    CloudPaaSElasticScaleOperator.partial(task_id="scale").expand_kwargs(targets.output)
# [END howto_operator_cloud_paas_elastic_scaling]

# [START howto_sensor_cloud_paas_queue_demand]
with DAG(
    dag_id="cloud_paas_elastic_scaling_on_demand",
    schedule="@continuous",
    catchup=False,
    max_active_runs=1,
    tags=["cloud-paas", "scaling"],
    doc_md=__doc__,
) as on_demand:
    waiting = CloudPaaSQueueDemandSensor(task_id="wait_for_queued_work", poll_interval=30, deferrable=True)
    CloudPaaSElasticScaleOperator.partial(task_id="scale").expand_kwargs(waiting.output)
# [END howto_sensor_cloud_paas_queue_demand]
