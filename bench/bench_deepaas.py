"""Prediction latency and throughput through the real DEEPaaS V2 API against the same model called in-process.

A digits-cnn is trained for a few seconds by the training engine (or ``--model-dir`` names an exported one) and
served by ``deepaas-run`` from DEEPaaS's own virtual environment (``make deepaas-runtime``) on 127.0.0.1, with
``--workers`` worker processes and one torch thread each. The same holdout digits are then classified:

- in-process: the loaded model called as the plugin's ``predict`` calls it (array -> tensor -> softmax), one at a
  time;
- over HTTP: ``POST /v2/models/cloud-paas/predict/`` with the pixels as JSON, from 1 and from ``--concurrency``
  client threads (one ``requests`` session each).

Each mode runs ``--requests`` predictions per repeat; the table shows the median over ``--repeats`` of each
repeat's p50 and p99 latency (ms) and requests/s. The server is stopped (its process group, SIGINT) at the end.

Run (from the repository root):
  .venv/bin/python bench/bench_deepaas.py --repeats 3 --requests 300
  .venv/bin/python bench/bench_deepaas.py --workers 2 --concurrency 4
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

import requests  # noqa: E402
import torch  # noqa: E402

from airflow_cloud_paas.services.training.data import digits_dataset  # noqa: E402
from airflow_cloud_paas.services.training.export import load_model  # noqa: E402
from airflow_cloud_paas.services.training.serving import MODEL_NAME, deepaas_run, venv_dir  # noqa: E402


def _train(directory: Path) -> Path:
    """Train and export a digits-cnn (the integration tests' recipe); return its directory."""
    from integration.deepaas.conftest import train_digits

    return train_digits(directory).directory


def _start(model_dir: Path, workers: int, work: Path) -> tuple[subprocess.Popen, str]:
    """Start deepaas-run on a free loopback port; return it and its URL once the model is listed."""
    from waiting import free_port

    port = free_port()
    (work / "pythonpath").mkdir()
    (work / "pythonpath" / "airflow_cloud_paas").symlink_to(REPO / "airflow_cloud_paas")
    env = {**os.environ, "PYTHONPATH": str(work / "pythonpath"), "CLOUD_PAAS_MODEL_DIR": str(model_dir),
           "CLOUD_PAAS_TORCH_THREADS": "1", "OMP_NUM_THREADS": "1", "CLOUD_PAAS_TRAINING_DIR": str(work)}
    log = (work / "deepaas.log").open("wb")
    server = subprocess.Popen([str(deepaas_run()), "--listen-ip", "127.0.0.1", "--listen-port", str(port),
                               "--model-name", MODEL_NAME, "--workers", str(workers)], env=env, cwd=work,
                              stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"deepaas-run exited: {(work / 'deepaas.log').read_text()[-2000:]}")
        try:
            if requests.get(f"{url}/v2/models/", timeout=2).ok:
                return server, url
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise SystemExit("deepaas-run did not answer within 120 s")


def _stop(server: subprocess.Popen) -> None:
    os.killpg(server.pid, signal.SIGINT)  # DEEPaaS's SIGTERM handler hangs; aiohttp's SIGINT exits cleanly
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait(timeout=30)


def _measure(call: Callable[[int], None], n: int, concurrency: int) -> tuple[float, float, float]:
    """Run ``call(i)`` for i < n on ``concurrency`` threads; return p50 and p99 latency (ms) and requests/s."""
    latencies: list[float] = []

    def timed(i: int) -> None:
        t0 = time.perf_counter()
        call(i)
        latencies.append((time.perf_counter() - t0) * 1000)

    started = time.perf_counter()
    if concurrency == 1:
        for i in range(n):
            timed(i)
    else:
        with ThreadPoolExecutor(concurrency) as pool:
            list(pool.map(timed, range(n)))
    elapsed = time.perf_counter() - started
    ordered = sorted(latencies)
    return ordered[len(ordered) // 2], ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], n / elapsed


def main() -> None:
    """Run the benchmark and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, help="an exported model (default: train a digits-cnn now)")
    parser.add_argument("--requests", type=int, default=300, help="predictions per mode and repeat")
    parser.add_argument("--repeats", type=int, default=3, help="repeats; the table shows their medians")
    parser.add_argument("--concurrency", type=int, default=4, help="client threads of the concurrent HTTP mode")
    parser.add_argument("--workers", type=int, default=1, help="DEEPaaS worker processes")
    args = parser.parse_args()
    if deepaas_run() is None:
        raise SystemExit(f"DEEPaaS is not installed in {venv_dir()}: run `make deepaas-runtime`")
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="bench_deepaas_") as tmp:
        work = Path(tmp)
        model_dir = args.model_dir or _train(work / "model")
        model, meta = load_model(model_dir)
        images = digits_dataset("holdout").tensors[0]
        pixels = [images[i % len(images)].numpy() for i in range(args.requests)]
        payloads = [{"data": p[0].tolist()} for p in pixels]

        def in_process(i: int) -> None:
            with torch.inference_mode():
                torch.softmax(model(torch.from_numpy(pixels[i])[None]).float(), dim=1)[0].tolist()

        server, url = _start(model_dir, args.workers, work)
        try:
            endpoint = f"{url}/v2/models/{MODEL_NAME}/predict/"
            sessions: dict[int, requests.Session] = {}

            def over_http(i: int) -> None:
                import threading

                session = sessions.setdefault(threading.get_ident(), requests.Session())
                answer = session.post(endpoint, json=payloads[i], timeout=60)
                answer.raise_for_status()

            for i in range(20):  # warm-up: the workers' first calls, connections
                over_http(i)
                in_process(i)
            modes = [("in-process", in_process, 1), ("DEEPaaS HTTP", over_http, 1),
                     (f"DEEPaaS HTTP x{args.concurrency}", over_http, args.concurrency)]
            results = {name: [] for name, _, _ in modes}
            for _ in range(args.repeats):
                for name, call, concurrency in modes:
                    results[name].append(_measure(call, args.requests, concurrency))
        finally:
            _stop(server)
    print(f"model {meta.model} {meta.version}; {args.requests} predictions x {args.repeats} repeats; DEEPaaS "
          f"workers {args.workers}; torch threads 1; CPUs {os.cpu_count()}")
    print(f"{'mode':<22}{'p50 ms':>10}{'p99 ms':>10}{'req/s':>10}")
    for name, runs in results.items():
        p50, p99, rps = (statistics.median(r[k] for r in runs) for k in range(3))
        print(f"{name:<22}{p50:>10.2f}{p99:>10.2f}{rps:>10.1f}")


if __name__ == "__main__":
    main()
