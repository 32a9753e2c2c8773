"""Galaxy on demand (Laniakea): a Galaxy portal, its tool flavours, workflows and jobs on an elastic SLURM cluster.

- :mod:`.client` talks to a Galaxy's API through bioblend (the hook and the local driver both use it);
- :mod:`.flavours` reads tool flavours (sets of tools installed together);
- :mod:`.config` writes a local Galaxy's galaxy.yml (its job runner: local processes or SLURM's sbatch);
- :mod:`.local` runs Galaxy (and installs flavours) on the local backend.
"""
