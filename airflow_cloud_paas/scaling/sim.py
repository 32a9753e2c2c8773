"""Replay a batch-job trace through a scaling policy: an event simulation of an elastic pool.

Model (what a live HTCondor/Spark/Kubernetes pool scaled by a scheduled DAG does):

* Jobs (``submit_s,runtime_s,cpus``) queue in submit order. Whenever cores free up, a job
  arrives or a worker finishes booting, the queue is dispatched first come, first served: each
  job, oldest first, goes to the running worker with the *fewest* free cores that fit it (best
  fit; ties go to the worker that has had that much room longest). HTCondor fills a machine
  before the next by default (``NEGOTIATOR_DEPTH_FIRST``), as Spark standalone does with
  ``spark.deploy.spreadOut=false`` and Kubernetes with the ``MostAllocated`` score; lightly used
  workers then empty and can be retired. A job that fits nowhere waits; younger, smaller jobs may
  still start (the negotiator considers every idle job each cycle). Dispatch is instant: a live
  pool adds its negotiation delay (seconds with claim reuse).
* The policy is asked every ``interval_s`` seconds (60 s: a scheduled DAG run or CLUES' loop),
  after the events of that moment; ``every_event`` also asks it after every job arrival, job
  end and boot, an idealised loop that a live deployment cannot run. The policy sees only what a
  live caller can put in a snapshot: the time, the queued jobs with their submit times, the
  workers with their states and used cores.
* The pool is empty at t=0 (a static pool requests its workers at the first decision). An added
  worker counts from its request: it boots for ``boot_s`` then takes jobs. A retired worker runs
  nothing by construction (the policy guard) and is powered off at once. The replay ends when
  the last job ends.
* ``node_hours`` sum each worker's request-to-power-off time; workers still up when the last job
  ends count until then. ``bound_node_hours`` is the trace's core-hours over ``node_cores``
  (perfect packing, no boot, no idle). Waits are start minus submit; ``p95_wait_s`` is the
  nearest-rank 95th percentile over all jobs.
"""

from __future__ import annotations

import csv
import heapq
import math
import time
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from airflow_cloud_paas.scaling.errors import SimulationError, TraceError
from airflow_cloud_paas.scaling.policy import Policy, QueuedJob, Snapshot, Worker, WorkerState

COLUMNS = ("submit_s", "runtime_s", "cpus")


@dataclass(frozen=True)
class Job:
    """One trace job.

    :param submit_s: submit time in seconds from the trace start
    :param runtime_s: run time once started
    :param cpus: cores it needs on one worker
    """

    submit_s: float
    runtime_s: float
    cpus: int = 1


@dataclass(frozen=True)
class SimResult:
    """What a replay measured; ``waits`` has each job's wait in trace order, ``log`` the recorded decisions."""

    policy: str
    jobs: int
    node_hours: float
    bound_node_hours: float
    mean_wait_s: float
    p95_wait_s: float
    max_wait_s: float
    boots: int
    peak_nodes: int
    decisions: int
    makespan_s: float
    replay_s: float
    log: list[dict[str, Any]] = field(default_factory=list, repr=False, compare=False)
    waits: list[float] = field(default_factory=list, repr=False, compare=False)

    @property
    def ratio(self) -> float:
        """Return node_hours over bound_node_hours (1.0 is perfect packing)."""
        return self.node_hours / self.bound_node_hours if self.bound_node_hours else math.inf

    def to_dict(self) -> dict[str, Any]:
        """Return the figures as a JSON-able dict."""
        return {
            "policy": self.policy, "jobs": self.jobs, "node_hours": round(self.node_hours, 3),
            "bound_node_hours": round(self.bound_node_hours, 3),
            "ratio": round(self.ratio, 4) if self.bound_node_hours else None,
            "mean_wait_s": round(self.mean_wait_s, 2), "p95_wait_s": round(self.p95_wait_s, 2),
            "max_wait_s": round(self.max_wait_s, 2), "boots": self.boots, "peak_nodes": self.peak_nodes,
            "decisions": self.decisions, "makespan_s": round(self.makespan_s, 1), "replay_s": round(self.replay_s, 3),
        }


def parse_trace(lines: Iterable[str], *, source: str = "<trace>") -> list[Job]:
    """Return the jobs of a CSV trace with header ``submit_s,runtime_s,cpus``, sorted by submit time.

    :param lines: the CSV text, line by line
    :param source: the file name used in errors
    """
    reader = csv.reader(lines)
    header = next(reader, None)
    if header is None:
        raise TraceError(f"empty trace; expected a header {','.join(COLUMNS)}", file=source, line=1)
    header = [h.strip() for h in header]
    missing = [c for c in COLUMNS if c not in header]
    if missing:
        raise TraceError(f"header {','.join(header)!r} lacks {', '.join(missing)}; expected {','.join(COLUMNS)}",
                         file=source, line=1, column=missing[0])
    idx = [header.index(c) for c in COLUMNS]
    jobs: list[Job] = []
    for row in reader:
        line = reader.line_num
        if not row or all(not cell.strip() for cell in row):
            continue
        if len(row) < len(header):
            raise TraceError(f"{len(row)} field(s), expected {len(header)} ({','.join(header)})", file=source,
                             line=line)
        values: list[float] = []
        for col, i in zip(COLUMNS, idx, strict=True):
            cell = row[i].strip()
            try:
                value = float(cell)
            except ValueError:
                raise TraceError(f"{cell!r} is not a number", file=source, line=line, column=col) from None
            if not math.isfinite(value) or value < 0:
                raise TraceError(f"{cell!r} must be a finite number >= 0", file=source, line=line, column=col)
            values.append(value)
        submit, runtime, cpus = values
        if cpus < 1 or cpus != int(cpus):
            raise TraceError(f"{row[idx[2]].strip()!r} must be a whole number of cpus >= 1", file=source, line=line,
                             column="cpus")
        jobs.append(Job(submit, runtime, int(cpus)))
    jobs.sort(key=lambda j: j.submit_s)  # stable: equal submit times keep the file's order
    return jobs


def load_trace(path: str | Path) -> list[Job]:
    """Return the jobs of a CSV trace file (``submit_s,runtime_s,cpus``), sorted by submit time.

    :param path: the trace file
    """
    try:
        with open(path, newline="") as fh:
            return parse_trace(fh, source=str(path))
    except OSError as err:
        raise TraceError(f"cannot read the trace: {err.strerror}", file=str(path)) from None
    except UnicodeDecodeError:
        raise TraceError("not a text CSV file", file=str(path)) from None


class _Node:
    """A simulated worker (mutable; ``worker()`` caches its immutable view until it changes)."""

    __slots__ = ("name", "cores", "used", "booting", "boot_started", "idle_since", "view")

    def __init__(self, name: str, cores: int, now: float) -> None:
        self.name = name
        self.cores = cores
        self.used = 0
        self.booting = True
        self.boot_started = now
        self.idle_since: float | None = None
        self.view: Worker | None = None

    def worker(self) -> Worker:
        if self.view is None:
            state = WorkerState.BOOTING if self.booting else WorkerState.BUSY if self.used else WorkerState.IDLE
            self.view = Worker(self.name, state, self.cores, self.used, self.idle_since, self.boot_started)
        return self.view


# event kinds, in the order they are handled at equal times: cores free up before a boot ends,
# both before the jobs submitted at that time are queued; the policy looks last
_FINISH, _BOOTED = 0, 1


def simulate(jobs: Sequence[Job], policy: Policy, *, boot_s: float = 180.0, interval_s: float = 60.0,
             every_event: bool = False, record: bool = False, initial_nodes: int = 0,
             until_released: bool = False) -> SimResult:
    """Replay ``jobs`` through ``policy`` and return what it cost and how long jobs waited.

    :param jobs: the trace, sorted by submit time (``load_trace`` sorts)
    :param policy: the scaling policy; its ``limits.node_cores`` is the workers' size
    :param boot_s: seconds from requesting a worker to its first job
    :param interval_s: seconds between two policy decisions
    :param every_event: also decide after every event (an idealised loop no live deployment has)
    :param record: keep every decision that changes the pool, with its reasons, in ``SimResult.log``
    :param initial_nodes: workers already up at time 0 (a deployment starts with its ``count``)
    :param until_released: after the last job, go on deciding until the policy is down to its ``min_nodes`` (or
        stops retiring), so the time to release idle workers is replayed too; ``makespan_s`` is then that time
    """
    started = time.perf_counter()
    cores = policy.limits.node_cores
    if boot_s < 0 or not interval_s > 0:
        raise SimulationError(f"need boot_s >= 0 and interval_s > 0, got boot_s={boot_s}, interval_s={interval_s}")
    for i, job in enumerate(jobs):
        if job.cpus > cores:
            raise SimulationError(f"job {i + 1} (submitted at {job.submit_s:g} s) requests {job.cpus} cpus, more "
                                  f"than a worker's {cores} cores; use a larger node size (--node-cores)")
        if i and job.submit_s < jobs[i - 1].submit_s:
            raise SimulationError(f"jobs must be sorted by submit time (job {i + 1} is earlier than job {i})")

    if isinstance(initial_nodes, bool) or not isinstance(initial_nodes, int) or initial_nodes < 0:
        raise SimulationError(f"initial_nodes is a whole number >= 0, got {initial_nodes!r}")
    n = len(jobs)
    waits = [0.0] * n
    queue: deque[int] = deque()
    queued_view: dict[int, QueuedJob] = {}
    nodes: dict[str, _Node] = {}
    # best fit in O(cores): accepting nodes bucketed by free cores, each bucket in insertion order
    by_free: list[dict[str, _Node]] = [{} for _ in range(cores + 1)]
    events: list[tuple[float, int, int, Any]] = []  # (time, kind, seq, payload): a heap
    log: list[dict[str, Any]] = []
    seq = boots = peak = decisions = done = next_job = serial = free_total = 0
    node_seconds = 0.0
    now = next_tick = 0.0

    def place(node: _Node, delta: int) -> None:
        nonlocal free_total
        del by_free[node.cores - node.used][node.name]
        node.used += delta
        by_free[node.cores - node.used][node.name] = node
        free_total -= delta
        node.view = None
        node.idle_since = now if node.used == 0 else None

    def dispatch() -> None:
        nonlocal seq
        blocked: list[int] = []
        while queue and free_total:
            i = queue.popleft()
            need = jobs[i].cpus
            target = None
            if need <= free_total:
                for free in range(need, cores + 1):
                    bucket = by_free[free]
                    if bucket:
                        target = next(iter(bucket.values()))  # the one that has had this much room longest
                        break
            if target is None:
                blocked.append(i)
                continue
            place(target, need)
            waits[i] = now - jobs[i].submit_s
            queued_view.pop(i, None)
            heapq.heappush(events, (now + jobs[i].runtime_s, _FINISH, seq, (target, need)))
            seq += 1
        queue.extendleft(reversed(blocked))  # the jobs that fit nowhere keep their place at the head

    def snapshot() -> Snapshot:
        queued = []
        for i in queue:
            view = queued_view.get(i)
            if view is None:
                view = queued_view[i] = QueuedJob(jobs[i].cpus, jobs[i].submit_s)
            queued.append(view)
        return Snapshot(now, tuple(queued), tuple(node.worker() for node in nodes.values()))

    def decide() -> None:
        nonlocal seq, boots, peak, decisions, node_seconds, serial, free_total
        decision = policy.decide(snapshot())
        decisions += 1
        if record and decision.changes:
            log.append({"time_s": now, **decision.to_dict()})
        for name in decision.retire:
            node = nodes.get(name)
            if node is None or node.booting or node.used:  # the policy guard makes this unreachable
                raise SimulationError(f"policy {policy.label} retired {name}, which is not an idle worker")
            del nodes[name]
            del by_free[node.cores][name]
            free_total -= node.cores
            node_seconds += now - node.boot_started
        for _ in range(decision.add):
            serial += 1
            node = _Node(f"node-{serial:05d}", cores, now)
            nodes[node.name] = node
            heapq.heappush(events, (now + boot_s, _BOOTED, seq, node))
            seq += 1
            boots += 1
        peak = max(peak, len(nodes))
        if queue and not events and next_job >= n:
            raise SimulationError(f"policy {policy.label} leaves {len(queue)} job(s) queued with no worker to run "
                                  f"them and adds none")

    for _ in range(initial_nodes):
        serial += 1
        node = _Node(f"node-{serial:05d}", cores, 0.0)
        node.booting, node.idle_since, node.view = False, 0.0, None
        nodes[node.name] = node
        by_free[cores][node.name] = node
        free_total += cores
    peak = len(nodes)

    while done < n:
        now = min(events[0][0] if events else math.inf, jobs[next_job].submit_s if next_job < n else math.inf,
                  next_tick)
        while events and events[0][0] <= now:
            _, kind, _, payload = heapq.heappop(events)
            if kind == _FINISH:
                node, need = payload
                place(node, -need)
                done += 1
            else:
                node = payload
                node.booting = False
                node.idle_since = now
                node.view = None
                by_free[node.cores][node.name] = node
                free_total += node.cores
        while next_job < n and jobs[next_job].submit_s <= now:
            queue.append(next_job)
            next_job += 1
        dispatch()
        if now >= next_tick:
            decide()
            next_tick = now + interval_s
        elif every_event:
            decide()

    if until_released:  # the same ticks go on with no work, until idle workers are gone or the policy keeps them
        limit = now + policy.limits.idle_time_s + 100 * interval_s
        while len(nodes) > policy.limits.min_nodes and now < limit:
            now = max(now, next_tick)
            before = len(nodes)
            decide()
            next_tick = now + interval_s
            if len(nodes) > before:
                break  # a policy adding workers with no work: stop rather than loop
    end = now
    for node in nodes.values():
        node_seconds += max(0.0, end - node.boot_started)
    ordered = sorted(waits)
    return SimResult(
        policy=policy.label,
        jobs=n,
        node_hours=node_seconds / 3600,
        bound_node_hours=sum(j.runtime_s * j.cpus for j in jobs) / cores / 3600,
        mean_wait_s=sum(waits) / n if n else 0.0,
        p95_wait_s=ordered[max(0, math.ceil(0.95 * n) - 1)] if n else 0.0,
        max_wait_s=ordered[-1] if n else 0.0,
        boots=boots,
        peak_nodes=peak,
        decisions=decisions,
        makespan_s=end,
        replay_s=time.perf_counter() - started,
        log=log,
        waits=waits,
    )
