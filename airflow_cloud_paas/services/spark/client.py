"""Talk to a Spark standalone cluster without Airflow: the master's status and ``spark-submit``.

Spark comes from the installed ``pyspark`` package (its ``bin/spark-class`` and ``bin/spark-submit``);
``pyspark`` is imported only when a Spark path is needed, never at module import.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from airflow_cloud_paas.exceptions import BackendError

PROVIDER = "spark"
#: the line prefix the bundled applications print their JSON result after
RESULT_PREFIX = "CLOUD_PAAS_RESULT "
#: the bundled application computing the sum of squares of 1..n on the executors
SUM_OF_SQUARES_APP = Path(__file__).with_name("sum_of_squares.py")


class SparkError(BackendError):
    """A Spark master cannot be reached, or a Spark application failed."""

    def __init__(self, message: str, *, resource: str | None = None) -> None:
        super().__init__(message, provider=PROVIDER, resource=resource)


@dataclass(frozen=True)
class SparkSubmitResult:
    """What one ``spark-submit`` run returned."""

    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str
    duration_s: float

    def result(self) -> Any:
        """Return the JSON value the application printed after :data:`RESULT_PREFIX` (the last one)."""
        for line in reversed(self.stdout.splitlines()):
            if line.startswith(RESULT_PREFIX):
                return json.loads(line[len(RESULT_PREFIX) :])
        raise SparkError(
            f"the application printed no '{RESULT_PREFIX.strip()}' line; stdout ends with:\n{self.stdout[-1000:]}",
            resource=self.argv[-1] if self.argv else None,
        )


def spark_home() -> Path:
    """Return the Spark installation shipped inside the ``pyspark`` package."""
    try:
        import pyspark
    except ImportError as err:
        raise SparkError("pyspark is not installed; install it with: pip install 'airflow-cloud-paas[spark]'") from err
    return Path(pyspark.__file__).parent


def spark_version() -> str:
    """Return the installed Spark (pyspark) version."""
    spark_home()
    from pyspark.version import __version__

    return __version__


def java_executable() -> str | None:
    """Return the java launcher Spark will use (``$JAVA_HOME/bin/java`` or the one on PATH), or None."""
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").exists():
        return str(Path(java_home) / "bin" / "java")
    return shutil.which("java")


def spark_env(work_dir: Path | None = None) -> dict[str, str]:
    """Return the environment variables Spark processes started here need (loopback only).

    :param work_dir: where logs, scratch files and the (empty) configuration directory go
    """
    env = {
        "SPARK_HOME": str(spark_home()),
        "SPARK_LOCAL_IP": "127.0.0.1",
        # executors and the driver run this interpreter, which has pyspark
        "PYSPARK_PYTHON": sys.executable,
        "PYSPARK_DRIVER_PYTHON": sys.executable,
    }
    if work_dir is not None:
        for sub in ("conf", "logs", "tmp"):
            (work_dir / sub).mkdir(parents=True, exist_ok=True)
        # an empty conf dir: a spark-defaults.conf of the machine must not change a managed process
        env.update(
            SPARK_CONF_DIR=str(work_dir / "conf"),
            SPARK_LOG_DIR=str(work_dir / "logs"),
            SPARK_LOCAL_DIRS=str(work_dir / "tmp"),
        )
    return env


def try_master_status(webui_url: str, timeout: float = 2.0) -> dict[str, Any] | None:
    """Return the master's ``/json/`` document, or None if it does not answer (yet).

    :param webui_url: the master's web UI, ``http://host:port``
    :param timeout: seconds to wait for the answer
    """
    try:
        response = requests.get(f"{webui_url.rstrip('/')}/json/", timeout=timeout)
        if response.status_code != 200:
            return None
        return response.json()
    except (requests.RequestException, ValueError):
        return None


def master_status(webui_url: str, timeout: float = 5.0) -> dict[str, Any]:
    """Return the master's ``/json/`` document plus ``alive_workers`` (workers whose state is ALIVE).

    The master keeps dead and decommissioned workers in ``workers``, so count ``alive_workers``.

    :param webui_url: the master's web UI, ``http://host:port``
    :param timeout: seconds to wait for the answer
    """
    status = try_master_status(webui_url, timeout)
    if status is None:
        raise SparkError(
            f"the Spark master's web UI {webui_url}/json/ does not answer; is the master running?",
            resource=webui_url,
        )
    status["alive_workers"] = [w for w in status.get("workers", []) if w.get("state") == "ALIVE"]
    return status


def submit(
    master_url: str,
    app: str | Path,
    args: Sequence[str] = (),
    *,
    conf: Mapping[str, str] | None = None,
    driver_memory: str = "512m",
    executor_memory: str = "512m",
    total_executor_cores: int | None = None,
    timeout: float = 300.0,
) -> SparkSubmitResult:
    """Run a PySpark application on a standalone cluster with ``spark-submit`` and wait for it.

    The driver runs here (client mode) on loopback; its web UI is off so that runs never fight for
    port 4040. Raises :class:`SparkError` when the application fails or runs past ``timeout``.

    :param master_url: the master, ``spark://host:port``
    :param app: the application's ``.py`` file
    :param args: the application's arguments
    :param conf: extra ``--conf`` settings
    :param driver_memory: the driver JVM's memory
    :param executor_memory: each executor's memory (a worker must offer at least this much)
    :param total_executor_cores: the most cores the application may take (default: all it is offered)
    :param timeout: seconds the application may run
    """
    settings = {
        "spark.ui.enabled": "false",
        "spark.driver.host": "127.0.0.1",
        "spark.driver.bindAddress": "127.0.0.1",
        **(conf or {}),
    }
    if total_executor_cores is not None:
        settings["spark.cores.max"] = str(total_executor_cores)
    argv = [
        str(spark_home() / "bin" / "spark-submit"),
        "--master",
        master_url,
        "--deploy-mode",
        "client",
        "--driver-memory",
        driver_memory,
        "--executor-memory",
        executor_memory,
    ]
    for key, value in settings.items():
        argv += ["--conf", f"{key}={value}"]
    argv += [str(app), *map(str, args)]
    with tempfile.TemporaryDirectory(prefix="cloud-paas-spark-submit-") as tmp:
        env = {**os.environ, **spark_env(Path(tmp))}
        started = time.monotonic()
        # its own process group: on timeout the driver JVM and its Python child go together
        proc = subprocess.Popen(
            argv,
            cwd=tmp,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired as err:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise SparkError(
                f"the application ran past {timeout:.0f} s and was killed; raise timeout= or check that the "
                "cluster has free cores and memory (worker memory >= executor memory)",
                resource=str(app),
            ) from err
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            raise
    result = SparkSubmitResult(tuple(argv), proc.returncode, stdout, stderr, time.monotonic() - started)
    if result.returncode != 0:
        raise SparkError(
            f"spark-submit exited with code {result.returncode}; last stderr lines:\n{stderr[-2000:]}",
            resource=str(app),
        )
    return result


def submit_sum_of_squares(master_url: str, n: int = 1000, partitions: int = 4, **kwargs: Any) -> dict[str, Any]:
    """Compute the sum of squares of 1..n on the cluster with the bundled application; return its result.

    The result has ``n``, ``partitions``, ``sum_of_squares`` (check it against n(n+1)(2n+1)/6) and
    ``app_id``; ``duration_s`` is added.

    :param master_url: the master, ``spark://host:port``
    :param n: the last integer
    :param partitions: how many tasks to split the work into
    :param kwargs: more arguments of :func:`submit`
    """
    run = submit(master_url, SUM_OF_SQUARES_APP, [str(n), str(partitions)], **kwargs)
    return {**run.result(), "duration_s": run.duration_s}
