"""Model zoo: CNN builders behind a name registry (LeNet-5, VGG-Small, ResNet-20/18, MobileNetV2) and the GHN
architecture search space (``cellnet`` networks, a seeded sampler and fixed held-out splits).

``create_model(name, num_classes, in_channels, image_size, **options)`` builds one; every model uses only
standard torch layers, traces with ``torch.fx`` and carries ``bitsmith_spec`` to be rebuilt from JSON.
"""

from __future__ import annotations

from bitsmith.zoo import lenet, mobilenet, resnet, space, vgg  # noqa: F401  (each module registers its builders)
from bitsmith.zoo._registry import create_model, describe, input_shape, list_models, register_model
from bitsmith.zoo.space import (
    OPS,
    SPACE_VERSION,
    SPLITS,
    ArchSpec,
    CellSpec,
    build_network,
    predefined,
    sample_architecture,
    split,
    train_architecture,
)

__all__ = [
    "OPS", "SPACE_VERSION", "SPLITS", "ArchSpec", "CellSpec", "build_network", "create_model", "describe",
    "input_shape", "list_models", "predefined", "register_model", "sample_architecture", "split",
    "train_architecture",
]
