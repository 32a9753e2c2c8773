"""Typed errors of the HTCondor service.

They do not derive from Airflow's exception: :mod:`.config` and :mod:`.credentials` run in the
``cloud-paas`` CLI and in DAG tasks without importing Airflow. Messages name what failed and how to fix
it, and never hold a password or a token.
"""

from __future__ import annotations


class CondorError(Exception):
    """Base class of every error of ``airflow_cloud_paas.services.condor``.

    :param message: what failed and how to fix it
    :param what: the pool, daemon, node, job or parameter concerned
    """

    def __init__(self, message: str, *, what: str | None = None) -> None:
        self.message = message
        self.what = what
        super().__init__(f"{what}: {message}" if what else message)

    def __reduce__(self):  # keep the keyword attribute when pickled across processes
        return (_rebuild, (type(self), self.message, self.what))


def _rebuild(cls, message, what):
    return cls(message, what=what)


class CondorConfigError(CondorError, ValueError):
    """Pool settings are invalid, or a generated ``condor_config`` does not load or lacks what its role needs."""


class CondorCredentialError(CondorError, ValueError):
    """A pool password or token cannot be made, read, verified or stored."""


class CondorConnectionError(CondorError):
    """The collector, the schedd or a startd cannot be reached or refused the request."""


class CondorSubmitError(CondorError, ValueError):
    """A submit description (or a DAG file) is invalid or the schedd refused it."""


class CondorJobNotFoundError(CondorError, LookupError):
    """No job of this cluster is in the queue or in the history."""


class CondorNodeNotFoundError(CondorError, LookupError):
    """No execute node (startd) of this name is known to the collector."""
