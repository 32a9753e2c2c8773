"""DEEPaaS V2 model API over one exported model (``model.pt`` + ``model.json``), named by ``CLOUD_PAAS_MODEL_DIR``.

DEEPaaS loads this module through the ``deepaas.v2.model`` entry point ``cloud-paas`` and calls its functions:
``get_metadata``, ``get_predict_args`` and ``get_train_args`` in the API's process; ``warm``, ``predict`` and
``train`` in its worker processes (spawned, one task at a time each; a cancelled training's worker is killed and
replaced by a fresh one, which loads the model on its first call).

- ``warm`` loads the model through :func:`airflow_cloud_paas.services.training.export.load_model`. A model that
  cannot be loaded stops the server at start-up, its log naming the model directory, the file and what is wrong
  (DEEPaaS would otherwise serve its built-in test model in its place).
- ``predict`` takes ``data``: a PNG or JPEG file (converted to the model's channels and resized to its input), or a
  JSON array of pixel values in the model's input range (C x H x W, or H x W for one channel). Both are decoded
  and checked while the request is parsed, so a wrong shape, type or range is answered by DEEPaaS's argument
  parser (HTTP 422, ``{"data": ["..."]}``) before any worker runs. It returns the predicted label, its index and
  every class's probability.
- ``train`` trains the served architecture afresh on ``dataset`` (scikit-learn's digits by default, or an ``.npz``
  file on the server whose examples fit the served model) through the training service's one run
  (:mod:`airflow_cloud_paas.services.training.job`), exports the result into
  ``$CLOUD_PAAS_TRAINING_DIR/<run>/model`` and returns its holdout metrics and directory. Its other arguments are
  :class:`~airflow_cloud_paas.services.training.engine.TrainingSpec`'s, with its ranges and choices: an
  out-of-range value is answered with 422 naming the argument.
"""

from __future__ import annotations

import functools
import io
import json
import math
import os
import time
import uuid
from pathlib import Path
from typing import Any

import marshmallow
from marshmallow import fields, validate

from airflow_cloud_paas.services.training.export import MODEL_DIR_ENV, RUN_KEY, THREADS_ENV, TRAINING_DIR_ENV

#: the entry point's name: DEEPaaS serves the model at /v2/models/cloud-paas/
NAME = "cloud-paas"
#: the image formats ``data`` may be
IMAGE_FORMATS = ("PNG", "JPEG")

#: what ``predict`` returns; DEEPaaS checks every answer against it
schema = {
    "label": fields.Str(required=True, metadata={"description": "the predicted class's label"}),
    "class_index": fields.Int(required=True, metadata={"description": "the predicted class's index"}),
    "probability": fields.Float(required=True, metadata={"description": "the predicted class's probability"}),
    "probabilities": fields.Dict(keys=fields.Str(), values=fields.Float(), required=True,
                                 metadata={"description": "label -> probability, for every class"}),
    "model": fields.Str(metadata={"description": "the architecture"}),
    "version": fields.Str(metadata={"description": "the model's version"}),
}


def model_dir() -> Path:
    """Return the served model's directory (``CLOUD_PAAS_MODEL_DIR``)."""
    from airflow_cloud_paas.services.training.errors import ExportedModelError

    value = os.environ.get(MODEL_DIR_ENV)
    if not value:
        raise ExportedModelError("is not set: point it at an exported model directory (model.pt and model.json)",
                                 path=f"${MODEL_DIR_ENV}")
    return Path(value)


@functools.cache
def _metadata():
    """Return the served model's metadata (model.json only; read once per process)."""
    from airflow_cloud_paas.services.training.export import read_metadata

    return read_metadata(model_dir())


@functools.cache
def _loaded():
    """Return the served model and its metadata, loaded once per process (checksum and architecture checked)."""
    import torch

    from airflow_cloud_paas.services.training.export import load_model

    threads = os.environ.get(THREADS_ENV)
    if threads:
        torch.set_num_threads(int(threads))
    return load_model(model_dir(), device="cpu")


# ---------------------------------------------------------------------- DEEPaaS's model API
def get_metadata() -> dict[str, Any]:
    """Return the model's description, version and what model.json says (classes, input, metrics, lineage)."""
    meta = _metadata()
    return {
        "description": meta.description or (f"{meta.model} classifier of {meta.num_classes} classes, exported by "
                                             "airflow_cloud_paas"),
        "author": "airflow_cloud_paas",
        "license": "Apache-2.0",
        "version": meta.version,
        "url": "https://github.com/indigo-dc/DEEPaaS",
        "model": meta.model,
        "model_dir": str(model_dir()),
        "num_classes": meta.num_classes,
        "class_labels": list(meta.labels()),
        "input": {"shape": list(meta.input_shape), "dtype": meta.input_dtype, "normalisation": meta.normalisation},
        "metrics": meta.metrics,
        "training": meta.training,
        "data": meta.data,
        "created": meta.created,
        "sha256": meta.sha256,
    }


def warm() -> None:
    """Load the model into this worker; raise ExportedModelError naming the directory, file and reason."""
    model, meta = _loaded()
    del model, meta


class ImageOrPixels(fields.Field):
    """An input image: an uploaded PNG/JPEG file, or a JSON array of pixel values; deserialized to a C x H x W array.

    It reads the served model's input shape and range from model.json, so that a wrong input is refused while the
    request is parsed (HTTP 422 naming the argument), not in a worker.
    """

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        import numpy as np

        meta = _metadata()
        shape = tuple(meta.input_shape)
        low, high = meta.normalisation.get("range", [0.0, 1.0])
        if hasattr(value, "file") and hasattr(value, "filename"):  # aiohttp's FileField: a multipart upload
            return _decode_image(value.file.read(), shape, low, high, name=value.filename)
        if isinstance(value, bytes | bytearray):
            return _decode_image(bytes(value), shape, low, high, name="(body)")
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError:
                raise marshmallow.ValidationError(
                    "expected a PNG or JPEG file, or a JSON array of pixel values; got text that is not JSON") from None
        if not isinstance(value, list):
            raise marshmallow.ValidationError(f"expected a PNG or JPEG file, or a JSON array of pixel values; got "
                                              f"{type(value).__name__}")
        try:
            array = np.asarray(value, dtype=np.float32)
        except (ValueError, TypeError):
            raise marshmallow.ValidationError("the pixel array is ragged or holds non-numbers; send a C x H x W (or H "
                                              "x W) array of numbers") from None
        if array.shape == shape[1:] and shape[0] == 1:
            array = array[None]
        if array.shape != shape:
            wanted = " x ".join(map(str, shape))
            also = f" (or {' x '.join(map(str, shape[1:]))})" if shape[0] == 1 else ""
            raise marshmallow.ValidationError(f"expected pixel values of shape {wanted}{also}, got "
                                              f"{' x '.join(map(str, array.shape)) or 'a scalar'}")
        if not np.isfinite(array).all() or array.min() < low or array.max() > high:
            raise marshmallow.ValidationError(f"pixel values must be finite numbers in [{low}, {high}] (the model's "
                                              f"input range), got [{array.min()}, {array.max()}]")
        return array


def _decode_image(content: bytes, shape: tuple[int, ...], low: float, high: float, *, name: str) -> Any:
    """Return an image file as a C x H x W float32 array in [low, high]: converted, resized and scaled."""
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    try:
        image = Image.open(io.BytesIO(content))
        image.load()
    except (UnidentifiedImageError, OSError) as err:
        raise marshmallow.ValidationError(f"{name!r} is not a readable PNG or JPEG image ({err})") from None
    if image.format not in IMAGE_FORMATS:
        raise marshmallow.ValidationError(f"{name!r} is a {image.format} image; send a PNG or JPEG")
    channels, height, width = shape
    if channels not in (1, 3):
        raise marshmallow.ValidationError(f"this model takes {channels}-channel inputs: send them as a JSON array")
    image = image.convert("L" if channels == 1 else "RGB")
    if image.size != (width, height):
        image = image.resize((width, height), Image.Resampling.BILINEAR)
    array = np.asarray(image, dtype=np.float32) / 255.0
    array = array[None] if channels == 1 else array.transpose(2, 0, 1)
    return (low + array * (high - low)).astype(np.float32)


def get_predict_args() -> dict[str, fields.Field]:
    """Return the predict arguments: ``data`` (an image file or a JSON pixel array) and ``invert``."""
    return {
        "data": ImageOrPixels(required=True, metadata={
            "type": "file",
            "description": "A PNG or JPEG image (converted to the model's channels, resized to its input), or a JSON "
                           "array of pixel values in the model's input range, C x H x W (or H x W for one channel).",
        }),
        "invert": fields.Bool(load_default=False, metadata={
            "description": "Flip the intensities first (dark ink on a light background, as in a photo of paper)."}),
    }


def predict(**kwargs: Any) -> dict[str, Any]:
    """Classify one input; return the label, its index and probability, and every class's probability.

    :param kwargs: ``data`` (a C x H x W array, as :class:`ImageOrPixels` made it) and ``invert``
    """
    import numpy as np
    import torch

    model, meta = _loaded()
    array = np.asarray(kwargs["data"], dtype=np.float32)
    low, high = meta.normalisation.get("range", [0.0, 1.0])
    if kwargs.get("invert"):
        array = (low + high) - array
    tensor = torch.from_numpy(np.ascontiguousarray(array))[None]
    if meta.normalisation.get("mean") is not None:
        mean = torch.tensor(meta.normalisation["mean"], dtype=torch.float32).view(-1, 1, 1)
        std = torch.tensor(meta.normalisation["std"], dtype=torch.float32).view(-1, 1, 1)
        tensor = (tensor - mean) / std
    with torch.inference_mode():
        probabilities = torch.softmax(model(tensor).float(), dim=1)[0].tolist()
    index = max(range(len(probabilities)), key=probabilities.__getitem__)
    labels = meta.labels()
    return {"label": labels[index], "class_index": index, "probability": probabilities[index],
            "probabilities": dict(zip(labels, probabilities, strict=True)), "model": meta.model,
            "version": meta.version}


def _training_fields() -> dict[str, tuple[str, dict[str, Any]]]:
    from airflow_cloud_paas.services.training.engine import TrainingSpec

    return {name: (entry["type"] if isinstance(entry["type"], str) else entry["type"][0], entry)
            for name, entry in TrainingSpec.schema().items()}


def get_train_args() -> dict[str, fields.Field]:
    """Return the data set and TrainingSpec's arguments as DEEPaaS arguments, with their defaults, ranges, choices."""
    args: dict[str, fields.Field] = {
        "dataset": fields.Str(load_default="sklearn:digits", validate=validate.Length(min=1, max=4096), metadata={
            "description": "The data: sklearn:digits, or an .npz file (arrays x and y) on the server, or its "
                           "file:// URI; its examples must fit the served model (input shape and classes)."}),
        RUN_KEY: fields.Str(load_default="", validate=validate.Length(max=200), metadata={
            "description": "An opaque key of who started the training (an Airflow task instance): a retry of that "
                           "task lists the trainings and waits on the one its key names instead of starting "
                           "another. Not used by the training itself."}),
    }
    for name, (kind, entry) in _training_fields().items():
        checks = []
        if "minimum" in entry:
            checks.append(validate.Range(min=entry["minimum"]))
        if "exclusiveMinimum" in entry:
            checks.append(validate.Range(min=entry["exclusiveMinimum"], min_inclusive=False))
        if "enum" in entry:
            checks.append(validate.OneOf(entry["enum"]))
        options: dict[str, Any] = {"validate": checks, "metadata": {"description": entry["description"]},
                                   "allow_none": isinstance(entry["type"], list)}
        if entry["default"] is not None:
            options["load_default"] = entry["default"]
        field_type = {"integer": fields.Int, "number": fields.Float, "string": fields.Str}[kind]
        if kind == "integer":
            options["strict"] = True  # 1.5 is no step count
        args[name] = field_type(**options)
    return args


def train(**kwargs: Any) -> dict[str, Any]:
    """Train the served architecture afresh on a data set (the training service's one run,
    :func:`airflow_cloud_paas.services.training.job.run`); return its holdout metrics and model directory.

    :param kwargs: ``dataset`` and TrainingSpec's arguments
    """
    from airflow_cloud_paas.services.training.engine import evaluate
    from airflow_cloud_paas.services.training.errors import TrainingConfigError
    from airflow_cloud_paas.services.training.export import load_model
    from airflow_cloud_paas.services.training.job import TrainingJob, run
    from airflow_cloud_paas.services.training.sources import DataSource

    meta = _metadata()
    args = {k: v for k, v in kwargs.items() if k in _training_fields()}
    threads = os.environ.get(THREADS_ENV)
    if args.get("num_threads") is None and threads:
        args["num_threads"] = int(threads)
    shape_keys = ("num_classes", "in_channels", "image_size")  # from the data, checked against the served model's
    job = TrainingJob(model=meta.model, dataset=str(kwargs.get("dataset") or "sklearn:digits"),
                      training_args=args, model_name=meta.model,
                      model_options={k: v for k, v in meta.model_kwargs.items() if k not in shape_keys})
    prepared = job.prepare()
    fits = {"num_classes": meta.num_classes, "in_channels": meta.input_shape[0], "image_size": meta.input_shape[-1]}
    if {k: prepared.model_kwargs[k] for k in fits} != fits:
        raise TrainingConfigError(f"its examples must fit the served model ({tuple(meta.input_shape)} inputs, "
                                  f"{meta.num_classes} classes); this data gives {dict(prepared.model_kwargs)}",
                                  field="dataset", value=job.dataset)
    root = Path(os.environ.get(TRAINING_DIR_ENV) or Path.cwd() / "trainings")
    folder = root / f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}"
    result = run(prepared, folder, class_labels=meta.labels(), normalisation=meta.normalisation)
    model, _ = load_model(result["model_dir"])
    holdout = DataSource.parse(job.dataset).load("holdout", holdout_fraction=job.holdout_fraction,
                                                 seed=job.split_seed)
    scores = evaluate(model, holdout, device="cpu")
    metrics = {"holdout_accuracy": scores.accuracy, "holdout_loss": scores.loss, "train_loss": result["loss"],
               "steps": result["step"], "samples_per_s": result["samples_per_s"]}
    return {"model_dir": result["model_dir"], "metrics": {k: v for k, v in metrics.items() if math.isfinite(v)},
            "step": result["step"], "device": result["device"], "version": _version_of(Path(result["model_dir"])),
            "data_uri": result["data_uri"]}


def _version_of(directory: Path) -> str:
    from airflow_cloud_paas.services.training.export import read_metadata

    return read_metadata(directory).version
