"""HTCondor batch pools as a service (DODAS-style): configuration, credentials, and a probe.

- :mod:`.config` renders and checks the ``condor_config`` of each role (central manager, submit,
  execute) with the real ``htcondor2`` bindings;
- :mod:`.credentials` makes a pool's secrets (pool password, IDTOKENS) and keeps them in an Airflow
  connection of type ``htcondor``;
- :mod:`.probe` is the elastic scaler's view of a pool (idle jobs, execute nodes) and drains retired nodes.

The hook that talks to a running pool through ``htcondor2`` (queue statistics, slots, submit, drain) is
:mod:`airflow_cloud_paas.hooks.htcondor`, beside the package's other hooks. The schedd/collector stand-in
the tests use lives with them (``tests/unit/condor/standin.py``).

Nothing is imported here: ``config``, ``credentials`` and ``errors`` need neither Airflow nor the
bindings at import time.
"""
