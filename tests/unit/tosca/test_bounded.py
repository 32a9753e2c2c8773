"""Hostile templates are refused with a typed error in bounded time: nothing hangs validation or DAG parsing.

Each case that hung before runs under a generous wall-clock ceiling, so that a regression fails the
test instead of hanging the suite: in a thread, or in a child process where it would spin inside
tosca-parser holding the loader's lock (which a stuck thread would keep from every later test).
"""

from __future__ import annotations

import http.server
import json
import logging
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from airflow_cloud_paas.exceptions import ToscaImportError, ToscaSyntaxError, ToscaValidationError
from airflow_cloud_paas.tosca import load_topology
from airflow_cloud_paas.tosca._yaml import MAX_DEPTH, MAX_DOCUMENT_BYTES, load_yaml
from airflow_cloud_paas.tosca.imports import MAX_FETCH_BYTES, MAX_IMPORTED_FILES, TYPES_CACHE_ENV
from airflow_cloud_paas.tosca.loader import MAX_NODE_TEMPLATES

CEILING_S = 60  # what hung for ever before; each case now ends in well under a few seconds
HEAD = "tosca_definitions_version: tosca_simple_yaml_1_0\n"
ONE_NODE = "topology_template:\n  node_templates:\n    vm:\n      type: tosca.nodes.Compute\n"

CHILD = """
import json, sys
from airflow_cloud_paas.tosca import load_topology
try:
    topology = load_topology(sys.argv[1], use_cache=False)
    print(json.dumps({"loaded": sorted(topology.nodes)}))
except Exception as err:
    print(json.dumps({"error": type(err).__name__, "message": str(err), "node": getattr(err, "node", None),
                      "field": getattr(err, "field", None)}))
"""


def _load_in_child(path: Path) -> dict:
    """Load a template in a child process, failing (not hanging) past CEILING_S."""
    try:
        done = subprocess.run(
            [sys.executable, "-c", CHILD, str(path)], capture_output=True, text=True, timeout=CEILING_S
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"loading {path.name} did not end within {CEILING_S} s")
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _load_guarded(path: Path) -> tuple[BaseException | None, float]:
    """Load a template in a thread, failing (not hanging) past CEILING_S; return its error and duration."""
    outcome: list[BaseException | None] = []

    def target() -> None:
        try:
            load_topology(path, use_cache=False)
            outcome.append(None)
        except BaseException as err:  # noqa: BLE001 - handed to the test
            outcome.append(err)

    start = time.monotonic()
    worker = threading.Thread(target=target, daemon=True)
    worker.start()
    worker.join(CEILING_S)
    assert not worker.is_alive(), f"loading {path.name} did not end within {CEILING_S} s"
    return outcome[0], time.monotonic() - start


def _write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text)
    return path


# ------------------------------------------------------------------------------------- imports
def test_a_template_importing_itself_is_an_import_cycle(tmp_path: Path) -> None:
    path = _write(tmp_path, "self.yaml", HEAD + "imports:\n  - self.yaml\n" + ONE_NODE)
    with pytest.raises(ToscaImportError, match=r"imports form a cycle \(self\.yaml -> self\.yaml\)") as info:
        load_topology(path, use_cache=False)
    assert info.value.file == str(path) and info.value.field == "imports"


def test_two_files_importing_each_other_name_the_cycle(tmp_path: Path) -> None:
    _write(tmp_path, "b.yaml", HEAD + "imports:\n  - a.yaml\n")
    path = _write(tmp_path, "a.yaml", HEAD + "imports:\n  - b.yaml\n" + ONE_NODE)
    cycle = r"a\.yaml -> b\.yaml -> a\.yaml.*remove the import of 'a\.yaml'"
    with pytest.raises(ToscaImportError, match=cycle) as info:
        load_topology(path, use_cache=False)
    assert info.value.file == str(tmp_path / "b.yaml")


def test_a_file_imported_twice_is_no_cycle(tmp_path: Path) -> None:
    _write(tmp_path, "d.yaml", HEAD + "node_types:\n  my.D:\n    derived_from: tosca.nodes.Root\n")
    _write(tmp_path, "b.yaml", HEAD + "imports:\n  - d.yaml\n")
    _write(tmp_path, "c.yaml", HEAD + "imports:\n  - d.yaml\n")
    path = _write(
        tmp_path, "a.yaml", HEAD + "imports:\n  - b.yaml\n  - c.yaml\n"
        "topology_template:\n  node_templates:\n    d:\n      type: my.D\n"
    )
    assert load_topology(path, use_cache=False).nodes["d"].type == "my.D"


def test_too_many_imported_files_are_refused(tmp_path: Path) -> None:
    names = [f"t{i}.yaml" for i in range(MAX_IMPORTED_FILES + 1)]
    for name in names:
        _write(tmp_path, name, HEAD)
    path = _write(tmp_path, "a.yaml", HEAD + "imports:\n" + "".join(f"  - {n}\n" for n in names) + ONE_NODE)
    with pytest.raises(ToscaImportError, match=f"more than {MAX_IMPORTED_FILES} files"):
        load_topology(path, use_cache=False)


# ------------------------------------------------------------------------------------------ YAML
def test_an_alias_bomb_is_refused_before_it_is_expanded(tmp_path: Path) -> None:
    lines = [HEAD.strip(), 'a0: &a0 ["x","x","x","x","x","x","x","x","x"]']
    lines += [f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 10)]  # 9**10 nodes
    lines.append(ONE_NODE + "      metadata:\n        bomb: *a9")
    error, _ = _load_guarded(_write(tmp_path, "bomb.yaml", "\n".join(lines) + "\n"))
    assert isinstance(error, ToscaSyntaxError), error
    assert "expands to more than 1,000,000 YAML nodes" in str(error)


def test_a_recursive_alias_is_refused() -> None:
    with pytest.raises(ToscaSyntaxError, match="an alias refers to a collection that contains it"):
        load_yaml("a: &a [1, *a]\n", "t.yaml")


def test_nesting_deeper_than_the_cap_is_refused() -> None:
    inner = MAX_DEPTH - 1  # under the document's mapping
    load_yaml("x: " + "[" * inner + "]" * inner, "t.yaml")
    with pytest.raises(ToscaSyntaxError, match=f"nest more than {MAX_DEPTH} levels"):
        load_yaml("x: " + "[" * (inner + 1) + "]" * (inner + 1), "t.yaml")


def test_two_node_templates_of_the_same_name_are_refused(tmp_path: Path) -> None:
    text = HEAD + ONE_NODE + "    db:\n      type: tosca.nodes.Database\n    vm:\n      type: tosca.nodes.Root\n"
    with pytest.raises(ToscaSyntaxError, match=r"line 8.*duplicate key 'vm' \(first at line 4, again at line 8\)"):
        load_topology(_write(tmp_path, "dup.yaml", text), use_cache=False)


@pytest.mark.parametrize(
    "text",
    [
        HEAD + "tosca_definitions_version: tosca_simple_yaml_1_2\n" + ONE_NODE,
        HEAD + "topology_template:\n  inputs:\n    n: {type: integer}\n    n: {type: string}\n" + ONE_NODE[18:],
        HEAD + ONE_NODE + "      properties: {}\n      properties: {}\n",
        HEAD + "node_types:\n  my.T: {derived_from: tosca.nodes.Root}\n  my.T: {derived_from: tosca.nodes.Compute}\n",
    ],
    ids=["top-level", "inputs", "node-template-key", "types"],
)
def test_a_name_defined_twice_is_refused(text: str) -> None:
    with pytest.raises(ToscaSyntaxError, match="duplicate key .*each name must be defined once"):
        load_yaml(text, "t.yaml")


def test_other_duplicate_keys_are_kept_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    # As in the INDIGO example hadoop_cluster.yaml (two 'ports' in one endpoint): YAML loaders keep the last.
    text = HEAD + ONE_NODE + "      properties:\n        ports: 1\n        ports: 2\n"
    with caplog.at_level(logging.WARNING, logger="airflow_cloud_paas.tosca._yaml"):
        data = load_yaml(text, "t.yaml")
    assert data["topology_template"]["node_templates"]["vm"]["properties"] == {"ports": 2}
    assert "duplicate key 'ports' (first at line 7, again at line 8)" in caplog.text


def test_merge_keys_may_still_be_overridden() -> None:
    text = "base: &b {x: 1, y: 2}\nmid: &m {<<: *b, x: 5}\ntop: {<<: [*m, *b], x: 9, z: 3}\n"
    assert load_yaml(text, "t.yaml") == {
        "base": {"x": 1, "y": 2},
        "mid": {"x": 5, "y": 2},
        "top": {"x": 9, "y": 2, "z": 3},
    }


def test_a_file_over_the_size_cap_is_refused_before_it_is_read(tmp_path: Path) -> None:
    path = tmp_path / "huge.yaml"
    with path.open("wb") as handle:
        handle.truncate(MAX_DOCUMENT_BYTES + 1)  # sparse: costs no disk
    with pytest.raises(ToscaSyntaxError, match="more than the 16 MiB allowed"):
        load_topology(path, use_cache=False)


def test_too_many_node_templates_are_refused(tmp_path: Path) -> None:
    nodes = "".join(f"    n{i}:\n      type: tosca.nodes.Root\n" for i in range(MAX_NODE_TEMPLATES + 1))
    path = _write(tmp_path, "many.yaml", HEAD + "topology_template:\n  node_templates:\n" + nodes)
    with pytest.raises(ToscaValidationError, match=f"more than the {MAX_NODE_TEMPLATES:,} allowed") as info:
        load_topology(path, use_cache=False)
    assert info.value.field == "node_templates"


# --------------------------------------------------------------------------------------- types
def test_a_normative_type_derived_from_itself_is_refused(tmp_path: Path) -> None:
    text = HEAD + "node_types:\n  tosca.nodes.Compute:\n    derived_from: tosca.nodes.Compute\n" + ONE_NODE
    result = _load_in_child(_write(tmp_path, "self_type.yaml", text))
    assert result["error"] == "ToscaValidationError", result
    assert "cycle (tosca.nodes.Compute -> tosca.nodes.Compute)" in result["message"]
    assert result["field"] == "tosca.nodes.Compute.derived_from"


def test_custom_types_deriving_from_each_other_name_the_cycle(tmp_path: Path) -> None:
    text = HEAD + (
        "node_types:\n  my.A:\n    derived_from: my.B\n  my.B:\n    derived_from: my.A\n"
        "topology_template:\n  node_templates:\n    a:\n      type: my.A\n"
    )
    result = _load_in_child(_write(tmp_path, "cycle.yaml", text))
    assert result["error"] == "ToscaValidationError", result
    assert "cycle (my.A -> my.B -> my.A); make 'my.B' derive from a type outside the cycle" in result["message"]


# ------------------------------------------------------------------------------------- patterns
def _input_with_pattern(pattern: str, value: str) -> str:
    return HEAD + (
        f"topology_template:\n  inputs:\n    x:\n      type: string\n      default: {json.dumps(value)}\n"
        f"      constraints:\n        - pattern: {json.dumps(pattern)}\n"
    ) + ONE_NODE[18:]


def test_a_backtracking_pattern_is_decided_in_bounded_time(tmp_path: Path) -> None:
    # Python's re backtracks for ever on this one; the value does not match.
    error, _ = _load_guarded(_write(tmp_path, "p.yaml", _input_with_pattern("^(a+)+$", "a" * 34 + "!")))
    assert isinstance(error, ToscaValidationError), error
    assert "must be matching the pattern ^(a+)+$" in str(error) and error.node == "x"


def test_a_pattern_that_backtracks_without_end_is_refused(tmp_path: Path) -> None:
    error, _ = _load_guarded(_write(tmp_path, "p.yaml", _input_with_pattern("(a|aa)+$", "a" * 60 + "!")))
    assert isinstance(error, ToscaValidationError), error
    assert "matching the pattern constraint '(a|aa)+$' took over 1 s" in str(error)


def test_a_backtracking_pattern_on_a_node_property_is_refused(tmp_path: Path) -> None:
    # Checked by tosca-parser (node type property constraints), which matched with re.
    text = HEAD + (
        "node_types:\n  my.T:\n    derived_from: tosca.nodes.Root\n    properties:\n      p:\n"
        "        type: string\n        constraints:\n          - pattern: '(a|aa)+$'\n"
        f"topology_template:\n  node_templates:\n    a:\n      type: my.T\n      properties:\n"
        f"        p: {'a' * 60}!\n"
    )
    result = _load_in_child(_write(tmp_path, "p.yaml", text))
    assert result["error"] == "ToscaValidationError", result
    assert "took over 1 s" in result["message"]
    assert (result["node"], result["field"]) == ("a", "properties.p")


def test_an_invalid_pattern_is_a_typed_error(tmp_path: Path) -> None:
    with pytest.raises(ToscaValidationError, match=r"pattern constraint '\(\[a-' is not a valid regular expression"):
        load_topology(_write(tmp_path, "p.yaml", _input_with_pattern("([a-", "abc")), use_cache=False)


def test_a_matching_pattern_still_passes(tmp_path: Path) -> None:
    topology = load_topology(_write(tmp_path, "p.yaml", _input_with_pattern("[a-z]+-[0-9]+", "vm-12")), use_cache=False)
    assert topology.inputs["x"].default == "vm-12"


# ------------------------------------------------------------------------------------ URL fetch
class _Hostile(http.server.BaseHTTPRequestHandler):
    """/trickle: a body at a byte a second; /slowheaders: headers at a byte a second (never ending);
    /endless: an endless body; /huge: a Content-Length over the cap."""

    stop: threading.Event

    def do_GET(self) -> None:  # noqa: N802 - the http.server API
        try:
            if self.path.startswith("/huge"):
                self.send_response(200)
                self.send_header("Content-Length", str(MAX_FETCH_BYTES + 1))
                self.end_headers()
            elif self.path.startswith("/slowheaders"):
                self.wfile.write(b"HTTP/1.1 200 OK\r\nX-Slow: ")
                while not self.stop.wait(1.0):
                    self.wfile.write(b"x")
                    self.wfile.flush()
            elif self.path.startswith("/trickle"):
                self.send_response(200)
                self.send_header("Content-Length", "100000")
                self.end_headers()
                while not self.stop.wait(1.0):
                    self.wfile.write(b"#")
                    self.wfile.flush()
            else:
                self.send_response(200)
                self.end_headers()  # no length: the body ends when the connection does
                line = b"# " + b"x" * 1022 + b"\n"
                while not self.stop.is_set():
                    self.wfile.write(line * 64)
        except OSError:  # the client hung up, as it should
            pass

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def hostile_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Serve hostile answers on 127.0.0.1, with the types cache in tmp_path (so every import is fetched)."""
    monkeypatch.setenv(TYPES_CACHE_ENV, str(tmp_path / "types-cache"))
    stop = threading.Event()
    handler = type("Handler", (_Hostile,), {"stop": stop})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        stop.set()
        server.shutdown()
        server.server_close()
        thread.join(10)


@pytest.mark.parametrize(
    ("route", "expected"),
    [
        ("trickle", r"took more than 5 s \(it had sent [1-9]\d* bytes\)"),
        ("slowheaders", r"took more than 5 s \(it had sent 0 bytes\)"),
        ("endless", "bigger than 16 MiB"),
        ("huge", "bigger than 16 MiB"),
    ],
)
def test_a_hostile_import_url_fails_in_bounded_time(
    tmp_path: Path, hostile_server: str, route: str, expected: str
) -> None:
    url = f"{hostile_server}/{route}/types.yaml"
    path = _write(tmp_path, "t.yaml", HEAD + f"imports:\n  - {url}\n" + ONE_NODE)
    error, seconds = _load_guarded(path)
    assert isinstance(error, ToscaImportError), error
    assert url in str(error)
    assert error.field == "imports"
    assert re.search(expected, str(error)), str(error)
    assert seconds < 30  # the fetch deadline is 5 s in all
    assert not any((tmp_path / "types-cache").rglob("types.yaml"))  # nothing partial is cached


def test_a_host_name_that_never_resolves_fails_in_bounded_time(
    tmp_path: Path, hostile_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The system resolver has no time limit a caller can set: a look-up that hangs is cut off at the deadline.

    The stand-in is the narrowest boundary there is, ``socket.getaddrinfo`` for one name (no DNS server can be made
    to hang here); the rest (urllib, the TLS-free HTTP connection, the deadline) runs for real against the server.
    """
    real = socket.getaddrinfo
    release = threading.Event()

    def hanging(host, *args, **kwargs):
        if host == "types.hangs.example":
            release.wait(120)
        return real("127.0.0.1" if host == "types.hangs.example" else host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", hanging)
    port = hostile_server.rsplit(":", 1)[1]
    url = f"http://types.hangs.example:{port}/endless/types.yaml"
    path = _write(tmp_path, "t.yaml", HEAD + f"imports:\n  - {url}\n" + ONE_NODE)
    try:
        error, seconds = _load_guarded(path)
    finally:
        release.set()
    assert isinstance(error, ToscaImportError), error
    assert url in str(error) and "took more than 5 s" in str(error), str(error)
    assert seconds < 30
