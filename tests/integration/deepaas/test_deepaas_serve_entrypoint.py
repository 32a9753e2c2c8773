"""The DEEPaaS image's and the VM unit's entry point (``python -m cloud_paas_deepaas.serve``) run for real: from
DEEPaaS's own virtual environment, with the environment the VM's boot script writes (listen address and port moved
to loopback), it fetches the model archive over HTTP, checks it, and serves it through ``deepaas-run``; a damaged
archive stops it before DEEPaaS starts, saying why.

Stand-ins, named: no container engine and no VM here, so the process runs on this host; the archive is served by
Python's HTTP server on 127.0.0.1.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest
import requests
from conftest import SKIP, deepaas_installed
from waiting import free_port, until

from airflow_cloud_paas.services.training.archive import pack_model

pytestmark = pytest.mark.integration
PACKAGE = Path(__file__).resolve().parents[3] / "airflow_cloud_paas"


def _serve(tmp_path: Path, url: str, port: int) -> subprocess.Popen:
    from airflow_cloud_paas.services.training.serving import venv_dir

    python_path = tmp_path / "pythonpath"  # the image's /opt/cloud-paas/pythonpath: the package, uninstalled
    python_path.mkdir(exist_ok=True)
    if not (python_path / "airflow_cloud_paas").exists():
        (python_path / "airflow_cloud_paas").symlink_to(PACKAGE, target_is_directory=True)
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(python_path), "CLOUD_PAAS_MODEL_URL": url,
           "CLOUD_PAAS_MODEL_DIR": str(tmp_path / "models" / "model"),
           "CLOUD_PAAS_TRAINING_DIR": str(tmp_path / "models" / "trainings"), "DEEPAAS_LISTEN_IP": "127.0.0.1",
           "DEEPAAS_PORT": str(port), "DEEPAAS_WORKERS": "1", "CLOUD_PAAS_TORCH_THREADS": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([str(venv_dir() / "bin" / "python"), "-m", "cloud_paas_deepaas.serve"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)


def test_the_entry_point_fetches_checks_and_serves_the_model(digits_model, http_root, tmp_path) -> None:
    if not deepaas_installed():
        pytest.skip(SKIP)
    root, base = http_root
    pack_model(digits_model.directory, root / "model.tar.gz")
    port = free_port()
    server = _serve(tmp_path, f"{base}/model.tar.gz", port)
    try:
        def listed() -> bool:
            assert server.poll() is None, server.stdout.read()
            try:
                answer = requests.get(f"http://127.0.0.1:{port}/v2/models/", timeout=5)
            except requests.RequestException:
                return False
            return answer.ok and [m["id"] for m in answer.json()["models"]] == ["cloud-paas"]

        until("DEEPaaS serving the fetched model", listed, timeout=180)
        index, label = digits_model.right[0]
        from airflow_cloud_paas.services.training.data import digits_dataset

        pixels = digits_dataset("holdout").tensors[0][index][0].tolist()
        answer = requests.post(f"http://127.0.0.1:{port}/v2/models/cloud-paas/predict/",
                               json={"data": pixels}, timeout=60)
        assert answer.status_code == 200, answer.text
        assert answer.json()["class_index"] == label
    finally:
        os.killpg(server.pid, signal.SIGINT)  # aiohttp's graceful stop, as the unit's KillSignal
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(10)


def test_a_damaged_archive_stops_it_before_deepaas_starts(digits_model, http_root, tmp_path) -> None:
    if not deepaas_installed():
        pytest.skip(SKIP)
    root, base = http_root
    archive = pack_model(digits_model.directory, tmp_path / "good.tar.gz")
    (root / "model.tar.gz").write_bytes(archive.read_bytes()[:-200])  # cut short, as a broken upload
    server = _serve(tmp_path, f"{base}/model.tar.gz", free_port())
    output, _ = server.communicate(timeout=120)
    assert server.returncode == 2 and "ExportedModelError" in output and "model.tar.gz" in output
    assert not (tmp_path / "models" / "model").exists()
