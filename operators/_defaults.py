"""What every cloud-paas operator shares: a bounded run time, and no life after the worker that runs it.

- ``execution_timeout``: a task left without one by its DAG (argument or ``default_args``) gets
  :attr:`CloudPaaSTaskDefaults.default_execution_timeout`, so a stuck provider call cannot hold a worker slot
  (and a deployment's lease) forever; the deployment is then recorded failed and its lease released.
- On Linux the task process asks the kernel to send it SIGTERM when its parent (Airflow's supervisor) dies
  (``PR_SET_PDEATHSIG``): a task whose worker was stopped or killed stops too, records its deployment's
  action as failed, and is never left running as an orphan.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import signal
import sys
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
        stop_with_parent()
        super().pre_execute(context)
