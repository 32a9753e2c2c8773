"""templates/xcache.yaml deployed by the Deployer on the local backend: an origin and an XCache that serve.

The deployment reaches CREATE_COMPLETE, a file is read through the cache URL of its outputs and lands
on the cache's disk, and deleting it stops every xrootd process it started and removes their directories.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import psutil
import pytest
from conftest import make_loopback, still_running

from airflow_cloud_paas.deployer import Deployer
from airflow_cloud_paas.hooks.xrootd import XRootDHook
from airflow_cloud_paas.request import DeploymentRequest
from airflow_cloud_paas.store import DeploymentStore
from airflow_cloud_paas.tosca import load_topology
from airflow_cloud_paas.tosca.imports import PACKAGED_TYPES_FILE

pytestmark = pytest.mark.integration

TEMPLATE = PACKAGED_TYPES_FILE.parent.parent.parent / "templates" / "xcache.yaml"


def xrootd_processes(under: Path) -> list[psutil.Process]:
    """Return live xrootd processes whose command line mentions ``under``."""
    found = []
    for proc in psutil.process_iter(["pid", "name", "cmdline"]):
        try:
            if proc.status() != psutil.STATUS_ZOMBIE and any(str(under) in a for a in proc.info["cmdline"] or ()):
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def test_the_template_deploys_serves_and_cleans_up(tmp_path: Path, runtime_root: Path, monkeypatch) -> None:
    loopback = make_loopback(tmp_path, runtime_root)
    store = DeploymentStore(f"sqlite:///{tmp_path}/store.db")
    topology = load_topology(TEMPLATE)
    deployer = Deployer(DeploymentRequest.build(
        topology, loopback.deployment,
        {"exports": ["/store"], "block_size": "128k", "cache_size": "1g", "allow_commands": True},
        actor="test/run1"), store, loopback.backend)
    started = time.monotonic()
    try:
        outputs = deployer.create_all()
        create_s = time.monotonic() - started
        for resource in loopback.backend.describe(loopback.deployment):
            loopback.remember(resource)

        assert store.get(loopback.deployment).status == "CREATE_COMPLETE"
        (origin,) = loopback.backend.describe(loopback.deployment, "xrootd_origin")
        (cache,) = loopback.backend.describe(loopback.deployment, "xcache")
        assert outputs == {"cache_url": cache.attributes["root_url"], "origin_url": origin.attributes["root_url"]}
        assert cache.attributes["origin"] == origin.attributes["endpoint"]
        config = Path(cache.attributes["config_file"]).read_text()
        assert "pfc.blocksize 128k" in config and "pfc.diskusage 943718k 996147k" in config

        content = os.urandom(1_000_000)
        (Path(origin.attributes["data_dir"]) / "store" / "t.bin").write_bytes(content)
        monkeypatch.setenv("AIRFLOW_CONN_XCACHE_TEMPLATE", json.dumps({
            "conn_type": "xrootd", "host": "127.0.0.1", "port": cache.attributes["port"],
            "extra": XRootDHook.connection_extra(cache.attributes),
        }))
        hook = XRootDHook("xcache_template")
        assert hook.copy("/store/t.bin", tmp_path / "t.bin").read_bytes() == content
        cached = hook.prefetch("/store/t.bin")
        assert cached.complete and cached.info.block_size == 128 << 10
        assert Path(cached.data_path).read_bytes() == content
        assert xrootd_processes(runtime_root / loopback.deployment)
    finally:
        deployer.begin_delete()
        deployer.delete_all()
        deployer.complete_delete()

    assert store.get(loopback.deployment).status == "DELETE_COMPLETE"
    assert loopback.backend.describe(loopback.deployment) == []
    assert still_running(loopback.pids) == []
    assert xrootd_processes(runtime_root / loopback.deployment) == []
    assert not (runtime_root / loopback.deployment).exists()  # the wrapper removed the instances' directories
    print(f"\ncreate_all: {create_s:.2f} s")
