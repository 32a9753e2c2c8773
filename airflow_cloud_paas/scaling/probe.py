"""What the elastic scaler reads of a live cluster: the probe interface, and the registry of each service's probe.

A probe reads a service's queue and workers (a Spark master, an HTCondor schedd and collector, a SLURM
controller) and drains a worker before it is retired. Each service keeps its probe with the rest of its code
(:mod:`airflow_cloud_paas.services.spark.probe`, :mod:`airflow_cloud_paas.services.condor.probe`,
:mod:`airflow_cloud_paas.services.slurm.probe`); the registry names them as ``"module:Class"`` and imports one
only when it is asked for, like the backends' registry, so the scaling engine never imports a service.
"""

from __future__ import annotations

import abc
import importlib
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from airflow_cloud_paas.scaling.policy import QueuedJob, WorkerState

if TYPE_CHECKING:
    from airflow_cloud_paas.backends.base import Resource


@dataclass(frozen=True)
class WorkerView:
    """What a probe sees of one worker instance.

    :param state: booting, idle, busy or draining
    :param cores: cores it offers
    :param used_cores: cores its running work uses
    """

    state: WorkerState
    cores: int
    used_cores: int = 0


@dataclass(frozen=True)
class Observation:
    """A probe's reading of the cluster.

    :param queued: the work waiting for a worker
    :param workers: instance index of the worker node -> what the cluster says of it (an instance the
        cluster does not know yet is booting)
    """

    queued: tuple[QueuedJob, ...] = ()
    workers: Mapping[int, WorkerView] = field(default_factory=dict)


class ClusterProbe(abc.ABC):
    """Reads a service's queue and workers; drains a worker before it is retired."""

    #: the service's name in history events
    service: str = "cluster"

    @abc.abstractmethod
    def observe(self, workers: Sequence[Resource], now: float) -> Observation:
        """Return the queued work and the state of each worker instance.

        :param workers: the live resources of the worker node, one per instance
        :param now: the current time (epoch seconds)
        """

    def drain(self, worker: Resource) -> None:  # noqa: B027 - most services drain as they stop
        """Stop new work from starting on a worker that is about to be retired.

        :param worker: the worker instance
        """

    def place(self, now: float) -> dict[str, Any] | None:
        """Steer where the next jobs start (SLURM's node weights, HTCondor's expected runtimes); return what was set.

        Called at each scaling round before the policy decides; None where the service is left to place its jobs
        (this default).

        :param now: the current time (epoch seconds)
        """
        return None


#: service name -> probe class, or "module:Class" (imported on first use)
_PROBES: dict[str, type[ClusterProbe] | str] = {
    "spark": "airflow_cloud_paas.services.spark.probe:SparkProbe",
    "htcondor": "airflow_cloud_paas.services.condor.probe:HTCondorProbe",
    "slurm": "airflow_cloud_paas.services.slurm.probe:SlurmProbe",
}


def register_probe(service: str, probe: type[ClusterProbe] | str) -> None:
    """Make ``make_probe(service, ...)`` build ``probe``.

    :param service: the service's name in ElasticScaling policies (``properties.service``)
    :param probe: a :class:`ClusterProbe` subclass, or ``"module:Class"`` imported on first use
    """
    if not isinstance(probe, str) and not (isinstance(probe, type) and issubclass(probe, ClusterProbe)):
        raise TypeError(f"probe {service!r} must be a ClusterProbe subclass or 'module:Class', got {probe!r}")
    _PROBES[service] = probe


def make_probe(service: str, address: str, **options: Any) -> ClusterProbe:
    """Return the probe of a service.

    :param service: spark, htcondor or slurm (or a service given to :func:`register_probe`)
    :param address: where the service is read (:func:`airflow_cloud_paas.scaling.elastic.probe_address`)
    :param options: the probe's own options (e.g. ``app_cores`` for Spark)
    """
    entry = _PROBES.get(service)
    if entry is None:
        raise ValueError(f"no probe for service '{service}': use {' or '.join(sorted(_PROBES))}")
    if isinstance(entry, str):
        module_name, _, class_name = entry.partition(":")
        entry = _PROBES[service] = getattr(importlib.import_module(module_name), class_name)
    return entry(address, **options)


def queued_demand(service: str, address: str) -> int:
    """Return how many jobs or applications wait for a worker now (what the queue-driven trigger polls).

    :param service: spark, htcondor or slurm
    :param address: where the service is read (:func:`airflow_cloud_paas.scaling.elastic.probe_address`)
    """
    return len(make_probe(service, address).observe([], time.time()).queued)
