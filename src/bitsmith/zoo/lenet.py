"""LeNet-5 exactly as the benchmark protocol's reference model (no BatchNorm)."""

from __future__ import annotations

import torch
from torch import nn

from bitsmith.zoo._init import init_weights
from bitsmith.zoo._registry import register_model


class LeNet5(nn.Module):
    """conv5x5 pad 2 ->6, ReLU, pool 2; conv5x5 pad 2 ->16, ReLU, pool 2; flatten; 120, ReLU; 84, ReLU; out.

    The flatten width is ``16 * (H // 4) * (W // 4)``: 256 at 16x16, 784 at 28x28, 1024 at 32x32.
    """

    def __init__(self, num_classes: int, in_channels: int, image_size: tuple[int, int]) -> None:
        super().__init__()
        height, width = image_size
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 6, kernel_size=5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(6, 16, kernel_size=5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.flatten = nn.Flatten()
        self.classifier = nn.Sequential(
            nn.Linear(16 * (height // 4) * (width // 4), 120),
            nn.ReLU(),
            nn.Linear(120, 84),
            nn.ReLU(),
            nn.Linear(84, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits for a batch of images."""
        return self.classifier(self.flatten(self.features(x)))


@register_model(
    "lenet5",
    "LeNet-5, the protocol's reference: 2 conv + 3 linear, ReLU, max-pool, no BatchNorm",
    min_image_size=4,
)
def lenet5(num_classes: int, in_channels: int, image_size: tuple[int, int]) -> nn.Module:
    """Build the protocol's LeNet-5 for the given input size."""
    model = LeNet5(num_classes, in_channels, image_size)
    init_weights(model)
    return model
