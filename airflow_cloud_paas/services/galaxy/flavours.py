"""Tool flavours: named sets of Galaxy tools installed together (Laniakea's "flavours").

A flavour is a YAML file ``<name>.yml``:

.. code-block:: yaml

    name: cloud-paas-text
    description: what the tools are for
    tools:          # Tool Shed repositories, in ephemeris' tool-list format
      - {name: bedtools, owner: iuc, tool_shed_url: https://toolshed.g2.bx.psu.edu, revisions: [abc123],
         tool_panel_section_label: BED tools}
    galaxy_tools:   # tools in Galaxy's YAML tool format (class GalaxyTool), installed through the dynamic tools API
      - {class: GalaxyTool, id: ..., name: ..., version: ..., shell_command: ..., inputs: [...], outputs: [...]}

The flavours shipped with the package are in ``flavours/`` next to this module; more are looked up in the
directories of ``CLOUD_PAAS_GALAXY_FLAVOURS`` (``os.pathsep``-separated). A template names a flavour, never a path:
a template reads no file outside its own folder.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from airflow_cloud_paas.services.galaxy.errors import GalaxyConfigError

BUILTIN_DIR = Path(__file__).with_name("flavours")
PATH_ENV = "CLOUD_PAAS_GALAXY_FLAVOURS"
#: INDIGO's default flavour: Galaxy with no tool added
NO_TOOLS = "galaxy-no-tools"
_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
_TOOL_ID = re.compile(r"^[A-Za-z0-9_.-]{1,255}$")
#: a flavour file's size limit (bytes): it is read before anything is deployed
MAX_FLAVOUR_BYTES = 1_000_000


@dataclass(frozen=True)
class ShedRepository:
    """A Tool Shed repository to install (ephemeris' tool-list entry).

    :param name: the repository's name
    :param owner: its owner
    :param tool_shed_url: the Tool Shed
    :param revisions: changeset revisions to install (empty: the newest installable one)
    :param section: the tool panel section label
    """

    name: str
    owner: str
    tool_shed_url: str = "https://toolshed.g2.bx.psu.edu"
    revisions: tuple[str, ...] = ()
    section: str | None = None


@dataclass(frozen=True)
class Flavour:
    """A named set of tools.

    :param name: the flavour's name
    :param description: what it is for
    :param repositories: Tool Shed repositories
    :param galaxy_tools: tools in Galaxy's YAML format (``class: GalaxyTool``)
    :param source: the file it was read from
    """

    name: str
    description: str = ""
    repositories: tuple[ShedRepository, ...] = ()
    galaxy_tools: tuple[Mapping[str, Any], ...] = field(default_factory=tuple)
    source: str = ""

    @property
    def tool_ids(self) -> list[str]:
        """Return the ids of the flavour's Galaxy-format tools (Tool Shed tools get theirs when installed)."""
        return [str(tool["id"]) for tool in self.galaxy_tools]


def search_path() -> list[Path]:
    """Return the directories searched for flavours: ``CLOUD_PAAS_GALAXY_FLAVOURS``'s, then the built-in one."""
    extra = [Path(p) for p in os.environ.get(PATH_ENV, "").split(os.pathsep) if p]
    return [*extra, BUILTIN_DIR]


def available() -> list[str]:
    """Return the names of the flavours found on the search path."""
    names = {NO_TOOLS}
    for directory in search_path():
        if directory.is_dir():
            names.update(p.stem for p in directory.glob("*.yml") if _NAME.match(p.stem))
    return sorted(names)


def check_name(name: object, *, field_name: str = "flavor") -> str:
    """Return the flavour name if it is well formed and known; raise :class:`GalaxyConfigError` otherwise.

    :param name: the name given
    :param field_name: the property that gave it (for the message)
    """
    if not isinstance(name, str) or not _NAME.match(name):
        raise GalaxyConfigError("a flavour name is 1-64 lowercase letters, digits, '.', '_' or '-'",
                                field=field_name, value=name)
    known = available()
    if name not in known:
        raise GalaxyConfigError(f"no such flavour; known: {', '.join(known)} (add <name>.yml to a directory of "
                                f"{PATH_ENV})", field=field_name, value=name)
    return name


def load(name: str) -> Flavour:
    """Return the flavour of this name (checked: :class:`GalaxyConfigError` names what is wrong and where).

    :param name: a flavour name (see :func:`available`)
    """
    check_name(name)
    if name == NO_TOOLS:
        return Flavour(NO_TOOLS, "Galaxy with no tool added (INDIGO's default flavour)")
    for directory in search_path():
        path = directory / f"{name}.yml"
        if path.is_file():
            return parse(path)
    raise GalaxyConfigError("the flavour's file vanished", field="flavor", value=name)  # pragma: no cover


def parse(path: Path) -> Flavour:
    """Read and check one flavour file.

    :param path: the ``<name>.yml`` file
    """
    where = str(path)
    if path.stat().st_size > MAX_FLAVOUR_BYTES:
        raise GalaxyConfigError(f"{where} is over {MAX_FLAVOUR_BYTES} bytes", field="flavour file")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise GalaxyConfigError(f"{where} is not valid YAML: {err}", field="flavour file") from None
    if not isinstance(data, Mapping):
        raise GalaxyConfigError(f"{where} must be a mapping with tools and/or galaxy_tools", field="flavour file")
    repositories = []
    for i, entry in enumerate(data.get("tools") or ()):
        if not isinstance(entry, Mapping) or not entry.get("name") or not entry.get("owner"):
            raise GalaxyConfigError(f"{where}: each Tool Shed entry needs a name and an owner",
                                    field=f"tools[{i}]", value=entry)
        revisions = entry.get("revisions") or ()
        if isinstance(revisions, str) or not all(isinstance(r, str) for r in revisions):
            raise GalaxyConfigError(f"{where}: revisions is a list of changeset hashes", field=f"tools[{i}].revisions",
                                    value=revisions)
        repositories.append(ShedRepository(
            name=str(entry["name"]), owner=str(entry["owner"]),
            tool_shed_url=str(entry.get("tool_shed_url") or ShedRepository.tool_shed_url),
            revisions=tuple(revisions), section=entry.get("tool_panel_section_label"),
        ))
    tools = []
    for i, tool in enumerate(data.get("galaxy_tools") or ()):
        if not isinstance(tool, Mapping) or tool.get("class") != "GalaxyTool":
            raise GalaxyConfigError(f"{where}: each galaxy_tools entry is a tool in Galaxy's YAML format "
                                    "(class: GalaxyTool)", field=f"galaxy_tools[{i}]")
        if not _TOOL_ID.match(str(tool.get("id") or "")):
            raise GalaxyConfigError(f"{where}: a tool id is letters, digits, '.', '_' or '-'",
                                    field=f"galaxy_tools[{i}].id", value=tool.get("id"))
        tools.append(dict(tool))
    return Flavour(name=str(data.get("name") or path.stem), description=str(data.get("description") or ""),
                   repositories=tuple(repositories), galaxy_tools=tuple(tools), source=where)
