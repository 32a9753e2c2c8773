"""Provider choice and fallback on real local backends (each its own work root and drivers)."""

from __future__ import annotations

import sys
from pathlib import Path

import psutil
import pytest

from airflow_cloud_paas.backends.local import Launch, LocalBackend, LocalDriver
from airflow_cloud_paas.placement import (
    PlacementPolicy,
    ProviderCandidate,
    ProviderFallbackError,
    deploy_with_fallback,
    provider_stats,
)
from airflow_cloud_paas.request import DeploymentRequest
from airflow_cloud_paas.store import DeploymentStore
from airflow_cloud_paas.tosca import load_topology

TEMPLATE = Path(__file__).with_name("data_flaky.yaml")


def request(deployment_id: str, inputs: dict, actor: str = "r") -> DeploymentRequest:
    return DeploymentRequest.build(load_topology(TEMPLATE), deployment_id, inputs, actor=actor)


class Sleeper(LocalDriver):
    """A real process that is ready at once."""

    def command(self, spec, work_dir, ports):
        return Launch(argv=(sys.executable, "-c", "import time; time.sleep(600)"))

    def ready(self, record):
        return True


class NeverReady(Sleeper):
    """A real process that never becomes ready: the provider's VMs never boot."""

    def ready(self, record):
        return False


@pytest.fixture
def world(tmp_path):
    store = DeploymentStore(f"sqlite:///{tmp_path}/store.db")
    made: dict[str, LocalBackend] = {}

    def make_backend(candidate):
        driver = NeverReady() if candidate.options.get("broken") else Sleeper()
        backend = LocalBackend(tmp_path / candidate.conn_id, drivers={"test.nodes.Flaky": driver},
                               ready_timeout=candidate.options.get("ready_timeout", 1.0))
        made[candidate.conn_id] = backend
        return backend

    yield store, make_backend, made
    for backend in made.values():
        for folder in backend.work_root.iterdir() if backend.work_root.exists() else ():
            backend.delete(folder.name)


def _procs_under(path) -> int:
    count = 0
    for proc in psutil.process_iter(["cmdline", "cwd"]):
        try:
            if str(path) in (proc.info["cwd"] or ""):
                count += 1
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return count


def test_falls_back_to_the_next_provider_and_cleans_the_failed_attempt(world, tmp_path):
    store, make_backend, made = world
    policy = PlacementPolicy(candidates=(
        ProviderCandidate("local", "site-a", {"broken": True}),
        ProviderCandidate("local", "site-b"),
    ))
    chosen, outputs = deploy_with_fallback(request("dep1", {"count": 2}, actor="dag/run1"), store, policy,
                                           make_backend)
    assert chosen.ref == "local:site-b" and outputs["first_host"] == ["127.0.0.1", "127.0.0.1"]
    record = store.get("dep1")
    assert record.status == "CREATE_COMPLETE" and record.backend == "local:site-b"
    assert made["site-a"].describe("dep1") == [] and _procs_under(tmp_path / "site-a") == 0
    assert len(made["site-b"].describe("dep1", "app")) == 2
    kinds = [e.kind for e in store.events("dep1")]
    assert "attempt_cleaned" in kinds and "provider_selected" in kinds


def test_every_provider_failing_reports_each_error_and_leaves_nothing(world, tmp_path):
    store, make_backend, made = world
    policy = PlacementPolicy(candidates=(
        ProviderCandidate("local", "site-a", {"broken": True}),
        ProviderCandidate("local", "site-b", {"broken": True}),
    ))
    with pytest.raises(ProviderFallbackError) as info:
        deploy_with_fallback(request("dep2", {"count": 1}), store, policy, make_backend)
    assert [name for name, _ in info.value.errors] == ["local:site-a", "local:site-b"]
    assert "site-a" in str(info.value) and "site-b" in str(info.value)
    assert store.get("dep2").status == "CREATE_FAILED"
    assert all(b.describe("dep2") == [] for b in made.values())


def test_provider_timeout_cuts_a_boot_wait_short_inside_one_node(world, tmp_path):
    import time

    store, make_backend, made = world
    # site-a's instances never boot and its own ready timeout is 10 minutes: only the attempt's limit ends it
    policy = PlacementPolicy(candidates=(
        ProviderCandidate("local", "site-a", {"broken": True, "ready_timeout": 600}),
        ProviderCandidate("local", "site-b"),
    ), provider_timeout_mins=0.05)
    started = time.monotonic()
    chosen, _ = deploy_with_fallback(request("dep-slow", {"count": 2}, actor="dag/run1"), store, policy,
                                     make_backend)
    assert chosen.ref == "local:site-b"
    assert time.monotonic() - started < 30  # 3 s of attempt, then site-b: not 600 s
    assert made["site-a"].describe("dep-slow") == [] and _procs_under(tmp_path / "site-a") == 0
    messages = [e.message for e in store.events("dep-slow")]
    assert any("CREATE_FAILED" in m and "provider_timeout_mins, was reached" in m for m in messages), messages


def test_keep_last_attempt_and_max_providers_retry(world):
    store, make_backend, made = world
    policy = PlacementPolicy(
        candidates=tuple(ProviderCandidate("local", f"site-{i}", {"broken": True}) for i in range(3)),
        max_providers_retry=2,
        keep_last_attempt=True,
    )
    with pytest.raises(ProviderFallbackError) as info:
        deploy_with_fallback(request("dep3", {"count": 1}), store, policy, make_backend)
    assert [name for name, _ in info.value.errors] == ["local:site-0", "local:site-1"]  # the third is never tried
    assert made["site-0"].describe("dep3") == []
    assert len(made["site-1"].describe("dep3")) >= 1  # the last attempt is kept for debugging


def test_ranking_prefers_the_provider_with_the_better_history(world):
    store, make_backend, made = world
    good, bad = ProviderCandidate("local", "good"), ProviderCandidate("local", "bad", {"broken": True})
    for i in range(2):  # history: 'bad' failed twice
        with pytest.raises(ProviderFallbackError):
            deploy_with_fallback(request(f"h{i}", {"count": 1}), store, PlacementPolicy((bad,)), make_backend)
    deploy_with_fallback(request("h-good", {"count": 1}), store, PlacementPolicy((good,)), make_backend)
    assert provider_stats(store, "local:bad").success_rate == 0
    assert provider_stats(store, "local:good").success_rate == 1
    chosen, _ = deploy_with_fallback(request("ranked", {"count": 1}), store, PlacementPolicy((bad, good), rank=True),
                                     make_backend)
    assert chosen.ref == "local:good"
    assert made["bad"].describe("ranked") == []  # never tried: it was ranked second


def test_candidate_parsing():
    assert ProviderCandidate.parse("aws:aws_eu") == ProviderCandidate("aws", "aws_eu")
    assert ProviderCandidate.parse({"backend": "local"}).ref == "local"
