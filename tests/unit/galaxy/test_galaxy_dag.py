"""The packaged galaxy_workflow DAG parses (no Galaxy needed), deploys, waits, runs and tears down in order."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[3]


def _dag():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(REPO / "dags" / "galaxy_workflow.py"))
    assert bag.import_errors == {}, bag.import_errors
    return bag.dags["galaxy_workflow"]


def test_the_dag_deploys_galaxy_runs_the_workflow_and_tears_down() -> None:
    dag = _dag()
    tasks = {t.task_id: t for t in dag.tasks}
    chain = ["deployment.outputs", "wait_for_api", "install_flavour", "upload_data", "run_workflow",
             "download_results"]
    for before, after in zip(chain, chain[1:], strict=False):
        assert before in tasks[after].upstream_task_ids, (before, after)
    assert tasks["deployment.deploy_galaxy"].is_setup and tasks["deployment.delete_galaxy"].is_teardown
    assert "download_results" in tasks["deployment.delete_galaxy"].upstream_task_ids
    assert tasks["wait_for_api"].deferrable and tasks["run_workflow"].deferrable
    assert [a.uri for a in tasks["download_results"].outlets] == ["galaxy://galaxy_default/upper",
                                                                 "galaxy://galaxy_default/line_count"]
    assert "cloud-paas" in dag.tags


def test_the_admin_key_is_a_connection_reference_and_the_run_can_keep_galaxy() -> None:
    params = _dag().params
    assert params["admin_api_key"] == "conn://galaxy_default/password"
    assert params["flavor"] == "cloud-paas-text"
    assert params["keep_deployment"] is False


def test_the_workflow_uses_only_the_flavours_tools() -> None:
    import importlib.util

    from airflow_cloud_paas.services.galaxy import flavours
    from airflow_cloud_paas.services.galaxy.client import workflow_tool_ids

    spec = importlib.util.spec_from_file_location("galaxy_workflow_dag", REPO / "dags" / "galaxy_workflow.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    tools = workflow_tool_ids(module.WORKFLOW)
    assert tools == {"cloud_paas_upper", "cloud_paas_line_count"}
    assert tools <= set(flavours.load("cloud-paas-text").tool_ids)
