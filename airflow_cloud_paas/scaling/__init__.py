"""Elastic scaling engine shared by every cluster service, and its trace simulator.

``policy`` holds the snapshot/decision types and the policies (``static:N``, ``clues``, ``smart``)
that live callers and ``sim`` (the ``cloud-paas scale-sim`` replay) use alike; ``packing`` the
simulator's placements (``fcfs``, and ``pack``: by expected runtime, from requested wall times). Standard library
only: importing this package does not import Airflow.

The live loop is imported from its own modules, not from here: ``probe`` (what a round reads of a
service, and the registry of each service's probe) and ``elastic`` (:class:`~.elastic.ElasticScaler`,
which applies decisions through the deployer, and the deployments' ElasticScaling targets).
"""

from __future__ import annotations

from airflow_cloud_paas.scaling.errors import PolicyError, ScalingError, SimulationError, TraceError
from airflow_cloud_paas.scaling.packing import (
    BestFitPlacement,
    EstimatePlacement,
    JobInfo,
    Placement,
    placement_from_name,
)
from airflow_cloud_paas.scaling.policy import (
    CluesPolicy,
    Limits,
    Policy,
    QueuedJob,
    ScaleDecision,
    SmartPolicy,
    Snapshot,
    StaticPolicy,
    Worker,
    WorkerState,
    pack_nodes,
    policy_from_name,
)
from airflow_cloud_paas.scaling.sim import Job, SimResult, load_trace, parse_trace, simulate

__all__ = [
    "BestFitPlacement", "CluesPolicy", "EstimatePlacement", "Job", "JobInfo", "Limits", "Placement", "Policy",
    "PolicyError", "QueuedJob", "ScaleDecision", "ScalingError", "SimResult", "SimulationError", "SmartPolicy",
    "Snapshot", "StaticPolicy", "TraceError", "Worker", "WorkerState", "load_trace", "pack_nodes", "parse_trace",
    "placement_from_name", "policy_from_name", "simulate",
]
