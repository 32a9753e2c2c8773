"""The XRootD local drivers before anything runs: checks, directories, configuration and command line.

No xrootd process is started here (tests/integration/xcache does that); ``command()`` is called directly
and what it wrote is read back.
"""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from airflow_cloud_paas.backends.base import Resource, ResourceSpec, ResourceState
from airflow_cloud_paas.backends.local import LocalBackend
from airflow_cloud_paas.exceptions import ResourceCreateError, UnsupportedNodeError
from airflow_cloud_paas.services.xcache.local import (
    ORIGIN_TYPE,
    XCACHE_TYPE,
    XCacheDriver,
    XRootDOriginDriver,
    xrootd_ping,
)

SERVER = ("cloud_paas.nodes.xrootd.Server", "tosca.nodes.SoftwareComponent", "tosca.nodes.Root")
needs_xrootd = pytest.mark.skipif(shutil.which("xrootd") is None, reason="xrootd is not installed")
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="the user switch is only made by root")


def spec(node_type: str, name: str = "n", **properties) -> ResourceSpec:
    return ResourceSpec("dep", name, 0, node_type, (node_type, *SERVER), properties=properties)


def origin_resource(endpoint: str = "127.0.0.1:1094") -> Resource:
    return Resource("dep", "origin", 0, "local", "local-x", ResourceState.RUNNING, {"endpoint": endpoint})


@pytest.fixture
def runtime_root() -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="cloud-paas-xrootd-unit-", dir="/tmp"))
    root.chmod(0o755)
    yield root
    shutil.rmtree(root, ignore_errors=True)


def test_a_missing_xrootd_is_reported_with_the_fix() -> None:
    driver = XRootDOriginDriver(executable="xrootd-not-installed-here")
    with pytest.raises(UnsupportedNodeError, match="needs xrootd, which is not installed: install XRootD"):
        driver.check(spec(ORIGIN_TYPE))


@needs_xrootd
@needs_root
def test_a_missing_user_is_reported() -> None:
    driver = XCacheDriver(user="no-such-xrootd-user")
    with pytest.raises(UnsupportedNodeError, match="cannot switch to user 'no-such-xrootd-user'"):
        driver.check(spec(XCACHE_TYPE, origin="o:1094"))


@needs_xrootd
@pytest.mark.parametrize(("properties", "field"), [
    ({"ram": "512m"}, "ram"), ({"block_size": "1g"}, "block_size"), ({"origin": "u@o"}, "origin"),
    ({"low_watermark": 0.99}, "low_watermark"), ({"exports": ["rel"]}, "exports"),
])
def test_bad_properties_are_refused_before_anything_starts(properties, field) -> None:
    with pytest.raises(UnsupportedNodeError, match=f"property '{field}'"):
        XCacheDriver().check(spec(XCACHE_TYPE, **properties))


@needs_xrootd
def test_the_local_backend_refuses_through_its_driver(tmp_path: Path) -> None:
    backend = LocalBackend(tmp_path / "work", drivers={XCACHE_TYPE: XCacheDriver()})
    with pytest.raises(UnsupportedNodeError, match="property 'ram'"):
        backend.check(spec(XCACHE_TYPE, ram="100m"))


def test_an_xcache_needs_an_origin(runtime_root: Path, tmp_path: Path) -> None:
    with pytest.raises(ResourceCreateError, match="has no origin"):
        XCacheDriver(runtime_root).command(spec(XCACHE_TYPE, port=0), tmp_path, {"port": 1234})
    assert not any(runtime_root.iterdir())  # nothing was made


@needs_xrootd
def test_the_xcache_command_and_configuration(runtime_root: Path, tmp_path: Path) -> None:
    driver = XCacheDriver(runtime_root)
    wanted = ResourceSpec("dep", "cache", 2, XCACHE_TYPE, (XCACHE_TYPE, *SERVER),
                          properties={"port": 0, "block_size": "128k", "monitor": "127.0.0.1:9999",
                                      "exports": ["/store"]},
                          requirements={"origin": (origin_resource("127.0.0.1:4321"),)})

    launch = driver.command(wanted, tmp_path, {"port": 5555})

    runtime = runtime_root / "dep" / "cache" / "2"
    assert launch.data["runtime_dir"] == str(runtime) and launch.data["origin"] == "127.0.0.1:4321"
    config = Path(launch.data["config_file"]).read_text()
    assert "pss.origin 127.0.0.1:4321\n" in config and "xrd.port 5555\n" in config
    assert "xrd.allow host 127.0.0.1\nxrd.allow host [::1]\n" in config  # loopback clients only
    assert f"oss.localroot {runtime / 'cache'}\n" in config and f"all.adminpath {runtime / 'admin'}\n" in config
    assert "dest pfc 127.0.0.1:9999" in config and "pfc.blocksize 128k" in config
    argv = list(launch.argv)
    assert argv[:2] == ["sh", "-c"] and argv[4] == str(runtime)
    xrootd = argv[5:]
    assert Path(xrootd[0]).name == "xrootd" and xrootd[xrootd.index("-c") + 1] == launch.data["config_file"]
    assert xrootd[xrootd.index("-p") + 1] == "5555"
    if os.geteuid() == 0:
        assert xrootd[xrootd.index("-R") + 1] == "xrootd"
        owner = pwd.getpwnam("xrootd").pw_uid
        assert (runtime / "cache").stat().st_uid == owner and (runtime / "admin").stat().st_uid == owner
    for level in (runtime_root, runtime_root / "dep", runtime_root / "dep" / "cache"):
        assert level.stat().st_mode & stat.S_IXOTH  # the xrootd user passes through


@needs_xrootd
def test_the_origin_makes_its_exported_directories(runtime_root: Path, tmp_path: Path) -> None:
    launch = XRootDOriginDriver(runtime_root).command(spec(ORIGIN_TYPE, "o", exports=["/store/mc", "/data"]),
                                                      tmp_path, {"port": 4000})
    data = Path(launch.data["data_dir"])
    assert (data / "store" / "mc").is_dir() and (data / "data").is_dir()
    assert launch.data["exports"] == ["/store/mc", "/data"]


@needs_xrootd
@needs_root
def test_a_cache_dir_the_xrootd_user_cannot_write_is_refused(runtime_root: Path, tmp_path: Path) -> None:
    closed = tmp_path / "closed"  # under pytest's 0700 tree: the xrootd user cannot even enter it
    closed.mkdir()
    driver = XCacheDriver(runtime_root)
    with pytest.raises(ResourceCreateError, match=f"property 'cache_dir': user 'xrootd' cannot write {closed}"):
        driver.command(spec(XCACHE_TYPE, "c", cache_dir=str(closed), origin="o:1"), tmp_path, {"port": 4001})


@needs_xrootd
def test_a_runtime_root_that_is_a_link_is_refused(tmp_path: Path, runtime_root: Path) -> None:
    link = Path(tempfile.gettempdir()) / f"cloud-paas-xrootd-link-{os.getpid()}"
    link.symlink_to(runtime_root)
    try:
        with pytest.raises(ResourceCreateError, match="is a link or belongs to another user"):
            XRootDOriginDriver(link).command(spec(ORIGIN_TYPE), tmp_path, {"port": 4002})
    finally:
        link.unlink()


def test_ping_is_false_when_nothing_listens() -> None:
    assert xrootd_ping("127.0.0.1", 1, timeout=0.5) is False
