"""The sweep operator deletes a deployment's orphans, found by tags, with no record and no template."""

from __future__ import annotations

from airflow_cloud_paas.backends.base import ResourceSpec
from airflow_cloud_paas.backends.factory import backend_from_hook
from airflow_cloud_paas.hooks.store import CloudPaaSStoreHook
from airflow_cloud_paas.operators.deployment import CloudPaaSSweepOrphansOperator


class _Dag:
    dag_id = "sweep"


def test_sweep_deletes_orphans_on_every_provider():
    hook = CloudPaaSStoreHook()
    for ref in ("local:site-a", "local:site-b"):
        backend = backend_from_hook(hook, ref)
        for i in range(2):
            backend.create(ResourceSpec("orphan-dep", "vm", i, "cloud_paas.nodes.Compute",
                                        ("cloud_paas.nodes.Compute", "tosca.nodes.Compute", "tosca.nodes.Root")))
        assert len(backend.describe("orphan-dep")) == 2
    op = CloudPaaSSweepOrphansOperator(task_id="sweep", deployment_id="orphan-dep",
                                       providers=["local:site-a", "local:site-b"])
    swept = op.execute({"dag": _Dag(), "run_id": "r", "params": {}})
    assert swept == {"local:site-a": 2, "local:site-b": 2}
    for ref in ("local:site-a", "local:site-b"):
        assert backend_from_hook(hook, ref).describe("orphan-dep") == []
