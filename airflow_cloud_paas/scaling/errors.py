"""Typed errors of the scaling engine.

They derive from ``ValueError``, not from ``CloudPaaSError``: that base imports Airflow, and the
scaling engine must load without it (the ``scale-sim`` command and DAG tasks import it cheaply).
"""

from __future__ import annotations

from airflow_cloud_paas.trace_errors import TraceFileError


class ScalingError(ValueError):
    """Base class of every error raised by ``airflow_cloud_paas.scaling``."""


class PolicyError(ScalingError):
    """An unknown policy name, bad limits, or a policy state that cannot be loaded."""


class TraceError(ScalingError, TraceFileError):
    """A job trace cannot be read: names the file, line and column, and what is expected."""


class SimulationError(ScalingError):
    """The trace cannot be replayed as asked (a job larger than a node, a decision breaking a limit)."""
