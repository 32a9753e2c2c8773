"""Admission control of a live XCache: the decision library decides, from the manager's policy file, what is written.

A real origin and an XCache with ``admission: model`` run on loopback (the library is compiled with the
distribution's XRootD headers and loaded by xrootd itself). The cache's disk is the judge: a file it
admitted has its data and ``.cinfo`` there, a bypassed one leaves nothing, and the bypass log the library
appends to names every bypassed open.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import BLOCK, Loopback, make_loopback, stop_all

from airflow_cloud_paas.backends.base import Resource
from airflow_cloud_paas.hooks.xrootd import XRootDHook
from airflow_cloud_paas.services.xcache.admission import (
    AdmissionPolicy,
    build_library,
    drain_bypass_log,
    parse_bypass_log,
)
from airflow_cloud_paas.services.xcache.local import BYPASS_LOG, POLICY_FILE
from airflow_cloud_paas.services.xcache.monitor import read_cinfo

pytestmark = pytest.mark.integration

SIZE = 256 << 10


def admission_missing() -> str | None:
    """Return why the decision library cannot be built here, or None."""
    from airflow_cloud_paas.services.xcache.admission import AdmissionError, check_build

    try:
        check_build()
    except AdmissionError as err:
        return str(err)
    return None


@dataclass
class AdmittingCache:
    """An origin and an XCache with ``admission: model`` in front of it, and a hook reading through the cache."""

    loopback: Loopback
    origin: Resource
    cache: Resource
    hook: XRootDHook

    @property
    def policy_file(self) -> Path:
        return Path(self.cache.attributes["admission_policy"])

    @property
    def bypass_log(self) -> Path:
        return Path(self.cache.attributes["bypass_log"])

    def put(self, path: str) -> bytes:
        """Write a file of random bytes at the origin; return its content."""
        target = Path(self.origin.attributes["data_dir"]) / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        content = os.urandom(SIZE)
        target.write_bytes(content)
        target.chmod(0o644)
        return content

    def on_disk(self, path: str) -> tuple[Path, Path]:
        """Return the file's data and ``.cinfo`` paths in the cache's directory."""
        data = Path(self.cache.attributes["cache_dir"]) / path.lstrip("/")
        return data, data.with_name(data.name + ".cinfo")

    def accesses(self, path: str, at_least: int, timeout: float = 10.0) -> int:
        """Wait until the file's ``.cinfo`` counts ``at_least`` accesses (written when an access ends)."""
        _, cinfo = self.on_disk(path)
        deadline = time.monotonic() + timeout
        while True:
            count = read_cinfo(cinfo).n_accesses if cinfo.exists() else 0
            if count >= at_least or time.monotonic() > deadline:
                return count
            time.sleep(0.1)


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory, runtime_root: Path) -> Iterator[AdmittingCache]:
    """Start an origin and an XCache with ``admission: model`` (no read-ahead: accesses end at close)."""
    reason = admission_missing()
    if reason:
        pytest.skip(reason)
    saved = {name: os.environ.get(name) for name in ("XRD_CONNECTIONRETRY", "XRD_CONNECTIONWINDOW")}
    os.environ.update(XRD_CONNECTIONRETRY="1", XRD_CONNECTIONWINDOW="2")
    loopback = make_loopback(tmp_path_factory.mktemp("admission"), runtime_root)
    conn_id = f"xcache_admission_{uuid.uuid4().hex[:6]}"
    try:
        origin = loopback.origin()
        cache = loopback.xcache(origin, admission="model", prefetch=0)
        os.environ[f"AIRFLOW_CONN_{conn_id.upper()}"] = json.dumps({
            "conn_type": "xrootd", "host": "127.0.0.1", "port": cache.attributes["port"],
            "extra": XRootDHook.connection_extra(cache.attributes),
        })
        yield AdmittingCache(loopback, origin, cache, XRootDHook(conn_id))
    finally:
        os.environ.pop(f"AIRFLOW_CONN_{conn_id.upper()}", None)
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        stop_all(loopback)


def test_the_cache_loads_the_library_with_its_files(cache: AdmittingCache) -> None:
    runtime = Path(cache.cache.attributes["runtime_dir"])
    assert cache.cache.attributes["admission"] == "model"
    assert cache.policy_file == runtime / POLICY_FILE and cache.bypass_log == runtime / BYPASS_LOG
    config = Path(cache.cache.attributes["config_file"]).read_text()
    assert f"pfc.decisionlib {build_library()} {cache.policy_file} {cache.bypass_log}\n" in config
    assert cache.hook.extras["admission_policy"] == str(cache.policy_file)
    assert cache.hook.extras["bypass_log"] == str(cache.bypass_log)
    # xrootd loaded the library, which read its arguments (and found no policy file yet)
    log = Path(cache.cache.attributes["log_file"]).read_text()
    assert f"CloudPaaSAdmission: policy {cache.policy_file}, bypass log {cache.bypass_log}" in log


def test_without_a_policy_every_file_is_cached(cache: AdmittingCache) -> None:
    cache.policy_file.unlink(missing_ok=True)
    for _ in drain_bypass_log(cache.bypass_log):  # what an earlier test left
        pass
    path = "/store/cold/first.bin"
    content = cache.put(path)
    data, cinfo = cache.on_disk(path)

    assert cache.hook.read(path) == content

    assert cinfo.exists() and data.exists()
    assert cache.accesses(path, 1) == 1
    assert data.read_bytes() == content
    assert not cache.bypass_log.exists()


def test_the_policy_decides_what_is_written_and_is_reloaded(cache: AdmittingCache) -> None:
    cached_before = "/store/cold/before.bin"  # cached while there is no policy
    cold, hot = "/store/cold/c1.bin", "/store/hot/h1.bin"
    contents = {p: cache.put(p) for p in (cached_before, cold, hot)}
    cache.policy_file.unlink(missing_ok=True)
    assert cache.hook.read(cached_before) == contents[cached_before]
    assert cache.accesses(cached_before, 1) == 1
    drained_before = [o for _, opens in drain_bypass_log(cache.bypass_log) for o in opens]
    assert drained_before == []

    AdmissionPolicy(admit=frozenset({"/store/hot"}), default_admit=False).write(cache.policy_file)
    started = time.time()

    # a cold file is read from the origin, right, and never written
    assert cache.hook.read(cold) == contents[cold]
    data, cinfo = cache.on_disk(cold)
    assert not data.exists() and not cinfo.exists()
    opens = parse_bypass_log(cache.bypass_log.read_text())
    assert [o.path for o in opens] == [cold]
    assert started - 1 <= opens[0].time_s <= time.time() + 1
    # a hot file is written
    assert cache.hook.read(hot) == contents[hot]
    assert cache.accesses(hot, 1) == 1 and cache.on_disk(hot)[0].read_bytes() == contents[hot]
    # a cold file cached before the policy is still served from the cache's disk
    assert cache.hook.read(cached_before) == contents[cached_before]
    assert cache.accesses(cached_before, 2) == 2
    assert [o.path for o in parse_bypass_log(cache.bypass_log.read_text())] == [cold]

    # the policy is rewritten: the library reloads it at the next open
    AdmissionPolicy(admit=frozenset({"/store/hot", "/store/cold"}), default_admit=False).write(cache.policy_file)
    assert cache.hook.read(cold) == contents[cold]
    assert cinfo.exists() and cache.accesses(cold, 1) == 1
    assert data.read_bytes() == contents[cold]

    # the manager takes the bypassed opens: the log is emptied
    drained = list(drain_bypass_log(cache.bypass_log))
    assert [[o.path for o in opens] for _, opens in drained] == [[cold]]
    assert not cache.bypass_log.exists()
    assert not list(cache.bypass_log.parent.glob(f"{BYPASS_LOG}.taken-*"))
    # and a new bypassed open starts a new log
    AdmissionPolicy(bypass=frozenset({"/store/late"}), default_admit=True).write(cache.policy_file)
    late = "/store/late/l1.bin"
    content = cache.put(late)
    assert cache.hook.read(late) == content
    assert [o.path for o in parse_bypass_log(cache.bypass_log.read_text())] == [late]
    assert not cache.on_disk(late)[1].exists()
    # the default admits what no rule names
    other = "/store/other/o1.bin"
    content = cache.put(other)
    assert cache.hook.read(other) == content
    assert cache.accesses(other, 1) == 1
    assert read_cinfo(cache.on_disk(other)[1]).block_size == BLOCK
