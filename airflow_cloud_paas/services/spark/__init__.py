"""Spark standalone as a service: local drivers (master, workers) and a client (status, spark-submit).

Nothing here imports pyspark at import time; :mod:`.local` is loaded by the local backend when a
Spark node is deployed, and :mod:`.probe` (the elastic scaler's view of the master) by the scaler.
"""

from __future__ import annotations

from airflow_cloud_paas.services.spark.client import (
    SUM_OF_SQUARES_APP,
    SparkError,
    SparkSubmitResult,
    master_status,
    submit,
    submit_sum_of_squares,
)

__all__ = [
    "SUM_OF_SQUARES_APP",
    "SparkError",
    "SparkSubmitResult",
    "master_status",
    "submit",
    "submit_sum_of_squares",
]
