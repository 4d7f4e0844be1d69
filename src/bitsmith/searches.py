"""Jobs made of several runs: the DNAS pipeline (search, derive, retrain), the grid-search variance study and
the RPG DoF sweep.

They sit beside :mod:`bitsmith.runs` (which they build on) because each phase is a run of its own: the search is a
``dnas`` run, the retrained model and every grid point are ``quantize`` runs, every sweep point an ``rpg`` run, so
each re-builds, resumes and reports like any other run, and a job interrupted halfway continues where it stopped.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bitsmith import _io, runs
from bitsmith.engine import TrainConfig, build_model, is_run_dir, load_split
from bitsmith.errors import BitsmithError, ConfigError

SEARCH_DIR = "search"
BITS_FILE = "bits.json"
SEARCH_RESULT = "search_result.json"
GRID_RESULT = "grid.json"
GRID_PLOT = "grid.png"


def _architecture(cfg: TrainConfig) -> tuple[Any, tuple[int, ...]]:
    """The (untrained) zoo model of ``cfg`` and its input shape: what the search space and the BatchNorm check
    need, without loading any checkpoint."""
    ds = load_split(cfg, "train")
    return build_model(cfg, ds), (ds.in_channels, *ds.image_size)


def _reused(out: Path, quiet: bool, start: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """The final metrics of the run at ``out``: read when it finished, resumed when it was interrupted, else
    ``start()``."""
    if runs.run_finished(out):
        return runs.final_run_metrics(out)
    if is_run_dir(out):
        return runs.resume_run(out, quiet=quiet).metrics
    return start()


def _run(transform: str, config: Any, out: Path, *, source: Path | None, base: TrainConfig | None, quiet: bool,
         resume: bool, record: dict[str, Any] | None = None, report: bool = True, **overrides: Any) -> dict[str, Any]:
    """One phase as a run: with ``resume``, reuse it when finished and resume it when interrupted; else train it.
    With ``report`` it then writes the run's report if it has none (a caller that adds to the run writes it)."""
    def start() -> dict[str, Any]:
        return runs.method_run(transform, config, out, source=source, base=base, quiet=quiet, record=record,
                               **overrides)

    metrics = _reused(out, quiet, start) if resume else start()
    if report and not (out / "report.md").is_file():
        runs.write_run_report(out)
    return metrics


def _base(source: Path | None, base: TrainConfig | None) -> TrainConfig:
    if source is not None:
        return runs.train_config(source)
    if base is None:
        raise BitsmithError("a multi-run job needs a source run or a base TrainConfig")
    return base


def dnas_search(config: Any, out: str | Path, *, source: str | Path | None = None, base: TrainConfig | None = None,
                search_epochs: int | None = None, retrain_epochs: int | None = None, retrain_from: str = "float",
                quiet: bool = False, resume: bool = False, **overrides: Any) -> dict[str, Any]:
    """Search (``out/search``, a ``dnas`` run on the train/val split), derive and check the configuration
    (``out/bits.json``, ``out/search_result.json``; repaired if over the budget), and retrain it into ``out`` (a
    ``quantize`` run on the full training split) from the float checkpoint of ``source`` (``retrain_from="float"``)
    or from scratch. Returns the summary, with the retrained model's test accuracy and exact BOPs.

    ``overrides`` replace TrainConfig fields of both phases (lr, seed, ...); ``resume`` continues an interrupted
    pipeline where it stopped.
    """
    from bitsmith.methods import dnas
    from bitsmith.quant import QConfig

    if retrain_from not in ("float", "scratch"):
        raise ConfigError(f"retrain_from {retrain_from!r} is not known; accepted: float, scratch")
    if retrain_from == "float" and source is None:
        raise ConfigError("retraining from the float checkpoint needs a source run (--from); or retrain from scratch")
    out = Path(out)
    source = Path(source) if source is not None else None
    train_base = _base(source, base)
    t0 = time.perf_counter()
    _run("dnas", config, out / SEARCH_DIR, source=source, base=base, quiet=quiet, resume=resume, val=True,
         epochs=search_epochs, **overrides)
    search_time = time.perf_counter() - t0

    architecture, shape = _architecture(train_base)
    space = dnas.SearchSpace(runs.load_model(out / SEARCH_DIR), shape, config)
    derivation = dnas.derive(space)
    derivation.bits.save(out / BITS_FILE)
    qconfig = QConfig.from_bits(derivation.bits, fold_bn=config.prune and dnas.has_batchnorm(architecture))

    t1 = time.perf_counter()
    # the retrained run is the search's result: its widths were learned, not chosen, so `compare` groups its seeds
    record = {"command": "search", "search": {**config.to_dict(), "retrain_from": retrain_from},
              "learned": ["quantize"]}
    metrics = _run("quantize", qconfig, out, source=source if retrain_from == "float" else None,
                   base=None if retrain_from == "float" else train_base, quiet=quiet, resume=resume, val=False,
                   record=record, report=False, epochs=retrain_epochs, **overrides)
    retrain_time = time.perf_counter() - t1
    exact = runs.run_cost(out).total_bops
    if exact != round(derivation.bops):
        raise BitsmithError(f"the retrained model costs {exact} BOPs but the derived configuration "
                            f"{derivation.bops:.0f}; the search space and the core quantizer disagree (please report "
                            "this)")
    summary = derivation.summary(space)
    summary.update(retrained_bops=exact, test_acc=metrics.get("test_acc"), search_time_s=search_time,
                   retrain_time_s=retrain_time, search_epochs=runs.train_config(out / SEARCH_DIR).epochs,
                   estimator=config.estimator, retrain_from=retrain_from)
    _io.write_json(out / SEARCH_RESULT, summary)
    runs.write_run_report(out)
    return summary


def grid_study(config: Any, out: str | Path, *, source: str | Path | None = None, base: TrainConfig | None = None,
               configs: int = 8, seeds: Sequence[int] = (0, 1, 2), tolerance: float = 0.03, sample_seed: int = 0,
               quiet: bool = False, **overrides: Any) -> dict[str, Any]:
    """The grid-search baseline and its variance study: ``configs`` random configurations of ``config``'s search
    space within ``tolerance`` below its budget, each trained (a ``quantize`` run, like the DNAS retraining) with
    every seed of ``seeds``; then the one-way analysis of variance of their test accuracy. Finished runs are
    reused, so an interrupted study continues where it stopped. Writes ``grid.json``, ``grid.png`` and the
    per-configuration bits files under ``out``."""
    from bitsmith.engine.progress import RunsProgress
    from bitsmith.methods import dnas
    from bitsmith.quant import QConfig

    if len(set(seeds)) < 2:
        raise ConfigError("the grid study needs at least two distinct seeds per configuration")
    out = Path(out)
    source = Path(source) if source is not None else None
    train_base = _base(source, base)
    architecture, shape = _architecture(train_base)
    space = dnas.SearchSpace(dnas.prepare(architecture, config, shape), shape, config)
    sampled = dnas.grid.sample_configs(space, configs, tolerance=tolerance, seed=sample_seed)
    fold = config.prune and dnas.has_batchnorm(architecture)
    points = []
    with RunsProgress("grid", len(sampled) * len(seeds), quiet=quiet) as bar:
        for i, choices in enumerate(sampled):
            bits = space.assignment(choices)
            bits.save(out / "configs" / f"c{i}.bits.json")
            accs = []
            for seed in seeds:
                run_dir = out / "runs" / f"c{i}-s{seed}"
                metrics = _run("quantize", QConfig.from_bits(bits, fold_bn=fold), run_dir, source=source,
                               base=None if source is not None else train_base, quiet=True, resume=True, seed=seed,
                               val=False, **overrides)
                accs.append(float(metrics["test_acc"]))
                bar.advance(f"c{i}-s{seed}: test acc {100 * accs[-1]:.2f}%")
            points.append({"config": i, "bops": space.bops(choices), "test_acc": accs,
                           "bits_file": f"configs/c{i}.bits.json"})
    study = dnas.grid.variance_study([p["test_acc"] for p in points])
    result = {"budget_bops": space.budget, "tolerance": tolerance, "seeds": list(seeds), "points": points, **study}
    _io.write_json(out / GRID_RESULT, result)
    plot_grid(result, out / GRID_PLOT)
    return result


def plot_grid(result: dict[str, Any], path: Path) -> None:
    """Test accuracy of every grid configuration (one column each, sorted by mean; dots = seeds, bar = mean)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = sorted(result["points"], key=lambda p: sum(p["test_acc"]) / len(p["test_acc"]))
    fig, ax = plt.subplots(figsize=(max(4.0, 0.45 * len(points) + 2), 3.4))
    for x, p in enumerate(points):
        accs = [100 * a for a in p["test_acc"]]
        ax.scatter([x] * len(accs), accs, s=12, color="tab:blue", alpha=0.7)
        ax.hlines(sum(accs) / len(accs), x - 0.3, x + 0.3, color="black", lw=1.5)
    ax.set_xticks(range(len(points)), [f"c{p['config']}" for p in points], fontsize=7)
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"{len(points)} configurations at ~{result['budget_bops']:.3g} BOPs: std across configs "
                 f"{100 * result['config_std']:.2f}, across seeds {100 * result['seed_std']:.2f} "
                 f"(p={result['p_value']:.2g})", fontsize=8)
    fig.tight_layout()
    _io.savefig(path, fig, dpi=120)
    plt.close(fig)


SWEEP_RESULT = "sweep.json"
SWEEP_PLOT = "sweep.png"


def _plain_run(cfg: TrainConfig, out: Path, quiet: bool) -> dict[str, Any]:
    """A plain (float) training run, reused when finished and resumed when interrupted."""
    from bitsmith.engine import train

    return _reused(out, quiet, lambda: train(cfg, out, quiet=quiet).metrics)


def rpg_sweep(base: TrainConfig, out: str | Path, *, ratios: Sequence[float], seeds: Sequence[int] = (0,),
              include: str | list[str] = "inner", reference: bool = True,
              fit_range: tuple[float, float] | None = None, quiet: bool = False) -> dict[str, Any]:
    """Train ``base``'s model wrapped by RPG at every DoF ratio of ``ratios`` with every seed (``out/runs/r<ratio>-
    s<seed>``, reused when finished), and with ``reference`` the plain model too; fit the mean accuracy against
    log10(ratio) over ``fit_range`` (default: the ratios up to 1 %); write ``sweep.json`` and ``sweep.png``."""
    from bitsmith.engine.progress import RunsProgress
    from bitsmith.methods import rpg

    if not ratios:
        raise ConfigError("the RPG sweep needs at least one DoF ratio")
    out = Path(out)
    ratios = sorted(float(r) for r in ratios)
    for r in ratios:
        rpg.RPGConfig(dof_ratio=r)  # refuses a ratio outside (0, 1] before any training
    points: list[dict[str, Any]] = []
    full: list[float] = []
    with RunsProgress("rpg sweep", (len(ratios) + int(reference)) * len(seeds), quiet=quiet) as bar:
        for seed in seeds:
            if reference:
                cfg = dataclasses.replace(base, seed=seed)
                full.append(float(_plain_run(cfg, out / "runs" / f"full-s{seed}", quiet=True)["test_acc"]))
                bar.advance(f"full-s{seed}: test acc {100 * full[-1]:.2f}%")
        for ratio in ratios:
            accs, dof = [], None
            for seed in seeds:
                run_dir = out / "runs" / f"r{ratio:g}-s{seed}"
                metrics = _run("rpg", rpg.RPGConfig(dof_ratio=ratio, include=include), run_dir, source=None,
                               base=base, quiet=True, resume=True, seed=seed)
                accs.append(float(metrics["test_acc"]))
                dof = runs.run_cost(run_dir).dof if dof is None else dof
                bar.advance(f"{run_dir.name}: test acc {100 * accs[-1]:.2f}%")
            points.append({"ratio": ratio, "dof": dof, "test_acc": accs, "mean": sum(accs) / len(accs)})
    lo, hi = fit_range if fit_range is not None else (ratios[0], 0.01)
    fitted = [p for p in points if lo <= p["ratio"] <= hi]
    fit = rpg.loglinear_fit([p["ratio"] for p in fitted], [p["mean"] for p in fitted]) if len(
        {p["ratio"] for p in fitted}) >= 2 else None
    result = {"model": base.model, "dataset": base.dataset, "seeds": list(seeds), "points": points,
              "reference_acc": full, "fit_range": [lo, hi], "fit": fit}
    _io.write_json(out / SWEEP_RESULT, result)
    plot_sweep(result, out / SWEEP_PLOT)
    return result


def plot_sweep(result: dict[str, Any], path: Path) -> None:
    """Accuracy against the DoF ratio (log axis): every seed, the means, the log-linear fit, the full model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.8))
    for p in result["points"]:
        ax.scatter([100 * p["ratio"]] * len(p["test_acc"]), [100 * a for a in p["test_acc"]], s=10,
                   color="tab:blue", alpha=0.5)
    ax.plot([100 * p["ratio"] for p in result["points"]], [100 * p["mean"] for p in result["points"]], "o-",
            color="tab:blue", label="RPG (mean over seeds)")
    fit = result["fit"]
    if fit is not None:
        lo, hi = result["fit_range"]
        xs = [lo, hi]
        ax.plot([100 * x for x in xs], [100 * (fit["slope"] * math.log10(x) + fit["intercept"]) for x in xs], "--",
                color="tab:orange", label=f"fit: {100 * fit['slope']:.2f} pt per decade, R² = {fit['r2']:.3f}")
    if result["reference_acc"]:
        ref = 100 * sum(result["reference_acc"]) / len(result["reference_acc"])
        ax.axhline(ref, color="black", lw=1, ls=":", label=f"full model ({ref:.2f} %)")
    ax.set_xscale("log")
    ax.set_xlabel("DoF ratio (% of the generated weights)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"RPG on {result['model']} / {result['dataset']}", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    _io.savefig(path, fig, dpi=120)
    plt.close(fig)
