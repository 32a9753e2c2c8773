"""Imports resolved offline: the user's map, relative files, the packaged types, a URL cache."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from airflow_cloud_paas.exceptions import ToscaImportError
from airflow_cloud_paas.tosca import ImportResolver, indigo_import_map, load_topology
from airflow_cloud_paas.tosca.imports import (
    INDIGO_BRANCHES,
    PACKAGED_TYPES_FILE,
    PACKAGED_TYPES_NAME,
    PACKAGED_TYPES_URL,
    TYPES_CACHE_ENV,
)

DATA = Path(__file__).resolve().parent / "data"
TYPES_TEXT = """\
tosca_definitions_version: tosca_simple_yaml_1_0
node_types:
  remote.nodes.Thing:
    derived_from: tosca.nodes.SoftwareComponent
    properties:
      size:
        type: integer
        default: 3
"""
TEMPLATE = """\
tosca_definitions_version: tosca_simple_yaml_1_0
imports:
  - remote: {url}
topology_template:
  node_templates:
    server:
      type: tosca.nodes.Compute
    thing:
      type: remote.nodes.Thing
      requirements:
        - host: server
"""


def test_indigo_import_map_covers_every_branch(indigo_map: dict[str, str]) -> None:
    for branch in INDIGO_BRANCHES:
        url = f"https://raw.githubusercontent.com/indigo-dc/tosca-types/{branch}/custom_types.yaml"
        assert Path(indigo_map[url]).name == f"custom_types.{branch}.yaml"
        assert Path(indigo_map[url]).is_file()


def test_indigo_import_map_takes_any_ref(tmp_path: Path) -> None:
    (tmp_path / "custom_types.v4.0.0.yaml").write_text("tosca_definitions_version: tosca_simple_yaml_1_0\n")
    mapping = indigo_import_map(tmp_path)
    assert mapping == {
        "https://raw.githubusercontent.com/indigo-dc/tosca-types/v4.0.0/custom_types.yaml": str(
            tmp_path / "custom_types.v4.0.0.yaml"
        ),
        "https://raw.githubusercontent.com/indigo-dc/tosca-types/refs/heads/v4.0.0/custom_types.yaml": str(
            tmp_path / "custom_types.v4.0.0.yaml"
        ),
    }


def test_relative_import_resolves_against_the_template_not_the_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    topology = load_topology(DATA / "good.yaml", use_cache=False)
    assert topology.nodes["web"].type == "app.nodes.WebApp"


def test_nested_imports_are_followed_and_hashed(tmp_path: Path) -> None:
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "base.yaml").write_text(TYPES_TEXT)
    (tmp_path / "lib" / "more.yaml").write_text(
        "tosca_definitions_version: tosca_simple_yaml_1_0\nimports:\n  - base.yaml\n"
    )
    (tmp_path / "t.yaml").write_text(TEMPLATE.format(url="lib/more.yaml"))
    first = load_topology(tmp_path / "t.yaml", use_cache=False)
    assert first.nodes["thing"].properties == {"size": 3}
    (tmp_path / "lib" / "base.yaml").write_text(TYPES_TEXT.replace("default: 3", "default: 5"))
    second = load_topology(tmp_path / "t.yaml", use_cache=False)
    assert second.nodes["thing"].properties == {"size": 5}
    assert second.content_hash != first.content_hash


def test_import_map_entry_to_a_missing_file(tmp_path: Path) -> None:
    url = "https://types.example.org/t.yaml"
    (tmp_path / "t.yaml").write_text(TEMPLATE.format(url=url))
    with pytest.raises(ToscaImportError, match="does not exist") as caught:
        load_topology(tmp_path / "t.yaml", import_map={url: str(tmp_path / "gone.yaml")}, use_cache=False)
    assert caught.value.file == str(tmp_path / "t.yaml")
    assert url in str(caught.value)


@pytest.mark.skipif(not PACKAGED_TYPES_FILE.is_file(), reason="the packaged types file is not written yet")
def test_packaged_types_by_url_and_short_name(tmp_path: Path) -> None:
    resolver = ImportResolver(fetch=False)
    for uri in (PACKAGED_TYPES_URL, PACKAGED_TYPES_NAME):
        assert resolver.locate(uri, importer="t.yaml", base_dir=str(tmp_path)) == str(PACKAGED_TYPES_FILE)


@pytest.fixture
def types_server(tmp_path: Path) -> Iterator[tuple[str, list[str]]]:
    """Serve a types file on 127.0.0.1 and record the paths asked for."""
    root = tmp_path / "www"
    (root / "tosca").mkdir(parents=True)
    (root / "tosca" / "types.yaml").write_text(TYPES_TEXT)
    asked: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(root), **kwargs)

        def do_GET(self):  # noqa: N802 - the http.server API
            asked.append(self.path)
            super().do_GET()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/tosca/types.yaml", asked
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_url_is_fetched_once_then_served_from_the_types_cache(
    tmp_path: Path, types_server, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, asked = types_server
    cache = tmp_path / "types-cache"
    monkeypatch.setenv(TYPES_CACHE_ENV, str(cache))
    (tmp_path / "t.yaml").write_text(TEMPLATE.format(url=url))
    topology = load_topology(tmp_path / "t.yaml", use_cache=False)
    assert topology.nodes["thing"].properties == {"size": 3}
    assert asked == ["/tosca/types.yaml"]
    cached = ImportResolver().cache_path(url)
    assert cached.is_relative_to(cache) and cached.read_text() == TYPES_TEXT
    again = load_topology(tmp_path / "t.yaml", use_cache=False)  # parsed again, but not fetched again
    assert again.content_hash == topology.content_hash
    assert asked == ["/tosca/types.yaml"]


def test_fetch_failure_names_the_url_and_the_fix(tmp_path: Path) -> None:
    url = "http://127.0.0.1:9/types.yaml"
    resolver = ImportResolver(cache_dir=tmp_path)
    with pytest.raises(ToscaImportError) as caught:
        resolver.locate(url, importer=str(tmp_path / "t.yaml"), base_dir=str(tmp_path))
    text = str(caught.value)
    assert url in text and "import_map" in text and str(resolver.cache_path(url)) in text


def test_no_fetch_when_disabled(tmp_path: Path, types_server) -> None:
    url, asked = types_server
    with pytest.raises(ToscaImportError, match="offline"):
        ImportResolver(cache_dir=tmp_path, fetch=False).locate(url, importer="t.yaml", base_dir=str(tmp_path))
    assert asked == []
