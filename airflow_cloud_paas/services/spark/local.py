"""Local drivers for Spark standalone: a master and workers as real JVM processes on loopback.

Registered with the local backend for ``cloud_paas.nodes.spark.Master`` and
``cloud_paas.nodes.spark.Worker``. Spark is the one inside the installed ``pyspark`` package
(``bin/spark-class``; it has no ``sbin/start-*.sh`` daemons, and we want a foreground process anyway,
so the backend owns its lifetime).
"""

from __future__ import annotations

import logging
import os
import re
import signal
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from airflow_cloud_paas.backends.base import ResourceSpec
from airflow_cloud_paas.backends.local import PROVIDER, Launch, LocalDriver, ProcessRecord
from airflow_cloud_paas.exceptions import ResourceCreateError, UnsupportedNodeError
from airflow_cloud_paas.services.spark.client import (
    SparkError,
    java_executable,
    spark_env,
    spark_home,
    spark_version,
    try_master_status,
)

log = logging.getLogger(__name__)

MASTER_CLASS = "org.apache.spark.deploy.master.Master"
WORKER_CLASS = "org.apache.spark.deploy.worker.Worker"
_MEMORY = re.compile(r"^[1-9][0-9]*[kKmMgGtT]$")


def _where(spec: ResourceSpec) -> str:
    return f"{spec.deployment_id}/{spec.node_name}"


def _check_runtime(spec: ResourceSpec) -> None:
    try:
        spark_home()
    except SparkError as err:
        raise UnsupportedNodeError(
            f"node '{spec.node_name}' ({spec.node_type}) needs Spark: {err.message}",
            provider=PROVIDER,
            resource=_where(spec),
        ) from err
    if java_executable() is None:
        raise UnsupportedNodeError(
            f"node '{spec.node_name}' ({spec.node_type}) needs Java 17+ for Spark; install a JDK "
            "(e.g. apt-get install openjdk-17-jre-headless) or set JAVA_HOME",
            provider=PROVIDER,
            resource=_where(spec),
        )


def _spark_class() -> str:
    return str(spark_home() / "bin" / "spark-class")


class SparkMasterDriver(LocalDriver):
    """Run a Spark standalone master on 127.0.0.1.

    :param daemon_memory: the master JVM's heap (``SPARK_DAEMON_MEMORY``)
    """

    def __init__(self, daemon_memory: str = "512m") -> None:
        self.daemon_memory = daemon_memory

    def check(self, spec: ResourceSpec) -> None:
        """Raise :class:`UnsupportedNodeError` without Spark or Java, or for another Spark version.

        :param spec: the resource wanted
        """
        _check_runtime(spec)
        wanted = spec.properties.get("spark_version")
        if wanted:
            installed = spark_version()
            if not (installed == str(wanted) or installed.startswith(f"{wanted}.")):
                raise UnsupportedNodeError(
                    f"node '{spec.node_name}' wants Spark {wanted} but pyspark {installed} is installed; "
                    f"remove the spark_version property or install pyspark=={wanted}.*",
                    provider=PROVIDER,
                    resource=_where(spec),
                )

    def ports(self, spec: ResourceSpec) -> dict[str, int]:
        """Return the RPC and web UI ports (0 = pick a free one).

        :param spec: the resource wanted
        """
        return {
            "port": int(spec.properties.get("port") or 0),
            "webui_port": int(spec.properties.get("webui_port") or 0),
        }

    def command(self, spec: ResourceSpec, work_dir: Path, ports: Mapping[str, int]) -> Launch:
        """Return ``spark-class ...Master`` bound to loopback on the chosen ports.

        :param spec: the resource wanted
        :param work_dir: the instance's directory
        :param ports: the chosen ports
        """
        env = {**spark_env(work_dir), "SPARK_DAEMON_MEMORY": self.daemon_memory}
        argv = (
            _spark_class(), MASTER_CLASS,
            "--host", "127.0.0.1",
            "--port", str(ports["port"]),
            "--webui-port", str(ports["webui_port"]),
        )  # fmt: skip
        return Launch(argv=argv, env=env, data={"webui_url": f"http://127.0.0.1:{ports['webui_port']}"})

    def ready(self, record: ProcessRecord) -> bool:
        """Return whether the master's ``/json/`` says ALIVE.

        :param record: the instance's record
        """
        status = try_master_status(record.data["webui_url"])
        return bool(status) and status.get("status") == "ALIVE"

    def attributes(self, spec: ResourceSpec, record: ProcessRecord) -> dict[str, Any]:
        """Return spark_url, webui_url, port, webui_port and spark_version.

        :param spec: the resource wanted
        :param record: the instance's record
        """
        return {
            "spark_url": f"spark://127.0.0.1:{record.ports['port']}",
            "webui_url": record.data["webui_url"],
            "port": record.ports["port"],
            "webui_port": record.ports["webui_port"],
            "spark_version": spark_version(),
        }


class SparkWorkerDriver(LocalDriver):
    """Run a Spark standalone worker on 127.0.0.1, registered with the master it requires.

    Workers start with ``spark.decommission.enabled``: ``delete`` first sends SIGPWR, the master marks
    the worker DECOMMISSIONED (no new executors; running ones are told to migrate), then it is stopped.

    :param daemon_memory: the worker JVM's heap (``SPARK_DAEMON_MEMORY``; not what it offers to apps)
    :param decommission_timeout: seconds to wait for the master to see the decommission
    """

    def __init__(self, daemon_memory: str = "512m", decommission_timeout: float = 10.0) -> None:
        self.daemon_memory = daemon_memory
        self.decommission_timeout = decommission_timeout

    def check(self, spec: ResourceSpec) -> None:
        """Raise :class:`UnsupportedNodeError` without Spark or Java, or for bad cores/memory.

        :param spec: the resource wanted
        """
        _check_runtime(spec)
        cores = spec.properties.get("cores", 1)
        if not isinstance(cores, int) or isinstance(cores, bool) or cores < 1:
            raise UnsupportedNodeError(
                f"node '{spec.node_name}': cores must be an integer >= 1, got {cores!r}",
                provider=PROVIDER,
                resource=_where(spec),
            )
        memory = str(spec.properties.get("memory", "1g"))
        if not _MEMORY.match(memory):
            raise UnsupportedNodeError(
                f"node '{spec.node_name}': memory must look like 512m or 2g, got {memory!r}",
                provider=PROVIDER,
                resource=_where(spec),
            )

    def ports(self, spec: ResourceSpec) -> dict[str, int]:
        """Return free RPC and web UI ports, so the master's worker list can be matched on the port.

        :param spec: the resource wanted
        """
        return {"port": 0, "webui_port": 0}

    def command(self, spec: ResourceSpec, work_dir: Path, ports: Mapping[str, int]) -> Launch:
        """Return ``spark-class ...Worker`` registering with the required master.

        :param spec: the resource wanted
        :param work_dir: the instance's directory (executors run under ``work_dir/work``)
        :param ports: the chosen ports
        """
        masters = spec.requirements.get("master") or ()
        master = masters[0].attributes if masters else {}
        if not master.get("spark_url") or not master.get("webui_url"):
            raise ResourceCreateError(
                f"node '{spec.node_name}' requires a Spark master with spark_url and webui_url attributes, "
                f"found {len(masters)} master resource(s); create the master node first",
                provider=PROVIDER,
                resource=f"{_where(spec)}/{spec.index}",
            )
        env = {
            **spark_env(work_dir),
            "SPARK_DAEMON_MEMORY": self.daemon_memory,
            "SPARK_WORKER_DIR": str(work_dir / "work"),
            # read by spark-class for the Worker class only; enables the SIGPWR decommission handler
            "SPARK_WORKER_OPTS": " ".join(
                filter(None, [os.environ.get("SPARK_WORKER_OPTS", ""), "-Dspark.decommission.enabled=true"])
            ),
        }
        argv = (
            _spark_class(), WORKER_CLASS,
            "--host", "127.0.0.1",
            "--port", str(ports["port"]),
            "--webui-port", str(ports["webui_port"]),
            "--cores", str(spec.properties.get("cores", 1)),
            "--memory", str(spec.properties.get("memory", "1g")),
            master["spark_url"],
        )  # fmt: skip
        data = {
            "master_url": master["spark_url"],
            "master_webui_url": master["webui_url"],
            "webui_url": f"http://127.0.0.1:{ports['webui_port']}",
        }
        return Launch(argv=argv, env=env, data=data)

    @staticmethod
    def _entry(record: ProcessRecord) -> dict[str, Any] | None:
        status = try_master_status(record.data["master_webui_url"])
        for worker in (status or {}).get("workers", []):
            # the master keeps old entries (DEAD, DECOMMISSIONED): a restarted worker on the same port
            # has a newer one, so prefer an ALIVE entry
            if worker.get("host") == "127.0.0.1" and worker.get("port") == record.ports["port"]:
                if worker.get("state") == "ALIVE":
                    return worker
        return None

    def ready(self, record: ProcessRecord) -> bool:
        """Return whether the master lists this worker (host and port) as ALIVE.

        :param record: the instance's record
        """
        return self._entry(record) is not None

    def attributes(self, spec: ResourceSpec, record: ProcessRecord) -> dict[str, Any]:
        """Return worker_id, webui_url, master_url, port, cores and memory.

        :param spec: the resource wanted
        :param record: the instance's record
        """
        entry = self._entry(record) or {}
        return {
            "worker_id": entry.get("id"),
            "webui_url": record.data["webui_url"],
            "master_url": record.data["master_url"],
            "port": record.ports["port"],
            "cores": entry.get("cores"),
            "memory_mb": entry.get("memory"),
        }

    def before_stop(self, record: ProcessRecord) -> None:
        """Decommission the worker (SIGPWR) and wait until the master no longer counts it ALIVE.

        :param record: the instance's record
        """
        if record.pid is None or self._entry(record) is None:
            return  # master gone or worker not registered: nothing to drain
        os.kill(record.pid, signal.SIGPWR)
        deadline = time.monotonic() + self.decommission_timeout
        while self._entry(record) is not None:
            if time.monotonic() > deadline:
                log.warning(
                    "worker %s not decommissioned after %.0f s; stopping it anyway",
                    record.attributes.get("worker_id"),
                    self.decommission_timeout,
                )
                return
            time.sleep(0.2)
