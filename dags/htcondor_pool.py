"""Deploy an HTCondor pool on VMs (DODAS-style) and keep it; scale it with the elastic-scaling DAGs.

The pool's secrets never pass through the run's conf: they are read at run time from the pool's own
``htcondor_<deployment_id>`` connection, made beforehand with
``cloud-paas condor-credentials <deployment_id>`` (Airflow 3 tasks cannot write connections).
"""

from __future__ import annotations

from airflow.sdk import Param

from airflow_cloud_paas import ToscaDag, packaged_template

# [START howto_dag_cloud_paas_htcondor_pool]
with ToscaDag(
    packaged_template("htcondor_pool"),
    dag_id="htcondor_pool",
    schedule=None,
    catchup=False,
    teardown=False,
    params={
        "pool_password": Param("conn://htcondor_{deployment_id}/password", type="string",
                               description="a reference to the pool password (never the password itself)"),
        "execute_secret": Param("conn://htcondor_{deployment_id}/extra.execute_token", type="string",
                                description="a reference to what execute nodes hold (their IDTOKEN)"),
    },
) as dag:
    pass
# [END howto_dag_cloud_paas_htcondor_pool]
