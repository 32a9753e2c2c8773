"""Placement in the scale simulator: the runtime-aware ``pack`` placement, its online learning and its causality."""

from __future__ import annotations

import dataclasses
import importlib.util
import math
from pathlib import Path

import pytest

from airflow_cloud_paas.scaling import Job, PolicyError, SimulationError, policy_from_name, simulate
from airflow_cloud_paas.scaling.packing import (
    BestFitPlacement,
    EstimatePlacement,
    JobInfo,
    Placement,
    placement_from_name,
)


@pytest.fixture(scope="module")
def four_days(shared_dir: Path) -> list[Job]:
    """Return 4 days of seed 2 with campaigns and requested wall times, as ``--with-estimates`` writes them."""
    spec = importlib.util.spec_from_file_location("gen_job_trace", shared_dir / "workloads" / "gen_job_trace.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    raw = gen.generate(4, 2)
    return [Job(round(s, 1), round(r, 1), c, g, e) for (s, r, c, g), e in zip(raw, gen.estimates(raw, 2), strict=True)]


def _replay(jobs: list[Job], placement: Placement, **options):
    return simulate(
        jobs,
        policy_from_name("smart", node_cores=8, tolerance_fraction=0.15),
        boot_s=180,
        interval_s=60,
        placement=placement,
        record=True,
        **options,
    )


# ------------------------------------------------------------------------------------ worked example
def test_pack_keeps_the_long_jobs_together_and_empties_the_other_worker():
    # two 2-core workers up at once (boot 0); L1 S1 L2 S2 arrive together. fcfs: L1+S1 on node 1, L2+S2 on
    # node 2, both up until 1000. pack: longest first, L1 then L2 on node 1 (it ends at 1000, as they do),
    # S1 and S2 on node 2, which is empty at 100 and powered off at the next decision (120)
    jobs = [Job(0, 1000, 1, "a", 1000), Job(0, 100, 1, "a", 100), Job(0, 1000, 1, "a", 1000), Job(0, 100, 1, "a", 100)]

    def run(placement: Placement):
        return simulate(
            jobs,
            policy_from_name("clues", idle_time_s=0, node_cores=2),
            boot_s=0,
            interval_s=60,
            placement=placement,
            record=True,
        )

    fcfs, pack = run(BestFitPlacement()), run(EstimatePlacement())
    assert [(i, node) for _, i, node in fcfs.placements] == [
        (0, "node-00001"),
        (1, "node-00001"),
        (2, "node-00002"),
        (3, "node-00002"),
    ]
    assert [(i, node) for _, i, node in pack.placements] == [
        (0, "node-00001"),
        (2, "node-00001"),
        (1, "node-00002"),
        (3, "node-00002"),
    ]
    assert fcfs.node_hours == pytest.approx(2000 / 3600)
    assert pack.node_hours == pytest.approx((1000 + 120) / 3600)
    assert pack.waits == fcfs.waits == [0, 0, 0, 0]
    assert (fcfs.placement, pack.placement) == ("fcfs", "pack")


def test_the_default_placement_is_first_come_best_fit():
    jobs = [Job(1, 100, 3), Job(2, 100, 1), Job(3, 100, 4)]
    implicit = simulate(jobs, policy_from_name("static:2", node_cores=4), boot_s=0, record=True)
    explicit = simulate(
        jobs, policy_from_name("static:2", node_cores=4), boot_s=0, record=True, placement=placement_from_name("fcfs")
    )
    assert (
        implicit.placements == explicit.placements == [(1, 0, "node-00001"), (2, 1, "node-00001"), (3, 2, "node-00002")]
    )


# --------------------------------------------------------------------------------------- learning
def test_pack_learns_a_campaigns_over_request_from_its_finished_jobs():
    pack = EstimatePlacement(prior_jobs=1)
    # nothing has ended: the request as it is
    assert pack.expected_runtime(JobInfo(0, 1, 0, "a", 3600)) == pytest.approx(3600)
    for i in range(20):  # campaign a ran a quarter of what it asked, b what it asked; runtimes 500-2400 s
        runtime = 500.0 + 100 * i
        pack.finished(JobInfo(i, 1, 0, "a", 4 * runtime), "n", 3 * runtime, runtime)
        pack.finished(JobInfo(100 + i, 1, 0, "b", runtime), "n", 3 * runtime, runtime)
    a, b = pack.expected_runtime(JobInfo(50, 1, 0, "a", 4000)), pack.expected_runtime(JobInfo(51, 1, 0, "b", 4000))
    assert 900 < a < 1300 and 2500 < b < 4100 and b > 2.5 * a, (a, b)
    # no estimate: the campaign's own runtimes
    assert pack.expected_runtime(JobInfo(52, 1, 0, "b", None)) == pytest.approx(1300, rel=0.1)


def test_a_job_that_outruns_its_expectation_is_expected_to_run_on():
    pack = EstimatePlacement()
    pack.started(JobInfo(0, 1, 0, "a", 600), "n", 0)
    assert pack.node_end("n", 100) == 600
    later = pack.node_end("n", 700)
    assert later > 700 and pack.node_end("n", later + 1) > later + 1
    pack.finished(JobInfo(0, 1, 0, "a", 600), "n", 2000, 2000)
    assert pack.node_end("n", 2000) == 2000  # nothing runs there any more


# ------------------------------------------------------------------------------------------- causality
def test_pack_is_causal(four_days):
    """Placements and scaling decisions up to job i do not depend on any job after i, nor on a runtime not yet seen."""
    full = _replay(four_days, EstimatePlacement())
    assert len(full.placements) == len(four_days)
    for cut in (700, 2500):
        horizon = four_days[cut + 1].submit_s  # the first moment the jobs after `cut` could be known
        short = _replay(four_days[: cut + 1], EstimatePlacement())
        before = [p for p in full.placements if p[0] < horizon]
        assert before and short.placements[: len(before)] == before
        assert [e for e in short.log if e["time_s"] < horizon] == [e for e in full.log if e["time_s"] < horizon]
    # a different future (the jobs after the cut run 3x longer and asked for other wall times) changes nothing before
    cut = 1500
    horizon = four_days[cut + 1].submit_s
    other = four_days[: cut + 1] + [
        dataclasses.replace(j, runtime_s=3 * j.runtime_s, estimate_s=900.0) for j in four_days[cut + 1 :]
    ]
    changed = _replay(other, EstimatePlacement())
    assert [p for p in changed.placements if p[0] < horizon] == [p for p in full.placements if p[0] < horizon]
    assert changed.placements != full.placements
    # a running job's true runtime is unseen until it ends: the first campaign runs 3x longer; nothing is placed
    # differently before the first of its jobs ends in either replay
    group = next(j.group for j in four_days if j.group != "bg")
    longer = [dataclasses.replace(j, runtime_s=3 * j.runtime_s) if j.group == group else j for j in four_days]
    stretched = _replay(longer, EstimatePlacement())
    ended = min(t + four_days[i].runtime_s for t, i, _ in full.placements if four_days[i].group == group)
    kept = [p for p in full.placements if p[0] < ended]
    assert len(kept) > 100 and [p for p in stretched.placements if p[0] < ended] == kept
    assert stretched.placements != full.placements


# ------------------------------------------------------------------------------------------ figures
def test_pack_uses_fewer_node_hours_than_fcfs_at_the_same_waits(four_days):
    fcfs = _replay(four_days, BestFitPlacement())
    pack = _replay(four_days, EstimatePlacement())
    assert pack.ratio < fcfs.ratio - 0.1, (pack, fcfs)
    assert pack.mean_wait_s <= 60 and pack.p95_wait_s <= 300, pack
    assert pack.replay_s < 5


def test_pack_without_estimates_still_replays(four_days):
    plain = [Job(j.submit_s, j.runtime_s, j.cpus) for j in four_days]
    result = _replay(plain, EstimatePlacement())
    assert result.jobs == len(plain) and math.isfinite(result.ratio)


# ------------------------------------------------------------------------------------------- errors
class _Greedy(Placement):
    """Starts every queued job on the first worker, whatever its room: the simulator must refuse."""

    name = "greedy"

    def assign(self, now, queued, slots):
        return [(job, slots[0]) for job in queued]


def test_a_placement_that_overfills_a_worker_is_a_typed_error():
    with pytest.raises(
        SimulationError,
        match=r"placement greedy started job 2 on 'node-00001', which is not an up "
        r"worker with 2 free core\(s\)",
    ):
        simulate(
            [Job(0, 10, 2), Job(0, 10, 2)], policy_from_name("static:2", node_cores=2), boot_s=0, placement=_Greedy()
        )


def test_unknown_placement_names_the_choices():
    with pytest.raises(PolicyError, match=r"unknown placement 'tetris'; expected one of fcfs, pack"):
        placement_from_name("tetris")
    with pytest.raises(PolicyError, match="prior_jobs"):
        EstimatePlacement(prior_jobs=0)
