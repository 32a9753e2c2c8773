"""Typed errors of the Galaxy service: bad settings (before anything starts), refused or failed API calls."""

from __future__ import annotations

from airflow_cloud_paas.exceptions import CloudPaaSError, ServiceAPIError, ServiceConfigError


class GalaxyError(CloudPaaSError):
    """Base class of every Galaxy error."""


class GalaxyConfigError(GalaxyError, ServiceConfigError):
    """A Galaxy setting (admin e-mail or API key, port, flavour, job runner) is invalid; raised before anything runs."""


class GalaxyAPIError(GalaxyError, ServiceAPIError):
    """A Galaxy API call failed or gave an answer that cannot be read (never showing the API key)."""

    service = "Galaxy"


class GalaxyUnreachableError(GalaxyAPIError):
    """Nothing answers at the Galaxy's URL (not started, wrong host or port)."""


class GalaxyAuthError(GalaxyAPIError):
    """Galaxy refused the API key (wrong, deleted) or the user may not do this (not an admin)."""


class GalaxyNotFoundError(GalaxyAPIError):
    """Galaxy knows no such tool, workflow, history, dataset or invocation."""


class GalaxyInputError(GalaxyAPIError):
    """A tool's or workflow's inputs are missing or wrong (checked before anything is submitted where possible)."""


class GalaxyJobError(GalaxyAPIError):
    """A Galaxy job or workflow invocation failed (its state and what the job printed are in the message)."""
