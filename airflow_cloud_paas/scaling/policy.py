"""Elastic scaling policies shared by every cluster service (HTCondor, Spark, Kubernetes, Galaxy).

A live caller (a scheduled DAG run, the ``scale-sim`` simulator) builds a :class:`Snapshot` of the
cluster: the time, the queued jobs, and every worker with its state and used cores.
``policy.decide(snapshot)`` returns a :class:`ScaleDecision`: how many workers to add and the
exact names of the workers to retire, with one human-readable reason per choice for the
deployment history.

Every policy's proposal goes through the same guard in :meth:`Policy.decide`, so whatever a policy
wants, a decision never

* takes the pool above ``max_nodes``, or the booting workers above ``max_booting``,
* takes the pool below ``min_nodes``,
* retires a worker that is booting or runs anything: only workers that are up and use no core
  (the caller drains them before powering off, so a job matched in between is never killed),
* adds and retires in the same decision.

Policies may keep state across calls (``smart`` keeps a short demand history): ``state_dict()``
returns it as a JSON-able dict and ``load_state()`` restores it, since each live run is a new
process that persists the state (e.g. in the deployment record).

Mapping a live cluster onto a snapshot: HTCondor idle jobs (``JobStatus == 1``) give
``QueuedJob(RequestCpus, QDate)``, partitionable slots give ``Worker(cores=TotalSlotCpus,
used_cores=TotalSlotCpus - Cpus)``; Spark's master ``/json/`` gives workers' ``cores`` and
``coresused`` and waiting applications' cores; Kubernetes gives pending pods' CPU requests and the
replicas' readiness. Workers requested but not yet in the pool are ``booting``.
"""

from __future__ import annotations

import enum
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar

from airflow_cloud_paas.scaling.errors import PolicyError


class WorkerState(str, enum.Enum):
    """The state of a worker as every service reports it."""

    BOOTING = "booting"  # requested from the cloud, not yet accepting jobs
    IDLE = "idle"  # accepting jobs, running nothing
    BUSY = "busy"  # accepting jobs, running at least one
    DRAINING = "draining"  # accepting no new job (an operator's or a retirement's drain)


@dataclass(frozen=True)
class Worker:
    """One worker (an HTCondor execute node, a Spark worker, a Kubernetes replica).

    :param name: the worker's name, as the caller retires it (the deployment's node instance)
    :param state: booting, idle, busy or draining (a string value is converted)
    :param cores: cores the worker offers to jobs
    :param used_cores: cores its running jobs use (0 when idle or booting)
    :param idle_since_s: when it last became idle (same clock as ``Snapshot.time_s``); None if not idle
    :param boot_started_s: when it was requested from the cloud; None if unknown
    """

    name: str
    state: WorkerState
    cores: int
    used_cores: int = 0
    idle_since_s: float | None = None
    boot_started_s: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.state, WorkerState):
            try:
                object.__setattr__(self, "state", WorkerState(self.state))
            except ValueError:
                raise PolicyError(f"worker {self.name!r}: unknown state {self.state!r}, expected one of "
                                  f"{[s.value for s in WorkerState]}") from None
        if self.cores < 1 or not 0 <= self.used_cores <= self.cores:
            raise PolicyError(f"worker {self.name!r}: need cores >= 1 and 0 <= used_cores <= cores, got "
                              f"cores={self.cores}, used_cores={self.used_cores}")
        if self.state is WorkerState.BOOTING and self.used_cores:
            raise PolicyError(f"worker {self.name!r}: a booting worker cannot run jobs (used_cores="
                              f"{self.used_cores})")

    @property
    def runs_nothing(self) -> bool:
        """Return whether the worker is up and runs no job: the only kind that may be retired."""
        # a worker reported busy is kept even with no core counted: its state may be ahead of the count
        return self.state in (WorkerState.IDLE, WorkerState.DRAINING) and self.used_cores == 0

    @property
    def accepting(self) -> bool:
        """Return whether new jobs may start on the worker now."""
        return self.state in (WorkerState.IDLE, WorkerState.BUSY)

    @property
    def free_cores(self) -> int:
        """Return the cores a new job could use now (0 while booting or draining)."""
        return self.cores - self.used_cores if self.accepting else 0


@dataclass(frozen=True)
class QueuedJob:
    """One job waiting for a worker.

    :param cpus: cores it requests
    :param submitted_s: when it was submitted (HTCondor ``QDate``); same clock as ``Snapshot.time_s``
    """

    cpus: int = 1
    submitted_s: float | None = None


@dataclass(frozen=True)
class Snapshot:
    """What a policy sees of a cluster at one moment.

    :param time_s: now, in seconds on any fixed clock (epoch seconds live, trace seconds simulated)
    :param queued: the jobs waiting for a worker
    :param workers: every worker of the scaled node group, booting ones included
    """

    time_s: float
    queued: tuple[QueuedJob, ...] = ()
    workers: tuple[Worker, ...] = ()

    @property
    def queued_cpus(self) -> int:
        """Return the cores the queued jobs request."""
        return sum(job.cpus for job in self.queued)

    @property
    def used_cores(self) -> int:
        """Return the cores running jobs use."""
        return sum(w.used_cores for w in self.workers)

    @property
    def booting(self) -> list[Worker]:
        """Return the workers still booting."""
        return [w for w in self.workers if w.state is WorkerState.BOOTING]

    @property
    def idle(self) -> list[Worker]:
        """Return the workers that may be retired (up, running nothing)."""
        return [w for w in self.workers if w.runs_nothing]


@dataclass(frozen=True)
class Limits:
    """Bounds every decision keeps, and the CLUES-like settings.

    :param min_nodes: never fewer workers (booting included)
    :param max_nodes: never more workers (booting included)
    :param max_booting: never more workers booting at once
    :param idle_time_s: a worker idle this long is powered off (``smart`` may do it sooner)
    :param spare_nodes: keep this many workers' cores free (idle or booting) beyond the demand
    :param node_cores: cores of a new worker
    """

    min_nodes: int = 0
    max_nodes: int = 256
    max_booting: int = 64
    idle_time_s: float = 600.0
    spare_nodes: int = 0
    node_cores: int = 8

    def __post_init__(self) -> None:
        if self.min_nodes < 0 or self.max_nodes < self.min_nodes:
            raise PolicyError(f"limits: need 0 <= min_nodes <= max_nodes, got min_nodes={self.min_nodes}, "
                              f"max_nodes={self.max_nodes}")
        if self.max_booting < 1:
            raise PolicyError(f"limits: max_booting must be at least 1, got {self.max_booting}")
        if self.idle_time_s < 0 or self.spare_nodes < 0:
            raise PolicyError(f"limits: idle_time_s and spare_nodes must not be negative, got "
                              f"idle_time_s={self.idle_time_s}, spare_nodes={self.spare_nodes}")
        if self.node_cores < 1:
            raise PolicyError(f"limits: node_cores must be at least 1, got {self.node_cores}")


@dataclass(frozen=True)
class ScaleDecision:
    """What to do now, and why.

    :param add: workers to request from the cloud
    :param retire: names of workers that run nothing, to drain and power off
    :param reasons: one human-readable line per choice, for the deployment history
    """

    add: int = 0
    retire: tuple[str, ...] = ()
    reasons: tuple[str, ...] = ()

    @property
    def changes(self) -> bool:
        """Return whether the decision changes the pool."""
        return bool(self.add or self.retire)

    def to_dict(self) -> dict[str, Any]:
        """Return the decision as a JSON-able dict (for the deployment history)."""
        return {"add": self.add, "retire": list(self.retire), "reasons": list(self.reasons)}


def pack_nodes(cpus: Iterable[int], free: Sequence[int], node_cores: int) -> int:
    """Return how many new workers the jobs need beyond the given free cores (first fit decreasing).

    :param cpus: cores each job requests
    :param free: free cores per existing (or booting) worker
    :param node_cores: cores of a new worker
    """
    bins = sorted((f for f in free if f > 0), reverse=True)
    new = 0
    for size, count in sorted(Counter(cpus).items(), reverse=True):
        if size > node_cores:
            raise PolicyError(f"a queued job requests {size} cpus, more than a worker's {node_cores} cores")
        for i, room in enumerate(bins):
            if count == 0:
                break
            fit = min(count, room // size)
            bins[i] -= fit * size
            count -= fit
        if count:
            per_node = node_cores // size
            extra = -(-count // per_node)
            new += extra
            last = count - (extra - 1) * per_node  # jobs on the last new worker; the room left serves smaller jobs
            bins += [node_cores - per_node * size] * (extra - 1) + [node_cores - last * size]
    return new


class Policy:
    """Base of the scaling policies: subclasses propose, :meth:`decide` enforces the limits.

    :param limits: the bounds and CLUES-like settings
    """

    name: ClassVar[str] = "policy"

    def __init__(self, limits: Limits | None = None) -> None:
        self.limits = limits or Limits()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.limits})"

    @property
    def label(self) -> str:
        """Return the name ``policy_from_name`` accepts for this policy."""
        return self.name

    def decide(self, snapshot: Snapshot) -> ScaleDecision:
        """Return the decision for this snapshot, within the limits whatever the policy proposes.

        :param snapshot: the cluster now
        """
        return self._enforce(snapshot, self.propose(snapshot))

    def propose(self, snapshot: Snapshot) -> ScaleDecision:
        """Return the policy's wish, before :meth:`decide` enforces the limits.

        :param snapshot: the cluster now
        """
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        """Return the policy's state across calls as a JSON-able dict."""
        return {}

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore the state ``state_dict()`` returned (in a new process).

        :param state: a dict from ``state_dict()``
        """
        if state:
            raise PolicyError(f"policy {self.label} keeps no state, got keys {sorted(state)}")

    def _enforce(self, snap: Snapshot, wish: ScaleDecision) -> ScaleDecision:
        lim = self.limits
        reasons = list(wish.reasons)
        total = len(snap.workers)
        booting = sum(1 for w in snap.workers if w.state is WorkerState.BOOTING)

        add = max(0, int(wish.add))
        if total + add < lim.min_nodes:
            reasons.append(f"add {lim.min_nodes - total - add} more to reach min_nodes={lim.min_nodes}")
            add = lim.min_nodes - total
        room = max(0, min(lim.max_nodes - total, lim.max_booting - booting))
        if add > room:
            which = "max_nodes" if lim.max_nodes - total <= lim.max_booting - booting else "max_booting"
            reasons.append(f"add {room} instead of {add}: {which} (pool {total}, booting {booting}, "
                           f"max_nodes={lim.max_nodes}, max_booting={lim.max_booting})")
            add = room

        idle = {w.name: w for w in snap.workers if w.runs_nothing}
        retire: list[str] = []
        for name in dict.fromkeys(wish.retire):  # unique, in the policy's order
            if name in idle:
                retire.append(name)
            else:
                reasons.append(f"keep {name}: not an up worker that runs nothing, never retired")
        if total > lim.max_nodes:  # the operator lowered max_nodes: shrink through idle workers only
            longest_idle = sorted((w for w in idle.values() if w.name not in retire),
                                  key=lambda w: (w.idle_since_s if w.idle_since_s is not None else math.inf, w.name))
            extra = [w.name for w in longest_idle][: max(0, total - lim.max_nodes - len(retire))]
            if extra:
                reasons.append(f"retire {', '.join(extra)}: pool {total} above max_nodes={lim.max_nodes}")
                retire += extra
        if add and retire:
            reasons.append(f"keep {', '.join(retire)}: workers are being added in this decision")
            retire = []
        floor = max(0, total - lim.min_nodes)
        if len(retire) > floor:
            reasons.append(f"keep {', '.join(retire[floor:])}: min_nodes={lim.min_nodes}")
            retire = retire[:floor]
        if (add or retire) and not reasons:  # the history must say why, even for a terse policy
            what = f"add {add}" if add else f"retire {', '.join(retire)}"
            reasons.append(f"{what}: proposed by policy {self.label}")
        return ScaleDecision(add=add, retire=tuple(retire), reasons=tuple(reasons))


class StaticPolicy(Policy):
    """A fixed pool of ``n`` workers: boots them and never retires one.

    :param n: the pool size
    :param limits: other settings; ``min_nodes`` and ``max_nodes`` become ``n``
    """

    name = "static"

    def __init__(self, n: int, limits: Limits | None = None) -> None:
        base = limits or Limits()
        if n < 0:
            raise PolicyError(f"static:{n}: the pool size must not be negative")
        super().__init__(Limits(**{**asdict(base), "min_nodes": n, "max_nodes": n,
                                   "max_booting": max(base.max_booting, n, 1)}))
        self.n = n

    @property
    def label(self) -> str:
        """Return ``static:N``."""
        return f"static:{self.n}"

    def propose(self, snapshot: Snapshot) -> ScaleDecision:
        """Return the workers missing from the fixed pool.

        :param snapshot: the cluster now
        """
        missing = self.n - len(snapshot.workers)
        if missing <= 0:
            return ScaleDecision()
        return ScaleDecision(add=missing, reasons=(f"add {missing}: static pool of {self.n}",))


class CluesPolicy(Policy):
    """CLUES-like: power on when queued demand exceeds the booting capacity, off after an idle time.

    Workers are added for the queued jobs that the free cores and the booting workers cannot take
    (first fit decreasing), plus enough to keep ``spare_nodes`` idle; a worker idle for
    ``idle_time_s`` is powered off, keeping ``spare_nodes`` idle ones.

    :param limits: the bounds and settings
    """

    name = "clues"

    def propose(self, snapshot: Snapshot) -> ScaleDecision:
        """Return the CLUES decision for this snapshot.

        :param snapshot: the cluster now
        """
        lim = self.limits
        reasons: list[str] = []
        booting = snapshot.booting
        free = [w.cores for w in booting] + [w.free_cores for w in snapshot.workers if w.accepting]
        add = pack_nodes((j.cpus for j in snapshot.queued), free, lim.node_cores)
        if add:
            reasons.append(f"add {add}: {len(snapshot.queued)} queued job(s) ({snapshot.queued_cpus} cpus) exceed "
                           f"the free cores and the {len(booting)} booting worker(s)")
        idle = [w for w in snapshot.workers if w.runs_nothing and w.accepting]
        spare_now = 0 if add or snapshot.queued else len(idle) + len(booting)
        if lim.spare_nodes > spare_now:
            reasons.append(f"add {lim.spare_nodes - spare_now}: keep spare_nodes={lim.spare_nodes} idle")
            add += lim.spare_nodes - spare_now
        if add:
            return ScaleDecision(add=add, reasons=tuple(reasons))
        now = snapshot.time_s
        expired = [w for w in snapshot.workers if w.runs_nothing
                   and now - (w.idle_since_s if w.idle_since_s is not None else now) >= lim.idle_time_s]
        expired.sort(key=lambda w: (w.idle_since_s, w.name))  # longest idle first
        keep = max(0, lim.spare_nodes - (len(idle) - sum(1 for w in expired if w.accepting)))
        retire = expired[: max(0, len(expired) - keep)]
        reasons += [f"retire {w.name}: idle {now - w.idle_since_s:.0f} s >= idle_time_s={lim.idle_time_s:g}"
                    for w in retire]
        return ScaleDecision(retire=tuple(w.name for w in retire), reasons=tuple(reasons))


@dataclass
class _SmartState:
    """What ``SmartPolicy`` remembers between calls (JSON-able)."""

    last_time_s: float | None = None
    interval_s: float | None = None
    boot_s: float | None = None
    booting_since: dict[str, float] = field(default_factory=dict)
    demand_history: list[list[float]] = field(default_factory=list)  # [time_s, used + queued cores]


class SmartPolicy(Policy):
    """Predictive scaling that packs: boot for the demand expected when new workers come up, retire early.

    From the snapshots it has seen (the past only) it learns how fast the demand (used plus queued
    cores) grew over the last ``growth_window_s``, how long workers take to boot and how often it
    is asked. Each call:

    * scale out: the cores needed when a worker asked for now is up are the used and queued cores
      plus, while jobs queue, the recent growth extrapolated over the boot time plus one interval
      (a campaign's jobs arrive over minutes: the workers for its later jobs are requested with
      the first ones). A small queue is left to the cores that running jobs free:
      ``tolerance_cores`` plus ``tolerance_fraction`` of the used cores (a larger pool frees cores
      sooner). Opening a worker for one or two jobs is what fragments the pool: a worker stays up
      until its last job ends, and running jobs are never moved;
    * scale in: a worker that runs nothing is retired as soon as the others cover the used and
      queued cores and the expected growth (less the tolerance, plus ``hysteresis_cores``), and
      in any case after ``idle_time_s``; a drained worker as soon as it is empty.

    :param limits: the bounds and settings
    :param tolerance_cores: queued cores left to the cores running jobs free, without booting
    :param tolerance_fraction: more queued cores tolerated, as a fraction of the used cores
    :param growth_gain: weight of the extrapolated growth (0: purely reactive)
    :param growth_window_s: the growth is measured over at least this long
    :param hysteresis_cores: free cores kept beyond the need before retiring (avoids flapping)
    :param boot_s_guess: boot time assumed until one has been observed
    """

    name = "smart"

    def __init__(self, limits: Limits | None = None, *, tolerance_cores: float = 4.0, tolerance_fraction: float = 0.2,
                 growth_gain: float = 1.0, growth_window_s: float = 60.0, hysteresis_cores: float = 2.0,
                 boot_s_guess: float = 180.0) -> None:
        super().__init__(limits)
        if tolerance_cores < 0 or tolerance_fraction < 0:
            raise PolicyError(f"smart policy: tolerance_cores and tolerance_fraction must not be negative, got "
                              f"tolerance_cores={tolerance_cores}, tolerance_fraction={tolerance_fraction}")
        self.tolerance_cores = tolerance_cores
        self.tolerance_fraction = tolerance_fraction
        self.growth_gain = growth_gain
        self.growth_window_s = growth_window_s
        self.hysteresis_cores = hysteresis_cores
        self.boot_s_guess = boot_s_guess
        self.state = _SmartState()

    def state_dict(self) -> dict[str, Any]:
        """Return the demand history as a JSON-able dict."""
        return asdict(self.state)

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore a ``state_dict()``.

        :param state: a dict from ``state_dict()``
        """
        known = {f.name for f in fields(_SmartState)}
        unknown = set(state) - known
        if unknown:
            raise PolicyError(f"smart policy state has unknown keys {sorted(unknown)}; expected some of "
                              f"{sorted(known)}")
        try:
            self.state = _SmartState(**{**state, "booting_since": dict(state.get("booting_since") or {}),
                                        "demand_history": [list(map(float, pair)) for pair in
                                                           state.get("demand_history") or []]})
        except (TypeError, ValueError) as err:
            raise PolicyError(f"smart policy state cannot be loaded: {err}") from None

    def _observe(self, snap: Snapshot, demand: float) -> tuple[float, float]:
        """Add this snapshot to the history; return (demand growth in cores/s, horizon in s)."""
        st = self.state
        now = snap.time_s
        dt = None if st.last_time_s is None else now - st.last_time_s
        booting_now = {w.name: w.boot_started_s for w in snap.workers
                       if w.state is WorkerState.BOOTING and w.boot_started_s is not None}
        if dt is not None and dt > 0:
            # moving averages: a live loop's period jitters, and boot times vary by provider
            st.interval_s = dt if st.interval_s is None else 0.8 * st.interval_s + 0.2 * dt
            present = {w.name for w in snap.workers}
            for name, since in st.booting_since.items():
                if name in present and name not in booting_now:  # came up during the last interval
                    sample = max(0.0, now - dt / 2 - since)
                    st.boot_s = sample if st.boot_s is None else 0.8 * st.boot_s + 0.2 * sample
        if dt is None or dt > 0 or not st.demand_history:  # a repeated (or earlier) time adds nothing
            st.booting_since = booting_now
            st.last_time_s = now if dt is None or dt > 0 else st.last_time_s
            st.demand_history.append([now, float(demand)])
        # growth over at least growth_window_s: asked after every event, a single job over a few
        # seconds would otherwise look like a campaign
        cutoff = now - self.growth_window_s
        while len(st.demand_history) > 2 and st.demand_history[1][0] <= cutoff:
            st.demand_history.pop(0)
        t_ref, d_ref = st.demand_history[0]
        growth = max(0.0, demand - d_ref) / max(now - t_ref, self.growth_window_s)
        horizon = (st.boot_s if st.boot_s is not None else self.boot_s_guess) + (st.interval_s or 60.0)
        return growth, horizon

    def propose(self, snapshot: Snapshot) -> ScaleDecision:
        """Return the smart decision for this snapshot.

        :param snapshot: the cluster now
        """
        lim = self.limits
        now = snapshot.time_s
        queued = snapshot.queued_cpus
        growth, horizon = self._observe(snapshot, snapshot.used_cores + queued)
        accepting = [w for w in snapshot.workers if w.accepting]
        booting = snapshot.booting
        used = sum(w.used_cores for w in accepting)
        capacity = sum(w.cores for w in accepting) + sum(w.cores for w in booting)
        expected = self.growth_gain * growth * horizon if queued else 0.0
        need = used + queued + expected + lim.spare_nodes * lim.node_cores
        # only running jobs free cores: with none, every queued job needs a new worker
        tolerance = min(used, self.tolerance_cores + self.tolerance_fraction * used)
        deficit = need - tolerance - capacity
        add = _ceil_div(deficit, lim.node_cores)
        # a multi-core job larger than every free (or booting) worker's room would wait for a worker
        # to empty: it gets new workers whatever the tolerance
        room = max([w.cores for w in booting] + [w.free_cores for w in accepting], default=0)
        blocked = [j.cpus for j in snapshot.queued if j.cpus > 1 and j.cpus > room]
        if blocked:
            add = max(add, pack_nodes(blocked, [], lim.node_cores))
        if add:
            return ScaleDecision(add=add, reasons=(
                f"add {add}: {queued} queued and {used} used cpus, growing {growth * 60:.1f} cpus/min over the "
                f"{horizon:.0f} s until a new worker is up, need {need:.0f} cores, have {capacity} "
                f"(tolerating {tolerance:.0f} queued)",))
        retire: list[str] = []
        reasons: list[str] = []
        left = capacity
        floor = need - min(used, self.tolerance_cores) + self.hysteresis_cores
        idle = sorted((w for w in snapshot.workers if w.runs_nothing),
                      key=lambda w: (w.idle_since_s if w.idle_since_s is not None else now, w.name))
        for w in idle:
            idle_for = now - (w.idle_since_s if w.idle_since_s is not None else now)
            if not w.accepting:
                retire.append(w.name)
                reasons.append(f"retire {w.name}: drained and empty")
            elif left - w.cores >= floor:
                left -= w.cores
                retire.append(w.name)
                reasons.append(f"retire {w.name}: idle {idle_for:.0f} s, the other workers' {left} cores cover "
                               f"the expected need of {need:.0f}")
            elif idle_for >= lim.idle_time_s:
                left -= w.cores
                retire.append(w.name)
                reasons.append(f"retire {w.name}: idle {idle_for:.0f} s >= idle_time_s={lim.idle_time_s:g}")
        return ScaleDecision(retire=tuple(retire), reasons=tuple(reasons))


POLICIES = ("static:N", "clues", "smart")


def policy_from_name(name: str, *, tolerance_fraction: float | None = None, **limits: Any) -> Policy:
    """Return the policy called ``name``: ``static:N``, ``clues`` or ``smart``.

    :param name: the policy name
    :param tolerance_fraction: ``smart`` only: queued cores left to the cores running jobs free, as a fraction of
        the used cores (the trade-off: higher waits longer and boots less); None keeps the default
    :param limits: ``Limits`` fields (min_nodes, max_nodes, max_booting, idle_time_s, spare_nodes, node_cores)
    """
    known = {f.name for f in fields(Limits)}
    unknown = set(limits) - known
    if unknown:
        raise PolicyError(f"unknown limit(s) {sorted(unknown)}; expected some of {sorted(known)}")
    lim = Limits(**limits)
    key, _, arg = name.strip().partition(":")
    key = key.lower()
    if tolerance_fraction is not None and key in ("static", "clues"):
        raise PolicyError(f"policy {name!r}: tolerance_fraction is a setting of the smart policy only")
    if key == "static":
        try:
            n = int(arg)
        except ValueError:
            raise PolicyError(f"policy {name!r}: static needs a pool size, e.g. static:4") from None
        return StaticPolicy(n, lim)
    if arg:
        raise PolicyError(f"policy {name!r}: {key} takes no argument; expected one of {', '.join(POLICIES)}")
    if key == "clues":
        return CluesPolicy(lim)
    if key == "smart":
        if tolerance_fraction is None:
            return SmartPolicy(lim)
        return SmartPolicy(lim, tolerance_fraction=tolerance_fraction)
    raise PolicyError(f"unknown policy {name!r}; expected one of {', '.join(POLICIES)}")


def _ceil_div(a: float, b: float) -> int:
    return max(0, math.ceil(a / b - 1e-9))
