"""YAML reading shared by the TOSCA layer: the C loader when present, errors as ToscaSyntaxError.

A template is data from a user, so reading it is bounded; past these limits the file is refused
with a ToscaSyntaxError (in bounded time and memory) instead of hanging validation, DAG parsing
or a task:

* :data:`MAX_DOCUMENT_BYTES` (16 MiB): the size of one YAML file (a template or an imported file;
  the INDIGO types files are about 100 KB);
* :data:`MAX_EXPANDED_NODES` (1,000,000): the number of YAML nodes once every alias is expanded,
  which is what a reader walking the result visits. A "billion laughs" document (nested anchors
  and aliases) is refused before it is built; the largest INDIGO types file has about 25,000;
* :data:`MAX_DEPTH` (100): how deeply collections nest (the TOSCA grammar needs about 15);
* a recursive alias (a collection that contains itself) is refused outright;
* a name defined twice (two node templates, inputs, outputs, groups, relationship templates or
  types of the same name, a top-level section or a node template's key such as ``properties``
  written twice) is refused, naming the key and both lines, instead of the later one silently
  replacing the earlier one. Elsewhere a duplicate key is logged as a warning and the later value
  kept, as YAML loaders always did: the upstream INDIGO types files (a ``constraints`` property
  written twice) and one INDIGO example (``ports`` twice in an endpoint) have such duplicates.
  Keys brought in by a YAML merge key (``<<: *defaults``) may be overridden, as YAML allows;
* a string holding a NUL character (``"\\0"``) is refused.
"""

from __future__ import annotations

import logging
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from airflow_cloud_paas.exceptions import ToscaSyntaxError

MAX_DOCUMENT_BYTES = 16 * 1024 * 1024
MAX_EXPANDED_NODES = 1_000_000
MAX_DEPTH = 100

_MERGE_TAG = "tag:yaml.org,2002:merge"
#: sections of topology_template whose keys are names: a duplicate there loses a whole definition
_NAMED_SECTIONS = frozenset({"inputs", "outputs", "node_templates", "relationship_templates", "groups"})

log = logging.getLogger(__name__)

# The C loader is ~10x faster on the 100 KB INDIGO types files; both give the same YAML 1.1 values.
_BASE = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Refused(yaml.YAMLError):
    """A YAML document that is well formed but refused (duplicate key or a bound exceeded)."""

    def __init__(self, problem: str, mark: Any = None) -> None:
        super().__init__(problem)
        self.problem = problem
        self.problem_mark = mark


def _line(node: Node) -> int:
    return node.start_mark.line + 1


def check_bounds(root: Node) -> None:
    """Raise _Refused if a composed document nests too deeply, expands too much or is recursive.

    Every distinct node is visited once (aliases share their node), so this runs in time linear in
    the document's size whatever the aliases would expand to.

    :param root: the document's root node, as composed by the parser
    """
    sizes: dict[int, int] = {}  # id(node) -> expanded node count, once done
    depths: dict[int, int] = {}  # id(node) -> nesting depth below it, once done
    active: set[int] = set()
    stack: list[tuple[Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if not isinstance(node, SequenceNode | MappingNode):
            sizes[key], depths[key] = 1, 0
            continue
        children: list[Node] = (
            node.value if isinstance(node, SequenceNode) else [part for pair in node.value for part in pair]
        )
        if children_done:
            active.discard(key)
            sizes[key] = 1 + sum(sizes[id(child)] for child in children)
            depths[key] = 1 + max((depths[id(child)] for child in children), default=0)
            if sizes[key] > MAX_EXPANDED_NODES:
                raise _Refused(
                    f"the document expands to more than {MAX_EXPANDED_NODES:,} YAML nodes (through its "
                    "aliases '*name'); a TOSCA template is never this big: remove the nested aliases",
                    node.start_mark,
                )
            if depths[key] > MAX_DEPTH:
                raise _Refused(
                    f"collections nest more than {MAX_DEPTH} levels deep; flatten the document",
                    node.start_mark,
                )
            continue
        if key in sizes:
            continue
        active.add(key)
        stack.append((node, True))
        for child in children:
            if id(child) in active:
                raise _Refused(
                    f"an alias refers to a collection that contains it (recursive YAML, the collection "
                    f"starting at line {_line(child)}); TOSCA values must be finite trees",
                    node.start_mark,
                )
            if id(child) not in sizes:
                stack.append((child, False))


def _named_mappings(root: Node) -> set[int]:
    """Return the ids of the mappings whose keys name TOSCA definitions (no duplicate allowed there)."""

    def items(node: Node) -> list[tuple[str, Node]]:
        if not isinstance(node, MappingNode):
            return []
        return [(k.value, v) for k, v in node.value if isinstance(k, ScalarNode) and isinstance(v, MappingNode)]

    named = {id(root)} if isinstance(root, MappingNode) else set()
    for key, value in items(root):
        if key.endswith("_types") or key == "repositories":
            named.add(id(value))
        elif key == "topology_template":
            named.add(id(value))
            for section, mapping in items(value):
                if section in _NAMED_SECTIONS:
                    named.add(id(mapping))
                    if section == "node_templates":
                        named.update(id(node) for _, node in items(mapping))
    return named


class BoundedLoader(_BASE):  # type: ignore[misc,valid-type]
    """A safe YAML loader (C parser when present) that refuses duplicate names and unbounded documents.

    :param stream: the YAML text
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.duplicates: list[str] = []  # duplicate keys outside named sections, for warnings
        self._named: set[int] = set()
        self._checked: set[int] = set()

    def construct_document(self, node: Node) -> Any:
        """Check the document's bounds, then build it.

        :param node: the document's root node
        """
        check_bounds(node)
        self._named = _named_mappings(node)
        return super().construct_document(node)

    def flatten_mapping(self, node: MappingNode) -> None:
        """Refuse a key written twice in a mapping, then apply its merge keys (``<<``).

        Checked before the merge keys are applied, and once per node (a merged node is flattened
        again by each mapping merging it), so a key may still override a merged one.

        :param node: the mapping node
        """
        if id(node) not in self._checked:
            self._checked.add(id(node))
            first: dict[Any, Node] = {}
            for key_node, _ in node.value:
                if key_node.tag == _MERGE_TAG:
                    continue
                key = self.construct_object(key_node)  # memoized: built once, reused by the base class
                try:
                    earlier = first.setdefault(key, key_node)
                except TypeError:  # an unhashable key: the base class reports it
                    continue
                if earlier is not key_node:
                    problem = f"duplicate key {key!r} (first at line {_line(earlier)}, again at line {_line(key_node)})"
                    if id(node) in self._named:
                        raise _Refused(f"{problem}; each name must be defined once: rename or remove one",
                                       key_node.start_mark)
                    self.duplicates.append(f"{problem}: the later value replaces the earlier one")
        super().flatten_mapping(node)

    def construct_scalar(self, node: Node) -> Any:
        """Refuse a scalar holding a NUL character (written ``"\\0"``), then build it as usual.

        No file name, command, environment variable or database text column can hold one, so it
        would fail later, after resources exist.

        :param node: the scalar node
        """
        value = super().construct_scalar(node)
        if isinstance(value, str) and "\0" in value:
            raise _Refused("a string holds a NUL character ('\\0'), which no TOSCA name, path or value may hold; "
                           "remove it", node.start_mark)
        return value


def decode(data: bytes, file: str) -> str:
    """Return the text of a YAML file, or raise ToscaSyntaxError if it is not UTF-8 or too big.

    :param data: the file's bytes
    :param file: the file's path, for the error
    """
    check_size(len(data), file)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise ToscaSyntaxError(f"is not UTF-8 text (byte {err.start}); save the template as UTF-8", file=file) from err


def check_size(size: int, file: str) -> None:
    """Raise ToscaSyntaxError if a YAML file is bigger than MAX_DOCUMENT_BYTES.

    :param size: the file's size in bytes
    :param file: the file's path or URL, for the error
    """
    if size > MAX_DOCUMENT_BYTES:
        raise ToscaSyntaxError(
            f"is {size:,} bytes, more than the {MAX_DOCUMENT_BYTES // (1024 * 1024)} MiB allowed for a TOSCA "
            "YAML file; split it or remove what it does not need",
            file=file,
        )


def load_yaml(text: str, file: str) -> Any:
    """Parse YAML text, raising ToscaSyntaxError with the line and column of a syntax error.

    :param text: the YAML text
    :param file: the file's path, for the error
    """
    check_size(len(text), file)
    loader = BoundedLoader(text)  # a safe loader (C or Python)
    try:
        data = loader.get_single_data()
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        fix = "" if isinstance(err, _Refused) else "; fix the YAML syntax"
        raise ToscaSyntaxError(f"invalid YAML{where}: {problem}{fix}", file=file) from err
    finally:
        loader.dispose()
    for duplicate in loader.duplicates:
        log.warning("%s: %s; remove one of them", file, duplicate)
    return data
