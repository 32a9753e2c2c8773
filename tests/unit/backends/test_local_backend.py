"""The local backend: the backend contract, plus what only real local processes can show."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from unit.backends import local_drivers as drivers
from unit.backends.contract import BackendContract, Probe, SpecFactory

from airflow_cloud_paas.backends.base import Resource, ResourceSpec, ResourceState
from airflow_cloud_paas.backends.local import LocalBackend, LocalDriver, register_local_driver
from airflow_cloud_paas.exceptions import (
    BackendError,
    ResourceCreateError,
    ResourceTimeoutError,
    UnsupportedNodeError,
)

COMPUTE_HIERARCHY = ("cloud_paas.nodes.Compute", "tosca.nodes.Compute", "tosca.nodes.Root")


def spec_of(deployment_id: str, node_name: str, index: int, node_type: str, **kw) -> ResourceSpec:
    hierarchy = COMPUTE_HIERARCHY if node_type == "cloud_paas.nodes.Compute" else drivers.hierarchy(node_type)
    return ResourceSpec(deployment_id, node_name, index, node_type, hierarchy, **kw)


class LocalSpecs(SpecFactory):
    def compute(self, deployment_id: str, node_name: str, index: int = 0) -> ResourceSpec:
        return spec_of(deployment_id, node_name, index, "cloud_paas.nodes.Compute")

    def service(self, deployment_id: str, node_name: str, index: int = 0) -> ResourceSpec:
        return spec_of(deployment_id, node_name, index, drivers.HTTP_TYPE)

    def failing(self, deployment_id: str, node_name: str, index: int = 0) -> ResourceSpec:
        return spec_of(deployment_id, node_name, index, drivers.FAILING_TYPE)


def processes_under(path: Path) -> list[psutil.Process]:
    """Return the live processes whose cwd or command line mentions ``path`` (seen from the OS)."""
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:
                continue
            cwd = proc.cwd()
            if cwd.startswith(str(path)) or any(str(path) in arg for arg in proc.info["cmdline"] or ()):
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def start_ticks(pid: int) -> int:
    """Return when a process started, in clock ticks since boot, as the kernel reports it."""
    stat = Path(f"/proc/{pid}/stat").read_bytes()
    return int(stat[stat.rindex(b")") + 1 :].split()[19])


def gone(pid: int) -> bool:
    """Return whether a process has exited (a zombie has: it only waits for its parent to reap it)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


class LocalProbe(Probe):
    """Reads the process table and the files, never the backend."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def exists(self, resource: Resource) -> bool:
        work_dir = Path(resource.attributes["work_dir"])
        pid = resource.attributes.get("pid")
        if pid is None:  # a host: its directory is the resource
            return work_dir.is_dir()
        try:
            proc = psutil.Process(pid)
            return proc.status() != psutil.STATUS_ZOMBIE and proc.cwd() == str(work_dir)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            return False

    def count(self, deployment_id: str) -> int:
        return len(processes_under(self.root / deployment_id))

    def tags(self, resource: Resource) -> dict[str, str]:
        return json.loads((Path(resource.attributes["work_dir"]) / "resource.json").read_text())["tags"]

    def stop_behind_backend(self, resource: Resource) -> None:
        os.killpg(resource.attributes["pid"], signal.SIGKILL)
        psutil.Process(resource.attributes["pid"]).wait(timeout=5)

    @contextlib.contextmanager
    def slow_boot(self, seconds: float) -> Iterator[None]:
        # the service's server starts at once but fails its readiness probe until then
        driver = drivers.DRIVERS[drivers.HTTP_TYPE]
        until = time.monotonic() + seconds
        driver.ready = lambda record: time.monotonic() >= until and type(driver).ready(driver, record)
        try:
            yield
        finally:
            del driver.ready


@pytest.fixture
def work_root(tmp_path: Path) -> Path:
    return tmp_path / "work"


@pytest.fixture
def local(work_root: Path) -> Iterator[LocalBackend]:
    backend = LocalBackend(work_root, drivers=drivers.DRIVERS, ready_timeout=20, stop_timeout=5, poll_interval=0.05)
    yield backend
    for deployment in work_root.glob("*"):  # a failed test must not leave servers running
        backend.delete(deployment.name)


class TestLocalBackendContract(BackendContract):
    @pytest.fixture
    def backend(self, local: LocalBackend) -> LocalBackend:
        return local

    @pytest.fixture
    def specs(self) -> SpecFactory:
        return LocalSpecs()

    @pytest.fixture
    def probe(self, work_root: Path) -> Probe:
        return LocalProbe(work_root)


# ---------------------------------------------------------------------- local specifics
def test_compute_is_the_local_host_with_no_process(local: LocalBackend, work_root: Path) -> None:
    spec = ResourceSpec(
        "dep",
        "vm",
        0,
        "tosca.nodes.indigo.Compute",
        ("tosca.nodes.indigo.Compute", "tosca.nodes.Compute", "tosca.nodes.Root"),
    )
    local.check(spec)
    resource = local.create(spec)
    assert resource.state == ResourceState.RUNNING
    assert resource.attributes["public_address"] == "127.0.0.1"
    assert resource.attributes["private_address"] == "127.0.0.1"
    assert resource.attributes["pid"] is None
    assert (work_root / "dep" / "vm" / "0" / "resource.json").is_file()
    assert processes_under(work_root) == []


def test_layout_and_record_on_disk(local: LocalBackend, work_root: Path) -> None:
    resource = local.create(spec_of("dep", "web", 3, drivers.HTTP_TYPE))
    work_dir = work_root / "dep" / "web" / "3"
    record = json.loads((work_dir / "resource.json").read_text())
    assert record["pid"] == resource.attributes["pid"]
    assert record["create_time"] == pytest.approx(psutil.Process(record["pid"]).create_time())
    assert record["start_ticks"] == start_ticks(record["pid"])
    assert record["boot_id"] == Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    assert record["state"] == "running"
    assert record["argv"][1:3] == ["-m", "http.server"]
    assert record["attributes"]["url"] == resource.attributes["url"]
    assert (work_dir / "process.log").exists()
    # detached: its own session and process group, so it outlives the task and stops as a group
    assert os.getsid(record["pid"]) == record["pid"] == os.getpgid(record["pid"])
    local.delete("dep")
    assert not (work_root / "dep").exists()


def test_unknown_type_error_names_provider_node_and_type(local: LocalBackend) -> None:
    spec = spec_of("dep", "db", 0, "tosca.nodes.Database")
    with pytest.raises(UnsupportedNodeError, match=r"\[local\].*node 'db' of type 'tosca.nodes.Database'"):
        local.check(spec)


def test_registered_driver_is_used_for_derived_types(work_root: Path) -> None:
    class EchoDriver(LocalDriver):
        def attributes(self, spec: ResourceSpec, record) -> dict:
            return {"echo": spec.node_type}

    register_local_driver("test.nodes.Echo", EchoDriver())
    backend = LocalBackend(work_root)
    resource = backend.create(
        ResourceSpec("dep", "e", 0, "test.nodes.LoudEcho", ("test.nodes.LoudEcho", "test.nodes.Echo"))
    )
    assert resource.attributes["echo"] == "test.nodes.LoudEcho"
    backend.delete("dep")


def test_after_stop_runs_once_the_processes_are_gone_even_when_none_was_left(work_root: Path) -> None:
    seen = []

    class CleaningDriver(drivers.HttpServiceDriver):
        def after_stop(self, record) -> None:
            alive = record.pid is not None and psutil.pid_exists(record.pid) and \
                psutil.Process(record.pid).status() != psutil.STATUS_ZOMBIE
            seen.append((record.node_name, alive))

    backend = LocalBackend(work_root, drivers={drivers.HTTP_TYPE: CleaningDriver()})
    resource = backend.create(spec_of("dep", "svc", 0, drivers.HTTP_TYPE))
    backend.delete("dep")
    assert seen == [("svc", False)]  # called after the stop, with the process gone
    backend.create(spec_of("dep", "svc", 0, drivers.HTTP_TYPE))
    os.kill(backend.record("dep", "svc", 0).pid, signal.SIGKILL)  # died on its own: nothing to stop, still cleaned
    until_gone = time.monotonic() + 10
    while backend.describe("dep")[0].state is not ResourceState.STOPPED and time.monotonic() < until_gone:
        time.sleep(0.05)
    backend.delete("dep")
    assert seen == [("svc", False), ("svc", False)]
    assert resource.attributes["pid"]


def test_names_that_are_not_directories_are_refused(local: LocalBackend) -> None:
    with pytest.raises(BackendError, match="cannot name a directory"):
        local.check(spec_of("../escape", "n", 0, "cloud_paas.nodes.Compute"))
    with pytest.raises(BackendError, match="cannot name a directory"):
        local.describe("a/b")


def test_failed_process_error_shows_exit_code_and_log(local: LocalBackend, work_root: Path) -> None:
    with pytest.raises(ResourceCreateError) as err:
        local.create(spec_of("dep", "bad", 0, drivers.FAILING_TYPE))
    assert "code 3" in str(err.value)
    assert "boom: bad configuration" in str(err.value)
    assert not (work_root / "dep" / "bad" / "0").exists()


def test_readiness_timeout_cleans_up_the_process(work_root: Path) -> None:
    backend = LocalBackend(work_root, drivers=drivers.DRIVERS, ready_timeout=1.0, poll_interval=0.05)
    started = time.monotonic()
    with pytest.raises(ResourceTimeoutError) as err:
        backend.create(spec_of("dep", "stuck", 0, drivers.NEVER_READY_TYPE))
    assert time.monotonic() - started < 10
    assert err.value.provider == "local"
    assert "ready_timeout" in str(err.value)
    assert processes_under(work_root) == [], "a timed-out create left its process behind"
    assert backend.describe("dep") == []


def test_delete_stops_the_whole_process_group(local: LocalBackend, work_root: Path) -> None:
    resource = local.create(spec_of("dep", "family", 0, drivers.FAMILY_HTTP_TYPE))
    leader = psutil.Process(resource.attributes["pid"])
    deadline = time.monotonic() + 10  # the child is a forked shell until it has exec'd sleep
    while True:
        children = leader.children()
        if [c.name() for c in children] == ["sleep"] or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert [c.name() for c in children] == ["sleep"]
    local.delete("dep")
    assert not any(c.is_running() and c.status() != psutil.STATUS_ZOMBIE for c in children)
    assert processes_under(work_root) == []


def _python(code: str, work_root: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(drivers.__file__).parent), *sys.path])}
    script = textwrap.dedent(
        f"""
        from airflow_cloud_paas.backends.base import ResourceSpec
        from airflow_cloud_paas.backends.local import LocalBackend
        import local_drivers
        backend = LocalBackend({str(work_root)!r}, drivers={{
            local_drivers.HTTP_TYPE: "local_drivers:HttpServiceDriver",
            local_drivers.SLOW_HTTP_TYPE: "local_drivers:SlowHttpServiceDriver",
        }})
        """
    ) + textwrap.dedent(code)
    return subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, text=True)


def test_retry_in_a_new_process_finds_what_the_first_made(local: LocalBackend, work_root: Path) -> None:
    first = _python(
        """
        kind = local_drivers.HTTP_TYPE
        r = backend.create(ResourceSpec("dep", "web", 0, kind, local_drivers.hierarchy(kind)))
        print("MADE", r.resource_id, r.attributes["pid"])
        """,
        work_root,
    )
    out, _ = first.communicate(timeout=60)
    assert first.returncode == 0
    _, resource_id, pid = [line for line in out.splitlines() if line.startswith("MADE ")][-1].split()
    # the creating process has exited; the service it started has not
    assert psutil.pid_exists(int(pid)) and psutil.Process(int(pid)).status() != psutil.STATUS_ZOMBIE
    again = local.create(spec_of("dep", "web", 0, drivers.HTTP_TYPE))
    assert (again.resource_id, again.attributes["pid"]) == (resource_id, int(pid))
    assert len(processes_under(work_root / "dep")) == 1
    local.delete("dep")
    assert gone(int(pid))


def test_retry_after_a_crash_during_readiness_waits_for_the_same_process(local: LocalBackend, work_root: Path) -> None:
    crashing = _python(
        """
        backend.create(ResourceSpec("dep", "slow", 0, local_drivers.SLOW_HTTP_TYPE,
                                    local_drivers.hierarchy(local_drivers.SLOW_HTTP_TYPE)))
        """,
        work_root,
    )
    record_file = work_root / "dep" / "slow" / "0" / "resource.json"
    deadline = time.monotonic() + 30
    while not (record_file.exists() and json.loads(record_file.read_text()).get("pid")):
        assert time.monotonic() < deadline, "the first attempt never started its process"
        time.sleep(0.02)
    crashing.kill()  # the task dies (OOM, node lost) while waiting for readiness
    crashing.wait()
    started = json.loads(record_file.read_text())
    assert started["state"] == "creating"
    assert local.describe("dep")[0].state == ResourceState.CREATING

    resource = local.create(spec_of("dep", "slow", 0, drivers.SLOW_HTTP_TYPE))
    assert resource.state == ResourceState.RUNNING
    assert (resource.resource_id, resource.attributes["pid"]) == (started["resource_id"], started["pid"])
    assert len(processes_under(work_root / "dep")) == 1
    local.delete("dep")


def test_dead_process_is_restarted_on_its_old_port(local: LocalBackend, work_root: Path) -> None:
    first = local.create(spec_of("dep", "web", 0, drivers.HTTP_TYPE))
    os.kill(first.attributes["pid"], signal.SIGKILL)
    psutil.Process(first.attributes["pid"]).wait(timeout=5)
    assert local.describe("dep")[0].state == ResourceState.STOPPED
    second = local.create(spec_of("dep", "web", 0, drivers.HTTP_TYPE))
    assert second.attributes["pid"] != first.attributes["pid"]
    assert second.attributes["url"] == first.attributes["url"]  # same port: clients still find it
    assert local.record("dep", "web", 0).restarts == 1
    local.delete("dep")


def test_reused_pid_is_not_ours(local: LocalBackend, work_root: Path) -> None:
    resource = local.create(spec_of("dep", "web", 0, drivers.HTTP_TYPE))
    stranger = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        # the recorded process is gone and its pid now belongs to someone else (same pid, other start time)
        record_file = work_root / "dep" / "web" / "0" / "resource.json"
        record = json.loads(record_file.read_text())
        # The stranger started after the server was ready (tens of ms, several clock ticks): a
        # tolerance of 50 ms used to take it for the server in about one run in four.
        assert start_ticks(stranger.pid) > record["start_ticks"]
        record["pid"] = stranger.pid
        record_file.write_text(json.dumps(record))
        assert local.describe("dep")[0].state == ResourceState.STOPPED
        local.delete("dep")
        assert stranger.poll() is None, "delete killed a process that only shares a reused pid"
        # the untracked server is still found and stopped through its working directory
        assert gone(resource.attributes["pid"])
        assert processes_under(work_root) == []
    finally:
        stranger.kill()
        stranger.wait()


def test_zombie_is_stopped(local: LocalBackend, work_root: Path) -> None:
    local.create(spec_of("dep", "web", 0, drivers.HTTP_TYPE))
    zombie = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 10
    while psutil.Process(zombie.pid).status() != psutil.STATUS_ZOMBIE:
        assert time.monotonic() < deadline, "the child never exited"
        time.sleep(0.02)
    try:
        record_file = work_root / "dep" / "web" / "0" / "resource.json"
        record = json.loads(record_file.read_text())
        record.update(
            pid=zombie.pid,
            create_time=psutil.Process(zombie.pid).create_time(),
            start_ticks=start_ticks(zombie.pid),
        )
        record_file.write_text(json.dumps(record))
        assert local.describe("dep")[0].state == ResourceState.STOPPED
    finally:
        zombie.wait()
        local.delete("dep")
    assert processes_under(work_root) == []


def test_own_process_survives_a_boot_time_shift(local: LocalBackend, work_root: Path) -> None:
    resource = local.create(spec_of("dep", "web", 0, drivers.HTTP_TYPE))
    # The epoch start time is boot time (whole seconds, moved by clock steps) + ticks: it can shift
    # by a second between two reads. The identity is the start tick since boot, which never moves.
    record_file = work_root / "dep" / "web" / "0" / "resource.json"
    record = json.loads(record_file.read_text())
    record["create_time"] += 1.0
    record_file.write_text(json.dumps(record))
    assert local.describe("dep")[0].state == ResourceState.RUNNING
    again = local.create(spec_of("dep", "web", 0, drivers.HTTP_TYPE))
    assert again.attributes["pid"] == resource.attributes["pid"]  # not restarted as if it had died
    local.delete("dep")
    assert gone(resource.attributes["pid"])
