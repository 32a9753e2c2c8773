"""DAG-parse time: each example DAG file, and a ToscaDag of the largest INDIGO example template,
against a plain DAG with the same number of no-op tasks (target: at most +50 ms per file).

Each file is parsed the way the dag-processor does (DagBag.process_file, module re-imported),
after one warm-up parse (the topology cache is then warm, as it is for every re-parse in
production). Prints the median of REPEATS parses. Run: .venv/bin/python bench/bench_parse.py
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
REPEATS = int(os.environ.get("BENCH_REPEATS", "15"))
HOME = Path(tempfile.mkdtemp(prefix="bench_parse_"))
os.environ.setdefault("AIRFLOW_HOME", str(HOME))
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW_CLOUD_PAAS_TOPOLOGY_CACHE"] = str(HOME / "cache")
os.environ["AIRFLOW__LOGGING__LOGGING_LEVEL"] = "WARNING"

PLAIN = '''
from airflow.sdk import DAG
from airflow.providers.standard.operators.empty import EmptyOperator
with DAG(dag_id="plain_{n}", schedule=None) as dag:
    tasks = [EmptyOperator(task_id=f"t{{i}}") for i in range({n})]
    for a, b in zip(tasks, tasks[1:]):
        a >> b
'''

TOSCA = '''
import json
from airflow_cloud_paas import ToscaDag
IMPORT_MAP = json.loads({import_map!r})
dag = ToscaDag({template!r}, dag_id="tosca_largest", schedule=None, import_map=IMPORT_MAP)
'''


def parse_ms(path: Path) -> tuple[float, int]:
    from airflow.dag_processing.dagbag import DagBag

    times, ntasks = [], 0
    for i in range(REPEATS + 1):
        for name in [m for m in sys.modules if m.startswith("unusual_prefix")]:
            del sys.modules[name]
        start = time.perf_counter()
        bag = DagBag(dag_folder=str(path), safe_mode=False)
        elapsed = (time.perf_counter() - start) * 1000
        assert not bag.import_errors, bag.import_errors
        ntasks = max(len(d.tasks) for d in bag.dags.values())
        if i:  # the first parse warms the topology cache, like the first parse in production
            times.append(elapsed)
    return statistics.median(times), ntasks


COLD = """
import sys, time
import airflow.sdk
from airflow.dag_processing.dagbag import DagBag
from airflow.providers.standard.operators.empty import EmptyOperator
start = time.perf_counter()
bag = DagBag(dag_folder=sys.argv[1], safe_mode=False)
assert not bag.import_errors, bag.import_errors
print("MS", (time.perf_counter() - start) * 1000)
"""


def cold_parse_ms(path: Path, repeats: int = 5) -> float:
    """Parse in a fresh process with Airflow imported (as a forked dag-processor child): pays our imports."""
    import subprocess

    times = []
    for _ in range(repeats):
        out = subprocess.run([sys.executable, "-c", COLD, str(path)], capture_output=True, text=True, check=True)
        times.append(float(next(line for line in out.stdout.splitlines() if line.startswith("MS")).split()[1]))
    return statistics.median(times)


def largest_template() -> tuple[Path, dict[str, str]]:
    from airflow_cloud_paas.exceptions import ToscaError
    from airflow_cloud_paas.tosca import indigo_import_map, load_topology

    import_map = indigo_import_map(SHARED / "tosca" / "indigo-types")
    best = None
    for path in sorted((SHARED / "tosca" / "examples").glob("*.y*ml")):
        try:
            topo = load_topology(path, import_map=import_map)
        except ToscaError:
            continue
        if best is None or len(topo.nodes) > best[1]:
            best = (path, len(topo.nodes))
    return best[0], import_map


def main() -> None:
    import airflow.sdk  # noqa: F401  - paid once by the dag-processor, not per file

    work = HOME / "dags"
    work.mkdir()
    rows = []
    template, import_map = largest_template()
    tosca_file = work / "tosca_largest.py"
    tosca_file.write_text(TOSCA.format(template=str(template), import_map=json.dumps(import_map)))
    files = sorted((REPO / "dags").glob("*.py")) + [tosca_file]
    for path in files:
        ms, ntasks = parse_ms(path)
        plain = work / f"plain_{ntasks}.py"
        plain.write_text(PLAIN.format(n=ntasks))
        plain_ms, _ = parse_ms(plain)
        cold, cold_plain = cold_parse_ms(path), cold_parse_ms(plain)
        label = path.name if path != tosca_file else f"ToscaDag({template.name})"
        rows.append((label, ntasks, ms, plain_ms, ms - plain_ms, cold, cold_plain, cold - cold_plain))
    print(f"DAG parse time in ms: median of {REPEATS} re-parses in one process, and of 5 parses in a fresh")
    print("process with Airflow already imported (pays this package's imports); topology cache warm")
    print(f"{'file':<48} {'tasks':>5} {'ms':>7} {'plain':>7} {'over':>7} | {'fresh':>7} {'plain':>7} {'over':>7}")
    for label, ntasks, ms, plain_ms, over, cold, cold_plain, cold_over in rows:
        print(f"{label:<48} {ntasks:>5} {ms:>7.1f} {plain_ms:>7.1f} {over:>+7.1f} | {cold:>7.1f} {cold_plain:>7.1f} "
              f"{cold_over:>+7.1f}")
    worst = max(max(r[4], r[7]) for r in rows)
    print(f"worst overhead: {worst:+.1f} ms per file (target <= +50 ms): {'OK' if worst <= 50 else 'MISSED'}")


if __name__ == "__main__":
    main()
