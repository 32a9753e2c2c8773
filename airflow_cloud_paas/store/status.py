"""The INDIGO orchestrator's deployment lifecycle: statuses, actions and allowed transitions."""

from __future__ import annotations

import enum
from collections.abc import Mapping

from airflow_cloud_paas.exceptions import InvalidStatusTransitionError


class DeploymentStatus(enum.StrEnum):
    """Status of a deployment, as the INDIGO PaaS orchestrator names it."""

    CREATE_IN_PROGRESS = "CREATE_IN_PROGRESS"
    CREATE_COMPLETE = "CREATE_COMPLETE"
    CREATE_FAILED = "CREATE_FAILED"
    UPDATE_IN_PROGRESS = "UPDATE_IN_PROGRESS"
    UPDATE_COMPLETE = "UPDATE_COMPLETE"
    UPDATE_FAILED = "UPDATE_FAILED"
    DELETE_IN_PROGRESS = "DELETE_IN_PROGRESS"
    DELETE_COMPLETE = "DELETE_COMPLETE"
    DELETE_FAILED = "DELETE_FAILED"

    @property
    def in_progress(self) -> bool:
        """Return whether an action is running on the deployment (nobody else may start one)."""
        return self.value.endswith("_IN_PROGRESS")

    @property
    def failed(self) -> bool:
        """Return whether the last action failed."""
        return self.value.endswith("_FAILED")

    @property
    def action(self) -> Action:
        """Return the action this status belongs to."""
        return Action(self.value.split("_", 1)[0])


class Action(enum.StrEnum):
    """What is done to a deployment: each has an IN_PROGRESS, a COMPLETE and a FAILED status."""

    CREATE = "CREATE"
    UPDATE = "UPDATE"
    DELETE = "DELETE"

    @property
    def in_progress(self) -> DeploymentStatus:
        """Return the status while this action runs."""
        return DeploymentStatus(f"{self.value}_IN_PROGRESS")

    @property
    def complete(self) -> DeploymentStatus:
        """Return the status after this action succeeded."""
        return DeploymentStatus(f"{self.value}_COMPLETE")

    @property
    def failed(self) -> DeploymentStatus:
        """Return the status after this action failed."""
        return DeploymentStatus(f"{self.value}_FAILED")


S = DeploymentStatus

#: status -> the statuses it may move to; ``None`` is a deployment not yet recorded.
#: The same-status move X_IN_PROGRESS -> X_IN_PROGRESS is not listed: only
#: :meth:`DeploymentStore.begin` allows it, for a retry by the same actor.
TRANSITIONS: Mapping[DeploymentStatus | None, frozenset[DeploymentStatus]] = {
    None: frozenset({S.CREATE_IN_PROGRESS}),
    S.CREATE_IN_PROGRESS: frozenset({S.CREATE_COMPLETE, S.CREATE_FAILED}),
    S.CREATE_COMPLETE: frozenset({S.UPDATE_IN_PROGRESS, S.DELETE_IN_PROGRESS}),
    S.CREATE_FAILED: frozenset({S.CREATE_IN_PROGRESS, S.DELETE_IN_PROGRESS}),
    S.UPDATE_IN_PROGRESS: frozenset({S.UPDATE_COMPLETE, S.UPDATE_FAILED}),
    S.UPDATE_COMPLETE: frozenset({S.UPDATE_IN_PROGRESS, S.DELETE_IN_PROGRESS}),
    S.UPDATE_FAILED: frozenset({S.UPDATE_IN_PROGRESS, S.DELETE_IN_PROGRESS}),
    S.DELETE_IN_PROGRESS: frozenset({S.DELETE_COMPLETE, S.DELETE_FAILED}),
    # Deleting again what is deleted is harmless (backends find nothing) and keeps delete DAGs re-runnable.
    S.DELETE_COMPLETE: frozenset({S.DELETE_IN_PROGRESS}),
    S.DELETE_FAILED: frozenset({S.DELETE_IN_PROGRESS}),
}


def as_status(value: DeploymentStatus | str) -> DeploymentStatus:
    """Return ``value`` as a :class:`DeploymentStatus`, or raise a ValueError listing the valid ones.

    :param value: a status or its name
    """
    try:
        return DeploymentStatus(str(value).upper())
    except ValueError:
        valid = ", ".join(s.value for s in DeploymentStatus)
        raise ValueError(f"unknown deployment status {value!r}; use one of {valid}") from None


def as_action(value: Action | str) -> Action:
    """Return ``value`` as an :class:`Action`, or raise a ValueError listing the valid ones.

    :param value: an action or its name (CREATE, UPDATE, DELETE)
    """
    try:
        return Action(str(value).upper())
    except ValueError:
        raise ValueError(f"unknown deployment action {value!r}; use one of CREATE, UPDATE, DELETE") from None


def check_transition(deployment_id: str, current: DeploymentStatus | None, target: DeploymentStatus) -> None:
    """Raise InvalidStatusTransitionError unless the lifecycle allows ``current`` -> ``target``.

    :param deployment_id: the deployment, named in the error
    :param current: its status now (``None`` when not yet recorded)
    :param target: the wanted status
    """
    allowed = TRANSITIONS[current]
    if target in allowed:
        return
    origin = current.value if current else "(new)"
    options = ", ".join(sorted(s.value for s in allowed)) or "nothing (final state)"
    err = InvalidStatusTransitionError(
        f"deployment '{deployment_id}' cannot go from {origin} to {target.value}; "
        f"from {origin} it may only go to {options}"
    )
    err.deployment_id, err.current, err.target = deployment_id, current, target
    raise err
