"""Fixtures of the cache-simulator tests: the shared trace generator, imported by path."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def gen_trace(shared_dir: Path):
    """Return the shared ``gen_access_trace`` module (needs numpy)."""
    pytest.importorskip("numpy")
    path = shared_dir / "workloads" / "gen_access_trace.py"
    spec = importlib.util.spec_from_file_location("gen_access_trace", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def small_trace(gen_trace):
    """Return a 10-day trace from the shared generator (seed 1, otherwise its defaults) as a Trace."""
    from airflow_cloud_paas.services.xcache.trace import Trace

    rows = gen_trace.generate(days=10, tasks_per_day=400, datasets_initial=3000, datasets_per_day=40, alpha=1.0,
                              half_life_days=20.0, files_median=40.0, size_median_gb=2.5, seed=1)
    return Trace.from_rows(((float(int(t)), p, s) for t, p, s in rows), source="gen_access_trace(days=10, seed=1)")
