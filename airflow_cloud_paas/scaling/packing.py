"""Job placement for the scale simulator: which queued job starts on which worker.

The simulator asks a :class:`Placement` at every dispatch (a job arrives, cores free up, a worker
finishes booting) with the queued jobs and the workers that have free cores, and applies the
assignments it returns. A placement sees a job as a :class:`JobInfo`: cores, submit time, campaign
(``group``) and the wall time its user requested (``estimate_s``), never its true runtime. That
only arrives through :meth:`Placement.finished` once the job has ended in the replay, so every
placement is causal by construction.

* :class:`BestFitPlacement` (``fcfs``, the default): the queue first come first served, each job on
  the worker with the fewest free cores that fit it, ties to the worker that has had that much
  room longest. HTCondor's depth-first negotiation, Spark's ``spreadOut=false``, Kubernetes'
  ``MostAllocated``. Blind to runtimes: a worker whose other jobs have ended stays up for one long
  job (a straggler).
* :class:`EstimatePlacement` (``pack``): the queue longest expected runtime first, each job on
  the worker whose running jobs are expected to end closest after it, so the jobs of a worker end
  together and it empties for retirement. The expected runtime is the requested wall time
  corrected by what the replay has learned from the finished jobs of the same campaign (their
  true over requested runtime, in log space, shrunk towards the same figure over all campaigns)
  and combined with the campaign's runtimes so far. A running job that outlives its expected end
  is expected to end at the median of what is left given how long it has run (lognormal
  runtimes: the longer it ran, the longer it runs). The trade-off between wait and node-hours
  is the scaling policy's (``SmartPolicy.tolerance_fraction``): a placement never holds back a
  job that fits.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import ClassVar, Protocol

from airflow_cloud_paas.scaling.errors import PolicyError


@dataclass(frozen=True, slots=True)
class JobInfo:
    """What a placement may know of a job before it ends.

    :param index: the job's position in the trace
    :param cpus: cores it needs on one worker
    :param submit_s: when it was submitted
    :param group: its campaign (the same analysis submitted together), None if unknown
    :param estimate_s: the wall time its user requested (SLURM ``--time``, HTCondor ``+MaxRuntime``), None if none
    """

    index: int
    cpus: int
    submit_s: float
    group: str | None = None
    estimate_s: float | None = None


class Slot(Protocol):
    """A worker as a placement sees it (read only): an up worker that accepts jobs."""

    name: str
    cores: int
    used: int
    stamp: int  # increases each time the worker's free cores change: a smaller stamp has had its room longer


class Placement:
    """Base of the placements: the default assigns first come first served, best fit."""

    name: ClassVar[str] = "placement"

    @property
    def label(self) -> str:
        """Return the name ``placement_from_name`` accepts for this placement."""
        return self.name

    def assign(self, now: float, queued: Sequence[JobInfo], slots: Sequence[Slot]) -> list[tuple[JobInfo, Slot]]:
        """Return the jobs to start now, each with its worker, in the order they start.

        :param now: the replay time
        :param queued: the waiting jobs, oldest first (a job that fitted nowhere keeps its place); read only
        :param slots: the up workers with at least one free core; read only
        """
        raise NotImplementedError

    def started(self, job: JobInfo, node: str, now: float) -> None:
        """Note that ``job`` started on worker ``node``.

        :param job: the job
        :param node: the worker's name
        :param now: the replay time
        """

    def finished(self, job: JobInfo, node: str, now: float, runtime_s: float) -> None:
        """Note that ``job`` ended: only now may its true runtime be known.

        :param job: the job
        :param node: the worker's name
        :param now: the replay time (its end)
        :param runtime_s: how long it ran
        """


class BestFitPlacement(Placement):
    """First come first served, each job on the fullest worker that fits it (the simulator's default)."""

    name = "fcfs"

    def assign(self, now: float, queued: Sequence[JobInfo], slots: Sequence[Slot]) -> list[tuple[JobInfo, Slot]]:
        """Return the queue's jobs, oldest first, each on the worker with the fewest free cores that fit it.

        :param now: the replay time
        :param queued: the waiting jobs, oldest first
        :param slots: the up workers with free cores
        """
        room = {s.name: [s.cores - s.used, s.stamp, s] for s in slots}
        total = sum(r[0] for r in room.values())
        stamp = max((s.stamp for s in slots), default=0)
        out: list[tuple[JobInfo, Slot]] = []
        for job in queued:
            if total <= 0:
                break
            best = None
            for entry in room.values():
                if entry[0] >= job.cpus and (best is None or entry[:2] < best[:2]):
                    best = entry
            if best is None:
                continue  # fits nowhere: it keeps its place, younger smaller jobs may still start
            stamp += 1
            best[0] -= job.cpus
            best[1] = stamp
            total -= job.cpus
            out.append((job, best[2]))
        return out


class EstimatePlacement(Placement):
    """Runtime-aware packing from requested wall times, corrected online by each campaign's finished jobs.

    :param prior_jobs: weight, in finished jobs, of the all-campaign correction in a campaign's own
    :param default_runtime_s: the runtime expected of a job with no estimate before any job has ended
    """

    name = "pack"

    def __init__(self, *, prior_jobs: float = 5.0, default_runtime_s: float = 3600.0) -> None:
        if not prior_jobs > 0 or not default_runtime_s > 0:
            raise PolicyError(
                f"placement pack: need prior_jobs > 0 and default_runtime_s > 0, got "
                f"prior_jobs={prior_jobs}, default_runtime_s={default_runtime_s}"
            )
        self.prior_jobs = prior_jobs
        self.default_runtime_s = default_runtime_s
        # per campaign (and "" for all): [n, sum, sum of squares] of log(true / requested) and of log(true)
        self._ratio: dict[str, list[float]] = {"": [0, 0.0, 0.0]}
        self._runtime: dict[str, list[float]] = {"": [0, 0.0, 0.0]}
        # per worker: job index -> [start, mean and deviation of its log runtime, expected end]
        self._running: dict[str, dict[int, list[float]]] = {}

    def expected_runtime(self, job: JobInfo) -> float:
        """Return the runtime expected of ``job`` (its median) from its estimate and the finished jobs.

        :param job: the job
        """
        return math.exp(self.predict(job)[0])

    def predict(self, job: JobInfo) -> tuple[float, float]:
        """Return the mean and standard deviation of ``job``'s log runtime, as far as the replay has learned.

        Two guesses, each with the spread learned from finished jobs, are combined by precision: the
        requested wall time times the learned true/requested ratio, and the campaign's runtimes so far
        (both shrunk towards the figures over all campaigns while a campaign has few finished jobs).

        :param job: the job
        """
        key = job.group or ""
        mu_g, var_g = self._learned(self._runtime, key)
        if mu_g is None:
            mu_g, var_g = math.log(self.default_runtime_s), _PRIOR_VAR
        if job.estimate_s is None or job.estimate_s <= 0:
            return mu_g, math.sqrt(var_g)
        mu_r, var_r = self._learned(self._ratio, key)
        if mu_r is None:  # nothing has ended yet: the request is all there is
            return math.log(max(job.estimate_s, 1.0)), math.sqrt(_PRIOR_VAR)
        mu_e = math.log(max(job.estimate_s, 1.0)) + mu_r
        precision = 1 / var_r + 1 / var_g
        return (mu_e / var_r + mu_g / var_g) / precision, math.sqrt(1 / precision)

    def _learned(self, table: dict[str, list[float]], key: str) -> tuple[float | None, float]:
        """Return the mean and variance of a log figure for ``key``, shrunk towards all campaigns'."""
        n_all, s_all, q_all = table[""]
        if not n_all:
            return None, _PRIOR_VAR
        mean_all = s_all / n_all
        var_all = max(_MIN_VAR, (q_all / n_all - mean_all**2) if n_all > 1 else _PRIOR_VAR)
        n, s, q = table.get(key, (0, 0.0, 0.0)) if key else (0, 0.0, 0.0)
        w = self.prior_jobs
        mean = (s + w * mean_all) / (n + w)
        var = max(_MIN_VAR, (q + w * (var_all + mean_all**2)) / (n + w) - mean**2)
        return mean, var

    def node_end(self, node: str, now: float) -> float:
        """Return when the jobs running on ``node`` are expected to have ended (``now`` if none run).

        :param node: the worker's name
        :param now: the replay time
        """
        end = now
        for job in self._running.get(node, {}).values():
            if job[3] <= now:  # it outran the expectation: revise it from how long it has run
                job[3] = job[0] + _median_beyond(job[1], job[2], now - job[0])
            end = max(end, job[3])
        return end

    def assign(self, now: float, queued: Sequence[JobInfo], slots: Sequence[Slot]) -> list[tuple[JobInfo, Slot]]:
        """Return the queue's jobs, longest expected first, each on the worker whose jobs end closest after it.

        :param now: the replay time
        :param queued: the waiting jobs
        :param slots: the up workers with free cores
        """
        room = {s.name: [s.cores - s.used, self.node_end(s.name, now), s] for s in slots}
        total = sum(r[0] for r in room.values())
        if not total or not queued:
            return []
        ranked = sorted(queued, key=lambda j: (-self.expected_runtime(j), j.submit_s, j.index))
        out: list[tuple[JobInfo, Slot]] = []
        for job in ranked:
            if total <= 0:
                break
            end = now + self.expected_runtime(job)
            after = before = empty = None
            for entry in room.values():
                if entry[0] < job.cpus:
                    continue
                node_end = entry[1]
                if node_end <= now:
                    if empty is None or entry[2].stamp < empty[2].stamp:
                        empty = entry
                elif node_end >= end:
                    if after is None or node_end < after[1]:
                        after = entry
                elif before is None or node_end > before[1]:
                    before = entry
            # the busy worker whose jobs end closest after it; else the one it extends least (ending last);
            # an empty worker last, so that empty workers stay empty for retirement
            target = after or before or empty
            if target is None:
                continue  # fits nowhere now
            target[0] -= job.cpus
            target[1] = max(target[1], end)
            total -= job.cpus
            out.append((job, target[2]))
        return out

    def started(self, job: JobInfo, node: str, now: float) -> None:
        """Note the job's start and its expected runtime on ``node``.

        :param job: the job
        :param node: the worker's name
        :param now: the replay time
        """
        mu, sigma = self.predict(job)
        self._running.setdefault(node, {})[job.index] = [now, mu, sigma, now + math.exp(mu)]

    def finished(self, job: JobInfo, node: str, now: float, runtime_s: float) -> None:
        """Learn from the job's true runtime (its campaign's correction) and forget it on ``node``.

        :param job: the job
        :param node: the worker's name
        :param now: the replay time (its end)
        :param runtime_s: how long it ran
        """
        running = self._running.get(node)
        if running is not None:
            running.pop(job.index, None)
            if not running:
                del self._running[node]
        keys = ("", job.group) if job.group else ("",)
        log_runtime = math.log(max(runtime_s, 1.0))
        for key in keys:
            _add(self._runtime.setdefault(key, [0, 0.0, 0.0]), log_runtime)
            if job.estimate_s is not None and job.estimate_s > 0:
                _add(self._ratio.setdefault(key, [0, 0.0, 0.0]), log_runtime - math.log(job.estimate_s))


_PRIOR_VAR = 1.0  # variance of a log runtime before any has been seen: runtimes spread over a factor ~e
_MIN_VAR = 0.01
_NORMAL = NormalDist()


def _add(stats: list[float], value: float) -> None:
    stats[0] += 1
    stats[1] += value
    stats[2] += value * value


def _median_beyond(mu: float, sigma: float, elapsed: float) -> float:
    """Return the median of a lognormal runtime known to exceed ``elapsed`` (always beyond it)."""
    if elapsed <= 0:
        return math.exp(mu)
    passed = _NORMAL.cdf((math.log(elapsed) - mu) / sigma)
    if passed >= 1 - 1e-9:  # far in the tail: the longer it ran, the longer it runs
        return 1.5 * elapsed
    return max(1.01 * elapsed + 1.0, math.exp(mu + sigma * _NORMAL.inv_cdf((1 + passed) / 2)))


PLACEMENTS = ("fcfs", "pack")


def placement_from_name(name: str) -> Placement:
    """Return the placement called ``name``: ``fcfs`` (first come first served, best fit) or ``pack``.

    :param name: the placement name
    """
    key = name.strip().lower()
    if key == "fcfs":
        return BestFitPlacement()
    if key == "pack":
        return EstimatePlacement()
    raise PolicyError(f"unknown placement {name!r}; expected one of {', '.join(PLACEMENTS)}")
