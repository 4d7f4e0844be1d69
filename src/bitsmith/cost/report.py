"""The cost report: per-layer and total MACs, BOPs, parameters, memory and DoF, as data, JSON and a rich table."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from rich.table import Table

KIB_BITS = 8 * 1024


@dataclass
class LayerCost:
    """Cost of one conv/linear layer call (pruned channels already removed)."""

    name: str
    kind: str
    macs: int
    bops: int
    params: int
    weight_bits: float
    act_bits: int
    weight_memory_bits: int
    out_channels: int
    out_channels_kept: int
    act_memory_bits: int
    act_in_memory_bits: int

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data."""
        return asdict(self)


@dataclass
class CostReport:
    """Costs of a model for one input (``input_shape`` without batch) and one bit-width assignment.

    Totals are sums over ``layers`` (``act_peak_bits`` is a max); ``dof`` counts free trainable scalars.
    """

    layers: list[LayerCost]
    input_shape: tuple[int, ...]
    dof: int
    scale_bits: int = 32
    per_channel: bool = True
    total_macs: int = field(init=False)
    total_bops: int = field(init=False)
    total_params: int = field(init=False)
    weight_memory_bits: int = field(init=False)
    act_peak_bits: int = field(init=False)

    def __post_init__(self) -> None:
        self.total_macs = sum(c.macs for c in self.layers)
        self.total_bops = sum(c.bops for c in self.layers)
        self.total_params = sum(c.params for c in self.layers)
        self.weight_memory_bits = sum(c.weight_memory_bits for c in self.layers)
        self.act_peak_bits = max((c.act_in_memory_bits + c.act_memory_bits for c in self.layers), default=0)

    @property
    def size_kib(self) -> float:
        """Model size (weights, biases, scales) in KiB."""
        return self.weight_memory_bits / KIB_BITS

    @property
    def gbops(self) -> float:
        """Total BOPs in units of 1e9."""
        return self.total_bops / 1e9

    def totals(self) -> dict[str, Any]:
        """The totals as plain data."""
        return {
            "macs": self.total_macs, "bops": self.total_bops, "gbops": self.gbops, "params": self.total_params,
            "weight_memory_bits": self.weight_memory_bits, "size_kib": self.size_kib,
            "act_peak_bits": self.act_peak_bits, "act_peak_kib": self.act_peak_bits / KIB_BITS, "dof": self.dof,
        }

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready report: input shape, conventions, totals and one entry per layer."""
        return {
            "input_shape": list(self.input_shape),
            "conventions": {"scale_bits": self.scale_bits, "per_channel_scales": self.per_channel,
                            "bias_bits": 32, "full_precision_bits": 32, "per_sample": True},
            "totals": self.totals(),
            "layers": [c.to_dict() for c in self.layers],
        }

    def summary(self) -> str:
        """One line with the headline totals."""
        return (f"MACs {self.total_macs:,} | GBOPs {self.gbops:.4f} | size {self.size_kib:.2f} KiB | "
                f"params {self.total_params:,} | DoF {self.dof:,}")

    def table(self) -> Table:
        """A rich table with one row per layer and a totals row."""
        shape = "x".join(str(d) for d in self.input_shape)
        table = Table(title=f"cost per sample, input {shape}", title_justify="left")
        for header in ("layer", "kind", "out (kept)", "w bits", "a bits", "MACs", "BOPs", "params", "weights KiB"):
            table.add_column(header, justify="left" if header in ("layer", "kind") else "right")
        for c in self.layers:
            table.add_row(c.name, c.kind, f"{c.out_channels} ({c.out_channels_kept})", f"{c.weight_bits:g}",
                          str(c.act_bits), f"{c.macs:,}", f"{c.bops:,}", f"{c.params:,}",
                          f"{c.weight_memory_bits / KIB_BITS:.2f}")
        table.add_section()
        table.add_row("total", "", "", "", "", f"{self.total_macs:,}", f"{self.total_bops:,}",
                      f"{self.total_params:,}", f"{self.size_kib:.2f}")
        return table
