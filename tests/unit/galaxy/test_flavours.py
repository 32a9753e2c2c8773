"""Tool flavours: the built-in ones, a user's directory, and bad flavour files refused with what and where."""

from __future__ import annotations

from pathlib import Path

import pytest

from airflow_cloud_paas.services.galaxy import flavours
from airflow_cloud_paas.services.galaxy.errors import GalaxyConfigError


def test_the_builtin_flavours() -> None:
    assert {"galaxy-no-tools", "cloud-paas-text"} <= set(flavours.available())
    assert flavours.load("galaxy-no-tools").galaxy_tools == ()
    text = flavours.load("cloud-paas-text")
    assert text.tool_ids == ["cloud_paas_upper", "cloud_paas_line_count", "cloud_paas_sort", "cloud_paas_sleep"]
    assert all(tool["class"] == "GalaxyTool" and tool["shell_command"] for tool in text.galaxy_tools)


def test_an_unknown_flavour_names_the_known_ones() -> None:
    with pytest.raises(GalaxyConfigError) as caught:
        flavours.load("galaxy-rna-workbench")
    assert caught.value.field == "flavor" and "cloud-paas-text" in str(caught.value)
    with pytest.raises(GalaxyConfigError, match="lowercase"):
        flavours.check_name("../../etc/passwd")


def test_a_flavour_from_the_users_directory(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "bio.yml").write_text(
        "description: a Tool Shed one\n"
        "tools:\n  - {name: bedtools, owner: iuc, revisions: [abc123], tool_panel_section_label: BED}\n")
    monkeypatch.setenv(flavours.PATH_ENV, str(tmp_path))
    bio = flavours.load("bio")
    assert bio.repositories == (flavours.ShedRepository("bedtools", "iuc", revisions=("abc123",), section="BED"),)
    assert bio.repositories[0].tool_shed_url == "https://toolshed.g2.bx.psu.edu"


@pytest.mark.parametrize("text, field", [
    ("tools: [{name: x}]\n", "tools[0]"),
    ("tools: [{name: x, owner: y, revisions: abc}]\n", "tools[0].revisions"),
    ("galaxy_tools: [{id: x}]\n", "galaxy_tools[0]"),
    ("galaxy_tools: [{class: GalaxyTool, id: 'a b'}]\n", "galaxy_tools[0].id"),
    ("[1, 2]\n", "flavour file"),
    ("tools: [\n", "flavour file"),
])
def test_a_bad_flavour_file_names_the_entry(tmp_path: Path, monkeypatch, text: str, field: str) -> None:
    (tmp_path / "bad.yml").write_text(text)
    monkeypatch.setenv(flavours.PATH_ENV, str(tmp_path))
    with pytest.raises(GalaxyConfigError) as caught:
        flavours.load("bad")
    assert caught.value.field == field and str(tmp_path / "bad.yml") in str(caught.value)


def test_an_oversized_flavour_file_is_refused_before_it_is_parsed(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "big.yml").write_text("#" * (flavours.MAX_FLAVOUR_BYTES + 1))
    monkeypatch.setenv(flavours.PATH_ENV, str(tmp_path))
    with pytest.raises(GalaxyConfigError, match="bytes"):
        flavours.load("big")
