"""Deploy a Spark standalone cluster and keep it running (what ``cloud-paas deploy`` starts).

Scale it with ``cloud-paas scale`` (the cloud_paas_scale_deployment DAG) and delete it with
``cloud-paas delete`` (the cloud_paas_delete_deployment DAG).
"""

from __future__ import annotations

from airflow_cloud_paas import ToscaDag, packaged_template

with ToscaDag(
    packaged_template("spark_cluster"),
    dag_id="spark_cluster_service",
    schedule=None,
    catchup=False,
    teardown=False,
) as dag:
    pass
