"""Load a topology from template text (as kept in a deployment record)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from pathlib import Path

from airflow_cloud_paas.tosca import load_topology
from airflow_cloud_paas.tosca.model import Topology


def load_topology_text(text: str, *, import_map: Mapping[str, str] | None = None) -> Topology:
    """Parse template text through the same cached path as a file (imports must be URLs or mapped).

    :param text: the template's YAML text
    :param import_map: TOSCA import URL -> local file
    """
    digest = hashlib.sha256(text.encode()).hexdigest()
    home = os.environ.get("AIRFLOW_HOME") or str(Path.home() / "airflow")
    folder = Path(os.environ.get("AIRFLOW_CLOUD_PAAS_TEXT_CACHE") or Path(home) / "cloud_paas" / "templates")
    # a folder of its own per template: what a template may read is its own folder (cloudinit), and a stored
    # template must never see the other deployments' templates stored beside it
    folder = folder / digest
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = folder / "template.yaml"
    # never trust a file already there blindly: it must still be exactly this text
    if not path.is_file() or hashlib.sha256(path.read_bytes()).hexdigest() != digest:
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(text)
        tmp.replace(path)
    return load_topology(path, import_map=import_map)
