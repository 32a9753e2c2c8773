"""SLURM: a local loopback cluster of real daemons, the commands' client, and the elastic engine's probe.

* :mod:`.config`: SLURM's rules (node names, CPU counts, time limits, arrays) and slurm.conf writing;
* :mod:`.client`: sbatch/squeue/sinfo/scontrol/scancel run with a timeout, their JSON read into dataclasses;
* :mod:`.cluster`: :class:`~.cluster.LocalSlurmCluster`, munged + slurmctld + slurmd workers added and removed;
* :mod:`.probe`: :class:`~.probe.SlurmProbe`, what the shared elastic engine reads and drains;
* :mod:`.errors`: the typed errors.

The Airflow face is :class:`airflow_cloud_paas.hooks.slurm.SlurmHook` (connection type ``slurm``).
"""
