"""Trigger that waits, without holding a worker slot, for a DEEPaaS training to end."""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow_cloud_paas.triggers.base import CloudPaaSPollingTrigger

if TYPE_CHECKING:
    from airflow_cloud_paas.hooks.deepaas import DEEPaaSHook

#: DEEPaaS's training states that end the wait, and the event status of each
_ENDED = {"done": "success", "error": "failed", "cancelled": "cancelled"}


class DEEPaaSTrainingTrigger(CloudPaaSPollingTrigger):
    """Poll a DEEPaaS training through :class:`~airflow_cloud_paas.hooks.deepaas.DEEPaaSHook` until it ends.

    Events carry ``uuid``, ``model``, ``state`` (DEEPaaS's: done, error, cancelled) and ``message``: ``success``
    with ``result`` (what the model's ``train`` returned, and DEEPaaS's ``finish_date`` and ``duration``) once it
    is done, ``failed`` once it raised (its message), ``cancelled``, ``timeout``, or ``error`` (DEEPaaS could not
    be asked, or no longer knows the training; the message never holds the token).

    :param uuid: the training
    :param model: the model's name
    :param deepaas_conn_id: the ``deepaas`` connection (its token)
    :param url: the DEEPaaS URL, replacing the connection's Host
    :param poll_interval: seconds between polls
    :param timeout: seconds before a ``timeout`` event (``None``: no limit)
    """

    serialized_fields = ("uuid", "model", "deepaas_conn_id", "url")

    def __init__(
        self,
        uuid: str,
        model: str = "cloud-paas",
        deepaas_conn_id: str = "deepaas_default",
        url: str | None = None,
        poll_interval: float = 10.0,
        timeout: float | None = None,
    ) -> None:
        super().__init__(poll_interval=poll_interval, timeout=timeout)
        self.uuid = str(uuid)
        self.model = model
        self.deepaas_conn_id = deepaas_conn_id
        self.url = url or None

    @cached_property
    def hook(self) -> DEEPaaSHook:
        """Return the hook of the trigger's connection (and URL)."""
        from airflow_cloud_paas.hooks.deepaas import DEEPaaSHook

        return DEEPaaSHook(deepaas_conn_id=self.deepaas_conn_id, url=self.url)

    def subject(self) -> dict[str, Any]:
        return {"uuid": self.uuid, "model": self.model}

    def poll(self) -> dict[str, Any]:
        return self.hook.training_status(self.uuid, model=self.model)

    def finished(self, state: dict[str, Any]) -> dict[str, Any] | None:
        status = state.get("status")
        if status not in _ENDED:
            return None
        event = {"status": _ENDED[status], "state": status, "message": state.get("message") or f"training {status}"}
        if status == "done":
            event["result"] = state.get("result") or {}
        return event

    def timed_out(self, state: dict[str, Any]) -> dict[str, Any]:
        return {"state": state.get("status"), "message": f"training {self.uuid} still {state.get('status')} after "
                                                        f"{self.timeout} s"}
