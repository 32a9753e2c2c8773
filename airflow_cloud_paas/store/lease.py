"""Leases on a deployment's running action: who holds ``*_IN_PROGRESS``, and whether that holder is gone.

While a process works on a deployment (a task deploying a node, a scale, a delete) it holds a short
lease, renewed by a heartbeat (:class:`Heartbeat`) and naming the process (host, pid, start time).
Between two steps of one DAG run (one task done, the next not yet started) the lease is kept for a
longer gap, with no process named. A lease has expired when its time has passed, or at once when the
process it names ran on this host and is dead (SIGKILL, OOM): the next caller, a retry of another run,
a delete or the reconcile job, may then take the action over.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import lru_cache

import psutil

log = logging.getLogger(__name__)

#: seconds a working process's lease lasts without a renewal (it renews every quarter of it).
LEASE_S = float(os.environ.get("AIRFLOW_CLOUD_PAAS_LEASE_S", "60"))
#: seconds an action stays held between two tasks of the run that holds it (no process works on it).
STEP_GAP_S = float(os.environ.get("AIRFLOW_CLOUD_PAAS_STEP_GAP_S", "1800"))


@lru_cache(maxsize=1)
def _host() -> str:
    return socket.gethostname()


def this_process() -> str:
    """Return this process as a lease holder: ``host:pid:start time`` (the start time tells a reused pid)."""
    pid = os.getpid()
    try:
        started = f"{psutil.Process(pid).create_time():.2f}"
    except psutil.Error:  # pragma: no cover - our own process always exists
        started = "?"
    return f"{_host()}:{pid}:{started}"


def holder_dead(holder: str | None) -> bool:
    """Return whether ``holder`` (see :func:`this_process`) ran on this host and no longer runs.

    A holder on another host is never judged here: only its lease's time can expire it.

    :param holder: the lease holder, or None
    """
    if not holder:
        return False
    parts = holder.rsplit(":", 2)
    if len(parts) != 3 or parts[0] != _host():
        return False
    host, pid, started = parts
    try:
        process = psutil.Process(int(pid))
        return started != "?" and f"{process.create_time():.2f}" != started  # the pid was reused
    except (psutil.NoSuchProcess, ValueError):
        return True
    except psutil.Error:  # access denied, zombie: it exists
        return False


def lease_expired(expires_at: datetime | None, holder: str | None, updated_at: datetime | None, *,
                  gap: float = STEP_GAP_S, now: datetime | None = None) -> str | None:
    """Return why an in-progress action's lease has expired, or None while it holds.

    :param expires_at: the lease's end (None: a record written before leases existed)
    :param holder: the process holding it, if one works on it now
    :param updated_at: when the record last changed (the lease of a record without one ends ``gap`` after)
    :param gap: seconds a run's action stays held between two of its tasks
    :param now: the time now (tests)
    """
    now = now or datetime.now(UTC)
    if holder_dead(holder):
        return f"its process {holder} is dead"
    if expires_at is None and updated_at is not None:
        expires_at = updated_at + timedelta(seconds=gap)
    if expires_at is not None and now >= expires_at:
        who = f"{holder} " if holder else ""
        return f"its lease {who}expired at {expires_at.isoformat(timespec='seconds')}"
    return None


class Heartbeat:
    """Renew a lease every ``interval`` seconds in a daemon thread while a block runs.

    A block may start before there is a lease to renew (a create checks its plan, which can take a while on a slow
    cloud, before it registers the deployment): until the first renewal succeeds, a refused one is tried again at
    the next beat. Once held, a refused renewal means the lease was lost (another actor took the action over): the
    heartbeat stops.

    :param renew: the call that renews (returns False when there is no lease of this actor to renew)
    :param interval: seconds between renewals
    """

    def __init__(self, renew: Callable[[], bool], interval: float) -> None:
        self._renew, self._interval = renew, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cloud-paas-lease", daemon=True)

    def _run(self) -> None:
        held = False
        while not self._stop.wait(self._interval):
            try:
                if self._renew():
                    held = True
                elif held:
                    log.warning("Lost the lease on the deployment's action: stopped renewing it")
                    return
            except Exception:  # a store hiccup: try again at the next beat, the lease still has time
                log.warning("Could not renew the lease on the deployment's action", exc_info=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=self._interval + 5)
