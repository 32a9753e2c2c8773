"""Deploy a Galaxy portal (its admin and tool flavour) and keep it running; the Galaxy tasks drive it.

The admin's API key is the Password of a ``galaxy`` connection, passed as the reference
``conn://galaxy_default/password`` (never the key itself, which would sit in the run's conf). Run workflows with
the Galaxy operators (the ``galaxy_workflow`` DAG shows the whole path) or from Galaxy's own UI at the
``galaxy_url`` output. Delete it with ``cloud-paas delete`` (the cloud_paas_delete_deployment DAG).
"""

from __future__ import annotations

from airflow.sdk import Param

from airflow_cloud_paas import ToscaDag, packaged_template

# [START howto_dag_cloud_paas_galaxy]
with ToscaDag(
    packaged_template("galaxy"),
    dag_id="galaxy",
    schedule=None,
    catchup=False,
    teardown=False,
    params={
        "admin_api_key": Param("conn://galaxy_default/password", type="string",
                               description="a reference to the admin's API key (never the key itself)"),
    },
    tags=["cloud-paas", "tosca", "galaxy"],
) as dag:
    pass
# [END howto_dag_cloud_paas_galaxy]
