"""SLURM's rules (node names, CPU counts, time limits, arrays) and the local cluster's slurm.conf, checked offline."""

from __future__ import annotations

from pathlib import Path

import pytest

from airflow_cloud_paas.exceptions import CloudPaaSError
from airflow_cloud_paas.services.slurm.client import SlurmClient
from airflow_cloud_paas.services.slurm.cluster import LocalSlurmCluster
from airflow_cloud_paas.services.slurm.config import (
    ClusterSpec,
    array_task_ids,
    format_time_limit,
    render_client_conf,
    render_slurm_conf,
    time_limit_minutes,
    validate_cpus,
    validate_job_name,
    validate_node_name,
)
from airflow_cloud_paas.services.slurm.errors import SlurmConfigError


@pytest.mark.parametrize("name", ["worker1", "w", "node-a_2", "A" + "b" * 62])
def test_node_names_slurm_accepts(name: str) -> None:
    assert validate_node_name(name) == name


@pytest.mark.parametrize("name", ["", "1node", "node.example.org", "n[1-3]", "a,b", "has space", "ALL", "default",
                                  "A" + "b" * 63, None, 7])
def test_node_names_outside_slurms_rules_are_typed_errors(name: object) -> None:
    with pytest.raises(SlurmConfigError, match="node name") as caught:
        validate_node_name(name)
    assert isinstance(caught.value, CloudPaaSError) and caught.value.value == name


@pytest.mark.parametrize("cpus", [0, -1, 1025, 1.5, "2", True, None])
def test_cpu_counts_outside_1_to_1024_are_typed_errors(cpus: object) -> None:
    with pytest.raises(SlurmConfigError, match="CPU count"):
        validate_cpus(cpus)
    assert validate_cpus(4) == 4


@pytest.mark.parametrize(("value", "minutes"), [
    (30, 30), ("30", 30), ("0:30", 1), ("1:30", 2), ("1:30:00", 90), ("2-0", 2880), ("1-12", 2160),
    ("1-00:01", 1441), ("0-0:0:1", 1), ("INFINITE", None), ("unlimited", None),
])
def test_time_limits_in_every_slurm_form(value: object, minutes: int | None) -> None:
    assert time_limit_minutes(value) == minutes


@pytest.mark.parametrize("value", [0, -5, "0", "0:00", "1:60", "1:60:00", "1:00:61", "1-24", "1-0:60",
                                   "1.5", "1h", "-1", "", True, 2.5, None])
def test_time_limits_outside_slurms_rules_are_typed_errors(value: object) -> None:
    with pytest.raises(SlurmConfigError) as caught:
        time_limit_minutes(value)
    assert caught.value.field == "time_limit"


def test_a_time_limit_is_formatted_for_sbatch() -> None:
    assert format_time_limit(2161) == "1-12:01:00"
    assert format_time_limit(None) == "INFINITE"


@pytest.mark.parametrize(("spec", "ids"), [
    ("0-4", [0, 1, 2, 3, 4]), ("1,3,5", [1, 3, 5]), ("0-15:4", [0, 4, 8, 12]), ("0-9%2", list(range(10))),
    ("7", [7]),
])
def test_array_specs(spec: str, ids: list[int]) -> None:
    assert array_task_ids(spec) == ids


@pytest.mark.parametrize("spec", ["", "a-b", "5-1", "0-4:0", "0-4%0", "0-1001", "1,,2", None])
def test_bad_array_specs_are_typed_errors(spec: object) -> None:
    with pytest.raises(SlurmConfigError):
        array_task_ids(spec)


@pytest.mark.parametrize("name", ["", "x" * 201, "two\nlines", 3])
def test_bad_job_names_are_typed_errors(name: object) -> None:
    with pytest.raises(SlurmConfigError, match="job name"):
        validate_job_name(name)


def test_the_slurm_conf_declares_future_slots_with_their_own_ports_and_paths(tmp_path: Path) -> None:
    spec = ClusterSpec(tmp_path, max_workers=3, cpus_per_worker=2, max_time="2:00:00")
    ports = {"worker1": 40001, "worker2": 40002, "worker3": 40003}
    text = render_slurm_conf(spec, controller_port=40000, slurmd_ports=ports)
    settings = dict(line.split("=", 1) for line in text.splitlines() if "=" in line and " " not in line)
    assert settings["SlurmctldPort"] == "40000"
    assert settings["AuthInfo"] == f"socket={tmp_path / 'munge' / 'munge.socket'}"
    assert all("%n" in settings[key] for key in ("SlurmdSpoolDir", "SlurmdPidFile", "SlurmdLogFile"))
    assert (settings["ProctrackType"], settings["TaskPlugin"], settings["SelectType"]) == (
        "proctrack/pgid", "task/none", "select/cons_tres")
    nodes = [line for line in text.splitlines() if line.startswith("NodeName=")]
    assert nodes == [f"NodeName=worker{i} NodeHostname=localhost NodeAddr=127.0.0.1 Port={40000 + i} CPUs=2 "
                     "RealMemory=1000 State=FUTURE" for i in (1, 2, 3)]
    assert "PartitionName=main Nodes=worker1,worker2,worker3 Default=YES MaxTime=0-02:00:00 State=UP" in text


def test_a_client_conf_names_the_controller_and_munge_socket() -> None:
    text = render_client_conf(host="127.0.0.1", port=6817, munge_socket="/run/m.sock", cluster_name="c1")
    assert text.splitlines() == ["ClusterName=c1", "SlurmctldHost=controller(127.0.0.1)", "SlurmctldPort=6817",
                                 "AuthType=auth/munge", "AuthInfo=socket=/run/m.sock"]
    with pytest.raises(SlurmConfigError, match="port"):
        render_client_conf(host="h", port=70000, munge_socket=None)


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"max_workers": 0}, "max_workers"), ({"cpus_per_worker": 0}, "cpus_per_worker"),
    ({"worker_prefix": "node1"}, "worker_prefix"), ({"worker_prefix": "bad.name-"}, "worker_prefix"),
    ({"cluster_name": "Upper"}, "cluster_name"), ({"partition": "all"}, "partition"),
    ({"max_time": "1:99:00"}, "max_time"), ({"memory_mb": 0}, "memory_mb"),
])
def test_a_bad_cluster_spec_fails_when_built(tmp_path: Path, kwargs: dict, field: str) -> None:
    with pytest.raises(SlurmConfigError) as caught:
        ClusterSpec(tmp_path, **kwargs)
    assert caught.value.field == field


def test_a_work_dir_too_deep_for_munges_socket_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SlurmConfigError, match="munge socket path"):
        ClusterSpec(tmp_path / ("d" * 120))


def test_a_work_dir_too_deep_for_the_job_step_sockets_is_refused_unless_sockets_go_elsewhere(tmp_path: Path) -> None:
    deep = Path("/tmp") / ("d" * 65)  # munge, a step socket in the spool does not
    with pytest.raises(SlurmConfigError, match="job step sockets' paths"):
        ClusterSpec(deep)
    spec = ClusterSpec(deep, socket_dir=Path("/tmp/s"))
    conf = render_slurm_conf(spec, controller_port=1, slurmd_ports=dict.fromkeys(spec.worker_names, 2))
    assert "SlurmdSpoolDir=/tmp/s/spool/%n" in conf and "AuthInfo=socket=/tmp/s/munge.socket" in conf
    assert f"StateSaveLocation={deep}/spool/slurmctld" in conf  # no socket there: it stays with the cluster


def test_bad_input_fails_before_any_daemon_starts(tmp_path: Path) -> None:
    cluster = LocalSlurmCluster(ClusterSpec(tmp_path / "c", max_workers=2))
    with pytest.raises(SlurmConfigError, match="max_workers"):
        cluster.start(workers=3)
    assert not (tmp_path / "c").exists()
    assert not cluster.running and cluster.workers == []
    with pytest.raises(SlurmConfigError, match="not a worker slot"):
        cluster.remove_worker("worker9")


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"wrap": "true", "cpus": 0}, "CPU count"), ({"wrap": "true", "time_limit": "1:61:00"}, "minutes"),
    ({"wrap": "true", "array": "3-1"}, "range"), ({"wrap": "true", "job_name": ""}, "job name"),
    ({"wrap": "true", "nodelist": ["n.1"]}, "node name"), ({}, "either"), ({"script": "echo no shebang"}, "#!"),
])
def test_a_bad_submission_fails_before_sbatch_runs(tmp_path: Path, kwargs: dict, match: str) -> None:
    client = SlurmClient(tmp_path / "absent.conf", bin_dir=tmp_path / "no-bin")  # sbatch could not even run
    script = kwargs.pop("script", None)
    with pytest.raises(SlurmConfigError, match=match):
        client.submit(script, **kwargs)

