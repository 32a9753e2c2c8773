"""get_backend / register_backend: lookup by name, lazy imports, errors that say what to install."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from airflow_cloud_paas.backends import available_backends, get_backend, register_backend
from airflow_cloud_paas.backends.local import WORK_ROOT_ENV, LocalBackend
from airflow_cloud_paas.exceptions import BackendError


def test_local_by_name(tmp_path: Path) -> None:
    backend = get_backend("local", work_root=tmp_path, ready_timeout=5)
    assert isinstance(backend, LocalBackend)
    assert backend.name == "local"
    assert backend.work_root == tmp_path.resolve()
    assert backend.ready_timeout == 5
    assert "local" in available_backends()


def test_local_work_root_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(WORK_ROOT_ENV, str(tmp_path / "from-env"))
    assert get_backend("local").work_root == (tmp_path / "from-env").resolve()


def test_unknown_name_lists_known_ones() -> None:
    with pytest.raises(BackendError, match=r"unknown backend 'nimbus'.*local"):
        get_backend("nimbus")
    with pytest.raises(BackendError, match="unknown backend"):
        get_backend("../local")


def test_registered_class_and_lazy_path(tmp_path: Path) -> None:
    class Mine(LocalBackend):
        name = "mine"

    register_backend("mine", Mine)
    assert isinstance(get_backend("mine", work_root=tmp_path), Mine)
    register_backend("local-again", "airflow_cloud_paas.backends.local:LocalBackend")
    assert isinstance(get_backend("local-again", work_root=tmp_path), LocalBackend)
    with pytest.raises(TypeError):
        register_backend("bad", object)  # type: ignore[arg-type]


def test_missing_sdk_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # a backend module whose SDK is not installed, like backends/aws.py without boto3
    (tmp_path / "fakecloud_backend.py").write_text("import fakecloud_sdk_that_is_not_installed\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    register_backend("fakecloud", "fakecloud_backend:FakeCloudBackend")
    with pytest.raises(BackendError, match=r"needs 'fakecloud_sdk_that_is_not_installed'.*\[fakecloud\]"):
        get_backend("fakecloud")
    sys.modules.pop("fakecloud_backend", None)
