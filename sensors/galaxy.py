"""Sensors of a Galaxy: wait until its API answers with a valid key (just deployed), or a workflow invocation ends."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseSensorOperator, PokeReturnValue, conf

from airflow_cloud_paas.services.galaxy.errors import GalaxyAPIError, GalaxyJobError

if TYPE_CHECKING:
    from airflow.sdk import Context
    from airflow.triggers.base import BaseTrigger

    from airflow_cloud_paas.hooks.galaxy import GalaxyHook
    from airflow_cloud_paas.triggers.galaxy import GalaxyApiTrigger, GalaxyInvocationTrigger


class _GalaxySensor(BaseSensorOperator):
    """The Galaxy's connection and URL, the hook made of them, and how a deferred wait ends.

    :param galaxy_conn_id: the Galaxy's ``galaxy`` connection (Password: the API key)
    :param galaxy_url: the Galaxy's URL, replacing the connection's Host (templated)
    :param deferrable: wait in the triggerer
    """

    ui_color = "#f5e6c8"

    def __init__(self, *, galaxy_conn_id: str = "galaxy_default", galaxy_url: str | None = None,
                 deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.galaxy_conn_id = galaxy_conn_id
        self.galaxy_url = galaxy_url
        self.deferrable = deferrable

    @cached_property
    def hook(self) -> GalaxyHook:
        """Return the hook of the Galaxy's connection (and URL)."""
        from airflow_cloud_paas.hooks.galaxy import GalaxyHook

        return GalaxyHook(galaxy_conn_id=self.galaxy_conn_id, url=self.galaxy_url or None)

    def _trigger_timeout(self) -> float | None:
        timeout = self.timeout.total_seconds() if isinstance(self.timeout, timedelta) else self.timeout
        return float(timeout) if timeout else None

    def _trigger(self) -> BaseTrigger:
        """Return the trigger that waits in the triggerer for what :meth:`poke` looks at."""
        raise NotImplementedError

    def execute(self, context: Context) -> Any:
        if not self.deferrable:
            return super().execute(context)
        done = self.poke(context)
        if done.is_done:  # already there: no need to defer
            return done.xcom_value
        self.defer(trigger=self._trigger(), method_name="execute_complete")

    def _timed_out(self, event: dict[str, Any]) -> None:
        """Raise as a poking sensor's timeout does (``soft_fail``: skip) when the trigger timed out."""
        if event.get("status") == "timeout":
            from airflow.sdk.exceptions import AirflowSensorTimeout, AirflowSkipException

            message = f"{self.task_id}: {event.get('message')}"
            raise AirflowSkipException(message) if self.soft_fail else AirflowSensorTimeout(message)


class CloudPaaSGalaxyApiSensor(_GalaxySensor):
    """Wait until a Galaxy's API answers and takes the connection's API key; return its version and the key's user.

    Used after deploying a Galaxy: it is up when this succeeds. While nothing answers, a proxy answers 502, or the
    key is refused (an admin's key may be set after the API starts), it waits; a connection that cannot work (no
    key, a bad URL) fails at once. The XCom value is ``{"url", "version", "user": {id, email, username,
    is_admin}}``. With ``deferrable=True`` the wait runs in the triggerer
    (:class:`~airflow_cloud_paas.triggers.galaxy.GalaxyApiTrigger`).

    :param require_admin: wait until the key's user is one of the Galaxy's admins
    :param galaxy_conn_id: the Galaxy's ``galaxy`` connection
    :param galaxy_url: the Galaxy's URL, replacing the connection's Host (templated)
    :param deferrable: wait in the triggerer (default: the ``[operators] default_deferrable`` setting)
    """

    template_fields: Sequence[str] = ("galaxy_url",)

    def __init__(self, *, require_admin: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.require_admin = require_admin

    def poke(self, context: Context) -> PokeReturnValue:
        """Return whether the Galaxy is ready, with its version and the key's user as XCom value.

        :param context: the task context
        """
        from airflow_cloud_paas.triggers.galaxy import api_state

        state = api_state(self.hook, require_admin=self.require_admin)
        self.log.info("%s", state["reason"] if state["ready"] else f"Galaxy not ready: {state['reason']}")
        value = {"url": state["url"], "version": state["version"], "user": state["user"]}
        return PokeReturnValue(is_done=state["ready"], xcom_value=value if state["ready"] else None)

    def _trigger(self) -> GalaxyApiTrigger:
        from airflow_cloud_paas.triggers.galaxy import GalaxyApiTrigger

        return GalaxyApiTrigger(galaxy_conn_id=self.galaxy_conn_id, url=self.galaxy_url or None,
                                require_admin=self.require_admin, poll_interval=float(self.poke_interval),
                                timeout=self._trigger_timeout())

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> dict[str, Any]:
        """Return the Galaxy's version and the key's user as the trigger saw them; raise if the wait failed.

        :param context: the task context
        :param event: the trigger's event payload
        """
        if not event:
            raise GalaxyAPIError("waiting for the Galaxy's API: the trigger returned no event", url=self.galaxy_url)
        self._timed_out(event)
        if event.get("status") != "success":
            raise GalaxyAPIError(f"waiting for the Galaxy's API ended with {event.get('status')}: "
                                 f"{event.get('message')}", url=event.get("url") or self.galaxy_url)
        return {"url": event.get("url"), "version": event.get("version"), "user": event.get("user")}


class CloudPaaSGalaxyInvocationSensor(_GalaxySensor):
    """Wait until a Galaxy workflow invocation ends; return its outputs, or raise if it failed.

    The XCom value is ``{"invocation_id", "history_id", "state", "jobs", "outputs": {label: dataset id}}``. A
    failed invocation or job raises :class:`~airflow_cloud_paas.services.galaxy.errors.GalaxyJobError` with what
    the failed jobs printed. With ``deferrable=True`` the wait runs in the triggerer
    (:class:`~airflow_cloud_paas.triggers.galaxy.GalaxyInvocationTrigger`).

    :param invocation_id: the invocation (templated)
    :param galaxy_conn_id: the Galaxy's ``galaxy`` connection
    :param galaxy_url: the Galaxy's URL, replacing the connection's Host (templated)
    :param deferrable: wait in the triggerer (default: the ``[operators] default_deferrable`` setting)
    """

    template_fields: Sequence[str] = ("invocation_id", "galaxy_url")

    def __init__(self, *, invocation_id: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.invocation_id = invocation_id

    def _result(self, event: dict[str, Any]) -> dict[str, Any]:
        if event.get("status") == "failed":
            detail = self.hook.failure_detail(str(self.invocation_id))
            raise GalaxyJobError(f"workflow invocation {self.invocation_id} failed ({event.get('message')}): "
                                 f"{detail}", url=self.hook.url)
        return {"invocation_id": str(self.invocation_id), "history_id": event.get("history_id"),
                "state": event.get("state"), "jobs": event.get("jobs"), "outputs": event.get("outputs")}

    def _trigger(self) -> GalaxyInvocationTrigger:
        from airflow_cloud_paas.triggers.galaxy import GalaxyInvocationTrigger

        return GalaxyInvocationTrigger(invocation_id=str(self.invocation_id), galaxy_conn_id=self.galaxy_conn_id,
                                       url=self.galaxy_url or None, poll_interval=float(self.poke_interval),
                                       timeout=self._trigger_timeout())

    def poke(self, context: Context) -> PokeReturnValue:
        """Return whether the invocation ended (raise if it failed), with its outputs as XCom value.

        :param context: the task context
        """
        trigger = self._trigger()
        trigger.hook = self.hook  # the sensor's own: one client for every poke
        state = trigger.poll()
        event = trigger.finished(state)
        self.log.info("Galaxy invocation %s: %s; jobs %s", self.invocation_id, state["state"], state["jobs"])
        if event is None:
            return PokeReturnValue(is_done=False)
        return PokeReturnValue(is_done=True, xcom_value=self._result(event))

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> dict[str, Any]:
        """Return the invocation's outputs as the trigger saw them; raise if it failed or the wait did.

        :param context: the task context
        :param event: the trigger's event payload
        """
        if not event:
            raise GalaxyAPIError(f"invocation {self.invocation_id}: the trigger returned no event",
                                 url=self.galaxy_url)
        self._timed_out(event)
        if event.get("status") not in ("success", "failed"):
            raise GalaxyAPIError(f"waiting for invocation {self.invocation_id} ended with {event.get('status')}: "
                                 f"{event.get('message')}", url=self.galaxy_url)
        return self._result(event)
