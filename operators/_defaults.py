"""What every cloud-paas operator shares: a bounded run time, and no life after the worker that runs it.

- ``execution_timeout``: a task left without one by its DAG (argument or ``default_args``) gets
  :attr:`CloudPaaSTaskDefaults.default_execution_timeout`, so a stuck provider call cannot hold a worker slot
  (and a deployment's lease) forever; the deployment is then recorded failed and its lease released.
- On Linux the task process asks the kernel to send it SIGTERM when its parent (Airflow's supervisor) dies
  (``PR_SET_PDEATHSIG``), and SIGTERM raises :class:`TaskStopped` in the task (Airflow's runner only calls
  ``on_kill``): a task whose worker was stopped or killed, or whose run was marked failed, stops at once,
  records its deployment's action as failed, and is never left running as an orphan.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import signal
import sys
import threading
from datetime import timedelta
from typing import Any

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1


def stop_with_parent(sig: int = signal.SIGTERM) -> bool:
    """Have the kernel send ``sig`` to this process when its parent dies; return whether it could (Linux only).

    :param sig: the signal to receive
    """
    if not sys.platform.startswith("linux"):
        return False
    parent = os.getppid()
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
        log.warning("prctl(PR_SET_PDEATHSIG) failed: errno %d", ctypes.get_errno())
        return False
    if os.getppid() != parent:  # the parent died before the request took effect
        os.kill(os.getpid(), sig)
    return True


class TaskStopped(BaseException):  # noqa: N818 - like KeyboardInterrupt: no ``except Exception`` swallows it
    """The task was told to stop (SIGTERM): its worker stopped or died, or its run was marked failed."""


def stop_on_term() -> None:
    """Make SIGTERM stop this task: raise :class:`TaskStopped` where it runs, after Airflow's own handler.

    Airflow's task runner only calls the operator's ``on_kill`` on SIGTERM and lets ``execute`` go on until the
    SIGKILL that follows; a deployment step would go on making resources for a run that has ended. Raised here,
    the step stops at once and records its action failed (the deployer catches it as any failure), and its lease
    dies with the process. Only from the main thread (where Python runs signal handlers).
    """
    if threading.current_thread() is not threading.main_thread():
        return
    previous = signal.getsignal(signal.SIGTERM)

    def stop(signum: int, frame: Any) -> None:
        if callable(previous):
            previous(signum, frame)
        raise TaskStopped("the task was stopped (SIGTERM): its worker stopped or died, or its run was marked failed")

    signal.signal(signal.SIGTERM, stop)


class CloudPaaSTaskDefaults:
    """Mixin of every cloud-paas operator (put it before ``BaseOperator``): see the module's description.

    ``execution_timeout=None`` (the default of Airflow) means this default; give a longer ``timedelta`` for more.
    """

    #: the run time a task gets when its DAG sets none
    default_execution_timeout = timedelta(hours=3)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if getattr(self, "execution_timeout", None) is None:
            self.execution_timeout = self.default_execution_timeout

    def pre_execute(self, context: Any) -> None:
        stop_on_term()
        stop_with_parent()
        super().pre_execute(context)
