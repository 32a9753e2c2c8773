"""Deploy Galaxy on an elastic SLURM cluster (Laniakea's galaxy_elastic_cluster) and keep it running.

Every Galaxy job is a SLURM job (sbatch through Galaxy's CLI runner); the elastic-scaling DAGs add SLURM workers
while Galaxy's jobs pend and retire them once idle. The admin's API key: as in the ``galaxy`` DAG, a
``conn://galaxy_default/password`` reference. Delete it with ``cloud-paas delete``: no Galaxy, slurmctld, slurmd
or slurmstepd is left.
"""

from __future__ import annotations

from airflow.sdk import Param

from airflow_cloud_paas import ToscaDag, packaged_template

# [START howto_dag_cloud_paas_galaxy_slurm_cluster]
with ToscaDag(
    packaged_template("galaxy_slurm_cluster"),
    dag_id="galaxy_slurm_cluster",
    schedule=None,
    catchup=False,
    teardown=False,
    params={
        "admin_api_key": Param("conn://galaxy_default/password", type="string",
                               description="a reference to the admin's API key (never the key itself)"),
    },
    tags=["cloud-paas", "tosca", "galaxy", "slurm"],
) as dag:
    pass
# [END howto_dag_cloud_paas_galaxy_slurm_cluster]
