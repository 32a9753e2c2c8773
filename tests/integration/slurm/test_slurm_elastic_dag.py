"""An elastic SLURM cluster deployed, scaled and deleted by Airflow's DAGs (dag.test()), with real daemons and jobs.

The packaged ``slurm_elastic_cluster`` template deploys on the local backend through the ``slurm_cluster`` DAG:
munged + slurmctld in the controller's instance, one slurmd per worker instance. 20 short jobs are submitted while
it has one worker; a round of the scheduled ``cloud_paas_elastic_scaling`` DAG adds workers, every job finishes,
then the next round drains and removes the idle workers down to the minimum while a worker running a long job is
kept. Deleting the deployment (``cloud_paas_delete_deployment``) leaves no munged, slurmctld, slurmd or slurmstepd.
The INDIGO elastic-cluster examples with SLURM (LRMS FrontEnd/WorkerNode.Slurm) deploy on the same drivers, and
their ElasticCluster (CLUES) node makes the worker node a ``clues`` target of the elastic engine.
"""

from __future__ import annotations

import os
import socket
import uuid
from pathlib import Path

import pytest
from slurm_processes import cluster_processes
from waiting import until

from airflow_cloud_paas.services.slurm.client import SlurmClient
from airflow_cloud_paas.services.slurm.cluster import LocalSlurmCluster
from airflow_cloud_paas.services.slurm.errors import SlurmClusterError

pytestmark = pytest.mark.integration



@pytest.fixture(autouse=True)
def _needs_slurm() -> None:
    try:
        LocalSlurmCluster.executables()
    except SlurmClusterError as err:
        pytest.skip(str(err))


def _bag():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
    assert bag.import_errors == {}, bag.import_errors
    return bag


def _decisions(store, deployment: str) -> list:
    return [e for e in store.events(deployment) if e.kind == "scale_decision"]


def _states(run) -> dict[str, str]:
    return {ti.task_id: ti.state for ti in run.get_task_instances()}


def _delete(deployer) -> None:
    """Delete a deployment as the delete DAG does: DELETE_COMPLETE, so later scaling rounds (of other tests) skip it."""
    deployer.begin_delete()
    deployer.delete_all()
    deployer.complete_delete()


def _scaled(run, store, deployment: str, before: int) -> dict:
    """Return the decision a round of the scaling DAG applied to ``deployment``.

    The DAG scales every elastic deployment of the store, one mapped task each: a target of another test (a Spark
    cluster whose master is gone) may fail its own task; the round of this deployment must not have.
    """
    targets = [t for t in run.get_task_instances() if t.task_id == "elastic_targets"]
    assert [t.state for t in targets] == ["success"], _states(run)
    decisions = _decisions(store, deployment)
    assert len(decisions) == before + 1, "this run's round wrote no decision for the deployment"
    return decisions[-1].data


def test_dag_deploys_scales_with_20_jobs_keeps_the_busy_worker_and_deletes_everything(
        airflow_db, store_url, airflow_home, tmp_path: Path) -> None:
    from airflow_cloud_paas.backends.local import LocalBackend
    from airflow_cloud_paas.store import DeploymentStore

    store = DeploymentStore(store_url)
    work_root = airflow_home / "cloud_paas" / "work"
    backend = LocalBackend(work_root)
    deployment = f"slurm-{uuid.uuid4().hex[:8]}"
    bag = _bag()
    try:
        run = bag.dags["slurm_cluster"].test(run_conf={
            "deployment_id": deployment, "worker_count": 1, "max_workers": 4, "scaling_policy": "clues",
            "min_workers": 1, "idle_time_s": 0, "max_time": "10"})
        assert run.state == "success", _states(run)
        record = store.get(deployment)
        assert record.status == "CREATE_COMPLETE"
        client = SlurmClient(record.outputs["slurm_conf"], timeout=15)
        assert [(n.name, n.state) for n in client.nodes()] == [("worker1", "idle")]

        out = tmp_path / "out"
        out.mkdir()
        jobs = [client.submit(wrap=f"sleep 3; echo job {i} on $SLURMD_NODENAME", time_limit="1:00",
                              job_name=f"j{i}", output=f"{out}/%j.txt") for i in range(20)]
        until("19 jobs pending behind the one worker", lambda: len(client.queue()) >= 18)

        # a round of the scheduled DAG: clues adds workers for the pending jobs, up to max_nodes
        run = bag.dags["cloud_paas_elastic_scaling"].test()
        added = _scaled(run, store, deployment, before=0)
        assert added["applied"]["added"] == [1, 2, 3], added
        assert added["snapshot"]["queued_jobs"] >= 15, added
        assert [r.index for r in backend.describe(deployment, "slurm_worker")] == [0, 1, 2, 3]
        assert sorted(n.name for n in client.nodes()) == ["worker1", "worker2", "worker3", "worker4"]

        until("all 20 jobs to finish", lambda: all(client.job(j).finished for j in jobs), timeout=180)
        ran_on = set()
        for i, job in enumerate(jobs):
            state = client.job(job)
            assert (state.state, state.exit_code) == ("COMPLETED", 0), state
            text = client.job_output(job)
            assert text.startswith(f"job {i} on worker"), text
            ran_on.add(text.split()[-1])
        assert len(ran_on) >= 3, f"the added workers took jobs: {ran_on}"

        # a long job on worker3: the next round retires the idle workers, never the busy one
        long_job = client.submit(wrap="sleep 300", time_limit="10", job_name="long", nodelist=["worker3"],
                                 output=f"{out}/long.txt")
        until("the long job running on worker3", lambda: client.job(long_job).state == "RUNNING")
        until("the others idle", lambda: sum(n.busy for n in client.nodes()) == 1)
        run = bag.dags["cloud_paas_elastic_scaling"].test()
        retired = _scaled(run, store, deployment, before=1)
        assert sorted(retired["applied"]["retired"]) == [0, 1, 3], retired  # min 1: the busy worker is it
        assert [r.index for r in backend.describe(deployment, "slurm_worker")] == [2]
        until("the retired slots hidden again", lambda: [n.name for n in client.nodes()] == ["worker3"])
        assert client.job(long_job).state == "RUNNING", "the busy worker's job goes on"
        assert store.get(deployment).status == "UPDATE_COMPLETE"
        # a retired worker's slurmd is gone
        left = [p for p in cluster_processes(work_root / deployment) if p.info["name"] == "slurmd"]
        assert len(left) == 1 and "worker3" in " ".join(left[0].cmdline())

        # deleting the deployment stops everything, the running job's slurmstepd included
        run = bag.dags["cloud_paas_delete_deployment"].test(run_conf={"deployment_id": deployment})
        assert run.state == "success", _states(run)
        assert store.get(deployment).status == "DELETE_COMPLETE"
        until("no SLURM process left", lambda: not cluster_processes(work_root / deployment), timeout=30)
    finally:
        backend.delete(deployment)
        for process in cluster_processes(work_root / deployment):
            process.kill()


def test_a_worker_that_cannot_register_is_reported_and_replaced(store_url, airflow_home) -> None:
    from airflow_cloud_paas import packaged_template
    from airflow_cloud_paas.backends.local import LocalBackend
    from airflow_cloud_paas.deployer import Deployer
    from airflow_cloud_paas.exceptions import ResourceCreateError
    from airflow_cloud_paas.request import DeploymentRequest
    from airflow_cloud_paas.store import DeploymentStore
    from airflow_cloud_paas.tosca import load_topology

    store = DeploymentStore(store_url)
    work_root = airflow_home / "cloud_paas" / "work"
    backend = LocalBackend(work_root, ready_timeout=30)
    deployment = f"slurm-reg-{uuid.uuid4().hex[:6]}"
    request = DeploymentRequest.build(load_topology(packaged_template("slurm_elastic_cluster.yaml")), deployment,
                                      {"worker_count": 1, "max_workers": 2}, actor="test")
    deployer = Deployer(request, store, backend)
    blocker = socket.socket()
    try:
        deployer.create_all()
        controller = backend.describe(deployment, "slurm_controller")[0]
        conf = Path(controller.attributes["slurm_conf"])
        port = next(int(w.split("=")[1]) for line in conf.read_text().splitlines()
                    if line.startswith("NodeName=worker2 ") for w in line.split() if w.startswith("Port="))
        blocker.bind(("127.0.0.1", port))  # worker2's slurmd cannot listen: it never registers
        blocker.listen()
        with pytest.raises(ResourceCreateError) as caught:
            deployer.rescale("slurm_worker", add=1, reason="test")
        assert "slurm_worker/1" in str(caught.value) and "slurmd" in str(caught.value), caught.value
        assert [r.index for r in backend.describe(deployment, "slurm_worker")] == [0], "the failed worker is gone"
        assert len([p for p in cluster_processes(work_root / deployment) if p.info["name"] == "slurmd"]) == 1
        assert store.get(deployment).status == "UPDATE_FAILED"
        blocker.close()
        # the next round replaces it
        Deployer(request, store, backend).rescale("slurm_worker", add=1, reason="test again")
        client = SlurmClient(conf, timeout=15)
        assert sorted(n.name for n in client.nodes()) == ["worker1", "worker2"]
        assert store.get(deployment).status == "UPDATE_COMPLETE"
    finally:
        blocker.close()
        _delete(Deployer(request, store, backend))
    until("no SLURM process left", lambda: not cluster_processes(work_root / deployment), timeout=30)


#: the INDIGO examples with SLURM whose every node runs here (the others also need Galaxy, OneData, GlusterFS,
#: block storage or INDIGO's virtual router)
INDIGO_SLURM_EXAMPLES = ("elastic_cluster.yaml", "elastic_cluster_im.yaml", "hybrid_elastic_cluster.yaml")


@pytest.mark.parametrize("example", INDIGO_SLURM_EXAMPLES)
def test_indigo_elastic_cluster_example_deploys_on_the_local_backend(store_url, airflow_home, shared_dir,
                                                                    tmp_path: Path, example: str) -> None:
    from airflow_cloud_paas.backends.local import LocalBackend
    from airflow_cloud_paas.deployer import Deployer
    from airflow_cloud_paas.request import DeploymentRequest
    from airflow_cloud_paas.scaling.elastic import ElasticScaler, scalable_targets
    from airflow_cloud_paas.scaling.policy import policy_from_name
    from airflow_cloud_paas.scaling.probe import make_probe
    from airflow_cloud_paas.store import DeploymentStore
    from airflow_cloud_paas.tosca import indigo_import_map, load_topology

    store = DeploymentStore(store_url)
    work_root = airflow_home / "cloud_paas" / "work"
    backend = LocalBackend(work_root)
    deployment = f"indigo-{uuid.uuid4().hex[:6]}"
    import_map = indigo_import_map(shared_dir / "tosca" / "indigo-types")
    topology = load_topology(shared_dir / "tosca" / "examples" / example, import_map=import_map)
    deployer = Deployer(DeploymentRequest.build(topology, deployment, {"wn_num": 3}, actor="test"), store, backend)
    try:
        deployer.create_all()
        front_end = backend.describe(deployment, "lrms_front_end")[0]
        client = SlurmClient(front_end.attributes["slurm_conf"], timeout=15)
        # INDIGO's front end does not say how many workers (its wn_num is unset): 16 slots, each only a port
        assert client.ping() and front_end.attributes["worker_slots"] == [f"worker{i}" for i in range(1, 17)]
        assert client.nodes() == []  # the example starts with no worker node (count 0)
        job = client.submit(wrap="echo indigo", time_limit=1, output=str(tmp_path / "indigo.out"))
        until("the job pending", lambda: client.queue())

        # CLUES's part is the elastic engine's: the wn node is a target, read through the front end's slurm.conf
        targets = [t for t in scalable_targets(store, import_map=import_map) if t["deployment_id"] == deployment]
        assert targets == [{"deployment_id": deployment, "node_name": "wn_node", "service": "slurm",
                            "policy": "clues", "limits": {"min_nodes": 0, "max_nodes": 3},
                            "address": front_end.attributes["slurm_conf"]}]
        target = targets[0]
        ElasticScaler(deployer, "wn_node", make_probe("slurm", target["address"]),
                      policy_from_name("clues", **target["limits"])).run_once()
        assert [n.name for n in client.nodes()] == ["worker1"]
        until("the job to finish", lambda: client.job(job).finished, timeout=60)
        assert client.job(job).state == "COMPLETED" and client.job_output(job) == "indigo\n"
    finally:
        _delete(deployer)
    until("no SLURM process left", lambda: not cluster_processes(work_root / deployment), timeout=30)
