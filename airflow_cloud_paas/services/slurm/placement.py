"""Pack jobs by expected runtime on a SLURM cluster: node weights the elastic engine sets every round.

The scale simulator's ``pack`` placement (:class:`airflow_cloud_paas.scaling.packing.EstimatePlacement`) puts each
job on the worker whose running jobs are expected to end closest after it, so that a worker's jobs end together
and it empties for retirement. SLURM's scheduler cannot be given a per-job preference, but it honours node
weights: a job gets the lowest-weight nodes that fit it (``scontrol update nodename=X weight=N``, no restart).
So each round :func:`apply_weights`:

1. learns, as the simulator does, from the jobs the controller still shows as ended (``MinJobAge``: there is no
   accounting to ask for older ones): their true runtime against their ``--time``, per job name (a campaign);
2. expects each running job to end at its start plus its expected runtime (its ``--time`` corrected by what
   was learned; once outrun, the simulator's median of what is left);
3. takes the job SLURM will place next, the oldest pending one that can start (no hold, dependency or begin
   time), or, when none pends, a job of the typical runtime learned so far (one hour before anything ended);
4. ranks the nodes as ``EstimatePlacement`` would for that job: nodes whose jobs end after it, the closest
   first; then nodes whose jobs end before it, the latest first; empty nodes last; then nodes without room;
   and sets weights 1, 2, 3... in that order (only those that changed).

What weights cannot express: one order serves every job until the next round, so a job whose expected end
differs from the reference job's may land on a node that ``pack`` would not choose for it (a short job behind
a long reference goes to the node ending last); SLURM takes pending jobs in its own priority order, not longest
expected first; a multi-node job takes the lowest weights that fit, whatever each node's end; and the weights
are the engine's: weights set in slurm.conf for the same nodes are overwritten while the engine runs.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from airflow_cloud_paas.scaling.packing import EstimatePlacement, JobInfo
from airflow_cloud_paas.services.slurm.client import SlurmClient, SlurmJob, SlurmNode

#: pending reasons of a job that will not be the next one started, whatever the nodes
NOT_NEXT = frozenset({"Dependency", "DependencyNeverSatisfied", "BeginTime", "JobHeldUser", "JobHeldAdmin",
                      "PartitionTimeLimit"})
#: ended states whose runtime says how long such a job runs (a failed or cancelled job says little)
LEARN_STATES = frozenset({"COMPLETED", "TIMEOUT"})


@dataclass
class _Slot:
    """A node as :class:`EstimatePlacement` sees it."""

    name: str
    cores: int
    used: int
    stamp: int


@dataclass(frozen=True)
class WeightPlan:
    """The node order one round chose, and why.

    :param weights: node -> the weight it should have (1 first)
    :param reference: the job the order was made for (``<id>`` of a pending job, or ``typical``)
    :param reference_runtime_s: that job's expected runtime
    :param node_ends: node -> when its running jobs are expected to end (epoch seconds; absent: it runs none)
    :param changed: node -> the weight set this round (those that already had it are left alone)
    """

    weights: dict[str, int]
    reference: str
    reference_runtime_s: float
    node_ends: dict[str, float] = field(default_factory=dict)
    changed: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        """Return a JSON-able form (history events)."""
        return {"weights": dict(self.weights), "reference": self.reference,
                "reference_runtime_s": round(self.reference_runtime_s, 1),
                "node_ends": {k: round(v, 1) for k, v in self.node_ends.items()}, "changed": dict(self.changed)}


def _info(job: SlurmJob, index: int) -> JobInfo:
    limit = job.time_limit_min * 60.0 if job.time_limit_min else None
    return JobInfo(index, max(1, job.cpus), job.submitted_s or 0.0, job.name or None, limit)


def plan_weights(nodes: Sequence[SlurmNode], jobs: Iterable[SlurmJob], now: float,
                 placement: EstimatePlacement | None = None) -> WeightPlan:
    """Return the node weights that make SLURM place the next job as the ``pack`` placement would.

    :param nodes: the cluster's nodes (``sinfo``)
    :param jobs: the jobs the controller shows (``squeue``: pending, running and recently ended)
    :param now: the current time (epoch seconds)
    :param placement: the packing to ask (a fresh :class:`EstimatePlacement` by default)
    """
    pack = placement or EstimatePlacement()
    jobs = list(jobs)
    ended = sorted((j for j in jobs if j.state in LEARN_STATES and j.started_s and j.ended_s
                    and j.ended_s >= j.started_s), key=lambda j: j.ended_s or 0.0)
    for index, job in enumerate(ended):
        end, start = job.ended_s or now, job.started_s or now
        pack.finished(_info(job, index), "", end, max(1.0, end - start))
    base = len(ended)
    for index, job in enumerate(j for j in jobs if j.state == "RUNNING" and j.started_s):
        for node in job.nodes:
            pack.started(_info(job, base + index), node, job.started_s or now)
    pending = sorted((j for j in jobs if j.state == "PENDING" and j.reason not in NOT_NEXT),
                     key=lambda j: (j.submitted_s or 0.0, j.job_id))
    if pending:
        reference, label = _info(pending[0], -1), pending[0].job_id
    else:  # nothing waits: the next job is expected to run as long as the jobs seen so far, all campaigns
        reference, label = JobInfo(-1, 1, now), "typical"
    usable = [n for n in nodes if n.responding and not n.draining]
    slots = [_Slot(n.name, max(1, n.cpus), min(n.alloc_cpus, max(1, n.cpus)), i) for i, n in enumerate(usable)]
    open_slots = [s for s in slots if s.cores > s.used]
    ends = {s.name: pack.node_end(s.name, now) for s in slots}
    order: list[str] = []
    remaining = list(open_slots)
    while remaining:
        chosen = pack.assign(now, [reference], remaining)
        if not chosen:
            break  # the reference job fits on none of the rest
        name = chosen[0][1].name
        order.append(name)
        remaining = [s for s in remaining if s.name != name]
    # nodes the reference job does not fit: soonest free first (a smaller job may still go there); then full ones
    order += [s.name for s in sorted(remaining, key=lambda s: (ends[s.name], s.stamp))]
    order += [s.name for s in sorted(slots, key=lambda s: (ends[s.name], s.stamp)) if s.name not in order]
    order += [n.name for n in nodes if n.name not in order]
    return WeightPlan({name: i + 1 for i, name in enumerate(order)}, label, pack.expected_runtime(reference),
                      {k: v for k, v in ends.items() if v > now and math.isfinite(v)})


def apply_weights(client: SlurmClient, now: float, placement: EstimatePlacement | None = None) -> WeightPlan:
    """Read the cluster, plan the weights and set those that differ; return the plan (``changed``: what was set).

    :param client: the cluster's client (or a :class:`~airflow_cloud_paas.hooks.slurm.SlurmHook`'s)
    :param now: the current time (epoch seconds)
    :param placement: the packing to ask (a fresh :class:`EstimatePlacement` by default)
    """
    nodes = client.nodes()
    plan = plan_weights(nodes, client.jobs(), now, placement)
    current = {n.name: n.weight for n in nodes}
    changed = {}
    for name, weight in plan.weights.items():
        if current.get(name) != weight:
            client.set_weight(name, weight)
            changed[name] = weight
    return WeightPlan(plan.weights, plan.reference, plan.reference_runtime_s, plan.node_ends, changed)
