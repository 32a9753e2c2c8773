"""HTCondorHook against the pool STAND-IN (no HTCondor daemon can run here): real Submit, ClassAds, event logs."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import classad2
import htcondor2
import pytest
from unit.condor.standin import StandInPool

from airflow_cloud_paas.hooks.htcondor import DAEMON_OFF_PEACEFUL, HTCondorHook
from airflow_cloud_paas.services.condor.errors import (
    CondorConnectionError,
    CondorJobNotFoundError,
    CondorNodeNotFoundError,
    CondorSubmitError,
)

NOW = 1_800_000_000.0


@pytest.fixture
def hook(connection, pool) -> HTCondorHook:
    return HTCondorHook(connection, clients=pool)


def _job(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {"executable": "/bin/sleep", "arguments": "60", "log": str(tmp_path / "jobs.log"), **extra}


def test_queue_stats_sum_what_idle_jobs_request(hook, pool, tmp_path) -> None:
    hook.submit(_job(tmp_path, request_cpus="4", request_memory="6 GB"))  # fits wn1 only
    hook.submit(_job(tmp_path, request_cpus="3", request_memory="1024", request_gpus="1"), count=2)  # no 3-CPU GPU node
    hook.submit(f"""
executable = /bin/echo
arguments = $(item)
request_cpus = 1
request_memory = 512M
log = {tmp_path / 'jobs.log'}
queue item in (a, b)
""")
    stats = hook.queue_stats(now=NOW + 90)
    assert (stats.idle, stats.running, stats.held) == (5, 0, 0)
    assert (stats.idle_cpus, stats.idle_memory_mb, stats.idle_gpus) == (4 + 3 + 3 + 1 + 1, 6144 + 2048 + 1024, 2)
    assert sorted(j.request_cpus for j in stats.idle_jobs) == [1, 1, 3, 3, 4]
    assert {j.wait_s for j in stats.idle_jobs} == {90.0} and stats.longest_wait_s == 90.0

    pool.tick()  # one negotiation cycle: the 4-CPU job fills wn1, the 1-CPU jobs wn2; no 3-CPU GPU slot exists
    stats = hook.queue_stats(now=NOW + 120)
    assert (stats.idle, stats.running) == (2, 3)
    assert sorted(j.job_id for j in stats.idle_jobs) == ["2.0", "2.1"]
    assert (stats.idle_cpus, stats.idle_gpus) == (6, 2)


def test_submitted_jobs_are_real_classads_queried_with_real_constraints(hook, pool, tmp_path) -> None:
    cluster = hook.submit(f"""
executable = /bin/echo
arguments = $(name) $(Cluster).$(Process)
request_cpus = 2
request_memory = 1G
+ProjectName = "physics"
requirements = OpSys == "LINUX"
log = {tmp_path / 'jobs.log'}
queue name in (alpha, beta, gamma)
""")
    ads = hook.schedd.query(f'ClusterId == {cluster} && ProjectName == "physics" && Args != "beta {cluster}.1"',
                            ["ProcId", "Args", "RequestMemory", "Requirements"])
    assert [ad["ProcId"] for ad in ads] == [0, 2]
    assert ads[1]["Args"] == f"gamma {cluster}.2" and ads[0]["RequestMemory"] == 1024
    assert set(ads[0].keys()) == {"ProcId", "Args", "RequestMemory", "Requirements"}  # projected
    assert isinstance(ads[0].lookup("Requirements"), classad2.ExprTree)
    assert "TARGET.Cpus >= RequestCpus" in str(ads[0].lookup("Requirements"))
    with pytest.raises(CondorSubmitError, match="does not parse"):
        hook.submit("executable = /bin/true\nthis line is not a command\n")
    with pytest.raises(CondorSubmitError, match="no executable"):
        hook.submit({"arguments": "1"})


def test_jobs_run_only_where_both_ads_match(hook, pool, tmp_path) -> None:
    windows = hook.submit(_job(tmp_path, requirements='OpSys == "WINDOWS"'))
    gpu = hook.submit(_job(tmp_path, request_gpus="1"))
    pool.add_execute_node("fussy.standin", cpus=64, memory_mb=64000,
                          attributes={"START": classad2.ExprTree('TARGET.ProjectName =?= "vip"')})
    big = hook.submit(_job(tmp_path, request_cpus="32"))  # only fussy has 32 CPUs, and it wants VIPs only
    vip = hook.submit(_job(tmp_path, request_cpus="32", **{"+ProjectName": '"vip"'}))
    pool.tick()
    assert hook.job_status(windows).idle == 1 and hook.job_status(big).idle == 1
    assert hook.job_status(gpu).running == 1 and hook.job_status(vip).running == 1
    claimed = {ad["JobId"]: ad["Name"] for ad in hook.collector.query(htcondor2.AdTypes.Startd, "State == \"Claimed\"",
                                                                        ["JobId", "Name"])}
    assert claimed == {f"{gpu}.0": "slot1_1@wn2.standin", f"{vip}.0": "slot1_1@fussy.standin"}


def test_the_job_event_log_is_read_back_by_the_bindings(hook, pool, tmp_path) -> None:
    ok = hook.submit(_job(tmp_path))
    failing = hook.submit(_job(tmp_path, **{"MY.StandInExitCode": "3"}))
    held = hook.submit(_job(tmp_path, hold="true"))
    pool.tick(2)
    hook.schedd.act(htcondor2.JobAction.Release, [f"{held}.0"], "released by the test")
    pool.tick()
    hook.remove_jobs(held, reason="no longer needed")
    events = [(e["type"], e["cluster"]) for e in hook.read_job_log(tmp_path / "jobs.log")]
    assert [t for t, c in events if c == ok] == ["SUBMIT", "EXECUTE", "JOB_TERMINATED"]
    assert [t for t, c in events if c == held] == ["SUBMIT", "JOB_HELD", "JOB_RELEASED", "EXECUTE", "JOB_ABORTED"]
    log = list(htcondor2.JobEventLog(str(tmp_path / "jobs.log")).events(stop_after=0))
    terminated = {e.cluster: e["ReturnValue"] for e in log if e.type == htcondor2.JobEventType.JOB_TERMINATED}
    assert terminated == {ok: 0, failing: 3}
    executed = [e for e in log if e.type == htcondor2.JobEventType.EXECUTE]
    assert all(e["SlotName"].startswith("slot1_") for e in executed)
    assert hook.job_status(ok).succeeded and not hook.job_status(failing).succeeded
    assert hook.job_status(failing).exit_codes == (3,) and hook.job_status(held).removed == 1


def test_job_status_follows_jobs_into_the_history(hook, pool, tmp_path) -> None:
    cluster = hook.submit(_job(tmp_path), count=3)
    status = hook.job_status(cluster)
    assert (status.total, status.idle, status.done) == (3, 3, False)
    pool.tick()
    assert hook.job_status(cluster).running == 3
    pool.tick()
    status = hook.job_status(cluster)
    assert (status.completed, status.done, status.succeeded, status.exit_codes) == (3, True, True, (0, 0, 0))
    assert hook.schedd.query(f"ClusterId == {cluster}") == []  # gone from the queue, as on a real schedd
    with pytest.raises(CondorJobNotFoundError, match="cluster 999"):
        hook.job_status(999)


def test_slots_sum_each_execute_node(hook, pool, tmp_path) -> None:
    hook.submit(_job(tmp_path, request_cpus="3", request_memory="2048"))
    pool.tick()
    nodes = {n.machine: n for n in hook.slots()}
    assert set(nodes) == {"wn1.standin", "wn2.standin"}
    wn1 = nodes["wn1.standin"]
    assert (wn1.state, wn1.activity, wn1.cpus, wn1.busy_cpus, wn1.memory_mb, wn1.busy_memory_mb, wn1.slots) == (
        "Claimed", "Busy", 4, 3, 8192, 2048, 2)
    assert nodes["wn2.standin"].idle and nodes["wn2.standin"].gpus == 1
    assert [n.machine for n in hook.slots('Machine == "wn2.standin"')] == ["wn2.standin"]


def test_drain_stops_new_jobs_and_lets_running_ones_finish(hook, pool, tmp_path) -> None:
    running = hook.submit(_job(tmp_path))
    pool.tick()
    request = hook.drain_node("wn1.standin", reason="scale in")
    waiting = hook.submit(_job(tmp_path, request_cpus="3"))  # only wn1 could take it
    wn1 = next(n for n in hook.slots() if n.machine == "wn1.standin")
    assert wn1.draining and wn1.activity == "Retiring" and request.startswith("drain-wn1")
    pool.tick()
    assert hook.job_status(running).succeeded and hook.job_status(waiting).idle == 1
    wn1 = next(n for n in hook.slots() if n.machine == "wn1.standin")
    assert (wn1.state, wn1.busy_cpus) == ("Drained", 0)
    hook.cancel_drain("wn1.standin", request)
    pool.tick()
    assert hook.job_status(waiting).running == 1


def test_a_fast_drain_evicts_and_an_exiting_drain_leaves_the_pool(hook, pool, tmp_path) -> None:
    cluster = hook.submit(_job(tmp_path, request_cpus="4"))
    pool.tick()
    hook.drain_node("wn1.standin", how="fast", exit_on_completion=True)
    assert [n.machine for n in hook.slots()] == ["wn2.standin"]  # drained at once, then its startd exited
    assert hook.job_status(cluster).idle == 1  # evicted and requeued
    assert [e["type"] for e in hook.read_job_log(tmp_path / "jobs.log")] == ["SUBMIT", "EXECUTE", "JOB_EVICTED"]
    with pytest.raises(CondorNodeNotFoundError, match="wn1.standin"):
        hook.drain_node("wn1.standin")
    with pytest.raises(ValueError, match="how="):
        hook.drain_node("wn2.standin", how="brutal")


def test_retire_is_a_peaceful_shutdown_of_the_startd(hook, pool, tmp_path) -> None:
    cluster = hook.submit(_job(tmp_path, request_cpus="2"), count=2)
    pool.tick()
    hook.retire_node("wn1.standin")
    assert pool.commands == [("wn1.standin", "DaemonOffPeaceful", "STARTD")]
    assert "wn1.standin" in [n.machine for n in hook.slots()]  # its jobs still run
    hook.submit(_job(tmp_path, request_cpus="4"))  # would only fit wn1, which takes no new job
    pool.tick()
    assert hook.job_status(cluster).succeeded
    assert [n.machine for n in hook.slots()] == ["wn2.standin"]  # gone once idle


def test_the_bindings_enum_for_a_peaceful_daemon_off_is_daemon_on(pool) -> None:
    # htcondor2 25.x: DaemonCommands.DaemonOffPeaceful == 469 == DAEMON_ON; the hook sends 483 itself
    assert int(htcondor2.DaemonCommands.DaemonOffPeaceful) == int(htcondor2.DaemonCommands.DaemonOn) == 469
    assert DAEMON_OFF_PEACEFUL == 483
    master = pool.collector_.locate(htcondor2.DaemonTypes.Master, "wn1.standin")
    pool.identity = next(iter(pool.administrators))
    with pytest.raises(htcondor2.HTCondorException, match="DaemonOn"):
        pool.send_command(master, htcondor2.DaemonCommands.DaemonOffPeaceful, "STARTD")


def test_a_dagman_dag_is_written_by_the_bindings_and_queued(hook, pool, tmp_path) -> None:
    (tmp_path / "node.sub").write_text("executable = /bin/true\nqueue\n")
    dag = tmp_path / "work.dag"
    dag.write_text("JOB A node.sub\nJOB B node.sub\nPARENT A CHILD B\n")
    cluster = hook.submit_dag(dag, {"maxidle": 5, "batchname": "nightly"})
    written = (tmp_path / "work.dag.condor.sub").read_text()
    assert "-MaxIdle 5" in written and re.search(r"^universe\s*=\s*scheduler$", written, re.MULTILINE)
    (ad,) = hook.schedd.query(f"ClusterId == {cluster}", ["JobUniverse", "Cmd", "Arguments", "JobBatchName"])
    assert (ad["JobUniverse"], ad["Cmd"], ad["JobBatchName"]) == (7, "/usr/bin/condor_dagman", "nightly")
    assert f"-Dag {dag} -MaxIdle 5" in ad["Arguments"]
    assert hook.queue_stats().idle_jobs == ()  # DAGMan runs on the schedd: it asks for no slot
    pool.tick(2)
    assert hook.job_status(cluster).succeeded
    with pytest.raises(CondorSubmitError, match="does not exist"):
        hook.submit_dag(tmp_path / "missing.dag")


def test_authentication_and_authorization_fail_with_typed_errors(connection, credentials, pool, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    strict = StandInPool(trust_domain=credentials.trust_domain, pool_password="another-pool-password-123456",
                         administrators=[credentials.identity])
    with pytest.raises(CondorConnectionError) as caught:
        HTCondorHook(connection, clients=strict).queue_stats()
    assert "AUTHENTICATE" in str(caught.value) and "collector cm.standin:9618" in str(caught.value)
    not_admin = StandInPool(trust_domain=credentials.trust_domain, pool_password=credentials.pool_password)
    not_admin.add_execute_node("wn9")
    with pytest.raises(CondorConnectionError, match="PERMISSION DENIED"):
        HTCondorHook(connection, clients=not_admin).drain_node("wn9")
    text = caplog.text + str(caught.value) + repr(HTCondorHook(connection, clients=pool))
    for secret in credentials.secret_values():
        assert secret not in text


def test_the_hook_signs_its_own_token_when_the_connection_has_only_the_password(monkeypatch, credentials, pool):
    import json

    monkeypatch.setenv("AIRFLOW_CONN_HTCONDOR_PW_ONLY", json.dumps({
        "conn_type": "htcondor", "host": "cm.standin", "password": credentials.pool_password,
        "extra": {"trust_domain": credentials.trust_domain}}))
    hook = HTCondorHook("htcondor_pw_only", clients=pool)
    assert hook.test_connection() == (True, "collector cm.standin:9618 answers: 2 slot(s)")
    assert pool.identity == credentials.identity
    monkeypatch.setenv("AIRFLOW_CONN_HTCONDOR_NO_HOST", json.dumps({"conn_type": "htcondor"}))
    ok, message = HTCondorHook("htcondor_no_host", clients=pool).test_connection()
    assert not ok and "set Host" in message


def test_stand_in_objects_can_be_given_directly(connection, pool, tmp_path) -> None:
    pool.identity = "alice@unit-pool.cloud-paas"
    hook = HTCondorHook(connection, collector=pool.collector_, schedd=pool.schedd_)
    cluster = hook.submit(_job(tmp_path))
    (ad,) = pool.schedd_.query(f"ClusterId == {cluster}", ["Owner", "User"])
    assert (ad["Owner"], ad["User"]) == ("alice", "alice@unit-pool.cloud-paas")


def test_several_schedds_need_a_schedd_name(connection, pool) -> None:
    class TwoSchedds:
        def query(self, *args, **kwargs):
            return [classad2.ClassAd({"Name": n, "MyAddress": "<1.2.3.4:9618>"}) for n in ("s1", "s2")]

    with pytest.raises(CondorConnectionError, match="2 schedds .s1, s2.: set the connection's schedd_name"):
        _ = HTCondorHook(connection, clients=pool, collector=TwoSchedds()).schedd


def test_the_connection_type_fits_airflows_provider_schema() -> None:
    import json
    from importlib.resources import files

    import jsonschema

    from airflow_cloud_paas.hooks.htcondor import CONNECTION_TYPE

    schema = json.loads(files("airflow").joinpath("provider_info.schema.json").read_text())
    info = {"package-name": "x", "name": "x", "description": "x", "connection-types": [CONNECTION_TYPE]}
    jsonschema.validate(info, schema)
    assert CONNECTION_TYPE["hook-class-name"] == f"{HTCondorHook.__module__}.{HTCondorHook.__qualname__}"
    assert CONNECTION_TYPE["connection-type"] == HTCondorHook.conn_type
    behaviour = HTCondorHook.get_ui_field_behaviour()
    assert behaviour["relabeling"]["host"] == "Collector (central manager)" and "login" in behaviour["hidden_fields"]


def test_the_form_widgets_match_the_connection_fields() -> None:
    pytest.importorskip("flask_appbuilder")  # the Flask AppBuilder form exists only where the old UI is installed
    from airflow_cloud_paas.hooks.htcondor import CONNECTION_TYPE

    assert set(HTCondorHook.get_connection_form_widgets()) == set(CONNECTION_TYPE["conn-fields"])
