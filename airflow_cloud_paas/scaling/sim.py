"""Replay a batch-job trace through a scaling policy: an event simulation of an elastic pool.

Model (what a live HTCondor/Spark/Kubernetes pool scaled by a scheduled DAG does):

* Jobs (``submit_s,runtime_s,cpus``, optionally ``group,estimate_s``: the campaign and the
  requested wall time) queue in submit order. Whenever cores free up, a job arrives or a worker
  finishes booting, the queue is dispatched by the placement (:mod:`.packing`). The default,
  ``fcfs``, is first come, first served: each job, oldest first, goes to the running worker with
  the *fewest* free cores that fit it (best fit; ties go to the worker that has had that much
  room longest). HTCondor fills a machine
  before the next by default (``NEGOTIATOR_DEPTH_FIRST``), as Spark standalone does with
  ``spark.deploy.spreadOut=false`` and Kubernetes with the ``MostAllocated`` score; lightly used
  workers then empty and can be retired. A job that fits nowhere waits; younger, smaller jobs may
  still start (the negotiator considers every idle job each cycle). Dispatch is instant: a live
  pool adds its negotiation delay (seconds with claim reuse). ``pack`` places by expected
  runtime instead (longest first, on the worker whose jobs end closest after it), from the
  requested wall times corrected by the campaign's finished jobs. A placement never sees a job's
  true runtime before the job has ended in the replay.
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
from airflow_cloud_paas.scaling.packing import BestFitPlacement, JobInfo, Placement
from airflow_cloud_paas.scaling.policy import Policy, QueuedJob, Snapshot, Worker, WorkerState

COLUMNS = ("submit_s", "runtime_s", "cpus")
OPTIONAL_COLUMNS = ("group", "estimate_s")  # gen_job_trace.py --with-estimates


@dataclass(frozen=True)
class Job:
    """One trace job.

    :param submit_s: submit time in seconds from the trace start
    :param runtime_s: run time once started
    :param cpus: cores it needs on one worker
    :param group: the campaign it belongs to (jobs submitted together), None if the trace has none
    :param estimate_s: the wall time its user requested (it may run longer), None if the trace has none
    """

    submit_s: float
    runtime_s: float
    cpus: int = 1
    group: str | None = None
    estimate_s: float | None = None


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
    placement: str = "fcfs"
    # with record=True: (time, job index, worker) of every job start, in the order the placement chose them
    placements: list[tuple[float, int, str]] = field(default_factory=list, repr=False, compare=False)

    @property
    def ratio(self) -> float:
        """Return node_hours over bound_node_hours (1.0 is perfect packing)."""
        return self.node_hours / self.bound_node_hours if self.bound_node_hours else math.inf

    def to_dict(self) -> dict[str, Any]:
        """Return the figures as a JSON-able dict."""
        return {
            "policy": self.policy, "placement": self.placement, "jobs": self.jobs,
            "node_hours": round(self.node_hours, 3),
            "bound_node_hours": round(self.bound_node_hours, 3),
            "ratio": round(self.ratio, 4) if self.bound_node_hours else None,
            "mean_wait_s": round(self.mean_wait_s, 2), "p95_wait_s": round(self.p95_wait_s, 2),
            "max_wait_s": round(self.max_wait_s, 2), "boots": self.boots, "peak_nodes": self.peak_nodes,
            "decisions": self.decisions, "makespan_s": round(self.makespan_s, 1), "replay_s": round(self.replay_s, 3),
        }


def parse_trace(lines: Iterable[str], *, source: str = "<trace>") -> list[Job]:
    """Return the jobs of a CSV trace with header ``submit_s,runtime_s,cpus``, sorted by submit time.

    The optional columns ``group`` (a campaign name) and ``estimate_s`` (the requested wall time, a
    number >= 0) are read when the header has them; an empty cell is None.

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
    group_at, estimate_at = (header.index(c) if c in header else None for c in OPTIONAL_COLUMNS)
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
        group = (row[group_at].strip() or None) if group_at is not None else None
        estimate = None
        if estimate_at is not None and row[estimate_at].strip():
            cell = row[estimate_at].strip()
            try:
                estimate = float(cell)
            except ValueError:
                raise TraceError(f"{cell!r} is not a number (seconds requested)", file=source, line=line,
                                 column="estimate_s") from None
            if not math.isfinite(estimate) or estimate < 0:
                raise TraceError(f"{cell!r} must be a finite number of seconds >= 0", file=source, line=line,
                                 column="estimate_s")
        jobs.append(Job(submit, runtime, int(cpus), group, estimate))
    jobs.sort(key=lambda j: j.submit_s)  # stable: equal submit times keep the file's order
    return jobs


def load_trace(path: str | Path) -> list[Job]:
    """Return the jobs of a CSV trace file (``submit_s,runtime_s,cpus[,group,estimate_s]``), sorted by submit time.

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

    __slots__ = ("name", "cores", "used", "booting", "boot_started", "idle_since", "view", "stamp")

    def __init__(self, name: str, cores: int, now: float) -> None:
        self.name = name
        self.cores = cores
        self.used = 0
        self.stamp = 0  # the placement's tie-break: set each time the free cores change
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
             until_released: bool = False, placement: Placement | None = None) -> SimResult:
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
    :param placement: which queued job starts on which worker (default: ``BestFitPlacement``, first come first
        served onto the fullest worker); it learns true runtimes only from the jobs that have ended
    """
    started = time.perf_counter()
    placement = placement if placement is not None else BestFitPlacement()
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
    # what the placement may see of each job: never its runtime
    infos = [JobInfo(i, job.cpus, job.submit_s, job.group, job.estimate_s) for i, job in enumerate(jobs)]
    queue: deque[JobInfo] = deque()
    waiting: set[int] = set()
    queued_view: dict[int, QueuedJob] = {}
    nodes: dict[str, _Node] = {}
    accepting: dict[str, _Node] = {}  # up workers, in the order they came up
    events: list[tuple[float, int, int, Any]] = []  # (time, kind, seq, payload): a heap
    log: list[dict[str, Any]] = []
    placed: list[tuple[float, int, str]] = []
    seq = boots = peak = decisions = done = next_job = serial = free_total = stamp = 0
    node_seconds = 0.0
    now = next_tick = 0.0

    def place(node: _Node, delta: int) -> None:
        nonlocal free_total, stamp
        node.used += delta
        stamp += 1
        node.stamp = stamp
        free_total -= delta
        node.view = None
        node.idle_since = now if node.used == 0 else None

    def dispatch() -> None:
        nonlocal seq, queue
        if not queue or not free_total:
            return
        slots = [node for node in accepting.values() if node.used < node.cores]
        chosen = placement.assign(now, queue, slots)
        for info, slot in chosen:
            node = accepting.get(slot.name)
            if node is not slot or info.index not in waiting or node.cores - node.used < info.cpus:
                raise SimulationError(f"placement {placement.label} started job {info.index + 1} on "
                                      f"{getattr(slot, 'name', slot)!r}, which is not an up worker with "
                                      f"{info.cpus} free core(s), or the job is not queued")
            i = info.index
            waiting.discard(i)
            place(node, info.cpus)
            waits[i] = now - jobs[i].submit_s
            queued_view.pop(i, None)
            heapq.heappush(events, (now + jobs[i].runtime_s, _FINISH, seq, (node, info)))
            seq += 1
            placement.started(info, node.name, now)
            if record:
                placed.append((now, i, node.name))
        if not chosen:
            return
        if all(queue[k].index == info.index for k, (info, _) in enumerate(chosen)):
            for _ in chosen:  # first come first served takes the head of the queue: no copy
                queue.popleft()
        else:
            queue = deque(info for info in queue if info.index in waiting)

    def snapshot() -> Snapshot:
        queued = []
        for info in queue:
            i = info.index
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
            del accepting[name]
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
        stamp += 1
        node.stamp = stamp
        nodes[node.name] = node
        accepting[node.name] = node
        free_total += cores
    peak = len(nodes)

    while done < n:
        now = min(events[0][0] if events else math.inf, jobs[next_job].submit_s if next_job < n else math.inf,
                  next_tick)
        while events and events[0][0] <= now:
            _, kind, _, payload = heapq.heappop(events)
            if kind == _FINISH:
                node, info = payload
                place(node, -info.cpus)
                placement.finished(info, node.name, now, jobs[info.index].runtime_s)
                done += 1
            else:
                node = payload
                node.booting = False
                node.idle_since = now
                node.view = None
                stamp += 1
                node.stamp = stamp
                accepting[node.name] = node
                free_total += node.cores
        while next_job < n and jobs[next_job].submit_s <= now:
            queue.append(infos[next_job])
            waiting.add(next_job)
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
        placement=placement.label,
        placements=placed,
    )
