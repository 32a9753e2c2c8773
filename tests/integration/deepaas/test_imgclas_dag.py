"""The imgclas cycle as Airflow runs it (``dag.test()``): publish the data, train, evaluate, register, serve on a
real DEEPaaS, smoke-predict, promote; a second run replaces the first's deployment (blue/green); a run whose model
scores under its threshold deploys nothing and leaves the serving one in place.

Everything is real: Airflow's DAG runs, Variables and Asset events in its metadata DB, the training engine on the
CPU, MLflow on its SQLite store under the tests' Airflow home, the local backend's deployment store, and
``deepaas-run`` from DEEPaaS's own virtual environment.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

pytestmark = pytest.mark.integration
pytest.importorskip("torch", reason="pip install torch==2.13.0 (the training extra)")
pytest.importorskip("mlflow", reason="the training extra")

REPO = Path(__file__).resolve().parents[3]
QUICK = {"max_steps": 150, "batch_size": 32, "checkpoint_every": 50, "log_every": 50, "num_threads": 1,
         "device": "cpu"}
SLOT = "cloud_paas_slot_deepaas-imgclas"


@pytest.fixture(scope="module")
def bag(airflow_db: Path) -> Iterator[Any]:
    """Load and register the DAG file as Airflow's DAG processor would."""
    from airflow_cloud_paas.services.training.serving import deepaas_run

    if deepaas_run() is None:
        pytest.skip("DEEPaaS is not installed: run `make deepaas-runtime` (or set CLOUD_PAAS_DEEPAAS_VENV)")
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import DagBag, sync_bag_to_db

    DagBundlesManager().sync_bundles_to_db()
    found = DagBag(dag_folder=str(REPO / "tests" / "dags" / "deepaas_imgclas.py"))
    assert found.import_errors == {}, found.import_errors
    sync_bag_to_db(found, "dags-folder", None)
    yield found
    # the session's metadata DB is shared (an Airflow started by a later test reads it): leave no asset-triggered
    # run queued and the DAGs paused, or that Airflow's scheduler would run the cycle and leave a model server up
    from airflow.models.asset import AssetDagRunQueue
    from airflow.models.dag import DagModel
    from airflow.utils.session import create_session

    with create_session() as session:
        session.query(AssetDagRunQueue).filter(AssetDagRunQueue.target_dag_id.in_(list(found.dags))).delete(
            synchronize_session=False)
        session.query(DagModel).filter(DagModel.dag_id.in_(list(found.dags))).update(
            {DagModel.is_paused: True}, synchronize_session=False)


@pytest.fixture
def sweep(store_url: str, airflow_home: Path) -> Any:
    """Delete, at the end, every deployment the DAG's runs left (passed or failed): no model server outlives it."""
    from airflow_cloud_paas.backends.local import LocalBackend
    from airflow_cloud_paas.deployer import sweep_delete
    from airflow_cloud_paas.store import DeploymentStore

    store = DeploymentStore(store_url)
    before = {r.id for r in store.list(limit=10_000)}
    yield store
    for record in store.list(limit=10_000):
        if record.id not in before and record.status != "DELETE_COMPLETE":
            sweep_delete(store, LocalBackend(airflow_home / "cloud_paas" / "work"), record.id, actor="test")


def _states(run: Any) -> dict[str, str]:
    return {ti.task_id: ti.state for ti in run.get_task_instances()}


def _xcom(run: Any, task_id: str) -> Any:
    return run.get_task_instance(task_id).xcom_pull(task_ids=task_id)


def test_the_cycle_trains_serves_promotes_and_replaces_the_previous_model(bag: Any, sweep: Any) -> None:
    from airflow.models import Variable
    from airflow.models.asset import AssetEvent
    from airflow.utils.session import create_session

    from airflow_cloud_paas.operators.training import model_asset

    store = sweep
    published = bag.dags["imgclas_publish_data"].test()
    assert published.state == "success"
    data = Path(_xcom(published, "publish_digits")["path"])
    assert data.is_file()

    dag = bag.dags["deepaas_imgclas"]
    conf = {"training_args": QUICK, "min_accuracy": 0.8}
    first = dag.test(run_conf=conf)
    assert first.state == "success", _states(first)
    promoted = _xcom(first, "promote")
    assert promoted["retired"] is None and Variable.get(SLOT) == promoted["current"]
    assert _xcom(first, "deployment.delete") == "KEPT"  # the run's teardown keeps what it promoted
    record = store.get(promoted["current"])
    assert record.status == "CREATE_COMPLETE"
    url = record.outputs["deepaas_url"]
    assert requests.get(f"{url}/v2/models/", timeout=10).status_code == 200
    registered = _xcom(first, "register")
    assert registered["data_uri"] == data.resolve().as_uri() and registered["version"]
    assert _xcom(first, "check_answer") == _xcom(first, "sample_digit")["label"]
    with create_session() as session:
        uris = {e.asset.uri for e in session.query(AssetEvent).all()}
    assert {model_asset("imgclas").uri, "cloud-paas-data://imgclas/training"} <= uris
    assert _xcom(first, "train")["data_uri"] == data.resolve().as_uri()  # the latest data event's file

    # a second run (say, new data): its deployment takes over, the first one is deleted once the new one answered
    second = dag.test(run_conf=conf)
    assert second.state == "success", _states(second)
    replaced = _xcom(second, "promote")
    assert replaced["retired"] == promoted["current"] and Variable.get(SLOT) == replaced["current"]
    assert store.get(promoted["current"]).status == "DELETE_COMPLETE"
    assert int(_xcom(second, "register")["version"]) == int(registered["version"]) + 1
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{url}/v2/models/", timeout=5)  # the replaced server is gone

    # a model under the threshold: the run fails at the gate, nothing is deployed, the serving one stays
    failed = dag.test(run_conf={**conf, "training_args": {**QUICK, "max_steps": 2}, "min_accuracy": 0.99})
    states = _states(failed)
    assert failed.state == "failed" and states["evaluate"] == "failed", states
    assert states["register"] != "success" and states["deployment.create"] != "success", states
    assert Variable.get(SLOT) == replaced["current"]
    assert store.get(replaced["current"]).status == "CREATE_COMPLETE"
