"""Run a deferral the way Airflow does, in a test: the trigger rebuilt from its serialized form, then a resume."""

from __future__ import annotations

import asyncio
import importlib
import json
from collections.abc import Callable
from typing import Any


def resume(deferred: Any, make: Callable[[], Any], context: dict[str, Any], *, timeout: float = 300.0) -> Any:
    """Rebuild the trigger of a ``TaskDeferred`` from its serialized form, run it to its first event on an event loop,
    then resume a fresh task (the deferred one is gone, as in Airflow) in the method named, with the deferral's
    ``kwargs``; return what that method returns.

    :param deferred: the ``TaskDeferred`` raised by ``execute``
    :param make: builds the fresh operator
    :param context: the task context to resume with
    :param timeout: seconds the trigger may take to fire
    """
    classpath, kwargs = deferred.trigger.serialize()
    module, _, name = classpath.rpartition(".")
    trigger = getattr(importlib.import_module(module), name)(**json.loads(json.dumps(kwargs)))

    async def first_event() -> dict[str, Any]:
        async for event in trigger.run():
            return event.payload
        raise AssertionError("the trigger ended without an event")

    event = asyncio.run(asyncio.wait_for(first_event(), timeout=timeout))
    return getattr(make(), deferred.method_name)(context, event, **(deferred.kwargs or {}))
