"""A worker SIGKILLed after each mutating EC2 call of create, scale and delete; then the reconcile job recovers.

The action runs in a process of its own (forked by ``aws_child.py``) whose EC2 calls go through the loopback
proxy in front of a real ``moto_server``; once moto has answered the N-th mutating call, the proxy kills
the process before the answer reaches it (``KillAfterMutations``), for every N. The record is left
``*_IN_PROGRESS`` with a dead holder; :func:`airflow_cloud_paas.reconcile.reconcile` must take it over: an
interrupted create is undone (CREATE_FAILED, nothing left), an interrupted update ends UPDATE_FAILED with
the store's rows what moto holds, an interrupted delete is finished (DELETE_COMPLETE, nothing left), and a
"reconciled" event on the deployment says what happened.
"""

from __future__ import annotations

import json
import select
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from integration.faults.aws_faults import (
    ACTIONS,
    AFTER,
    MUTATING_CALLS,
    check_consistent,
    check_nothing_left,
    cloud_rows,
    counts,
    new_deployment_id,
    run_action,
    store_rows,
)
from unit.backends.aws_fixtures import (  # noqa: F401 - moto_server is a fixture
    FaultyEC2Endpoint,
    KillAfterMutations,
    MotoServer,
    aws_connection,
    moto_server,
)

from airflow_cloud_paas.backends.aws import AWSBackend
from airflow_cloud_paas.store import DeploymentStore

reconcile_module = pytest.importorskip("airflow_cloud_paas.reconcile")

CHILD = Path(__file__).with_name("aws_child.py")
#: seconds to wait for the child server to start (it imports Airflow) or for one job to end
STARTUP_S = 120
JOB_S = 120
#: what the reconcile job must leave, per interrupted action
RECONCILED = {"create": "CREATE_FAILED", "scale-out": "UPDATE_FAILED", "scale-in": "UPDATE_FAILED",
              "delete": "DELETE_COMPLETE"}
KILL_POINTS = [(action, n) for action, calls in MUTATING_CALLS.items() for n in range(1, len(calls) + 1)]


class ChildServer:
    """The test's end of ``aws_child.py``: start a job, let it go, read how it ended."""

    def __init__(self, log: Path) -> None:
        self.log = log
        with log.open("wb") as err:
            self.process = subprocess.Popen([sys.executable, str(CHILD)], stdin=subprocess.PIPE,
                                            stdout=subprocess.PIPE, stderr=err, text=True)
        assert self._answer(STARTUP_S) == "ready"

    def _answer(self, timeout: float) -> str:
        readable, _, _ = select.select([self.process.stdout], [], [], timeout)
        line = self.process.stdout.readline() if readable else ""
        if not line:
            self.stop()
            pytest.fail(f"the child server did not answer within {timeout} s: {self.log.read_text()[-3000:]}")
        return line.strip()

    def start(self, **job: str) -> int:
        """Fork a child for ``job``; return its pid (it waits for :meth:`go`)."""
        self.process.stdin.write(json.dumps(job) + "\n")
        self.process.stdin.flush()
        return json.loads(self._answer(30))["pid"]

    def go(self) -> int:
        """Let the child run; return its exit code once it ended (``-9``: SIGKILLed)."""
        self.process.stdin.write("go\n")
        self.process.stdin.flush()
        return json.loads(self._answer(JOB_S))["exit"]

    def stop(self) -> None:
        """End the server by its pid (closing its stdin ends its loop)."""
        if self.process.poll() is None:
            self.process.stdin.close()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture(scope="module")
def proxy(moto_server: MotoServer) -> Iterator[FaultyEC2Endpoint]:  # noqa: F811
    endpoint = FaultyEC2Endpoint(moto_server.url, cached=frozenset({"DescribeInstanceTypes"}))
    url = endpoint.start()
    # the worker: one try per call, so a call is made exactly as often as the proxy counts it
    aws_connection("aws_kill_worker", url, config_kwargs={"retries": {"mode": "standard", "total_max_attempts": 1}})
    # setup, reconcile and teardown: a healthy path (no watcher is armed then)
    aws_connection("aws_kill_steady", url, config_kwargs={"retries": {"mode": "standard", "total_max_attempts": 3}})
    yield endpoint
    endpoint.stop()


@pytest.fixture(scope="module")
def steady(proxy: FaultyEC2Endpoint) -> AWSBackend:
    return AWSBackend("aws_kill_steady", wait_timeout=30, poll_interval=0.05)


@pytest.fixture(scope="module")
def ec2(moto_server: MotoServer):  # noqa: F811
    return moto_server.boto3_client()


@pytest.fixture(scope="module")
def children(proxy: FaultyEC2Endpoint, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChildServer]:
    server = ChildServer(tmp_path_factory.mktemp("kill") / "children.log")
    yield server
    server.stop()


@pytest.mark.parametrize(("action", "n"), KILL_POINTS, ids=[f"{a}-after-{n}" for a, n in KILL_POINTS])
def test_killed_worker_is_reconciled(action: str, n: int, proxy: FaultyEC2Endpoint, steady: AWSBackend,
                                     children: ChildServer, ec2, tmp_path: Path) -> None:
    store_url = f"sqlite:///{tmp_path}/store.db"
    store = DeploymentStore(store_url)
    deployment_id = new_deployment_id()
    if action != "create":
        run_action("create", store, steady, deployment_id, "dag/setup")
    in_progress = f"{ACTIONS[action]}_IN_PROGRESS"

    pid = children.start(action=action, store_url=store_url, conn_id="aws_kill_worker",
                         deployment_id=deployment_id, actor=f"dag/{action}")
    kill = KillAfterMutations(n, pid)
    proxy.watchers.append(kill)
    try:
        exit_code = children.go()
    finally:
        proxy.watchers.remove(kill)
    assert exit_code == -signal.SIGKILL, f"the worker was not killed (exit {exit_code}): see {children.log}"
    assert kill.killed_after == MUTATING_CALLS[action][n - 1]
    assert store.get(deployment_id).status.value == in_progress, "nobody should have recorded an end"

    findings = reconcile_module.reconcile(store, lambda record: steady)
    assert [(f.deployment_id, f.before, f.after) for f in findings] == [
        (deployment_id, in_progress, RECONCILED[action])]
    record = store.get(deployment_id)
    assert check_consistent(store, ec2, deployment_id) == RECONCILED[action]
    if action in ("create", "delete"):  # undone or finished: nothing of it anywhere
        check_nothing_left(ec2, deployment_id)
        assert store.resources(deployment_id) == []
    else:  # the update stopped half-way: what exists is recorded, nothing twice
        on_cloud = counts(cloud_rows(ec2, deployment_id))
        assert on_cloud["instances"] in {AFTER["create"]["instances"], AFTER[action]["instances"]}
        assert counts(store_rows(store, deployment_id)) == on_cloud

    reconciled = [e for e in store.events(deployment_id) if e.kind == "reconciled"]
    assert reconciled, f"no 'reconciled' event: {[(e.kind, e.message) for e in store.events(deployment_id)]}"
    said = " ".join(f"{e.message} {json.dumps(e.data)}" for e in reconciled) + f" {record.status_reason}"
    assert in_progress in said or ACTIONS[action].lower() in said.lower(), f"the action is not named: {said}"
    assert str(pid) in said, f"the dead worker (pid {pid}) is not named: {said}"

    # the record is usable again: a normal delete ends it
    if action != "delete":
        run_action("delete", store, steady, deployment_id, "dag/teardown")
        assert check_consistent(store, ec2, deployment_id) == "DELETE_COMPLETE"
        check_nothing_left(ec2, deployment_id)
    # a second pass finds nothing more to do
    assert [f for f in reconcile_module.reconcile(store, lambda record: steady)
            if f.deployment_id == deployment_id] == []
