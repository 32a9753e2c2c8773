"""The one wait loop of every backend (``poll_until``), and the names and tags they all share.

The names are pinned: a re-run finds what an earlier attempt made by exactly these names and tags, so a
change of any value below strands resources that already exist (the values were taken from the
backends' own helpers before they moved to :mod:`airflow_cloud_paas.backends.naming`).
"""

from __future__ import annotations

import ast
import inspect
import re
import threading
import time
from pathlib import Path

import pytest

from airflow_cloud_paas.backends import base, naming
from airflow_cloud_paas.backends.base import (
    DEADLINE_REACHED,
    Backend,
    ResourceSpec,
    WaitFailed,
    poll_until,
    retry_while,
    wait_limit,
)
from airflow_cloud_paas.exceptions import BackendError, ResourceCreateError, ResourceTimeoutError

BACKENDS = Path(base.__file__).parent


def wait(probe, done=bool, **kw):
    options = {"timeout": 5.0, "interval": 0.01, "what": "thing x ready", "provider": "test", "resource": "d/n/0"}
    return poll_until(probe, done, **{**options, **kw})


class Clock:
    """A probe whose value turns True ``after`` seconds; counts and times its calls."""

    def __init__(self, after: float) -> None:
        self.start = time.monotonic()
        self.after = after
        self.calls: list[float] = []

    def __call__(self) -> bool:
        now = time.monotonic()
        self.calls.append(now - self.start)
        return now - self.start >= self.after


# ---------------------------------------------------------------------- poll_until
def test_returns_the_value_that_is_done() -> None:
    values = iter([None, {"status": "BUILD"}, {"status": "ACTIVE"}])
    assert wait(lambda: next(values), lambda v: v is not None and v["status"] == "ACTIVE") == {"status": "ACTIVE"}


def test_the_backends_own_timeout_names_what_provider_resource_and_the_fix() -> None:
    probe = Clock(after=60)
    started = time.monotonic()
    with pytest.raises(ResourceTimeoutError) as err:
        wait(probe, timeout=0.2, hint="raise ready_timeout", status=lambda v: f"state {v}")
    assert 0.2 <= time.monotonic() - started < 1.0
    assert (err.value.provider, err.value.resource) == ("test", "d/n/0")
    message = str(err.value)
    assert "thing x ready" in message and "own timeout of 0.2 s ran out (raise ready_timeout)" in message
    assert "last seen: state False" in message and "provider_timeout_mins" not in message


def test_the_deadline_cuts_the_wait_and_says_so() -> None:
    probe = Clock(after=60)
    started = time.monotonic()
    with pytest.raises(ResourceTimeoutError) as err:
        wait(probe, timeout=600, deadline=time.monotonic() + 0.2, hint="raise ready_timeout")
    assert time.monotonic() - started < 1.0
    assert DEADLINE_REACHED in str(err.value) and "raise ready_timeout" not in str(err.value)


def test_the_sooner_limit_wins() -> None:
    # a far deadline does not stretch the backend's own timeout
    with pytest.raises(ResourceTimeoutError, match="own timeout"):
        wait(Clock(after=60), timeout=0.1, deadline=time.monotonic() + 600)


def test_a_past_deadline_still_looks_once() -> None:
    probe = Clock(after=0)
    assert wait(probe, deadline=time.monotonic() - 10) is True
    assert len(probe.calls) == 1
    never = Clock(after=60)
    started = time.monotonic()
    with pytest.raises(ResourceTimeoutError, match="provider_timeout_mins"):
        wait(never, deadline=time.monotonic() - 10)
    assert len(never.calls) == 1 and time.monotonic() - started < 0.5


def test_the_last_probe_is_made_at_or_after_the_limit() -> None:
    # ready just at the limit, with an interval that would overshoot it: the wait looks once more, at the limit
    probe = Clock(after=0.3)
    assert wait(probe, timeout=0.3, interval=0.25) is True
    assert probe.calls[-1] >= 0.3 > probe.calls[-2]
    late = Clock(after=60)
    with pytest.raises(ResourceTimeoutError):
        wait(late, timeout=0.3, interval=0.25)
    assert late.calls[-1] >= 0.3 and late.calls[-1] < 0.3 + 0.2  # and not an interval later


def test_probes_start_at_most_every_interval() -> None:
    probe = Clock(after=0.5)
    wait(probe, interval=0.1)
    gaps = [b - a for a, b in zip(probe.calls, probe.calls[1:], strict=False)]
    assert 4 <= len(probe.calls) <= 7 and min(gaps) >= 0.09


def test_failed_ends_the_wait_with_the_backends_failure_path() -> None:
    states = iter(["BUILD", "ERROR"])
    with pytest.raises(WaitFailed) as err:
        wait(lambda: next(states), lambda s: s == "ACTIVE", failed=lambda s: "no valid host" if s == "ERROR" else None)
    assert err.value.reason == "no valid host"
    with pytest.raises(ResourceCreateError, match="went away"):
        wait(lambda: None, lambda v: v is not None, failed=lambda v: "it went away" if v is None else None,
             failure=lambda reason: ResourceCreateError(reason, provider="test", resource="r"))


def test_a_probe_error_is_not_swallowed() -> None:
    def probe() -> bool:
        raise BackendError("API down", provider="test")

    with pytest.raises(BackendError, match="API down"):
        wait(probe)


def test_wait_limit() -> None:
    now = time.monotonic()
    assert now + 10 <= wait_limit(10) <= time.monotonic() + 10
    assert wait_limit(10, now + 1) == now + 1
    assert wait_limit(1, now + 600) <= time.monotonic() + 1


# ---------------------------------------------------------------------- retry_while
class Busy(Exception):
    pass


def test_retry_while_retries_then_returns() -> None:
    ready_at = time.monotonic() + 0.2
    calls = []

    def delete() -> str:
        calls.append(1)
        if time.monotonic() < ready_at:
            raise Busy("in use")
        return "deleted"

    assert retry_while(delete, lambda err: isinstance(err, Busy), timeout=5, interval=0.02, what="delete",
                       provider="test", resource="r") == "deleted"
    assert len(calls) > 2


def test_retry_while_raises_the_last_refusal_at_the_limit_and_other_errors_at_once() -> None:
    def busy() -> None:
        raise Busy("still in use")

    with pytest.raises(Busy, match="still in use"):
        retry_while(busy, lambda err: isinstance(err, Busy), timeout=0.1, interval=0.02, what="delete",
                    provider="test", resource="r")
    calls = []

    def broken() -> None:
        calls.append(1)
        raise ValueError("bad request")

    with pytest.raises(ValueError):
        retry_while(broken, lambda err: isinstance(err, Busy), timeout=5, interval=0.02, what="delete",
                    provider="test", resource="r")
    assert len(calls) == 1


# ---------------------------------------------------------------------- one loop, deadlines as arguments
def test_no_backend_writes_its_own_wait_loop() -> None:
    """Every wait of every backend goes through poll_until: no sleeping, no hand-made deadline, no waiter."""
    loop = next(node for node in ast.parse((BACKENDS / "base.py").read_text()).body
                if isinstance(node, ast.FunctionDef) and node.name == "poll_until")
    offenders = []
    for path in sorted(BACKENDS.glob("*.py")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            if re.search(r"time\.sleep|while True|get_waiter|wait_budget|\.result\(timeout", code):
                if path.name == "base.py" and loop.lineno <= number <= (loop.end_lineno or 0):
                    continue  # the one loop
                offenders.append(f"{path.name}:{number}: {line.strip()}")
    assert not offenders, "\n".join(offenders)


def test_the_deadline_is_an_argument_of_create_not_an_attribute() -> None:
    assert not hasattr(Backend, "deadline") and not hasattr(Backend, "wait_budget")
    import importlib

    for name in ("local", "aws", "gcp", "azure", "openstack", "docker", "kubernetes"):
        module = importlib.import_module(f"airflow_cloud_paas.backends.{name}")
        cls = next(v for v in vars(module).values()
                   if isinstance(v, type) and issubclass(v, Backend) and getattr(v, "name", None) == name)
        parameter = inspect.signature(cls.create).parameters["deadline"]
        assert parameter.kind is inspect.Parameter.KEYWORD_ONLY and parameter.default is None, name
        assert "deadline" not in inspect.signature(cls.request).parameters, name


def test_concurrent_waits_do_not_share_a_deadline() -> None:
    # the deadline travels with each call: two creates in threads each keep their own
    outcome: dict[str, object] = {}

    def run(key: str, deadline: float | None) -> None:
        try:
            outcome[key] = wait(Clock(after=0.4), deadline=deadline)
        except ResourceTimeoutError as err:
            outcome[key] = err

    threads = [threading.Thread(target=run, args=("short", time.monotonic() + 0.1)),
               threading.Thread(target=run, args=("none", None))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert isinstance(outcome["short"], ResourceTimeoutError) and outcome["none"] is True


# ---------------------------------------------------------------------- names and tags
def test_tag_selector_and_matching() -> None:
    assert naming.tag_selector("d") == {base.TAG_DEPLOYMENT: "d"}
    assert naming.tag_selector("d", "n", 2) == {base.TAG_DEPLOYMENT: "d", base.TAG_NODE: "n", base.TAG_INDEX: "2"}
    tags = ResourceSpec("d", "n", 2, "t").tags
    assert naming.ours(tags, naming.tag_selector("d", "n"))
    assert not naming.ours({base.TAG_DEPLOYMENT: "d", base.TAG_NODE: "n"}, naming.tag_selector("d"))
    assert naming.tags_match({base.TAG_DEPLOYMENT: "d"}, naming.tag_selector("d"))
    assert not naming.tags_match(None, naming.tag_selector("d"))
    assert naming.key_values(naming.tag_selector("d", "n")) == ["cloud-paas-deployment=d", "cloud-paas-node=n"]
    assert naming.resource_of(tags) == ("d", "n", 2)


PINNED = [
    # (deployment, node, index): {what: name}
    (("dep", "web", 0), {
        "gcp": "cp-dep-web-0-0b7b3e53", "gcp_firewall": "cpfw-8ce3e71e-web-4b5e57", "azure": "dep-web-0",
        "azure_group": "cloud-paas-dep", "azure_nsg": "dep-web-nsg", "docker": "cp-dep-web-0",
        "docker_network": "cp-dep", "kubernetes": "cp-dep-web-0", "openstack": "dep-web-0",
        "aws_group": "cloud-paas-dep-web",
    }),
    (("My_Deployment.2024", "Worker Node", 12), {
        "gcp": "cp-my-deployment-2024-worker-node-12-b5b8b5d7", "gcp_firewall": "cpfw-54d7b557-worker-node-bf2959",
        "azure": "My-Deployment-2024-Worker-Node-12", "azure_group": "cloud-paas-My-Deployment-2024",
        "azure_nsg": "My-Deployment-2024-Worker-Node-nsg",
        "docker": "cp-my-deployment-2024-worker-node-12-aefa3b2a", "docker_network": "cp-my-deployment-2024-d1b383a8",
        "kubernetes": "cp-my-deployment-2024-worker-node-12-aefa3b2a", "openstack": "My_Deployment.2024-Worker-Node-12",
        "aws_group": "cloud-paas-My_Deployment.2024-Worker Node",
    }),
    (("d" * 70, "n_" * 40, 3), {
        "gcp": "cp-dddddddddddddddddddd-n-n-n-n-n-n-n-n-n-n-3-1ce3ba3d",
        "gcp_firewall": "cpfw-e93b3a22-n-n-n-n-n-n-n-n-n-n-n-n-n-n-n-7a3f80",
        "azure": "d" * 55 + "-f247a920", "azure_group": "cloud-paas-" + "d" * 70, "azure_nsg": "d" * 70 + "-e23a6c6f",
        "docker": "cp-" + "d" * 70 + "-n" * 19 + "-c8ef8231", "docker_network": "cp-" + "d" * 70,
        "kubernetes": "cp-" + "d" * 51 + "-c8ef8231", "openstack": "d" * 70 + "-" + "n_" * 40 + "-3",
        "aws_group": "cloud-paas-" + "d" * 70 + "-" + "n_" * 40,
    }),
]


@pytest.mark.parametrize(("key", "expected"), PINNED, ids=["plain", "mixed", "long"])
def test_names_of_existing_resources_never_change(key: tuple[str, str, int], expected: dict[str, str]) -> None:
    from airflow_cloud_paas.backends.aws import AWSBackend
    from airflow_cloud_paas.backends.azure import AzureBackend
    from airflow_cloud_paas.backends.docker import DockerBackend
    from airflow_cloud_paas.backends.gcp import firewall_tag, instance_name
    from airflow_cloud_paas.backends.kubernetes import KubernetesBackend
    from airflow_cloud_paas.backends.openstack import OpenStackBackend

    deployment, node, index = key
    spec = ResourceSpec(deployment, node, index, "tosca.nodes.Compute")
    azure = AzureBackend.__new__(AzureBackend)  # names need no connection
    azure.resource_group, azure.resource_group_prefix = None, "cloud-paas-"
    found = {
        "gcp": instance_name(spec), "gcp_firewall": firewall_tag(deployment, node),
        "azure": AzureBackend.resource_name(spec), "azure_group": azure.group_name(deployment),
        "azure_nsg": azure._nsg_name(deployment, node), "docker": DockerBackend.container_name(spec),
        "docker_network": DockerBackend.network_name(deployment),
        "kubernetes": KubernetesBackend.object_name(deployment, node, index),
        "openstack": OpenStackBackend.resource_name(spec), "aws_group": AWSBackend._group_name(deployment, node),
    }
    assert found == expected


def test_compute_engine_labels_are_pinned_too() -> None:
    from airflow_cloud_paas.backends.gcp import gce_labels

    assert gce_labels(ResourceSpec("My_Deployment.2024", "Worker Node", 12, "t").tags) == {
        "cloud_paas_deployment": "my_deployment-2024-54d7b557", "cloud_paas_node": "worker-node-bf295988",
        "cloud_paas_index": "12"}
    assert naming.label_value("already_ok-1") == "already_ok-1"
