"""The DNAS search space of a model: which layers search what, the expected (differentiable) and exact BOPs of a
configuration, sampling and relaxing configurations, and a configuration as ``bits.json``."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from bitsmith.cost import DifferentiableCost
from bitsmith.cost.bits import BitsAssignment, LayerBits
from bitsmith.errors import ConfigError
from bitsmith.graph import trace
from bitsmith.methods.dnas.config import DNASConfig
from bitsmith.methods.dnas.mixed import MixedActQuantizer, MixedWeightQuantizer
from bitsmith.quant import QConfig, QuantConv2d, QuantLinear, quantize


@dataclass
class Choice:
    """One layer's discrete configuration: each filter's weight option index (``len(options)`` = pruned) and the
    input activation's option index."""

    weight: torch.Tensor
    act: int

    def clone(self) -> Choice:
        return Choice(self.weight.clone(), int(self.act))


def has_batchnorm(model: nn.Module) -> bool:
    """True if the model holds a BatchNorm layer (pruning then folds it, so a pruned filter outputs zero)."""
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def search_layers(model: nn.Module) -> Iterator[tuple[str, QuantConv2d | QuantLinear]]:
    """(name, layer) of every conv/linear whose quantizers are search-space quantizers."""
    for name, module in model.named_modules():
        if isinstance(module, (QuantConv2d, QuantLinear)) and isinstance(module.weight_quant, MixedWeightQuantizer):
            yield name, module


def arch_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Every architecture logit tensor of a search model (weights' and activations')."""
    params = []
    for _, layer in search_layers(model):
        params += [layer.weight_quant.logits, layer.act_quant.logits]
    return params


def prepare(model: nn.Module, config: DNASConfig, example_input_shape: Sequence[int]) -> nn.Module:
    """A copy of ``model`` whose every conv/linear chooses its weight width per filter (and, with ``prune``,
    whether the filter exists) and its input width per layer among ``config``'s options, all logits equal.

    With ``prune``, BatchNorms are folded into their convs first, so that a pruned filter really outputs zero.
    Raises ConfigError before any training when the budget is below the cheapest configuration of the space.
    """
    if not isinstance(config, DNASConfig):
        raise ConfigError(f"dnas.prepare expects a DNASConfig, got {type(config).__name__}")
    fold = config.prune and has_batchnorm(model)
    qmodel = quantize(model, QConfig(weight_bits=8, act_bits=8, first_last_bits=None, fold_bn=fold),
                      example_input_shape=example_input_shape)
    layers = [(n, m) for n, m in qmodel.named_modules() if isinstance(m, (QuantConv2d, QuantLinear))]
    last = trace(qmodel, example_input_shape).layer_names()[-1]
    for name, layer in layers:
        prune = config.prune and name != last and layer.weight.shape[0] > 1
        layer.weight_quant = MixedWeightQuantizer(layer.weight, config.weight_bits, prune, name=name)
        layer.act_quant = MixedActQuantizer(layer.act_quant, config.act_bits, name=name).to(layer.weight.device)
        if prune:
            layer.keep = torch.ones(layer.weight.shape[0], dtype=layer.weight.dtype, device=layer.weight.device)
    SearchSpace(qmodel, example_input_shape, config)  # refuses an infeasible budget now
    return qmodel


def largest_remainder(probs: torch.Tensor, total: int) -> list[int]:
    """``total`` split in proportion to ``probs`` as integers (largest-remainder rounding, ties to the lower
    index)."""
    raw = probs.double() * total
    counts = torch.floor(raw).long()
    left = total - int(counts.sum())
    fractions = (raw - counts).tolist()
    for i in sorted(range(len(fractions)), key=lambda k: (-fractions[k], k))[:left]:
        counts[i] += 1
    return [int(c) for c in counts]


class SearchSpace:
    """BOPs of a search model as a function of its architecture: expected (softmax probabilities, with gradients)
    and exact (a discrete configuration); the budget ``config`` sets; sampling and relaxing configurations."""

    def __init__(self, model: nn.Module, input_shape: Sequence[int], config: DNASConfig) -> None:
        self.model = model
        self.config = config
        self.cost = DifferentiableCost(trace(model, input_shape))
        self.layers = dict(search_layers(model))
        missing = [n for n in self.cost.layer_names if n not in self.layers]
        if missing:
            raise ConfigError(f"DNAS: layer(s) {', '.join(missing)} have no search quantizers; build the model with "
                              "dnas.prepare")
        self.budget = self.cost.budget(config.budget_bops, config.relative_to)
        self.min_bops = self.bops(self.cheapest())
        if self.budget < self.min_bops:
            raise ConfigError(f"BOPs budget {self.budget:.6g} is below the cheapest configuration of the search "
                              f"space ({self.min_bops:.6g} BOPs: every weight at {config.weight_bits[0]} bits, every "
                              f"activation at {config.act_bits[0]} bits"
                              + (", one filter kept per prunable layer" if config.prune else "")
                              + "); raise the budget")

    # -- costs ----------------------------------------------------------------------------------------------
    def _hard(self, choices: Mapping[str, Choice]) -> tuple[dict, dict, dict]:
        w, a, keep = {}, {}, {}
        for name, layer in self.layers.items():
            wq, aq = layer.weight_quant, layer.act_quant
            c = choices[name]
            options = torch.tensor(wq.options + [0] * int(wq.prune), dtype=torch.float64)
            w[name] = options[c.weight.cpu()]
            a[name] = float(aq.options[c.act])
            if wq.prune:
                keep[name] = wq.kept(c.weight.cpu()).double()
        return w, a, keep

    def bops(self, choices: Mapping[str, Choice]) -> float:
        """Exact BOPs per sample of a discrete configuration (same formula as ``bitsmith.cost.model_cost``)."""
        w, a, keep = self._hard(choices)
        return float(self.cost.bops(w, a, keep or None))

    def layer_bops(self, choices: Mapping[str, Choice]) -> dict[str, float]:
        """Exact BOPs of each layer (summed over the calls of a layer used more than once)."""
        w, a, keep = self._hard(choices)
        totals: dict[str, float] = {}
        for geom, value in zip(self.cost.layers, self.cost.per_layer(w, a, keep or None), strict=True):
            totals[geom.name] = totals.get(geom.name, 0.0) + float(value)
        return totals

    def expected_bops(self) -> torch.Tensor:
        """Expected BOPs under the softmax probabilities (filters independent), with gradients to every logit:
        weight width E[b | kept], keep probability 1 - p(pruned), activation width E[a]."""
        w, a, keep = {}, {}, {}
        for name, layer in self.layers.items():
            wq, aq = layer.weight_quant, layer.act_quant
            p = wq.probabilities().double()
            bits = torch.tensor(wq.options, dtype=torch.float64, device=p.device)
            if wq.prune:
                kept = 1.0 - p[-1]
                w[name] = (p[:-1] * bits).sum() / kept.clamp_min(1e-12)
                keep[name] = kept
            else:
                w[name] = (p * bits).sum()
            a[name] = (aq.probabilities().double() * torch.tensor(aq.options, dtype=torch.float64,
                                                                   device=p.device)).sum()
        return self.cost.bops(w, a, keep or None)

    def penalty(self) -> torch.Tensor:
        """The cost term of the architecture loss (see ``DNASConfig.penalty``)."""
        ratio = self.expected_bops() / self.budget
        term = (ratio - 1.0) ** 2 if self.config.penalty == "target" else ratio ** 2
        return self.config.cost_weight * term

    # -- configurations ---------------------------------------------------------------------------------------
    def current(self) -> dict[str, Choice]:
        """The configuration the model computes with now."""
        return {name: Choice(layer.weight_quant.choice.clone(), int(layer.act_quant.choice))
                for name, layer in self.layers.items()}

    def cheapest(self) -> dict[str, Choice]:
        """Every filter at the lowest width (one kept per prunable layer, the rest pruned), lowest activations."""
        choices = {}
        for name, layer in self.layers.items():
            wq = layer.weight_quant
            weight = torch.zeros_like(wq.choice)
            if wq.prune:
                weight.fill_(wq.pruned_index)
                weight[0] = 0
            choices[name] = Choice(weight, 0)
        return choices

    @torch.no_grad()
    def apply(self, choices: Mapping[str, Choice]) -> None:
        """Make the model compute with ``choices`` (weight options, keep masks, activation options)."""
        for name, layer in self.layers.items():
            c = choices[name]
            layer.weight_quant.choice.copy_(c.weight)
            layer.act_quant.choice.fill_(int(c.act))
            if layer.weight_quant.prune:
                layer.keep.copy_(layer.weight_quant.kept(c.weight).to(layer.keep.dtype))

    @torch.no_grad()
    def sample(self) -> dict[str, Choice]:
        """Draw each filter's option and each layer's activation width from the softmax probabilities (global
        torch RNG, so a resumed search draws the same) and apply them."""
        choices = {}
        for name, layer in self.layers.items():
            wq, aq = layer.weight_quant, layer.act_quant
            weight = torch.multinomial(wq.probabilities(), wq.choice.numel(), replacement=True)
            choices[name] = Choice(weight, int(torch.multinomial(aq.probabilities(), 1)))
        self.apply(choices)
        return choices

    def log_prob(self, choices: Mapping[str, Choice]) -> torch.Tensor:
        """log-probability of a sampled configuration under the logits (the score function's log term)."""
        total = torch.zeros(())
        for name, layer in self.layers.items():
            c = choices[name]
            total = total + F.log_softmax(layer.weight_quant.logits, 0)[c.weight].sum()
            total = total + F.log_softmax(layer.act_quant.logits, 0)[c.act]
        return total

    def relax(self, tau: float) -> None:
        """Straight-through Gumbel-softmax samples (hard in the forward pass, soft gradients to the logits) for
        every filter and activation; the keep masks follow the hard samples."""
        choices = {}
        for name, layer in self.layers.items():
            wq, aq = layer.weight_quant, layer.act_quant
            z = F.gumbel_softmax(wq.logits.expand(wq.choice.numel(), -1), tau=tau, hard=True)
            y = F.gumbel_softmax(aq.logits, tau=tau, hard=True)
            wq.relaxed, aq.relaxed = z, y
            choices[name] = Choice(z.detach().argmax(1), int(y.detach().argmax()))
        self.apply(choices)

    def unrelax(self) -> None:
        """Back to the hard choices."""
        for layer in self.layers.values():
            layer.weight_quant.relaxed = None
            layer.act_quant.relaxed = None

    def importance(self, name: str) -> torch.Tensor:
        """L1 norm of each filter's weight: the derivation gives the widest options to the largest filters."""
        return self.layers[name].weight.detach().abs().flatten(1).sum(1).cpu()

    def derived(self) -> dict[str, Choice]:
        """The discrete configuration of the current logits: each layer's filters split among the options in
        proportion to softmax(logits) (largest remainder; at least one filter kept), the widest options to the
        filters of largest L1 norm, pruned last; the most probable activation width."""
        choices = {}
        for name, layer in self.layers.items():
            wq = layer.weight_quant
            out = wq.choice.numel()
            counts = largest_remainder(wq.probabilities().detach().cpu(), out)
            if wq.prune and counts[-1] >= out:
                counts[-1] = out - 1
                counts[int(wq.probabilities()[:-1].argmax())] += 1
            order = torch.argsort(self.importance(name), descending=True, stable=True)
            weight = torch.empty(out, dtype=torch.long)
            options = list(range(len(wq.options) - 1, -1, -1)) + ([wq.pruned_index] if wq.prune else [])
            start = 0
            for option in options:
                weight[order[start:start + counts[option]]] = option
                start += counts[option]
            act = int(layer.act_quant.probabilities().argmax())
            choices[name] = Choice(weight.to(wq.choice.device), act)
        return choices

    def assignment(self, choices: Mapping[str, Choice]) -> BitsAssignment:
        """A configuration as bits.json: per-filter weight widths (one int when uniform), the input activation
        width and, when a filter is pruned, the keep mask (a pruned filter's width entry is a placeholder, see
        ``MixedWeightQuantizer.widths``)."""
        layers = {}
        for name, layer in self.layers.items():
            wq, aq = layer.weight_quant, layer.act_quant
            c = choices[name].weight.cpu()
            bits = wq.widths(c)
            keep = [int(k) for k in wq.kept(c)]
            layers[name] = LayerBits(bits[0] if len(set(bits)) == 1 else bits, aq.options[choices[name].act],
                                     keep if 0 in keep else None)
        return BitsAssignment(layers)

    def probabilities(self) -> dict[str, dict[str, list[float]]]:
        """Per layer, the softmax probabilities of the weight options (pruned last) and activation options."""
        return {name: {"weight": [round(float(p), 6) for p in layer.weight_quant.probabilities().detach()],
                       "act": [round(float(p), 6) for p in layer.act_quant.probabilities().detach()]}
                for name, layer in self.layers.items()}


def copy_choices(choices: Mapping[str, Choice]) -> dict[str, Choice]:
    """A deep copy of a configuration."""
    return {name: c.clone() for name, c in choices.items()}
