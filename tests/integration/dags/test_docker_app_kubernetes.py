"""The portal's "Execute your Docker image" DAG on the kubernetes backend, run for real with dag.test().

No Kubernetes API server can run here: the backend talks, through the ``kubernetes_default`` connection and the
cncf-kubernetes hook, to kmock's emulator (tests/unit/backends/kubernetes_fixtures.py). The emulator runs no
controllers, so a thread of the test stands in for the deployment controller and marks the Deployment ready.
"""

from __future__ import annotations

import json
import re
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from unit.backends.kubernetes_fixtures import KubernetesApiEmulator
from waiting import until

from airflow_cloud_paas.backends.base import TAG_DEPLOYMENT
from airflow_cloud_paas.store import DeploymentStore

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]
NAMESPACE = "cloud-paas"
DAG_ID = "cloud_paas_docker_app_kubernetes"
# the kinds of object the backend makes for one container with a data volume and a published port
KINDS = ("deployments", "services", "persistentvolumeclaims", "configmaps", "jobs")


@pytest.fixture
def api(monkeypatch) -> Iterator[KubernetesApiEmulator]:
    """Start the emulated API server; point the backend's connection (``kubernetes_default``) at it."""
    emulator = KubernetesApiEmulator().start()
    try:
        # what an operator puts in the connection: the kubeconfig, whose context names the namespace
        monkeypatch.setenv("AIRFLOW_CONN_KUBERNETES_DEFAULT", json.dumps(
            {"conn_type": "kubernetes", "extra": {"kube_config": json.dumps(emulator.kubeconfig(NAMESPACE))}}))
        yield emulator
    finally:
        emulator.stop()


def _dags(path: Path) -> dict:
    """Return the DAGs of one file of dags/, written to the metadata DB as the DAG processor would.

    dag.test() runs only a DAG the DB knows; it syncs the configured DAGs folder (tests/dags), not dags/.
    """
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import DagBag, sync_bag_to_db

    DagBundlesManager().sync_bundles_to_db()
    bag = DagBag(dag_folder=str(path))
    assert bag.import_errors == {}, bag.import_errors
    sync_bag_to_db(bag, "dags-folder", None)
    return bag.dags


def _mine(api: KubernetesApiEmulator, plural: str, deployment_id: str) -> list[dict]:
    return [o for o in api.objects(plural) if (o["metadata"].get("labels") or {}).get(TAG_DEPLOYMENT) == deployment_id]


def _states(run) -> dict[str, str]:
    return {ti.task_id: ti.state for ti in run.get_task_instances()}


def test_docker_app_runs_on_kubernetes_and_is_deleted(airflow_db, store_url, api):
    deployment_id = f"rstudio-{uuid.uuid4().hex[:8]}"
    app_dag = _dags(REPO / "dags" / "cloud_paas_docker_app.py")[DAG_ID]
    delete_dag = _dags(REPO / "dags" / "cloud_paas_delete_deployment.py")["cloud_paas_delete_deployment"]

    # stand-in for the deployment controller (none runs on the emulator): once the backend has made the
    # Deployment, write the status a controller would once its one pod is ready
    failures: list[BaseException] = []

    def deployment_controller() -> None:
        try:
            (made,) = until("the Deployment to be made", lambda: _mine(api, "deployments", deployment_id), 120, 0.2)
            api.set_status(made["metadata"]["namespace"], made["metadata"]["name"],
                           {"replicas": 1, "readyReplicas": 1, "availableReplicas": 1, "observedGeneration": 1})
        except BaseException as err:  # handed to the test thread
            failures.append(err)

    controller = threading.Thread(target=deployment_controller, name="deployment-controller-stand-in", daemon=True)
    controller.start()
    # the portal form's fields: job identifier, CPUs, memory, image, container path for persistent data
    run = app_dag.test(run_conf={"deployment_id": deployment_id, "cpus": 2, "memory": "1 GB",
                                 "image": "rocker/rstudio", "data_path": "/home/rstudio"})
    controller.join(30)
    assert not failures and not controller.is_alive(), failures
    assert run.state == "success", _states(run)

    store = DeploymentStore(store_url)
    record = store.get(deployment_id)
    assert record.status == "CREATE_COMPLETE" and record.backend == "kubernetes"
    host, _, port = record.outputs["endpoint"].rpartition(":")
    assert re.fullmatch(r"[a-z0-9.-]+", host) and port == "80", record.outputs

    (deployment,) = _mine(api, "deployments", deployment_id)
    assert deployment["metadata"]["namespace"] == NAMESPACE  # the connection's kubeconfig context's namespace
    assert host == f"{deployment['metadata']['name']}.{NAMESPACE}.svc"  # the Service's DNS name
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == "rocker/rstudio"
    assert container["resources"]["limits"] == {"cpu": "2000m", "memory": "1024Mi"}
    (mount,) = container["volumeMounts"]
    assert mount["mountPath"] == "/home/rstudio"
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    (claim,) = _mine(api, "persistentvolumeclaims", deployment_id)
    assert volume["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    (service,) = _mine(api, "services", deployment_id)
    assert service["metadata"]["name"] == deployment["metadata"]["name"]
    assert [p["port"] for p in service["spec"]["ports"]] == [80]
    (resource,) = record.resources
    assert resource.state == "RUNNING" and resource.resource_id == f"{NAMESPACE}/{deployment['metadata']['name']}"

    run = delete_dag.test(run_conf={"deployment_id": deployment_id})
    assert run.state == "success", _states(run)
    record = store.get(deployment_id)
    assert record.status == "DELETE_COMPLETE" and record.resources == ()
    for plural in KINDS:
        assert _mine(api, plural, deployment_id) == [], f"{plural} left behind"
