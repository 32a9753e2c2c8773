"""Data sets for training: scikit-learn's bundled digits, synthetic images, and ``.npz`` files from a folder.

Each returns a :class:`torch.utils.data.TensorDataset` of float32 images N x C x H x W and int64 labels. Nothing is
downloaded: the digits ship inside scikit-learn, which is imported only by :func:`digits_dataset`, and numpy is
imported only by the functions that read files, so that :func:`synthetic_images` needs torch alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
from torch.utils.data import TensorDataset

from airflow_cloud_paas.services.training.errors import TrainingConfigError, TrainingDataError

Split = Literal["train", "holdout", "all"]


def digits_dataset(split: Split = "train", holdout_fraction: float = 0.2, seed: int = 0) -> TensorDataset:
    """Return scikit-learn's 8x8 digits (1797 images, 10 classes) as N x 1 x 8 x 8 floats in [0, 1].

    The split is stratified and depends only on ``holdout_fraction`` and ``seed``, so train and holdout never
    overlap and are the same in every process.

    :param split: ``train``, ``holdout`` (the held-back part) or ``all``
    :param holdout_fraction: the part of each class held back, in (0, 1)
    :param seed: the seed of the split
    """
    if split not in ("train", "holdout", "all"):
        raise TrainingConfigError("must be train, holdout or all", field="split", value=split)
    if not 0.0 < holdout_fraction < 1.0:
        raise TrainingConfigError("must be in (0, 1)", field="holdout_fraction",
                                  value=holdout_fraction)
    import numpy as np
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = torch.from_numpy((digits.images / 16.0).astype(np.float32)).unsqueeze(1)
    y = torch.from_numpy(digits.target.astype(np.int64))
    if split == "all":
        return TensorDataset(x, y)
    train_idx, holdout_idx = train_test_split(
        np.arange(len(y)), test_size=holdout_fraction, random_state=seed, stratify=digits.target)
    idx = torch.from_numpy(np.sort(train_idx if split == "train" else holdout_idx))
    return TensorDataset(x[idx], y[idx])


def synthetic_images(
    n: int, channels: int = 3, size: int = 64, num_classes: int = 10, seed: int = 0,
) -> TensorDataset:
    """Return ``n`` random images whose class shifts their mean, so that a model can learn them.

    :param n: the number of images
    :param channels: the channels of each image
    :param size: the side of each (square) image
    :param num_classes: the number of classes
    :param seed: the seed of the images and labels
    """
    checks = (("n", n, 1), ("channels", channels, 1), ("size", size, 1), ("num_classes", num_classes, 2))
    for name, value, low in checks:
        if not isinstance(value, int) or value < low:
            raise TrainingConfigError(f"must be an integer >= {low}", field=name, value=value)
    gen = torch.Generator().manual_seed(seed)
    prototypes = torch.randn(num_classes, channels, size, size, generator=gen)
    y = torch.randint(0, num_classes, (n,), generator=gen)
    x = torch.randn(n, channels, size, size, generator=gen).add_(prototypes[y], alpha=0.5)
    return TensorDataset(x, y)


def npz_dataset(path: str | Path, num_classes: int | None = None) -> TensorDataset:
    """Load images and labels from a ``.npz`` file, or from every ``*.npz`` of a folder in name order.

    Each file holds ``x``: images N x C x H x W (or N x H x W, one channel), float or uint8 (divided by 255),
    and ``y``: N integer labels in [0, num_classes).

    :param path: a ``.npz`` file or a folder of them
    :param num_classes: when given, labels must lie in [0, num_classes)
    """
    path = Path(path)
    if path.is_dir():
        files = sorted(path.glob("*.npz"))
        if not files:
            raise TrainingDataError("no *.npz file in this folder; put files with arrays x and y there", path=path)
    elif path.is_file():
        files = [path]
    else:
        raise TrainingDataError("no such file or folder; give a .npz file or a folder of them", path=path)
    xs, ys = [], []
    for file in files:
        x, y = _read_npz(file, num_classes)
        if xs and x.shape[1:] != xs[0].shape[1:]:
            raise TrainingDataError(
                f"images are {tuple(x.shape[1:])}, but {files[0].name} has {tuple(xs[0].shape[1:])}; every file "
                f"needs images of one shape", path=file, array="x")
        xs.append(x)
        ys.append(y)
    return TensorDataset(torch.cat(xs), torch.cat(ys))


def _read_npz(file: Path, num_classes: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Return the checked ``x`` (float32, N x C x H x W) and ``y`` (int64, N) of one ``.npz`` file."""
    import numpy as np

    try:
        with np.load(file, allow_pickle=False) as arrays:
            missing = [name for name in ("x", "y") if name not in arrays.files]
            if missing:
                raise TrainingDataError(
                    f"has arrays {sorted(arrays.files)}; save the images as 'x' (N x C x H x W) and the labels as "
                    f"'y' (N), e.g. np.savez(path, x=images, y=labels)", path=file, array=missing[0])
            x, y = arrays["x"], arrays["y"]
    except (OSError, ValueError) as err:  # not a zip, truncated, or object arrays refused without pickle
        raise TrainingDataError(f"cannot be read as .npz ({err}); write it with numpy.savez", path=file) from err
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4:
        raise TrainingDataError(f"expected shape N x C x H x W (or N x H x W), got {x.shape}", path=file, array="x")
    if x.dtype == np.uint8:
        x = x.astype(np.float32) / 255.0
    elif np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float32)
    else:
        raise TrainingDataError(f"expected a float or uint8 dtype, got {x.dtype}", path=file, array="x")
    if y.ndim != 1 or y.shape[0] != x.shape[0]:
        raise TrainingDataError(f"expected shape ({x.shape[0]},): one label per image of x, got {y.shape}",
                                path=file, array="y")
    if not np.issubdtype(y.dtype, np.integer):
        raise TrainingDataError(f"expected integer class labels, got dtype {y.dtype}", path=file, array="y")
    if y.size and (y.min() < 0 or (num_classes is not None and y.max() >= num_classes)):
        upper = num_classes if num_classes is not None else "num_classes"
        raise TrainingDataError(f"labels must lie in [0, {upper}), got [{y.min()}, {y.max()}]", path=file,
                                array="y")
    if not np.isfinite(x).all():
        raise TrainingDataError("holds NaN or infinite values; clean the images first", path=file, array="x")
    return torch.from_numpy(x), torch.from_numpy(y.astype(np.int64))
