"""DAGs run for real through Airflow's dag.test(): local backend, real processes, real store."""

from __future__ import annotations

import json
import os
import uuid

import psutil
import pytest
import requests

pytestmark = pytest.mark.integration


def _bag():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
    assert bag.import_errors == {}, bag.import_errors
    return bag


def _store(store_url):
    from airflow_cloud_paas.store import DeploymentStore

    return DeploymentStore(store_url)


def _processes_under(path) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline", "cwd"]):
        try:
            text = " ".join(proc.info["cmdline"] or []) + " " + (proc.info["cwd"] or "")
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if str(path) in text:
            found.append(proc)
    return found


def _states(dag_run) -> dict[str, str]:
    return {ti.task_id: ti.state for ti in dag_run.get_task_instances()}


@pytest.fixture
def work_root(airflow_home):
    return airflow_home / "cloud_paas" / "work"


def test_spark_cluster_dag_deploys_runs_scales_and_tears_down(airflow_db, store_url, work_root):
    dag = _bag().dags["spark_cluster"]
    deployment_id = f"spark-{uuid.uuid4().hex[:8]}"
    run = dag.test(run_conf={"deployment_id": deployment_id, "worker_count": 1})
    states = _states(run)
    assert run.state == "success", states
    assert all(state == "success" for state in states.values()), states

    record = _store(store_url).get(deployment_id)
    assert record.status == "DELETE_COMPLETE"
    assert record.outputs["spark_master_url"].startswith("spark://127.0.0.1:")
    history = [(e.kind, e.message) for e in record.events]
    statuses = [m for k, m in history if k == "status"] or [json.dumps(e.data) for e in record.events]
    text = " ".join(map(str, history)) + " ".join(statuses)
    for status in ("CREATE_IN_PROGRESS", "CREATE_COMPLETE", "UPDATE_IN_PROGRESS", "UPDATE_COMPLETE",
                   "DELETE_IN_PROGRESS", "DELETE_COMPLETE"):
        assert status in text, (status, history)
    assert any(k == "scaled" and m.endswith("-> 3") for k, m in history), history
    assert any(k == "scaled" and m.endswith("-> 1") for k, m in history), history
    assert not _processes_under(work_root / deployment_id), "teardown left processes behind"
    assert not (work_root / deployment_id).exists() or not any((work_root / deployment_id).rglob("resource.json"))


def test_kept_deployment_is_scaled_and_deleted_by_the_cli_dags(airflow_db, store_url, work_root):
    bag = _bag()
    deployment_id = f"svc-{uuid.uuid4().hex[:8]}"
    run = bag.dags["spark_cluster_service"].test(run_conf={"deployment_id": deployment_id, "worker_count": 2})
    assert run.state == "success", _states(run)
    store = _store(store_url)
    record = store.get(deployment_id)
    assert record.status == "CREATE_COMPLETE"
    webui = record.outputs["spark_webui_url"]
    alive = [w for w in requests.get(f"{webui}/json/", timeout=10).json()["workers"] if w["state"] == "ALIVE"]
    assert len(alive) == 2
    assert len([r for r in record.resources if r.node_name == "spark_worker"]) == 2
    assert _processes_under(work_root / deployment_id), "the kept deployment's processes should run"

    run = bag.dags["cloud_paas_scale_deployment"].test(
        run_conf={"deployment_id": deployment_id, "node": "spark_worker", "count": 1}
    )
    assert run.state == "success", _states(run)
    record = store.get(deployment_id)
    assert record.status == "UPDATE_COMPLETE"
    alive = [w for w in requests.get(f"{webui}/json/", timeout=10).json()["workers"] if w["state"] == "ALIVE"]
    assert len(alive) == 1
    assert len([r for r in record.resources if r.node_name == "spark_worker"]) == 1

    run = bag.dags["cloud_paas_delete_deployment"].test(run_conf={"deployment_id": deployment_id})
    assert run.state == "success", _states(run)
    record = store.get(deployment_id)
    assert record.status == "DELETE_COMPLETE"
    assert record.resources == ()
    assert not _processes_under(work_root / deployment_id)


def test_teardown_runs_when_the_work_fails(airflow_db, store_url, work_root):
    deployment_id = f"fail-{uuid.uuid4().hex[:8]}"
    run = _bag().dags["test_failing_work"].test(run_conf={"deployment_id": deployment_id, "host_count": 3})
    states = _states(run)
    assert run.state == "failed"
    assert states["work_fails"] == "failed"
    assert states["deployment.delete"] == "success"
    record = _store(store_url).get(deployment_id)
    assert record.status == "DELETE_COMPLETE"
    assert record.outputs == {"head_address": "127.0.0.1"}
    assert record.resources == ()


def test_keep_deployment_skips_teardown(airflow_db, store_url, work_root):
    deployment_id = f"keep-{uuid.uuid4().hex[:8]}"
    run = _bag().dags["test_failing_work"].test(
        run_conf={"deployment_id": deployment_id, "host_count": 2, "keep_deployment": True}
    )
    assert run.state == "failed"
    record = _store(store_url).get(deployment_id)
    assert record.status == "CREATE_COMPLETE"
    assert sorted((r.node_name, r.index) for r in record.resources) == [("head", 0), ("workers", 0), ("workers", 1)]


def test_bad_input_fails_before_any_resource(airflow_db, store_url, work_root):
    deployment_id = f"bad-{uuid.uuid4().hex[:8]}"
    dag = _bag().dags["test_failing_work"]
    with pytest.raises(Exception, match="host_count"):
        dag.test(run_conf={"deployment_id": deployment_id, "host_count": 9})  # in_range [0, 5]
    assert not (work_root / deployment_id).exists()


def test_deployment_sensor_in_a_plain_dag(airflow_db, store_url):
    deployment_id = f"sensor-{uuid.uuid4().hex[:8]}"
    run = _bag().dags["test_deferrable_sensor"].test(run_conf={"deployment_id": deployment_id, "host_count": 1})
    states = _states(run)
    assert run.state == "success", states
    assert states["wait_complete"] == "success"
    assert _store(store_url).get(deployment_id).status == "DELETE_COMPLETE"


def test_sensor_defers_to_the_trigger_until_another_process_completes(airflow_db, store_url, caplog):
    import logging
    import threading
    import time

    store = _store(store_url)
    deployment_id = f"defer-{uuid.uuid4().hex[:8]}"
    store.create_deployment(deployment_id, "tosca: x", "h", {}, "me", "local")
    store.begin(deployment_id, "CREATE", actor="elsewhere/run")

    # completes 10 s from now: far later than the sensor's first poke (a few seconds into dag.test),
    # which therefore sees CREATE_IN_PROGRESS and defers; only the trigger can see the change
    threading.Timer(10.0, lambda: store.finish(deployment_id, "CREATE", ok=True)).start()
    started = time.monotonic()
    caplog.set_level(logging.INFO)
    run = _bag().dags["test_sensor_defers"].test(run_conf={"deployment_id": deployment_id})
    elapsed = time.monotonic() - started
    (ti,) = run.get_task_instances()
    assert run.state == "success" and ti.state == "success"
    assert elapsed >= 5.0  # it waited for the change, in the trigger
    assert "running trigger in line" in caplog.text, "the sensor deferred and its trigger ran"


def test_tosca_dag_falls_back_to_the_next_provider(airflow_db, store_url, work_root):
    deployment_id = f"fallback-{uuid.uuid4().hex[:8]}"
    run = _bag().dags["test_provider_fallback"].test(run_conf={"deployment_id": deployment_id, "host_count": 2})
    states = _states(run)
    assert run.state == "success", states
    record = _store(store_url).get(deployment_id)
    assert record.backend == "local:site-b"
    assert record.status == "DELETE_COMPLETE"  # the teardown found the provider it went to
    events = " ".join(e.message for e in record.events)
    assert "openstack:no_such_connection" in events or any(
        "openstack" in str(e.data) for e in record.events
    ), events


def test_the_fallback_path_resolves_connection_inputs_as_the_normal_path_does(airflow_db, store_url, monkeypatch):
    """With providers=[...], a conn:// input is resolved before the attempt; the record keeps the reference.

    The input is a size with a constraint that only the connection's value meets (the literal reference is no
    size at all), so the run succeeds only if the value was read; the output built from it is masked as secret.
    """
    monkeypatch.setenv("AIRFLOW_CONN_SITE_SETTINGS", json.dumps({"conn_type": "generic", "host": "2 GB"}))
    deployment_id = f"fbconn-{uuid.uuid4().hex[:8]}"
    run = _bag().dags["test_fallback_conn_input"].test(run_conf={
        "deployment_id": deployment_id, "cache_size": "conn://site_settings/host"})
    assert run.state == "success", _states(run)
    record = _store(store_url).get(deployment_id)
    assert record.backend == "local:site-b" and record.status == "DELETE_COMPLETE"
    assert record.inputs["cache_size"] == "conn://site_settings/host"  # the record keeps the reference
    assert record.outputs["cache"] == "***"  # built from a connection's value: a secret by flow


def test_deferrable_node_tasks_request_then_record(airflow_db, store_url):
    deployment_id = f"defnodes-{uuid.uuid4().hex[:8]}"
    dag = _bag().dags["test_deferrable_nodes"]
    assert all(t.deferrable for t in dag.tasks if t.task_id.startswith("deployment.deploy_"))
    run = dag.test(run_conf={"deployment_id": deployment_id, "host_count": 2})
    assert run.state == "success", _states(run)
    record = _store(store_url).get(deployment_id)
    assert record.status == "DELETE_COMPLETE"
    created = [e for e in record.events if e.kind == "node_created"]
    assert {e.data["node"] for e in created} == {"head", "workers"} and all(e.data["deferred"] for e in created)


def test_a_compact_dag_deploys_and_deletes_in_one_task_each(airflow_db, store_url):
    """node_tasks=False: two task processes make and delete the whole deployment, outputs still in XCom."""
    deployment_id = f"compact-{uuid.uuid4().hex[:8]}"
    dag = _bag().dags["test_compact_deployment"]
    assert sorted(t.task_id for t in dag.tasks) == ["deployment.create", "deployment.delete", "use"]
    run = dag.test(run_conf={"deployment_id": deployment_id, "host_count": 2})
    states = _states(run)
    assert run.state == "success", states
    record = _store(store_url).get(deployment_id)
    assert record.status == "DELETE_COMPLETE" and record.resources == ()
    created = {e.data["node"]: e.data["count"] for e in record.events if e.kind == "node_created"}
    deleted = [e.data["node"] for e in record.events if e.kind == "node_deleted"]
    assert created == {"head": 1, "workers": 2}
    assert deleted.index("workers") < deleted.index("head")  # dependents first, as the per-node tasks do
    used = run.get_task_instance("use").xcom_pull(task_ids="use")
    assert used and used == record.outputs["head_address"]


def test_the_task_shape_follows_node_tasks_and_a_compact_dag_cannot_defer():
    from airflow_cloud_paas import ToscaDag

    template = os.path.join(os.environ["AIRFLOW__CORE__DAGS_FOLDER"], "templates", "hosts_only.yaml")
    per_node = {"deployment.create", "deployment.deploy_head", "deployment.deploy_workers", "deployment.outputs",
                "deployment.delete_workers", "deployment.delete_head", "deployment.delete"}
    shapes = {
        (): per_node,
        (("node_tasks", False),): {"deployment.create", "deployment.delete"},
        (("providers", ("local",)),): {"deployment.create", "deployment.delete_workers", "deployment.delete_head",
                                       "deployment.delete"},
        (("providers", ("local",)), ("node_tasks", False)): {"deployment.create", "deployment.delete"},
    }
    for options, tasks in shapes.items():
        dag = ToscaDag(template, dag_id="shape", schedule=None, **dict(options))
        assert {t.task_id for t in dag.tasks} == tasks, options
    with pytest.raises(ValueError, match="deferrable=True needs node_tasks=True"):
        ToscaDag(template, dag_id="compact_deferred", schedule=None, node_tasks=False, deferrable=True)
    with pytest.raises(ValueError, match="node_converters and node_delete_converters need node_tasks=True"):
        ToscaDag(template, dag_id="compact_converted", schedule=None, node_tasks=False,
                 node_converters={"tosca.nodes.Compute": lambda node, task_id, common: None})
