"""Admission control of an XCache before anything runs: the policy file, the bypass log, the library's build.

The library is compiled for real here (g++ against the distribution's XRootD headers) when they are
installed; xrootd loading it and deciding with it is tests/integration/xcache/test_xcache_admission.py.
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
from airflow_cloud_paas.exceptions import ResourceCreateError, UnsupportedNodeError
from airflow_cloud_paas.services.xcache import admission
from airflow_cloud_paas.services.xcache.admission import (
    AdmissionError,
    AdmissionPolicy,
    BypassedOpen,
    build_library,
    check_build,
    decisionlib_directive,
    drain_bypass_log,
    library_path,
    parse_bypass_log,
    policy_from_model,
    summary,
)
from airflow_cloud_paas.services.xcache.local import BYPASS_LOG, POLICY_FILE, XCACHE_TYPE, XCacheDriver
from airflow_cloud_paas.services.xcache.model import ModelConfig, PopularityModel

SERVER = ("cloud_paas.nodes.xrootd.Server", "tosca.nodes.SoftwareComponent", "tosca.nodes.Root")
T0 = 1_700_000_000.0
HOUR = 3600.0


def headers_missing() -> str | None:
    try:
        check_build(tempfile.gettempdir() + "/cloud-paas-never-built")
    except AdmissionError as err:
        return str(err)
    return None


needs_compiler = pytest.mark.skipif(headers_missing() is not None, reason=headers_missing() or "")
needs_xrootd = pytest.mark.skipif(shutil.which("xrootd") is None, reason="xrootd is not installed")
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="the user switch is only made by root")


@pytest.fixture(scope="module")
def plugin_dir() -> Iterator[Path]:
    """Return a build directory the xrootd user can enter (0755 from / down), removed at the end."""
    root = Path(tempfile.mkdtemp(prefix="cloud-paas-plugins-unit-", dir="/tmp"))
    root.chmod(0o755)
    yield root / "plugins"
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def runtime_root() -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="cloud-paas-xrootd-unit-", dir="/tmp"))
    root.chmod(0o755)
    yield root
    shutil.rmtree(root, ignore_errors=True)


# ------------------------------------------------------------------------------------------ policy
def test_a_policy_round_trips_through_its_file(tmp_path: Path) -> None:
    policy = AdmissionPolicy(admit=frozenset({"/store/mc/DS1/", "/store/hot"}), bypass=frozenset({"/store/data"}),
                             default_admit=False)
    text = policy.render()
    assert text.splitlines()[1:] == ["default bypass", "admit /store/hot", "admit /store/mc/DS1",
                                     "bypass /store/data"]
    assert AdmissionPolicy.parse(text) == policy

    written = policy.write(tmp_path / "admission.policy")
    assert written.read_text() == text and stat.S_IMODE(written.stat().st_mode) == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["admission.policy"]  # no temporary file left
    assert AdmissionPolicy.parse(written.read_text(), path=written) == policy
    # what the library also reads: comments, blank lines, tabs, trailing slashes; no default line means admit
    assert AdmissionPolicy.parse("# made by hand\n\n  admit\t/store/a/  \nbypass /store/a/b\n") == AdmissionPolicy(
        admit=frozenset({"/store/a"}), bypass=frozenset({"/store/a/b"}), default_admit=True)
    assert summary(policy) == {"default": "bypass", "admitted_datasets": 2, "bypassed_datasets": 1}


@pytest.mark.parametrize(("text", "line", "fragment"), [
    ("default bypass\ncache /store\n", 2, "expected 'default admit|bypass'"),
    ("default maybe\n", 1, "expected 'default admit|bypass'"),
    ("# c\n\nadmit\n", 3, "expected 'default admit|bypass'"),
    ("admit /store\nbypass store/rel\n", 2, "absolute directory"),
    ("admit /store/a b\n", 1, "without spaces"),
    ("bypass /store/../etc\n", 1, "'..'"),
])
def test_a_bad_policy_line_is_named(text, line, fragment) -> None:
    with pytest.raises(AdmissionError, match=fragment) as caught:
        AdmissionPolicy.parse(text, path="/run/admission.policy")
    assert (caught.value.path, caught.value.line) == ("/run/admission.policy", line)
    assert str(caught.value).startswith(f"/run/admission.policy, line {line}: ")


def test_a_dataset_cannot_be_both_admitted_and_bypassed() -> None:
    with pytest.raises(AdmissionError, match="both admitted and bypassed: /store/a") as caught:
        AdmissionPolicy.parse("admit /store/a\nbypass /store/a/\n", path="p")
    assert caught.value.path == "p"
    with pytest.raises(AdmissionError, match="both"):
        AdmissionPolicy(admit=frozenset({"/x"}), bypass=frozenset({"/x/"}))


def test_the_longest_matching_directory_decides() -> None:
    policy = AdmissionPolicy(admit=frozenset({"/store", "/store/a/b"}), bypass=frozenset({"/store/a", "/user"}),
                             default_admit=False)
    assert policy.decide("/store/f.root") is True
    assert policy.decide("/store/x/y/f.root") is True  # a subdirectory of an admitted dataset
    assert policy.decide("/store/a/f.root") is False
    assert policy.decide("/store/a/c/f.root") is False
    assert policy.decide("/store/a/b/f.root") is True
    assert policy.decide("/store/a/b/c/f.root") is True
    assert policy.decide("/store/ab/f.root") is True  # /store/a is not a prefix of /store/ab
    assert policy.decide("/user/f.root") is False
    assert policy.decide("/data/f.root") is False  # nothing names it: the default
    assert AdmissionPolicy(bypass=frozenset({"/store/a"}), default_admit=True).decide("/data/f") is True
    assert AdmissionPolicy(admit=frozenset({"/"}), default_admit=False).decide("/anything/f") is True


# ------------------------------------------------------------------------------------------ from the model
def test_policy_from_the_model_admits_popular_datasets_only() -> None:
    model = PopularityModel(ModelConfig(min_tasks=2))
    for task in range(3):  # three tasks read the same two files of the popular dataset
        for n in range(2):
            model.observe(T0 + task * HOUR + n, f"/store/pop/{n}.root", 1000, 0, 1000)
    model.observe(T0 + 10, "/store/once/0.root", 1000, 0, 1000)  # one task only
    model.observe(T0 + 11, "/store/with space/0.root", 1000, 0, 1000)
    model.observe(T0 + 12, "bare.root", 1000, 0, 1000)  # no directory: nothing the file could say

    policy = policy_from_model(model, cached=["/store/old/0.root", "/store/pop/9.root"])

    assert policy.admit == {"/store/pop"}
    assert policy.bypass == {"/store/once", "/store/old"}  # the cached file's dataset is listed too
    assert policy.default_admit is False
    assert policy.decide("/store/pop/7.root") and not policy.decide("/store/once/1.root")
    assert not policy.decide("/store/never-seen/0.root")
    assert not policy.decide("/store/with space/1.root")  # left to the default
    assert AdmissionPolicy.parse(policy.render()) == policy


# ------------------------------------------------------------------------------------------ bypass log
def test_the_bypass_log_skips_a_torn_last_line() -> None:
    text = "1700000000.123 /store/a/1.root\n\n1700000001.5 /store/a/2 with space.root\n1700000002.0 /sto"
    assert parse_bypass_log(text) == [BypassedOpen(1700000000.123, "/store/a/1.root"),
                                      BypassedOpen(1700000001.5, "/store/a/2 with space.root")]
    assert parse_bypass_log("") == []


@pytest.mark.parametrize(("text", "line", "fragment"), [
    ("1.0 /a\nyesterday /store/f\n", 2, "expected '<epoch seconds> <path>'"),
    ("1.0 store/f\n", 1, "absolute path"),
])
def test_a_bad_bypass_log_line_is_named(text, line, fragment) -> None:
    with pytest.raises(AdmissionError, match=fragment) as caught:
        parse_bypass_log(text, path="/run/bypass.log")
    assert (caught.value.path, caught.value.line) == ("/run/bypass.log", line)


def test_draining_keeps_a_file_whose_consumer_failed(tmp_path: Path) -> None:
    log = tmp_path / "bypass.log"
    log.write_text("1.0 /store/a/1\n2.0 /store/a/2\n")
    assert list(drain_bypass_log(tmp_path / "absent.log")) == []

    with pytest.raises(RuntimeError, match="database down"):
        for _taken, _opens in drain_bypass_log(log, grace_s=0):
            raise RuntimeError("database down")
    assert not log.exists()
    (kept,) = tmp_path.glob("bypass.log.taken-*")  # renamed, not lost
    log.write_text("3.0 /store/b/3\n")  # the library starts a new log meanwhile

    drained = list(drain_bypass_log(log, grace_s=0))

    assert [[o.path for o in opens] for _, opens in drained] == [["/store/a/1", "/store/a/2"], ["/store/b/3"]]
    assert drained[0][0] == kept
    assert not any(tmp_path.iterdir())  # every taken file consumed and removed
    # a consumer that stops early (break) leaves the rest for the next time too
    log.write_text("4.0 /store/c/4\n")
    for _ in drain_bypass_log(log, grace_s=0):
        break
    assert [[o.path for o in opens] for _, opens in drain_bypass_log(log, grace_s=0)] == [["/store/c/4"]]


# ------------------------------------------------------------------------------------------ the library's build
@needs_compiler
def test_the_library_is_built_once_per_source(plugin_dir: Path, tmp_path: Path) -> None:
    built = build_library(plugin_dir)

    assert built == library_path(plugin_dir) and built.name == "libXrdPfcCloudPaaSAdmission.so"
    assert b"XrdPfcGetDecision" in built.read_bytes()
    for level in (plugin_dir, built.parent):  # another user (xrootd) enters and loads it
        assert stat.S_IMODE(level.stat().st_mode) & 0o055 == 0o055
    assert stat.S_IMODE(built.stat().st_mode) == 0o755
    assert check_build(plugin_dir, compiler="no-such-c++") == built  # built: nothing else is needed
    mtime = built.stat().st_mtime_ns
    assert build_library(plugin_dir, compiler="no-such-c++") == built  # cached: not compiled again
    assert built.stat().st_mtime_ns == mtime
    assert [p.name for p in built.parent.iterdir()] == [built.name]  # no partial file left
    # another source is another library
    changed = tmp_path / "changed.cc"
    changed.write_text(admission.SOURCE.read_text() + "\n// changed\n")
    other = library_path(plugin_dir, source=changed)
    assert other != built and other.parent.parent == built.parent.parent


@needs_compiler
def test_a_build_does_not_close_an_open_directory(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o777)
    shared.chmod(0o1777)  # like /tmp
    built = build_library(shared)
    assert stat.S_IMODE(shared.stat().st_mode) == 0o1777 and built.is_file()


def test_missing_headers_are_reported_with_the_package(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(admission, "INCLUDE_DIRS", (str(tmp_path / "include"),))
    with pytest.raises(AdmissionError, match="XrdPfc/XrdPfcDecision.hh is not installed") as caught:
        build_library(tmp_path / "plugins")
    assert "apt-get install libxrootd-server-dev g++" in str(caught.value)
    assert not (tmp_path / "plugins").exists()  # nothing made


@needs_compiler
def test_a_missing_compiler_and_a_failed_build_are_reported(tmp_path: Path) -> None:
    with pytest.raises(AdmissionError, match="no C\\+\\+ compiler 'no-such-c\\+\\+' on PATH.*libxrootd-server-dev"):
        build_library(tmp_path / "plugins", compiler="no-such-c++")
    broken = tmp_path / "broken.cc"
    broken.write_text("this is not C++\n")
    with pytest.raises(AdmissionError, match="compiling the decision library failed.*broken.cc") as caught:
        build_library(tmp_path / "plugins", source=broken)
    assert "error" in str(caught.value)
    assert not list((tmp_path / "plugins").rglob("*.so*"))  # no partial library left
    with pytest.raises(AdmissionError, match="source is missing"):
        build_library(tmp_path / "plugins", source=tmp_path / "absent.cc")


def test_the_directive_takes_absolute_paths_only() -> None:
    assert decisionlib_directive("/p/lib.so", "/r/a.policy", "/r/bypass.log") == \
        "pfc.decisionlib /p/lib.so /r/a.policy /r/bypass.log"
    assert decisionlib_directive("/p/lib.so", "/r/a.policy") == "pfc.decisionlib /p/lib.so /r/a.policy"
    for bad in (("lib.so", "/r/a"), ("/p/lib.so", "/r/with space")):
        with pytest.raises(AdmissionError, match="absolute and without spaces"):
            decisionlib_directive(*bad)


# ------------------------------------------------------------------------------------------ the local driver
def cache_spec(**properties) -> ResourceSpec:
    origin = Resource("dep", "origin", 0, "local", "local-x", ResourceState.RUNNING, {"endpoint": "127.0.0.1:4321"})
    return ResourceSpec("dep", "cache", 0, XCACHE_TYPE, (XCACHE_TYPE, *SERVER),
                        properties={"port": 0, "exports": ["/store"], **properties},
                        requirements={"origin": (origin,)})


@needs_xrootd
def test_the_driver_refuses_model_admission_without_headers(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(admission, "INCLUDE_DIRS", (str(tmp_path / "include"),))
    driver = XCacheDriver(tmp_path / "runtime", plugin_dir=tmp_path / "plugins")
    fix = "apt-get install libxrootd-server-dev g\\+\\+"
    with pytest.raises(UnsupportedNodeError, match=f"property 'admission'.*{fix}"):
        driver.check(cache_spec(admission="model"))
    driver.check(cache_spec(admission="all"))  # XCache's default needs no library
    with pytest.raises(UnsupportedNodeError, match="property 'admission': expected one of all, model"):
        driver.check(cache_spec(admission="smart"))
    assert not (tmp_path / "runtime").exists() and not (tmp_path / "plugins").exists()


@needs_xrootd
@needs_compiler
def test_the_driver_builds_the_library_and_names_its_files(runtime_root: Path, plugin_dir: Path,
                                                           tmp_path: Path) -> None:
    driver = XCacheDriver(runtime_root, plugin_dir=plugin_dir)
    wanted = cache_spec(admission="model")
    driver.check(wanted)

    launch = driver.command(wanted, tmp_path, {"port": 5555})

    runtime = runtime_root / "dep" / "cache" / "0"
    library = library_path(plugin_dir)
    assert library.is_file()
    assert launch.data["admission_policy"] == str(runtime / POLICY_FILE)
    assert launch.data["bypass_log"] == str(runtime / BYPASS_LOG)
    assert not (runtime / POLICY_FILE).exists()  # no policy yet: the library admits every file
    config = Path(launch.data["config_file"]).read_text()
    assert f"pfc.decisionlib {library} {runtime / POLICY_FILE} {runtime / BYPASS_LOG}\n" in config
    if os.geteuid() == 0:  # xrootd's user writes the bypass log next to the policy
        assert runtime.stat().st_uid == pwd.getpwnam("xrootd").pw_uid

    plain = driver.command(cache_spec(), tmp_path, {"port": 5556})
    assert plain.data["admission"] == "all" and plain.data["admission_policy"] is None
    assert "pfc.decisionlib" not in Path(plain.data["config_file"]).read_text()


@needs_xrootd
@needs_root
@needs_compiler
def test_a_library_the_xrootd_user_cannot_load_is_refused(runtime_root: Path, tmp_path: Path) -> None:
    closed = tmp_path / "plugins"  # under pytest's 0700 tree: the xrootd user cannot enter it
    driver = XCacheDriver(runtime_root, plugin_dir=closed)
    with pytest.raises(ResourceCreateError, match="user 'xrootd' cannot read the decision library"):
        driver.command(cache_spec(admission="model"), tmp_path, {"port": 5557})
    assert not any(runtime_root.iterdir())  # refused before the instance's directory was made


def test_the_connection_names_the_policy_and_the_log() -> None:
    from airflow_cloud_paas.hooks.xrootd import XRootDHook

    attributes = {"cache_dir": "/c", "origin": "127.0.0.1:1", "admission_policy": "/r/admission.policy",
                  "bypass_log": "/r/bypass.log"}
    assert XRootDHook.connection_extra(attributes) == {
        "cache_dir": "/c", "origin": "root://127.0.0.1:1", "admission_policy": "/r/admission.policy",
        "bypass_log": "/r/bypass.log"}
    assert "admission_policy" not in XRootDHook.connection_extra({"cache_dir": "/c", "admission_policy": None})
