"""The package's module import graph has no cycles, and nothing in it imports upward.

The graph is built statically with :mod:`ast` from the source files that ``pyproject.toml`` installs (its
``[tool.setuptools] package-dir`` maps ``airflow_cloud_paas.hooks``, ``.operators``, ``.sensors``, ... to their
top-level folders), so it needs no optional SDK and sees code that never runs in a test. Rules:

- Every ``import`` and ``from ... import`` of ``airflow_cloud_paas.*`` is an edge, wherever it is written: at
  module level, inside a function, or under ``if TYPE_CHECKING:``. A lazy import that closes a cycle is still a
  cycle (the two modules cannot be understood, tested or moved apart); relative imports are resolved.
- ``import a.b.c`` and ``from a.b.c import name`` are edges to the module ``a.b.c``; ``from a.b import c`` is an
  edge to ``a.b.c`` when ``c`` is a submodule, else to ``a.b``. Importing a package is importing its
  ``__init__``. The parents' ``__init__`` modules that Python runs on the way down are not edges: a package whose
  ``__init__`` re-exports its own submodules would otherwise be one big cycle by construction. A submodule that
  imports its own package's ``__init__`` (``from airflow_cloud_paas.scaling import Snapshot`` inside
  ``scaling/policy.py``) is an edge, and closes a real cycle.
- A module named only at run time (``importlib.import_module(name)``, the ``"module:Class"`` strings of the
  backend and local-driver registries, the root ``__init__``'s lazy ``ToscaDag``) is not an edge: a registry
  names a plugin that implements the registry's own interface, which is the point of registering it.

Layering, checked on direct edges:

- the core (``tosca``, ``store``, ``backends``, ``scaling``, ``services``) never imports the Airflow-facing layer
  (``operators``, ``sensors``, ``plugin``, ``cli``, ``converter``);
- ``hooks`` never import ``backends`` or ``operators`` (backends use hooks, not the other way round);
- nothing shipped (the package, and the ``dags/`` that are installed into Airflow) imports ``tests``: test doubles
  such as the HTCondor pool stand-in live under ``tests/``.
"""

from __future__ import annotations

import ast
import tomllib
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ROOT = "airflow_cloud_paas"

CORE = ("tosca", "store", "backends", "scaling", "services")
UPPER = ("operators", "sensors", "plugin", "cli", "converter")


def _package_dirs() -> dict[str, Path]:
    """Return each package-dir mapping of pyproject (package name -> its folder)."""
    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    dirs = {name: REPO / folder for name, folder in setuptools.get("package-dir", {}).items()}
    dirs.setdefault(ROOT, REPO / ROOT)
    return dirs


def _modules() -> dict[str, Path]:
    """Return every module of the installed package: dotted name -> source file (``__init__`` for a package)."""
    dirs = _package_dirs()
    modules: dict[str, Path] = {}
    for package, folder in dirs.items():
        for path in sorted(folder.rglob("*.py")):
            parts = path.relative_to(folder).with_suffix("").parts
            if any(part.startswith(".") or part == "__pycache__" for part in parts):
                continue
            if parts[-1] == "__init__":
                parts = parts[:-1]
            name = ".".join((package, *parts))
            # a folder mapped by its own package-dir entry wins over the same path seen from a parent's folder
            owner = max((p for p in dirs if name == p or name.startswith(p + ".")), key=len)
            if owner == package:
                modules[name] = path
    return modules


def _is_package(path: Path) -> bool:
    return path.name == "__init__.py"


def _imported(tree: ast.AST, name: str, is_package: bool, modules: dict[str, Path]) -> Iterator[tuple[str, int]]:
    """Yield (module, line) for each import of a package module in ``tree``, at any depth."""
    package = name if is_package else name.rpartition(".")[0]

    def known(dotted: str) -> str | None:
        while dotted and dotted not in modules:  # ``import a.b.Class``-like names: the longest module prefix
            dotted = dotted.rpartition(".")[0]
        return dotted or None

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == ROOT or alias.name.startswith(ROOT + "."):
                    target = known(alias.name)
                    if target:
                        yield target, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")
                base_parts = base_parts[: len(base_parts) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            if not (base == ROOT or base.startswith(ROOT + ".")):
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                target = sub if sub in modules else known(base)
                if target:
                    yield target, node.lineno


def _graph() -> dict[str, dict[str, int]]:
    """Return module -> {imported module: first line} over the whole package."""
    modules = _modules()
    graph: dict[str, dict[str, int]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        edges: dict[str, int] = {}
        for target, line in _imported(tree, name, _is_package(path), modules):
            if target != name:
                edges.setdefault(target, line)
        graph[name] = edges
    return graph


def _cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Return the strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, {})))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        components.append(sorted(component))
    return sorted(components)


def _describe(component: list[str], graph: dict[str, dict[str, int]], modules: dict[str, Path]) -> str:
    members = set(component)
    lines = [f"cycle of {len(component)} modules:"]
    for name in component:
        for target, line in sorted(graph[name].items()):
            if target in members:
                lines.append(f"    {name} -> {target}  ({modules[name].relative_to(REPO)}:{line})")
    return "\n".join(lines)


def _within(name: str, area: str) -> bool:
    full = f"{ROOT}.{area}"
    return name == full or name.startswith(full + ".")


def test_the_graph_sees_the_whole_package() -> None:
    """Every folder pyproject maps is read, and imports inside functions are edges (so a lazy import counts)."""
    modules = _modules()
    for package in _package_dirs():
        assert package in modules, f"{package} has no __init__.py in its package-dir folder"
    tree = ast.parse("def f():\n    from . import model\n    import airflow_cloud_paas.tosca.resolve\n")
    found = {t for t, _ in _imported(tree, f"{ROOT}.tosca.loader", False, modules)}
    assert found == {f"{ROOT}.tosca.model", f"{ROOT}.tosca.resolve"}


def test_the_cycle_finder_finds_a_cycle() -> None:
    """A two-module cycle is reported, and a chain is not."""
    assert _cycles({"a": {"b": 1}, "b": {"a": 1}, "c": {"a": 1}}) == [["a", "b"]]
    assert _cycles({"a": {"b": 1}, "b": {"c": 1}, "c": {}}) == []


def test_no_import_cycles() -> None:
    """No two modules of the package import each other, directly or through others, lazily or not."""
    graph = _graph()
    modules = _modules()
    cycles = _cycles(graph)
    assert not cycles, "import cycles in the package:\n" + "\n".join(_describe(c, graph, modules) for c in cycles)


def test_the_core_never_imports_upward() -> None:
    """tosca, store, backends, scaling and services never import operators, sensors, plugin, cli or converter."""
    graph = _graph()
    upward = [
        f"{name} -> {target} (line {line})"
        for name, edges in sorted(graph.items())
        if any(_within(name, area) for area in CORE)
        for target, line in sorted(edges.items())
        if any(_within(target, area) for area in UPPER)
    ]
    assert not upward, "the core imports the Airflow-facing layer:\n" + "\n".join(upward)


def test_hooks_never_import_backends_or_operators() -> None:
    """Backends use hooks; hooks use SDKs, never a backend or an operator."""
    graph = _graph()
    upward = [
        f"{name} -> {target} (line {line})"
        for name, edges in sorted(graph.items())
        if _within(name, "hooks")
        for target, line in sorted(edges.items())
        if _within(target, "backends") or _within(target, "operators")
    ]
    assert not upward, "hooks import backends or operators:\n" + "\n".join(upward)


def test_nothing_shipped_imports_the_tests() -> None:
    """Test doubles live in tests/: no module of the package and no shipped DAG imports ``tests``."""
    files = [*_modules().values(), *sorted((REPO / "dags").glob("*.py"))]
    offenders = []
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                names = [node.module]
            offenders += [
                f"{path.relative_to(REPO)}:{node.lineno} imports {n}" for n in names if n.split(".")[0] == "tests"
            ]
    assert not offenders, "\n".join(offenders)
    standins = [str(p.relative_to(REPO)) for p in _modules().values() if "standin" in p.stem]
    assert not standins, f"test stand-ins shipped in the package (move them under tests/): {standins}"
