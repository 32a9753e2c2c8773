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
               "xrootd": "Data caching"}
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


def dags_folder() -> str:
    from airflow.configuration import conf

    return os.path.expanduser(conf.get("core", "dags_folder"))


def create_app() -> FastAPI:
    """Return the portal's FastAPI application (mounted under ``/cloud-paas-portal``)."""
    # plugin apps are not authenticated by Airflow: the same rule as the deployments API (plugin/api.py)
    from airflow.api_fastapi.core_api.security import requires_access_dag

    from airflow_cloud_paas.plugin.api import _store

    guard = [Depends(requires_access_dag("GET"))]
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
