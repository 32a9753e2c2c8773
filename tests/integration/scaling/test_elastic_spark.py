"""The scheduled elastic-scaling DAG (dag.test) follows a real queue of Spark applications on a real cluster.

The cluster is the packaged elastic Spark template on the local backend (real master and worker JVMs).
The queue-driven DAG starts first: its sensor defers. Two applications that each hold one core for a
while are then submitted to the one-worker cluster: one runs, one waits; the trigger sees it, and the
scaling round adds a worker, where the waiting one starts. Once both are done, a round of the scheduled
DAG retires the idle workers down to the policy's minimum.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from pathlib import Path

import psutil
import pytest
import requests
from waiting import until

pytestmark = pytest.mark.integration

APP = """
import sys, time
from pyspark.sql import SparkSession
seconds = float(sys.argv[2])  # read here: the lambda runs in the executor, with its own argv
spark = SparkSession.builder.appName(sys.argv[1]).getOrCreate()
spark.sparkContext.parallelize([0], 1).map(lambda x: time.sleep(seconds) or x).collect()
spark.stop()
"""


def _apps(webui: str) -> list[dict]:
    return requests.get(f"{webui}/json/", timeout=10).json().get("activeapps", [])


def _alive(webui: str) -> list[dict]:
    return [w for w in requests.get(f"{webui}/json/", timeout=10).json()["workers"] if w["state"] == "ALIVE"]


def test_scheduled_scaling_follows_a_real_spark_queue(airflow_db, store_url, airflow_home, tmp_path: Path):
    from airflow.dag_processing.dagbag import DagBag

    from airflow_cloud_paas import packaged_template
    from airflow_cloud_paas.backends.local import LocalBackend
    from airflow_cloud_paas.deployer import Deployer
    from airflow_cloud_paas.request import DeploymentRequest
    from airflow_cloud_paas.services.spark.client import submit
    from airflow_cloud_paas.store import DeploymentStore
    from airflow_cloud_paas.tosca import load_topology

    store = DeploymentStore(store_url)
    work_root = airflow_home / "cloud_paas" / "work"
    backend = LocalBackend(work_root)
    deployment = f"elastic-{uuid.uuid4().hex[:8]}"
    inputs = {"worker_count": 1, "scaling_policy": "clues", "idle_time_s": 0}
    Deployer(DeploymentRequest.build(load_topology(packaged_template("spark_elastic_cluster.yaml")), deployment,
                                     inputs, actor="test/setup"), store, backend).create_all()
    app = tmp_path / "hold_a_core.py"
    app.write_text(APP)
    results, threads = {}, []
    try:
        outputs = store.get(deployment).outputs
        webui, master = outputs["spark_webui_url"], outputs["spark_master_url"]
        assert len(_alive(webui)) == 1
        def submit_later():
            time.sleep(5)  # after the sensor has deferred: the trigger must notice the queue
            for name in ("first", "second"):
                def run(name=name):
                    results[name] = submit(master, app, [name, "20"], total_executor_cores=1, timeout=400)
                threads.append(threading.Thread(target=run, daemon=True))
                threads[-1].start()

        starter = threading.Thread(target=submit_later, daemon=True)
        starter.start()
        bag = DagBag(dag_folder=os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
        assert bag.import_errors == {}, bag.import_errors

        # the queue-driven path: the deferrable sensor waits in the trigger until an application waits
        run = bag.dags["cloud_paas_elastic_scaling_on_demand"].test()
        states = {ti.task_id: ti.state for ti in run.get_task_instances()}
        assert run.state == "success", states
        starter.join()
        assert len(_alive(webui)) == 2
        until("the waiting application to get the new worker's core",
               lambda: [a["state"] for a in _apps(webui)] in (["RUNNING", "RUNNING"], ["RUNNING"], []))
        decisions = [e for e in store.events(deployment) if e.kind == "scale_decision"]
        assert decisions[-1].data["applied"]["added"] == [1], decisions[-1].data
        assert decisions[-1].data["snapshot"]["queued_jobs"] == 1
        assert any("queue" in r or "demand" in r or "queued" in r for r in decisions[-1].data["reasons"]), \
            decisions[-1].data["reasons"]
        assert store.get(deployment).status == "UPDATE_COMPLETE"

        for thread in threads:
            thread.join(timeout=400)
        assert sorted(results) == ["first", "second"]
        until("both applications to finish", lambda: _apps(webui) == [])

        # the scheduled path retires what the queue no longer needs
        run = bag.dags["cloud_paas_elastic_scaling"].test()
        assert run.state == "success", {ti.task_id: ti.state for ti in run.get_task_instances()}
        decisions = [e for e in store.events(deployment) if e.kind == "scale_decision"]
        retired = decisions[-1].data["applied"]["retired"]
        assert len(retired) == 1, decisions[-1].data  # two idle workers, min_nodes 1: one goes
        until("the retired worker to leave the master", lambda: len(_alive(webui)) == 1, timeout=60)
        assert [r.index for r in backend.describe(deployment, "spark_worker")] == [1 - retired[0]]
    finally:
        for proc in psutil.process_iter(["cmdline"]):  # drivers of a failed run: their own session
            if str(app) in " ".join(proc.info["cmdline"] or []):
                proc.kill()
        backend.delete(deployment)
    leftover = [p for p in psutil.process_iter(["cwd"]) if str(work_root / deployment) in (p.info["cwd"] or "")]
    assert not leftover
