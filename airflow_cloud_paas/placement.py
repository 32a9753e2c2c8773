"""Provider choice and fallback, as the INDIGO orchestrator did.

A deployment names an ordered list of candidate providers (each a backend plus its connection)
or asks for a ranking: user preference first, then whether every node fits the provider (sizes,
images: checked without touching anything), then the success rate and mean deploy time recorded
in the deployment store. On failure the attempt is deleted (unless ``keep_last_attempt`` and it
is the last one), and the next provider is tried, up to ``max_providers_retry``; a final failure
reports every provider's error.
"""

from __future__ import annotations

import dataclasses
import logging
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from airflow_cloud_paas.backends.base import Backend
from airflow_cloud_paas.deployer import Deployer, delete_and_forget, mark_failed
from airflow_cloud_paas.exceptions import CloudPaaSError
from airflow_cloud_paas.request import DeploymentRequest
from airflow_cloud_paas.store import DeploymentStore

log = logging.getLogger(__name__)


class ProviderFallbackError(CloudPaaSError):
    """Every candidate provider failed; ``errors`` maps each provider to its error."""

    def __init__(self, deployment_id: str, errors: Sequence[tuple[str, str]]) -> None:
        self.deployment_id = deployment_id
        self.errors = list(errors)
        lines = "; ".join(f"{name}: {message}" for name, message in self.errors) or "no provider could be tried"
        super().__init__(f"deployment {deployment_id} failed on every provider tried: {lines}")


@dataclass(frozen=True)
class ProviderCandidate:
    """One provider a deployment may go to: a backend and the Airflow connection to reach it.

    Its :attr:`ref` (``backend`` or ``backend:conn_id``) is what the deployment record keeps, so
    later scale and delete tasks reach the same provider, and what the provider history is keyed by.

    :param backend: the backend's name (local, aws, openstack, ...)
    :param conn_id: the Airflow connection of that provider (region, project, credentials)
    :param options: more keyword arguments for the backend (not recorded; keep them in the connection)
    """

    backend: str
    conn_id: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)

    @property
    def ref(self) -> str:
        """Return ``backend`` or ``backend:conn_id``."""
        return f"{self.backend}:{self.conn_id}" if self.conn_id else self.backend

    @property
    def name(self) -> str:
        """Return the provider's label (its ref)."""
        return self.ref

    @classmethod
    def parse(cls, value: str | Mapping[str, Any] | ProviderCandidate) -> ProviderCandidate:
        """Accept ``"backend"``, ``"backend:conn_id"`` or a mapping with backend/conn_id/options.

        :param value: the candidate as written in a DAG or a trigger form
        """
        if isinstance(value, ProviderCandidate):
            return value
        if isinstance(value, str):
            backend, _, conn_id = value.partition(":")
            return cls(backend=backend, conn_id=conn_id or None)
        return cls(backend=value["backend"], conn_id=value.get("conn_id"), options=dict(value.get("options") or {}))


@dataclass(frozen=True)
class PlacementPolicy:
    """How to choose and retry providers.

    :param candidates: the providers, in the user's order of preference
    :param rank: reorder by fit, then success rate and deploy time from the store
    :param max_providers_retry: how many providers to try at most (default: all)
    :param keep_last_attempt: leave the last failed attempt in place for debugging
    :param timeout_mins: the whole deployment's time limit
    :param provider_timeout_mins: each provider attempt's time limit
    """

    candidates: tuple[ProviderCandidate, ...]
    rank: bool = False
    max_providers_retry: int | None = None
    keep_last_attempt: bool = False
    timeout_mins: float | None = None
    provider_timeout_mins: float | None = None


@dataclass(frozen=True)
class ProviderStats:
    """What the store says about a provider's past deployments."""

    attempts: int = 0
    successes: int = 0
    mean_deploy_s: float | None = None

    @property
    def success_rate(self) -> float:
        """Return successes / attempts (0.5 when there is no history: neither good nor bad)."""
        return self.successes / self.attempts if self.attempts else 0.5


def provider_stats(store: DeploymentStore, name: str, limit: int = 200) -> ProviderStats:
    """Return a provider's success rate and mean deploy time from its recent deployments.

    :param store: the deployment store
    :param name: the provider label recorded as the deployments' backend
    :param limit: how many recent deployments to consider
    """
    attempts = successes = 0
    durations = []
    for record in store.list(limit=limit):
        if record.backend != name:
            continue
        if record.status.startswith("CREATE_") and record.status.endswith("_IN_PROGRESS"):
            continue
        attempts += 1
        if record.status != "CREATE_FAILED":
            successes += 1
            durations.append((record.updated_at - record.created_at).total_seconds())
    return ProviderStats(attempts, successes, statistics.median(durations) if durations else None)


def rank_candidates(
    policy: PlacementPolicy,
    fits: Callable[[ProviderCandidate], str | None],
    store: DeploymentStore | None,
) -> list[tuple[ProviderCandidate, str | None]]:
    """Order the candidates: preference, then fit, then success rate and deploy time (when ranking).

    :param policy: the placement policy
    :param fits: returns None when every node fits the candidate, else why not
    :param store: the store with the providers' history (ranking only)
    """
    scored = []
    for position, candidate in enumerate(policy.candidates):
        reason = fits(candidate)
        if not policy.rank:
            key: tuple = (reason is not None, position)
        else:
            stats = provider_stats(store, candidate.name) if store is not None else ProviderStats()
            key = (reason is not None, -round(stats.success_rate, 2),
                   stats.mean_deploy_s if stats.mean_deploy_s is not None else float("inf"), position)
        scored.append((key, candidate, reason))
    return [(candidate, reason) for _, candidate, reason in sorted(scored, key=lambda item: item[0])]


def deploy_with_fallback(
    request: DeploymentRequest,
    store: DeploymentStore,
    policy: PlacementPolicy,
    make_backend: Callable[[ProviderCandidate], Backend],
) -> tuple[ProviderCandidate, dict[str, Any]]:
    """Deploy on the first provider that succeeds; clean up each failed attempt; return it and the outputs.

    Every attempt executes the same request (inputs validated and ``conn://`` references resolved once), with
    the candidate as its backend; the fit test is the plan's own check, as a create runs it.

    :param request: the deployment request
    :param store: the deployment store
    :param policy: candidates and limits
    :param make_backend: builds a candidate's backend
    """
    started = time.monotonic()
    deployment_id = request.deployment_id
    deployers: dict[str, Deployer] = {}
    errors: list[tuple[str, str]] = []

    def deployer_for(candidate: ProviderCandidate) -> Deployer:
        if candidate.name not in deployers:
            deployers[candidate.name] = Deployer(dataclasses.replace(request, backend=candidate.ref), store,
                                                 make_backend(candidate))
        return deployers[candidate.name]

    def fits(candidate: ProviderCandidate) -> str | None:
        try:
            deployer_for(candidate).check()
        except Exception as err:  # a missing connection, bad credentials, no size or image: not usable
            return f"{type(err).__name__}: {err}"
        return None

    request.plan  # noqa: B018 - a template error for these inputs is the user's, not a provider's: raise it first
    ranked = rank_candidates(policy, fits, store)
    limit = policy.max_providers_retry or len(ranked)
    tried = [(c, r) for c, r in ranked if r is None][:limit]
    errors += [(c.name, f"does not fit: {r}") for c, r in ranked if r is not None]
    if not tried:
        raise ProviderFallbackError(deployment_id, errors)
    for attempt, (candidate, _) in enumerate(tried, 1):
        deployer = deployer_for(candidate)
        last = attempt == len(tried)
        if policy.timeout_mins is not None and time.monotonic() - started > policy.timeout_mins * 60:
            errors.append((candidate.name, f"not tried: the deployment's timeout_mins={policy.timeout_mins} passed"))
            break
        deadline = None
        if policy.provider_timeout_mins is not None:
            deadline = time.monotonic() + policy.provider_timeout_mins * 60
        if policy.timeout_mins is not None:
            total_deadline = started + policy.timeout_mins * 60
            deadline = total_deadline if deadline is None else min(deadline, total_deadline)
        try:
            deployer.begin_create()
            if attempt == 1:  # the record exists now: say which providers were passed over, and why
                for name, reason in errors:
                    store.add_event(deployment_id, "provider_skipped", f"{name}: {reason}", {"provider": name})
            store.set_backend(deployment_id, candidate.name, reason=f"attempt {attempt} of {len(tried)}")
            outputs = deployer.create_all(deadline=deadline)
            store.add_event(deployment_id, "provider_selected", f"deployed on {candidate.name}",
                            {"provider": candidate.name, "attempt": attempt})
            return candidate, outputs
        except Exception as err:  # any provider failure moves on to the next provider
            errors.append((candidate.name, f"{type(err).__name__}: {err}"))
            log.warning("Deployment %s failed on %s: %s", deployment_id, candidate.name, err)
            if store.get(deployment_id).status == "CREATE_IN_PROGRESS":
                mark_failed(store, deployment_id, "CREATE", f"{candidate.name}: {err}")
            if last and policy.keep_last_attempt:
                store.add_event(deployment_id, "attempt_kept", f"last attempt on {candidate.name} kept")
                break
            _cleanup(deployer, candidate, store)
    raise ProviderFallbackError(deployment_id, errors)


def _cleanup(deployer: Deployer, candidate: ProviderCandidate, store: DeploymentStore) -> None:
    """Delete a failed attempt's resources; a cleanup error is recorded, never raised over the cause."""
    deployment_id = deployer.deployment_id
    try:
        deleted = delete_and_forget(store, deployer.backend, deployment_id, forget_missing=True)
        store.add_event(deployment_id, "attempt_cleaned", f"{len(deleted)} resource(s) of the attempt on "
                        f"{candidate.name} deleted", {"provider": candidate.name})
    except Exception as err:  # recorded; the deployment error stays the one raised
        log.exception("Cleanup of the attempt on %s failed", candidate.name)
        store.add_event(deployment_id, "cleanup_failed", f"{candidate.name}: {err}", {"provider": candidate.name})
