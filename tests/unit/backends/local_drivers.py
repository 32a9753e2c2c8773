"""Cheap local drivers for testing the local backend: real processes, no Spark.

Also importable as ``local_drivers`` from a subprocess (tests put this directory on PYTHONPATH), so
a second Python process can create resources the way a retried Airflow task would.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import requests

from airflow_cloud_paas.backends.base import ResourceSpec
from airflow_cloud_paas.backends.local import Launch, LocalDriver, ProcessRecord

HTTP_TYPE = "test.nodes.HttpService"
SLOW_HTTP_TYPE = "test.nodes.SlowHttpService"
FAMILY_HTTP_TYPE = "test.nodes.HttpServiceWithChild"
FAILING_TYPE = "test.nodes.Failing"
NEVER_READY_TYPE = "test.nodes.NeverReady"


def hierarchy(node_type: str) -> tuple[str, ...]:
    """Return a software component's type chain, most specific first.

    :param node_type: the test type
    """
    return (node_type, "tosca.nodes.SoftwareComponent", "tosca.nodes.Root")


class HttpServiceDriver(LocalDriver):
    """``python -m http.server`` on a free loopback port; ready when it answers."""

    def ports(self, spec: ResourceSpec) -> dict[str, int]:
        return {"port": 0}

    def argv(self, port: int, work_dir: Path) -> tuple[str, ...]:
        return (
            sys.executable,
            "-m",
            "http.server",
            str(port),
            "--bind",
            "127.0.0.1",
            "--directory",
            str(work_dir),
        )

    def command(self, spec: ResourceSpec, work_dir: Path, ports: Mapping[str, int]) -> Launch:
        return Launch(argv=self.argv(ports["port"], work_dir))

    def ready(self, record: ProcessRecord) -> bool:
        try:
            return requests.get(f"http://127.0.0.1:{record.ports['port']}/", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    def attributes(self, spec: ResourceSpec, record: ProcessRecord) -> dict[str, Any]:
        return {"url": f"http://127.0.0.1:{record.ports['port']}/"}


class SlowHttpServiceDriver(HttpServiceDriver):
    """The same server, starting 1.5 s late (time for a test to kill the creating process)."""

    def command(self, spec: ResourceSpec, work_dir: Path, ports: Mapping[str, int]) -> Launch:
        return Launch(argv=("sh", "-c", 'sleep 1.5; exec "$@"', "sh", *self.argv(ports["port"], work_dir)))


class HttpServiceWithChildDriver(HttpServiceDriver):
    """The server plus a background child in its process group (like an executor under a worker)."""

    def command(self, spec: ResourceSpec, work_dir: Path, ports: Mapping[str, int]) -> Launch:
        return Launch(argv=("sh", "-c", 'sleep 300 & exec "$@"', "sh", *self.argv(ports["port"], work_dir)))


class FailingDriver(LocalDriver):
    """A process that prints an error and exits 3 before it is ready."""

    def command(self, spec: ResourceSpec, work_dir: Path, ports: Mapping[str, int]) -> Launch:
        code = "import sys, time; print('boom: bad configuration', flush=True); time.sleep(0.3); sys.exit(3)"
        return Launch(argv=(sys.executable, "-c", code))

    def ready(self, record: ProcessRecord) -> bool:
        return False


class NeverReadyDriver(LocalDriver):
    """A process that runs but never passes its readiness probe."""

    def command(self, spec: ResourceSpec, work_dir: Path, ports: Mapping[str, int]) -> Launch:
        return Launch(argv=(sys.executable, "-c", "import time; time.sleep(120)"))

    def ready(self, record: ProcessRecord) -> bool:
        return False


#: the drivers, by test node type, as ``LocalBackend(drivers=...)`` takes them
DRIVERS: dict[str, LocalDriver] = {
    HTTP_TYPE: HttpServiceDriver(),
    SLOW_HTTP_TYPE: SlowHttpServiceDriver(),
    FAMILY_HTTP_TYPE: HttpServiceWithChildDriver(),
    FAILING_TYPE: FailingDriver(),
    NEVER_READY_TYPE: NeverReadyDriver(),
}


class SleeperDriver(LocalDriver):
    """A real process that sleeps and is ready at once: a software node whose only job is to exist."""

    def command(self, spec: ResourceSpec, work_dir: Path, ports: Mapping[str, int]) -> Launch:
        return Launch(argv=(sys.executable, "-c", "import time; time.sleep(600)"))

    def ready(self, record: ProcessRecord) -> bool:
        return True
