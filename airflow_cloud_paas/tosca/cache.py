"""Parsed topologies cached by content hash: in this process (LRU) and on disk (JSON, never pickle).

Two kinds of entries live under the cache directory
(``~/.cache/airflow_cloud_paas/topologies`` or ``$AIRFLOW_CLOUD_PAAS_TOPOLOGY_CACHE``):

* ``<content_hash>.json``: the :class:`~airflow_cloud_paas.tosca.model.Topology` itself;
* ``manifests/<key>.json``: for one template's bytes, directory and import map, the content hash and
  the sha256 of every imported file. A lookup re-hashes those files (a fraction of a millisecond)
  and so finds the topology without parsing any YAML or importing tosca-parser.

A cache that cannot be written (read-only home) only costs speed: loading still works.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from airflow_cloud_paas.tosca.model import (
    Conversion,
    Endpoint,
    InputDef,
    NodeTemplate,
    OutputDef,
    Policy,
    Requirement,
    Scalable,
    Topology,
)

log = logging.getLogger(__name__)

TOPOLOGY_CACHE_ENV = "AIRFLOW_CLOUD_PAAS_TOPOLOGY_CACHE"
DEFAULT_TOPOLOGY_CACHE = Path("~/.cache/airflow_cloud_paas/topologies")
FORMAT = 3  # 2: inputs carry declared_secret; 3: the conversions made as the template loaded
_TAG = "__cloud_paas__"  # marks an encoded non-JSON value; YAML keys never look like this
_MEMORY_SIZE = 128


def topology_cache_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """Return the directory of the topology cache.

    :param cache_dir: an explicit directory; else ``$AIRFLOW_CLOUD_PAAS_TOPOLOGY_CACHE`` or the default
    """
    return Path(cache_dir or os.environ.get(TOPOLOGY_CACHE_ENV) or DEFAULT_TOPOLOGY_CACHE).expanduser()


# ---------------------------------------------------------------------------------- JSON values
def _encode(value: Any) -> Any:
    """Return a YAML value as JSON-safe data (dates, bytes, sets and non-string keys tagged)."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, Mapping):
        if all(isinstance(k, str) for k in value) and _TAG not in value:
            return {k: _encode(v) for k, v in value.items()}
        return {_TAG: "map", "items": [[_encode(k), _encode(v)] for k, v in value.items()]}
    if isinstance(value, list | tuple):
        return [_encode(v) for v in value]
    if isinstance(value, datetime.datetime):
        return {_TAG: "datetime", "value": value.isoformat()}
    if isinstance(value, datetime.date):
        return {_TAG: "date", "value": value.isoformat()}
    if isinstance(value, bytes):
        return {_TAG: "bytes", "value": base64.b64encode(value).decode()}
    if isinstance(value, set | frozenset):
        return {_TAG: "set", "items": [_encode(v) for v in value]}
    raise TypeError(f"cannot cache a value of type {type(value).__name__}")


def _decode(value: Any) -> Any:
    if isinstance(value, list):
        return [_decode(v) for v in value]
    if not isinstance(value, dict):
        return value
    tag = value.get(_TAG)
    if tag is None:
        return {k: _decode(v) for k, v in value.items()}
    if tag == "map":
        return {_hashable(_decode(k)): _decode(v) for k, v in value["items"]}
    if tag == "datetime":
        return datetime.datetime.fromisoformat(value["value"])
    if tag == "date":
        return datetime.date.fromisoformat(value["value"])
    if tag == "bytes":
        return base64.b64decode(value["value"])
    if tag == "set":
        return {_hashable(_decode(v)) for v in value["items"]}
    raise ValueError(f"unknown cache tag {tag!r}")


def _hashable(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


# ------------------------------------------------------------------------------- Topology <-> dict
def topology_to_dict(topology: Topology) -> dict[str, Any]:
    """Return a JSON-serializable dict holding every field of a topology.

    :param topology: the parsed template
    """
    return {
        "format": FORMAT,
        "source": topology.source,
        "content_hash": topology.content_hash,
        "description": topology.description,
        "inputs": [
            {
                "name": i.name,
                "type": i.type,
                "description": i.description,
                "default": _encode(i.default),
                "required": i.required,
                "has_default": i.has_default,
                "constraints": _encode(list(i.constraints)),
                "entry_schema": _encode(i.entry_schema),
                "declared_secret": i.declared_secret,
            }
            for i in topology.inputs.values()
        ],
        "nodes": [_node_to_dict(n) for n in topology.nodes.values()],
        "outputs": [
            {"name": o.name, "value": _encode(o.value), "description": o.description} for o in topology.outputs.values()
        ],
        "policies": [
            {"name": p.name, "type": p.type, "targets": list(p.targets), "properties": _encode(p.properties)}
            for p in topology.policies
        ],
        "imports": list(topology.imports),
        "template_text": topology.template_text,
        "plan": list(topology.plan),
        "conversions": [
            {
                "where": c.where,
                "node": c.node,
                "field": c.field,
                "written": _encode(c.written),
                "value": _encode(c.value),
                "type": c.type,
                "secret": c.secret,
            }
            for c in topology.conversions
        ],
    }


def _node_to_dict(node: NodeTemplate) -> dict[str, Any]:
    scalable = node.scalable
    return {
        "name": node.name,
        "type": node.type,
        "type_hierarchy": list(node.type_hierarchy),
        "properties": _encode(node.properties),
        "capabilities": _encode(node.capabilities),
        "requirements": [
            {"name": r.name, "node": r.node, "relationship": r.relationship, "capability": r.capability}
            for r in node.requirements
        ],
        "scalable": None
        if scalable is None
        else {
            "count": _encode(scalable.count),
            "min_instances": _encode(scalable.min_instances),
            "max_instances": _encode(scalable.max_instances),
        },
        "endpoints": [
            {
                "name": e.name,
                "ports": _encode(list(e.ports)),
                "network_name": _encode(e.network_name),
                "dns_name": _encode(e.dns_name),
                "properties": _encode(e.properties),
            }
            for e in node.endpoints
        ],
        "artifacts": _encode(node.artifacts),
        "interfaces": _encode(node.interfaces),
        "description": node.description,
    }


def topology_from_dict(data: Mapping[str, Any]) -> Topology:
    """Rebuild a topology from :func:`topology_to_dict`'s output.

    :param data: the dict (as read back from JSON)
    """
    if data.get("format") != FORMAT:
        raise ValueError(f"unsupported topology cache format {data.get('format')!r} (expected {FORMAT})")
    inputs = {
        i["name"]: InputDef(
            name=i["name"],
            type=i["type"],
            description=i["description"],
            default=_decode(i["default"]),
            required=i["required"],
            has_default=i["has_default"],
            constraints=tuple(_decode(i["constraints"])),
            entry_schema=_decode(i["entry_schema"]),
            declared_secret=i["declared_secret"],
        )
        for i in data["inputs"]
    }
    nodes = {n["name"]: _node_from_dict(n) for n in data["nodes"]}
    outputs = {
        o["name"]: OutputDef(name=o["name"], value=_decode(o["value"]), description=o["description"])
        for o in data["outputs"]
    }
    policies = tuple(
        Policy(name=p["name"], type=p["type"], targets=tuple(p["targets"]), properties=_decode(p["properties"]))
        for p in data["policies"]
    )
    return Topology(
        source=data["source"],
        content_hash=data["content_hash"],
        description=data["description"],
        inputs=inputs,
        nodes=nodes,
        outputs=outputs,
        policies=policies,
        imports=tuple(data["imports"]),
        template_text=data["template_text"],
        plan=tuple(data["plan"]),
        conversions=tuple(
            Conversion(**{**c, "written": _decode(c["written"]), "value": _decode(c["value"])})
            for c in data["conversions"]
        ),
    )


def _node_from_dict(n: Mapping[str, Any]) -> NodeTemplate:
    scalable = n["scalable"]
    return NodeTemplate(
        name=n["name"],
        type=n["type"],
        type_hierarchy=tuple(n["type_hierarchy"]),
        properties=_decode(n["properties"]),
        capabilities=_decode(n["capabilities"]),
        requirements=tuple(Requirement(**r) for r in n["requirements"]),
        scalable=None
        if scalable is None
        else Scalable(
            count=_decode(scalable["count"]),
            min_instances=_decode(scalable["min_instances"]),
            max_instances=_decode(scalable["max_instances"]),
        ),
        endpoints=tuple(
            Endpoint(
                name=e["name"],
                ports=tuple(_decode(e["ports"])),
                network_name=_decode(e["network_name"]),
                dns_name=_decode(e["dns_name"]),
                properties=_decode(e["properties"]),
            )
            for e in n["endpoints"]
        ),
        artifacts=_decode(n["artifacts"]),
        interfaces=_decode(n["interfaces"]),
        description=n["description"],
    )


# ------------------------------------------------------------------------------------- the cache
def _sha256_file(path: str) -> str | None:
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return None


class TopologyCache:
    """Parsed topologies by content hash, in memory (shared by all instances) and on disk.

    :param cache_dir: the directory (default ``$AIRFLOW_CLOUD_PAAS_TOPOLOGY_CACHE`` or
        ``~/.cache/airflow_cloud_paas/topologies``)
    """

    _memory: OrderedDict[str, Topology] = OrderedDict()
    _manifests: dict[str, tuple[str, tuple[tuple[str, str], ...]]] = {}
    _lock = threading.Lock()

    def __init__(self, cache_dir: str | os.PathLike | None = None) -> None:
        self.directory = topology_cache_dir(cache_dir)

    @classmethod
    def clear_memory(cls) -> None:
        """Forget every topology held in this process (the disk cache stays)."""
        with cls._lock:
            cls._memory.clear()
            cls._manifests.clear()

    def _path(self, content_hash: str) -> Path:
        return self.directory / f"{content_hash}.json"

    def _manifest_path(self, key: str) -> Path:
        return self.directory / "manifests" / f"{key}.json"

    def get(self, content_hash: str) -> Topology | None:
        """Return the topology with this content hash, from memory or disk, or None.

        :param content_hash: :attr:`Topology.content_hash`
        """
        with self._lock:
            found = self._memory.get(content_hash)
            if found is not None:
                self._memory.move_to_end(content_hash)
                return found
        try:
            data = json.loads(self._path(content_hash).read_text(encoding="utf-8"))
            topology = topology_from_dict(data)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as err:  # a damaged entry is a miss, not a failure
            log.warning("Ignoring unreadable topology cache entry %s: %s", self._path(content_hash), err)
            return None
        if topology.content_hash != content_hash:
            return None
        self._remember(topology)
        return topology

    def lookup(self, key: str) -> Topology | None:
        """Return the topology a manifest key leads to, if every file it was built from is unchanged.

        :param key: the manifest key (template bytes, directory and import map digest)
        """
        with self._lock:
            manifest = self._manifests.get(key)
        if manifest is None:
            try:
                data = json.loads(self._manifest_path(key).read_text(encoding="utf-8"))
                manifest = (data["content_hash"], tuple((p, h) for p, h in data["files"]))
            except FileNotFoundError:
                return None
            except (OSError, ValueError, KeyError, TypeError) as err:
                log.warning("Ignoring unreadable manifest %s: %s", self._manifest_path(key), err)
                return None
        content_hash, files = manifest
        if any(_sha256_file(path) != digest for path, digest in files):
            return None  # an imported file changed: parse again
        topology = self.get(content_hash)
        if topology is not None:
            with self._lock:
                self._manifests[key] = manifest
        return topology

    def put(self, key: str | None, topology: Topology, files: Iterable[tuple[str, str]] = ()) -> None:
        """Store a topology (and the manifest that finds it again) in memory and on disk.

        :param key: the manifest key, or None to store the topology only
        :param topology: the parsed template
        :param files: (path, sha256) of every imported file
        """
        self._remember(topology)
        manifest = (topology.content_hash, tuple(files))
        if key is not None:
            with self._lock:
                self._manifests[key] = manifest
        try:
            path = self._path(topology.content_hash)
            if not path.exists():
                _atomic_write(path, json.dumps(topology_to_dict(topology), separators=(",", ":")))
            if key is not None:
                body = {"content_hash": manifest[0], "files": [list(f) for f in manifest[1]]}
                _atomic_write(self._manifest_path(key), json.dumps(body))
        except OSError as err:
            log.warning("Cannot write the topology cache in %s (%s); set $%s", self.directory, err, TOPOLOGY_CACHE_ENV)

    def _remember(self, topology: Topology) -> None:
        with self._lock:
            self._memory[topology.content_hash] = topology
            self._memory.move_to_end(topology.content_hash)
            while len(self._memory) > _MEMORY_SIZE:
                self._memory.popitem(last=False)


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
