"""Run one action of a deployment on the local backend and SIGKILL this process at its Nth backend change.

Usage: python killed_step.py STORE_URL WORK_ROOT ACTION KILL_AT [WHEN]
ACTION: create | scale-out | scale-in | delete. KILL_AT: the 1-based mutating backend call (create or delete)
at which the process kills itself; 0 never. WHEN: ``before`` the call or ``after`` it returned (default).
The kill is the fault injected (a worker lost at that exact point); everything else is the real code path.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

from airflow_cloud_paas.backends.local import Launch, LocalBackend, LocalDriver
from airflow_cloud_paas.deployer import Deployer
from airflow_cloud_paas.request import DeploymentRequest
from airflow_cloud_paas.store import DeploymentStore
from airflow_cloud_paas.tosca import load_topology

TEMPLATE = Path(__file__).with_name("data_flaky.yaml")
DEPLOYMENT = "dep-killed"


class SleeperDriver(LocalDriver):
    """A real long-running process for each instance."""

    def command(self, spec, work_dir, ports):
        return Launch(argv=(sys.executable, "-c", "import time; time.sleep(600)"))

    def ready(self, record):
        return True


class KillingBackend(LocalBackend):
    """The local backend, with this process SIGKILLed at the Nth create or delete."""

    def __init__(self, root: Path, kill_at: int, when: str) -> None:
        super().__init__(root, drivers={"test.nodes.Flaky": SleeperDriver()})
        self.calls, self.kill_at, self.when = 0, kill_at, when

    def _step(self, call, *args, **kwargs):
        self.calls += 1
        if self.calls == self.kill_at and self.when == "before":
            os.kill(os.getpid(), signal.SIGKILL)
        result = call(*args, **kwargs)
        if self.calls == self.kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        return result

    def create(self, spec, *, deadline=None):
        return self._step(super().create, spec, deadline=deadline)

    def delete(self, deployment_id, node_name=None, index=None):
        return self._step(super().delete, deployment_id, node_name, index)


def main(url: str, root: str, action: str, kill_at: str, when: str = "after") -> None:
    store, backend = DeploymentStore(url), KillingBackend(Path(root), int(kill_at), when)
    topology = load_topology(TEMPLATE)
    count = {"create": 2, "scale-out": 2, "scale-in": 3, "delete": 3}[action]
    deployer = Deployer(DeploymentRequest.build(topology, DEPLOYMENT, {"count": count}, actor=f"run-{action}"),
                        store, backend)
    if action == "create":
        deployer.create_all()
    elif action.startswith("scale"):
        deployer.scale("hosts", 3 if action == "scale-out" else 1)
    else:
        deployer.begin_delete()
        deployer.delete_all()
        deployer.complete_delete()


if __name__ == "__main__":
    main(*sys.argv[1:])
