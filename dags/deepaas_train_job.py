"""DEEP as a Service: train a model on a deployment (a job of its own), then gate it on held-back data.

``deepaas_train_job`` deploys ``templates/training_job.yaml``: a training job on the local host (a process), or on a
GPU VM of a cloud backend (``num_gpus``, ``gpu_model`` pick the flavour). Its deploy task is deferrable: it starts
the job and waits in the triggerer until the job ended, so no worker slot is held while it trains. The job writes a
checkpoint every ``checkpoint_every`` steps in its folder, so a retried deploy task resumes it. The run then scores
the exported model on the held-back split (failing under ``min_accuracy``) and deletes the deployment; the model
stays in its folder (the ``model_dir`` output). To train in a Kubernetes pod asking for GPUs, deploy
``templates/training_job_container.yaml`` the same way on the kubernetes backend.
"""

from __future__ import annotations

from airflow.sdk import Param

from airflow_cloud_paas import ToscaDag, packaged_template
from airflow_cloud_paas.operators.training import CloudPaaSEvaluateModelOperator

with ToscaDag(
    packaged_template("training_job"),
    dag_id="deepaas_train_job",
    schedule=None,
    catchup=False,
    deferrable=True,  # the deploy tasks wait in the triggerer while the job trains
    tags=["cloud-paas", "deepaas", "training"],
    params={"min_accuracy": Param(0.8, type="number", minimum=0, maximum=1,
                                  description="the held-back accuracy under which the run fails")},
) as dag:
    evaluate = CloudPaaSEvaluateModelOperator(task_id="evaluate", model_dir=dag.tosca.output("model_dir"),
                                              dataset="{{ params.dataset }}",
                                              min_accuracy="{{ params.min_accuracy }}")
    dag.tosca.wrap(evaluate)
