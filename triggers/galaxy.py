"""Triggers that wait, without holding a worker slot, for a Galaxy workflow invocation to end, or a Galaxy's API."""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow_cloud_paas.triggers.base import CloudPaaSPollingTrigger

if TYPE_CHECKING:
    from airflow_cloud_paas.hooks.galaxy import GalaxyHook


class _GalaxyTrigger(CloudPaaSPollingTrigger):
    """What both Galaxy triggers share: the hook of their connection (and URL), made once per trigger."""

    galaxy_conn_id: str
    url: str | None

    @cached_property
    def hook(self) -> GalaxyHook:
        """Return the hook of the trigger's connection."""
        from airflow_cloud_paas.hooks.galaxy import GalaxyHook

        return GalaxyHook(galaxy_conn_id=self.galaxy_conn_id, url=self.url)


class GalaxyInvocationTrigger(_GalaxyTrigger):
    """Poll a Galaxy workflow invocation through :class:`~airflow_cloud_paas.hooks.galaxy.GalaxyHook`.

    Events carry ``invocation_id``, ``state``, ``jobs`` (job state -> count), ``outputs`` (output label -> dataset
    id), ``history_id`` and ``message``: ``success`` once it is scheduled and every job ended ``ok``, ``failed``
    once it or one of its jobs failed, ``timeout``, or ``error`` (Galaxy could not be asked; the message never
    holds the API key).

    :param invocation_id: the invocation
    :param galaxy_conn_id: the Galaxy's ``galaxy`` connection (its API key)
    :param url: the Galaxy's URL, replacing the connection's Host
    :param poll_interval: seconds between polls
    :param timeout: seconds before a ``timeout`` event (``None``: no limit)
    """

    serialized_fields = ("invocation_id", "galaxy_conn_id", "url")

    def __init__(
        self,
        invocation_id: str,
        galaxy_conn_id: str = "galaxy_default",
        url: str | None = None,
        poll_interval: float = 10.0,
        timeout: float | None = None,
    ) -> None:
        super().__init__(poll_interval=poll_interval, timeout=timeout)
        self.invocation_id = str(invocation_id)
        self.galaxy_conn_id = galaxy_conn_id
        self.url = url or None

    def subject(self) -> dict[str, Any]:
        return {"invocation_id": self.invocation_id}

    def poll(self) -> dict[str, Any]:
        return self.hook.invocation_status(self.invocation_id)

    def finished(self, state: dict[str, Any]) -> dict[str, Any] | None:
        if not state["done"]:
            return None
        jobs = ", ".join(f"{n} {s}" for s, n in sorted(state["jobs"].items())) or "no job"
        return {
            "status": "failed" if state["failed"] else "success",
            "state": state["state"],
            "jobs": state["jobs"],
            "outputs": state["outputs"],
            "history_id": state.get("history_id"),
            "message": f"invocation {state['state']}; jobs: {jobs}",
        }

    def timed_out(self, state: dict[str, Any]) -> dict[str, Any]:
        jobs = ", ".join(f"{n} {s}" for s, n in sorted(state["jobs"].items())) or "no job yet"
        return {"state": state["state"], "jobs": state["jobs"], "outputs": state["outputs"],
                "history_id": state.get("history_id"),
                "message": f"not done after {self.timeout} s (invocation {state['state']}; jobs: {jobs})"}


class GalaxyApiTrigger(_GalaxyTrigger):
    """Poll a Galaxy's API until it answers and takes the connection's API key (a Galaxy just deployed).

    Events: ``success`` with ``user`` (``id``, ``email``, ``username``, ``is_admin``) and ``version``; ``timeout``
    with the last reason it was not ready (nothing answers, an HTTP error, the key refused, not an admin);
    ``error`` when the connection itself is wrong (no key, a bad URL).

    :param galaxy_conn_id: the Galaxy's ``galaxy`` connection (its API key)
    :param url: the Galaxy's URL, replacing the connection's Host
    :param require_admin: wait until the key's user is one of the Galaxy's admins
    :param poll_interval: seconds between polls
    :param timeout: seconds before a ``timeout`` event (``None``: no limit)
    """

    serialized_fields = ("galaxy_conn_id", "url", "require_admin")

    def __init__(
        self,
        galaxy_conn_id: str = "galaxy_default",
        url: str | None = None,
        require_admin: bool = False,
        poll_interval: float = 10.0,
        timeout: float | None = None,
    ) -> None:
        super().__init__(poll_interval=poll_interval, timeout=timeout)
        self.galaxy_conn_id = galaxy_conn_id
        self.url = url or None
        self.require_admin = bool(require_admin)

    def subject(self) -> dict[str, Any]:
        return {"url": self.url, "galaxy_conn_id": self.galaxy_conn_id}

    def poll(self) -> dict[str, Any]:
        return api_state(self.hook, require_admin=self.require_admin)

    def finished(self, state: dict[str, Any]) -> dict[str, Any] | None:
        if not state["ready"]:
            return None
        return {"status": "success", "user": state["user"], "version": state["version"],
                "url": state["url"], "message": state["reason"]}

    def timed_out(self, state: dict[str, Any]) -> dict[str, Any]:
        return {"message": f"not ready after {self.timeout} s: {state['reason']}"}


def api_state(hook: GalaxyHook, *, require_admin: bool = False) -> dict[str, Any]:
    """Return whether a Galaxy answers and takes the hook's key: ``{"ready", "reason", "url", "user", "version"}``.

    Not ready (a reason, no error): nothing answers, an HTTP error (a proxy's 502 while Galaxy starts), the key
    refused (the admin's key may be set after the API answers), the user not an admin. A connection that cannot
    work (no key, a bad URL: :class:`~airflow_cloud_paas.services.galaxy.errors.GalaxyConfigError`) raises.

    :param hook: the Galaxy's hook
    :param require_admin: not ready until the key's user is an admin
    """
    from airflow_cloud_paas.services.galaxy.errors import GalaxyAPIError

    url = hook.url
    try:
        version = hook.version()
        user = hook.whoami()
    except GalaxyAPIError as err:
        return {"ready": False, "reason": str(err), "url": url, "user": None, "version": None}
    if require_admin and not user.get("is_admin"):
        return {"ready": False, "reason": f"{user.get('email')} is not an admin of Galaxy {url}", "url": url,
                "user": user, "version": version}
    return {"ready": True, "reason": f"Galaxy {version} answers at {url} (key of {user.get('email')})", "url": url,
            "user": user, "version": version}
