"""``cloud-paas``: validate templates, and deploy, list, show, scale and delete deployments.

``validate`` works offline. ``deploy``, ``scale`` and ``delete`` trigger the same DAGs the UI does, through
Airflow's REST API, so every change runs with Airflow's retries, logs and lineage (and the scale and delete
DAGs act only for the deployment's owner, its group or an admin). ``list`` and ``show`` read through the
plugin's deployments API as the logged-in user when one is given (``--username``, ``CLOUD_PAAS_API_USER`` or
a token in ``CLOUD_PAAS_API_TOKEN``: an Airflow JWT or an access token of the OIDC provider): a user sees
their own deployments and their groups', an admin all. Without a login, or with a store named by URL, they
read the deployment store itself, which takes the store's credentials (Airflow's connection, or the URL):
the operator's view, every deployment.

Which Airflow (and so which deployment store) the command talks to: ``AIRFLOW_HOME`` when set; else
the nearest ``.airflow/`` holding ``airflow.cfg`` in the current directory or one of its parents (the
home ``make run`` makes in the checkout); else Airflow's default ``~/airflow``. The store is then
``--store-url`` / ``CLOUD_PAAS_STORE_URL`` when given, else the ``cloud_paas_default`` connection of
that Airflow, else the SQLite file ``$AIRFLOW_HOME/cloud_paas/deployments.db``, the one Airflow's
tasks use without a connection. Airflow is imported only after that choice (its configuration reads
``AIRFLOW_HOME`` once), and every log line goes to stderr: stdout holds the command's output only.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

SCALE_DAG_ID = "cloud_paas_scale_deployment"
DELETE_DAG_ID = "cloud_paas_delete_deployment"
RECONCILE_DAG_ID = "cloud_paas_reconcile"
TERMINAL = {"CREATE_COMPLETE", "CREATE_FAILED", "UPDATE_COMPLETE", "UPDATE_FAILED", "DELETE_COMPLETE",
            "DELETE_FAILED"}


def _parse_inputs(pairs: Sequence[str]) -> dict[str, Any]:
    inputs: dict[str, Any] = {}
    for pair in pairs or ():
        key, equals, value = pair.partition("=")
        if not key or not equals:
            raise SystemExit(f"--input expects key=value, got {pair!r}")
        try:  # numbers, booleans, lists and maps as JSON; anything else is a string
            inputs[key] = json.loads(value)
        except ValueError:
            inputs[key] = value
    return inputs


def _import_map(path: str | None) -> dict[str, str] | None:
    """Return the ``--import-map`` file's mapping (import URL or name -> local file), or raise naming what is wrong.

    :param path: the JSON file given, or None
    """
    if not path:
        return None
    from airflow_cloud_paas.exceptions import ToscaImportError

    fix = 'it must be a JSON object of import URL -> local file, e.g. {"https://example.org/types.yaml": "types.yaml"}'
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        reason = getattr(err, "strerror", None) or err
        raise ToscaImportError(f"cannot read the import map ({reason}); check the path", file=path,
                               field="--import-map") from None
    try:
        mapping = json.loads(text)
    except ValueError as err:
        raise ToscaImportError(f"the import map is not JSON ({err}); {fix}", file=path,
                               field="--import-map") from None
    if not isinstance(mapping, dict):
        raise ToscaImportError(f"the import map is a JSON {type(mapping).__name__}; {fix}", file=path,
                               field="--import-map")
    bad = sorted(repr(k) for k, v in mapping.items() if not isinstance(v, str) or not v)
    if bad:
        raise ToscaImportError(f"the import map's entries {', '.join(bad)} must map to a file path (a non-empty "
                               f"string); {fix}", file=path, field="--import-map")
    return mapping


#: the Airflow home ``make run`` makes in the checkout (the Makefile's ``AIRFLOW_HOME=$(CURDIR)/.airflow``)
CHECKOUT_HOME = ".airflow"


def locate_airflow_home(cwd: str | os.PathLike[str] | None = None) -> tuple[str, str]:
    """Return the Airflow home the command uses and why; set ``AIRFLOW_HOME`` to it when it was unset.

    ``AIRFLOW_HOME`` when set; else the nearest ``.airflow/`` holding ``airflow.cfg`` (written by
    ``airflow standalone``, so by ``make run``) in ``cwd`` or one of its parents; else Airflow's default
    ``~/airflow``. Call it before Airflow is imported: Airflow's configuration reads the variable once.

    :param cwd: where to start looking (default: the current directory)
    """
    if os.environ.get("AIRFLOW_HOME"):
        return os.environ["AIRFLOW_HOME"], "AIRFLOW_HOME is set"
    here = Path(cwd or os.getcwd()).resolve()
    for folder in (here, *here.parents):
        home = folder / CHECKOUT_HOME
        if (home / "airflow.cfg").is_file():
            os.environ["AIRFLOW_HOME"] = str(home)
            return str(home), f"AIRFLOW_HOME unset; {home / 'airflow.cfg'} found, the home `make run` uses"
    return (os.path.join(os.path.expanduser("~"), "airflow"),
            f"AIRFLOW_HOME unset and no {CHECKOUT_HOME}/airflow.cfg here or above: Airflow's default")


def _logged_in(args: argparse.Namespace) -> bool:
    """Return whether the command names an API user or token (then it reads deployments as that user)."""
    return bool(args.username or os.environ.get("CLOUD_PAAS_API_USER") or os.environ.get("CLOUD_PAAS_API_TOKEN"))


def _deployments(args: argparse.Namespace):
    """Return what ``list``, ``show`` and ``--wait`` read: a store named by URL; else the plugin's API as the
    logged-in user; else the store of Airflow's connection.

    Either has ``list(owner=, status=)`` and ``get(deployment_id)``; ``args.store_used`` says which was read.
    """
    if not _logged_in(args) or args.store_url or os.environ.get("CLOUD_PAAS_STORE_URL"):
        return _store(args)
    api = _api(args)
    args.store_used = f"the deployments API at {api.url} (as the user logged in {api.who})"
    _say(args, f"deployments read through {args.store_used}")
    return DeploymentsApi(api)


def _store(args: argparse.Namespace):
    """Open the deployment store (see the module's docstring); remember which one in ``args.store_used``."""
    from airflow_cloud_paas.store import mask_url

    url = args.store_url or os.environ.get("CLOUD_PAAS_STORE_URL")
    if url:
        from airflow_cloud_paas.hooks.store import open_store

        args.store_used = f"{mask_url(url)} (from {'--store-url' if args.store_url else 'CLOUD_PAAS_STORE_URL'})"
        _say(args, f"deployment store {args.store_used}")
        return open_store(url)
    from airflow.sdk.exceptions import AirflowNotFoundException

    from airflow_cloud_paas.exceptions import CloudPaaSError
    from airflow_cloud_paas.hooks.store import CloudPaaSStoreHook

    hook = CloudPaaSStoreHook(cloud_paas_conn_id=args.conn_id)
    try:
        args.store_used = f"{hook.store_url} ({hook.store_source}; {args.airflow_home_reason})"
    except AirflowNotFoundException:
        raise CloudPaaSError(
            f"no Airflow connection {args.conn_id!r} in the Airflow at {args.airflow_home} "
            f"({args.airflow_home_reason}); define it, or name the store with --store-url or CLOUD_PAAS_STORE_URL"
        ) from None
    _say(args, f"deployment store {args.store_used}")
    return hook.store


def _say(args: argparse.Namespace, text: str) -> None:
    """Print a line to stderr with ``-v``."""
    if getattr(args, "verbose", 0):
        print(f"cloud-paas: {text}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------- REST API
#: how to give the API's credentials, for every authentication error
AUTH_HELP = ("give a user with --username (or CLOUD_PAAS_API_USER) and its password in CLOUD_PAAS_API_PASSWORD, "
             "or a JWT in CLOUD_PAAS_API_TOKEN; --api-url (or CLOUD_PAAS_API_URL) names the API server")


def _auth_help() -> str:
    """Return :data:`AUTH_HELP`, plus where ``make run`` wrote the admin password when that file exists."""
    home = os.environ.get("AIRFLOW_HOME")
    generated = Path(home, "simple_auth_manager_passwords.json.generated") if home else None
    if generated is not None and generated.is_file():
        return f"{AUTH_HELP}; `make run` logs in as admin with the password in {generated}"
    return AUTH_HELP


class AirflowApi:
    """A minimal client of Airflow 3's public REST API (``/api/v2``) with JWT login.

    Every failure is a :class:`~airflow_cloud_paas.exceptions.CloudPaaSError` that says what to do:
    an unreachable server names ``--api-url``, a 401 or 403 names the credentials to set.

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
        self.who = "with the JWT in CLOUD_PAAS_API_TOKEN" if token else (
            f"as {username!r}" if username else "with no credentials")
        if not token and username:
            resp = self._send("post", "/auth/token", json={"username": username, "password": password})
            if resp.status_code >= 400:
                from airflow_cloud_paas.exceptions import CloudPaaSError

                why = " (wrong user or password)" if resp.status_code in (401, 403) else f": {resp.text[:300]}"
                raise CloudPaaSError(f"Airflow API login as {username!r} at {self.url} failed: HTTP "
                                     f"{resp.status_code}{why}; {_auth_help()}")
            token = resp.json()["access_token"]
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"

    def _send(self, method: str, path: str, **kwargs: Any):
        """Send one request; an unreachable server is a CloudPaaSError naming the URL and how to change it."""
        import requests

        from airflow_cloud_paas.exceptions import CloudPaaSError

        try:
            return self.session.request(method, f"{self.url}{path}", timeout=30, **kwargs)
        except requests.RequestException as err:
            raise CloudPaaSError(
                f"cannot reach the Airflow API at {self.url} ({type(err).__name__}); start Airflow (`make run`) "
                "or name its API server with --api-url or CLOUD_PAAS_API_URL"
            ) from None

    def _check(self, resp: Any, what: str) -> Any:
        """Return the response's JSON, or raise a CloudPaaSError that says how to fix a refusal."""
        from airflow_cloud_paas.exceptions import CloudPaaSError

        if resp.status_code == 401:
            raise CloudPaaSError(f"{what} failed: HTTP 401 from the Airflow API at {self.url}: not logged in "
                                 f"({self.who}, or the token expired); {_auth_help()}")
        if resp.status_code == 403:
            raise CloudPaaSError(f"{what} failed: HTTP 403 from the Airflow API at {self.url}: the user logged in "
                                 f"{self.who} may not do this; use a user allowed to run DAGs ({AUTH_HELP})")
        if resp.status_code >= 400:
            raise CloudPaaSError(f"{what} failed: HTTP {resp.status_code}: {resp.text[:500]}")
        return resp.json()

    def trigger(self, dag_id: str, conf: dict[str, Any]) -> dict[str, Any]:
        """Trigger a DAG run with ``conf`` and return the run.

        :param dag_id: the DAG to run
        :param conf: the run's params
        """
        from datetime import UTC, datetime

        self._send("patch", f"/api/v2/dags/{dag_id}", json={"is_paused": False})
        resp = self._send("post", f"/api/v2/dags/{dag_id}/dagRuns",
                          json={"conf": conf, "logical_date": datetime.now(UTC).isoformat()})
        return self._check(resp, f"Triggering DAG {dag_id}")

    def run_state(self, dag_id: str, run_id: str) -> str:
        """Return the state of a DAG run.

        :param dag_id: the DAG
        :param run_id: the run
        """
        resp = self._send("get", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")
        return self._check(resp, f"Reading run {run_id} of DAG {dag_id}")["state"]

    def failed_tasks(self, dag_id: str, run_id: str) -> list[tuple[str, str]]:
        """Return each failed task of a run with the last error line of its log ("" when none is found).

        :param dag_id: the DAG
        :param run_id: the run
        """
        resp = self._send("get", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances",
                          params={"state": "failed"})
        failed = []
        for ti in self._check(resp, f"Reading the tasks of run {run_id}").get("task_instances", []):
            log = self._send("get", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{ti['task_id']}/logs/"
                             f"{ti.get('try_number') or 1}", params={"full_content": "true"},
                             headers={"Accept": "application/json"})
            failed.append((ti["task_id"], _last_error(log.json() if log.status_code == 200 else {})))
        return failed


class DeploymentsApi:
    """The deployments one user may see, read through the plugin's API (``/cloud-paas/api/deployments``).

    The API server decides what the user sees (their own deployments, their groups', all for an admin), so
    another user's deployment is "not found" here, as it is in the UI.

    :param api: a logged-in :class:`AirflowApi`
    """

    PATH = "/cloud-paas/api/deployments"

    def __init__(self, api: AirflowApi) -> None:
        self.api = api

    def list(self, owner: str | None = None, status: str | None = None) -> list[Any]:
        """Return the visible deployments, newest first.

        :param owner: only this owner's
        :param status: only with this status
        """
        from airflow_cloud_paas.store import DeploymentRecord

        params = {k: v for k, v in (("owner", owner), ("status", status)) if v}
        found = self.api._check(self.api._send("get", self.PATH, params=params), "Listing deployments")
        return [DeploymentRecord.from_dict(d) for d in found]

    def get(self, deployment_id: str) -> Any:
        """Return one deployment; :class:`DeploymentNotFoundError` when it does not exist or is not the user's.

        :param deployment_id: the deployment
        """
        from urllib.parse import quote

        from airflow_cloud_paas.exceptions import DeploymentNotFoundError
        from airflow_cloud_paas.store import DeploymentRecord

        resp = self.api._send("get", f"{self.PATH}/{quote(deployment_id, safe='')}")
        if resp.status_code == 404:
            raise DeploymentNotFoundError(f"deployment {deployment_id!r} not found among the deployments the user "
                                          f"logged in {self.api.who} may see (their own and their groups')")
        return DeploymentRecord.from_dict(self.api._check(resp, f"Reading deployment {deployment_id}"))


#: a log line naming an exception: ``SomeError: what went wrong``
_ERROR_LINE = re.compile(r"\b[A-Z]\w*(Error|Exception): \S")


def _last_error(log: Any) -> str:
    """Return the last line of a task log (Airflow 3's JSON log, or text) that names an exception."""
    if isinstance(log, dict):
        log = log.get("content", "")
    if isinstance(log, list):  # structured log: one dict per record, the text in "event" (and "error_detail")
        lines = []
        for record in log:
            if isinstance(record, dict):
                lines.extend(str(record.get("event", "")).splitlines())
                for detail in record.get("error_detail") or ():
                    if isinstance(detail, dict):
                        lines.append(f"{detail.get('exc_type', '')}: {detail.get('exc_value', '')}")
            else:
                lines.extend(str(record).splitlines())
    else:
        lines = str(log).splitlines()
    found = [line.strip() for line in lines if _ERROR_LINE.search(line)]
    return found[-1][:1000] if found else ""


def _api(args: argparse.Namespace) -> AirflowApi:
    url = args.api_url or os.environ.get("CLOUD_PAAS_API_URL", "http://127.0.0.1:8080")
    _say(args, f"Airflow API {url}")
    return AirflowApi(
        url,
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
    from airflow_cloud_paas.exceptions import CloudPaaSError

    deadline = time.monotonic() + args.timeout
    store = _deployments(args)
    while time.monotonic() < deadline:
        state = api.run_state(dag_id, run_id)
        try:
            record = store.get(deployment_id)
        except CloudPaaSError:
            record = None
        status = record.status if record is not None else None
        if (new_deployment and status in want) or state in ("success", "failed"):
            print(json.dumps({"deployment_id": deployment_id, "status": status, "dag_run_state": state}))
            if record is not None and status not in want and record.status_reason:
                print(f"deployment {deployment_id} is {status}: {record.status_reason}", file=sys.stderr)
            if status is None and state == "failed":
                failed = api.failed_tasks(dag_id, run_id)
                causes = "; ".join(f"{task}: {error or 'see its log'}" for task, error in failed) or "see its logs"
                if new_deployment or dag_id not in (SCALE_DAG_ID, DELETE_DAG_ID):
                    print(f"error: run {run_id} of DAG {dag_id} failed before deployment {deployment_id} was "
                          f"recorded (nothing was made): {causes}", file=sys.stderr)
                else:  # a scale or delete of a deployment the user may not see (or that does not exist)
                    print(f"error: run {run_id} of DAG {dag_id} failed: {causes}; deployment {deployment_id} is "
                          f"not in {args.store_used}", file=sys.stderr)
            elif status is None and isinstance(store, DeploymentsApi):
                print(f"error: the run ended ({state}) but deployment {deployment_id} is not among the deployments "
                      f"{args.store_used} shows", file=sys.stderr)
            elif status is None:
                print(f"error: the run ended ({state}) but deployment {deployment_id} is not in the deployment "
                      f"store this command reads: {args.store_used}. If Airflow at {api.url} uses another "
                      "store, run cloud-paas from the checkout that runs `make run`, or set AIRFLOW_HOME to "
                      "Airflow's home, or pass --store-url", file=sys.stderr)
            return 0 if status in want else 1
        time.sleep(1)
    print(f"timed out after {args.timeout} s waiting for {deployment_id}", file=sys.stderr)
    return 1


# ---------------------------------------------------------------------------------------- commands
def cmd_validate(args: argparse.Namespace) -> int:
    """Compile the template for the given inputs and, with ``--backend``, check it as a create would.

    Values the loader converted to their declared type are listed as warnings; ``--strict`` refuses them.
    """
    from airflow_cloud_paas.plan import PLAN_ONLY_ID
    from airflow_cloud_paas.request import DeploymentRequest
    from airflow_cloud_paas.tosca import load_topology

    topology = load_topology(args.template, import_map=_import_map(args.import_map), strict=args.strict)
    # conn:// inputs are read from their connections at run time: here the references stand in for them
    request = DeploymentRequest.build(topology, PLAN_ONLY_ID, _parse_inputs(args.input), backend=args.backend,
                                      resolve_refs=False)
    plan = request.plan
    not_honoured: tuple[str, ...] = ()
    if args.backend:
        from airflow_cloud_paas.backends import get_backend

        name, _, conn_id = args.backend.partition(":")  # a provider ref: backend[:conn_id]
        options = {"work_root": os.environ.get("TMPDIR", "/tmp")} if name == "local" else {}
        if conn_id and name != "local":
            options["conn_id"] = conn_id
        not_honoured = plan.check(get_backend(name, **options))  # what a create checks: sizes, images, rules...
    rows = []
    for step, name in enumerate(plan.order, 1):
        planned = plan.node(name)
        rows.append({
            "step": step, "node": name, "type": planned.node.type, "instances": planned.count,
            "requires": [f"{r.name}:{r.node}" for r in planned.node.requirements],
            "resources": [f"{args.backend or 'any'}:{name}[{i}]" for i in range(planned.count)],
        })
    if args.json:
        print(json.dumps({"template": str(args.template), "inputs": _masked(dict(plan.inputs), topology), "plan": rows,
                          "warnings": [c.as_dict() for c in topology.conversions],
                          "not_honoured": list(not_honoured)}, indent=2, default=str))
    else:
        if topology.conversions:
            print(f"{args.template}: {len(topology.conversions)} value(s) converted to their declared type "
                  "(--strict refuses them):")
            for conversion in topology.conversions:
                print(f"  warning: {conversion.message}")
        if not_honoured:
            print(f"{args.template}: {len(not_honoured)} thing(s) the backend deploys without honouring them:")
            for message in not_honoured:
                print(f"  warning: {message}")
        print(f"{args.template}: valid, {len(rows)} node(s), deployment order:")
        for row in rows:
            req = f"  requires {', '.join(row['requires'])}" if row["requires"] else ""
            print(f"  {row['step']:>2}. {row['node']} ({row['type']}) x{row['instances']}{req}")
            for res in row["resources"]:
                print(f"        - {res}")
    return 0


def _masked(values: dict[str, Any], topology: Any) -> dict[str, Any]:
    from airflow_cloud_paas.secrets import mask_secrets

    # named like a secret, or declared one (metadata: {secret: true}, a credential type)
    return mask_secrets(values, tuple(name for name, d in topology.inputs.items() if d.is_secret))


def cmd_list(args: argparse.Namespace) -> int:
    records = _deployments(args).list(owner=args.owner, status=args.status)
    if args.json:
        print(json.dumps([_summary(r) for r in records], indent=2, default=str))
    else:
        for r in records:
            print(f"{r.id}  {r.status:<20} {r.backend:<10} {r.owner or '-':<12} {_when(r.created_at)}")
    if not records:  # the usual surprise is another store than Airflow's: say which one was read
        matching = " matching --owner/--status" if args.owner or args.status else ""
        print(f"no deployments{matching} in the deployment store {args.store_used}", file=sys.stderr)
    return 0


def _summary(record: Any) -> dict[str, Any]:
    return {"id": record.id, "status": record.status, "backend": record.backend, "owner": record.owner,
            "created_at": record.created_at.isoformat()}


#: ``scheme://user:password@host``: the password part of a URL written in a value
_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^/\s:@]+:)[^/\s@]+@")


def _mask_value(value: Any) -> Any:
    """Return a value with secret-named keys and URL passwords masked, at any depth."""
    from airflow_cloud_paas.secrets import MASK, mask_secrets

    if isinstance(value, dict):
        return {k: _mask_value(v) for k, v in mask_secrets(value).items()}
    if isinstance(value, list | tuple):
        return [_mask_value(v) for v in value]
    if isinstance(value, str):
        return _URL_PASSWORD.sub(lambda m: f"{m['head']}{MASK}@", value)
    return value


def _public_record(record: Any) -> dict[str, Any]:
    """Return a deployment as JSON data with every secret masked (inputs, outputs, attributes, events)."""
    data = record.to_dict()
    for key in ("inputs", "outputs", "status_reason"):
        data[key] = _mask_value(data[key])
    data["resources"] = [{**r, "attributes": _mask_value(r["attributes"])} for r in data["resources"]]
    data["events"] = [{**e, "message": _mask_value(e["message"]), "data": _mask_value(e["data"])}
                      for e in data["events"]]
    return data


def _when(moment: Any) -> str:
    return f"{moment:%Y-%m-%d %H:%M:%S}" + (" UTC" if getattr(moment, "tzinfo", None) else "")


def _short(value: Any, width: int = 160) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= width else text[: width - 3] + "..."


#: how many of the latest events ``show`` prints (``--json`` has them all)
SHOW_EVENTS = 10


def cmd_show(args: argparse.Namespace) -> int:
    record = _deployments(args).get(args.deployment_id)
    data = _public_record(record)
    if args.json:
        print(json.dumps(data, indent=2, default=str))
        return 0
    lines = [f"deployment {record.id}", f"  status:   {data['status']}"]
    if data["status_reason"]:
        lines.append(f"  reason:   {_short(data['status_reason'], 500)}")
    if record.actor:
        from airflow_cloud_paas.store.lease import lease_expired

        ended = lease_expired(record.lease_expires_at, record.lease_holder, record.updated_at)
        lines.append(f"  running:  {record.actor}" if ended is None else
                     f"  held by:  {record.actor}, no longer running: {ended} (`cloud-paas reconcile` takes it over)")
    lines += [f"  backend:  {record.backend}", f"  owner:    {record.owner or '-'}"]
    if record.dag_id:
        lines.append(f"  made by:  DAG {record.dag_id}" + (f", run {record.run_id}" if record.run_id else ""))
    lines += [f"  created:  {_when(record.created_at)}", f"  updated:  {_when(record.updated_at)}"]
    for title in ("inputs", "outputs"):
        values = data[title]
        lines.append(f"  {title}:" + ("" if values else " none"))
        lines += [f"    {name}: {_short(value)}" for name, value in sorted(values.items())]
    resources = data["resources"]
    lines.append(f"  resources ({len(resources)}):" if resources else "  resources: none")
    for r in resources:
        lines.append(f"    {r['node_name']}[{r['index']}]  {r['state']:<10} {r['resource_id'] or '-'}")
    events = data["events"][-SHOW_EVENTS:]
    shown = f"last {len(events)} of {len(data['events'])}" if len(data["events"]) > len(events) else len(events)
    lines.append(f"  events ({shown}, oldest first):" if events else "  events: none")
    for e in events:
        moment = e["at"].replace("T", " ")[:19] if isinstance(e["at"], str) else e["at"]
        lines.append(f"    {moment}  {e['kind']:<10} {_short(e['message'])}")
    print("\n".join(lines))
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


def cmd_reconcile(args: argparse.Namespace) -> int:
    """Run the reconcile DAG now (it also runs every 10 minutes): recover deployments whose worker died."""
    api = _api(args)
    run = api.trigger(RECONCILE_DAG_ID, {})
    print(json.dumps({"dag_id": RECONCILE_DAG_ID, "dag_run_id": run["dag_run_id"]}))
    if not args.wait:
        return 0
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        state = api.run_state(RECONCILE_DAG_ID, run["dag_run_id"])
        if state in ("success", "failed"):
            print(json.dumps({"dag_run_state": state}))
            if state == "failed":
                causes = "; ".join(f"{task}: {error or 'see its log'}"
                                   for task, error in api.failed_tasks(RECONCILE_DAG_ID, run["dag_run_id"]))
                print(f"error: reconcile run {run['dag_run_id']} failed: {causes or 'see its logs'}", file=sys.stderr)
            return 0 if state == "success" else 1
        time.sleep(1)
    print(f"timed out after {args.timeout} s waiting for run {run['dag_run_id']}", file=sys.stderr)
    return 1


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


#: options of every command, given before or after the command's name
GLOBAL_OPTIONS: list[tuple[tuple[str, ...], dict[str, Any]]] = [
    (("--store-url",), {"help": "deployment store SQLAlchemy URL (env CLOUD_PAAS_STORE_URL; default: the "
                        "connection --conn-id of the Airflow found as AIRFLOW_HOME, else the nearest .airflow/ "
                        "that `make run` made here or above, else ~/airflow; without that connection "
                        "$AIRFLOW_HOME/cloud_paas/deployments.db)"}),
    (("--conn-id",), {"default": "cloud_paas_default", "help": "deployment store connection id"}),
    (("--api-url",), {"help": "Airflow API server (env CLOUD_PAAS_API_URL; default http://127.0.0.1:8080)"}),
    (("--username",), {"help": "Airflow user (env CLOUD_PAAS_API_USER; password: CLOUD_PAAS_API_PASSWORD, "
                       "or a JWT in CLOUD_PAAS_API_TOKEN)"}),
    (("-v", "--verbose"), {"action": "count", "default": 0, "help": "say which Airflow home, store and API "
                           "are used; -vv: debug logs (every log line goes to stderr)"}),
]


def build_parser() -> argparse.ArgumentParser:
    """Return the ``cloud-paas`` argument parser."""
    parser = argparse.ArgumentParser(prog="cloud-paas", description=__doc__.splitlines()[0])
    for flags, options in GLOBAL_OPTIONS:
        parser.add_argument(*flags, **options)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("validate", help="check a template and print its deployment plan")
    p.add_argument("template")
    p.add_argument("--input", "-i", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--import-map", help="JSON file: import URL -> local file")
    p.add_argument("--backend", help="also check, as a create would, that this backend (or provider ref "
                   "backend:conn_id) can deploy every node: sizes, images, security rules, user data and its "
                   "size limit")
    p.add_argument("--strict", action="store_true", help="refuse a value that is not of its declared type "
                   "instead of converting it (with a warning) where nothing is lost")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("list", help="list deployments")
    p.add_argument("--owner")
    p.add_argument("--status")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("show", help="show one deployment: status, outputs, resources, latest events")
    p.add_argument("deployment_id")
    p.add_argument("--json", action="store_true", help="the whole record, events included (secrets masked)")
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

    p = sub.add_parser("reconcile", help="recover deployments whose worker died (stuck *_IN_PROGRESS): "
                       "finish or undo what they were doing; runs the cloud_paas_reconcile DAG now")
    p.add_argument("--wait", action="store_true", help="wait for the run to end")
    p.add_argument("--timeout", type=float, default=600)
    p.set_defaults(func=cmd_reconcile)

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
    for p in sub.choices.values():  # the global options after the command too; SUPPRESS keeps one given before
        for flags, options in GLOBAL_OPTIONS:
            p.add_argument(*flags, **{**options, "default": argparse.SUPPRESS, "help": argparse.SUPPRESS})
    return parser


class _Stderr:
    """``sys.stderr`` as it is at each write (a test harness may replace it after logging is set up)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()

    @property
    def encoding(self) -> str:
        return getattr(sys.stderr, "encoding", None) or "utf-8"

    def isatty(self) -> bool:
        return sys.stderr.isatty()


def _logs_to_stderr(verbose: int) -> None:
    """Send every log line (Airflow's structlog and the standard library's) to stderr, never stdout.

    Importing Airflow sets its logging up to write to stdout, which would mix log lines into the
    output that scripts parse (``list --json``); this sets it up again with stderr. ``-v`` logs at
    INFO, ``-vv`` at DEBUG; otherwise Airflow's configured level (``[logging] logging_level``).

    :param verbose: how many ``-v`` were given
    """
    import airflow  # noqa: F401 - sets Airflow's logging up (to stdout) on import: done first, then redone
    from airflow.sdk.log import configure_logging

    configure_logging(log_level="DEBUG" if verbose > 1 else "INFO" if verbose else "DEFAULT", output=_Stderr())


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``cloud-paas`` command.

    :param argv: the arguments (default: ``sys.argv[1:]``)
    """
    args = build_parser().parse_args(argv)
    # before Airflow is imported: its configuration reads AIRFLOW_HOME once
    args.airflow_home, args.airflow_home_reason = locate_airflow_home()
    args.store_used = None
    _logs_to_stderr(args.verbose)
    _say(args, f"Airflow home {args.airflow_home} ({args.airflow_home_reason})")
    from airflow_cloud_paas.exceptions import CloudPaaSError

    try:
        return args.func(args)
    except CloudPaaSError as err:
        print(f"error: {type(err).__name__}: {err}", file=sys.stderr)
        if args.store_used and args.store_used not in str(err):
            print(f"(deployment store: {args.store_used})", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
