"""Shared helpers of the benchmark scripts: statistics over seeds and writing a section of docs/BENCHMARKS.md."""

from __future__ import annotations

import datetime
import platform
import re
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from bitsmith import _io

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS_MD = ROOT / "docs" / "BENCHMARKS.md"


#: The reference recipe's per-dataset settings (BENCHMARK_PROTOCOL.md); Adam lr 1e-3 constant is TrainConfig's
#: default.
SETTINGS = {"digits": {"epochs": 30, "batch_size": 64}, "fashion-mnist": {"epochs": 15, "batch_size": 128}}


def reference_config(model: str, dataset: str, seed: int, threads: int | None, **changes: Any) -> Any:
    """The TrainConfig of the protocol's reference recipe for ``model`` on ``dataset`` (``changes`` on top)."""
    from bitsmith.engine import TrainConfig

    return TrainConfig(model=model, dataset=dataset, seed=seed, num_threads=threads,
                       **{**SETTINGS[dataset], **changes})


def speedups(precision: str = "fp32", channels_last: bool = False) -> dict:
    """The TrainConfig changes of the faster CPU recipe (bf16 autocast, NHWC); empty for the protocol's float32."""
    return {k: v for k, v in (("precision", precision), ("channels_last", channels_last)) if v not in ("fp32", False)}


def speedup_tag(changes: dict) -> str:
    """Cache-name suffix that keeps runs of a faster recipe apart from the float32 ones."""
    return "".join({"precision": f"-{changes.get('precision')}", "channels_last": "-nhwc"}[k] for k in changes)


def speedup_flags(changes: dict) -> str:
    """The benchmark command-line flags that select the faster recipe ``changes``."""
    return "".join({"precision": f" --precision {changes.get('precision')}", "channels_last": " --channels-last"}[k]
                   for k in changes)


def speedup_sentence(changes: dict) -> str:
    """The table-header sentence that says a table was trained with the faster recipe (empty for float32)."""
    if not changes:
        return ""
    return (" Every run of this table trains under " + " and ".join(
        {"precision": "bfloat16 autocast", "channels_last": "channels-last (NHWC) tensors"}[k] for k in changes)
        + " (evaluation in float32; engine TrainConfig), to fit the CPU budget: the protocol's float32 rows are a "
        "different recipe.")


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    values = list(values)
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def pm(values: Sequence[float], scale: float = 100.0, digits: int = 2) -> str:
    """'mean ± std' of ``values`` times ``scale``."""
    m, s = mean_std(values)
    return f"{scale * m:.{digits}f} ± {scale * s:.{digits}f}"


def _cpuinfo() -> str:
    """``/proc/cpuinfo`` (empty where it is unreadable, e.g. not Linux)."""
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def cpu_name() -> str:
    """The CPU's model name (the architecture where the system does not say): results move between CPU models,
    because their kernels round differently, so a table names the one it was measured on."""
    for line in _cpuinfo().splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and value.strip():
            return f"{value.strip()} ({platform.machine()})"
    return f"{platform.processor() or platform.machine()} CPU"


def cpu_flags() -> str:
    """The bfloat16-related instruction sets this CPU reports (empty when it reports none or is not Linux)."""
    words = _cpuinfo().split()
    return ", ".join(sorted({w for w in words if w in ("avx512_bf16", "amx_bf16", "amx_tile")}))


def environment() -> str:
    """One line naming the date, library versions and machine a figure was measured with."""
    today = datetime.date.today().isoformat()
    return (f"{today}; torch {torch.__version__}, python {platform.python_version()}, "
            f"{torch.get_num_threads()} threads, {cpu_name()}")


def update_section(name: str, markdown: str, path: Path = BENCHMARKS_MD) -> Path:
    """Replace (or append) the block between ``<!-- begin NAME -->`` and ``<!-- end NAME -->`` in BENCHMARKS.md."""
    begin, end = f"<!-- begin {name} -->", f"<!-- end {name} -->"
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n"
    block = f"{begin}\n{markdown.rstrip()}\n{end}"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    return _io.write_text(path, text)


def train_step(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int, bf16: bool = False,
               channels_last: bool = False) -> Callable[[int], None]:
    """A function ``step(i)`` that makes one training step of ``model`` (zero_grad + forward + backward + Adam
    step, lr 1e-3) on the ``i``-th full batch of ``x``/``y`` (wrapping around); ``bf16`` runs the forward pass
    under bfloat16 autocast, as the Trainer does with ``precision="bf16"``; ``channels_last`` feeds NHWC batches
    (pass an NHWC model), as with ``channels_last=True``."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()

    def step(i: int) -> None:
        start = i * batch % (len(x) - batch + 1)
        xb, yb = x[start:start + batch], y[start:start + batch]
        if channels_last:
            xb = xb.contiguous(memory_format=torch.channels_last)
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = model(xb)
        loss_fn(out.float(), yb).backward()
        opt.step()

    return step


def step_times(models: dict[str, torch.nn.Module], x: torch.Tensor, y: torch.Tensor, batch: int, rounds: int = 7,
               steps: int = 15, warmup: int = 5, bf16: Sequence[str] = (),
               channels_last: Sequence[str] = ()) -> dict[str, float]:
    """Median train-step time (ms) of each model (one :func:`train_step`), measured interleaved in this process
    on identical full batches, after ``warmup`` steps each (which also initialise data-dependent quantizer
    scales). The models named in ``bf16`` run their forward pass under bfloat16 autocast; those in
    ``channels_last`` get NHWC batches (pass them NHWC models)."""
    import time

    step = {v: train_step(m, x, y, batch, bf16=v in bf16, channels_last=v in channels_last)
            for v, m in models.items()}
    times: dict[str, list[float]] = {v: [] for v in models}

    def timed(v: str, i: int) -> float:
        t0 = time.perf_counter()
        step[v](i)
        return time.perf_counter() - t0

    for v in models:
        models[v].train()
        for i in range(warmup):
            step[v](i)
    for r in range(rounds):
        for v in models:
            times[v] += [timed(v, r * steps + i) for i in range(steps)]
    return {v: 1000 * statistics.median(t) for v, t in times.items()}


def publish(section: str, lines: Sequence[str], write: bool = True) -> str:
    """Join a table's ``lines``, (re)write it as ``section`` of BENCHMARKS.md unless ``write`` is False, print it."""
    table = "\n".join(lines)
    if write:
        update_section(section, table)
    print(table)
    return table
