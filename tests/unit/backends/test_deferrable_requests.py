"""Deferrable waits on Google Cloud, Azure and OpenStack (HTTP stand-ins): request returns while the VM boots.

Each stand-in is slowed to boot in 2 s, so a request that waited for the VM would be caught; the
trigger then polls ``describe`` from the (here: in-process) event loop until the instances run.
"""

from __future__ import annotations

import asyncio
import time
from contextlib import contextmanager

import pytest
from unit.backends import azure_fixtures, gcp_fixtures, openstack_fixtures
from unit.backends import test_azure_backend as azure_tests
from unit.backends import test_gcp_backend as gcp_tests
from unit.backends import test_openstack_backend as openstack_tests

from airflow_cloud_paas.backends.base import ResourceState
from airflow_cloud_paas.triggers.deployment import CloudPaaSNodeReadyTrigger

BOOT_SECONDS = 2.0


@contextmanager
def _gcp(monkeypatch):
    with gcp_fixtures.running_stand_in(boot_seconds=BOOT_SECONDS) as cloud:
        monkeypatch.setenv(f"AIRFLOW_CONN_{gcp_tests.CONN_ID.upper()}", gcp_fixtures.connection_json(cloud))
        yield gcp_tests.make_backend(), gcp_tests.compute, f"gcp:{gcp_tests.CONN_ID}"


@contextmanager
def _azure(monkeypatch):
    with azure_fixtures.running_stand_in(build_seconds=BOOT_SECONDS, resource_seconds=0.02) as cloud:
        azure_tests.set_connection(monkeypatch, cloud)
        yield azure_tests.make_backend(), azure_tests.compute, f"azure:{azure_tests.CONN_ID}"


@contextmanager
def _openstack(monkeypatch):
    with openstack_fixtures.running_stand_in(build_seconds=BOOT_SECONDS) as cloud:
        openstack_tests.set_connection(monkeypatch, cloud)
        yield openstack_tests.make_backend(), openstack_tests.compute, f"openstack:{openstack_tests.CONN_ID}"


@pytest.mark.parametrize("cloud", [_gcp, _azure, _openstack], ids=["gcp", "azure", "openstack"])
def test_request_returns_while_booting_and_the_trigger_sees_them_run(cloud, monkeypatch) -> None:
    with cloud(monkeypatch) as (backend, compute, backend_ref):
        dep = "defer-1"
        try:
            started = time.monotonic()
            launched = []
            for index in range(2):
                launched.append(backend.request(compute(dep, "vm", index)))
            # still booting when request returned: nobody waited for the boot (a state, not a timing, so a loaded
            # machine cannot make it fail)
            assert [r.state for r in launched] == [ResourceState.CREATING] * 2
            again = backend.request(compute(dep, "vm", 0))  # a retried task finds what it started
            assert again.resource_id == launched[0].resource_id
            trigger = CloudPaaSNodeReadyTrigger(dep, "vm", 2, backend_ref, poll_interval=0.2, timeout=30)

            async def first():
                async for event in trigger.run():
                    return event.payload

            event = asyncio.run(first())
            assert event["status"] == "success", event
            assert sorted(event["states"]) == [(0, "RUNNING"), (1, "RUNNING")]
            assert time.monotonic() - started >= BOOT_SECONDS
        finally:
            backend.delete(dep)
        assert backend.describe(dep) == []
