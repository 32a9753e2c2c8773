"""Run by wheel_check.sh with the venv the wheel was installed in, from outside the checkout.

Checks the installed package (not the checkout): its package data, the XCache admission library
build, and a Spark cluster deployed on the local backend through the deployer, then deleted.
Prints one JSON line of figures.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

import airflow_cloud_paas

started = time.monotonic()
figures: dict[str, object] = {}
package = Path(airflow_cloud_paas.__file__).parent
checkout = os.environ.get("CHECKOUT")
assert "site-packages" in package.parts, f"airflow_cloud_paas comes from {package}, not the installed wheel"
assert not checkout or not str(package).startswith(checkout), f"{package} is the checkout's"

# --- package data, and the packages mapped from other folders of the repository
expected = {
    "templates": ["spark_cluster.yaml", "spark_elastic_cluster.yaml", "xcache.yaml", "htcondor_pool.yaml",
                  "slurm_elastic_cluster.yaml", "slurm_cluster_vm.yaml"],
    "templates/scripts": ["htcondor_configure.sh", "xrootd_configure.sh", "slurm_configure.sh"],
    "tosca/types": ["cloud_paas_types.yaml", "htcondor_types.yaml", "slurm_types.yaml", "xrootd_types.yaml"],
    "services/xcache/admission": ["XrdPfcCloudPaaSAdmission.cc"],
}
for folder, names in expected.items():
    for name in names:
        assert (package / folder / name).is_file(), f"package data missing from the wheel: {folder}/{name}"
figures["package_data_files"] = sum(len(n) for n in expected.values())
for module in ("airflow_cloud_paas.hooks.store", "airflow_cloud_paas.operators.deployment",
               "airflow_cloud_paas.sensors", "airflow_cloud_paas.triggers", "airflow_cloud_paas.plugin",
               "airflow_cloud_paas.store", "airflow_cloud_paas.services.spark", "airflow_cloud_paas.services.slurm.local",
               "airflow_cloud_paas.operators.slurm"):
    __import__(module)

# --- the XCache admission library builds from the installed source
from airflow_cloud_paas.services.xcache.admission import SOURCE, build_library  # noqa: E402

assert Path(SOURCE).is_relative_to(package), SOURCE
with tempfile.TemporaryDirectory(prefix="wheel_check_admission_") as build_dir:
    t0 = time.monotonic()
    library = build_library(build_dir)
    figures["admission_build_s"] = round(time.monotonic() - t0, 1)
    assert library.is_file() and library.stat().st_size > 0, library

# --- the packaged Spark template, deployed on the local backend and deleted
from airflow_cloud_paas import load_topology, packaged_template  # noqa: E402
from airflow_cloud_paas.backends.local import LocalBackend  # noqa: E402
from airflow_cloud_paas.deployer import Deployer  # noqa: E402
from airflow_cloud_paas.request import DeploymentRequest  # noqa: E402
from airflow_cloud_paas.services.spark import master_status  # noqa: E402
from airflow_cloud_paas.store import DeploymentStore  # noqa: E402

template = packaged_template("spark_cluster")
assert Path(template).is_relative_to(package), template
home = Path(os.environ["AIRFLOW_HOME"])
store = DeploymentStore(f"sqlite:///{home / 'cloud_paas' / 'deployments.db'}")
backend = LocalBackend(home / "cloud_paas" / "work", ready_timeout=180, stop_timeout=15)
deployment = f"wheel-{uuid.uuid4().hex[:8]}"
request = DeploymentRequest.build(load_topology(template), deployment, {"worker_count": 1}, actor="wheel-check")
deployer = Deployer(request, store, backend)
t0 = time.monotonic()
try:
    outputs = deployer.create_all()
    figures["spark_create_s"] = round(time.monotonic() - t0, 1)
    assert store.get(deployment).status == "CREATE_COMPLETE"
    alive = [w for w in master_status(outputs["spark_webui_url"])["workers"] if w["state"] == "ALIVE"]
    assert len(alive) == 1, alive
finally:
    t0 = time.monotonic()
    deployer.begin_delete()
    deployer.delete_all()
    deployer.complete_delete()
    figures["spark_delete_s"] = round(time.monotonic() - t0, 1)
assert store.get(deployment).status == "DELETE_COMPLETE"
assert not [r for r in backend.describe(deployment) if r.state.value != "DELETED"]
figures["python_checks_s"] = round(time.monotonic() - started, 1)
print(json.dumps(figures))
sys.exit(0)
