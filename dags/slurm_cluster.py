"""Deploy an elastic SLURM cluster and keep it running; the elastic-scaling DAGs grow and shrink its workers.

Submit work with :class:`~operators.slurm.CloudPaaSSlurmSubmitJobOperator` (a ``slurm`` connection whose
``slurm_conf`` extra is the deployment's ``slurm_conf`` output), or ``sbatch`` with ``SLURM_CONF`` set to it.
Delete it with ``cloud-paas delete`` (the cloud_paas_delete_deployment DAG): no slurmctld, slurmd or
slurmstepd is left.
"""

from __future__ import annotations

from airflow_cloud_paas import ToscaDag, packaged_template

# [START howto_dag_cloud_paas_slurm_cluster]
with ToscaDag(
    packaged_template("slurm_elastic_cluster"),
    dag_id="slurm_cluster",
    schedule=None,
    catchup=False,
    teardown=False,
) as dag:
    pass
# [END howto_dag_cloud_paas_slurm_cluster]
