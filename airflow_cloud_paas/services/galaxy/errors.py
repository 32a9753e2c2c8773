"""Typed errors of the Galaxy service: bad settings (before anything starts), refused or failed API calls."""

from __future__ import annotations

from airflow_cloud_paas.exceptions import CloudPaaSError


class GalaxyError(CloudPaaSError):
    """Base class of every Galaxy error."""


class GalaxyConfigError(GalaxyError, ValueError):
    """A Galaxy setting (admin e-mail or API key, port, flavour, job runner) is invalid; raised before anything runs.

    A secret's value is never shown: pass ``value="(hidden)"`` for one.

    :param message: what is wrong and how to fix it
    :param field: the setting concerned
    :param value: the value given
    """

    def __init__(self, message: str, *, field: str | None = None, value: object = None) -> None:
        self.message, self.field, self.value = message, field, value
        super().__init__(f"{field}={value!r}: {message}" if field else message)


class GalaxyAPIError(GalaxyError):
    """A Galaxy API call failed or gave an answer that cannot be read.

    :param message: what failed (Galaxy's own message included, never the API key)
    :param url: the Galaxy concerned
    :param status: the HTTP status, when there was an answer
    """

    def __init__(self, message: str, *, url: str | None = None, status: int | None = None) -> None:
        self.message, self.url, self.status = message, url, status
        where = f"Galaxy {url}" if url else "Galaxy"
        code = f" (HTTP {status})" if status else ""
        super().__init__(f"{where}{code}: {message}")


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
