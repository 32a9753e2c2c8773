"""FastAPI app of the portal: the application catalogue, deployment plans and the portal's React bundle.

The catalogue lists every packaged template (``airflow_cloud_paas/templates/*.yaml``) with its metadata and
its inputs as a form schema derived by the TOSCA layer (types, defaults, constraints with the words the run
would refuse a value with, secret inputs). The React app (``ui/``, built into ``plugin/portal_dist``) is
loaded by the Airflow UI as a plugin ``react_apps`` entry and triggers DAGs through Airflow's own REST API.
"""

from __future__ import annotations

import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, HTTPException
from fastapi.responses import FileResponse

from airflow_cloud_paas.exceptions import DeploymentNotFoundError
from airflow_cloud_paas.tosca import load_topology
from airflow_cloud_paas.tosca.model import InputDef, Topology
from airflow_cloud_paas.tosca.resolve import constraint_text

TEMPLATES = Path(__file__).resolve().parents[1] / "templates"
#: where `make install` (npm run build in ui/) writes the bundle; packaged with the wheel
BUNDLE_DIR = Path(__file__).resolve().parent / "portal_dist"

#: a category for templates whose metadata names none, from their icon
_CATEGORIES = {"docker": "Containers", "spark": "Data processing", "htcondor": "Batch computing",
               "slurm": "Batch computing", "xrootd": "Data caching", "galaxy": "Bioinformatics",
               "deep": "Machine learning"}
#: applications whose form is the seed portal's portlet: only these fields, with these labels, in this order
#: (``deployment_id`` is the run's own "job identifier" param; other inputs keep their template defaults)
PORTLETS: dict[str, list[tuple[str, str]]] = {
    "docker_app": [
        ("deployment_id", "Job identifier"),
        ("cpus", "CPUs"),
        ("memory", "Memory"),
        ("image", "Docker image (e.g. rocker/rstudio)"),
        ("data_path", "Container path for persistent data"),
    ],
}
_DAG_ID = re.compile(r"""dag_id\s*=\s*["']([\w.-]+)["']""")
_TEMPLATE = re.compile(r"""packaged_template\(\s*["']([\w.-]+?)(?:\.ya?ml)?["']\s*\)""")


def _metadata(path: Path) -> dict[str, Any]:
    import yaml

    data = yaml.safe_load(path.read_text()) or {}
    meta = data.get("metadata") if isinstance(data, dict) else None
    return dict(meta) if isinstance(meta, dict) else {}


def input_schema(spec: InputDef) -> dict[str, Any]:
    """Return one TOSCA input as a form field: type, default, description, constraints with their message.

    The message of a constraint is the one a run refusing the value gives (``it must be from 1 to 65535``).

    :param spec: the input definition
    """
    constraints = [
        {"op": op, "limit": limit, "message": f"must be {constraint_text(op, limit)}"}
        for c in spec.constraints or () if isinstance(c, dict) or hasattr(c, "items") for op, limit in c.items()
    ]
    secret = spec.is_secret
    return {
        "name": spec.name,
        "type": spec.type,
        "description": spec.description,
        # a secret's default is never sent to a browser
        "default": None if secret else spec.default,
        "has_default": spec.has_default and not secret,
        "required": spec.required and not spec.has_default,
        "secret": secret,
        "constraints": constraints,
    }


_BACKEND = re.compile(r"""backend\s*=\s*["']([\w.-]+)["']""")


def template_dags(dags_folder: Path) -> dict[str, list[dict[str, Any]]]:
    """Return packaged template name -> the DAGs that deploy it, read from the DAG files' text (never run).

    Each ``ToscaDag(packaged_template("x"), dag_id="y", backend="z")`` block counts; DAGs that keep the
    deployment running (``teardown=False``) come first.

    :param dags_folder: Airflow's DAGs folder
    """
    found: dict[str, list[dict[str, Any]]] = {}
    for file in sorted(dags_folder.glob("*.py")) if dags_folder.is_dir() else ():
        for block in file.read_text(errors="replace").split("ToscaDag(")[1:]:
            templates, dag_ids = _TEMPLATE.findall(block), _DAG_ID.findall(block)
            if not templates or not dag_ids:
                continue
            backend = _BACKEND.search(block)
            found.setdefault(templates[0], []).append({
                "dag_id": dag_ids[0],
                "backend": backend.group(1) if backend else None,
                "keeps": "teardown=False" in block.replace(" ", ""),
            })
    return {name: sorted(dags, key=lambda d: not d["keeps"]) for name, dags in found.items()}


def scalable_nodes(topology: Topology) -> list[dict[str, Any]]:
    """Return the nodes of a topology that can be scaled, with their bounds.

    :param topology: the parsed template
    """
    return [
        {"name": node.name, "min": node.scalable.min_instances, "max": node.scalable.max_instances,
         "count": node.scalable.count if isinstance(node.scalable.count, int) else None}
        for node in topology.nodes.values() if node.scalable is not None
    ]


@lru_cache(maxsize=4)
def catalogue(dags_folder: str) -> list[dict[str, Any]]:
    """Return one entry per packaged template: metadata, the DAG behind it and its input form.

    :param dags_folder: Airflow's DAGs folder (where the DAG behind each template is looked up)
    """
    dags = template_dags(Path(dags_folder))
    entries = []
    for path in sorted(TEMPLATES.glob("*.yaml")):
        topology = load_topology(path)
        meta = _metadata(path)
        icon = Path(str(meta.get("icon") or "")).stem
        entries.append({
            "name": path.stem,
            "display_name": meta.get("display_name") or path.stem.replace("_", " ").capitalize(),
            "description": " ".join((topology.description or "").split()),
            "icon": icon or "template",
            "category": meta.get("category") or _CATEGORIES.get(icon, "Other"),
            "dags": dags.get(path.stem, []),
            "portlet": [{"name": n, "label": label} for n, label in PORTLETS.get(path.stem, [])] or None,
            "inputs": [input_schema(spec) for spec in topology.inputs.values()],
            "nodes": list(topology.plan),
            "scalable": scalable_nodes(topology),
        })
    return entries


# ------------------------------------------------------------------------------------------ cache statistics
#: the attributes that mark an XCache instance (the XCache drivers' attributes: its disk and its origin)
_XCACHE_KEYS = ("cache_dir", "origin")
#: the connection type of XRootD servers and caches (airflow_cloud_paas.hooks.xrootd.XRootDHook)
_XROOTD = "xrootd"


def xcache_instances(record: Any) -> list[dict[str, Any]]:
    """Return a deployment's XCache instances: node, index, root URL, endpoint and cache directory.

    :param record: a :class:`~airflow_cloud_paas.store.DeploymentRecord`
    """
    found = []
    for resource in record.resources:
        attrs = resource.attributes or {}
        if all(attrs.get(k) for k in _XCACHE_KEYS):
            found.append({"node": resource.node_name, "index": resource.index, "root_url": attrs.get("root_url"),
                          "endpoint": attrs.get("endpoint"), "cache_dir": str(attrs["cache_dir"])})
    return found


def cache_labels(deployment_id: str, caches: list[dict[str, Any]],
                 connections: list[tuple[str, str | None, int | None, dict[str, Any]]]) -> list[str]:
    """Return the labels a deployment's cache accesses carry in the access log.

    The ingest operator and ``cloud-paas xcache monitor`` label records with the cache's ``xrootd``
    connection id; a connection is this deployment's cache when its ``cache_dir`` extra is the instance's
    directory or its host:port is the instance's endpoint. The deployment id and the cache's root URL are
    labels too (what a collector that knows the deployment writes).

    :param deployment_id: the deployment
    :param caches: its XCache instances (:func:`xcache_instances`)
    :param connections: ``(conn_id, host, port, extras)`` of the ``xrootd`` connections
    """
    labels = {deployment_id}
    dirs = {os.path.normpath(c["cache_dir"]) for c in caches}
    endpoints = {str(c["endpoint"]) for c in caches if c.get("endpoint")}
    for cache in caches:
        if cache.get("root_url"):
            labels.add(str(cache["root_url"]))
    for conn_id, host, port, extras in connections:
        cache_dir = extras.get("cache_dir")
        same_dir = bool(cache_dir) and os.path.normpath(str(cache_dir)) in dirs
        if same_dir or (host and port and f"{host}:{port}" in endpoints):
            labels.add(conn_id)
    return sorted(labels)


def cache_series(records: Any, prefetches: Any, bucket_s: float) -> list[dict[str, Any]]:
    """Return the accesses of a cache in time buckets: bytes hit, missed, bypassed, written; byte-hit ratio.

    Bytes written to the cache's disk are the bytes it fetched from the origin on a miss (a bypassed read is
    not written) plus the files the smart manager prefetched. XCache counts the blocks its own read-ahead
    fetched during an access as hits; on a file's first access (``access_no`` 1) nothing of it was on the
    disk, so every byte of that access counts here as missed and written, as the cache simulator counts a
    first request. The byte-hit ratio of a bucket is the bytes served from what the cache held over every
    byte read through it then (None when nothing was read).

    :param records: :class:`~airflow_cloud_paas.services.xcache.monitor.AccessRecord` s (an access counts
        when it ended)
    :param prefetches: ``(path, started_s, ended_s, size)`` of the prefetches (counted when they ended)
    :param bucket_s: the width of a bucket in seconds
    """
    if bucket_s <= 0:
        raise ValueError(f"bucket_s must be more than 0, got {bucket_s}")
    buckets: dict[int, dict[str, Any]] = {}

    def bucket(time_s: float) -> dict[str, Any]:
        key = int(time_s // bucket_s)
        return buckets.setdefault(key, {"start_s": key * bucket_s, "end_s": (key + 1) * bucket_s, "accesses": 0,
                                        "bytes_hit": 0, "bytes_missed": 0, "bytes_bypassed": 0,
                                        "bytes_prefetched": 0})

    for r in records:
        b = bucket(r.time_s)
        first = r.access_no == 1
        b["accesses"] += 1
        b["bytes_hit"] += 0 if first else r.bytes_hit
        b["bytes_missed"] += r.bytes_hit + r.bytes_missed if first else r.bytes_missed
        b["bytes_bypassed"] += r.bytes_bypassed
    for _path, _started, ended, size in prefetches:
        bucket(ended)["bytes_prefetched"] += size
    series = []
    for _key, b in sorted(buckets.items()):
        read = b["bytes_hit"] + b["bytes_missed"] + b["bytes_bypassed"]
        b["bytes_written"] = b["bytes_missed"] + b["bytes_prefetched"]
        b["byte_hit_ratio"] = b["bytes_hit"] / read if read else None
        series.append(b)
    return series


#: bucket widths the cache plot picks from (seconds)
_BUCKETS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 43200, 86400)


def auto_bucket(span_s: float, buckets: int = 24) -> float:
    """Return a round bucket width that cuts ``span_s`` seconds into about ``buckets`` buckets (or fewer).

    :param span_s: from the first access to the last
    :param buckets: how many buckets at most, roughly
    """
    return float(next((b for b in _BUCKETS if b * buckets >= span_s), _BUCKETS[-1]))


def _xrootd_connections() -> list[tuple[str, str | None, int | None, dict[str, Any]]]:
    """Return the ``xrootd`` connections Airflow knows (its database and ``AIRFLOW_CONN_*`` variables)."""
    import json

    found: dict[str, tuple[str, str | None, int | None, dict[str, Any]]] = {}
    try:
        from airflow.models import Connection
        from airflow.utils.session import create_session

        with create_session() as session:
            for conn in session.query(Connection).filter(Connection.conn_type == _XROOTD):
                found[conn.conn_id] = (conn.conn_id, conn.host, conn.port, dict(conn.extra_dejson))
    except Exception:  # no metadata database here (tests, a bare API): the environment's only
        pass
    for name, value in os.environ.items():
        if not name.startswith("AIRFLOW_CONN_"):
            continue
        conn_id = name[len("AIRFLOW_CONN_"):].lower()
        try:
            data = json.loads(value)
        except ValueError:
            continue  # a URI connection: the extras are not read here
        if isinstance(data, dict) and data.get("conn_type") == _XROOTD:
            extra = data.get("extra") or {}
            found.setdefault(conn_id, (conn_id, data.get("host"), data.get("port"),
                                       extra if isinstance(extra, dict) else {}))
    return list(found.values())


def cache_stats(store: Any, record: Any, bucket_s: float | None = None,
                connections: list[tuple[str, str | None, int | None, dict[str, Any]]] | None = None,
                access_log_url: str | None = None) -> dict[str, Any]:
    """Return a deployment's XCache accesses over time from the access log (empty without an XCache).

    :param store: the deployment store (the access log is in its database unless ``access_log_url``)
    :param record: the deployment
    :param bucket_s: the width of a bucket in seconds (default: :func:`auto_bucket` of the accesses' span)
    :param connections: the ``xrootd`` connections (default: Airflow's)
    :param access_log_url: where the access log is (default: the store's database, like the XCache operators)
    """
    caches = xcache_instances(record)
    result: dict[str, Any] = {"caches": caches, "labels": [], "bucket_s": bucket_s, "buckets": []}
    if not caches:
        return result
    from airflow_cloud_paas.services.xcache.monitor import AccessLog

    labels = cache_labels(record.id, caches, _xrootd_connections() if connections is None else connections)
    url = access_log_url or os.environ.get("AIRFLOW_CLOUD_PAAS_ACCESS_LOG") or \
        store.engine.url.render_as_string(hide_password=False)
    log = AccessLog(url)
    try:
        since = record.created_at.timestamp() if hasattr(record.created_at, "timestamp") else 0.0
        records = [r for label in labels for r in log.since(since, cache=label)]
        prefetches = [p for label in labels for p in log.prefetches(since, cache=label)]
    finally:
        log.close()
    if bucket_s is None:
        times = [r.time_s for r in records] + [p[2] for p in prefetches]
        bucket_s = auto_bucket(max(times) - min(times) if times else 0.0)
    result.update(labels=labels, bucket_s=bucket_s, buckets=cache_series(records, prefetches, bucket_s))
    return result


def dags_folder() -> str:
    from airflow.configuration import conf

    return os.path.expanduser(conf.get("core", "dags_folder"))


def create_app() -> FastAPI:
    """Return the portal's FastAPI application (mounted under ``/cloud-paas-portal``)."""
    # plugin apps are not authenticated by Airflow: the same rule as the deployments API (plugin/api.py)
    from airflow.api_fastapi.core_api.security import requires_access_dag

    from airflow_cloud_paas.plugin.access import current_identity, may_act
    from airflow_cloud_paas.plugin.api import _store

    guard = [Depends(requires_access_dag("GET"))]
    identity = Depends(current_identity)  # the caller: a route shows only deployments it may act on
    app = FastAPI(title="Cloud PaaS portal", version="1")

    @app.get("/api/catalogue", dependencies=guard)
    def get_catalogue() -> list[dict[str, Any]]:
        return catalogue(dags_folder())

    @app.get("/api/deployments/{deployment_id}/plan", dependencies=guard)
    def get_plan(deployment_id: str) -> dict[str, Any]:
        """The nodes a deployment's template makes (progress = nodes done / nodes) and its scalable ones."""
        from airflow_cloud_paas.tosca_text import load_topology_text

        try:
            # NOTE: the store the deployments API reads; per-user filtering must cover this read too
            record = _store().get(deployment_id)
        except DeploymentNotFoundError as err:
            raise HTTPException(status_code=404, detail=str(err)) from None
        topology = load_topology_text(record.template)
        return {"nodes": list(topology.plan), "scalable": scalable_nodes(topology)}

    @app.get("/api/deployments/{deployment_id}/cache-stats")
    def get_cache_stats(deployment_id: str, bucket_s: float | None = None,
                        caller: Any = identity) -> dict[str, Any]:
        """A deployment's XCache accesses in time buckets: byte-hit ratio and bytes written (see cache_stats)."""
        if bucket_s is not None and not 1 <= bucket_s <= 86_400:
            raise HTTPException(status_code=422, detail=f"bucket_s must be from 1 to 86400 seconds, got {bucket_s}")
        store = _store()
        try:
            record = store.get(deployment_id)
        except DeploymentNotFoundError as err:
            raise HTTPException(status_code=404, detail=str(err)) from None
        if not may_act(caller, record):  # another's deployment: not even its existence is told
            raise HTTPException(status_code=404, detail=f"deployment '{deployment_id}' not found")
        return cache_stats(store, record, bucket_s)

    # the bundle is public like Airflow's own JavaScript: it holds no data, and the UI loads it with import()
    @app.get("/static/{name}")
    def bundle(name: str) -> FileResponse:
        path = (BUNDLE_DIR / name).resolve()
        if path.parent != BUNDLE_DIR or not path.is_file():
            raise HTTPException(
                status_code=404,
                detail=f"{name} is not built; run `make install` (npm ci && npm run build in ui/)",
            )
        return FileResponse(path, media_type="text/javascript", headers={"Cache-Control": "no-cache"})

    return app
