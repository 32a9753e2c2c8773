"""A real XRootD origin and XCache on loopback, started through the local backend's drivers.

xrootd refuses to run as root: the drivers start it with ``-R xrootd``. pytest's ``tmp_path``
(under ``/tmp/pytest-of-root``, mode 0700) is closed to that user, so the instances' directories live
under a runtime root of their own (``/tmp/cloud-paas-xrootd-tests-*``, mode 0755), removed at the end.
Every process a fixture starts is stopped by the backend's ``delete``, then checked gone by its PID
(and killed if it is not, which fails the test).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest

from airflow_cloud_paas.backends.base import Resource, ResourceSpec
from airflow_cloud_paas.backends.local import LocalBackend
from airflow_cloud_paas.services.xcache.local import ORIGIN_TYPE, XCACHE_TYPE, XCacheDriver, XRootDOriginDriver
from airflow_cloud_paas.services.xcache.monitor import AccessLog, PfcMonitor

pytestmark = pytest.mark.integration

SERVER = ("cloud_paas.nodes.xrootd.Server", "tosca.nodes.SoftwareComponent", "tosca.nodes.Root")
ORIGIN = (ORIGIN_TYPE, *SERVER)
XCACHE = (XCACHE_TYPE, *SERVER)
BLOCK = 64 << 10


def requirements_missing() -> str | None:
    """Return why XRootD cannot run here, or None."""
    if shutil.which("xrootd") is None or shutil.which("xrdpfc_print") is None:
        return "XRootD is not installed (apt-get install xrootd-server xrootd-server-plugins xrootd-client)"
    try:
        import XRootD.client  # noqa: F401
    except ImportError:
        return "the XRootD Python client is not installed (pip install xrootd)"
    return None


def pytest_collection_modifyitems(config, items):
    reason = requirements_missing()
    if reason:
        here = Path(__file__).parent
        for item in items:
            if Path(str(item.fspath)).is_relative_to(here):
                item.add_marker(pytest.mark.skip(reason=reason))


@dataclass
class Loopback:
    """A local backend whose xrootd instances live under ``runtime_root``; it remembers every PID."""

    backend: LocalBackend
    runtime_root: Path
    deployment: str
    pids: set[tuple[int, float]] = field(default_factory=set)

    def create(self, spec: ResourceSpec) -> Resource:
        resource = self.backend.create(spec)
        self.remember(resource)
        return resource

    def remember(self, resource: Resource) -> None:
        pid = resource.attributes.get("pid")
        if pid:
            parent = psutil.Process(pid)
            for proc in (parent, *parent.children(recursive=True)):
                self.pids.add((proc.pid, proc.create_time()))

    def origin(self, name: str = "origin", **properties) -> Resource:
        props = {"port": 0, "exports": ["/store"], **properties}
        return self.create(ResourceSpec(self.deployment, name, 0, ORIGIN_TYPE, ORIGIN, properties=props))

    def xcache(self, origin: Resource, name: str = "cache", **properties) -> Resource:
        props = {"port": 0, "exports": ["/store"], "block_size": "64k", "allow_commands": True, **properties}
        return self.create(ResourceSpec(self.deployment, name, 0, XCACHE_TYPE, XCACHE, properties=props,
                                        requirements={"origin": (origin,)}))


def still_running(pids: set[tuple[int, float]]) -> list[psutil.Process]:
    """Return the processes among ``pids`` (pid, start time) that still run."""
    alive = []
    for pid, started in pids:
        try:
            proc = psutil.Process(pid)
            if proc.create_time() == started and proc.status() != psutil.STATUS_ZOMBIE:
                alive.append(proc)
        except psutil.NoSuchProcess:
            continue
    return alive


def stop_all(loopback: Loopback) -> None:
    """Delete the deployment; fail if a process it started is left (after killing it by PID)."""
    loopback.backend.delete(loopback.deployment)
    left = still_running(loopback.pids)
    for proc in left:
        proc.send_signal(signal.SIGKILL)
    assert not left, f"processes left after delete: {[p.pid for p in left]}"


@pytest.fixture(scope="session")
def runtime_root() -> Iterator[Path]:
    """Return a directory the xrootd user can enter (0755 from / down), removed at the end."""
    root = Path(tempfile.mkdtemp(prefix="cloud-paas-xrootd-tests-", dir="/tmp"))
    root.chmod(0o755)
    yield root
    shutil.rmtree(root, ignore_errors=True)


def make_loopback(tmp: Path, runtime_root: Path) -> Loopback:
    drivers = {ORIGIN_TYPE: XRootDOriginDriver(runtime_root), XCACHE_TYPE: XCacheDriver(runtime_root)}
    backend = LocalBackend(tmp / "work", drivers=drivers, ready_timeout=30, stop_timeout=10)
    return Loopback(backend, runtime_root, f"xrd-{uuid.uuid4().hex[:8]}")


@pytest.fixture
def loopback(tmp_path: Path, runtime_root: Path) -> Iterator[Loopback]:
    """Return a fresh local backend for xrootd instances; everything it started is stopped after the test."""
    made = make_loopback(tmp_path, runtime_root)
    yield made
    stop_all(made)


@dataclass
class Service:
    """One origin and one monitored XCache in front of it, with an access log fed by the monitor."""

    loopback: Loopback
    origin: Resource
    cache: Resource
    monitor: PfcMonitor
    access_log: AccessLog
    conn_id: str

    @property
    def data_dir(self) -> Path:
        return Path(self.origin.attributes["data_dir"])

    @property
    def cache_dir(self) -> Path:
        return Path(self.cache.attributes["cache_dir"])

    def put(self, name: str, size: int) -> tuple[str, bytes]:
        """Write a file of random bytes in the origin's /store; return its path and content."""
        content = os.urandom(size)
        target = self.data_dir / "store" / name
        target.write_bytes(content)
        target.chmod(0o644)
        return f"/store/{name}", content


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory, runtime_root: Path) -> Iterator[Service]:
    """Start an origin and an XCache (64k blocks, eviction commands allowed, monitored) for a module."""
    tmp = tmp_path_factory.mktemp("xcache")
    loopback = make_loopback(tmp, runtime_root)
    access_log = AccessLog(f"sqlite:///{tmp}/access.db")
    monitor = PfcMonitor(on_record=access_log.append).start()
    conn_id = f"xcache_{uuid.uuid4().hex[:6]}"
    try:
        origin = loopback.origin()
        # no read-ahead: XRootD 5.5 keeps a partly read, prefetching file open ~30 s after its last reader,
        # which would delay its .cinfo and records (the template test runs the default read-ahead)
        cache = loopback.xcache(origin, monitor=monitor.address, monitor_flush_s=1, prefetch=0)
        monitor.cache = cache.attributes["root_url"]
        os.environ[f"AIRFLOW_CONN_{conn_id.upper()}"] = json.dumps({
            "conn_type": "xrootd", "host": "127.0.0.1", "port": cache.attributes["port"],
            "extra": {"cache_dir": cache.attributes["cache_dir"], "origin": origin.attributes["root_url"]},
        })
        yield Service(loopback, origin, cache, monitor, access_log, conn_id)
    finally:
        os.environ.pop(f"AIRFLOW_CONN_{conn_id.upper()}", None)
        monitor.stop()
        access_log.close()
        stop_all(loopback)
