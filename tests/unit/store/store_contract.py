"""The deployment store's contract: every database it runs on (SQLite, PostgreSQL) must pass it.

Subclasses provide a ``store_url`` fixture. Tests use unique ids and owners, so one database may be
shared by a whole session.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import threading
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import event, inspect, text

from airflow_cloud_paas.store import (
    TRANSITIONS,
    DeploymentBusyError,
    DeploymentConflictError,
    DeploymentNotFoundError,
    DeploymentStatus,
    DeploymentStore,
    InvalidStatusTransitionError,
    ResourceUpdate,
    dispose_engines,
)

S = DeploymentStatus

#: from a new deployment (CREATE_IN_PROGRESS), the set_status steps that reach each status
PATHS: dict[DeploymentStatus, list[DeploymentStatus]] = {
    S.CREATE_IN_PROGRESS: [],
    S.CREATE_COMPLETE: [S.CREATE_COMPLETE],
    S.CREATE_FAILED: [S.CREATE_FAILED],
    S.UPDATE_IN_PROGRESS: [S.CREATE_COMPLETE, S.UPDATE_IN_PROGRESS],
    S.UPDATE_COMPLETE: [S.CREATE_COMPLETE, S.UPDATE_IN_PROGRESS, S.UPDATE_COMPLETE],
    S.UPDATE_FAILED: [S.CREATE_COMPLETE, S.UPDATE_IN_PROGRESS, S.UPDATE_FAILED],
    S.DELETE_IN_PROGRESS: [S.CREATE_COMPLETE, S.DELETE_IN_PROGRESS],
    S.DELETE_COMPLETE: [S.CREATE_COMPLETE, S.DELETE_IN_PROGRESS, S.DELETE_COMPLETE],
    S.DELETE_FAILED: [S.CREATE_COMPLETE, S.DELETE_IN_PROGRESS, S.DELETE_FAILED],
}

TEMPLATE = "tosca_definitions_version: tosca_simple_yaml_1_0\ntopology_template: {node_templates: {}}\n"


def new_id(prefix: str = "dep") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def create(store: DeploymentStore, dep_id: str | None = None, **kwargs):
    args = {
        "template": TEMPLATE,
        "template_hash": "hash-1",
        "inputs": {"num_cpus": 2},
        "owner": "alice",
        "backend": "local",
    }
    args.update(kwargs)
    return store.create_deployment(dep_id or new_id(), **args)


def drive_to(store: DeploymentStore, status: DeploymentStatus, **kwargs) -> str:
    """Create a deployment and walk it to ``status`` through allowed transitions; return its id."""
    record = create(store, **kwargs)
    for step in PATHS[status]:
        store.set_status(record.id, step, reason=f"to {step}")
    assert store.get(record.id).status == status
    return record.id


def race(calls: list) -> tuple[list, list[BaseException]]:
    """Run the callables in threads released at the same instant; return (results, errors)."""
    barrier = threading.Barrier(len(calls))
    results: list = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def run(call) -> None:
        barrier.wait(timeout=30)
        try:
            value = call()
        except BaseException as err:  # collected and asserted on by the test
            with lock:
                errors.append(err)
        else:
            with lock:
                results.append(value)

    threads = [threading.Thread(target=run, args=(c,)) for c in calls]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "a racing thread hung"
    return results, errors


class StoreContract:
    """Tests every store database must pass; subclasses define the ``store_url`` fixture."""

    @pytest.fixture
    def store(self, store_url: str) -> DeploymentStore:
        return DeploymentStore(store_url)

    # ------------------------------------------------------------------ schema
    def test_creates_its_tables_idempotently(self, store_url: str) -> None:
        first = DeploymentStore(store_url)
        dep = create(first).id
        dispose_engines()  # forget the engine: the next store runs create_all against existing tables
        second = DeploymentStore(store_url)
        assert second.get(dep).id == dep
        assert {"deployments", "resources", "events"} <= set(inspect(second.engine).get_table_names())

    # ------------------------------------------------------------------ create / get / list
    def test_create_records_a_new_deployment(self, store: DeploymentStore) -> None:
        before = datetime.now(UTC)
        record = create(store, dag_id="dag_x", run_id="run_1", inputs={"num_cpus": 4, "image": "ubuntu"})
        assert record.status is S.CREATE_IN_PROGRESS
        assert record.inputs == {"num_cpus": 4, "image": "ubuntu"}
        assert (record.owner, record.backend, record.dag_id, record.run_id) == (
            "alice",
            "local",
            "dag_x",
            "run_1",
        )
        assert record.template == TEMPLATE and record.template_hash == "hash-1"
        assert record.outputs == {} and record.resources == ()
        for stamp in (record.created_at, record.updated_at):
            assert stamp.tzinfo is not None and stamp.utcoffset() == timedelta(0)
            assert before - timedelta(seconds=5) <= stamp <= datetime.now(UTC) + timedelta(seconds=5)
        assert [e.kind for e in record.events] == ["created", "status"]
        assert record.events[1].data["to"] == "CREATE_IN_PROGRESS" and record.events[1].data["from"] is None
        assert store.get(record.id) == record

    def test_create_is_idempotent_for_the_same_template(self, store: DeploymentStore) -> None:
        first = create(store)
        again = create(store, first.id, inputs={"other": 1}, owner="bob")
        assert again == first  # the stored record, not a second one
        assert len(store.events(first.id)) == 2

    def test_create_with_another_template_is_refused(self, store: DeploymentStore) -> None:
        first = create(store)
        with pytest.raises(DeploymentConflictError, match=first.id) as info:
            create(store, first.id, template_hash="hash-2")
        assert "hash-1" in str(info.value) and "hash-2" in str(info.value)
        assert store.get(first.id).template_hash == "hash-1"

    def test_concurrent_creates_of_one_id_make_one_deployment(self, store: DeploymentStore) -> None:
        dep = new_id()
        results, errors = race([lambda: create(store, dep) for _ in range(4)])
        assert errors == []
        assert len({r.created_at for r in results}) == 1
        assert [e.kind for e in store.events(dep)].count("created") == 1

    def test_get_unknown_id_names_it(self, store: DeploymentStore) -> None:
        missing = new_id("missing")
        for call in (store.get, store.events, store.resources):
            with pytest.raises(DeploymentNotFoundError, match=missing):
                call(missing)
        with pytest.raises(DeploymentNotFoundError, match=missing):
            store.begin(missing, "CREATE", actor="a")

    def test_list_filters_by_owner_and_status_newest_first(self, store: DeploymentStore) -> None:
        owner = new_id("owner")
        a = drive_to(store, S.CREATE_COMPLETE, owner=owner)
        b = drive_to(store, S.CREATE_FAILED, owner=owner)
        c = drive_to(store, S.CREATE_COMPLETE, owner=owner)
        store.upsert_resource(c, "vm", 0, "i-1", "RUNNING", {})
        create(store, owner=new_id("someone-else"))
        listed = store.list(owner=owner)
        assert [r.id for r in listed] == [c, b, a]
        assert listed[0].resources[0].resource_id == "i-1" and listed[0].events == ()
        assert [r.id for r in store.list(owner=owner, status="CREATE_COMPLETE")] == [c, a]
        assert [r.id for r in store.list(owner=owner, status=[S.CREATE_FAILED])] == [b]
        assert len(store.list(owner=owner, limit=2)) == 2
        with pytest.raises(ValueError, match="unknown deployment status"):
            store.list(status="RUNNING")

    def test_user_group_is_stored_and_lists_what_a_user_sees(self, store: DeploymentStore) -> None:
        alice, bob, group = new_id("alice"), new_id("bob"), new_id("physics")
        private = create(store, owner=alice).id
        shared = create(store, owner=alice, user_group=group).id
        bobs = create(store, owner=bob).id
        assert store.get(shared).user_group == group and store.get(private).user_group is None
        assert store.get(shared).to_dict()["user_group"] == group
        assert {r.id for r in store.list(owner=alice)} == {private, shared}
        # a member of the group who owns none of them sees the shared one only
        assert [r.id for r in store.list(owner=new_id("carol"), groups=[group])] == [shared]
        assert {r.id for r in store.list(owner=bob, groups=[new_id("biology")])} == {bobs}
        assert {r.id for r in store.list(owner=bob, groups=[group])} == {bobs, shared}
        assert store.list(owner=new_id("nobody"), groups=[]) == []
        # the group is kept by a second (idempotent) create and through the lifecycle
        assert create(store, shared, owner=alice).user_group == group
        store.begin(shared, "CREATE", actor="run-1")
        store.finish(shared, "CREATE", True, actor="run-1")
        assert store.get(shared).user_group == group

    # ------------------------------------------------------------------ secrets
    def test_secret_inputs_are_never_persisted(self, store: DeploymentStore) -> None:
        secrets = {
            "admin_password": "pw-0a1b2c3d",
            "api_token": "tok-4e5f6a7b",
            "client_secret": "sec-8c9d0e1f",
            "ssh_private_key": "-----BEGIN KEY----- k-2a3b4c5d",
            "custom_credential_field": "custom-6e7f8a9b",  # secret only because the caller says so
        }
        nested = {"db": {"user": "app", "password": "nested-1c2d3e4f"}}
        record = create(
            store,
            inputs={**secrets, **nested, "num_cpus": 2},
            secret_inputs=["custom_credential_field"],
        )
        assert record.inputs == {
            **dict.fromkeys(secrets, "***"),
            "db": {"user": "app", "password": "***"},
            "num_cpus": 2,
        }
        # Proof from the database itself, past the store's API: no table holds any secret value.
        with store.engine.connect() as conn:
            raw = conn.execute(text("SELECT inputs FROM deployments WHERE id = :id"), {"id": record.id}).scalar()
            dumped = " ".join(
                str(row)
                for table in ("deployments", "resources", "events")
                for row in conn.execute(text(f"SELECT * FROM {table}"))
            )
        stored = raw if isinstance(raw, dict) else json.loads(raw)
        assert stored["admin_password"] == "***" and stored["db"]["password"] == "***"
        assert stored["num_cpus"] == 2
        for value in [*secrets.values(), "nested-1c2d3e4f"]:
            assert value not in dumped

    # ------------------------------------------------------------------ lifecycle
    def test_full_lifecycle_through_begin_and_finish(self, store: DeploymentStore) -> None:
        dep = create(store).id
        steps = [
            ("begin", "CREATE", None, S.CREATE_IN_PROGRESS),
            ("finish", "CREATE", False, S.CREATE_FAILED),
            ("begin", "CREATE", None, S.CREATE_IN_PROGRESS),  # retry after a failure
            ("finish", "CREATE", True, S.CREATE_COMPLETE),
            ("begin", "UPDATE", None, S.UPDATE_IN_PROGRESS),
            ("finish", "UPDATE", False, S.UPDATE_FAILED),
            ("begin", "UPDATE", None, S.UPDATE_IN_PROGRESS),
            ("finish", "UPDATE", True, S.UPDATE_COMPLETE),
            ("begin", "DELETE", None, S.DELETE_IN_PROGRESS),
            ("finish", "DELETE", False, S.DELETE_FAILED),
            ("begin", "DELETE", None, S.DELETE_IN_PROGRESS),
            ("finish", "DELETE", True, S.DELETE_COMPLETE),
        ]
        for verb, action, ok, expected in steps:
            if verb == "begin":
                record = store.begin(dep, action, reason=f"start {action}", actor="run-1")
                assert record.actor == "run-1"
            else:
                record = store.finish(dep, action, ok=ok, reason=None if ok else "boom")
                assert record.actor is None
            assert record.status is expected, (verb, action, ok)
        history = [(e.data["from"], e.data["to"]) for e in store.events(dep) if e.kind in ("status", "claim")]
        statuses = [None, "CREATE_IN_PROGRESS", "CREATE_IN_PROGRESS"] + [s[3].value for s in steps[1:]]
        assert history == list(zip(statuses[:-1], statuses[1:], strict=True))
        reasons = [e.data["reason"] for e in store.events(dep) if e.kind == "status"]
        assert "boom" in reasons and "start UPDATE" in reasons

    @pytest.mark.parametrize("start", list(DeploymentStatus), ids=lambda s: s.value)
    def test_set_status_enforces_the_transition_table(self, store: DeploymentStore, start) -> None:
        for target in DeploymentStatus:
            dep = drive_to(store, start)
            version = store.get(dep).version
            if target in TRANSITIONS[start]:
                assert store.set_status(dep, target, reason="ok").status is target
                assert store.events(dep)[-1].data == {
                    "from": start.value,
                    "to": target.value,
                    "reason": "ok",
                    "actor": None,
                }
            else:
                with pytest.raises(InvalidStatusTransitionError) as info:
                    store.set_status(dep, target, reason="refused")
                message = str(info.value)
                assert dep in message and start.value in message and target.value in message
                assert (info.value.deployment_id, info.value.current, info.value.target) == (
                    dep,
                    start,
                    target,
                )
                after = store.get(dep)
                assert (after.status, after.version) == (start, version)  # nothing changed

    def test_begin_retry_by_the_same_actor_is_accepted(self, store: DeploymentStore) -> None:
        dep = drive_to(store, S.CREATE_COMPLETE)
        first = store.begin(dep, "UPDATE", reason="scale", actor="dag/run-7")
        again = store.begin(dep, "UPDATE", reason="scale", actor="dag/run-7")
        assert again.status is S.UPDATE_IN_PROGRESS and again.version == first.version
        assert again.events[-1].kind == "retry"
        # the same actor on a different action is not a retry ...
        with pytest.raises((DeploymentBusyError, InvalidStatusTransitionError)):
            store.begin(dep, "CREATE", actor="dag/run-7")
        # ... but its own teardown may take over an action it never finished (the task was killed)
        deleting = store.begin(dep, "DELETE", actor="dag/run-7")
        assert deleting.status is S.DELETE_IN_PROGRESS
        assert any(e.kind == "interrupted" and "UPDATE_IN_PROGRESS" in e.message for e in deleting.events)

    def test_begin_by_another_actor_is_busy(self, store: DeploymentStore) -> None:
        dep = drive_to(store, S.CREATE_COMPLETE)
        store.begin(dep, "UPDATE", actor="run-a")
        for action in ("UPDATE", "DELETE"):
            with pytest.raises(DeploymentBusyError) as info:
                store.begin(dep, action, actor="run-b")
            assert dep in str(info.value) and "run-a" in str(info.value) and "UPDATE_IN_PROGRESS" in str(info.value)
        assert store.get(dep).actor == "run-a"

    def test_anonymous_begins_never_both_succeed(self, store: DeploymentStore) -> None:
        dep = drive_to(store, S.CREATE_COMPLETE)
        store.begin(dep, "UPDATE")
        with pytest.raises(DeploymentBusyError):
            store.begin(dep, "UPDATE")

    def test_a_new_deployment_is_claimed_by_its_first_actor(self, store: DeploymentStore) -> None:
        dep = create(store).id  # CREATE_IN_PROGRESS, held by nobody yet
        assert store.get(dep).actor is None
        assert store.begin(dep, "CREATE", actor="run-1").actor == "run-1"
        assert store.begin(dep, "CREATE", actor="run-1").actor == "run-1"
        with pytest.raises(DeploymentBusyError):
            store.begin(dep, "CREATE", actor="run-2")

    def test_begin_refuses_what_the_lifecycle_forbids(self, store: DeploymentStore) -> None:
        failed = drive_to(store, S.CREATE_FAILED)
        with pytest.raises(InvalidStatusTransitionError, match="CREATE_FAILED to UPDATE_IN_PROGRESS"):
            store.begin(failed, "UPDATE", actor="a")
        assert store.begin(failed, "DELETE", actor="a").status is S.DELETE_IN_PROGRESS
        deleted = drive_to(store, S.DELETE_COMPLETE)
        with pytest.raises(InvalidStatusTransitionError):
            store.begin(deleted, "CREATE", actor="a")
        with pytest.raises(ValueError, match="CREATE, UPDATE, DELETE"):
            store.begin(deleted, "RESTART", actor="a")

    def test_finish_needs_a_running_action_and_is_idempotent(self, store: DeploymentStore) -> None:
        dep = drive_to(store, S.CREATE_COMPLETE)
        with pytest.raises(InvalidStatusTransitionError, match="no UPDATE is in progress"):
            store.finish(dep, "UPDATE", ok=True)
        store.begin(dep, "UPDATE", actor="run-a")
        with pytest.raises(DeploymentBusyError):
            store.finish(dep, "UPDATE", ok=True, actor="run-b")
        done = store.finish(dep, "UPDATE", ok=True, reason="scaled", actor="run-a")
        again = store.finish(dep, "UPDATE", ok=True)  # a retried task finishing twice
        assert (again.status, again.version, again.status_reason) == (
            S.UPDATE_COMPLETE,
            done.version,
            "scaled",
        )
        with pytest.raises(InvalidStatusTransitionError):
            store.finish(dep, "UPDATE", ok=False)

    def test_a_dead_run_is_recovered_by_marking_it_failed(self, store: DeploymentStore) -> None:
        dep = drive_to(store, S.CREATE_COMPLETE)
        store.begin(dep, "UPDATE", actor="dead-run")
        with pytest.raises(DeploymentBusyError, match="set_status"):
            store.begin(dep, "UPDATE", actor="new-run")
        store.set_status(dep, S.UPDATE_FAILED, reason="worker lost")
        assert store.begin(dep, "UPDATE", actor="new-run").actor == "new-run"

    def test_concurrent_begins_exactly_one_wins(self, store: DeploymentStore) -> None:
        for round_ in range(10):
            dep = drive_to(store, S.CREATE_COMPLETE)
            actions = ["UPDATE", "UPDATE", "DELETE"] if round_ % 2 else ["UPDATE", "DELETE", "DELETE"]
            calls = [
                (lambda d=dep, a=a, i=i: store.begin(d, a, reason="race", actor=f"actor-{i}"))
                for i, a in enumerate(actions)
            ]
            results, errors = race(calls)
            assert len(results) == 1, f"round {round_}: {len(results)} winners, errors {errors}"
            assert len(errors) == len(calls) - 1
            assert all(isinstance(e, DeploymentBusyError) for e in errors), errors
            winner = results[0]
            final = store.get(dep)
            assert (final.status, final.actor) == (winner.status, winner.actor)
            assert final.version == 2 + len(PATHS[S.CREATE_COMPLETE])  # exactly one status change
            assert sum(e.kind == "status" for e in final.events) == 3

    # ------------------------------------------------------------------ resources, outputs, events
    def test_resources_are_upserted_and_removed_with_history(self, store: DeploymentStore) -> None:
        dep = create(store).id
        made = store.upsert_resource(dep, "vm", 1, "i-2", "CREATING", {"ip": None})
        store.upsert_resource(dep, "vm", 0, "i-1", "RUNNING", {"ip": "10.0.0.1", "ports": (22, 80)})
        store.upsert_resource(dep, "db", 0, "p-9", "RUNNING", {})
        assert made.updated_at.tzinfo is not None and made.state == "CREATING"
        again = store.upsert_resource(dep, "vm", 1, "i-2", "CREATING", {"ip": None})  # no change: no event
        assert again == made
        changed = store.upsert_resource(dep, "vm", 1, "i-2", "RUNNING", {"ip": "10.0.0.2"})
        assert changed.state == "RUNNING" and changed.attributes == {"ip": "10.0.0.2"}
        listed = store.resources(dep)
        assert [(r.node_name, r.index) for r in listed] == [("db", 0), ("vm", 0), ("vm", 1)]
        assert listed[1].attributes == {"ip": "10.0.0.1", "ports": [22, 80]}
        assert store.get(dep).resources == tuple(listed)
        assert store.remove_resource(dep, "vm", 1) is True
        assert store.remove_resource(dep, "vm", 1) is False
        assert [(r.node_name, r.index) for r in store.resources(dep)] == [("db", 0), ("vm", 0)]
        events = [e for e in store.events(dep) if e.kind.startswith("resource")]
        assert [(e.kind, e.data["node"], e.data["index"]) for e in events] == [
            ("resource", "vm", 1),
            ("resource", "vm", 0),
            ("resource", "db", 0),
            ("resource", "vm", 1),
            ("resource_removed", "vm", 1),
        ]
        assert events[3].data["previous_state"] == "CREATING" and events[3].data["state"] == "RUNNING"
        with store.engine.connect() as conn:
            count = conn.execute(
                text('SELECT COUNT(*) FROM resources WHERE deployment_id = :d AND node_name = :n AND "index" = 0'),
                {"d": dep, "n": "vm"},
            ).scalar()
        assert count == 1

    def test_a_node_of_many_instances_is_recorded_and_forgotten_in_one_transaction_each(
            self, store: DeploymentStore) -> None:
        dep = create(store).id
        store.upsert_resource(dep, "vm", 0, "i-0", "RUNNING", {"i": 0})
        commits: list[int] = []
        listener = lambda _conn: commits.append(1)  # noqa: E731
        event.listen(store.engine, "commit", listener)
        try:
            made = store.upsert_resources(dep, [ResourceUpdate("vm", i, f"i-{i}", "RUNNING", {"i": i})
                                                for i in range(100)])
            recorded = len(commits)
            assert store.remove_resources(dep, [("vm", i) for i in range(50, 100)] + [("vm", 500)]) == 50
            removed = len(commits) - recorded
        finally:
            event.remove(store.engine, "commit", listener)
        assert (recorded, removed) == (1, 1)
        assert [r.index for r in made] == list(range(100)) and made[7].attributes == {"i": 7}
        assert [r.index for r in store.resources(dep)] == list(range(50))
        kinds = [(e.kind, e.data["index"]) for e in store.events(dep) if e.kind.startswith("resource")]
        # index 0 was recorded before and did not change: no second event for it
        assert kinds == [("resource", i) for i in range(100)] + [("resource_removed", i) for i in range(50, 100)]
        assert store.upsert_resources(dep, []) == [] and store.remove_resources(dep, []) == 0
        with pytest.raises(DeploymentNotFoundError):
            store.upsert_resources("no-such-deployment", [ResourceUpdate("vm", 0, "i-0", "RUNNING")])

    def test_concurrent_upserts_of_one_instance_make_one_row(self, store: DeploymentStore) -> None:
        dep = create(store).id
        results, errors = race([lambda: store.upsert_resource(dep, "vm", 0, "i-1", "RUNNING", {}) for _ in range(4)])
        assert errors == [] and len(results) == 4
        assert len(store.resources(dep)) == 1
        assert sum(e.kind == "resource" for e in store.events(dep)) == 1

    def test_resources_need_json_attributes(self, store: DeploymentStore) -> None:
        dep = create(store).id
        with pytest.raises(TypeError, match=r"vm\[0\].*JSON"):
            store.upsert_resource(dep, "vm", 0, "i-1", "RUNNING", {"when": datetime.now(UTC)})
        assert store.resources(dep) == []

    def test_outputs_and_events(self, store: DeploymentStore) -> None:
        dep = create(store).id
        record = store.set_outputs(dep, {"endpoint": "http://10.0.0.1:8080", "nodes": ["a", "b"]})
        assert record.outputs == {"endpoint": "http://10.0.0.1:8080", "nodes": ["a", "b"]}
        event = store.add_event(dep, "scaled", "wn -> 3", {"node": "wn", "count": 3})
        assert (event.kind, event.message, event.data) == ("scaled", "wn -> 3", {"node": "wn", "count": 3})
        kinds = [e.kind for e in store.events(dep)]
        assert kinds == ["created", "status", "outputs", "scaled"]
        ids = [e.id for e in store.events(dep)]
        assert ids == sorted(ids)
        assert store.get(dep).outputs["nodes"] == ["a", "b"]

    def test_records_are_frozen_and_json_serializable(self, store: DeploymentStore) -> None:
        dep = drive_to(store, S.CREATE_COMPLETE)
        store.upsert_resource(dep, "vm", 0, "i-1", "RUNNING", {"ip": "10.0.0.1"})
        record = store.get(dep)
        with pytest.raises(dataclasses.FrozenInstanceError):
            record.status = S.DELETE_COMPLETE  # type: ignore[misc]
        data = json.loads(json.dumps(record.to_dict()))
        assert data["status"] == "CREATE_COMPLETE"
        assert datetime.fromisoformat(data["created_at"]) == record.created_at
        assert data["resources"][0]["resource_id"] == "i-1"
        assert [e["kind"] for e in data["events"]] == [e.kind for e in record.events]

    def test_delete_record(self, store: DeploymentStore) -> None:
        dep = drive_to(store, S.DELETE_IN_PROGRESS)
        store.upsert_resource(dep, "vm", 0, "i-1", "RUNNING", {})
        with pytest.raises(DeploymentBusyError):
            store.delete_record(dep)
        store.delete_record(dep, force=True)
        with pytest.raises(DeploymentNotFoundError):
            store.get(dep)
        with store.engine.connect() as conn:
            for table in ("resources", "events"):
                left = conn.execute(text(f"SELECT COUNT(*) FROM {table} WHERE deployment_id = :d"), {"d": dep}).scalar()
                assert left == 0, table

    # ------------------------------------------------------------------ leases
    def test_an_action_is_leased_to_the_process_that_runs_it(self, store: DeploymentStore) -> None:
        dep = drive_to(store, S.CREATE_COMPLETE)
        held = store.begin(dep, "UPDATE", actor="run-a")
        assert held.lease_holder.split(":")[1] == str(os.getpid())
        assert held.lease_expires_at > datetime.now(UTC)
        assert store.renew(dep, "run-a", 600) and not store.renew(dep, "run-b")
        assert store.release(dep, "run-a")  # the step ended, the run's next task goes on
        between = store.get(dep)
        assert between.lease_holder is None and between.lease_expires_at > datetime.now(UTC) + timedelta(minutes=10)
        with pytest.raises(DeploymentBusyError):  # held between two steps: still busy for others
            store.begin(dep, "DELETE", actor="run-b")
        done = store.finish(dep, "UPDATE", ok=True)
        assert (done.lease_holder, done.lease_expires_at) == (None, None)
        assert not store.renew(dep, "run-a")  # nothing to renew once the action ended

    def test_an_expired_lease_is_taken_over_and_the_interrupted_action_recorded_failed(
        self, store: DeploymentStore
    ) -> None:
        dep = drive_to(store, S.CREATE_COMPLETE)
        store.begin(dep, "UPDATE", actor="run-a")
        assert store.stale() == [] or dep not in {r.id for r in store.stale()}
        store.renew(dep, "run-a", -1)  # its holder stopped renewing a second ago
        assert dep in {r.id for r in store.stale()}
        taken = store.begin(dep, "DELETE", actor="run-b")
        assert (taken.status, taken.actor) == (S.DELETE_IN_PROGRESS, "run-b")
        expired = [e for e in taken.events if e.kind == "lease_expired"]
        assert len(expired) == 1 and "UPDATE_IN_PROGRESS by run-a interrupted" in expired[0].message
        statuses = [e.data["to"] for e in taken.events if e.kind == "status"]
        assert statuses[-2:] == ["UPDATE_FAILED", "DELETE_IN_PROGRESS"]

    def test_a_lease_held_by_a_dead_process_expires_at_once(self, store: DeploymentStore, tmp_path: Path) -> None:
        dep = drive_to(store, S.CREATE_COMPLETE)
        code = ("import sys; from airflow_cloud_paas.store import DeploymentStore; "
                "DeploymentStore(sys.argv[1]).begin(sys.argv[2], 'UPDATE', actor='run-dead')")
        subprocess.run([sys.executable, "-c", code, store._url.render_as_string(hide_password=False), dep],
                       check=True, timeout=120)
        record = store.get(dep)
        assert record.lease_expires_at > datetime.now(UTC)  # its time has not run out...
        assert record.id in {r.id for r in store.stale()}  # ...but its process is gone
        assert store.begin(dep, "UPDATE", actor="run-new").actor == "run-new"
        assert "is dead" in next(e.message for e in store.get(dep).events if e.kind == "lease_expired")

    def test_the_same_run_resuming_after_its_dead_process_is_recorded_once(self, store: DeploymentStore) -> None:
        dep = drive_to(store, S.CREATE_COMPLETE)
        code = ("import sys; from airflow_cloud_paas.store import DeploymentStore; "
                "DeploymentStore(sys.argv[1]).begin(sys.argv[2], 'UPDATE', actor='run-a')")
        subprocess.run([sys.executable, "-c", code, store._url.render_as_string(hide_password=False), dep],
                       check=True, timeout=120)
        dead = store.get(dep).lease_holder
        assert store.renew(dep, "run-a") and store.renew(dep, "run-a")  # the next try, then its heartbeat
        resumed = [e for e in store.get(dep).events if e.kind == "retry"]
        assert len(resumed) == 1 and resumed[0].data == {"status": "UPDATE_IN_PROGRESS", "actor": "run-a",
                                                         "after": dead}
        assert "is dead" in resumed[0].message
        store.release(dep, "run-a")
        assert store.renew(dep, "run-a")  # the run's next task after a step that ended well: nothing to say
        assert len([e for e in store.get(dep).events if e.kind == "retry"]) == 1

    def test_stale_lists_deleted_deployments_that_still_have_resource_rows(self, store: DeploymentStore) -> None:
        clean, dirty = drive_to(store, S.DELETE_COMPLETE), drive_to(store, S.DELETE_COMPLETE)
        store.upsert_resource(dirty, "vm", 0, "i-1", "RUNNING", {})
        stale = {r.id for r in store.stale()}
        assert dirty in stale and clean not in stale


# ---------------------------------------------------------------------- many processes at once
WORKER = """
import pathlib, sys, time
from airflow_cloud_paas.store import DeploymentStore
url, worker, gate, workers = sys.argv[1], sys.argv[2], pathlib.Path(sys.argv[3]), int(sys.argv[4])
(gate / worker).touch()
while len(list(gate.iterdir())) < workers:  # every worker opens the new store at the same instant
    time.sleep(0.001)
store = DeploymentStore(url)
dep = f"dep-{worker}"
store.create_deployment(dep, "tpl", "h", {}, "owner", "local")
store.begin(dep, "CREATE", actor=worker)
for i in range(25):
    store.upsert_resource(dep, "vm", i, f"id-{i}", "RUNNING", {"i": i})
    store.add_event(dep, "tick", str(i))
store.finish(dep, "CREATE", ok=True)
"""


def run_workers(url: str, tmp_path: Path, workers: int = 3) -> None:
    """Run WORKER in parallel processes that start together on ``url``; fail with a worker's stderr."""
    script, gate = tmp_path / "worker.py", tmp_path / "gate"
    script.write_text(WORKER)
    gate.mkdir()
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), url, f"w{n}", str(gate), str(workers)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in range(workers)
    ]
    errors = [p.communicate(timeout=120)[1] for p in procs]
    for proc, err in zip(procs, errors, strict=True):
        assert proc.returncode == 0, err[-3000:]
        assert "database is locked" not in err


def check_workers_results(store: DeploymentStore, workers: int = 3) -> None:
    """Assert that every WORKER's deployment, resources and events are all there."""
    for n in range(workers):
        record = store.get(f"dep-w{n}")
        assert record.status is DeploymentStatus.CREATE_COMPLETE
        assert [r.index for r in record.resources] == list(range(25))
        assert sum(e.kind == "tick" for e in record.events) == 25
