"""``cloud-paas``: validate templates, and deploy, list, show, scale and delete deployments.

``validate`` works offline. ``list`` and ``show`` read the deployment store. ``deploy``, ``scale`` and
``delete`` trigger the same DAGs the UI does, through Airflow's REST API, so every change runs
with Airflow's retries, logs and lineage.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from collections.abc import Sequence
from typing import Any

from airflow_cloud_paas.exceptions import CloudPaaSError

SCALE_DAG_ID = "cloud_paas_scale_deployment"
DELETE_DAG_ID = "cloud_paas_delete_deployment"
TERMINAL = {"CREATE_COMPLETE", "CREATE_FAILED", "UPDATE_COMPLETE", "UPDATE_FAILED", "DELETE_COMPLETE",
            "DELETE_FAILED"}


def _parse_inputs(pairs: Sequence[str]) -> dict[str, Any]:
    inputs: dict[str, Any] = {}
    for pair in pairs or ():
        if "=" not in pair:
            raise SystemExit(f"--input expects key=value, got {pair!r}")
        key, value = pair.split("=", 1)
        try:  # numbers, booleans, lists and maps as JSON; anything else is a string
            inputs[key] = json.loads(value)
        except ValueError:
            inputs[key] = value
    return inputs


def _import_map(path: str | None) -> dict[str, str] | None:
    if not path:
        return None
    with open(path) as fh:
        return json.load(fh)


def _store(args: argparse.Namespace):
    from airflow_cloud_paas.store import DeploymentStore

    url = args.store_url or os.environ.get("CLOUD_PAAS_STORE_URL")
    if url:
        return DeploymentStore(url)
    from airflow_cloud_paas.hooks.store import CloudPaaSStoreHook

    return CloudPaaSStoreHook(cloud_paas_conn_id=args.conn_id).store


# ---------------------------------------------------------------------------------------- REST API
class AirflowApi:
    """A minimal client of Airflow 3's public REST API (``/api/v2``) with JWT login.

    :param url: the API server's base URL
    :param username: user for ``/auth/token``
    :param password: password for ``/auth/token`` (never printed)
    :param token: a ready JWT instead of username/password
    """

    def __init__(self, url: str, username: str | None = None, password: str | None = None,
                 token: str | None = None) -> None:
        import requests

        self.url = url.rstrip("/")
        self.session = requests.Session()
        if not token and username:
            resp = self.session.post(f"{self.url}/auth/token", json={"username": username, "password": password},
                                     timeout=30)
            if resp.status_code >= 400:
                raise CloudPaaSError(f"Airflow API login as {username!r} at {self.url} failed: HTTP "
                                     f"{resp.status_code}")
            token = resp.json()["access_token"]
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"

    def trigger(self, dag_id: str, conf: dict[str, Any]) -> dict[str, Any]:
        """Trigger a DAG run with ``conf`` and return the run.

        :param dag_id: the DAG to run
        :param conf: the run's params
        """
        from datetime import UTC, datetime

        self.session.patch(f"{self.url}/api/v2/dags/{dag_id}", json={"is_paused": False}, timeout=30)
        resp = self.session.post(
            f"{self.url}/api/v2/dags/{dag_id}/dagRuns",
            json={"conf": conf, "logical_date": datetime.now(UTC).isoformat()},
            timeout=30,
        )
        if resp.status_code >= 400:
            raise CloudPaaSError(f"Triggering DAG {dag_id} failed: HTTP {resp.status_code}: {resp.text[:500]}")
        return resp.json()

    def run_state(self, dag_id: str, run_id: str) -> str:
        """Return the state of a DAG run.

        :param dag_id: the DAG
        :param run_id: the run
        """
        resp = self.session.get(f"{self.url}/api/v2/dags/{dag_id}/dagRuns/{run_id}", timeout=30)
        resp.raise_for_status()
        return resp.json()["state"]


def _api(args: argparse.Namespace) -> AirflowApi:
    return AirflowApi(
        args.api_url or os.environ.get("CLOUD_PAAS_API_URL", "http://127.0.0.1:8080"),
        username=args.username or os.environ.get("CLOUD_PAAS_API_USER"),
        password=os.environ.get("CLOUD_PAAS_API_PASSWORD"),
        token=os.environ.get("CLOUD_PAAS_API_TOKEN"),
    )


def _wait(args: argparse.Namespace, api: AirflowApi, dag_id: str, run_id: str, deployment_id: str,
          want: set[str], *, new_deployment: bool = False) -> int:
    """Wait for the deployment status this run brings about.

    A status seen before the run has finished may be a previous run's (a second scale finds
    UPDATE_COMPLETE at once), so only a brand-new deployment's status counts early: its DAG may
    go on with other work (and its teardown) after CREATE_COMPLETE.
    """
    deadline = time.monotonic() + args.timeout
    store = _store(args)
    while time.monotonic() < deadline:
        state = api.run_state(dag_id, run_id)
        try:
            status = store.get(deployment_id).status
        except CloudPaaSError:
            status = None
        if (new_deployment and status in want) or state in ("success", "failed"):
            print(json.dumps({"deployment_id": deployment_id, "status": status, "dag_run_state": state}))
            return 0 if status in want else 1
        time.sleep(1)
    print(f"timed out after {args.timeout} s waiting for {deployment_id}", file=sys.stderr)
    return 1


# ---------------------------------------------------------------------------------------- commands
def cmd_validate(args: argparse.Namespace) -> int:
    from airflow_cloud_paas.backends.base import ResourceSpec
    from airflow_cloud_paas.tosca import instance_count, load_topology, resolved_node, validate_inputs

    topology = load_topology(args.template, import_map=_import_map(args.import_map))
    inputs = validate_inputs(topology, _parse_inputs(args.input))
    backend = None
    if args.backend:
        from airflow_cloud_paas.backends import get_backend

        options = {"work_root": os.environ.get("TMPDIR", "/tmp")} if args.backend == "local" else {}
        backend = get_backend(args.backend, **options)
    rows = []
    for step, name in enumerate(topology.plan, 1):
        node = resolved_node(topology, name, inputs)
        count = instance_count(topology, name, inputs)
        if backend is not None:
            backend.check(ResourceSpec("validate", name, 0, node.type, node.type_hierarchy,
                                       dict(node.properties), {k: dict(v) for k, v in node.capabilities.items()}))
        rows.append({
            "step": step, "node": name, "type": node.type, "instances": count,
            "requires": [f"{r.name}:{r.node}" for r in node.requirements],
            "resources": [f"{args.backend or 'any'}:{name}[{i}]" for i in range(count)],
        })
    if args.json:
        print(json.dumps({"template": str(args.template), "inputs": _masked(inputs), "plan": rows}, indent=2))
    else:
        print(f"{args.template}: valid, {len(rows)} node(s), deployment order:")
        for row in rows:
            req = f"  requires {', '.join(row['requires'])}" if row["requires"] else ""
            print(f"  {row['step']:>2}. {row['node']} ({row['type']}) x{row['instances']}{req}")
            for res in row["resources"]:
                print(f"        - {res}")
    return 0


def _masked(values: dict[str, Any]) -> dict[str, Any]:
    from airflow_cloud_paas.secrets import mask_secrets

    return mask_secrets(values)


def cmd_list(args: argparse.Namespace) -> int:
    records = _store(args).list(owner=args.owner, status=args.status)
    if args.json:
        print(json.dumps([_summary(r) for r in records], indent=2, default=str))
    else:
        for r in records:
            print(f"{r.id}  {r.status:<20} {r.backend:<10} {r.owner:<12} {r.created_at:%Y-%m-%d %H:%M:%S}")
    return 0


def _summary(record: Any) -> dict[str, Any]:
    return {"id": record.id, "status": record.status, "backend": record.backend, "owner": record.owner,
            "created_at": record.created_at.isoformat()}


def cmd_show(args: argparse.Namespace) -> int:
    record = _store(args).get(args.deployment_id)
    print(json.dumps(record.to_dict(), indent=2, default=str))
    return 0


def cmd_deploy(args: argparse.Namespace) -> int:
    api = _api(args)
    deployment_id = args.deployment_id or str(uuid.uuid4())
    conf = {**_parse_inputs(args.input), "deployment_id": deployment_id, "keep_deployment": not args.no_keep}
    run = api.trigger(args.dag_id, conf)
    print(json.dumps({"deployment_id": deployment_id, "dag_id": args.dag_id, "dag_run_id": run["dag_run_id"]}))
    if args.wait:
        return _wait(args, api, args.dag_id, run["dag_run_id"], deployment_id, {"CREATE_COMPLETE"},
                     new_deployment=args.deployment_id is None)
    return 0


def cmd_scale(args: argparse.Namespace) -> int:
    api = _api(args)
    conf = {"deployment_id": args.deployment_id, "node": args.node, "count": args.count}
    run = api.trigger(SCALE_DAG_ID, conf)
    print(json.dumps({"deployment_id": args.deployment_id, "dag_id": SCALE_DAG_ID, "dag_run_id": run["dag_run_id"]}))
    if args.wait:
        return _wait(args, api, SCALE_DAG_ID, run["dag_run_id"], args.deployment_id, {"UPDATE_COMPLETE"})
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    api = _api(args)
    run = api.trigger(DELETE_DAG_ID, {"deployment_id": args.deployment_id, "force": args.force})
    print(json.dumps({"deployment_id": args.deployment_id, "dag_id": DELETE_DAG_ID, "dag_run_id": run["dag_run_id"]}))
    if args.wait:
        return _wait(args, api, DELETE_DAG_ID, run["dag_run_id"], args.deployment_id, {"DELETE_COMPLETE"})
    return 0


def cmd_condor_credentials(args: argparse.Namespace) -> int:
    """Create a pool's ``htcondor_<deployment_id>`` connection with new credentials (idempotent); print its id."""
    from airflow_cloud_paas.services.condor.credentials import ensure_pool_connection
    from airflow_cloud_paas.services.condor.errors import CondorError

    try:
        conn_id = ensure_pool_connection(args.deployment_id, collector_host=args.collector,
                                         security_mode=args.security_mode)
    except CondorError as err:
        print(f"error: {type(err).__name__}: {err}", file=sys.stderr)
        return 2
    print(conn_id)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """Return the ``cloud-paas`` argument parser."""
    parser = argparse.ArgumentParser(prog="cloud-paas", description=__doc__.splitlines()[0])
    parser.add_argument("--store-url", help="deployment store SQLAlchemy URL (default: the Airflow connection)")
    parser.add_argument("--conn-id", default="cloud_paas_default", help="deployment store connection id")
    parser.add_argument("--api-url", help="Airflow API server (env CLOUD_PAAS_API_URL)")
    parser.add_argument("--username", help="Airflow user (env CLOUD_PAAS_API_USER; password: "
                        "CLOUD_PAAS_API_PASSWORD, or a JWT in CLOUD_PAAS_API_TOKEN)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("validate", help="check a template and print its deployment plan")
    p.add_argument("template")
    p.add_argument("--input", "-i", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--import-map", help="JSON file: import URL -> local file")
    p.add_argument("--backend", help="also check that this backend can deploy every node")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("list", help="list deployments")
    p.add_argument("--owner")
    p.add_argument("--status")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("show", help="show one deployment with its resources and history")
    p.add_argument("deployment_id")
    p.set_defaults(func=cmd_show)

    for name, func, helptext in (
        ("deploy", cmd_deploy, "trigger a deployment DAG"),
        ("scale", cmd_scale, "scale a node group of a deployment"),
        ("delete", cmd_delete, "delete a deployment"),
    ):
        p = sub.add_parser(name, help=helptext)
        if name == "deploy":
            p.add_argument("dag_id", help="the ToscaDag to run (e.g. spark_cluster)")
            p.add_argument("--input", "-i", action="append", default=[], metavar="KEY=VALUE")
            p.add_argument("--deployment-id")
            p.add_argument("--no-keep", action="store_true",
                           help="tear the deployment down at the end of the run (default: keep it)")
        else:
            p.add_argument("deployment_id")
        if name == "scale":
            p.add_argument("node")
            p.add_argument("count", type=int)
        if name == "delete":
            p.add_argument("--force", action="store_true",
                           help="also delete when a run that died left the deployment *_IN_PROGRESS")
        p.add_argument("--wait", action="store_true", help="wait for the deployment's status")
        p.add_argument("--timeout", type=float, default=600)
        p.set_defaults(func=func)

    p = sub.add_parser("condor-credentials", help="make an HTCondor pool's credentials connection "
                       "(htcondor_<deployment_id>; secrets are never printed)")
    p.add_argument("deployment_id")
    p.add_argument("--collector", help="the central manager's address, if known")
    p.add_argument("--security-mode", choices=("idtokens", "password"), default="idtokens")
    p.set_defaults(func=cmd_condor_credentials)

    # offline simulators: no Airflow, no store
    from airflow_cloud_paas.scaling.cli import add_scale_sim_parser
    from airflow_cloud_paas.services.xcache.cli import add_cache_sim_parser, add_xcache_monitor_parser

    add_scale_sim_parser(sub)
    add_cache_sim_parser(sub)
    # the XCache's monitoring stream into the access log (a service: runs until stopped)
    add_xcache_monitor_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``cloud-paas`` command.

    :param argv: the arguments (default: ``sys.argv[1:]``)
    """
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except CloudPaaSError as err:
        print(f"error: {type(err).__name__}: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
