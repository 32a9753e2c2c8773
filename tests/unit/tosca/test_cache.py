"""The topology cache: JSON round trip, hits without tosca-parser, invalidation by content."""

from __future__ import annotations

import datetime
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from airflow_cloud_paas.tosca import (
    TopologyCache,
    load_topology,
    topology_from_dict,
    topology_to_dict,
)
from airflow_cloud_paas.tosca.model import NodeTemplate, Topology

DATA = Path(__file__).resolve().parent / "data"
REPO = Path(__file__).resolve().parents[3]


def test_round_trip_through_json(tmp_path: Path) -> None:
    topology = load_topology(DATA / "good.yaml", cache_dir=str(tmp_path))
    again = topology_from_dict(json.loads(json.dumps(topology_to_dict(topology))))
    assert again == topology
    assert isinstance(again.plan, tuple) and isinstance(again.nodes["web"].requirements, tuple)


def test_round_trip_keeps_values_json_cannot_hold() -> None:
    node = NodeTemplate(
        name="n",
        type="t",
        properties={
            "when": datetime.date(2024, 1, 2),
            "at": datetime.datetime(2024, 1, 2, 3, 4, 5),
            "ports": {80: "http", 443: "https"},
            "blob": b"\x00\x01",
            "tags": {"a"},
        },
    )
    topology = Topology(source="x", content_hash="h", nodes={"n": node}, plan=("n",))
    assert topology_from_dict(json.loads(json.dumps(topology_to_dict(topology)))) == topology


def test_disk_entry_is_json_named_by_content_hash(tmp_path: Path) -> None:
    topology = load_topology(DATA / "good.yaml", cache_dir=str(tmp_path))
    entry = tmp_path / f"{topology.content_hash}.json"
    assert json.loads(entry.read_text())["content_hash"] == topology.content_hash
    assert len(list((tmp_path / "manifests").glob("*.json"))) == 1


def test_same_content_in_another_directory_is_one_entry(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    first = load_topology(DATA / "good.yaml", cache_dir=str(cache))
    copy = tmp_path / "copy"
    shutil.copytree(DATA / "types", copy / "types")
    shutil.copy(DATA / "good.yaml", copy / "good.yaml")
    second = load_topology(copy / "good.yaml", cache_dir=str(cache))
    assert second.content_hash == first.content_hash
    assert second.source == str(copy / "good.yaml")  # errors at run time name the file actually used
    assert len(list(cache.glob("*.json"))) == 1


def test_changed_import_is_a_miss(tmp_path: Path) -> None:
    shutil.copytree(DATA / "types", tmp_path / "types")
    shutil.copy(DATA / "good.yaml", tmp_path / "good.yaml")
    cache = str(tmp_path / "cache")
    before = load_topology(tmp_path / "good.yaml", cache_dir=cache)
    types = tmp_path / "types" / "app_types.yaml"
    types.write_text(types.read_text().replace("default: 4", "default: 6"))
    after = load_topology(tmp_path / "good.yaml", cache_dir=cache)
    assert after.content_hash != before.content_hash
    assert after.nodes["web"].properties["workers"] == 6


def test_unwritable_cache_still_loads(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the cache directory should be")
    topology = load_topology(DATA / "good.yaml", cache_dir=str(blocker / "cache"))
    assert topology.plan[0] == "db_host"


def test_hit_from_disk_in_a_fresh_process_never_imports_tosca_parser(tmp_path: Path, indigo_map) -> None:
    """Warm the cache here, then load in a new process: no tosca-parser, and measure the hit."""
    template = REPO.parent / "shared" / "tosca" / "examples" / "galaxy_elastic_cluster_aws.yaml"
    cache = tmp_path / "cache"
    load_topology(template, import_map=indigo_map, cache_dir=str(cache))
    TopologyCache.clear_memory()
    script = textwrap.dedent(
        f"""
        import json, sys, time
        assert "toscaparser" not in " ".join(sys.modules), "imported by the package itself"
        from airflow_cloud_paas.tosca import load_topology
        imap = json.loads({json.dumps(json.dumps(indigo_map))})
        start = time.perf_counter()
        topo = load_topology({str(template)!r}, import_map=imap, cache_dir={str(cache)!r})
        disk_ms = (time.perf_counter() - start) * 1000
        assert "toscaparser.tosca_template" not in sys.modules, "a cache hit parsed the template"
        start = time.perf_counter()
        for _ in range(200):
            load_topology({str(template)!r}, import_map=imap, cache_dir={str(cache)!r})
        memory_ms = (time.perf_counter() - start) * 1000 / 200
        # the control: the same call without the cache does import tosca-parser
        load_topology({str(template)!r}, import_map=imap, use_cache=False)
        assert "toscaparser.tosca_template" in sys.modules
        print(json.dumps({{"nodes": len(topo.nodes), "disk_ms": disk_ms, "memory_ms": memory_ms}}))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=dict(os.environ), cwd=REPO
    )
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert figures["nodes"] == 7
    print(
        f"cache hit in a fresh process: {figures['disk_ms']:.2f} ms from disk, {figures['memory_ms']:.3f} ms in memory"
    )


def test_hit_time_on_a_large_template(tmp_path: Path) -> None:
    """Report (not assert) the hit time for a 300-node template."""
    lines = ["tosca_definitions_version: tosca_simple_yaml_1_0", "topology_template:", "  node_templates:"]
    for i in range(150):
        lines += [
            f"    host_{i}:",
            "      type: tosca.nodes.Compute",
            "      capabilities:",
            "        host: {properties: {num_cpus: 2, mem_size: 4 GB}}",
            f"    app_{i}:",
            "      type: tosca.nodes.SoftwareComponent",
            f"      properties: {{component_version: '1.{i}'}}",
            f"      requirements: [{{host: host_{i}}}" + (f", {{dependency: app_{i - 1}}}]" if i else "]"),
        ]
    template = tmp_path / "large.yaml"
    template.write_text("\n".join(lines) + "\n")
    cache = str(tmp_path / "cache")
    start = time.perf_counter()
    parsed = load_topology(template, cache_dir=cache)
    parse_ms = (time.perf_counter() - start) * 1000
    TopologyCache.clear_memory()
    start = time.perf_counter()
    from_disk = load_topology(template, cache_dir=cache)
    disk_ms = (time.perf_counter() - start) * 1000
    start = time.perf_counter()
    for _ in range(100):
        load_topology(template, cache_dir=cache)
    memory_ms = (time.perf_counter() - start) * 1000 / 100
    assert from_disk == parsed and len(parsed.plan) == 300
    print(f"300 nodes: parse {parse_ms:.0f} ms, hit from disk {disk_ms:.2f} ms, in memory {memory_ms:.3f} ms")


@pytest.fixture(autouse=True)
def _fresh_memory():
    TopologyCache.clear_memory()
    yield
    TopologyCache.clear_memory()
