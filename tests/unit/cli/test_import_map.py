"""``cloud-paas validate --import-map``: a bad map is a typed error naming the file and the fix; a good one is used."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from airflow_cloud_paas.cli import main

REPO = Path(__file__).resolve().parents[3]
SPARK = REPO / "airflow_cloud_paas" / "templates" / "spark_cluster.yaml"
TYPES_URL = "https://example.org/cloud-paas-test/types.yaml"


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "map.json"
    path.write_text(text)
    return path


def _unreadable(tmp_path: Path) -> Path:
    path = _write(tmp_path, "{}")
    path.chmod(0)
    return path


def _latin1(tmp_path: Path) -> Path:
    path = tmp_path / "map.json"
    path.write_bytes('{"café": "x.yaml"}'.encode("latin-1"))
    return path


CASES = {
    "missing": (lambda tmp: tmp / "nope.json", "cannot read the import map (No such file or directory)"),
    "a folder": (lambda tmp: tmp, "cannot read the import map (Is a directory)"),
    "not JSON": (lambda tmp: _write(tmp, "types.yaml = here"), "the import map is not JSON"),
    "not UTF-8": (_latin1, "cannot read the import map"),
    "a list": (lambda tmp: _write(tmp, json.dumps([TYPES_URL])), "the import map is a JSON list"),
    "a number": (lambda tmp: _write(tmp, "3"), "the import map is a JSON int"),
    "a non-string value": (lambda tmp: _write(tmp, json.dumps({TYPES_URL: 3, "ok": "x.yaml"})),
                           f"entries '{TYPES_URL}' must map to a file path"),
    "an empty value": (lambda tmp: _write(tmp, json.dumps({TYPES_URL: ""})), "must map to a file path"),
}
if os.geteuid() != 0:  # root reads a file whatever its mode
    CASES["unreadable"] = (_unreadable, "cannot read the import map (Permission denied)")


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_a_bad_import_map_is_a_typed_error(tmp_path: Path, capsys, case) -> None:
    make, says = CASES[case]
    path = make(tmp_path)
    assert main(["validate", str(SPARK), "--import-map", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ToscaImportError: ") and "Traceback" not in err
    assert str(path) in err and "field '--import-map'" in err and says in err
    if case not in ("missing", "a folder", "unreadable", "not UTF-8"):
        assert "must be a JSON object of import URL -> local file" in err  # says how to fix it


def test_a_good_import_map_resolves_the_imports(tmp_path: Path, capsys) -> None:
    (tmp_path / "types.yaml").write_text(
        "tosca_definitions_version: tosca_simple_yaml_1_0\n"
        "node_types:\n  test.nodes.Mapped:\n    derived_from: tosca.nodes.SoftwareComponent\n")
    template = tmp_path / "t.yaml"
    template.write_text(
        f"tosca_definitions_version: tosca_simple_yaml_1_0\nimports:\n  - {TYPES_URL}\n"
        "topology_template:\n  node_templates:\n    app: {type: test.nodes.Mapped}\n")
    mapping = _write(tmp_path, json.dumps({TYPES_URL: str(tmp_path / "types.yaml")}))
    assert main(["validate", str(template), "--import-map", str(mapping)]) == 0
    assert "app (test.nodes.Mapped)" in capsys.readouterr().out
