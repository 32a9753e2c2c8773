"""The trace replay on tiny traces whose outcome is worked out by hand, and trace loading errors."""

from __future__ import annotations

import pytest

from airflow_cloud_paas.scaling import (
    Job,
    SimulationError,
    TraceError,
    load_trace,
    parse_trace,
    policy_from_name,
    simulate,
)


def test_static_one_node_runs_two_jobs_one_after_the_other():
    # the node is requested at t=0 and up at 100; job 1 runs 100-150, job 2 waits for it and runs 150-180
    jobs = [Job(0, 50, 2), Job(10, 30, 2)]
    result = simulate(jobs, policy_from_name("static:1", node_cores=2), boot_s=100, interval_s=60)
    assert result.waits == [100, 140]
    assert result.mean_wait_s == 120
    assert result.p95_wait_s == 140  # nearest rank: the 2nd of 2
    assert result.makespan_s == 180
    assert result.node_hours == pytest.approx(180 / 3600)
    assert result.bound_node_hours == pytest.approx((50 * 2 + 30 * 2) / 2 / 3600)
    assert result.ratio == pytest.approx(180 / 80)
    assert result.boots == 1 and result.peak_nodes == 1


def test_static_pool_costs_its_size_times_the_makespan():
    jobs = [Job(5, 400, 1), Job(7, 30, 3), Job(900, 60, 4)]
    result = simulate(jobs, policy_from_name("static:3", node_cores=4), boot_s=30, interval_s=60)
    assert result.makespan_s == 960
    assert result.node_hours == pytest.approx(3 * 960 / 3600)
    assert result.waits == [25, 23, 0]


def test_best_fit_keeps_a_whole_worker_free_for_a_big_job():
    # A (3 cpus) and B (1 cpu) share the first worker, so C (4 cpus) finds the second one empty;
    # spreading B onto the second worker would make C wait ~100 s
    jobs = [Job(1, 100, 3), Job(2, 100, 1), Job(3, 100, 4)]
    result = simulate(jobs, policy_from_name("static:2", node_cores=4), boot_s=0)
    assert result.waits == [0, 0, 0]
    assert result.node_hours == pytest.approx(2 * 103 / 3600)


def test_fcfs_lets_a_smaller_younger_job_start_while_a_bigger_one_waits():
    # 1 core is free while J0 runs: J1 (2 cpus) waits for J0's end at 101, J2 (1 cpu) starts at once
    jobs = [Job(1, 100, 3), Job(2, 10, 2), Job(3, 10, 1)]
    result = simulate(jobs, policy_from_name("static:1", node_cores=4), boot_s=0)
    assert result.waits == [0, 99, 0]
    assert result.makespan_s == 111


def test_clues_boots_on_demand_and_powers_off_after_the_idle_time():
    # job A: node-00001 requested at the t=0 decision, up at 180, A runs 180-280, idle from 280,
    # powered off at the first decision >= 880, t=900. Job B (t=5000): the next decision is at
    # 5040, node-00002 is up at 5220, B runs 5220-5320 (the end of the replay)
    jobs = [Job(0, 100, 1), Job(5000, 100, 1)]
    result = simulate(jobs, policy_from_name("clues", idle_time_s=600), boot_s=180, interval_s=60, record=True)
    assert result.waits == [180, 220]
    assert result.node_hours == pytest.approx((900 + (5320 - 5040)) / 3600)
    assert result.boots == 2
    assert [(e["time_s"], e["add"], e["retire"]) for e in result.log] == [
        (0, 1, []), (900, 0, ["node-00001"]), (5040, 1, [])]
    assert "idle 620 s >= idle_time_s=600" in result.log[1]["reasons"][0]


def test_every_event_decides_between_ticks():
    # with decisions after every event the worker is requested when A arrives at t=30, not at t=60
    jobs = [Job(30, 100, 1)]
    ticked = simulate(jobs, policy_from_name("clues"), boot_s=180, interval_s=60)
    evented = simulate(jobs, policy_from_name("clues"), boot_s=180, interval_s=60, every_event=True)
    assert ticked.waits == [30 + 180]
    assert evented.waits == [180]
    assert evented.decisions > ticked.decisions


def test_a_job_larger_than_a_worker_is_a_typed_error():
    with pytest.raises(SimulationError, match=r"job 2 .* requests 16 cpus, more than a worker's 8 cores"):
        simulate([Job(0, 10, 1), Job(5, 10, 16)], policy_from_name("clues"))


def test_a_policy_that_never_adds_a_worker_is_reported():
    with pytest.raises(SimulationError, match=r"static:0 leaves 1 job\(s\) queued"):
        simulate([Job(0, 10, 1)], policy_from_name("static:0"))


def test_bad_settings_are_rejected():
    with pytest.raises(SimulationError, match="interval_s"):
        simulate([Job(0, 10, 1)], policy_from_name("clues"), interval_s=0)
    with pytest.raises(SimulationError, match="sorted"):
        simulate([Job(10, 10, 1), Job(0, 10, 1)], policy_from_name("clues"))


def test_empty_trace_replays_to_zero():
    result = simulate([], policy_from_name("smart"))
    assert result.jobs == 0 and result.node_hours == 0 and result.mean_wait_s == 0


# --------------------------------------------------------------------------------------- loading
def test_load_trace_reads_any_column_order_and_sorts(tmp_path):
    trace = tmp_path / "t.csv"
    trace.write_text("cpus,submit_s,runtime_s\n2,50.5,10\n\n1,3,7.5\n")
    assert load_trace(trace) == [Job(3, 7.5, 1), Job(50.5, 10, 2)]


def test_load_trace_reads_the_campaign_and_the_requested_wall_time_when_present(tmp_path):
    # gen_job_trace.py --with-estimates: the first three columns as without, then group,estimate_s
    trace = tmp_path / "t.csv"
    trace.write_text("submit_s,runtime_s,cpus,group,estimate_s\n0.5,100,1,c0-1,900\n2,50,2,bg,\n3,60,1,,1800\n")
    assert load_trace(trace) == [
        Job(0.5, 100, 1, "c0-1", 900.0), Job(2, 50, 2, "bg", None), Job(3, 60, 1, None, 1800.0)]
    plain = tmp_path / "p.csv"
    plain.write_text("submit_s,runtime_s,cpus\n0.5,100,1\n")
    assert load_trace(plain) == [Job(0.5, 100, 1)] and load_trace(plain)[0].estimate_s is None


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("", r"t\.csv:1: empty trace"),
        ("submit_s,runtime\n1,2\n", r"t\.csv:1, column 'runtime_s': header"),
        ("submit_s,runtime_s,cpus\n1,2,1\n3,abc,1\n", r"t\.csv:3, column 'runtime_s': 'abc' is not a number"),
        ("submit_s,runtime_s,cpus\n-1,2,1\n", r"t\.csv:2, column 'submit_s': '-1' must be a finite number >= 0"),
        ("submit_s,runtime_s,cpus\n1,inf,1\n", r"t\.csv:2, column 'runtime_s'"),
        ("submit_s,runtime_s,cpus\n1,2,1.5\n", r"t\.csv:2, column 'cpus': '1\.5' must be a whole number"),
        ("submit_s,runtime_s,cpus\n1,2,0\n", r"t\.csv:2, column 'cpus'"),
        ("submit_s,runtime_s,cpus\n1,2\n", r"t\.csv:2: 2 field\(s\), expected 3"),
        ("submit_s,runtime_s,cpus,estimate_s\n1,2,1,soon\n", r"t\.csv:2, column 'estimate_s': 'soon' is not a number"),
        ("submit_s,runtime_s,cpus,estimate_s\n1,2,1,-5\n", r"t\.csv:2, column 'estimate_s': '-5' must be a finite"),
    ],
)
def test_bad_traces_name_file_line_and_column(tmp_path, text, where):
    trace = tmp_path / "t.csv"
    trace.write_text(text)
    with pytest.raises(TraceError, match=where) as err:
        load_trace(trace)
    assert err.value.file == str(trace)


def test_unreadable_traces_are_typed_errors(tmp_path):
    with pytest.raises(TraceError, match="cannot read the trace"):
        load_trace(tmp_path / "missing.csv")
    binary = tmp_path / "b.csv"
    binary.write_bytes(b"\xff\xfe\x00submit_s")
    with pytest.raises(TraceError, match="not a text CSV"):
        load_trace(binary)


def test_trace_error_survives_pickling():
    import pickle

    err = pickle.loads(pickle.dumps(TraceError("bad", file="f.csv", line=3, column="cpus")))
    assert (err.file, err.line, err.column, str(err)) == ("f.csv", 3, "cpus", "f.csv:3, column 'cpus': bad")


def test_parse_trace_names_its_source():
    with pytest.raises(TraceError, match=r"^inline:2, column 'submit_s'"):
        parse_trace(["submit_s,runtime_s,cpus", "x,1,1"], source="inline")


def test_initial_workers_take_jobs_at_once_and_until_released_replays_the_power_off():
    # one worker up at t=0 runs A (0-100) with no wait; the replay ends there, unless until_released: then the
    # ticks go on (120, 180, ...) and the worker, idle from 100, is powered off at the first tick idle >= 600: 720
    jobs = [Job(0, 100, 1)]
    policy = {"idle_time_s": 600}
    ended = simulate(jobs, policy_from_name("clues", **policy), boot_s=180, interval_s=60, initial_nodes=1)
    assert ended.waits == [0] and ended.boots == 0 and ended.peak_nodes == 1
    assert ended.node_hours == pytest.approx(100 / 3600)
    released = simulate(jobs, policy_from_name("clues", **policy), boot_s=180, interval_s=60, initial_nodes=1,
                        until_released=True, record=True)
    assert [(e["time_s"], e["retire"]) for e in released.log] == [(720, ["node-00001"])]
    assert released.makespan_s == 720 and released.node_hours == pytest.approx(720 / 3600)
    kept = simulate(jobs, policy_from_name("clues", min_nodes=1, **policy), boot_s=180, interval_s=60,
                    initial_nodes=1, until_released=True)
    assert kept.makespan_s == 100, "min_nodes=1: nothing to release, the replay ends with the last job"
    with pytest.raises(SimulationError, match="initial_nodes"):
        simulate(jobs, policy_from_name("clues"), initial_nodes=-1)
