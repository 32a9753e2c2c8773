"""Every mutating EC2 call of create, scale and delete fails once on the moto server; then the same actor retries.

The faults come from a loopback proxy in front of a real ``moto_server`` process (``FaultyEC2Endpoint``): a
4xx (UnauthorizedOperation) and a timeout (moto carries the call out, the proxy withholds the answer past
the client's read timeout) on every call, through a connection that does not retry. Each failure must
reach the caller as a typed error that names its cause, leave the record FAILED with that cause, and a
retry by the same actor must end with the store and moto in agreement and, after the delete, nothing
tagged with the deployment left on moto. Throttling (RequestLimitExceeded) and a 5xx (InternalError) are
transient: through botocore's default policy, which a connection without ``config_kwargs`` has, every call
refused once is retried and the action completes; when they outlast the retries they are reported as
the 4xx are. (With retries off a 5xx takes the 4xx's path in the backend: only botocore tells them apart.)

One moto server, one proxy and one store serve the whole module; each test has its own deployment.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping

import pytest
from integration.faults.aws_faults import (
    ACTIONS,
    AFTER,
    MUTATING_CALLS,
    check_consistent,
    check_nothing_left,
    cloud_rows,
    counts,
    fault_once,
    new_deployment_id,
    run_action,
    store_rows,
    topology,
)
from unit.backends.aws_fixtures import (  # noqa: F401 - moto_server is a fixture
    FaultyEC2Endpoint,
    Hold,
    MotoServer,
    aws_connection,
    is_mutating,
    moto_server,
)

from airflow_cloud_paas.backends.aws import AWSBackend
from airflow_cloud_paas.exceptions import BackendError
from airflow_cloud_paas.request import DeploymentRequest
from airflow_cloud_paas.store import DeploymentStore

#: seconds the faulty connection waits for an answer (each timeout case costs this much)
READ_TIMEOUT = 2
#: the faults on every call, and what the error (and the record's reason) must name
FAULTS: dict[str, tuple[object, str]] = {
    "4xx": ((403, "UnauthorizedOperation"), "UnauthorizedOperation"),
    "timeout": (Hold(forward=True), "Read timeout"),
}
#: the transient faults: what EC2 answers, botocore's default policy retries
TRANSIENT = {"throttling": (503, "RequestLimitExceeded"), "5xx": (500, "InternalError")}
#: throttling on every action (this also checks MUTATING_CALLS against what the backend calls); botocore retries a
#: 5xx by the same policy, so the create's eleven calls stand for it
CLEARING = [*((action, "throttling") for action in ACTIONS), ("create", "5xx")]
#: calls of a scale whose fault takes the very path the create's takes (the re-tag of software that exists, the
#: ingress rule of a group that exists); the kill suite still breaks the scale after each of them
SAME_PATH_AS_CREATE = {("scale-out", "CreateTags"), ("scale-out", "AuthorizeSecurityGroupIngress"),
                       ("scale-in", "CreateTags")}
#: (action, call): the first call of each mutating action, per deployment action
POINTS = [(action, call) for action, calls in MUTATING_CALLS.items() for call in dict.fromkeys(calls)
          if (action, call) not in SAME_PATH_AS_CREATE]


class RefuseEachCallOnce:
    """A proxy rule: the first attempt of every mutating call is refused with ``answer``.

    The caller's retry of that call passes, so an action whose client retries the fault completes; the
    calls that were refused are kept in order.

    :param answer: (HTTP status, EC2 error code)
    """

    def __init__(self, answer: tuple[int, str]) -> None:
        self.answer = answer
        self.refused: list[str] = []
        self._retrying: set[str] = set()

    def __call__(self, action: str, params: Mapping[str, str]) -> tuple[int, str] | None:
        if not is_mutating(action):
            return None
        if action in self._retrying:  # the retry of a refused call
            self._retrying.discard(action)
            return None
        self._retrying.add(action)
        self.refused.append(action)
        return self.answer


@pytest.fixture(scope="module")
def proxy(moto_server: MotoServer) -> Iterator[FaultyEC2Endpoint]:  # noqa: F811
    endpoint = FaultyEC2Endpoint(moto_server.url, cached=frozenset({"DescribeInstanceTypes"}))
    url = endpoint.start()
    # the faulty attempt: one try per call and a short read timeout, so each fault surfaces at once
    aws_connection("aws_faults_once", url, config_kwargs={
        "retries": {"mode": "standard", "total_max_attempts": 1}, "read_timeout": READ_TIMEOUT, "connect_timeout": 5})
    # botocore's default retry policy, what a connection without config_kwargs has
    aws_connection("aws_faults_default", url)
    # setup, retries and teardown: a healthy path through the same proxy
    aws_connection("aws_faults_steady", url, config_kwargs={"retries": {"mode": "standard", "total_max_attempts": 3}})
    yield endpoint
    endpoint.stop()


def _backend(conn_id: str) -> AWSBackend:
    return AWSBackend(conn_id, wait_timeout=30, poll_interval=0.05)


@pytest.fixture(scope="module")
def steady(proxy: FaultyEC2Endpoint) -> AWSBackend:
    backend = _backend("aws_faults_steady")
    _warm(backend)
    return backend


@pytest.fixture(scope="module")
def once(proxy: FaultyEC2Endpoint, steady: AWSBackend) -> AWSBackend:
    backend = _backend("aws_faults_once")
    _warm(backend)  # moto has loaded its catalogues for `steady`: these reads fit the short timeout
    return backend


@pytest.fixture(scope="module")
def default(proxy: FaultyEC2Endpoint, steady: AWSBackend) -> AWSBackend:
    backend = _backend("aws_faults_default")
    _warm(backend)
    return backend


def _warm(backend: AWSBackend) -> None:
    """Fetch the region's zone, instance types and the template's image once, as every later create reuses them."""
    plan = DeploymentRequest.build(topology(), "warm-up", {}, backend="aws").plan
    for node in ("disk", "head", "wn"):
        backend.check(plan.spec("warm-up", node, 0))
    assert backend.availability_zone


@pytest.fixture(scope="module")
def ec2(moto_server: MotoServer):  # noqa: F811
    return moto_server.boto3_client()


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> DeploymentStore:
    return DeploymentStore(f"sqlite:///{tmp_path_factory.mktemp('faults')}/store.db")


@pytest.fixture(autouse=True)
def clean_proxy(proxy: FaultyEC2Endpoint) -> Iterator[None]:
    proxy.rules.clear()
    proxy.seen.clear()
    yield
    proxy.rules.clear()


def _created(store: DeploymentStore, backend: AWSBackend, ec2, action: str) -> str:
    """Return a new deployment ready for ``action`` (created unless the action is the create)."""
    deployment_id = new_deployment_id()
    if action != "create":
        run_action("create", store, backend, deployment_id, "dag/setup")
        assert counts(cloud_rows(ec2, deployment_id)) == AFTER["create"]
    return deployment_id


def _tear_down(store: DeploymentStore, backend: AWSBackend, ec2, deployment_id: str) -> None:
    """Delete the deployment and check nothing of it is left, on moto or in the store."""
    if store.get(deployment_id).status.value != "DELETE_COMPLETE":
        run_action("delete", store, backend, deployment_id, "dag/teardown")
    assert check_consistent(store, ec2, deployment_id) == "DELETE_COMPLETE"
    assert store.resources(deployment_id) == []
    check_nothing_left(ec2, deployment_id)


@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.parametrize(("action", "call"), POINTS, ids=[f"{action}-{call}" for action, call in POINTS])
def test_a_failed_call_is_reported_and_the_retry_recovers(
    action: str, call: str, fault: str, proxy: FaultyEC2Endpoint, steady: AWSBackend, once: AWSBackend,
    store: DeploymentStore, ec2,
) -> None:
    answer, cause = FAULTS[fault]
    deployment_id = _created(store, steady, ec2, action)
    actor = f"dag/{action}"
    proxy.seen.clear()
    proxy.rules.append(fault_once(call, answer))

    started = time.monotonic()
    with pytest.raises(BackendError) as raised:
        run_action(action, store, once, deployment_id, actor)
    assert call in proxy.seen, f"the action failed before {call}: {raised.value}"
    assert cause in str(raised.value), f"the error does not name its cause {cause!r}: {raised.value!r}"
    assert raised.value.provider == "aws" and deployment_id in (raised.value.resource or "")
    if fault == "timeout":
        assert time.monotonic() - started < READ_TIMEOUT + 20, "the read timeout did not cut the call"
    record = store.get(deployment_id)
    assert record.status.value == f"{ACTIONS[action]}_FAILED"
    assert cause in (record.status_reason or ""), f"the record's reason does not name {cause!r}"
    if fault == "4xx":
        # the backend saw the refusal: what it made for the failed step is gone, nothing on moto is unknown to the
        # store (a delete that failed half-way may leave rows of what it did remove: the retry forgets them); after
        # a lost answer moto may hold what the backend never learned of, found by its tags on the retry below
        unknown = cloud_rows(ec2, deployment_id) - store_rows(store, deployment_id)
        assert not unknown, f"after the failure, moto holds what the store does not list: {sorted(unknown)}"

    proxy.rules.clear()
    run_action(action, store, steady, deployment_id, actor)  # the retried task: same run, a new process
    assert check_consistent(store, ec2, deployment_id) == f"{ACTIONS[action]}_COMPLETE"
    assert counts(store_rows(store, deployment_id)) == AFTER[action], "the retry duplicated or lost something"
    _tear_down(store, steady, ec2, deployment_id)


@pytest.mark.parametrize(("action", "fault"), CLEARING, ids=[f"{action}-{fault}" for action, fault in CLEARING])
def test_a_transient_fault_that_clears_is_retried(action: str, fault: str, proxy: FaultyEC2Endpoint,
                                                  steady: AWSBackend, default: AWSBackend, store: DeploymentStore,
                                                  ec2) -> None:
    deployment_id = _created(store, steady, ec2, action)
    refuse = RefuseEachCallOnce(TRANSIENT[fault])
    proxy.seen.clear()
    proxy.rules.append(refuse)
    run_action(action, store, default, deployment_id, f"dag/{action}")
    # every call was refused once and went through on its retry: none was given up, none was made twice; and the
    # calls are those the suites break one by one (a new call in the backend shows here first)
    assert refuse.refused == MUTATING_CALLS[action]
    assert [a for a in proxy.seen if is_mutating(a)] == [a for a in MUTATING_CALLS[action] for _ in (1, 2)]
    assert check_consistent(store, ec2, deployment_id) == f"{ACTIONS[action]}_COMPLETE"
    assert counts(store_rows(store, deployment_id)) == AFTER[action]
    proxy.rules.clear()
    _tear_down(store, steady, ec2, deployment_id)


@pytest.mark.parametrize("fault", TRANSIENT)
def test_a_transient_fault_that_outlasts_the_retries_is_reported(fault: str, proxy: FaultyEC2Endpoint,
                                                                 steady: AWSBackend, once: AWSBackend,
                                                                 store: DeploymentStore, ec2) -> None:
    status, code = TRANSIENT[fault]
    deployment_id = _created(store, steady, ec2, "create")
    proxy.rules.append(lambda action, params: (status, code) if action == "RunInstances" else None)
    with pytest.raises(BackendError, match=code) as raised:
        run_action("create", store, once, deployment_id, "dag/create")
    assert raised.value.resource == f"{deployment_id}/head/0"
    record = store.get(deployment_id)
    assert record.status.value == "CREATE_FAILED" and code in record.status_reason
    assert store_rows(store, deployment_id) == cloud_rows(ec2, deployment_id)
    proxy.rules.clear()
    run_action("create", store, steady, deployment_id, "dag/create")
    assert check_consistent(store, ec2, deployment_id) == "CREATE_COMPLETE"
    _tear_down(store, steady, ec2, deployment_id)

