"""``cloud-paas xcache-monitor``: the monitoring listener as a service process, stopped by SIGTERM.

The packets are built to XRootD's g-stream layout (as in test_xrootd_monitor), sent over real UDP to the
real command in its own process, which stores them in a real SQLite access log.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from unit.xrootd.test_xrootd_monitor import file_close, packet

from airflow_cloud_paas.services.xcache.monitor import AccessLog

COMMAND = [sys.executable, "-m", "airflow_cloud_paas.cli", "xcache-monitor"]


def test_the_monitor_service_stores_records_until_stopped(tmp_path: Path) -> None:
    db = tmp_path / "access.db"
    proc = subprocess.Popen([*COMMAND, "--listen", "127.0.0.1:0", "--access-log", str(db), "--cache", "c1",
                             "--report-s", "0.5"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = proc.stdout.readline()
        while first and not first.startswith("listening on "):  # Airflow's configuration may log first
            first = proc.stdout.readline()
        assert first.startswith("listening on 127.0.0.1:"), proc.stderr.read() if proc.poll() is not None else ""
        port = int(first.split()[2].rsplit(":", 1)[1])
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            sender.sendto(packet(file_close("/store/a", 1, 0, 1000), file_close("/store/b", 1, 0, 1000)),
                          ("127.0.0.1", port))
            sender.sendto(packet(file_close("/store/a", 1, 0, 1000)), ("127.0.0.1", port))  # the same access again
        log = AccessLog(db)
        try:
            deadline = time.monotonic() + 20
            while log.count() < 2 and time.monotonic() < deadline:
                time.sleep(0.1)
            records = log.since(0)
        finally:
            log.close()
        assert sorted(r.path for r in records) == ["/store/a", "/store/b"] and {r.cache for r in records} == {"c1"}
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "stopped: 2 packet(s), 2 new record(s), 0 failed store(s)" in out


def test_bad_arguments_are_refused_before_listening(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("AIRFLOW_CLOUD_PAAS_ACCESS_LOG", raising=False)
    no_log = subprocess.run([*COMMAND, "--cache", "c1"], capture_output=True, text=True, timeout=60)
    assert no_log.returncode == 2 and "no access log" in no_log.stderr
    bad = subprocess.run([*COMMAND, "--cache", "c1", "--access-log", str(tmp_path / "a.db"), "--listen", "nohost:"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "listen" in bad.stderr
