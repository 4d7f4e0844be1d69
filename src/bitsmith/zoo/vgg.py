"""VGG-Small, the 6-conv CIFAR network of low-bit papers (LQ-Nets), with an optional width multiplier."""

from __future__ import annotations

import torch
from torch import nn

from bitsmith.errors import ConfigError
from bitsmith.zoo._init import init_weights
from bitsmith.zoo._registry import register_model

_STAGES = (128, 256, 512)


class VGGSmall(nn.Module):
    """Three stages of (conv3x3-BN-ReLU) x 2 then max-pool 2; the pooled map is flattened into one linear.

    The classifier reads the whole ``(H // 8) x (W // 8)`` map, as in the paper (8192 inputs at 32x32,
    width 1): any input of at least 8x8 leaves a map of at least 1x1, so no adaptive pooling is needed.
    """

    def __init__(self, num_classes: int, in_channels: int, image_size: tuple[int, int], width: float) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        for stage_channels in _STAGES:
            out = max(1, round(stage_channels * width))
            for _ in range(2):
                layers += [nn.Conv2d(channels, out, 3, padding=1, bias=False), nn.BatchNorm2d(out), nn.ReLU()]
                channels = out
            layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        self.flatten = nn.Flatten()
        height, width_px = image_size
        self.classifier = nn.Linear(channels * (height // 8) * (width_px // 8), num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits for a batch of images."""
        return self.classifier(self.flatten(self.features(x)))


@register_model(
    "vgg_small",
    "VGG-Small (LQ-Nets): 2x conv128, pool, 2x conv256, pool, 2x conv512, pool, linear; BN+ReLU after convs",
    min_image_size=8,
)
def vgg_small(
    num_classes: int, in_channels: int, image_size: tuple[int, int], *, width: float = 1.0
) -> nn.Module:
    """Build VGG-Small; ``width`` multiplies every conv's channel count (rounded, at least 1)."""
    if not 0 < width <= 16:
        raise ConfigError(f"option width of vgg_small must be in (0, 16], got {width!r}")
    model = VGGSmall(num_classes, in_channels, image_size, width)
    init_weights(model)
    return model
