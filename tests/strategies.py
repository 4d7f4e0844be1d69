"""Hypothesis strategies shared by the property tests: random small CNNs (conv, BatchNorm, ReLU, pooling,
residual adds, linear heads) with random channels, kernel sizes, strides, padding and input sizes, each knowing
the hand count of its layers' MACs; and the example budget of a property test.

``BITSMITH_PROPERTY_EXAMPLES=N`` raises every property test built with :func:`examples` to N examples (the long
run of docs/RELIABILITY.md); unset, each test runs its own modest default.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from torch import nn

KERNELS = (1, 3, 5)


def examples(default: int) -> settings:
    """Hypothesis settings: ``default`` examples (or ``BITSMITH_PROPERTY_EXAMPLES``), no deadline."""
    count = int(os.environ.get("BITSMITH_PROPERTY_EXAMPLES") or default)
    return settings(max_examples=count, deadline=None, derandomize=False,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.function_scoped_fixture])


@dataclass(frozen=True)
class Block:
    """One stage of a random CNN: ``conv`` (conv, optional BN, ReLU), ``pool`` (2x2 max or average) or ``res``
    (two convs and a skip connection, a 1x1 projection when the stride or width changes, then add and ReLU)."""

    kind: str
    channels: int = 0
    kernel: int = 3
    stride: int = 1
    padded: bool = True
    bn: bool = True
    bias: bool = False
    pool: str = "max"


@dataclass(frozen=True)
class CNNSpec:
    """A random CNN: input shape, stages, hidden width of the head (0: one linear layer) and classes."""

    in_channels: int
    size: tuple[int, int]
    blocks: tuple[Block, ...]
    hidden: int
    classes: int

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one input."""
        return (self.in_channels, *self.size)


def _out(size: int, kernel: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel) // stride + 1


class _Residual(nn.Module):
    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, bn: bool) -> None:
        super().__init__()
        pad = kernel // 2
        self.conv1 = nn.Conv2d(c_in, c_out, kernel, stride, pad, bias=not bn)
        self.bn1 = nn.BatchNorm2d(c_out) if bn else nn.Identity()
        self.conv2 = nn.Conv2d(c_out, c_out, kernel, 1, pad, bias=not bn)
        self.bn2 = nn.BatchNorm2d(c_out) if bn else nn.Identity()
        self.proj = nn.Conv2d(c_in, c_out, 1, stride, bias=False) if (stride != 1 or c_in != c_out) else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
        skip = x if self.proj is None else self.proj(x)
        return torch.relu(y + skip)


class RandomCNN(nn.Module):
    """The CNN a :class:`CNNSpec` describes. ``macs`` maps each conv/linear (in forward order) to its hand-counted
    multiply-accumulates per sample: ``out_h * out_w * out_c * in_c / groups * k * k``, or ``in * out``."""

    def __init__(self, spec: CNNSpec) -> None:
        super().__init__()
        self.spec = spec
        self.macs: dict[str, int] = {}
        c, (h, w) = spec.in_channels, spec.size
        layers: list[nn.Module] = []
        for block in spec.blocks:
            name = f"features.{len(layers)}"
            if block.kind == "pool":
                layers.append(nn.MaxPool2d(2) if block.pool == "max" else nn.AvgPool2d(2))
                h, w = h // 2, w // 2
            elif block.kind == "res":
                k, s = block.kernel, block.stride
                res = _Residual(c, block.channels, k, s, block.bn)
                h2, w2 = _out(h, k, s, k // 2), _out(w, k, s, k // 2)
                self.macs[f"{name}.conv1"] = h2 * w2 * block.channels * c * k * k
                self.macs[f"{name}.conv2"] = h2 * w2 * block.channels * block.channels * k * k
                if res.proj is not None:
                    self.macs[f"{name}.proj"] = h2 * w2 * block.channels * c
                layers.append(res)
                c, h, w = block.channels, h2, w2
            else:
                k, s, pad = block.kernel, block.stride, (block.kernel // 2 if block.padded else 0)
                h2, w2 = _out(h, k, s, pad), _out(w, k, s, pad)
                self.macs[name] = h2 * w2 * block.channels * c * k * k
                layers.append(nn.Conv2d(c, block.channels, k, s, pad, bias=block.bias))
                if block.bn:
                    layers.append(nn.BatchNorm2d(block.channels))
                layers.append(nn.ReLU())
                c, h, w = block.channels, h2, w2
        self.features = nn.Sequential(*layers)
        self.flatten = nn.Flatten()
        flat = c * h * w
        if spec.hidden:
            self.head = nn.Sequential(nn.Linear(flat, spec.hidden), nn.ReLU(), nn.Linear(spec.hidden, spec.classes))
            self.macs["head.0"], self.macs["head.2"] = flat * spec.hidden, spec.hidden * spec.classes
        else:
            self.head = nn.Sequential(nn.Linear(flat, spec.classes))
            self.macs["head.0"] = flat * spec.classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.flatten(self.features(x)))


@st.composite
def cnn_specs(draw: st.DrawFn, max_blocks: int = 4, max_size: int = 16) -> CNNSpec:
    """A random CNNSpec whose every stage keeps the feature map at least 1x1."""
    in_channels = draw(st.integers(1, 3))
    h, w = draw(st.integers(4, max_size)), draw(st.integers(4, max_size))
    size = (h, w)
    blocks = []
    for _ in range(draw(st.integers(1, max_blocks))):
        kind = draw(st.sampled_from(["conv", "conv", "pool", "res"]))
        if kind == "pool":
            if min(h, w) < 2:
                continue
            blocks.append(Block("pool", pool=draw(st.sampled_from(["max", "avg"]))))
            h, w = h // 2, w // 2
            continue
        kernel, stride = draw(st.sampled_from(KERNELS)), draw(st.integers(1, 2))
        padded = kind == "res" or draw(st.booleans())
        pad = kernel // 2 if padded else 0
        if min(_out(h, kernel, stride, pad), _out(w, kernel, stride, pad)) < 1:
            continue
        blocks.append(Block(kind, draw(st.integers(1, 8)), kernel, stride, padded, draw(st.booleans()),
                            draw(st.booleans())))
        h, w = _out(h, kernel, stride, pad), _out(w, kernel, stride, pad)
    if not any(b.kind != "pool" for b in blocks):
        blocks.append(Block("conv", draw(st.integers(1, 8)), 1, 1))
    return CNNSpec(in_channels, size, tuple(blocks), draw(st.sampled_from([0, 8, 16])), draw(st.integers(2, 10)))


def build(spec: CNNSpec, seed: int = 0) -> RandomCNN:
    """The model of ``spec`` with seeded weights and BatchNorm statistics from two random batches (so BN is not
    the identity), in eval mode."""
    torch.manual_seed(seed)
    model = RandomCNN(spec)
    model.train()
    with torch.no_grad():
        for _ in range(2):
            model(torch.rand(8, *spec.input_shape) * 2 - 0.5)
    return model.eval()
