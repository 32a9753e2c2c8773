"""Deploy and delete a 20-instance TOSCA template on the GCP or OpenStack stand-in, 10 deployments at once, via Airflow.

The GCP and OpenStack counterpart of ``bench_aws_moto.py``, whose pieces it imports (template, DAG file, the
repetition loop, the checks and the report). The cloud is the project's stand-in (``tests/unit/backends/
gcp_fixtures.py``: Compute Engine's REST API, which the real google-cloud-compute client talks to;
``openstack_fixtures.py``: Keystone, Nova, Neutron, Cinder and Glance, which the real openstacksdk talks to),
an HTTP server on 127.0.0.1 run as a thread of this process; the Airflow task processes reach it through the
connection (``AIRFLOW_CONN_<ID>`` in the LocalAirflow's environment). Each repetition triggers 10 runs of
``ToscaDag(backend="gcp:<conn>"|"openstack:<conn>", teardown=True)`` (one ``cloud_paas.nodes.Compute`` node
scaled to BENCH_NODES, 1 CPU / 1 GB, Ubuntu 22.04: an image both stand-ins have) through the REST API, times
first trigger -> last run end, then checks that no instance, firewall rule / security group or disk / volume is
left and that every deployment is DELETE_COMPLETE. The backends launch a node's instances in one bulk call
(``instances.bulkInsert``; Nova's ``min_count``/``max_count``), delete them back to back and wait with one list a
round.

Stand-in timings (short, but every step still waits as on the real cloud), for Airflow and baseline alike:
- GCP: an operation is RUNNING for 0.3 s (bulk insert, firewall insert; an instance delete's for 0.5 s); an
  instance made is PROVISIONING 0.5 s then STAGING 0.5 s, so RUNNING ~1.3 s after the bulk insert; a deleted
  one is STOPPING 0.5 s then gone; ``operations.wait`` blocks up to 10 s (Google's: about 2 minutes).
- OpenStack: a server is in BUILD for 1 s, a deleted one listed for 0.5 s more.
The backends poll at their default intervals (GCP 2 s, OpenStack 3 s): part of what is measured.

The baseline is a plain script doing the same cloud work with the backend's SDK on 10 threads, per deployment:
GCP: google-cloud-compute ``InstancesClient.bulk_insert`` (BENCH_NODES names, the machine type and image the
backend chose), ``ZoneOperationsClient.wait``, a label-filtered ``instances.list`` every BENCH_POLL seconds until
all RUNNING, ``instances.delete`` of each, list until none is left. OpenStack: openstacksdk (as
``hooks/openstack.py`` calls it) ``create_server`` with ``min_count = max_count = BENCH_NODES`` (the flavor and
image the backend chose), a name-filtered server list every BENCH_POLL seconds until all ACTIVE, a DELETE per
server, list until none is left. Neither makes a firewall rule or security group (the backends make one per node).

Run: .venv/bin/python bench/bench_cloud_standins.py --cloud gcp|openstack
Env: BENCH_REPS (3), BENCH_DEPLOYMENTS (10), BENCH_NODES (20), BENCH_LAYOUT (``count``), BENCH_NODE_TASKS (1: a task
per node; 0: ``node_tasks=False``, the whole deployment in one create and one delete task), BENCH_POLL (1.0: the
baseline's poll interval, seconds), BENCH_KEEP_HOME=1 (keep logs).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path[:0] = [str(BENCH), str(REPO / "tests"), str(REPO)]

from bench_aws_moto import (  # noqa: E402 (bench/ and tests/ go on sys.path first)
    DAG_FILE,
    DEPLOYMENTS,
    LAYOUT,
    NODE_TASKS,
    NODES,
    REPS,
    TAG_DEPLOYMENT,
    check_rows,
    free_port,
    print_report,
    run_airflow_rep,
    template_text,
    tune_server,
    wait_dag_parsed,
    wait_log_ports_free,
)

POLL = float(os.environ.get("BENCH_POLL", "1.0"))
UBUNTU = "22.04"
#: the metadata key (and GCP label) of the baseline's instances
SDK_TAG = "bench_sdk"

GCP_TIMINGS = {"op_seconds": 0.3, "boot_seconds": 0.5, "delete_seconds": 0.5, "wait_seconds": 10.0}
OPENSTACK_TIMINGS = {"build_seconds": 1.0, "delete_seconds": 0.5}


# ------------------------------------------------------------------------------------------ GCP
def gcp_stand_in() -> Any:
    """Return a started Compute Engine stand-in that counts the instances it makes per deployment (or baseline tag)."""
    from unit.backends.gcp_fixtures import ComputeEngineStandIn

    class CountingStandIn(ComputeEngineStandIn):
        made: Counter[str]

        def _create_instance(self, body: dict[str, Any], mtype: dict[str, Any], path: str) -> None:
            super()._create_instance(body, mtype, path)
            items = {i["key"]: i.get("value") for i in (body.get("metadata") or {}).get("items") or []}
            self.made[str(items.get(TAG_DEPLOYMENT) or items.get(SDK_TAG))] += 1

    stand_in = CountingStandIn(**GCP_TIMINGS)
    stand_in.made = Counter()
    stand_in.start()
    return stand_in


def gcp_leftovers(stand_in: Any, ids: list[str]) -> dict[str, int]:
    """Return what the stand-in holds: instances made for ``ids``, live instances, their firewall rules, disks.

    :param stand_in: the Compute Engine stand-in
    :param ids: the deployments (or baseline tags)
    """
    from unit.backends.gcp_fixtures import described_deployment

    with stand_in.lock:
        stand_in.tick()
        state = stand_in.state
        return {"made": sum(stand_in.made[i] for i in ids), "live": len(state.instances),
                "groups": sum(described_deployment(f) in ids for f in state.firewalls.values()),
                "volumes": len(state.disks)}


def gcp_baseline_deployment(stand_in: Any, props: dict[str, Any], tag: str) -> None:
    """Bulk-insert NODES instances, wait RUNNING, delete each, wait gone: one deployment's work, plain SDK.

    :param stand_in: the Compute Engine stand-in
    :param props: the backend's bulk insert ``instanceProperties`` (its machine type and image are reused)
    :param tag: the baseline deployment's label value
    """
    from google.api_core.client_options import ClientOptions
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import compute_v1
    from unit.backends.gcp_fixtures import PROJECT, ZONE

    options = {"credentials": AnonymousCredentials(), "client_options": ClientOptions(api_endpoint=stand_in.endpoint)}
    instances = compute_v1.InstancesClient(**options)
    operations = compute_v1.ZoneOperationsClient(**options)
    boot = next(d for d in props["disks"] if d.get("boot"))
    resource = {
        "count": NODES, "min_count": NODES,
        "per_instance_properties": {f"{tag}-{i:03d}": {} for i in range(NODES)},
        "instance_properties": {
            "machine_type": props["machineType"], "labels": {SDK_TAG: tag},
            "metadata": {"items": [{"key": SDK_TAG, "value": tag}]},
            "disks": [{"boot": True, "auto_delete": True, "initialize_params": {
                "source_image": boot["initializeParams"]["sourceImage"], "disk_size_gb": 10}}],
            "network_interfaces": [{"network": "global/networks/default"}],
        },
    }
    op = instances.bulk_insert(project=PROJECT, zone=ZONE, bulk_insert_instance_resource_resource=resource)
    while operations.wait(project=PROJECT, zone=ZONE, operation=op.name).status != compute_v1.Operation.Status.DONE:
        pass
    selector = f'labels.{SDK_TAG} = "{tag}"'

    def listed() -> list[Any]:
        return list(instances.list(request={"project": PROJECT, "zone": ZONE, "filter": selector}))

    while (found := listed()) and not (len(found) == NODES and all(i.status == "RUNNING" for i in found)):
        time.sleep(POLL)
    if len(found) != NODES:
        raise RuntimeError(f"baseline {tag}: {len(found)} of {NODES} instances made")
    for instance in found:
        instances.delete(project=PROJECT, zone=ZONE, instance=instance.name)
    while listed():
        time.sleep(POLL)


def gcp_backend_choice(stand_in: Any) -> dict[str, Any]:
    """Return the ``instanceProperties`` of the backend's last bulk insert (machine type and image to reuse)."""
    bodies = [b for b in stand_in.bulk_requests if (b.get("instanceProperties") or {}).get("labels", {}).get(SDK_TAG)
              is None]
    if not bodies:
        raise RuntimeError("the backend made no bulk insert: nothing to copy the machine type and image from")
    return bodies[-1]["instanceProperties"]


# ------------------------------------------------------------------------------------------ OpenStack
def openstack_stand_in() -> Any:
    """Return a started OpenStack stand-in that counts the servers it makes per deployment (or baseline tag)."""
    from unit.backends.openstack_fixtures import OpenStackStandIn

    class CountingStandIn(OpenStackStandIn):
        made: Counter[str]
        last_backend_spec: dict[str, Any] | None = None

        def _make_server(self, server_id: str, name: str, spec: dict[str, Any], *args: Any) -> None:
            super()._make_server(server_id, name, spec, *args)
            metadata = spec.get("metadata") or {}
            self.made[str(metadata.get(TAG_DEPLOYMENT) or metadata.get(SDK_TAG))] += 1
            if TAG_DEPLOYMENT in metadata:
                self.last_backend_spec = spec

    stand_in = CountingStandIn(**OPENSTACK_TIMINGS)
    stand_in.made = Counter()
    stand_in.start()
    return stand_in


def openstack_connection_json(stand_in: Any) -> str:
    """Return the ``openstack`` Airflow connection of the stand-in (as test_openstack_backend.py defines it).

    :param stand_in: the OpenStack stand-in
    """
    from unit.backends.openstack_fixtures import PASSWORD, USERNAME

    return json.dumps({"conn_type": "openstack", "host": stand_in.auth_url, "login": USERNAME, "password": PASSWORD,
                       "schema": "paas", "extra": {"region_name": "RegionOne"}})


def openstack_leftovers(stand_in: Any, ids: list[str]) -> dict[str, int]:
    """Return what the stand-in holds: servers made for ``ids``, live servers, their security groups, volumes, FIPs.

    :param stand_in: the OpenStack stand-in
    :param ids: the deployments (or baseline tags)
    """
    kinds: Counter[str] = Counter()
    for dep in ids:
        kinds.update(kind for kind, _ in stand_in.tagged(dep))
    with stand_in.lock:
        return {"made": sum(stand_in.made[i] for i in ids), "live": len(stand_in.state.servers),
                "groups": kinds["security_group"], "volumes": len(stand_in.state.volumes),
                "floating_ips": kinds["floating_ip"]}


def openstack_baseline_deployment(stand_in: Any, spec: dict[str, Any], tag: str) -> None:
    """Create NODES servers in one request, wait ACTIVE, delete each, wait gone: one deployment's work, plain SDK.

    :param stand_in: the OpenStack stand-in
    :param spec: the backend's last POST /servers body (its flavor and image are reused)
    :param tag: the baseline deployment's name and metadata value
    """
    import openstack.connection
    from unit.backends.openstack_fixtures import PASSWORD, PRIVATE_NET, USERNAME

    conn = openstack.connection.Connection(
        auth_url=stand_in.auth_url, username=USERNAME, password=PASSWORD, project_name="paas",
        user_domain_name="Default", project_domain_name="Default", region_name="RegionOne", app_name="bench")
    conn.compute.create_server(name=tag, flavor_id=spec["flavorRef"], image_id=spec["imageRef"],
                               networks=[{"uuid": PRIVATE_NET}], metadata={SDK_TAG: tag},
                               min_count=NODES, max_count=NODES)

    def listed() -> list[Any]:
        return [s for s in conn.compute.servers(details=True, name=f"^{tag}-") if s.metadata.get(SDK_TAG) == tag]

    while (found := listed()) and not (len(found) == NODES and all(s.status == "ACTIVE" for s in found)):
        time.sleep(POLL)
    if len(found) != NODES:
        raise RuntimeError(f"baseline {tag}: {len(found)} of {NODES} servers made")
    for server in found:
        conn.compute.delete_server(server.id)
    while listed():
        time.sleep(POLL)
    conn.close()


# ------------------------------------------------------------------------------------------ the bench
def run_baseline_rep(cloud: str, stand_in: Any, choice: dict[str, Any], rep: int) -> dict:
    """Run DEPLOYMENTS plain-SDK deployments on as many threads; return wall time and leftovers.

    :param cloud: ``gcp`` or ``openstack``
    :param stand_in: the stand-in
    :param choice: what the backend sent (machine type / flavor and image to reuse)
    :param rep: the repetition's number
    """
    work = gcp_baseline_deployment if cloud == "gcp" else openstack_baseline_deployment
    tags = [f"sdk-{rep}-{i}" for i in range(DEPLOYMENTS)]
    t0 = time.time()
    with ThreadPoolExecutor(DEPLOYMENTS) as pool:
        list(pool.map(lambda tag: work(stand_in, choice, tag), tags))
    wall = time.time() - t0
    found = (gcp_leftovers if cloud == "gcp" else openstack_leftovers)(stand_in, tags)
    return {"wall": wall, **found}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cloud", choices=("gcp", "openstack"), required=True)
    cloud = parser.parse_args().cloud

    from airflow_cloud_paas.cli import AirflowApi
    from airflow_cloud_paas.standalone import LocalAirflow
    from airflow_cloud_paas.store import DeploymentStore

    dag_id = conn_id = f"bench_cloud_{cloud}"
    label, sdk = ("GCE", "gce-sdk") if cloud == "gcp" else ("Nova", "os-sdk")
    home = Path(tempfile.mkdtemp(prefix=f"bench_cloud_{cloud}_"))
    dags = home / "dags"
    dags.mkdir()
    (dags / f"{cloud}_bench.yaml").write_text(template_text(NODES, LAYOUT, version=UBUNTU, cloud=label))
    (dags / f"{cloud}_bench_dag.py").write_text(DAG_FILE.format(
        bench="bench_cloud_standins.py", template=f"{cloud}_bench.yaml", dag_id=dag_id, backend=cloud,
        conn_id=conn_id, runs=DEPLOYMENTS, node_tasks=NODE_TASKS))
    timings = GCP_TIMINGS if cloud == "gcp" else OPENSTACK_TIMINGS
    print(f"home {home}; {cloud} stand-in {timings}; {DEPLOYMENTS} deployments x {NODES} instances (layout {LAYOUT}, "
          f"node_tasks={NODE_TASKS}), {REPS} reps; baseline polls every {POLL} s", flush=True)

    stand_in = gcp_stand_in() if cloud == "gcp" else openstack_stand_in()
    if cloud == "gcp":
        from unit.backends.gcp_fixtures import connection_json

        connection = connection_json(stand_in)
    else:
        connection = openstack_connection_json(stand_in)
    leftovers = functools.partial(gcp_leftovers if cloud == "gcp" else openstack_leftovers, stand_in)
    airflow_rows: list[dict] = []
    sdk_rows: list[dict] = []
    try:
        wait_log_ports_free()
        server = LocalAirflow(home / "airflow", free_port(), dags_folder=dags)
        server.env[f"AIRFLOW_CONN_{conn_id.upper()}"] = connection
        tune_server(server)
        t_start = time.monotonic()
        with server:
            print(f"airflow up in {time.monotonic() - t_start:.0f} s at {server.url}", flush=True)
            user, password = server.credentials()
            api = AirflowApi(server.url, user, password)
            wait_dag_parsed(api, server.url, dag_id)
            store = DeploymentStore(f"sqlite:///{home / 'airflow' / 'cloud_paas' / 'deployments.db'}")
            for rep in range(1, REPS + 1):
                if cloud == "gcp":
                    with stand_in.lock:  # every operation is done: the stand-in reads them all on each request
                        stand_in.state.operations.clear()
                row = run_airflow_rep(api, store, None, rep, dag_id=dag_id, leftovers=leftovers,
                                      logs=home / "airflow" / "logs")
                airflow_rows.append(row)
                extra = f", floating IPs left {row['floating_ips']}" if "floating_ips" in row else ""
                print(f"airflow rep {rep}: wall {row['wall']:.1f} s, runs failed {row['failed']}, instances made "
                      f"{row['made']}, live {row['live']}, tagged groups left {row['groups']}, disks/volumes left "
                      f"{row['volumes']}{extra}, not DELETE_COMPLETE {row['not_deleted'] or 0}", flush=True)
                if cloud == "gcp":
                    choice = gcp_backend_choice(stand_in)
                    what = f"{choice['machineType']}, {choice['disks'][0]['initializeParams']['sourceImage']}"
                else:
                    choice = stand_in.last_backend_spec
                    if choice is None:
                        raise RuntimeError("the backend made no server: nothing to copy the flavor and image from")
                    what = f"flavor {choice['flavorRef']}, image {choice['imageRef']}"
                row = run_baseline_rep(cloud, stand_in, choice, rep)
                sdk_rows.append(row)
                print(f"{sdk} rep {rep}: wall {row['wall']:.2f} s ({what}), instances made {row['made']}, live "
                      f"{row['live']}, disks/volumes left {row['volumes']}", flush=True)
    finally:
        stand_in.stop()

    time.sleep(2)
    problems = check_rows(airflow_rows, sdk_rows, sdk=sdk)
    problems += [f"airflow rep {i}: floating IPs left {row['floating_ips']}"
                 for i, row in enumerate(airflow_rows, 1) if row.get("floating_ips")]
    problems += [f"{sdk} rep {i}: disks/volumes left {row['volumes']}"
                 for i, row in enumerate(sdk_rows, 1) if row["volumes"]]
    print_report(airflow_rows, sdk_rows, problems, cloud=label, where=f"the {cloud} stand-in", sdk=sdk)
    if os.environ.get("BENCH_KEEP_HOME") == "1":
        print(f"logs kept in {home}")
    else:
        shutil.rmtree(home, ignore_errors=True)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
