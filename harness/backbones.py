"""Backbones shared by every method (registered in ``harness.catalog``): images N×C×H×W → features."""

from __future__ import annotations

import torch
from torch import nn

from harness.catalog import BACKBONES
from harness.libs import learn2learn


def conv4(channels: int, image_size: int) -> nn.Module:
    """The literature's Conv-4: 4 × (3×3 conv 64, BN, ReLU, 2×2 max-pool); 64-d at 28 px, 1600-d at 84 px."""
    return learn2learn().vision.models.CNN4Backbone(hidden_size=64, layers=4, channels=channels, max_pool=True)


def resnet12(channels: int, image_size: int) -> nn.Module:
    """ResNet-12 (MetaOptNet widths 64-160-320-640, DropBlock), average-pooled to 640-d."""
    return learn2learn().vision.models.ResNet12Backbone(channels=channels, avg_pool=True, wider=True)


def resnet18(channels: int, image_size: int) -> nn.Module:
    """torchvision ResNet-18 (512-d); for images under 64 px the stem is a 3×3 stride-1 conv without max-pool."""
    from torchvision.models import resnet18 as tv_resnet18

    model = tv_resnet18(num_classes=1)
    if image_size < 64 or channels != 3:
        stride, kernel = (1, 3) if image_size < 64 else (2, 7)
        model.conv1 = nn.Conv2d(channels, 64, kernel, stride, kernel // 2, bias=False)
    if image_size < 64:
        model.maxpool = nn.Identity()
    model.fc = nn.Identity()
    return model


def backbone(name: str, channels: int, image_size: int) -> nn.Module:
    """The registered backbone ``name`` for inputs of ``channels`` × ``image_size``²."""
    return BACKBONES.get(name).load()(channels, image_size)


def build_backbone(name: str, channels: int, image_size: int) -> tuple[nn.Module, int]:
    """(backbone, feature dimension) for inputs of ``channels`` × ``image_size``²."""
    model = backbone(name, channels, image_size)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        dim = model(torch.zeros(2, channels, image_size, image_size)).flatten(1).shape[1]
    model.train(was_training)
    return model, dim


def feature_dims(name: str, channels: int, image_size: int, sizes: tuple[int, ...]) -> list[int]:
    """The feature dimension of the backbone made for ``image_size`` on inputs of each of ``sizes`` px,
    on torch's meta device (no memory, no random numbers drawn); RuntimeError where a size is too small."""
    with torch.device("meta"):
        model = backbone(name, channels, image_size).eval()
        return [model(torch.zeros(1, channels, size, size)).flatten(1).shape[1] for size in sizes]
