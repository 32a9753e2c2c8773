"""HTCondor batch pools as a service (DODAS-style): configuration, credentials, a hook, and a stand-in.

- :mod:`.config` renders and checks the ``condor_config`` of each role (central manager, submit,
  execute) with the real ``htcondor2`` bindings;
- :mod:`.credentials` makes a pool's secrets (pool password, IDTOKENS) and keeps them in an Airflow
  connection of type ``htcondor``;
- :mod:`.hook` talks to a running pool through ``htcondor2`` (queue statistics, slots, submit, drain);
- :mod:`.standin` is a schedd/collector stand-in at the bindings' boundary, for tests only.

Nothing is imported here: ``config``, ``credentials`` and ``errors`` need neither Airflow nor the
bindings at import time; ``hook`` and ``standin`` import ``htcondor2``.
"""
