"""What the SLURM tests check is left running: a cluster's munged, slurmctld, slurmd and slurmstepd processes."""

from __future__ import annotations

from pathlib import Path

import psutil

#: every process a cluster runs (slurmctld's helper slurmscriptd shows under slurmctld's name)
SLURM_NAMES = frozenset({"munged", "slurmctld", "slurmd", "slurmstepd"})


def cluster_processes(work_dir: Path) -> list[psutil.Process]:
    """Return the live (not zombie) munge and SLURM processes whose command line, SLURM_CONF or open files are
    in ``work_dir`` (a step daemon is found by the slurmd log it holds open).

    :param work_dir: a cluster's (or a deployment's) directory
    """
    found = []
    for process in psutil.process_iter(["name", "cmdline", "status"]):
        if process.info["name"] not in SLURM_NAMES or process.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        try:
            mine = (str(work_dir) in " ".join(process.info["cmdline"] or [])
                    or str(work_dir) in process.environ().get("SLURM_CONF", "")
                    or any(str(work_dir) in f.path for f in process.open_files()))
        except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
            continue
        if mine:
            found.append(process)
    return found
