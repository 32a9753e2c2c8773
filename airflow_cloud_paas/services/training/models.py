"""Models the training service builds by name: a small CNN for 8x8 digits, an MLP, and torchvision's ResNets."""

from __future__ import annotations

import importlib.util
import math

import torch
from torch import nn

from airflow_cloud_paas.services.training.errors import TrainingConfigError

#: the names :func:`build_model` knows; the ResNets need torchvision
MODEL_NAMES = ("digits-cnn", "mlp", "resnet18", "resnet50")


class DigitsCNN(nn.Module):
    """Classify small single-channel images (8x8 digits) with two conv blocks and a linear head.

    :param num_classes: the number of classes
    :param in_channels: the channels of the input images
    :param image_size: the side of the (square) input images; a multiple of 2
    :param width: the channels of the first conv block (the second has twice as many)
    :param dropout: the dropout probability before the head
    """

    def __init__(
        self, num_classes: int = 10, in_channels: int = 1, image_size: int = 8, width: int = 32, dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.BatchNorm2d(2 * width), nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
        )
        self.head = nn.Sequential(
            nn.Flatten(), nn.Dropout(dropout), nn.Linear(2 * width * (image_size // 2) ** 2, 128),
            nn.ReLU(inplace=True), nn.Linear(128, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the class logits of a batch of images.

        :param x: images, N x C x H x W
        """
        return self.head(self.features(x))


class MLP(nn.Module):
    """Classify flattened inputs with one hidden layer.

    :param num_classes: the number of classes
    :param input_size: the number of input features (C * H * W for images)
    :param hidden: the width of the hidden layer
    """

    def __init__(self, num_classes: int = 10, input_size: int = 64, hidden: int = 128) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(), nn.Linear(input_size, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the class logits of a batch.

        :param x: inputs, N x ... (flattened to N x input_size)
        """
        return self.net(x)


def torchvision_available() -> bool:
    """Return whether torchvision can be imported here (the ResNets need it)."""
    return importlib.util.find_spec("torchvision") is not None


def build_model(
    name: str, num_classes: int = 10, *, in_channels: int = 1, image_size: int = 8, hidden: int = 128,
) -> nn.Module:
    """Build an untrained model by name; no weights are downloaded.

    :param name: one of :data:`MODEL_NAMES`
    :param num_classes: the number of classes
    :param in_channels: the channels of the input images (a ResNet's first conv is replaced when not 3)
    :param image_size: the side of the square input images (digits-cnn and mlp size their layers by it)
    :param hidden: the hidden width of the mlp
    """
    if not isinstance(num_classes, int) or num_classes < 2:
        raise TrainingConfigError("must be an integer >= 2", field="num_classes",
                                  value=num_classes)
    if name == "digits-cnn":
        if image_size % 2:
            raise TrainingConfigError("digits-cnn needs an even image size", field="image_size",
                                      value=image_size)
        return DigitsCNN(num_classes, in_channels=in_channels, image_size=image_size)
    if name == "mlp":
        return MLP(num_classes, input_size=in_channels * image_size * image_size, hidden=hidden)
    if name in ("resnet18", "resnet50"):
        if not torchvision_available():
            raise TrainingConfigError(
                f"{name} needs torchvision, which is not installed here: install the torchvision build that matches "
                f"torch {torch.__version__}, or use digits-cnn or mlp", field="model", value=name)
        import torchvision

        model = getattr(torchvision.models, name)(weights=None, num_classes=num_classes)
        if in_channels != 3:
            model.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        return model
    raise TrainingConfigError(f"unknown model {name!r}; choose one of {', '.join(MODEL_NAMES)}", field="model",
                              value=name)


def count_parameters(model: nn.Module) -> int:
    """Return the number of trainable parameters of a model.

    :param model: the model
    """
    return sum(math.prod(p.shape) for p in model.parameters() if p.requires_grad)
