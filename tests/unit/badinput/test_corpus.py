"""Bad input is refused with a typed error naming what is wrong and where, before anything is made, in bounded time.

Four kinds of bad input, each case either a typed error (class and message checked) or a correct acceptance:

* templates: the corpus (``corpus/*.yaml``, the expected outcome on each file's first line,
  ``# expect: <ErrorClass>: <part of the message>`` or ``# expect: ok``; a sibling ``<case>.inputs.json``
  holds the run's inputs; ``corpus/lib/`` holds files the cases import or read, not cases), and a few
  generated ones too big to keep as files;
* input values given to a valid template (``corpus/lib/inputs.yaml``);
* ``conn://`` references to Airflow connections (faked with ``AIRFLOW_CONN_*`` variables);
* ``cloud-paas`` arguments, the store URL included.

Every template, input and connection case goes through what a deployment does first: ``load_topology``,
``DeploymentRequest.build`` and the plan's compilation. They run in one child process (started once), so that
a case that hangs fails after :data:`CASE_TIMEOUT_S` instead of hanging the suite (the child is then replaced),
and under a memory cap (``RLIMIT_AS``), so that a case that would swallow the machine fails with MemoryError.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_cloud_paas import exceptions
from airflow_cloud_paas.cli import main
from airflow_cloud_paas.exceptions import ToscaError, ToscaSyntaxError
from airflow_cloud_paas.tosca import load_topology

CORPUS = Path(__file__).resolve().parent / "corpus"
INPUTS_TEMPLATE = CORPUS / "lib" / "inputs.yaml"
REPO = Path(__file__).resolve().parents[3]
SPARK = REPO / "airflow_cloud_paas" / "templates" / "spark_cluster.yaml"
#: what one case may take, generous for a loaded 2-core machine (each takes well under a second)
CASE_TIMEOUT_S = 10
#: address space the child may add to what it holds once its imports are done
MEMORY_HEADROOM = 2 << 30
#: a valid value for the inputs template's one required input
PASSWORD = "s3cret-Pa55"

#: starts every line the child answers with (Airflow may log to stdout as it is imported)
ANSWER = "@@badinput@@ "

CHILD = r"""
import json, os, resource, sys, traceback

out, sys.stdout = sys.stdout, sys.stderr  # nothing imported or run here can garble the answers
from airflow_cloud_paas.exceptions import CloudPaaSError
from airflow_cloud_paas.request import DeploymentRequest
from airflow_cloud_paas.tosca import load_topology
import airflow_cloud_paas.plan, toscaparser.tosca_template  # noqa: imported now, so no case pays for them

try:  # the address space held now, plus the headroom: a case that swallows memory gets a MemoryError
    held = int(open("/proc/self/statm").read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    resource.setrlimit(resource.RLIMIT_AS, (held + int(sys.argv[1]), resource.getrlimit(resource.RLIMIT_AS)[1]))
except (OSError, ValueError):  # not Linux: time is still bounded
    pass
out.write(sys.argv[2] + "ready\n")
out.flush()
for line in sys.stdin:
    case = json.loads(line)
    saved = {k: os.environ.get(k) for k in case["env"]}
    os.environ.update(case["env"])
    try:
        get_connection = None
        if case["airflow"]:
            from airflow.sdk import BaseHook
            get_connection = BaseHook.get_connection
        topology = load_topology(case["template"], cache_dir=case["cache_dir"])
        DeploymentRequest.build(topology, "badinput", case["inputs"], get_connection=get_connection).plan
        answer = {"outcome": "ok"}
    except BaseException as err:
        answer = {"outcome": type(err).__name__, "typed": isinstance(err, CloudPaaSError), "message": str(err),
                  "file": getattr(err, "file", None), "node": getattr(err, "node", None),
                  "field": getattr(err, "field", None), "traceback": "".join(traceback.format_exception(err))}
    finally:
        for key, value in saved.items():
            os.environ.pop(key) if value is None else os.environ.__setitem__(key, value)
    out.write(sys.argv[2] + json.dumps(answer) + "\n")
    out.flush()
"""


class Child:
    """One Python process that loads, builds and compiles the cases it is sent, one at a time.

    :param cache_dir: the topology cache the cases use (a fresh one: every case is parsed)
    """

    def __init__(self, cache_dir: Path) -> None:
        self.cache_dir = str(cache_dir)
        self.process: subprocess.Popen[str] | None = None
        self.lines: queue.Queue[str | None] = queue.Queue()

    def _start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(MEMORY_HEADROOM), ANSWER], cwd=REPO, text=True, stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        )
        self.lines = queue.Queue()
        threading.Thread(target=self._read, args=(self.process, self.lines), daemon=True).start()
        ready = self._next(180, "starting the child process")
        assert ready == "ready", ready

    @staticmethod
    def _read(process: subprocess.Popen[str], lines: queue.Queue[str | None]) -> None:
        for line in process.stdout:  # type: ignore[union-attr]
            if line.startswith(ANSWER):
                lines.put(line[len(ANSWER):].rstrip("\n"))
        lines.put(None)

    def _next(self, timeout: float, what: str) -> str:
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            self.close()  # the next case gets a fresh child
            pytest.fail(f"{what} did not end within {timeout} s")
        if line is None:
            code = self.process.wait() if self.process else None
            self.process = None
            pytest.fail(f"the child process died while {what} (exit code {code})")
        return line

    def run(self, template: Path, inputs: dict[str, Any] | None = None, *, env: dict[str, str] | None = None,
            airflow: bool = False) -> tuple[dict[str, Any], float]:
        """Load, build and compile one case; return the outcome and the seconds it took."""
        if self.process is None:
            self._start()
        case = {"template": str(template), "inputs": inputs, "env": env or {}, "airflow": airflow,
                "cache_dir": self.cache_dir}
        started = time.monotonic()
        self.process.stdin.write(json.dumps(case) + "\n")  # type: ignore[union-attr]
        self.process.stdin.flush()  # type: ignore[union-attr]
        answer = json.loads(self._next(CASE_TIMEOUT_S, f"loading {template.name}"))
        return answer, time.monotonic() - started

    def close(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None


@pytest.fixture(scope="module")
def child(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Child]:
    worker = Child(tmp_path_factory.mktemp("badinput-topologies"))
    yield worker
    worker.close()


def _expectation(case: Path) -> tuple[str, str] | None:
    """Return (error class, message part) from a case's first line, or None for ``# expect: ok``."""
    first = case.read_bytes().split(b"\n", 1)[0].decode("utf-8-sig")
    assert first.startswith("# expect: "), f"{case.name}: the first line must be '# expect: ...'"
    expected = first[len("# expect: "):].strip()
    if expected == "ok":
        return None
    name, _, says = expected.partition(": ")
    kind = getattr(exceptions, name, None)
    assert isinstance(kind, type) and issubclass(kind, ToscaError), f"{case.name}: {name} is not a ToscaError"
    assert says, f"{case.name}: say which part of the message is expected"
    return name, says


def _assert_typed(answer: dict[str, Any], error: str, says: str) -> None:
    assert answer["outcome"] == error, answer.get("traceback") or answer
    assert answer["typed"], answer["traceback"]
    assert says in answer["message"], answer["message"]
    assert "Traceback" not in answer["message"]


CASES = sorted(CORPUS.glob("*.yaml"))


def test_the_corpus_covers_every_kind_of_error() -> None:
    kinds = {expected[0] for expected in map(_expectation, CASES) if expected}
    assert len(CASES) >= 120
    assert kinds == {"ToscaSyntaxError", "ToscaImportError", "ToscaUnknownTypeError", "ToscaValidationError",
                     "ToscaCycleError", "ToscaInputError"}
    assert sum(_expectation(case) is None for case in CASES) >= 5  # tricky but valid


@pytest.mark.parametrize("case", CASES, ids=[case.stem for case in CASES])
def test_a_corpus_case_ends_as_expected(child: Child, case: Path) -> None:
    inputs_file = case.with_name(f"{case.stem}.inputs.json")
    inputs = json.loads(inputs_file.read_text()) if inputs_file.exists() else None
    answer, _ = child.run(case, inputs)
    expected = _expectation(case)
    if expected is None:
        assert answer["outcome"] == "ok", answer
        return
    _assert_typed(answer, *expected)
    # the error names the file it is in: the case, or a file the case imports
    assert answer["file"] and Path(answer["file"]).is_relative_to(CORPUS), answer
    assert answer["message"].startswith(answer["file"])


# ------------------------------------------------------------------------------ generated templates
HEAD = "tosca_definitions_version: tosca_simple_yaml_1_0\n"
ONE_VM = "topology_template:\n  node_templates:\n    vm:\n      type: tosca.nodes.Compute\n"


def _chain(count: int, *, cycle: bool) -> str:
    nodes = "".join(
        f"    n{i}:\n      type: tosca.nodes.Root\n"
        + (f"      requirements:\n        - dependency: n{(i - 1) % count}\n" if i or cycle else "")
        for i in range(count)
    )
    return HEAD + "topology_template:\n  node_templates:\n" + nodes


GENERATED = {  # name: (text, expected error and message part, or None for a correct acceptance)
    "an 8 MiB string": (HEAD + "description: '" + "x" * (8 << 20) + "'\n" + ONE_VM, None),
    "20,000 unknown properties": (
        HEAD + ONE_VM + "      properties:\n" + "".join(f"        p{i}: {i}\n" for i in range(20_000)),
        ("ToscaValidationError", "node 'vm': field 'properties.p0': \"properties\" of template \"vm\" contains "
                                 "unknown field \"p0\""),
    ),
    "metadata nested 90 deep": (HEAD + ONE_VM + "      metadata:\n        deep: " + "[" * 90 + "]" * 90 + "\n", None),
    "a property nested 150 deep": (
        HEAD + ONE_VM + "      metadata:\n        deep: " + "[" * 150 + "]" * 150 + "\n",
        ("ToscaSyntaxError", "collections nest more than 100 levels deep"),
    ),
    "a 100,000-character node name": (
        HEAD + "topology_template:\n  node_templates:\n    " + "n" * 100_000 + ":\n      type: tosca.nodes.Compute\n",
        ("ToscaSyntaxError", "invalid YAML at line 4, column 100005"),
    ),
    "a chain of 1,000 requirements": (_chain(1000, cycle=False), None),
    "a cycle through 1,000 nodes": (
        _chain(1000, cycle=True), ("ToscaCycleError", "requirements form a cycle: n0 -> n999")
    ),
}


@pytest.mark.parametrize("name", GENERATED, ids=list(GENERATED))
def test_a_big_template_ends_in_bounded_time(child: Child, tmp_path: Path, name: str) -> None:
    text, expected = GENERATED[name]
    path = tmp_path / "big.yaml"
    path.write_text(text)
    answer, _ = child.run(path)
    if expected is None:
        assert answer["outcome"] == "ok", answer
    else:
        _assert_typed(answer, *expected)


def test_a_template_path_with_a_nul_character_is_a_typed_error(tmp_path: Path) -> None:
    with pytest.raises(ToscaSyntaxError, match=r"cannot read the template \(embedded null byte\)"):
        load_topology(tmp_path / "a\0b.yaml", use_cache=False)


# ------------------------------------------------------------------------------------ input values
BAD_INPUTS = {  # name: (inputs, error, message part, the input named as node, field)
    "integer as words": ({"count": "many"}, "'many' must be an integer, not str", "count", "type"),
    "fraction for integer": ({"count": 2.5}, "2.5 must be an integer, not float", "count", "type"),
    "boolean for integer": ({"count": True}, "True must be an integer, not bool", "count", "type"),
    "out of range": ({"count": 9}, "9 is not allowed: it must be from 1 to 8", "count", "constraints"),
    "astronomical integer": ({"count": 10**30}, "is not allowed: it must be from 1 to 8", "count", "constraints"),
    "not a valid value": ({"flavour": "huge"}, "it must be one of small, large", "flavour", "constraints"),
    "string for list": ({"tags": "a,b"}, "'a,b' must be a list, not str", "tags", "type"),
    "wrong list entry": ({"tags": ["ok", 7]}, "item 1 must be a string, not int", "tags", "type"),
    "list for map": ({"labels": ["a"]}, "must be a map, not list", "labels", "type"),
    "wrong map entry": ({"labels": {"team": ["red"]}}, "key 'team' must be a string, not list", "labels", "type"),
    "bad unit": ({"size": "4 parsecs"}, "is not a scalar-unit.size", "size", "type"),
    "not a number": ({"ratio": float("nan")}, "nan must be a number, not float", "ratio", "type"),
    "string for boolean": ({"debug": "yes"}, "'yes' must be true or false, not str", "debug", "type"),
    "pattern not matched": ({"name": "Web Server!"}, "it must be matching the pattern", "name", "constraints"),
    "a megabyte against a pattern": ({"name": "a" * (1 << 20) + "!"}, "matching the pattern", "name", "constraints"),
    "NUL in a string": ({"name": "we\0b"}, "must not hold a NUL character", "name", "type"),
    "unknown input": ({"colour": "red"}, "unknown input(s) colour; the template declares: count", "colour", "inputs"),
    "required input missing": (None, "required input has no value and no default; pass db_password=<string>",
                               "db_password", "inputs"),
}


@pytest.mark.parametrize("name", BAD_INPUTS, ids=list(BAD_INPUTS))
def test_a_bad_input_value_is_a_typed_error_naming_the_input(child: Child, name: str) -> None:
    given, says, node, field = BAD_INPUTS[name]
    inputs = {"db_password": PASSWORD, **given} if given is not None else {}
    answer, _ = child.run(INPUTS_TEMPLATE, inputs)
    _assert_typed(answer, "ToscaInputError", says)
    assert (answer["file"], answer["node"], answer["field"]) == (str(INPUTS_TEMPLATE), node, field)


def test_a_bad_secret_input_is_refused_without_showing_it(child: Child) -> None:
    answer, _ = child.run(INPUTS_TEMPLATE, {"db_password": ["not", PASSWORD]})
    _assert_typed(answer, "ToscaInputError", "input db_password: the value given must be a string, not list")
    assert PASSWORD not in answer["message"]


def test_the_inputs_template_itself_is_valid(child: Child) -> None:
    answer, _ = child.run(INPUTS_TEMPLATE, {"db_password": PASSWORD, "count": "3", "tags": ["a"]})
    assert answer["outcome"] == "ok", answer  # so that each bad case above fails for its own value only


# ------------------------------------------------------------------------------------- connections
CONNECTIONS = {
    "AIRFLOW_CONN_DB_ADMIN": json.dumps({"conn_type": "postgres", "login": "admin", "password": PASSWORD}),
    "AIRFLOW_CONN_NO_PASSWORD": json.dumps({"conn_type": "postgres", "login": "admin"}),
    "AIRFLOW_CONN_NOT_JSON": "{this is not json",
}
BAD_REFERENCES = {  # name: (reference, message part)
    "missing connection": ("conn://no_such_conn/password", "connection 'no_such_conn', which cannot be read"),
    "unknown field": ("conn://db_admin/passwd", "is not a connection reference"),
    "empty field": ("conn://no_password/password", "has no password"),
    "connection not JSON": ("conn://not_json/password", "connection 'not_json', which cannot be read"),
    "no connection id": ("conn:///password", "is not a connection reference"),
    "nothing after the scheme": ("conn://", "is not a connection reference"),
    "missing extra key": ("conn://db_admin/extra.region", "has no extra.region"),
}


@pytest.mark.parametrize("name", BAD_REFERENCES, ids=list(BAD_REFERENCES))
def test_a_bad_connection_reference_is_a_typed_error(child: Child, name: str) -> None:
    reference, says = BAD_REFERENCES[name]
    answer, _ = child.run(INPUTS_TEMPLATE, {"db_password": reference}, env=CONNECTIONS, airflow=True)
    _assert_typed(answer, "ToscaInputError", says)
    assert answer["field"] == "inputs.db_password"
    assert PASSWORD not in answer["message"]


def test_a_good_connection_reference_is_read(child: Child) -> None:
    answer, _ = child.run(INPUTS_TEMPLATE, {"db_password": "conn://db_admin/password"}, env=CONNECTIONS, airflow=True)
    assert answer["outcome"] == "ok", answer


# ---------------------------------------------------------------------------------------- the CLI
def _cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """Run ``cloud-paas`` in this process, failing (not hanging) past CASE_TIMEOUT_S; return (exit code, stderr)."""
    result: list[Any] = []

    def target() -> None:
        try:
            result.append(main(argv))
        except SystemExit as stop:  # what the interpreter would do with it
            if isinstance(stop.code, str):
                print(stop.code, file=sys.stderr)
            result.append(1 if isinstance(stop.code, str) else stop.code)
        except BaseException as err:  # noqa: BLE001 - a traceback is the failure this test looks for
            result.append(err)

    worker = threading.Thread(target=target, daemon=True)
    worker.start()
    worker.join(CASE_TIMEOUT_S * 3)  # Airflow's logging is set up on the first call
    assert not worker.is_alive(), f"cloud-paas {' '.join(argv)} did not end within {CASE_TIMEOUT_S * 3} s"
    assert not isinstance(result[0], BaseException), f"cloud-paas {' '.join(argv)} raised {result[0]!r}"
    return result[0], capsys.readouterr().err


BAD_ARGUMENTS = {  # name: (arguments, message part of the last line of stderr)
    "no command": ([], "the following arguments are required: command"),
    "unknown command": (["teleport"], "invalid choice: 'teleport'"),
    "unknown option": (["list", "--colour", "red"], "unrecognized arguments: --colour red"),
    "count not a number": (["scale", "dep1", "vm", "many"], "argument count: invalid int value: 'many'"),
    "timeout not a number": (["deploy", "spark_cluster", "--timeout", "soon"], "invalid float value: 'soon'"),
    "input without '='": (["validate", str(SPARK), "--input", "worker_count"], "--input expects key=value"),
    "input without a name": (["validate", str(SPARK), "--input", "=3"], "--input expects key=value, got '=3'"),
    "unknown input": (["validate", str(SPARK), "--input", "workers=3"], "unknown input(s) workers"),
    "missing template": (["validate", "/nonexistent/t.yaml"], "cannot read the template (No such file or directory)"),
    "template is a folder": (["validate", str(CORPUS)], "cannot read the template (Is a directory)"),
    "unknown backend": (["validate", str(SPARK), "--backend", "teleport"], "unknown backend 'teleport'"),
    "store URL of an unknown dialect": (["list", "--store-url", "nosuchdb://u:pw@host/db"],
                                        "SQLAlchemy has no dialect 'nosuchdb'"),
    "store URL of a missing driver": (["list", "--store-url", "postgresql+nosuchdriver://u:pw@host/db"],
                                      "cannot open the deployment store at postgresql+nosuchdriver://u:***@host/db"),
    "store connection missing": (["list", "--conn-id", "no_such_store"], "no Airflow connection 'no_such_store'"),
    "store connection with a bad URL": (["list", "--conn-id", "bad_store"], "SQLAlchemy has no dialect 'nosuchdb'"),
    "API not reachable": (["deploy", "spark_cluster", "--api-url", "http://127.0.0.1:9"],
                          "cannot reach the Airflow API at http://127.0.0.1:9"),
}


@pytest.mark.parametrize("name", BAD_ARGUMENTS, ids=list(BAD_ARGUMENTS))
def test_bad_cli_arguments_exit_with_a_message_and_no_traceback(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    argv, says = BAD_ARGUMENTS[name]
    monkeypatch.setenv("AIRFLOW_CONN_BAD_STORE", json.dumps({"conn_type": "cloud_paas",
                                                              "extra": {"store_url": "nosuchdb://u:pw@h/db"}}))
    monkeypatch.delenv("CLOUD_PAAS_STORE_URL", raising=False)
    code, err = _cli(argv, capsys)
    assert code not in (0, None), err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert says in "\n".join(lines[-2:]), err  # the message ends stderr (a usage may come before it)
    assert ":pw@" not in err  # a password in a URL is never shown


def test_the_installed_command_fails_cleanly_on_a_bad_store_url() -> None:
    exe = Path(sys.executable).with_name("cloud-paas")
    env = {k: v for k, v in os.environ.items() if k != "AIRFLOW__CORE__UNIT_TEST_MODE"}
    done = subprocess.run([str(exe), "list", "--store-url", "nosuchdb://u:pw@host/db"], capture_output=True,
                          text=True, timeout=120, env=env)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("error: DeploymentStoreError: cannot open the deployment store at "
                                  "nosuchdb://u:***@host/db: SQLAlchemy has no dialect 'nosuchdb'"), done.stderr
    assert "Traceback" not in done.stderr
