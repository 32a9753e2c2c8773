"""Pack jobs by expected runtime in an HTCondor pool: what the startds publish and how the negotiator ranks them.

The scale simulator's ``pack`` placement (:class:`airflow_cloud_paas.scaling.packing.EstimatePlacement`) puts each
job on the worker whose running jobs are expected to end closest after it, so that a worker's jobs end together
and it empties for retirement. In a live pool the negotiator chooses where a job runs, so the placement is given
to it as ClassAd expressions (``CondorPoolSettings(placement="pack")`` renders them):

- every slot of an execute node publishes ``CloudPaaSExpectedEnd``: when the job it runs is expected to end, from
  the slot's ``JobStart`` and the job's requested runtime, copied into the slot ad while it runs
  (``STARTD_JOB_ATTRS``); a job that outran its request is expected to end at 1.5 times the time it has run (the
  simulator's rule for a job far in its runtime distribution's tail);
- the partitionable slot rolls its dynamic slots' values up (``STARTD_PARTITIONABLE_SLOT_ATTRS``: a list
  ``ChildCloudPaaSExpectedEnd`` of their evaluated values) and publishes ``CloudPaaSJobsEnd``, the latest of them:
  when the node is expected to be empty (undefined while it runs nothing);
- the central manager's ``NEGOTIATOR_PRE_JOB_RANK`` ranks the slots a job matches: first a node whose jobs end
  after the job's own expected end, the closest first; then a node whose jobs end before it, the latest first
  (the job extends it least); an empty node last. The same tiers, in the same order, as ``EstimatePlacement``.

Why the negotiator's pre-job rank, not the job's ``Rank``: it is pool-wide (no submit file changes), it comes
before the job's own ``Rank`` (which still breaks ties), and it ranks a partitionable slot by the node's state.
:func:`job_rank` gives the same expression for a job's ``Rank``, for pools whose central manager is not ours.

A job's requested runtime is, in this order, ``CloudPaaSExpectedRuntime`` (seconds; an estimate the user or the
engine sets), ``AllowedExecuteDuration`` (``allowed_execute_duration``), ``AllowedJobDuration``
(``allowed_job_duration``), ``MaxRuntime`` (``+MaxRuntime``, seconds, a common site convention) and
``MaxWallTimeMins`` (``+MaxWallTimeMins``, minutes), else :data:`DEFAULT_RUNTIME_S`.

What HTCondor cannot do here: the negotiator takes a submitter's jobs in the schedd's order (``JobPrio``, then
submission), not longest expected first; a schedd reuses a claim for the submitter's next job without the
negotiator unless ``CLAIM_WORKLIFE`` is 0 (rendered with the placement: a job then waits up to a negotiation
cycle more); the rollup is published at the startd's update interval, so a match made just after a job started
or ended may see the node's previous end; and a campaign's learned correction of requested runtimes is not
computed by the pool: the elastic round (:func:`annotate_expected_runtimes`) writes it into idle jobs as
``CloudPaaSExpectedRuntime``, learned from the schedd's history, where its identity may edit them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # stdlib only at import time: the pool's configuration module imports this one
    from airflow_cloud_paas.scaling.packing import EstimatePlacement, JobInfo

#: a slot ad: when the job it runs is expected to end (epoch seconds), undefined while it runs none
EXPECTED_END = "CloudPaaSExpectedEnd"
#: a partitionable slot ad: when the last of its dynamic slots' jobs is expected to end, undefined if none runs
JOBS_END = "CloudPaaSJobsEnd"
#: a job ad, optional: its expected runtime in seconds, preferred to the requested limits
EXPECTED_RUNTIME = "CloudPaaSExpectedRuntime"
#: job attributes copied into the slot ad while the job runs (``STARTD_JOB_ATTRS``)
RUNTIME_ATTRS = (EXPECTED_RUNTIME, "AllowedExecuteDuration", "AllowedJobDuration", "MaxRuntime", "MaxWallTimeMins")
#: the runtime expected of a job that requests none (the simulator's ``default_runtime_s``)
DEFAULT_RUNTIME_S = 3600
#: rank tiers: a node whose jobs end after the job's, before it, an empty node (each tier spans < 1e10 s)
_AFTER, _BEFORE, _EMPTY = 3e10, 2e10, 1e10
#: above every placement tier: a slot that needs no preemption, as the negotiator's default pre-job rank prefers
_NO_PREEMPTION = 1e11
#: above all: the machine's own ``Rank`` of the job, first in the negotiator's default pre-job rank too
_MACHINE_RANK = 1e12


def runtime_expression(scope: str = "") -> str:
    """Return the ClassAd expression of a job's expected runtime in seconds.

    :param scope: ``""`` in the job's own ad or a slot ad holding its copied attributes, ``"TARGET."`` or
        ``"MY."`` in a match expression
    """
    s = scope
    return (f"({s}{EXPECTED_RUNTIME} ?: {s}AllowedExecuteDuration ?: {s}AllowedJobDuration ?: {s}MaxRuntime "
            f"?: ({s}MaxWallTimeMins * 60) ?: {DEFAULT_RUNTIME_S})")


def expected_end_expression() -> str:
    """Return a slot's ``CloudPaaSExpectedEnd``: its job's start plus its expected runtime, revised once outrun."""
    runtime = runtime_expression()
    return (f"ifThenElse(isUndefined(JobStart), undefined, ifThenElse(JobStart + {runtime} > time(), "
            f"JobStart + {runtime}, time() + (time() - JobStart) / 2))")


def jobs_end_expression() -> str:
    """Return a partitionable slot's ``CloudPaaSJobsEnd``: the latest of its dynamic slots' expected ends."""
    return f"max(Child{EXPECTED_END})"


def _rank(machine: str, job: str) -> str:
    end = f"{machine}{JOBS_END}"
    job_end = f"(time() + {runtime_expression(job)})"
    busy = f"({end} =!= undefined && {end} > time())"
    return (f"({_MACHINE_RANK:.0f} * ({machine}Rank ?: 0) + {_NO_PREEMPTION:.0f} * ({machine}RemoteOwner =?= undefined)"
            f" + ifThenElse({busy}, "
            f"ifThenElse({end} >= {job_end}, {_AFTER:.0f} - ({end} - {job_end}), "
            f"{_BEFORE:.0f} - ({job_end} - {end})), {_EMPTY:.0f}))")


def negotiator_pre_job_rank() -> str:
    """Return the central manager's ``NEGOTIATOR_PRE_JOB_RANK`` (MY: the slot, TARGET: the job); higher is better."""
    return _rank("MY.", "TARGET.")


def job_rank() -> str:
    """Return the same ranking as a job's ``Rank`` (MY: the job, TARGET: the slot), for a negotiator not ours."""
    return _rank("TARGET.", "MY.")


def execute_config_lines() -> list[str]:
    """Return the execute node's configuration lines that publish when its jobs are expected to end."""
    return [
        f"STARTD_JOB_ATTRS = $(STARTD_JOB_ATTRS) {' '.join(RUNTIME_ATTRS)}",
        f"{EXPECTED_END} = {expected_end_expression()}",
        f"STARTD_PARTITIONABLE_SLOT_ATTRS = $(STARTD_PARTITIONABLE_SLOT_ATTRS) {EXPECTED_END}",
        f"{JOBS_END} = {jobs_end_expression()}",
        f"STARTD_ATTRS = $(STARTD_ATTRS) {EXPECTED_END} {JOBS_END}",
        # a claim serves one job: the schedd would otherwise start the submitter's next job on the slot it
        # freed without asking the negotiator, whatever that job's runtime
        "CLAIM_WORKLIFE = 0",
    ]


def central_manager_config_lines() -> list[str]:
    """Return the central manager's configuration lines that make the negotiator pack by expected runtime."""
    return [f"NEGOTIATOR_PRE_JOB_RANK = {negotiator_pre_job_rank()}"]


# ------------------------------------------------------------------------- the engine's round
#: job attributes the round reads (queue and history)
_JOB_PROJECTION = ["ClusterId", "ProcId", "JobStatus", "RequestCpus", "QDate", "JobBatchName",
                   "JobCurrentStartDate", "CompletionDate", *RUNTIME_ATTRS]
_IDLE, _COMPLETED = 1, 4


def requested_runtime(ad: Any) -> float | None:
    """Return the runtime a job ad requests in seconds (its limits, not ``CloudPaaSExpectedRuntime``), None if none.

    :param ad: the job's ClassAd
    """
    for name, scale in (("AllowedExecuteDuration", 1), ("AllowedJobDuration", 1), ("MaxRuntime", 1),
                        ("MaxWallTimeMins", 60)):
        if name in ad:
            value = ad.eval(name)
            if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
                return float(value) * scale
    return None


def _job_info(ad: Any, index: int) -> JobInfo:
    from airflow_cloud_paas.scaling.packing import JobInfo

    cpus = ad.eval("RequestCpus") if "RequestCpus" in ad else 1
    group = ad.get("JobBatchName") or f"cluster {ad.get('ClusterId')}"
    return JobInfo(index, int(cpus) if isinstance(cpus, int) else 1, float(ad.get("QDate") or 0), str(group),
                   requested_runtime(ad))


def annotate_expected_runtimes(schedd: Any, now: float, placement: EstimatePlacement | None = None, *,
                               history_limit: int = 1000) -> dict[str, Any]:
    """Set ``CloudPaaSExpectedRuntime`` on idle jobs: their request corrected by their campaign's finished jobs.

    The correction is the simulator's (:meth:`EstimatePlacement.expected_runtime`), learned from the schedd's
    history (each job's true runtime against its request, per ``JobBatchName``, else per cluster). Once a job
    runs, its slot copies the value, and the node's expected end follows it. A job whose value is already within
    1% is not edited; one the engine's identity may not edit (another owner's, unless the identity is in
    ``QUEUE_SUPER_USERS``) is counted and left alone.

    :param schedd: the schedd client (``HTCondorHook.schedd``)
    :param now: the current time (epoch seconds)
    :param placement: the packing to ask (a fresh :class:`EstimatePlacement` by default)
    :param history_limit: the most finished jobs read back
    """
    import htcondor2

    from airflow_cloud_paas.scaling.packing import EstimatePlacement

    pack = placement or EstimatePlacement()
    done = schedd.history(f"JobStatus == {_COMPLETED}", _JOB_PROJECTION, history_limit)
    learned = 0
    for index, ad in enumerate(sorted(done, key=lambda a: a.get("CompletionDate") or 0)):
        start, end = ad.get("JobCurrentStartDate"), ad.get("CompletionDate")
        if isinstance(start, int) and isinstance(end, int) and end >= start > 0:
            pack.finished(_job_info(ad, index), "", float(end), max(1.0, float(end - start)))
            learned += 1
    edited, refused = {}, 0
    for ad in schedd.query(f"JobStatus == {_IDLE}", _JOB_PROJECTION):
        job_id = f"{ad['ClusterId']}.{ad['ProcId']}"
        expected = round(pack.expected_runtime(_job_info(ad, -1)))
        current = ad.eval(EXPECTED_RUNTIME) if EXPECTED_RUNTIME in ad else None
        if isinstance(current, int | float) and abs(current - expected) <= 0.01 * expected:
            continue
        try:
            schedd.edit([job_id], EXPECTED_RUNTIME, str(expected))
        except htcondor2.HTCondorException:  # not this identity's job: the request stands for it
            refused += 1
            continue
        edited[job_id] = expected
    return {"learned_from": learned, "expected_runtime_s": edited, "refused": refused}
