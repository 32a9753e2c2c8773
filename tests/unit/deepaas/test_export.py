"""The exported-model format: a round trip keeps the model's outputs and metadata; every broken directory is refused
with the file and the reason."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest

torch = pytest.importorskip("torch", reason="pip install torch==2.13.0 (the training extra)")

from airflow_cloud_paas.exceptions import CloudPaaSError  # noqa: E402
from airflow_cloud_paas.services.training.engine import TrainingSpec  # noqa: E402
from airflow_cloud_paas.services.training.errors import ExportedModelError  # noqa: E402
from airflow_cloud_paas.services.training.export import (  # noqa: E402
    METADATA_NAME,
    WEIGHTS_NAME,
    file_sha256,
    load_model,
    read_metadata,
    save_model,
)
from airflow_cloud_paas.services.training.models import build_model  # noqa: E402


@pytest.fixture(autouse=True)
def one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _export(directory: Path, **kwargs) -> tuple[torch.nn.Module, Path]:
    torch.manual_seed(3)
    model = build_model("digits-cnn", 10).eval()
    options = dict(name="digits-cnn", num_classes=10, input_shape=(1, 8, 8),
                   model_kwargs={"in_channels": 1, "image_size": 8}, class_labels=[f"digit {i}" for i in range(10)],
                   metrics={"holdout_accuracy": 0.97}, training=TrainingSpec(epochs=2, num_threads=1),
                   data={"uri": "sklearn://digits?split=train", "digest": "ab" * 32})
    options.update(kwargs)
    return model, save_model(model, directory, **options)


def test_a_round_trip_gives_the_same_outputs_and_metadata(tmp_path: Path) -> None:
    model, directory = _export(tmp_path / "model")
    assert sorted(p.name for p in directory.iterdir()) == [METADATA_NAME, WEIGHTS_NAME]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "the staging directory is left behind"
    loaded, meta = load_model(directory)
    assert not loaded.training
    x = torch.rand(4, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    assert meta.model == "digits-cnn" and meta.num_classes == 10 and meta.input_shape == (1, 8, 8)
    assert meta.labels()[3] == "digit 3"
    assert meta.sha256 == file_sha256(directory / WEIGHTS_NAME) and meta.version == meta.sha256[:12]
    assert meta.training["epochs"] == 2 and meta.metrics == {"holdout_accuracy": 0.97}
    assert meta.data["uri"] == "sklearn://digits?split=train" and meta.created.endswith("Z")
    on_disk = json.loads((directory / METADATA_NAME).read_text())
    assert on_disk["format_version"] == 1 and on_disk["weights"]["file"] == WEIGHTS_NAME
    assert read_metadata(directory) == meta


def test_an_existing_directory_is_kept_unless_overwrite(tmp_path: Path) -> None:
    _, directory = _export(tmp_path / "model")
    before = read_metadata(directory).sha256
    with pytest.raises(ExportedModelError, match="already exists"):
        _export(directory)
    torch.manual_seed(99)
    save_model(build_model("digits-cnn", 10), directory, name="digits-cnn", num_classes=10, input_shape=(1, 8, 8),
               overwrite=True)
    assert read_metadata(directory).sha256 != before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def _rewrite(directory: Path, **changes) -> None:
    path = directory / METADATA_NAME
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize(
    ("breakage", "where", "reason"),
    [
        (lambda d: None, "nowhere", "no such model directory"),
        (lambda d: (d / METADATA_NAME).unlink(), METADATA_NAME, "is missing"),
        (lambda d: (d / METADATA_NAME).write_text("{not json"), METADATA_NAME, "not valid JSON"),
        (lambda d: _rewrite(d, format_version=7), METADATA_NAME, "format_version"),
        (lambda d: _rewrite(d, num_classes="ten"), METADATA_NAME, "num_classes"),
        (lambda d: _rewrite(d, input_shape=[1, -8, 8]), METADATA_NAME, "input_shape"),
        (lambda d: _rewrite(d, class_labels=["a", "b"]), METADATA_NAME, "class_labels"),
        (lambda d: _rewrite(d, normalisation={"range": [1, 0]}), METADATA_NAME, "normalisation.range"),
        (lambda d: _rewrite(d, model="transformer-xl"), METADATA_NAME, "unknown model"),
        (lambda d: (d / WEIGHTS_NAME).unlink(), WEIGHTS_NAME, "is missing"),
        (lambda d: (d / WEIGHTS_NAME).open("ab").write(b"\0"), WEIGHTS_NAME, "SHA-256"),
        # a valid checkpoint of another architecture: checksum right, shapes wrong
        (lambda d: _rewrite(d, num_classes=5, class_labels=[]), WEIGHTS_NAME, "does not fit digits-cnn with 5 classes"),
        (lambda d: _rewrite(d, model_kwargs={"image_size": 8, "depth": 3}), METADATA_NAME, "model_kwargs"),
    ],
    ids=["no-dir", "no-json", "bad-json", "version", "num-classes", "shape", "labels", "range", "model", "no-weights",
         "checksum", "wrong-architecture", "unknown-kwarg"],
)
def test_a_broken_model_directory_is_refused_naming_the_file_and_reason(tmp_path: Path, breakage, where,
                                                                        reason) -> None:
    _, directory = _export(tmp_path / "model")
    if where == "nowhere":
        directory = tmp_path / "elsewhere"
    breakage(directory)
    with pytest.raises(ExportedModelError) as caught:
        load_model(directory)
    err = caught.value
    assert isinstance(err, CloudPaaSError)
    assert reason in str(err)
    assert err.path.endswith(where if where != "nowhere" else "elsewhere"), err.path
    # it crosses DEEPaaS's worker processes (pickled) with its attributes
    again = pickle.loads(pickle.dumps(err))
    assert (type(again), again.path, str(again)) == (ExportedModelError, err.path, str(err))
