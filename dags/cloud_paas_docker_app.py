"""Execute your Docker image: the portal's Docker application, on the docker or the kubernetes backend.

One container of the image given (e.g. ``rocker/rstudio``) with the CPUs and memory asked for and a
persistent data volume; its ``endpoint`` output is ``host:port``. The run's ``deployment_id`` param is the
portal form's "job identifier". The deployment stays up: delete it with the cloud_paas_delete_deployment DAG.
"""

from __future__ import annotations

from airflow_cloud_paas import ToscaDag, packaged_template

# [START howto_dag_cloud_paas_docker_app]
with ToscaDag(
    packaged_template("docker_app"),
    dag_id="cloud_paas_docker_app",
    backend="docker",
    schedule=None,
    catchup=False,
    teardown=False,
    tags=["cloud-paas", "tosca", "docker"],
) as docker_dag:
    pass
# [END howto_dag_cloud_paas_docker_app]

with ToscaDag(
    packaged_template("docker_app"),
    dag_id="cloud_paas_docker_app_kubernetes",
    backend="kubernetes",
    schedule=None,
    catchup=False,
    teardown=False,
    tags=["cloud-paas", "tosca", "kubernetes"],
) as kubernetes_dag:
    pass
