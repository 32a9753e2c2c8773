"""Training on a deployment as Airflow runs it (``dag.test()``): the training job deployed on the local backend, its
deploy task deferred to the triggerer while the job trains, the model gated on held-back data, the deployment
deleted and the model kept.

Real: Airflow's DAG run and its in-line trigger, the local backend's job process training on the CPU, the deployment
store, the evaluation.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.integration
pytest.importorskip("torch", reason="pip install torch==2.13.0 (the training extra)")

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def dag(airflow_db: Path) -> Iterator[Any]:
    """Load and register the DAG file as Airflow's DAG processor would."""
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import DagBag, sync_bag_to_db

    DagBundlesManager().sync_bundles_to_db()
    found = DagBag(dag_folder=str(REPO / "tests" / "dags" / "deepaas_train_job.py"))
    assert found.import_errors == {}, found.import_errors
    sync_bag_to_db(found, "dags-folder", None)
    return found.dags["deepaas_train_job"]


def test_the_job_trains_in_the_triggerers_wait_and_its_model_outlives_the_deployment(dag: Any, store_url: str,
                                                                                    tmp_path: Path) -> None:
    from airflow_cloud_paas.store import DeploymentStore

    assert dag.get_task("deployment.deploy_training").deferrable
    store = DeploymentStore(store_url)
    before = {r.id for r in store.list(limit=10_000)}
    run = dag.test(run_conf={"model": "mlp", "max_steps": 60, "checkpoint_every": 20,
                             "output_dir": str(tmp_path / "out"), "min_accuracy": 0.5})
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert run.state == "success", states
    (made_id,) = [r.id for r in store.list(limit=10_000) if r.id not in before]
    record = store.get(made_id)
    assert record.status == "DELETE_COMPLETE"
    (made,) = [e for e in record.events if e.kind == "node_created" and e.data["node"] == "training"]
    assert made.data["deferred"]  # requested, then waited on in the trigger while the job trained
    scored = run.get_task_instance("evaluate").xcom_pull(task_ids="evaluate")
    assert scored["accuracy"] >= 0.5 and scored["samples"] > 300
    assert (tmp_path / "out" / "model" / "model.json").is_file()  # the model outlives the deployment
    assert record.outputs["step"] == 60 and record.outputs["model_dir"] == str(tmp_path / "out" / "model")
