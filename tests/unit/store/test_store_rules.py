"""The store's pure rules: the lifecycle table and which inputs are masked."""

from __future__ import annotations

import pytest

from airflow_cloud_paas.store import (
    TRANSITIONS,
    Action,
    DeploymentStatus,
    DeploymentStore,
    DeploymentStoreError,
    InvalidStatusTransitionError,
    check_transition,
    mask_secret_inputs,
)

S = DeploymentStatus


def test_statuses_are_the_indigo_names_and_plain_strings() -> None:
    assert [s.value for s in S] == [
        f"{a}_{p}" for a in ("CREATE", "UPDATE", "DELETE") for p in ("IN_PROGRESS", "COMPLETE", "FAILED")
    ]
    assert S.UPDATE_FAILED == "UPDATE_FAILED" and f"{S.UPDATE_FAILED}" == "UPDATE_FAILED"
    assert S.DELETE_IN_PROGRESS.in_progress and S.CREATE_FAILED.failed and not S.CREATE_COMPLETE.failed
    assert S.UPDATE_COMPLETE.action is Action.UPDATE
    assert (Action.DELETE.in_progress, Action.DELETE.complete, Action.DELETE.failed) == (
        S.DELETE_IN_PROGRESS,
        S.DELETE_COMPLETE,
        S.DELETE_FAILED,
    )


def test_the_lifecycle_table() -> None:
    assert TRANSITIONS[None] == {S.CREATE_IN_PROGRESS}
    for status in S:
        if status.in_progress:  # an action in progress can only end, never start another
            assert TRANSITIONS[status] == {status.action.complete, status.action.failed}
        else:  # delete is allowed from any resting state
            assert S.DELETE_IN_PROGRESS in TRANSITIONS[status]
    updatable = {s for s in S if S.UPDATE_IN_PROGRESS in TRANSITIONS[s]}
    assert updatable == {S.CREATE_COMPLETE, S.UPDATE_COMPLETE, S.UPDATE_FAILED}
    assert {s for s in S if S.CREATE_IN_PROGRESS in TRANSITIONS[s]} == {S.CREATE_FAILED}
    with pytest.raises(InvalidStatusTransitionError, match=r"'d9' cannot go from \(new\) to UPDATE_COMPLETE"):
        check_transition("d9", None, S.UPDATE_COMPLETE)


def test_masking_covers_names_nesting_lists_and_declared_inputs() -> None:
    masked = mask_secret_inputs(
        {
            "Admin-Password": "a",
            "auth_token": "b",
            "my_secret": "c",
            "ssh_private_key": "d",
            "plain": "e",
            "declared": "f",
            "unset_password": None,
            "clusters": [{"name": "x", "token": "g"}],
        },
        secret_names=["declared"],
    )
    assert masked == {
        "Admin-Password": "***",
        "auth_token": "***",
        "my_secret": "***",
        "ssh_private_key": "***",
        "plain": "e",
        "declared": "***",
        "unset_password": None,
        "clusters": [{"name": "x", "token": "***"}],
    }


def test_an_invalid_url_is_a_typed_error_that_does_not_echo_it() -> None:
    with pytest.raises(DeploymentStoreError, match="dialect\\+driver://") as info:
        DeploymentStore("postgresql://paas:pw-Zx81-secret@db:notaport/paas")
    assert "pw-Zx81-secret" not in str(info.value)
