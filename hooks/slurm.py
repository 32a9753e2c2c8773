"""Hook to a SLURM cluster: an Airflow connection of type ``slurm`` names its slurm.conf or its controller.

SLURM's own commands do the work (sbatch, squeue, sinfo, scontrol, scancel: the ``slurm-client`` package on this
machine), each run with a timeout through :class:`~airflow_cloud_paas.services.slurm.client.SlurmClient`; SLURM
22.05's ``--json`` answers are read, so no slurmrestd is needed. The connection says where the controller is:

* extra ``slurm_conf``: the cluster's slurm.conf on this machine (a local cluster's
  :meth:`~airflow_cloud_paas.services.slurm.cluster.LocalSlurmCluster.connection_extras` gives it); or
* Host and Port (SlurmctldPort, 6817 by default) with extras ``munge_socket`` (munged's socket on this machine,
  holding the cluster's key) and ``cluster_name``: the hook writes a client slurm.conf naming them.

Every failure is a typed :class:`~airflow_cloud_paas.services.slurm.errors.SlurmError` naming the command and why.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from functools import cached_property
from pathlib import Path
from typing import Any

from airflow.sdk import BaseHook

from airflow_cloud_paas.hooks import SLURM_CONNECTION, ConnectionFormMixin, ui_field_behaviour
from airflow_cloud_paas.services.slurm.client import PendingJob, SlurmClient, SlurmJob, SlurmNode
from airflow_cloud_paas.services.slurm.config import render_client_conf
from airflow_cloud_paas.services.slurm.errors import SlurmConfigError

#: SlurmctldPort's default
DEFAULT_PORT = 6817

#: The connection type as ``get_provider_info()["connection-types"]`` lists it (declared in
#: :mod:`airflow_cloud_paas.hooks`; Airflow 3 builds the form from ``conn-fields`` and ``ui-field-behaviour``).
CONNECTION_TYPE: dict[str, Any] = SLURM_CONNECTION
#: Extra fields of the connection form.
CONN_FIELDS: dict[str, dict[str, Any]] = CONNECTION_TYPE["conn-fields"]
#: Standard fields hidden, relabelled or hinted in the form.
UI_FIELD_BEHAVIOUR: dict[str, Any] = ui_field_behaviour(CONNECTION_TYPE)


class SlurmHook(ConnectionFormMixin, BaseHook):
    """Submit, follow and cancel SLURM jobs; read the queue and the nodes; drain and resume nodes.

    :param slurm_conn_id: the Airflow connection id (extra ``slurm_conf``, or Host/Port and ``munge_socket``)
    :param timeout: seconds one SLURM command may take
    """

    conn_name_attr = "slurm_conn_id"
    default_conn_name = "slurm_default"
    conn_type = "slurm"
    hook_name = "SLURM"

    def __init__(self, slurm_conn_id: str = default_conn_name, *, timeout: float = 30.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.slurm_conn_id = slurm_conn_id
        self.timeout = float(timeout)

    @cached_property
    def slurm_conf(self) -> Path:
        """Return the slurm.conf the commands read: the connection's, or one written for its Host and Port."""
        conn = self.get_connection(self.slurm_conn_id)
        extras = dict(conn.extra_dejson)
        if extras.get("slurm_conf"):
            return Path(extras["slurm_conf"])
        if not conn.host:
            raise SlurmConfigError(f"connection '{self.slurm_conn_id}' names no cluster: set the slurm_conf extra, "
                                   "or Host (and Port) of slurmctld", field="slurm_conf")
        text = render_client_conf(host=conn.host, port=int(conn.port or DEFAULT_PORT),
                                  munge_socket=extras.get("munge_socket") or None,
                                  cluster_name=extras.get("cluster_name") or "cloudpaas")
        # one file per content: hooks of the same connection share it, another controller gets its own
        directory = Path(tempfile.gettempdir()) / f"cloud-paas-slurm-{os.getuid()}"
        directory.mkdir(mode=0o700, exist_ok=True)
        path = directory / f"{hashlib.sha256(text.encode()).hexdigest()[:16]}.conf"
        if not path.exists():
            partial = path.with_suffix(f".{os.getpid()}.tmp")
            partial.write_text(text)
            partial.replace(path)
        return path

    @cached_property
    def client(self) -> SlurmClient:
        """Return the client that runs the commands."""
        return SlurmClient(self.slurm_conf, timeout=self.timeout)

    def get_conn(self) -> SlurmClient:
        """Return the client that runs SLURM's commands against the connection's cluster."""
        return self.client

    # ------------------------------------------------------------------ jobs
    def submit(self, script: str | None = None, *, wrap: str | None = None, cpus: int = 1,
               time_limit: str | int | None = None, job_name: str | None = None, array: str | None = None,
               output: str | None = None, workdir: str | None = None, **options: Any) -> str:
        """Submit a batch job (a script's text, or a command with ``wrap``); return its id.

        Bad CPU counts, time limits, job names and array specs raise
        :class:`~airflow_cloud_paas.services.slurm.errors.SlurmConfigError` before sbatch runs.

        :param script: the batch script's text, starting with ``#!``
        :param wrap: a command line run as the job instead
        :param cpus: CPUs of its task
        :param time_limit: minutes or a SLURM time string (``30``, ``1:30:00``, ``2-12``)
        :param job_name: its name
        :param array: a job array spec (``0-4``, ``1,3,5``, ``0-15:4%2``)
        :param output: its output file pattern (``%j``, ``%A``, ``%a``)
        :param workdir: its working directory
        :param options: ``partition``, ``nodelist``, ``extra_args`` of
            :meth:`~airflow_cloud_paas.services.slurm.client.SlurmClient.submit`
        """
        return self.client.submit(script, wrap=wrap, cpus=cpus, time_limit=time_limit, job_name=job_name,
                                  array=array, output=output, workdir=workdir, **options)

    def job_state(self, job_id: str | int) -> SlurmJob:
        """Return a job's (or array task's) state, reason, request and nodes.

        :param job_id: ``123`` or ``123_4``
        """
        return self.client.job(job_id)

    def jobs(self, job_id: str | int | None = None, *, states: tuple[str, ...] = ()) -> list[SlurmJob]:
        """Return the jobs the controller knows (an array's tasks apart).

        :param job_id: one job or array (None: all)
        :param states: only these states
        """
        return self.client.jobs(job_id, states=states)

    def job_output(self, job_id: str | int) -> str:
        """Return the content of a job's output file (the file must be readable on this machine).

        :param job_id: ``123`` or ``123_4``
        """
        return self.client.job_output(job_id)

    def cancel(self, job_id: str | int, *, signal: str | None = None) -> None:
        """Cancel a job, array task or array (or only send it a signal).

        :param job_id: ``123`` or ``123_4``
        :param signal: a signal name to send instead of cancelling
        """
        self.client.cancel(job_id, signal=signal)

    def queue(self) -> list[PendingJob]:
        """Return the pending jobs (each array task once) with their requested CPUs and time limits."""
        return self.client.queue()

    # ------------------------------------------------------------------ nodes
    def nodes(self) -> list[SlurmNode]:
        """Return the nodes with their state, flags, total and allocated CPUs."""
        return self.client.nodes()

    def drain(self, node: str, reason: str = "drained by cloud-paas") -> None:
        """Drain a node: running jobs finish, no new one starts there.

        :param node: the node name
        :param reason: why (sinfo shows it)
        """
        self.client.drain(node, reason)

    def resume(self, node: str) -> None:
        """Let a drained node take jobs again.

        :param node: the node name
        """
        self.client.resume(node)

    def test_connection(self) -> tuple[bool, str]:
        """Return whether the controller answers ``scontrol ping`` (Airflow's connection test)."""
        try:
            up = self.client.ping()
        except Exception as err:  # the UI shows the reason rather than a stack trace
            return False, str(err)
        return (True, "slurmctld is UP") if up else (False, f"slurmctld named by {self.slurm_conf} does not answer")
