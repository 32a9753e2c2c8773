"""Where a training's data comes from: a named built-in set, an ``.npz`` file, or a ``file://`` Asset URI.

A source is a string a DAG can template: ``sklearn:digits`` (scikit-learn's bundled 8x8 digits), a local path to an
``.npz`` file with ``x`` (N x C x H x W or N x H x W) and ``y`` arrays, or that file's ``file://`` URI (an Asset's).
Every source splits the same way in every process: a stratified-free, seeded permutation holds back
``holdout_fraction`` of the examples, so evaluation never sees a training example.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

import torch
from torch.utils.data import Subset, TensorDataset

from airflow_cloud_paas.services.training.data import Split, digits_dataset, npz_dataset
from airflow_cloud_paas.services.training.errors import TrainingConfigError, TrainingDataError

#: the built-in data sets, by name
BUILTIN = ("sklearn:digits",)


@dataclass(frozen=True)
class DataSource:
    """A resolved data source.

    :param uri: what the source is, as lineage records it (``sklearn:digits`` or a ``file://`` URI)
    :param path: the local file, for a file source
    """

    uri: str
    path: Path | None = None

    @classmethod
    def parse(cls, source: str) -> DataSource:
        """Read a source string; raise :class:`TrainingConfigError` naming it when it is none of the forms.

        :param source: ``sklearn:digits``, a path to an ``.npz`` file, or its ``file://`` URI
        """
        if not isinstance(source, str) or not source.strip():
            raise TrainingConfigError("a data source: sklearn:digits, an .npz file or its file:// URI",
                                      field="dataset", value=source)
        source = source.strip()
        if source in BUILTIN:
            return cls(uri=source)
        if ":" in source.split("/")[0] and not source.startswith("file:"):
            raise TrainingConfigError(f"unknown data source scheme; use one of {', '.join(BUILTIN)}, a local .npz "
                                      "path or a file:// URI", field="dataset", value=source)
        path = Path(unquote(urlsplit(source).path)) if source.startswith("file:") else Path(source)
        if path.suffix != ".npz":
            raise TrainingDataError("a data file must be an .npz with arrays x and y", path=path)
        if not path.is_file():
            raise TrainingDataError("no such data file", path=path)
        return cls(uri=path.resolve().as_uri(), path=path.resolve())

    def digest(self) -> str:
        """Return the data's SHA-256 (of the file; of the name for a built-in set, which its package pins)."""
        from airflow_cloud_paas.services.training.export import file_sha256

        if self.path is None:
            return hashlib.sha256(self.uri.encode()).hexdigest()
        return file_sha256(self.path)

    def load(self, split: Split, *, holdout_fraction: float = 0.2, seed: int = 0) -> TensorDataset | Subset:
        """Return the examples of a split (``train``, ``holdout`` or ``all``).

        :param split: which part
        :param holdout_fraction: the part held back for evaluation, in (0, 1)
        :param seed: the seed of the split
        """
        if self.path is None:
            return digits_dataset(split, holdout_fraction=holdout_fraction, seed=seed)
        if not 0.0 < holdout_fraction < 1.0:
            raise TrainingConfigError("must be in (0, 1)", field="holdout_fraction",
                                      value=holdout_fraction)
        data = npz_dataset(self.path)
        if split == "all":
            return data
        order = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))
        held = max(1, round(len(data) * holdout_fraction))
        if held >= len(data):
            raise TrainingDataError(f"{len(data)} example(s) leave none to train on after holding back "
                                    f"{holdout_fraction:.0%}", path=self.path)
        idx = order[:held] if split == "holdout" else order[held:]
        return Subset(data, sorted(idx.tolist()))


def shape_of(dataset: TensorDataset | Subset) -> tuple[int, int, int]:
    """Return (channels, height, width) of a data set's images, and check they are square.

    :param dataset: the data set
    """
    image = dataset[0][0]
    if image.dim() != 3 or image.shape[1] != image.shape[2]:
        raise TrainingDataError(f"images must be C x H x W with H == W, got {tuple(image.shape)}", array="x")
    return int(image.shape[0]), int(image.shape[1]), int(image.shape[2])


def classes_of(dataset: TensorDataset | Subset) -> int:
    """Return the number of classes (the largest label + 1).

    :param dataset: the data set
    """
    base = dataset.dataset if isinstance(dataset, Subset) else dataset
    return int(base.tensors[1].max().item()) + 1


def write_sample_image(dataset: TensorDataset | Subset, index: int, path: str | Path) -> tuple[Path, int]:
    """Write one example of a data set as a grey-scale (or RGB) PNG; return the file and its label.

    The pixels are scaled from [0, 1] to 0-255, as a served model's predict reads an image file back.

    :param dataset: images in [0, 1], C x H x W
    :param index: the example
    :param path: the PNG to write
    """
    from PIL import Image

    image, label = dataset[index]
    pixels = (image.clamp(0, 1) * 255).round().to(torch.uint8)
    array = pixels[0].numpy() if pixels.shape[0] == 1 else pixels.permute(1, 2, 0).numpy()
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(target, format="PNG")
    return target, int(label)
