"""A deployment whose node task a test kills mid-step (SIGKILL) while the scheduler is restarted: retries finish it.

The app node's local driver runs in the task process: it writes the task's pid to ``<work_root>/hold/<try>.pid``
and, while ``<work_root>/hold/release`` does not exist, holds the start of instance 1 (instance 0 is made first),
so the test kills the task exactly between two instances.
"""

from __future__ import annotations

import os
import sys
import time
from datetime import timedelta
from pathlib import Path

from airflow_cloud_paas import ToscaDag
from airflow_cloud_paas.backends.local import Launch, LocalDriver, register_local_driver


class HeldStart(LocalDriver):
    """A sleeping process per instance; instance 1 starts only once the test releases it."""

    def command(self, spec, work_dir, ports):
        hold = Path(work_dir).parents[2] / "hold"
        if spec.index == 1 and hold.is_dir() and not (hold / "release").exists():
            (hold / f"{os.getpid()}.pid").write_text(str(os.getpid()))
            while not (hold / "release").exists():
                time.sleep(0.1)
        return Launch(argv=(sys.executable, "-c", "import time; time.sleep(600)"))

    def ready(self, record):
        return True


register_local_driver("test.nodes.Blocking", HeldStart())

with ToscaDag("templates/blocking.yaml", dag_id="test_kill_recovery", schedule=None,
              operator_args={"retries": 3, "retry_delay": timedelta(seconds=1)}) as dag:
    pass
