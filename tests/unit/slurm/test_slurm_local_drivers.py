"""The SLURM local drivers' checks (before anything starts), INDIGO's elastic clusters as scaling targets, and where
the elastic engine reads a SLURM cluster. The drivers' daemons run for real in tests/integration/slurm."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from airflow_cloud_paas.backends.base import Resource, ResourceSpec, ResourceState
from airflow_cloud_paas.backends.local import LocalBackend
from airflow_cloud_paas.exceptions import ResourceCreateError
from airflow_cloud_paas.scaling.elastic import ElasticTarget, elastic_targets_of, probe_address
from airflow_cloud_paas.services.slurm.errors import SlurmConfigError
from airflow_cloud_paas.services.slurm.local import (
    DEFAULT_INDIGO_SLOTS,
    SlurmControllerDriver,
    SlurmWorkerDriver,
    cluster_spec,
    socket_dir,
)
from airflow_cloud_paas.tosca import indigo_import_map, load_topology

CONTROLLER = ("cloud_paas.nodes.slurm.Controller", "tosca.nodes.SoftwareComponent", "tosca.nodes.Root")
INDIGO_FE = ("tosca.nodes.indigo.LRMS.FrontEnd.Slurm", "tosca.nodes.indigo.LRMS.FrontEnd",
             "tosca.nodes.SoftwareComponent", "tosca.nodes.Root")
WORKER = ("cloud_paas.nodes.slurm.Worker", "tosca.nodes.SoftwareComponent", "tosca.nodes.Root")
SHARED = Path(__file__).resolve().parents[3].parent / "shared"


def controller(**properties) -> ResourceSpec:
    return ResourceSpec("d1", "ctl", 0, CONTROLLER[0], CONTROLLER, properties=properties)


@pytest.mark.parametrize(("properties", "field"), [
    ({"max_workers": 0}, "max_workers"),
    ({"max_workers": 300}, "max_workers"),
    ({"worker_cpus": 0}, "cpus_per_worker"),
    ({"worker_memory_mb": -1}, "memory_mb"),
    ({"partition": "a b"}, "partition"),
    ({"cluster_name": "Upper"}, "cluster_name"),
    ({"max_time": "1:99:00"}, "max_time"),
])
def test_bad_controller_properties_are_typed_errors_naming_the_setting(properties, field) -> None:
    with pytest.raises(SlurmConfigError) as caught:
        cluster_spec(controller(**properties), Path("/tmp/x"))
    assert caught.value.field == field


def _installed() -> bool:
    from airflow_cloud_paas.services.slurm.cluster import LocalSlurmCluster
    from airflow_cloud_paas.services.slurm.errors import SlurmClusterError

    try:
        LocalSlurmCluster.executables()
    except SlurmClusterError:
        return False
    return True


def test_a_bad_munge_key_is_refused_without_showing_it() -> None:
    if not _installed():
        pytest.skip("SLURM is not installed (make system-deps): check() refuses the node before its key")
    planted = "not base64 ### SECRET-munge-7f3a"
    for key in (planted, base64.b64encode(b"SECRET-short").decode()):
        with pytest.raises(SlurmConfigError) as caught:
            SlurmControllerDriver().check(controller(munge_key=key))
        assert caught.value.field == "munge_key"
        assert "SECRET" not in str(caught.value) and key not in str(caught.value) and key not in repr(caught.value)


def test_indigo_front_ends_get_wn_num_slots_or_the_default() -> None:
    fe = ResourceSpec("d1", "fe", 0, INDIGO_FE[0], INDIGO_FE, properties={"wn_num": 5})
    assert cluster_spec(fe, Path("/tmp/x")).max_workers == 5
    unset = ResourceSpec("d1", "fe", 0, INDIGO_FE[0], INDIGO_FE, properties={"wn_num": -1})
    assert cluster_spec(unset, Path("/tmp/x")).max_workers == DEFAULT_INDIGO_SLOTS
    ports = SlurmControllerDriver().ports(fe)
    assert sorted(ports) == ["slurmctld", *(f"slurmd_worker{i}" for i in range(1, 6))] and set(ports.values()) == {0}


def test_sockets_move_to_a_short_directory_only_when_the_instance_directory_is_deep() -> None:
    assert socket_dir(Path("/tmp/w/dep/ctl/0")) is None
    deep = Path("/tmp") / ("x" * 60) / "dep" / "ctl" / "0"
    short = socket_dir(deep)
    assert short is not None and len(str(short)) < 50 and short == socket_dir(deep), "stable for a restart"
    spec = cluster_spec(controller(max_workers=16), deep)  # valid: every socket fits
    assert spec.munge_socket.parent == short and spec.slurmd_spool_dir == short / "spool"


def test_a_worker_without_a_running_controller_or_beyond_its_slots_is_refused(tmp_path: Path) -> None:
    driver = SlurmWorkerDriver()
    spec = ResourceSpec("d1", "wn", 0, WORKER[0], WORKER)
    with pytest.raises(ResourceCreateError, match="needs its SLURM controller running first"):
        driver.command(spec, tmp_path / "d1" / "wn" / "0", {})
    conf = tmp_path / "slurm.conf"
    conf.write_text("SlurmdLogFile=/x/slurmd-%n.log\nNodeName=worker1 NodeHostname=localhost Port=1 CPUs=2 "
                    "RealMemory=1000 State=FUTURE\n")
    ctl = Resource("d1", "ctl", 0, "local", "r", ResourceState.RUNNING,
                   {"slurm_conf": str(conf), "worker_slots": ["worker1"]})
    second = ResourceSpec("d1", "wn", 1, WORKER[0], WORKER, requirements={"controller": (ctl,)})
    with pytest.raises(ResourceCreateError, match="worker index 1 has no slot: the controller declares 1"):
        driver.command(second, tmp_path / "d1" / "wn" / "1", {})
    first = ResourceSpec("d1", "wn", 0, WORKER[0], WORKER, requirements={"controller": (ctl,)},
                         properties={"cpus": 2})
    if _installed():
        launch = driver.command(first, tmp_path / "d1" / "wn" / "0", {})
        assert launch.argv[-2:] == ("-N", "worker1") and launch.data["slurmd_log"] == "/x/slurmd-worker1.log"
        other = ResourceSpec("d1", "wn", 0, WORKER[0], WORKER, requirements={"controller": (ctl,)},
                             properties={"cpus": 4})
        with pytest.raises(Exception, match="asks 4 CPUs but its controller's slots have 2"):
            driver.command(other, tmp_path / "d1" / "wn" / "0", {})


def test_the_local_backend_runs_the_indigo_and_our_slurm_types_with_these_drivers(tmp_path: Path) -> None:
    backend = LocalBackend(tmp_path)
    for types, kind in ((CONTROLLER, SlurmControllerDriver), (INDIGO_FE, SlurmControllerDriver),
                        (WORKER, SlurmWorkerDriver)):
        assert isinstance(backend.driver(ResourceSpec("d", "n", 0, types[0], types)), kind)
    cluster = ("tosca.nodes.indigo.ElasticCluster", "tosca.nodes.SoftwareComponent", "tosca.nodes.Root")
    made = backend.create(ResourceSpec("d", "clues", 0, cluster[0], cluster))  # CLUES: nothing runs
    assert made.attributes["elasticity"].startswith("cloud_paas_elastic_scaling") and made.attributes["pid"] is None
    backend.delete("d")


def test_an_indigo_elastic_cluster_is_a_clues_target_within_its_wn_bounds() -> None:
    topology = load_topology(SHARED / "tosca" / "examples" / "elastic_cluster.yaml",
                             import_map=indigo_import_map(SHARED / "tosca" / "indigo-types"))
    assert elastic_targets_of(topology, "d1", {"wn_num": 3}) == [
        ElasticTarget("d1", "wn_node", "slurm", "clues", {"min_nodes": 0, "max_nodes": 3})]


def test_a_slurm_cluster_is_read_through_its_published_slurm_conf_else_its_connection() -> None:
    target = ElasticTarget("d1", "wn", "slurm")
    ctl = Resource("d1", "ctl", 0, "local", "r", ResourceState.RUNNING, {"slurm_conf": "/w/ctl/slurm.conf"})
    assert probe_address(target, {"slurm_conf": "/o/slurm.conf"}, [ctl]) == "/o/slurm.conf"
    assert probe_address(target, {"slurm_conn_id": "my_slurm"}, []) == "my_slurm"
    assert probe_address(target, {}, [ctl]) == "/w/ctl/slurm.conf"
    assert probe_address(target, {}, []) == "slurm_d1"
