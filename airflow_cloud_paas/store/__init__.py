"""The deployment store: deployments, resources and history in their own database (SQLite or PostgreSQL).

Secret inputs (named like a secret, see :func:`airflow_cloud_paas.secrets.is_secret_name`, and any listed in
``secret_inputs``: the request lists those declared secret) are stored as ``"***"``: their values are never
persisted.
"""

from __future__ import annotations

from airflow_cloud_paas.exceptions import (
    DeploymentBusyError,
    DeploymentNotFoundError,
    InvalidStatusTransitionError,
)
from airflow_cloud_paas.store.engine import default_store_url, dispose_engines, get_engine, mask_url
from airflow_cloud_paas.store.errors import DeploymentConflictError, DeploymentStoreError
from airflow_cloud_paas.store.masking import SECRET_MASK, mask_secret_inputs
from airflow_cloud_paas.store.records import (
    GRANT_EVENT,
    PROMOTED_EVENT,
    DeploymentRecord,
    Event,
    ResourceRecord,
    ResourceUpdate,
)
from airflow_cloud_paas.store.status import TRANSITIONS, Action, DeploymentStatus, check_transition
from airflow_cloud_paas.store.store import DeploymentStore

__all__ = [
    "GRANT_EVENT",
    "PROMOTED_EVENT",
    "SECRET_MASK",
    "TRANSITIONS",
    "Action",
    "DeploymentBusyError",
    "DeploymentConflictError",
    "DeploymentNotFoundError",
    "DeploymentRecord",
    "DeploymentStatus",
    "DeploymentStore",
    "DeploymentStoreError",
    "Event",
    "InvalidStatusTransitionError",
    "ResourceRecord",
    "ResourceUpdate",
    "check_transition",
    "default_store_url",
    "dispose_engines",
    "get_engine",
    "mask_secret_inputs",
    "mask_url",
]
