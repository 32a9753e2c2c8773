"""Errors of the deployment store besides the shared ones in :mod:`airflow_cloud_paas.exceptions`."""

from __future__ import annotations

from airflow_cloud_paas.exceptions import CloudPaaSError


class DeploymentConflictError(CloudPaaSError):
    """A deployment with this id already exists with a different template."""


class DeploymentStoreError(CloudPaaSError):
    """The store's database cannot be opened (bad URL, server down, missing database)."""
