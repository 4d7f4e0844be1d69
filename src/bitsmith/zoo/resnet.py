"""CIFAR-style ResNets (ResNet-20 and ResNet-18) built from BasicBlocks with 1x1 projection shortcuts."""

from __future__ import annotations

import torch
from torch import nn

from bitsmith.errors import ConfigError
from bitsmith.zoo._init import init_weights
from bitsmith.zoo._registry import register_model


class BasicBlock(nn.Module):
    """Two conv3x3-BN layers with ReLU plus a shortcut: identity, or 1x1 conv + BN where the shape changes
    (option B)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut: nn.Sequential | None = None
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )
        self.relu2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Residual output ``relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))``."""
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = x if self.shortcut is None else self.shortcut(x)
        out = out + shortcut
        return self.relu2(out)


class CifarResNet(nn.Module):
    """3x3 stem conv (stride 1, no max-pool), stages of BasicBlocks (stride 2 from the second stage on),
    global average pooling and one linear layer, so any input size works."""

    def __init__(self, num_classes: int, in_channels: int, stage_channels: tuple[int, ...],
                 blocks_per_stage: int) -> None:
        super().__init__()
        stem = stage_channels[0]
        self.conv1 = nn.Conv2d(in_channels, stem, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        self.relu = nn.ReLU()
        channels = stem
        for index, out in enumerate(stage_channels):
            blocks = []
            for block in range(blocks_per_stage):
                stride = 2 if index > 0 and block == 0 else 1
                blocks.append(BasicBlock(channels, out, stride))
                channels = out
            self.add_module(f"layer{index + 1}", nn.Sequential(*blocks))
        self.num_stages = len(stage_channels)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits for a batch of images."""
        out = self.relu(self.bn1(self.conv1(x)))
        for index in range(self.num_stages):
            out = getattr(self, f"layer{index + 1}")(out)
        return self.fc(self.flatten(self.avgpool(out)))


def _scaled(channels: tuple[int, ...], width: float) -> tuple[int, ...]:
    """Stage channels times ``width`` (rounded, at least 1); refuses a width that is not positive."""
    if not width > 0:
        raise ConfigError(f"option width must be positive, got {width!r}")
    return tuple(max(1, round(c * width)) for c in channels)


@register_model(
    "resnet20",
    "ResNet-20 (He et al., CIFAR): 3 stages x 3 BasicBlocks, 16/32/64 channels, 1x1 projection shortcuts",
    min_image_size=4,
)
def resnet20(num_classes: int, in_channels: int, image_size: tuple[int, int], *, width: float = 1.0) -> nn.Module:
    """Build ResNet-20: about 0.27 M parameters at 10 classes (272 474 with the projection shortcuts);
    ``width`` scales every stage's channels (a narrower or wider network)."""
    model = CifarResNet(num_classes, in_channels, _scaled((16, 32, 64), width), 3)
    init_weights(model)
    return model


@register_model(
    "resnet18",
    "ResNet-18, CIFAR variant: 3x3 stem, no max-pool, 4 stages x 2 BasicBlocks, 64/128/256/512 channels",
    min_image_size=8,
)
def resnet18(num_classes: int, in_channels: int, image_size: tuple[int, int], *, width: float = 1.0) -> nn.Module:
    """Build the CIFAR ResNet-18: about 11.17 M parameters at 10 classes; ``width`` scales every stage's
    channels."""
    model = CifarResNet(num_classes, in_channels, _scaled((64, 128, 256, 512), width), 2)
    init_weights(model)
    return model
