"""The HTCondor hook, at the path Airflow's providers use for hooks (``airflow_cloud_paas.hooks.htcondor``).

It lives with the rest of the HTCondor service in :mod:`airflow_cloud_paas.services.condor.hook`.
"""

from __future__ import annotations

from airflow_cloud_paas.services.condor.hook import HTCondorHook

__all__ = ["HTCondorHook"]
