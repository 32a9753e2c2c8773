"""Typed errors of the SLURM service: bad settings (before anything starts), failed commands, failed daemons."""

from __future__ import annotations

from collections.abc import Sequence

from airflow_cloud_paas.exceptions import CloudPaaSError, ServiceConfigError


class SlurmError(CloudPaaSError):
    """Base class of every SLURM error."""


class SlurmConfigError(SlurmError, ServiceConfigError):
    """A node name, CPU count, time limit, job name or array spec breaks SLURM's rules (raised before anything runs)."""


class SlurmCommandError(SlurmError):
    """A SLURM command (sbatch, squeue, sinfo, scontrol, scancel) failed or gave an answer that cannot be read.

    :param message: why
    :param command: the command line run
    :param returncode: its exit status (None when it did not finish)
    :param stderr: what it printed on standard error
    """

    def __init__(self, message: str, *, command: Sequence[str] = (), returncode: int | None = None,
                 stderr: str = "") -> None:
        self.message, self.command, self.returncode, self.stderr = message, list(command), returncode, stderr
        shown = " ".join(self.command) if self.command else "slurm"
        shown = shown if len(shown) <= 160 else shown[:157] + "..."
        detail = f" (exit {returncode})" if returncode is not None else ""
        said = f": {stderr.strip()}" if stderr.strip() else ""
        super().__init__(f"{shown}{detail}: {message}{said}")


class SlurmTimeoutError(SlurmCommandError):
    """A SLURM command did not answer in time (is slurmctld running, and the connection's controller right?)."""


class SlurmJobNotFoundError(SlurmCommandError):
    """The controller does not know the job (never submitted, or purged after MinJobAge)."""


class SlurmNodeNotFoundError(SlurmCommandError):
    """The controller does not know the node (or it is a FUTURE slot not started yet)."""


class SlurmClusterError(SlurmError):
    """A local cluster's daemon (munged, slurmctld, slurmd) failed to start, register or stop.

    :param message: what failed, with the end of the daemon's log
    :param daemon: munged, slurmctld or slurmd
    :param node: the worker concerned
    """

    def __init__(self, message: str, *, daemon: str | None = None, node: str | None = None) -> None:
        self.message, self.daemon, self.node = message, daemon, node
        where = " ".join(filter(None, [daemon, f"of node '{node}'" if node else None]))
        super().__init__(f"{where}: {message}" if where else message)


class SlurmNodeBusyError(SlurmClusterError):
    """A drained worker still runs jobs: it is not stopped (check again later, then remove it)."""
