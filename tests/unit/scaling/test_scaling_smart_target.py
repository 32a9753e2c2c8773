"""``smart`` on a trace from the shared generator: the benchmark's targets, on 3 days of seed 1.

The 14-day figures for seeds 1-6 come from ``bench/bench_scale_sim.py``.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from airflow_cloud_paas.scaling import Job, policy_from_name, simulate


@pytest.fixture(scope="module")
def three_days(shared_dir: Path) -> list[Job]:
    spec = importlib.util.spec_from_file_location("gen_job_trace", shared_dir / "workloads" / "gen_job_trace.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    # rounded as the generator's CSV writes them, so that the figures match `scale-sim --trace`
    return [Job(round(s, 1), round(r, 1), c) for s, r, c, *_ in gen.generate(3, 1)]


def test_smart_meets_the_targets_on_three_days_of_seed_1(three_days):
    smart = simulate(three_days, policy_from_name("smart"), boot_s=180, interval_s=60)
    clues = simulate(three_days, policy_from_name("clues", idle_time_s=600), boot_s=180, interval_s=60)
    assert smart.jobs > 2000
    assert smart.ratio <= 1.40, smart
    assert smart.mean_wait_s <= 60, smart
    assert smart.p95_wait_s <= 300, smart
    assert smart.ratio < clues.ratio - 0.03, (smart, clues)
    assert smart.replay_s < 5
