"""The xrootd containers' command, run here on the host: it writes the configuration and starts xrootd.

No container engine runs on this machine, so the command of templates/xcache_containers.yaml (as the
docker backend reads it from the node, :meth:`ContainerRequirements.from_spec`) runs as a host process
with the environment the template gives the container (the configuration from
:func:`container_environment`, pointed at a directory of this test). An origin and an XCache started that
way serve a file through the cache.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest
from conftest import BLOCK
from waiting import free_port

from airflow_cloud_paas.backends.docker import ContainerRequirements
from airflow_cloud_paas.deployer import Deployer
from airflow_cloud_paas.request import DeploymentRequest
from airflow_cloud_paas.services.xcache.config import (
    CONTAINER_CONFIG_ENV,
    OriginSettings,
    XCacheSettings,
    container_environment,
)
from airflow_cloud_paas.services.xcache.local import LOOPBACK_CLIENTS, xrootd_ping
from airflow_cloud_paas.store import DeploymentStore
from airflow_cloud_paas.tosca import load_topology
from airflow_cloud_paas.tosca.imports import PACKAGED_TYPES_FILE

pytestmark = pytest.mark.integration

TEMPLATE = PACKAGED_TYPES_FILE.parent.parent.parent / "templates" / "xcache_containers.yaml"


def test_the_container_command_configures_and_starts_xrootd(tmp_path: Path, runtime_root: Path) -> None:
    deployer = Deployer(DeploymentRequest.build(load_topology(TEMPLATE), "c1", {}), DeploymentStore(f"sqlite:///{tmp_path}/s.db"),
                        None)
    requirements = {name: ContainerRequirements.from_spec(deployer.spec(name, 0, with_requirements=False),
                                                          provider="docker")
                    for name in ("origin", "xcache")}
    assert requirements["xcache"].data_path == "/var/cache/xrootd" and requirements["xcache"].mem_mb == 2048
    assert [p.container_port for p in requirements["origin"].ports] == [1094]
    assert "pss.origin origin:1094" in requirements["xcache"].environment[CONTAINER_CONFIG_ENV]

    base = runtime_root / f"container-{os.getpid()}-{time.monotonic_ns()}"
    base.mkdir(mode=0o755)
    origin_port, cache_port = free_port(), free_port()
    settings = {
        "origin": OriginSettings(data_dir=str(base / "data"), port=origin_port, exports=("/store",),
                                 admin_dir=str(base / "origin-admin"), allow_hosts=LOOPBACK_CLIENTS),
        "xcache": XCacheSettings(origin=f"127.0.0.1:{origin_port}", cache_dir=str(base / "cache"), port=cache_port,
                                 exports=("/store",), block_size="64k", admin_dir=str(base / "cache-admin"),
                                 allow_hosts=LOOPBACK_CLIENTS),
    }
    started: list[psutil.Process] = []
    try:
        for name in ("origin", "xcache"):
            env = {**os.environ, **requirements[name].environment, **container_environment(settings[name]),
                   "CLOUD_PAAS_XROOTD_CONFIG_FILE": str(base / f"{name}.cfg")}
            proc = subprocess.Popen(list(requirements[name].command), env=env, start_new_session=True,
                                    stdout=open(base / f"{name}.log", "wb"), stderr=subprocess.STDOUT)
            started.append(psutil.Process(proc.pid))
            deadline = time.monotonic() + 20
            while not xrootd_ping("127.0.0.1", settings[name].port):
                assert proc.poll() is None, (base / f"{name}.log").read_text()
                assert time.monotonic() < deadline, (base / f"{name}.log").read_text()
                time.sleep(0.1)
            assert (base / f"{name}.cfg").read_text() == container_environment(settings[name])[CONTAINER_CONFIG_ENV]
        assert (base / "data" / "store").is_dir()  # the command made the exported directory

        content = os.urandom(3 * BLOCK)
        (base / "data" / "store" / "c.bin").write_bytes(content)
        from XRootD import client

        status, _ = client.FileSystem(f"root://127.0.0.1:{cache_port}").copy(
            f"root://127.0.0.1:{cache_port}//store/c.bin", str(tmp_path / "c.bin"), force=True)
        assert status.ok, status.message
        assert (tmp_path / "c.bin").read_bytes() == content
        assert (base / "cache" / "store" / "c.bin.cinfo").exists()  # read through the cache, kept on its disk
    finally:
        for proc in started:  # by PID: each command's own process group
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
        gone, alive = psutil.wait_procs(started, timeout=10)
        for proc in alive:
            os.killpg(proc.pid, signal.SIGKILL)
        assert not alive
