"""Galaxy on demand (Laniakea): deploy a Galaxy, install a tool flavour, run a workflow on uploaded data.

The run deploys ``templates/galaxy.yaml``, waits (deferred) until the Galaxy's API answers with the admin key,
installs the flavour (param ``flavor``, default ``cloud-paas-text``; already there after the deployment, so a
no-op unless another is asked for), uploads the ``text`` param, runs a two-step workflow on it (upper case, then
line count) and downloads both outputs into ``<results_dir>/<run id>``. Each output is an Asset
(``galaxy://galaxy_default/upper``, ``galaxy://galaxy_default/line_count``): a DAG with
``schedule=[galaxy_result_asset("line_count")]`` runs when a new result arrives, and reads the file's path in
``triggering_asset_events``' ``extra``. The deployment is torn down at the end, even when a step fails, unless
the run's ``keep_deployment`` param is set.

The admin's API key never passes through the run's conf: it is the Password of the ``galaxy_default``
connection (type ``galaxy``), read at run time (``admin_api_key`` is the reference
``conn://galaxy_default/password``); the Galaxy tasks use the same connection, with the deployed Galaxy's URL
(the deployment's ``galaxy_url`` output) in place of its Host.
"""

from __future__ import annotations

from airflow.sdk import Param

from airflow_cloud_paas import ToscaDag, packaged_template
from airflow_cloud_paas.operators.galaxy import (
    CloudPaaSGalaxyDownloadDatasetsOperator,
    CloudPaaSGalaxyInstallFlavourOperator,
    CloudPaaSGalaxyRunWorkflowOperator,
    CloudPaaSGalaxyUploadDatasetsOperator,
)
from airflow_cloud_paas.sensors.galaxy import CloudPaaSGalaxyApiSensor

#: The workflow, in Galaxy's Format2: the text in upper case, then its line count (tools of cloud-paas-text).
WORKFLOW = {
    "class": "GalaxyWorkflow",
    "label": "cloud-paas upper case then count lines",
    "doc": "Turn a text to upper case, then count its lines.",
    "inputs": {"text": {"type": "data", "format": "txt"}},
    "outputs": {
        "upper": {"outputSource": "upper/output"},
        "line_count": {"outputSource": "count/output"},
    },
    "steps": {
        "upper": {"tool_id": "cloud_paas_upper", "in": {"input": "text"}},
        "count": {"tool_id": "cloud_paas_line_count", "in": {"input": "upper/output"}},
    },
}

# [START howto_dag_galaxy_workflow]
with ToscaDag(
    packaged_template("galaxy"),
    dag_id="galaxy_workflow",
    schedule=None,
    catchup=False,
    tags=["cloud-paas", "tosca", "galaxy"],
    params={
        "admin_api_key": Param("conn://galaxy_default/password", type="string",
                               description="a reference to the admin's API key (never the key itself)"),
        "text": Param("hello galaxy\nfrom airflow\n", type="string", description="the text the workflow reads"),
        "results_dir": Param("/tmp/cloud_paas_galaxy_results", type="string",
                             description="where the results are downloaded (one folder per run)"),
    },
) as dag:
    galaxy = dag.tosca
    url = galaxy.output("galaxy_url")
    api = CloudPaaSGalaxyApiSensor(task_id="wait_for_api", galaxy_url=url, require_admin=True, deferrable=True,
                                   poke_interval=5, timeout=600)
    flavour = CloudPaaSGalaxyInstallFlavourOperator(task_id="install_flavour", flavour="{{ params.flavor }}",
                                                    galaxy_url=url)
    # named as the workflow's input, so the upload's datasets are the workflow's inputs as they are
    upload = CloudPaaSGalaxyUploadDatasetsOperator(task_id="upload_data", contents={"text": "{{ params.text }}"},
                                                   file_type="txt", galaxy_url=url)
    run = CloudPaaSGalaxyRunWorkflowOperator(task_id="run_workflow", workflow=WORKFLOW,
                                             inputs=upload.output["datasets"],
                                             history_id=upload.output["history_id"], galaxy_url=url,
                                             deferrable=True, poll_interval=5, timeout=3600)
    download = CloudPaaSGalaxyDownloadDatasetsOperator(task_id="download_results", datasets=run.output,
                                                       names=["upper", "line_count"],
                                                       directory="{{ params.results_dir }}/{{ run_id }}",
                                                       galaxy_url=url)
    api >> flavour >> upload >> run >> download
    galaxy.wrap(api, flavour, upload, run, download)
# [END howto_dag_galaxy_workflow]
