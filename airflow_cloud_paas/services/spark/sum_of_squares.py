"""A PySpark application that checks a cluster: the sum of squares of 1..n, computed on the executors.

Run by :func:`airflow_cloud_paas.services.spark.client.submit_sum_of_squares`; prints one line
``CLOUD_PAAS_RESULT {json}``. Usage: ``spark-submit sum_of_squares.py N PARTITIONS``.
"""

from __future__ import annotations

import json
import os
import sys

RESULT_PREFIX = "CLOUD_PAAS_RESULT "


def main(argv: list[str]) -> int:
    """Compute and print the result.

    :param argv: the command line (n, partitions)
    """
    from pyspark import SparkContext

    n = int(argv[1]) if len(argv) > 1 else 1000
    partitions = int(argv[2]) if len(argv) > 2 else 4
    sc = SparkContext(appName="cloud-paas-sum-of-squares")
    try:
        numbers = sc.parallelize(range(1, n + 1), partitions)
        total = numbers.map(lambda x: x * x).sum()
        # the Python worker processes that did the work: proves tasks ran outside the driver
        worker_pids = sorted(set(numbers.mapPartitions(lambda _: [os.getpid()]).collect()))
        result = {
            "n": n,
            "partitions": partitions,
            "sum_of_squares": int(total),
            "app_id": sc.applicationId,
            "driver_pid": os.getpid(),
            "worker_pids": worker_pids,
        }
    finally:
        sc.stop()
    print(RESULT_PREFIX + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
