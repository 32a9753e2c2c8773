"""The on-disk catalogue cache shared by task processes: reused while fresh, fetched again when stale or unreadable."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from airflow_cloud_paas.backends import catalog


@pytest.fixture(autouse=True)
def catalog_dir(tmp_path, monkeypatch):
    monkeypatch.setenv(catalog.DIR_ENV, str(tmp_path / "catalog"))
    return tmp_path / "catalog"


def test_a_fresh_copy_is_reused_and_a_stale_or_broken_one_fetched_again(catalog_dir, monkeypatch) -> None:
    fetched = []

    def fetch():
        fetched.append(1)
        return [{"InstanceType": "t3.micro", "n": len(fetched)}]

    key = {"endpoint": "http://127.0.0.1:5000", "region": "eu-west-1"}
    first = catalog.cached("types", key, 60, fetch)
    assert catalog.cached("types", key, 60, fetch) == first and len(fetched) == 1  # another process would read it
    assert catalog.cached("types", {**key, "region": "us-east-1"}, 60, fetch)[0]["n"] == 2  # another key
    (path,) = [p for p in catalog_dir.glob("[!.]*.json") if json.loads(p.read_text())["key"] == key]
    data = json.loads(path.read_text())
    path.write_text(json.dumps({**data, "fetched_at": data["fetched_at"] - 61}))  # stale
    assert catalog.cached("types", key, 60, fetch)[0]["n"] == 3
    path.write_text("{not json")  # a broken file is fetched again, never an error
    assert catalog.cached("types", key, 60, fetch)[0]["n"] == 4


def test_an_unwritable_folder_still_answers(tmp_path, monkeypatch) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv(catalog.DIR_ENV, str(blocker / "catalog"))  # under a file: cannot be made
    assert catalog.cached("types", {"k": 1}, 60, lambda: [1, 2]) == [1, 2]


_FETCHER = """
import sys, time
from airflow_cloud_paas.backends import catalog

def fetch():
    with open(sys.argv[1], "a") as log:
        log.write("fetched\\n")
    time.sleep(1.0)  # a slow answer (EC2's ~800 instance types): the others arrive while it is fetched
    return ["t3.micro"]

print(catalog.cached("types", {"region": "eu-west-1"}, 60, fetch))
"""


def test_processes_starting_together_on_a_cold_cache_fetch_once(catalog_dir, tmp_path) -> None:
    log = tmp_path / "fetches.log"
    procs = [subprocess.Popen([sys.executable, "-c", _FETCHER, str(log)], stdout=subprocess.PIPE, text=True)
             for _ in range(4)]
    answers = [p.communicate(timeout=120)[0].strip().splitlines()[-1] for p in procs]
    assert answers == ["['t3.micro']"] * 4 and all(p.returncode == 0 for p in procs)
    assert log.read_text().splitlines() == ["fetched"]
