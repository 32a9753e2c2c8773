"""The base of the package's triggers: poll something until the wait is over, times out or fails.

A concrete trigger says only what it waits for: the fields it serializes, what it reads (``poll``: a
blocking call, run in a thread so that the triggerer's event loop never blocks) and which states end the
wait (``finished``). The loop, the timeout and the error event are written once, here.
"""

from __future__ import annotations

import abc
import asyncio
import inspect
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, ClassVar

from airflow.triggers.base import BaseTrigger, TriggerEvent


class CloudPaaSPollingTrigger(BaseTrigger):
    """Poll until the wait ends; yield one event whose ``status`` says how.

    ``success`` or ``failed`` (what :meth:`finished` returns), ``timeout`` (not finished after ``timeout``
    seconds) or ``error`` (the poll raised; ``message`` holds the error). Every event also carries
    :meth:`subject`, the keys naming what was waited for. Polls only read, so running a trigger twice (as
    the triggerer may, after a restart) is harmless.

    :param poll_interval: seconds between two polls
    :param timeout: seconds before a ``timeout`` event (``None``: no limit)
    """

    #: the subclass's own ``__init__`` arguments, serialized (``poll_interval`` and ``timeout`` always are)
    serialized_fields: ClassVar[tuple[str, ...]] = ()

    def __init__(self, *, poll_interval: float, timeout: float | None = None) -> None:
        super().__init__()
        self.poll_interval = poll_interval
        self.timeout = timeout

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Reject, at import time, a subclass that serializes a field its ``__init__`` would not take back."""
        super().__init_subclass__(**kwargs)
        parameters = inspect.signature(cls.__init__).parameters
        missing = [f for f in (*cls.serialized_fields, "poll_interval", "timeout") if f not in parameters]
        if missing:
            raise TypeError(f"{cls.__qualname__} serializes {missing}, which its __init__ does not take")

    def serialize(self) -> tuple[str, dict[str, Any]]:
        """Return the trigger's class path and the keyword arguments that rebuild it."""
        fields = (*self.serialized_fields, "poll_interval", "timeout")
        return f"{type(self).__module__}.{type(self).__qualname__}", {f: getattr(self, f) for f in fields}

    # ---------------------------------------------------------------- what a subclass says
    def subject(self) -> dict[str, Any]:
        """Return the keys every event carries, naming what is waited for."""
        return {}

    @abc.abstractmethod
    def poll(self) -> Any:
        """Read the state waited on (blocking: it runs in a thread); raise to end the wait with ``error``."""

    @abc.abstractmethod
    def finished(self, state: Any) -> dict[str, Any] | None:
        """Return the event ending the wait (with its ``status``) for a polled state, or None to poll again.

        :param state: what :meth:`poll` returned
        """

    def timed_out(self, state: Any) -> dict[str, Any]:
        """Return what the ``timeout`` event says besides its status.

        :param state: what the last :meth:`poll` returned
        """
        return {"message": f"not done after {self.timeout} s"}

    # ---------------------------------------------------------------- the loop
    async def run(self) -> AsyncIterator[TriggerEvent]:
        loop = asyncio.get_running_loop()
        deadline = None if self.timeout is None else loop.time() + self.timeout
        while True:
            try:
                state = await asyncio.to_thread(self.poll)
            except Exception as err:  # reported to the task, which raises it with context
                yield TriggerEvent({**self.subject(), "status": "error", "message": str(err)})
                return
            event = self.finished(state)
            if event is not None:
                yield TriggerEvent({**self.subject(), **event})
                return
            if deadline is not None and loop.time() >= deadline:
                yield TriggerEvent({**self.subject(), **self.timed_out(state), "status": "timeout"})
                return
            await asyncio.sleep(self.poll_interval)

    def wait(self, progress: Callable[[Any], None] | None = None) -> dict[str, Any]:
        """Poll in the calling thread, as :meth:`run` does in the triggerer; return the event it would send.

        For an operator that waits in its worker (``deferrable=False``). A poll's error is raised, not reported.

        :param progress: called with each state that does not end the wait (e.g. to log it)
        """
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        while True:
            state = self.poll()
            event = self.finished(state)
            if event is not None:
                return {**self.subject(), **event}
            if deadline is not None and time.monotonic() >= deadline:
                return {**self.subject(), **self.timed_out(state), "status": "timeout"}
            if progress is not None:
                progress(state)
            time.sleep(self.poll_interval)
