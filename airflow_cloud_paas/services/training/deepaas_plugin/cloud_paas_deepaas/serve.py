"""Start DEEPaaS on a serving host that does not share a disk with Airflow: fetch the model, then run deepaas-run.

The entry point of the DEEPaaS image (``Dockerfile.deepaas``) and of a VM's ``cloud-paas-deepaas.service``
(``scripts/deepaas_configure.sh``): ``python -m cloud_paas_deepaas.serve``. It reads

- ``CLOUD_PAAS_MODEL_DIR``: the model folder DEEPaaS serves (the plugin reads it too);
- ``CLOUD_PAAS_MODEL_URL``: where to fetch the model from when that folder holds none (a ``.tar.gz`` of
  :func:`airflow_cloud_paas.services.training.archive.pack_model`, ``http(s)://`` or ``file://``), checked
  against its SHA-256 before anything serves;
- ``DEEPAAS_LISTEN_IP`` (``0.0.0.0``: a container's or VM's own address), ``DEEPAAS_PORT`` (5000),
  ``DEEPAAS_WORKERS`` (1);

and replaces itself with ``deepaas-run`` (from the same environment) serving the model as ``cloud-paas``. A model
it cannot fetch or check ends it with exit code 2 and the reason, before DEEPaaS starts.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from airflow_cloud_paas.services.training.archive import fetch_model
from airflow_cloud_paas.services.training.errors import ExportedModelError
from airflow_cloud_paas.services.training.export import MODEL_DIR_ENV, verify_files
from cloud_paas_deepaas.api import NAME

URL_ENV = "CLOUD_PAAS_MODEL_URL"


def _number(name: str, default: int) -> int:
    text = os.environ.get(name) or str(default)
    if not text.isdigit() or int(text) < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {text!r}")
    return int(text)


def main() -> int:
    """Fetch and check the model, then exec deepaas-run; return 2 (with the reason) when it cannot."""
    try:
        folder = os.environ.get(MODEL_DIR_ENV)
        if not folder:
            raise ValueError(f"{MODEL_DIR_ENV} must name the model folder")
        url = os.environ.get(URL_ENV)
        if url:
            fetch_model(url, folder)
        verify_files(folder)
        port, workers = _number("DEEPAAS_PORT", 5000), _number("DEEPAAS_WORKERS", 1)
    except (ExportedModelError, ValueError) as err:
        print(f"cloud_paas_deepaas.serve: {type(err).__name__}: {err}", file=sys.stderr, flush=True)
        return 2
    launcher = Path(sys.executable).with_name("deepaas-run")
    argv = [str(launcher), "--listen-ip", os.environ.get("DEEPAAS_LISTEN_IP") or "0.0.0.0",  # noqa: S104
            "--listen-port", str(port), "--model-name", NAME, "--workers", str(workers)]
    sys.stdout.flush()
    os.execv(launcher, argv)
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
