"""The exported-model format of the training service: a directory that a DEEPaaS server (or anyone) can load.

A model directory holds two files:

- ``model.pt``: the model's ``state_dict`` (tensors only, read back with ``torch.load(weights_only=True)``);
- ``model.json``: what is needed to rebuild and use it, and where it came from: the format version, the model's
  name (:func:`~airflow_cloud_paas.services.training.models.build_model`'s ``name``) and keyword arguments, the
  classes and their labels, the input's shape, dtype and normalisation, the metrics, the training spec, the data's
  lineage (an asset URI and digest), when it was made, and the SHA-256 of ``model.pt``.

:func:`save_model` writes both into a temporary sibling directory and renames it into place, so a reader never
sees half a model. :func:`load_model` checks everything it reads and raises :class:`ExportedModelError` naming the
file and what is wrong. :func:`read_metadata` reads ``model.json`` alone, without torch, so that Airflow's side (the
local backend's DEEPaaS driver) can check a model directory where torch is not installed.

Nothing here imports Airflow: the DEEPaaS plugin imports this module in DEEPaaS's own virtual environment.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow_cloud_paas.services.training.errors import ExportedModelError

if TYPE_CHECKING:
    from torch import nn

#: the layout version written; a model.json of another version is refused
FORMAT = "cloud-paas-model"
FORMAT_VERSION = 1
WEIGHTS_NAME = "model.pt"
#: what the DEEPaaS plugin reads from its environment (the serving driver sets them): the model folder, where its
#: API trainings go, the CPU threads torch may use
MODEL_DIR_ENV = "CLOUD_PAAS_MODEL_DIR"
TRAINING_DIR_ENV = "CLOUD_PAAS_TRAINING_DIR"
THREADS_ENV = "CLOUD_PAAS_TORCH_THREADS"
#: the plugin's train argument naming who started a training (an Airflow task instance), so its retry finds it
RUN_KEY = "run_key"
METADATA_NAME = "model.json"
_CHUNK = 1 << 20
_DTYPES = ("float32", "float64", "float16", "bfloat16")


@dataclass(frozen=True)
class ModelMetadata:
    """What ``model.json`` says about an exported model.

    :param model: the architecture's name for ``build_model`` (e.g. ``digits-cnn``)
    :param num_classes: the number of classes
    :param input_shape: the shape of one input, C x H x W
    :param sha256: the SHA-256 of ``model.pt``
    :param model_kwargs: ``build_model``'s keyword arguments besides ``name`` and ``num_classes``
    :param class_labels: the label of each class index
    :param input_dtype: the dtype of the input tensor
    :param normalisation: ``range`` (the [low, high] inputs lie in, pixels scaled there), then optional per-channel
        ``mean`` and ``std`` subtracted and divided by
    :param metrics: the model's metrics (e.g. holdout accuracy and loss)
    :param training: the training spec it was trained with
    :param data: the training data's lineage: ``uri`` (an Airflow asset URI), ``digest``, ``description``
    :param version: the model's version (default: the first 12 hex digits of ``sha256``)
    :param created: when it was exported (ISO 8601, UTC)
    :param description: a line for people
    """

    model: str
    num_classes: int
    input_shape: tuple[int, ...]
    sha256: str
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    class_labels: tuple[str, ...] = ()
    input_dtype: str = "float32"
    normalisation: dict[str, Any] = field(default_factory=lambda: {"range": [0.0, 1.0]})
    metrics: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    version: str = ""
    created: str = ""
    description: str = ""

    def to_json(self) -> dict[str, Any]:
        """Return the content of ``model.json``."""
        body = dataclasses.asdict(self)
        sha = body.pop("sha256")
        return {"format": FORMAT, "format_version": FORMAT_VERSION, **body, "input_shape": list(self.input_shape),
                "class_labels": list(self.class_labels), "weights": {"file": WEIGHTS_NAME, "sha256": sha}}

    @classmethod
    def from_json(cls, data: Any, *, path: str | Path) -> ModelMetadata:
        """Build the metadata from a parsed ``model.json``; raise :class:`ExportedModelError` naming the bad key.

        :param data: the parsed file
        :param path: the file (for errors)
        """
        def bad(key: str, expected: str) -> ExportedModelError:
            found = data.get(key) if isinstance(data, dict) else None
            return ExportedModelError(f"key '{key}' must be {expected}, got {found!r}; export the model again with "
                                      "airflow_cloud_paas.services.training.export.save_model", path=path)

        if not isinstance(data, dict):
            raise ExportedModelError(f"must hold a JSON object, got {type(data).__name__}", path=path)
        if data.get("format") != FORMAT:
            raise bad("format", repr(FORMAT))
        if data.get("format_version") != FORMAT_VERSION:
            raise bad("format_version", f"{FORMAT_VERSION} (this reader's version)")
        if not isinstance(data.get("model"), str) or not data["model"]:
            raise bad("model", "a model name such as 'digits-cnn'")
        classes = data.get("num_classes")
        if isinstance(classes, bool) or not isinstance(classes, int) or classes < 2:
            raise bad("num_classes", "an integer >= 2")
        shape = data.get("input_shape")
        if not isinstance(shape, list) or not shape or not all(
                isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in shape):
            raise bad("input_shape", "a list of positive integers (C, H, W)")
        labels = data.get("class_labels", [])
        if not isinstance(labels, list) or (labels and len(labels) != classes) or not all(
                isinstance(x, str) for x in labels):
            raise bad("class_labels", f"a list of {classes} strings")
        if data.get("input_dtype", "float32") not in _DTYPES:
            raise bad("input_dtype", f"one of {', '.join(_DTYPES)}")
        weights = data.get("weights")
        sha = weights.get("sha256") if isinstance(weights, dict) else None
        if not isinstance(sha, str) or len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
            raise bad("weights", "{'file': 'model.pt', 'sha256': <64 hex digits>}")
        for key in ("model_kwargs", "normalisation", "metrics", "training", "data"):
            if not isinstance(data.get(key, {}), dict):
                raise bad(key, "a JSON object")
        _check_normalisation(data.get("normalisation", {"range": [0.0, 1.0]}), channels=shape[0], path=path)
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values.update(input_shape=tuple(shape), class_labels=tuple(labels), sha256=sha)
        return cls(**values)

    def labels(self) -> tuple[str, ...]:
        """Return the label of every class (their indices as text when none were given)."""
        return self.class_labels or tuple(str(i) for i in range(self.num_classes))


def _check_normalisation(norm: Mapping[str, Any], *, channels: int, path: str | Path) -> None:
    low_high = norm.get("range", [0.0, 1.0])
    if not (isinstance(low_high, list) and len(low_high) == 2 and all(_finite(v) for v in low_high)
            and low_high[0] < low_high[1]):
        raise ExportedModelError(f"key 'normalisation.range' must be [low, high] with low < high, got {low_high!r}",
                                 path=path)
    for key in ("mean", "std"):
        value = norm.get(key)
        if value is None:
            continue
        if not isinstance(value, list) or len(value) != channels or not all(_finite(v) for v in value) or (
                key == "std" and not all(v > 0 for v in value)):
            raise ExportedModelError(f"key 'normalisation.{key}' must be {channels} finite numbers"
                                     f"{' > 0' if key == 'std' else ''} (one per channel), got {value!r}", path=path)


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def file_sha256(path: str | Path) -> str:
    """Return the SHA-256 of a file, read in 1 MiB blocks.

    :param path: the file
    """
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def save_model(
    model: nn.Module,
    directory: str | Path,
    *,
    name: str,
    num_classes: int,
    input_shape: Sequence[int],
    model_kwargs: Mapping[str, Any] | None = None,
    class_labels: Sequence[str] | None = None,
    input_dtype: str = "float32",
    normalisation: Mapping[str, Any] | None = None,
    metrics: Mapping[str, Any] | None = None,
    training: Any = None,
    data: Mapping[str, Any] | None = None,
    version: str | None = None,
    description: str = "",
    overwrite: bool = False,
) -> Path:
    """Export a model as ``directory/model.pt`` and ``directory/model.json``, atomically; return the directory.

    :param model: the trained model (its ``state_dict`` is saved, copied to the CPU)
    :param directory: where the model goes (must not exist unless ``overwrite``)
    :param name: the architecture's name for ``build_model`` (e.g. ``digits-cnn``)
    :param num_classes: the number of classes
    :param input_shape: the shape of one input, C x H x W
    :param model_kwargs: ``build_model``'s other keyword arguments (e.g. ``in_channels``, ``image_size``)
    :param class_labels: the label of each class (default: the class indices)
    :param input_dtype: the dtype of the input tensor
    :param normalisation: ``range`` [low, high] and optional per-channel ``mean``/``std`` (default: range [0, 1])
    :param metrics: the model's metrics (numbers)
    :param training: the training spec (a dataclass such as ``TrainingSpec``, or a mapping)
    :param data: the data's lineage: ``uri`` (an asset URI), ``digest``, ``description``
    :param version: the model's version (default: the first 12 hex digits of model.pt's SHA-256)
    :param description: a line for people
    :param overwrite: replace an existing model directory
    """
    import torch

    target = Path(directory)
    if target.exists() and not overwrite:
        raise ExportedModelError("already exists; export to a new directory or pass overwrite=True", path=target)
    target.parent.mkdir(parents=True, exist_ok=True)
    if dataclasses.is_dataclass(training) and not isinstance(training, type):
        training = dataclasses.asdict(training)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        state = {k: v.detach().to("cpu").clone() for k, v in model.state_dict().items()}
        torch.save(state, staging / WEIGHTS_NAME)
        sha = file_sha256(staging / WEIGHTS_NAME)
        metadata = ModelMetadata(
            model=name, num_classes=int(num_classes), input_shape=tuple(int(n) for n in input_shape), sha256=sha,
            model_kwargs=dict(model_kwargs or {}), class_labels=tuple(str(c) for c in class_labels or ()),
            input_dtype=input_dtype, normalisation=dict(normalisation or {"range": [0.0, 1.0]}),
            metrics=dict(metrics or {}), training=dict(training or {}), data=dict(data or {}),
            version=version or sha[:12], created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            description=description,
        )
        # what a reader would refuse is refused before anything is in place
        ModelMetadata.from_json(json.loads(json.dumps(metadata.to_json())), path=target / METADATA_NAME)
        with open(staging / METADATA_NAME, "w") as out:
            json.dump(metadata.to_json(), out, indent=2, sort_keys=True)
            out.flush()
            os.fsync(out.fileno())
        if target.exists():  # overwrite: move the old one aside first, so the rename below cannot fail half-way
            old = target.with_name(f".{target.name}.old-{os.getpid()}")
            os.replace(target, old)
            os.replace(staging, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def read_metadata(directory: str | Path) -> ModelMetadata:
    """Read and check a model directory's ``model.json`` (torch is not needed); raise :class:`ExportedModelError`.

    :param directory: the model directory
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise ExportedModelError("no such model directory; export a model there with save_model()", path=directory)
    path = directory / METADATA_NAME
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ExportedModelError("is missing: this is not an exported model directory", path=path) from None
    except (OSError, UnicodeDecodeError) as err:
        raise ExportedModelError(f"cannot be read ({err})", path=path) from err
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise ExportedModelError(f"is not valid JSON (line {err.lineno}, column {err.colno}: {err.msg})",
                                 path=path) from None
    return ModelMetadata.from_json(data, path=path)


def verify_files(directory: str | Path) -> ModelMetadata:
    """Check a model directory's ``model.json`` and that ``model.pt`` has the SHA-256 it records (torch is not
    needed); return the metadata or raise :class:`ExportedModelError` naming the file.

    :param directory: the model directory
    """
    directory = Path(directory)
    metadata = read_metadata(directory)
    weights = directory / WEIGHTS_NAME
    if not weights.is_file():
        raise ExportedModelError("is missing: model.json is there but not its weights", path=weights)
    actual = file_sha256(weights)
    if actual != metadata.sha256:
        raise ExportedModelError(f"has SHA-256 {actual}, but model.json says {metadata.sha256}: the file was changed "
                                 "or truncated after export; export the model again", path=weights)
    return metadata


def load_model(directory: str | Path, device: str = "cpu") -> tuple[nn.Module, ModelMetadata]:
    """Load an exported model in eval mode, checking its checksum and architecture; return it and its metadata.

    :param directory: the model directory
    :param device: where to put the model
    """
    import torch

    from airflow_cloud_paas.services.training.errors import TrainingConfigError
    from airflow_cloud_paas.services.training.models import build_model

    directory = Path(directory)
    metadata = verify_files(directory)
    weights = directory / WEIGHTS_NAME
    try:
        model = build_model(metadata.model, metadata.num_classes, **metadata.model_kwargs)
    except TrainingConfigError as err:
        raise ExportedModelError(f"key '{err.field or 'model'}': {err.message}",
                                 path=directory / METADATA_NAME) from err
    except TypeError as err:  # an unknown keyword in model_kwargs
        raise ExportedModelError(f"key 'model_kwargs' does not fit build_model('{metadata.model}'): {err}",
                                 path=directory / METADATA_NAME) from err
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises RuntimeError, pickle or zipfile errors on a foreign file
        raise ExportedModelError(f"cannot be read as a state dict ({type(err).__name__}: {err})",
                                 path=weights) from err
    if not isinstance(state, dict):
        raise ExportedModelError(f"holds a {type(state).__name__}, not a state dict", path=weights)
    try:
        model.load_state_dict(state)
    except RuntimeError as err:  # missing or unexpected keys, size mismatches: torch lists them all
        detail = " ".join(str(err).split())
        raise ExportedModelError(f"does not fit {metadata.model} with {metadata.num_classes} classes and "
                                 f"{metadata.model_kwargs or 'default options'}: {detail[:600]}", path=weights) from err
    return model.to(device).eval(), metadata
