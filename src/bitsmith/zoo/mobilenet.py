"""MobileNetV2 adapted to small (CIFAR-size) images, with depthwise convs and ReLU6."""

from __future__ import annotations

import torch
from torch import nn

from bitsmith.errors import ConfigError
from bitsmith.zoo._init import init_weights
from bitsmith.zoo._registry import register_model

# (expansion t, output channels c, repeats n, first stride s) of Sandler et al., Table 2. The ImageNet net
# downsamples at the stem and at the 24-channel stage too; like common CIFAR ports, this one keeps both at
# stride 1, so a 32x32 input reaches the head at 4x4.
_TABLE = (
    (1, 16, 1, 1),
    (6, 24, 2, 1),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
_STEM_CHANNELS = 32
_HEAD_CHANNELS = 1280


def _scaled(channels: int, width: float, divisor: int = 8) -> int:
    """``channels * width`` rounded to the nearest multiple of ``divisor``, never below ``divisor`` and never
    more than 10 % under the unrounded value (the paper's channel rounding)."""
    target = channels * width
    rounded = max(divisor, int(target + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * target:
        rounded += divisor
    return rounded


def _conv_bn(in_channels: int, out_channels: int, kernel: int, stride: int = 1, groups: int = 1,
             relu6: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(in_channels, out_channels, kernel, stride=stride, padding=kernel // 2, groups=groups,
                  bias=False),
        nn.BatchNorm2d(out_channels),
    ]
    if relu6:
        layers.append(nn.ReLU6())
    return nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    """1x1 expansion (skipped when t = 1), 3x3 depthwise, linear 1x1 projection; residual add when the block
    keeps both stride 1 and channel count."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = in_channels * expansion
        self.expand = _conv_bn(in_channels, hidden, 1) if expansion != 1 else None
        self.depthwise = _conv_bn(hidden, hidden, 3, stride=stride, groups=hidden)
        self.project = _conv_bn(hidden, out_channels, 1, relu6=False)
        self.use_residual = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Block output, plus ``x`` when the block is residual."""
        out = x if self.expand is None else self.expand(x)
        out = self.project(self.depthwise(out))
        if self.use_residual:
            out = out + x
        return out


class MobileNetV2(nn.Module):
    """Stem conv3x3 (stride 1) -> inverted-residual blocks -> 1x1 head conv -> global average pool -> dropout
    -> linear. Global pooling makes any input size work."""

    def __init__(self, num_classes: int, in_channels: int, width: float, dropout: float) -> None:
        super().__init__()
        channels = _scaled(_STEM_CHANNELS, width)
        self.stem = _conv_bn(in_channels, channels, 3)
        blocks = []
        for expansion, out, repeats, stride in _TABLE:
            out = _scaled(out, width)
            for index in range(repeats):
                blocks.append(InvertedResidual(channels, out, stride if index == 0 else 1, expansion))
                channels = out
        self.blocks = nn.Sequential(*blocks)
        head = _scaled(_HEAD_CHANNELS, width) if width > 1.0 else _HEAD_CHANNELS
        self.head = _conv_bn(channels, head, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(head, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits for a batch of images."""
        out = self.head(self.blocks(self.stem(x)))
        return self.classifier(self.flatten(self.pool(out)))


@register_model(
    "mobilenetv2",
    "MobileNetV2, CIFAR variant: stride-1 stem conv 32, inverted residuals (ReLU6, depthwise), 1280 head",
    min_image_size=8,
)
def mobilenetv2(num_classes: int, in_channels: int, image_size: tuple[int, int], *, width: float = 1.0,
                dropout: float = 0.2) -> nn.Module:
    """Build MobileNetV2; ``width`` scales channels (multiples of 8), ``dropout`` precedes the last linear.

    About 2.24 M parameters at 10 classes: the paper's 3.5 M less most of the 1280x1000 ImageNet classifier.
    """
    if not 0 < width <= 4:
        raise ConfigError(f"option width of mobilenetv2 must be in (0, 4], got {width!r}")
    if not 0 <= dropout < 1:
        raise ConfigError(f"option dropout of mobilenetv2 must be in [0, 1), got {dropout!r}")
    model = MobileNetV2(num_classes, in_channels, width, dropout)
    init_weights(model)
    return model
