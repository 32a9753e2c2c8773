"""Local driver for DEEPaaS: a trained model served through the real DEEPaaS V2 API (``deepaas-run``) on loopback.

Registered with the local backend for ``cloud_paas.nodes.deepaas.ModelServer``. DEEPaaS runs from its own virtual
environment (deepaas 2.6.0 needs marshmallow<4, webargs 5 and Werkzeug 2, which Airflow's cannot share; ``make
deepaas-runtime`` builds it with torch, the digits' scikit-learn and this project's plugin ``cloud_paas_deepaas``),
found at ``CLOUD_PAAS_DEEPAAS_VENV`` or :data:`DEFAULT_VENV`. Airflow's side talks to it over HTTP only
(:class:`~airflow_cloud_paas.hooks.deepaas.DEEPaaSHook`).

- The node's ``model_dir`` (or a ``file://`` ``model_uri``) is an exported model directory
  (:mod:`airflow_cloud_paas.services.training.export`); its ``model.json`` is checked before anything starts.
- ``deepaas-run`` serves on 127.0.0.1 (the ``http`` port) with ``CLOUD_PAAS_MODEL_DIR`` naming the model, and
  ``PYTHONPATH`` a directory holding only a link to this package, so the plugin imports the export format and
  the training engine without Airflow's other packages reaching DEEPaaS's interpreter.
- Ready once ``GET /v2/models/`` lists the model: DEEPaaS answers only after its workers loaded it, so a model that
  cannot be loaded ends the process, and the backend reports the log lines naming the file and the reason.
- Stopped with SIGINT (aiohttp's graceful exit): DEEPaaS's own SIGTERM handler exits from inside the event loop and
  leaves the process hanging until the backend's SIGKILL.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from airflow_cloud_paas.backends.base import ResourceSpec
from airflow_cloud_paas.backends.local import PROVIDER, Launch, LocalDriver, ProcessRecord, property_port
from airflow_cloud_paas.exceptions import ServiceConfigError, UnsupportedNodeError
from airflow_cloud_paas.services.training.export import MODEL_DIR_ENV, THREADS_ENV, TRAINING_DIR_ENV

DEEPAAS_VERSION = "2.6.0"
VENV_ENV = "CLOUD_PAAS_DEEPAAS_VENV"
DEFAULT_VENV = Path.home() / ".cache" / "airflow_cloud_paas" / f"deepaas-{DEEPAAS_VERSION}"
#: the plugin's entry-point name: the model's API is /v2/models/cloud-paas/
MODEL_NAME = "cloud-paas"
SERVER_TYPES = ("cloud_paas.nodes.deepaas.ModelServer",)
#: this package's folder, linked into the instance's PYTHONPATH directory
_PACKAGE = Path(__file__).resolve().parents[2]


def venv_dir() -> Path:
    """Return DEEPaaS's virtual environment (``CLOUD_PAAS_DEEPAAS_VENV`` or the default)."""
    return Path(os.environ.get(VENV_ENV) or DEFAULT_VENV)


def deepaas_run() -> Path | None:
    """Return DEEPaaS's ``deepaas-run`` launcher, or None when DEEPaaS is not installed."""
    path = venv_dir() / "bin" / "deepaas-run"
    return path if path.is_file() and os.access(path, os.X_OK) else None


def _where(spec: ResourceSpec) -> str:
    return f"{spec.deployment_id}/{spec.node_name}"


def model_path(properties: Mapping[str, Any]) -> Path:
    """Return the model directory a node names (``model_dir``, or a ``file://`` ``model_uri``).

    :param properties: the node's properties
    """
    model_dir, uri = properties.get("model_dir") or "", properties.get("model_uri") or ""
    if model_dir and uri:
        raise ServiceConfigError("give model_dir or model_uri, not both", field="model_uri", value=uri)
    if model_dir:
        return Path(str(model_dir)).expanduser()
    if not uri:
        raise ServiceConfigError("name the exported model: model_dir (a directory with model.pt and model.json) or "
                                 "model_uri (file:///path)", field="model_dir", value=model_dir)
    parts = urlsplit(str(uri))
    if parts.scheme != "file" or parts.netloc not in ("", "localhost"):
        raise ServiceConfigError("the local backend serves models from this machine's disk: use a file:///path "
                                 "URI, or copy the model here and set model_dir", field="model_uri", value=uri)
    return Path(unquote(parts.path))


def _positive_int(properties: Mapping[str, Any], name: str, default: int) -> int:
    value = properties.get(name)
    if value in (None, ""):
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ServiceConfigError("an integer >= 1", field=name, value=value)
    return value


class ModelServerDriver(LocalDriver):
    """Serve an exported model with ``deepaas-run`` on 127.0.0.1, from DEEPaaS's own virtual environment."""

    def check(self, spec: ResourceSpec) -> None:
        """Raise UnsupportedNodeError without DEEPaaS; ServiceConfigError or ExportedModelError for a bad model.

        :param spec: the resource wanted
        """
        from airflow_cloud_paas.services.training.export import read_metadata

        if deepaas_run() is None:
            raise UnsupportedNodeError(
                f"node '{spec.node_name}' ({spec.node_type}): DEEPaaS is not installed in {venv_dir()}: run `make "
                f"deepaas-runtime` (a venv with deepaas=={DEEPAAS_VERSION}, torch and the cloud_paas_deepaas plugin), "
                f"or set {VENV_ENV} to one", provider=PROVIDER, resource=_where(spec))
        read_metadata(model_path(spec.properties))
        _positive_int(spec.properties, "workers", 1)
        _positive_int(spec.properties, "cpu_threads", 1)

    def ports(self, spec: ResourceSpec) -> dict[str, int]:
        """Return the HTTP port (the ``port`` property; 0 or absent - a free one).

        :param spec: the resource wanted
        """
        return {"http": property_port(spec.properties)}

    def command(self, spec: ResourceSpec, work_dir: Path, ports: Mapping[str, int]) -> Launch:
        """Return ``deepaas-run`` bound to loopback, serving the node's model with this package on its path.

        :param spec: the resource wanted
        :param work_dir: the instance's directory (trainings are written under it)
        :param ports: the chosen ports
        """
        from airflow_cloud_paas.services.training.export import read_metadata

        model = model_path(spec.properties).resolve()
        meta = read_metadata(model)
        # only this package on DEEPaaS's path: Airflow's site-packages would shadow DEEPaaS's marshmallow 3
        python_path = work_dir / "pythonpath"
        python_path.mkdir(exist_ok=True)
        link = python_path / _PACKAGE.name
        if not link.is_symlink():
            link.symlink_to(_PACKAGE, target_is_directory=True)
        venv = venv_dir()
        threads = str(_positive_int(spec.properties, "cpu_threads", 1))
        env = {
            "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
            "VIRTUAL_ENV": str(venv),
            "PYTHONPATH": str(python_path),
            MODEL_DIR_ENV: str(model),
            TRAINING_DIR_ENV: str(work_dir / "trainings"),
            THREADS_ENV: threads,
            "OMP_NUM_THREADS": threads,  # numpy and torch's other pools, in every worker process
        }
        argv = (str(deepaas_run()), "--listen-ip", "127.0.0.1", "--listen-port", str(ports["http"]),
                "--model-name", MODEL_NAME, "--workers", str(_positive_int(spec.properties, "workers", 1)))
        data = {"url": f"http://127.0.0.1:{ports['http']}", "model_dir": str(model), "model": meta.model,
                "version": meta.version, "sha256": meta.sha256}
        return Launch(argv=argv, env=env, stop_signal="SIGINT", data=data)

    def ready(self, record: ProcessRecord) -> bool:
        """Return whether ``GET /v2/models/`` lists the model (DEEPaaS answers once its workers loaded it).

        :param record: the instance's record
        """
        import requests

        try:
            answer = requests.get(f"{record.data['url']}/v2/models/", timeout=5)
        except requests.RequestException:
            return False
        if answer.status_code != 200:
            return False
        try:
            models = answer.json().get("models") or []
        except ValueError:
            return False
        return any(m.get("id") == MODEL_NAME for m in models)

    def attributes(self, spec: ResourceSpec, record: ProcessRecord) -> dict[str, Any]:
        """Return deepaas_url, api_url, port, model_name, model, version, sha256 and model_dir.

        :param spec: the resource wanted
        :param record: the instance's record
        """
        url = record.data["url"]
        return {
            "deepaas_url": url,
            "api_url": f"{url}/v2",
            "port": record.ports["http"],
            "model_name": MODEL_NAME,
            "model": record.data["model"],
            "version": record.data["version"],
            "sha256": record.data["sha256"],
            "model_dir": record.data["model_dir"],
        }
