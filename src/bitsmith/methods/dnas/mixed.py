"""The search-space quantizers: each conv/linear weight and input activation quantized by one of several bit-width
options, chosen per filter (weights, with an optional "pruned" option) or per layer (activations), with the
architecture logits that the search learns."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from bitsmith.quant.quantizers import LSQQuantizer, Quantizer, initialize_on_first_batch, make_quantizer
from bitsmith.quant.ste import _broadcast


class MixedWeightQuantizer(nn.Module):
    """Per-filter choice among weight bit widths (LSQ, one per-channel scale per option) and, with ``prune``, a
    last option that zeroes the filter.

    ``choice[o]`` is filter o's option index (``len(options)`` = pruned); while ``relaxed`` holds a (out, n)
    tensor (straight-through Gumbel samples), the weight is the mixture ``sum_k relaxed[:, k] * Q_k(w)``, so the
    architecture logits get gradients.
    """

    def __init__(self, weight: torch.Tensor, options: Sequence[int], prune: bool, name: str = "") -> None:
        super().__init__()
        out = weight.shape[0]
        self.options = list(options)
        self.prune = bool(prune)
        self.name = name
        self.quantizers = nn.ModuleList(
            LSQQuantizer(b, signed=True, channels=out, role="weight", name=name).to(weight.device)
            for b in self.options)
        for q in self.quantizers:
            q.initialize(weight.detach())
        self.logits = nn.Parameter(torch.zeros(self.num_options, device=weight.device))
        self.register_buffer("choice", torch.full((out,), len(self.options) - 1, dtype=torch.long,
                                                  device=weight.device))
        self.relaxed: torch.Tensor | None = None

    @property
    def num_options(self) -> int:
        """Bit-width options plus the pruned option when pruning is searched."""
        return len(self.options) + int(self.prune)

    @property
    def pruned_index(self) -> int | None:
        """Option index meaning "pruned", or None without pruning."""
        return len(self.options) if self.prune else None

    def probabilities(self) -> torch.Tensor:
        """softmax of the logits: the share of filters the search gives each option."""
        return F.softmax(self.logits, dim=0)

    def kept(self, choice: torch.Tensor) -> torch.Tensor:
        """Which filters of ``choice`` (option indices per filter) exist: all of them without pruning."""
        return choice != self.pruned_index if self.prune else torch.ones_like(choice, dtype=torch.bool)

    def widths(self, choice: torch.Tensor) -> list[int]:
        """Each filter's weight bit width under ``choice``; a pruned filter gets the widest option, a placeholder
        its zero keep flag makes irrelevant (costs and memory count kept filters only)."""
        return [self.options[min(int(k), len(self.options) - 1)] for k in choice]

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        """The weight quantized per filter by its option (pruned filters zero)."""
        if self.relaxed is not None:
            mix = torch.zeros_like(w)
            for k, q in enumerate(self.quantizers):
                mix = mix + _broadcast(self.relaxed[:, k].to(w.dtype), w) * q(w)
            return mix
        out = torch.zeros_like(w)
        for k, q in enumerate(self.quantizers):
            mask = self.choice == k
            if bool(mask.any()):
                out = torch.where(_broadcast(mask, w), q(w), out)
        return out

    # -- what a core quantized layer asks of its weight quantizer (bias quantization in eval mode) -------------
    @property
    def bits(self) -> list[int]:
        """Each filter's weight bit width under the current choice (see :meth:`widths`)."""
        return self.widths(self.choice)

    @property
    def is_passthrough(self) -> bool:
        return False

    @property
    def is_initialized(self) -> bool:
        return all(q.is_initialized for q in self.quantizers)

    def scale_tensor(self) -> torch.Tensor:
        """Each filter's step size under its current option."""
        scales = torch.stack([q.scale_tensor() for q in self.quantizers])
        index = self.choice.clamp(max=len(self.options) - 1)
        return scales.gather(0, index.unsqueeze(0)).squeeze(0)


class MixedActQuantizer(nn.Module):
    """Per-layer choice among input-activation bit widths (one LSQ quantizer per option, all initialised from the
    first training batch so that any option can be evaluated later)."""

    def __init__(self, template: Quantizer, options: Sequence[int], name: str = "") -> None:
        super().__init__()
        self.options = list(options)
        self.name = name
        learnable = bool(getattr(template, "learnable", True))
        self.quantizers = nn.ModuleList(
            make_quantizer("lsq", b, role="activation", signed=template.signed, symmetric=template.symmetric,
                           init=template.init, name=name, learnable=learnable) for b in self.options)
        self.logits = nn.Parameter(torch.zeros(len(self.options)))
        self.register_buffer("choice", torch.tensor(len(self.options) - 1, dtype=torch.long))
        self.relaxed: torch.Tensor | None = None

    def probabilities(self) -> torch.Tensor:
        """softmax of the logits: the probability of each activation width."""
        return F.softmax(self.logits, dim=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` quantized at the chosen width (or the relaxed mixture of all widths)."""
        if self.training:
            for q in self.quantizers:
                initialize_on_first_batch(q, x)
        if self.relaxed is not None:
            mix = torch.zeros_like(x)
            for k, q in enumerate(self.quantizers):
                mix = mix + self.relaxed[k].to(x.dtype) * q(x)
            return mix
        return self.quantizers[int(self.choice)](x)

    @property
    def chosen(self) -> Quantizer:
        """The quantizer of the current choice."""
        return self.quantizers[int(self.choice)]  # type: ignore[return-value]

    @property
    def bits(self) -> int:
        return self.options[int(self.choice)]

    @property
    def signed(self) -> bool | None:
        return self.chosen.signed

    @property
    def is_passthrough(self) -> bool:
        return False

    @property
    def is_initialized(self) -> bool:
        return self.chosen.is_initialized

    def scale_tensor(self) -> torch.Tensor:
        return self.chosen.scale_tensor()
