"""Typed errors of the XCache simulator, policies and popularity model.

They do not derive from Airflow's exception: these modules run in the ``cloud-paas`` CLI and in DAG tasks
without importing Airflow.
"""

from __future__ import annotations

from airflow_cloud_paas.trace_errors import TraceFileError


class XCacheError(Exception):
    """Base class of the errors of the XCache simulator and model."""


class CapacityError(XCacheError, ValueError):
    """A cache capacity is not a positive size such as ``25TB``, ``500GB`` or ``10TiB``."""


class TraceError(XCacheError, TraceFileError):
    """A trace file cannot be read: missing, wrong header, or a bad value on a line (file, line and column named)."""

    def _location(self) -> str:  # "file, line N", as the cache-sim messages write it
        parts = [str(self.file)] if self.file else []
        if self.line is not None:
            parts.append(f"line {self.line}")
        return ", ".join(parts)


class PolicyError(XCacheError, ValueError):
    """A cache policy name is unknown, or a policy is used in a way it does not support."""


class ModelStateError(XCacheError, ValueError):
    """A popularity model's input is invalid: a saved state that cannot be loaded (corrupt, or from another
    version), a bad setting, or a malformed access record."""
