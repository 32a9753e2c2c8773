"""The contract every backend must pass (Libcloud's idea: one test suite, every driver).

Use it by subclassing :class:`BackendContract` in a ``Test...`` class and providing three fixtures:

- ``backend``: the :class:`~airflow_cloud_paas.backends.base.Backend` under test, on real (or emulated)
  infrastructure, empty at start;
- ``specs``: a :class:`SpecFactory` that builds the specs of the node kinds below;
- ``probe``: a :class:`Probe` that looks at the infrastructure *without* the backend (the process
  table, the emulated EC2 API...), so a test sees what really exists, not what the backend says.

Node kinds: ``compute`` (a host), ``service`` (something that really runs and answers, whose
existence the probe can check), ``failing`` (a node whose creation fails after it has started
to make something) and ``unsupported`` (a type the backend cannot deploy). A probe that can slow the
infrastructure down (:meth:`Probe.slow_boot`) also gets the deadline tests.
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid

import pytest

from airflow_cloud_paas.backends.base import (
    TAG_DEPLOYMENT,
    TAG_INDEX,
    TAG_NODE,
    Backend,
    Resource,
    ResourceSpec,
    ResourceState,
)
from airflow_cloud_paas.exceptions import BackendError, ResourceTimeoutError, UnsupportedNodeError

#: how long a slowed-down stand-in takes to make a ``service`` ready (far more than a deadline test waits)
SLOW_BOOT_SECONDS = 30.0
#: how long a create given a near deadline may take, cleanup included
QUICKLY = 10.0


class SpecFactory:
    """Build the specs the contract needs; subclass per backend."""

    def compute(self, deployment_id: str, node_name: str, index: int = 0) -> ResourceSpec:
        """Return the spec of a host node.

        :param deployment_id: the deployment
        :param node_name: the node template
        :param index: the instance index
        """
        raise NotImplementedError

    def service(self, deployment_id: str, node_name: str, index: int = 0) -> ResourceSpec:
        """Return the spec of a node that really runs something the probe can see.

        :param deployment_id: the deployment
        :param node_name: the node template
        :param index: the instance index
        """
        raise NotImplementedError

    def failing(self, deployment_id: str, node_name: str, index: int = 0) -> ResourceSpec:
        """Return the spec of a node whose creation fails after something was started.

        :param deployment_id: the deployment
        :param node_name: the node template
        :param index: the instance index
        """
        raise NotImplementedError

    def unsupported(self, deployment_id: str, node_name: str, index: int = 0) -> ResourceSpec:
        """Return the spec of a node type the backend cannot deploy.

        :param deployment_id: the deployment
        :param node_name: the node template
        :param index: the instance index
        """
        return ResourceSpec(
            deployment_id=deployment_id,
            node_name=node_name,
            index=index,
            node_type="contract.nodes.NoSuchThing",
            type_hierarchy=("contract.nodes.NoSuchThing", "tosca.nodes.Root"),
        )


class Probe:
    """Look at the infrastructure behind the backend's back; subclass per backend."""

    def exists(self, resource: Resource) -> bool:
        """Return whether the thing behind a resource really exists and runs.

        :param resource: a resource the backend returned
        """
        raise NotImplementedError

    def count(self, deployment_id: str) -> int:
        """Return how many running things (processes, instances) the deployment really has.

        :param deployment_id: the deployment
        """
        raise NotImplementedError

    def tags(self, resource: Resource) -> dict[str, str]:
        """Return the tags the provider holds for a resource.

        :param resource: a resource the backend returned
        """
        raise NotImplementedError

    def stop_behind_backend(self, resource: Resource) -> None:
        """Stop a resource without the backend (a crashed process, a VM stopped in the console).

        :param resource: a resource the backend returned
        """
        pytest.skip("this backend's probe cannot stop a resource behind its back")

    def slow_boot(self, seconds: float) -> contextlib.AbstractContextManager[None]:
        """Return a context in which a ``service`` created takes ``seconds`` to become ready (a slow-booting cloud).

        Override with a ``@contextlib.contextmanager`` method; this default skips the test at once.

        :param seconds: how long
        """
        pytest.skip("this backend's probe cannot slow its infrastructure down")


class BackendContract:
    """The tests every backend must pass; needs the ``backend``, ``specs`` and ``probe`` fixtures."""

    @pytest.fixture
    def deployment_id(self) -> str:
        """Return a fresh deployment id."""
        return f"contract-{uuid.uuid4().hex[:8]}"

    @pytest.fixture(autouse=True)
    def _cleanup(self, backend: Backend, deployment_id: str, probe: Probe):
        yield
        backend.delete(deployment_id)
        assert probe.count(deployment_id) == 0, "delete(deployment) left running things behind"

    # ------------------------------------------------------------------ check
    def test_check_accepts_supported_and_touches_nothing(
        self, backend: Backend, specs: SpecFactory, probe: Probe, deployment_id: str
    ) -> None:
        backend.check(specs.compute(deployment_id, "host"))
        backend.check(specs.service(deployment_id, "svc"))
        assert backend.describe(deployment_id) == []
        assert probe.count(deployment_id) == 0

    def test_check_rejects_unsupported_naming_provider_node_and_type(
        self, backend: Backend, specs: SpecFactory, deployment_id: str
    ) -> None:
        spec = specs.unsupported(deployment_id, "weird_node")
        with pytest.raises(UnsupportedNodeError) as err:
            backend.check(spec)
        assert err.value.provider == backend.name
        assert "weird_node" in str(err.value)
        assert spec.node_type in str(err.value)
        with pytest.raises(UnsupportedNodeError):
            backend.create(spec)
        assert backend.describe(deployment_id) == []

    # ------------------------------------------------------------------ create / describe
    def test_create_returns_running_resource(
        self, backend: Backend, specs: SpecFactory, probe: Probe, deployment_id: str
    ) -> None:
        for spec in (specs.compute(deployment_id, "host"), specs.service(deployment_id, "svc")):
            resource = backend.create(spec)
            assert (resource.deployment_id, resource.node_name, resource.index) == (
                spec.deployment_id,
                spec.node_name,
                spec.index,
            )
            assert resource.backend == backend.name
            assert resource.state == ResourceState.RUNNING
            assert resource.resource_id
            assert probe.exists(resource)
        assert probe.count(deployment_id) >= 1

    def test_create_is_idempotent(self, backend: Backend, specs: SpecFactory, probe: Probe, deployment_id: str) -> None:
        first = backend.create(specs.service(deployment_id, "svc"))
        running = probe.count(deployment_id)
        again = backend.create(specs.service(deployment_id, "svc"))
        assert again.resource_id == first.resource_id
        assert again.state == ResourceState.RUNNING
        assert probe.count(deployment_id) == running, "re-create started a second instance"
        assert [r.resource_id for r in backend.describe(deployment_id)] == [first.resource_id]

    def test_create_group_makes_every_index_once(
        self, backend: Backend, specs: SpecFactory, probe: Probe, deployment_id: str
    ) -> None:
        made = backend.create_group([specs.service(deployment_id, "svc", i) for i in (2, 0, 1)])
        assert [r.index for r in made] == [0, 1, 2]
        assert all(r.state == ResourceState.RUNNING and probe.exists(r) for r in made)
        assert len({r.resource_id for r in made}) == 3
        # a re-run (a retried task) finds what exists and makes only what is missing
        backend.delete(deployment_id, "svc", 1)
        again = backend.create_group([specs.service(deployment_id, "svc", i) for i in range(4)])
        assert [r.index for r in again] == [0, 1, 2, 3]
        assert (again[0].resource_id, again[2].resource_id) == (made[0].resource_id, made[2].resource_id)
        assert all(r.state == ResourceState.RUNNING and probe.exists(r) for r in again)
        assert [(r.node_name, r.index) for r in backend.describe(deployment_id)] == [("svc", i) for i in range(4)]

    def test_describe_is_sorted_and_filtered(self, backend: Backend, specs: SpecFactory, deployment_id: str) -> None:
        backend.create(specs.compute(deployment_id, "b_host", 1))
        backend.create(specs.compute(deployment_id, "a_host", 0))
        backend.create(specs.compute(deployment_id, "b_host", 0))
        found = backend.describe(deployment_id)
        assert [(r.node_name, r.index) for r in found] == [("a_host", 0), ("b_host", 0), ("b_host", 1)]
        assert [(r.node_name, r.index) for r in backend.describe(deployment_id, "b_host")] == [
            ("b_host", 0),
            ("b_host", 1),
        ]
        assert backend.describe(deployment_id, "nobody") == []
        assert backend.describe(f"{deployment_id}-other") == []

    def test_resources_are_serializable(self, backend: Backend, specs: SpecFactory, deployment_id: str) -> None:
        resource = backend.create(specs.service(deployment_id, "svc"))
        data = json.loads(json.dumps(resource.to_dict()))
        assert Resource.from_dict(data) == resource

    def test_resources_carry_tags(self, backend: Backend, specs: SpecFactory, probe: Probe, deployment_id: str) -> None:
        spec = specs.service(deployment_id, "svc", 2)
        tags = probe.tags(backend.create(spec))
        assert tags[TAG_DEPLOYMENT] == deployment_id
        assert tags[TAG_NODE] == "svc"
        assert tags[TAG_INDEX] == "2"

    # ------------------------------------------------------------------ states
    def test_states_are_normalized(self, backend: Backend, specs: SpecFactory, deployment_id: str) -> None:
        assert all(isinstance(state, ResourceState) for state in backend.state_map.values())
        assert backend.normalize_state("no-such-provider-state") == ResourceState.UNKNOWN
        backend.create(specs.compute(deployment_id, "host"))
        backend.create(specs.service(deployment_id, "svc"))
        assert {r.state for r in backend.describe(deployment_id)} == {ResourceState.RUNNING}

    def test_stopped_behind_backend_is_reported_then_recreated(
        self, backend: Backend, specs: SpecFactory, probe: Probe, deployment_id: str
    ) -> None:
        resource = backend.create(specs.service(deployment_id, "svc"))
        probe.stop_behind_backend(resource)
        (seen,) = backend.describe(deployment_id)
        assert seen.state in (ResourceState.STOPPED, ResourceState.ERROR)
        revived = backend.create(specs.service(deployment_id, "svc"))
        assert revived.state == ResourceState.RUNNING
        assert probe.exists(revived)

    # ------------------------------------------------------------------ scale
    def test_scale_out_and_in(self, backend: Backend, specs: SpecFactory, probe: Probe, deployment_id: str) -> None:
        def spec_for(index: int) -> ResourceSpec:
            return specs.service(deployment_id, "svc", index)

        grown = backend.scale(spec_for, 3)
        assert [r.index for r in grown] == [0, 1, 2]
        assert all(r.state == ResourceState.RUNNING and probe.exists(r) for r in grown)
        assert len({r.resource_id for r in grown}) == 3

        shrunk = backend.scale(spec_for, 1)
        assert [r.index for r in shrunk] == [0]
        assert shrunk[0].resource_id == grown[0].resource_id, "scale-in must keep the lowest indices"
        assert not any(probe.exists(r) for r in grown[1:]), "scaled-in instances still run"

        assert backend.scale(spec_for, 0) == []
        assert probe.count(deployment_id) == 0
        with pytest.raises(ValueError):
            backend.scale(spec_for, -1)

    # ------------------------------------------------------------------ delete
    def test_delete_returns_deleted_and_leaves_nothing(
        self, backend: Backend, specs: SpecFactory, probe: Probe, deployment_id: str
    ) -> None:
        made = [
            backend.create(specs.compute(deployment_id, "host")),
            backend.create(specs.service(deployment_id, "svc", 0)),
            backend.create(specs.service(deployment_id, "svc", 1)),
        ]
        deleted = backend.delete(deployment_id)
        assert sorted((r.node_name, r.index) for r in deleted) == [("host", 0), ("svc", 0), ("svc", 1)]
        assert all(r.state == ResourceState.DELETED for r in deleted)
        assert backend.describe(deployment_id) == []
        assert probe.count(deployment_id) == 0
        assert not any(probe.exists(r) for r in made)

    def test_delete_one_instance_and_one_node(
        self, backend: Backend, specs: SpecFactory, probe: Probe, deployment_id: str
    ) -> None:
        host = backend.create(specs.compute(deployment_id, "host"))
        svc0 = backend.create(specs.service(deployment_id, "svc", 0))
        svc1 = backend.create(specs.service(deployment_id, "svc", 1))
        assert [(r.node_name, r.index) for r in backend.delete(deployment_id, "svc", 1)] == [("svc", 1)]
        assert not probe.exists(svc1) and probe.exists(svc0)
        assert [(r.node_name, r.index) for r in backend.delete(deployment_id, "svc")] == [("svc", 0)]
        assert not probe.exists(svc0)
        assert [r.resource_id for r in backend.describe(deployment_id)] == [host.resource_id]

    def test_delete_of_half_created_deployment(
        self, backend: Backend, specs: SpecFactory, probe: Probe, deployment_id: str
    ) -> None:
        made = backend.create(specs.service(deployment_id, "first", 0))
        with pytest.raises(BackendError) as err:
            backend.create(specs.failing(deployment_id, "second", 0))
        assert err.value.provider == backend.name
        # the failed node was cleaned up by create itself; what succeeded is still there
        assert [r.node_name for r in backend.describe(deployment_id)] == ["first"]
        assert probe.exists(made)
        deleted = backend.delete(deployment_id)
        assert [(r.node_name, r.index) for r in deleted] == [("first", 0)]
        assert backend.describe(deployment_id) == []
        assert probe.count(deployment_id) == 0

    # ------------------------------------------------------------------ deadlines
    def test_create_near_its_deadline_times_out_quickly_and_leaves_nothing(
        self, backend: Backend, specs: SpecFactory, probe: Probe, deployment_id: str
    ) -> None:
        slowly = probe.slow_boot(SLOW_BOOT_SECONDS)  # skips here where the stand-in cannot be slowed
        made = backend.create(specs.service(deployment_id, "fast"))
        with slowly:
            started = time.monotonic()
            with pytest.raises(ResourceTimeoutError) as err:
                backend.create(specs.service(deployment_id, "slow"), deadline=time.monotonic() + 0.3)
            took = time.monotonic() - started
        assert took < QUICKLY, f"a create 0.3 s from its deadline took {took:.1f} s"
        assert err.value.provider == backend.name
        # the message says that the attempt's limit cut the wait, not the backend's own timeout
        assert "provider_timeout_mins" in str(err.value)
        # the timed-out node was removed by create itself, completely; what was made before stays
        assert [r.node_name for r in backend.describe(deployment_id)] == ["fast"]
        assert probe.exists(made)
        backend.delete(deployment_id)
        assert probe.count(deployment_id) == 0

    def test_create_past_its_deadline_still_counts_a_resource_already_ready(
        self, backend: Backend, specs: SpecFactory, probe: Probe, deployment_id: str
    ) -> None:
        made = backend.create(specs.service(deployment_id, "svc"))
        # one last look is always taken at the limit: what is ready then is not a timeout
        again = backend.create(specs.service(deployment_id, "svc"), deadline=time.monotonic() - 1)
        assert again.resource_id == made.resource_id and again.state == ResourceState.RUNNING

    def test_delete_of_nonexistent_is_fine(self, backend: Backend, specs: SpecFactory, deployment_id: str) -> None:
        assert backend.delete(f"{deployment_id}-never") == []
        backend.create(specs.compute(deployment_id, "host"))
        assert backend.delete(deployment_id, "nobody") == []
        assert backend.delete(deployment_id, "host", 7) == []
        assert len(backend.describe(deployment_id)) == 1
        assert len(backend.delete(deployment_id)) == 1
        assert backend.delete(deployment_id) == []
