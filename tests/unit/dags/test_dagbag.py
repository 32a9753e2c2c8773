"""Every file in dags/ imports with no errors, and each DAG has what the UI needs."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[3]


def test_dags_folder_imports_without_errors():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(REPO / "dags"))
    assert bag.import_errors == {}, bag.import_errors
    py_files = sorted(p.name for p in (REPO / "dags").glob("*.py"))
    files_with_dags = sorted({Path(d.fileloc).name for d in bag.dags.values()})
    assert files_with_dags == py_files, "every file in dags/ defines at least one DAG"
    for dag in bag.dags.values():
        assert "cloud-paas" in dag.tags, dag.dag_id


def test_spark_dag_has_tosca_params_and_setup_teardown():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(REPO / "dags" / "spark_cluster.py"))
    dag = bag.dags["spark_cluster"]
    params = dag.params
    assert params["worker_count"] == 1
    param = params.get_param("worker_count")
    # bounds under allOf: the trigger form would clamp a top-level minimum/maximum (see input_param)
    assert param.schema["type"] == "integer" and param.schema["allOf"] == [{"minimum": 0, "maximum": 16}]
    assert "Spark workers" in param.description
    assert params["worker_memory"] == "1g" and params.get_param("worker_memory").schema["type"] == "string"
    assert params["keep_deployment"] is False
    tasks = {t.task_id: t for t in dag.tasks}
    assert tasks["deployment.deploy_spark_master"].is_setup
    assert tasks["deployment.delete_spark_master"].is_teardown
    # the worker is deployed after the master it requires, and deleted before it
    assert "deployment.deploy_spark_master" in tasks["deployment.deploy_spark_worker"].upstream_task_ids
    assert "deployment.delete_spark_master" in tasks["deployment.delete_spark_worker"].downstream_task_ids
