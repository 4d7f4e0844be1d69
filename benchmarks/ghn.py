"""GHN (issue 10): train the graph hypernetwork on a dataset, evaluate it on held-out architectures (test split,
out-of-distribution wide/deep splits, zoo models) against random init, k SGD steps, fine-tuning and training to
convergence, and time prediction (one architecture and batched).

    bash benchmarks/setup.sh
    .venv-bench/bin/torchrun --standalone --nproc_per_node=2 -m benchmarks.ghn --part train --dataset digits \
        --name r2e210 --epochs 210 --threads 1 --ship    # the shipped digits GHN: 1 h on both cores
    .venv-bench/bin/python -m benchmarks.ghn --part baselines --dataset digits --n 30 --splits test
    .venv-bench/bin/python -m benchmarks.ghn --part eval --dataset digits --n 30 --ghn digits
    .venv-bench/bin/python -m benchmarks.ghn --part speed --dataset digits

Evaluation protocol: after parameters are set (predicted, random, or trained), BatchNorm statistics are recalibrated
on 10 training batches of 64 and the model is evaluated in eval mode on the test split; the accuracy with test-batch
statistics is an extra column. SGD rows use the reference recipe (Adam lr 1e-3; batch 64 digits / 128 F-MNIST).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from benchmarks._common import ROOT, SETTINGS, environment, publish
from bitsmith import _io, runs
from bitsmith.engine import TrainConfig, distributed, load_split
from bitsmith.engine.config import PRECISIONS
from bitsmith.methods import ghn as ghn_lib
from bitsmith.methods.ghn.encoding import encode
from bitsmith.zoo import space

OUT = ROOT / "benchmarks" / "out" / "ghn"
SHIPPED_NAME = {"digits": "digits", "fashion-mnist": "fashion-mnist"}


@dataclass(frozen=True)
class TrainingRun:
    """One of this benchmark's GHN training runs: its encoder, decoder CP rank (None: GHNConfig's) and, for a run
    whose recipe differs from the default one, a name that gives it a folder of its own."""

    encoder: str = "gatedgnn"
    rank: int | None = None
    name: str | None = None

    def folder(self, dataset: str) -> Path:
        """The run's folder under benchmarks/out/ghn/DATASET."""
        if self.name:
            return OUT / dataset / f"train-{self.name}"
        ranked = "" if self.rank is None else f"-rank{self.rank}"
        return OUT / dataset / f"train-{self.encoder}{ranked}"

    def section(self, dataset: str) -> str:
        """The BENCHMARKS.md section of the run's training report (the default run's is ghn-train-DATASET)."""
        return (f"ghn-train-{dataset}" + ("" if self.encoder == "gatedgnn" else f"-{self.encoder}")
                + ("" if self.rank is None else f"-rank{self.rank}") + ("" if self.name is None else f"-{self.name}"))

    def flags(self) -> str:
        """The options that pick this run on the benchmark's command line (none for the default one)."""
        return ("" if self.encoder == "gatedgnn" else f" --encoder {self.encoder}") + (
            "" if self.rank is None else f" --rank {self.rank}") + ("" if self.name is None else f" --name {self.name}")


def train(dataset: str, run: TrainingRun, epochs: int, meta_batch: int, threads: int, ship: bool,
          batch_size: int | None = None, grad_clip: float | None = None, precision: str = "fp32") -> Path:
    """Train (or resume) the benchmark GHN ``run`` of ``dataset`` (``batch_size``, ``grad_clip``: the recipe's when
    None); with ``ship``, copy its file into the package."""
    out = run.folder(dataset)
    cfg = ghn_lib.recipe(dataset, epochs=epochs, num_threads=threads, batch_size=batch_size, grad_clip=grad_clip,
                         precision=precision)
    resume = (out / "checkpoint.safetensors").exists()
    t0 = time.perf_counter()
    every = max(1, epochs // 12)  # about twelve evaluations of the val architectures over the training
    shape = {"encoder": run.encoder, **({} if run.rank is None else {"rank": run.rank})}
    _, metrics = ghn_lib.train_ghn(cfg, shape,
                                   ghn_lib.GHNTrainConfig(meta_batch=meta_batch, eval_every=every), out, resume=resume)
    wall = time.perf_counter() - t0
    if not distributed.is_main():  # under torchrun rank 0 reports and ships
        return out
    _io.write_json(out / "wall.json", {"wall_s": wall, "resumed": resume, "threads": threads, **metrics})
    print(f"{dataset}: {wall / 60:.1f} min, val acc of predictions {metrics.get('val_acc')}")
    if ship:
        target = ghn_lib.io.PRETRAINED_DIR / f"{SHIPPED_NAME[dataset]}.safetensors"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(out / ghn_lib.GHN_FILE, target)
        print(f"shipped as {target} ({target.stat().st_size / 2**20:.2f} MiB)")
    return out


def _shown(source: str) -> str:
    """A GHN source as the docs show it: relative to the repository when it is a path inside it."""
    path = Path(str(source))
    return str(path.relative_to(ROOT)) if path.is_absolute() and ROOT in path.parents else str(source)


def train_report(dataset: str, run: TrainingRun) -> None:
    """Publish the training ``run`` of ``dataset``'s GHN: recipe, wall time, and the validation accuracy of its
    predictions over training (8 held-out val architectures, BN recalibrated on training batches)."""
    out = run.folder(dataset)
    records = [r for r in runs.read_metrics(out) if r.get("type") == "epoch"]
    info = ghn_lib.load_ghn(out).info
    wall = (out / "checkpoint.safetensors").stat().st_mtime - (out / "config.json").stat().st_mtime
    train, default = info["train"], ghn_lib.recipe(dataset)
    threads, ranks = train["num_threads"], info.get("ranks", 1)
    clip, precision = train.get("grad_clip"), train.get("precision", "fp32")
    ranked = "" if run.rank is None else f", decoder CP rank {run.rank}"
    lines = [
        f"## GHN: training the hypernetwork ({dataset}{ranked}{'' if run.name is None else f', run {run.name}'})",
        "",
        f"GHN ({run.encoder}{ranked}) trained on {dataset}: {info['steps']} steps of "
        f"{'' if ranks == 1 else f'{ranks} ranks x '}{info['ghn_train']['meta_batch']} fresh architectures x "
        f"{train['batch_size'] // ranks} images, AdamW lr {train['lr']:g}, cosine, "
        f"{'no gradient clip' if clip is None else f'gradient norm clipped at {clip:g}'}"
        f"{', targets under bf16 autocast' if precision == 'bf16' else ''}, "
        f"{train['epochs']} epochs; wall time {wall / 60:.1f} min on "
        + (f"{threads} thread(s) of the 2-core CPU (the other core ran another job). " if ranks == 1 else
           f"{ranks} processes x {threads} thread(s) of the 2-core CPU. ")
        + f"File: {(out / ghn_lib.GHN_FILE).stat().st_size / 2**20:.2f} MiB.",
        "",
        "| epoch | step | train loss | train acc (training archs, batch stats) | val acc of predictions, mean (%) | "
        "worst of 8 (%) |",
        "|---|---|---|---|---|---|",
    ]
    for r in records:
        if "val_acc" in r:
            lines.append(f"| {r['epoch']} | {r['step']} | {r['train_loss']:.3f} | {100 * r['train_acc']:.1f} | "
                         f"{100 * r['val_acc']:.1f} | {100 * r['val_acc_worst']:.1f} |")
    recipe_flags = ("" if train["batch_size"] == default.batch_size else f" --batch-size {train['batch_size']}") + (
        "" if clip == default.grad_clip else f" --grad-clip {_clip_flag(clip)}") + (
        "" if precision == "fp32" else f" --precision {precision}")
    every = info["ghn_train"]["eval_every"]
    cli_rank = "" if run.rank is None else f" --rank {run.rank}"
    launch = ("python -m" if ranks == 1 else f"torchrun --standalone --nproc_per_node={ranks} -m")
    cli = ".venv/bin/bitsmith" if ranks == 1 else f".venv/bin/{launch} bitsmith.cli.main"
    lines += ["", f"Command: `{cli} ghn train --encoder {run.encoder}{cli_rank} --dataset {dataset} --epochs "
                  f"{train['epochs']} --meta-batch {info['ghn_train']['meta_batch']}{recipe_flags}"
                  f"{'' if every == 10 else f' --eval-every {every}'} --threads {threads} "
                  f"--out {_shown(str(out))}` (equivalently `{launch} benchmarks.ghn "
                  f"--part train --dataset {dataset}{run.flags()}{recipe_flags} --epochs {train['epochs']} "
                  f"--threads {threads}`); "
                  f"table: `python -m benchmarks.ghn --part train-report --dataset {dataset}{run.flags()}`. "
                  f"{environment()}"]
    publish(run.section(dataset), lines)


def _evaluation_setup(dataset: str, splits: list[str], n: int, n_ood: int, converge_epochs: int | None) -> tuple:
    """The reference recipe, the training and test splits, and the evaluation settings every GHN table uses
    (``converge_epochs``: the protocol's epochs when None, 0 skips the converged column)."""
    base = TrainConfig(dataset=dataset, batch_size=SETTINGS[dataset]["batch_size"])
    epochs = SETTINGS[dataset]["epochs"] if converge_epochs is None else converge_epochs
    cfg = ghn_lib.EvalConfig(splits=splits, n=n, n_ood=n_ood, steps=[1, 10, 100], converge_epochs=epochs,
                             bn_batches=10)
    return base, load_split(base, "train"), load_split(base, "test"), cfg


def _converged_text(dataset: str, epochs: int) -> str:
    """What the table's converged column is: the protocol's recipe, or a shorter one that flatters the ratio."""
    if not epochs:
        return "Converged: not trained (CPU time)."
    protocol = SETTINGS[dataset]["epochs"]
    if epochs >= protocol:
        return f"Converged: reference recipe, {epochs} epochs."
    return (f"Converged: reference recipe cut to {epochs} of its {protocol} epochs (CPU time): an under-trained "
            f"reference, so predicted / converged is higher than against a converged one.")


def _clip_flag(clip: float | None) -> str:
    """A gradient clip as ``--grad-clip`` takes it (0: none)."""
    return "0" if clip is None else f"{clip:g}"


def _ghn_flags(dataset: str, source: str, run: TrainingRun) -> str:
    """The options that name GHN ``source`` on this benchmark's command line: its training run's, or ``--ghn``."""
    if source != str(run.folder(dataset) / ghn_lib.GHN_FILE):
        return f" --ghn {_shown(source)}"
    return run.flags()


def evaluate(dataset: str, splits: list[str], n: int, n_ood: int, threads: int, source: str,
             converge_epochs: int | None = None, flags: str = "") -> dict:
    """The evaluation table of the GHN ``source`` on ``splits`` (rows cached; baselines shared across GHNs);
    ``flags``: the options that name ``source`` in the published command."""
    torch.set_num_threads(threads)
    ghn = ghn_lib.load_ghn(source)
    base, train_ds, test_ds, cfg = _evaluation_setup(dataset, splits, n, n_ood, converge_epochs)
    epochs = cfg.converge_epochs
    path = Path(str(source))
    label = path.parent.name if path.name == ghn_lib.GHN_FILE else path.stem
    out = OUT / dataset / f"eval-{label}"
    result = ghn_lib.evaluate_ghn(ghn, base, train_ds, test_ds, cfg, out, baselines=OUT / dataset / "baselines",
                                  progress=lambda split, row: print(split, row["arch"], round(row["predicted"], 4)))
    lines = [
        f"## GHN: predicted parameters on held-out architectures ({dataset})",
        "",
        f"Hypernetwork `{_shown(source)}` on {dataset}: accuracy (%) over held-out architectures, mean ± std "
        f"[min, max]. "
        f"BN statistics recalibrated on 10 training batches of 64 for every column; `batch stats` uses test-batch "
        f"statistics (extra column, not a headline figure). "
        + _converged_text(dataset, epochs),
        "",
        "| split | n | predicted | batch stats | random init | SGD 1 | SGD 10 | SGD 100 | fine-tune 10 | "
        "fine-tune 100 | converged | predicted / converged (worst) | < 0.9x | SGD steps worth (median) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]

    def cell(s: dict, key: str) -> str:
        if key not in s:
            return "–"
        v = s[key]
        return f"{100 * v['mean']:.1f} ± {100 * v['std']:.1f} [{100 * v['min']:.0f}, {100 * v['max']:.0f}]"

    for split, part in result["splits"].items():
        s = part["summary"]
        ratio = f"{s['ratio']['mean']:.3f} ({s['ratio']['min']:.3f})" if "ratio" in s else "–"
        worth = s["steps_worth_median"]
        beyond = f" (> 100 for {s['steps_worth_beyond']})" if s["steps_worth_beyond"] else ""
        worth_text = (f"{worth:.0f}" if worth is not None else "> 100") + beyond
        lines.append(f"| {split} | {s['n']} | {cell(s, 'predicted')} | {cell(s, 'pred_batchstat')} | "
                     f"{cell(s, 'random')} | {cell(s, 'sgd_1')} | {cell(s, 'sgd_10')} | {cell(s, 'sgd_100')} | "
                     f"{cell(s, 'finetune_10')} | {cell(s, 'finetune_100')} | {cell(s, 'converged')} | {ratio} | "
                     f"{s.get('below_0.9_of_converged', '–')} | {worth_text} |")
    lines += ["", f"Command: `.venv-bench/bin/python -m benchmarks.ghn --part eval --dataset {dataset} --n {n} "
                  f"--n-ood {n_ood} --splits {','.join(splits)}"
                  + ("" if converge_epochs is None else f" --converge-epochs {converge_epochs}")
                  + f"{flags}`. {environment()}"]
    shipped = source == SHIPPED_NAME[dataset]  # the section every reader looks for: the GHN the package ships
    publish(f"ghn-eval-{dataset}" if shipped else f"ghn-eval-{dataset}-{label}", lines)
    return result


def baselines(dataset: str, splits: list[str], n: int, n_ood: int, threads: int,
              converge_epochs: int | None = None) -> None:
    """The hypernetwork-free columns (random init, SGD-k, converged) of the evaluation table, cached for reuse."""
    torch.set_num_threads(threads)
    base, train_ds, test_ds, cfg = _evaluation_setup(dataset, splits, n, n_ood, converge_epochs)
    shape = ghn_lib.GHNConfig(num_classes=train_ds.num_classes, in_channels=train_ds.in_channels,
                              image_size=train_ds.image_size[0])
    ghn_lib.compute_baselines(shape, base, train_ds, test_ds, cfg, OUT / dataset / "baselines",
                                       progress=lambda split, row: print(split, row["arch"], row.get("converged")))


def _prediction_times(ghn: ghn_lib.GraphHyperNetwork, count: int, repeats: int = 3) -> tuple[list[float], float]:
    """Seconds to predict each of ``count`` test architectures alone (graphs already encoded), and the median over
    ``repeats`` of the seconds per architecture when all are predicted at once."""
    cfg = ghn.config
    models = [space.build_network(s, cfg.num_classes, cfg.in_channels, cfg.image_size)
              for s in space.split("test", count)]
    encodings = [encode(m, cfg.input_shape, cutoff=cfg.cutoff) for m in models]
    ghn_lib.predict_many(models[:2], ghn, encodings[:2])
    single = []
    for m, e in zip(models, encodings, strict=True):
        t0 = time.perf_counter()
        ghn_lib.predict_many([m], ghn, [e])
        single.append(time.perf_counter() - t0)
    batched = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        ghn_lib.predict_many(models, ghn, encodings)
        batched.append((time.perf_counter() - t0) / count)
    return single, statistics.median(batched)


def encoders(dataset: str, threads: int) -> None:
    """GatedGNN vs Graphormer trained with the same recipe: validation accuracy of their predictions over training
    and prediction time, measured side by side in this process."""
    torch.set_num_threads(threads)
    runs_by_encoder = {e: TrainingRun(e).folder(dataset) for e in ghn_lib.ENCODERS}
    curves, timing = {}, {}
    for encoder, out in runs_by_encoder.items():
        curves[encoder] = {r["epoch"]: r for r in runs.read_metrics(out) if "val_acc" in r}
        ghn = ghn_lib.load_ghn(out)
        single, batched = _prediction_times(ghn, 50)
        timing[encoder] = ((1000 * statistics.median(single), 1000 * batched), ghn.num_parameters())
    lines = [
        f"## GHN: GatedGNN (GHN-2) vs Graphormer (GHN-3 style) encoder ({dataset})",
        "",
        "Same recipe (120 epochs, 4 fresh architectures x 64 images per step, AdamW 1e-3 cosine, seed 0); validation "
        "accuracy (%) of the predictions for 8 held-out val architectures (BN recalibrated on training batches), "
        "mean / worst. Prediction time: 50 test architectures, measured in one process.",
        "",
        "| epoch | " + " | ".join(f"{e} mean | {e} worst" for e in runs_by_encoder) + " |",
        "|---|" + "---|---|" * len(runs_by_encoder),
    ]
    for epoch in sorted(set.intersection(*(set(c) for c in curves.values()))):
        cells = " | ".join(f"{100 * curves[e][epoch]['val_acc']:.1f} | {100 * curves[e][epoch]['val_acc_worst']:.1f}"
                           for e in runs_by_encoder)
        lines.append(f"| {epoch} | {cells} |")
    lines += ["", "| encoder | parameters | predict one (median ms) | predict 50 at once (ms / architecture) |",
              "|---|---|---|---|"]
    for encoder, ((single, batched), params) in timing.items():
        lines.append(f"| {encoder} | {params:,} | {single:.1f} | {batched:.1f} |")
    lines += ["", f"Command: `.venv-bench/bin/python -m benchmarks.ghn --part encoders --dataset {dataset} --threads "
                  f"{threads}` (after `--part train --encoder gatedgnn` and `--encoder graphormer`). {environment()}"]
    publish(f"ghn-encoders-{dataset}", lines)


def speed(dataset: str, threads: int, source: str, flags: str = "", count: int = 100) -> None:
    """Prediction time per architecture (one at a time, and batched) for ``count`` test architectures of
    ``source`` (``flags``: the options that name it in the published command)."""
    torch.set_num_threads(threads)
    ghn = ghn_lib.load_ghn(source)
    cfg = ghn.config
    single, batched = _prediction_times(ghn, count)
    models = [space.build_network(spec, cfg.num_classes, cfg.in_channels, cfg.image_size)
              for spec in space.split("test", 20)]
    t0 = time.perf_counter()
    for m in models[:20]:
        encode(m, cfg.input_shape, cutoff=cfg.cutoff)
    encode_ms = (time.perf_counter() - t0) / 20 * 1000
    lines = [
        f"## GHN: prediction time ({dataset})",
        "",
        f"Prediction time per architecture, {count} test-split architectures of the search space, hypernetwork "
        f"`{_shown(source)}` ({ghn.num_parameters():,} parameters), {threads} thread(s).",
        "",
        "| mode | median ms / architecture | p90 ms |",
        "|---|---|---|",
        f"| one at a time (graph already encoded) | {1000 * statistics.median(single):.1f} | "
        f"{1000 * sorted(single)[int(0.9 * len(single))]:.1f} |",
        f"| batched, {count} at once | {1000 * batched:.1f} | – |",
        f"| graph tracing + encoding (once per architecture) | {encode_ms:.1f} | – |",
        "",
        f"Command: `.venv-bench/bin/python -m benchmarks.ghn --part speed --dataset {dataset} --threads {threads}"
        f"{flags}`. "
        f"{environment()}",
    ]
    publish(f"ghn-speed-{dataset}", lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=["train", "train-report", "baselines", "eval", "speed", "encoders"],
                        required=True)
    parser.add_argument("--dataset", default="digits", choices=sorted(SETTINGS))
    parser.add_argument("--encoder", default="gatedgnn", choices=list(ghn_lib.ENCODERS))
    parser.add_argument("--epochs", type=int, default=120)
    parser.add_argument("--meta-batch", type=int, default=4)
    parser.add_argument("--rank", type=int, default=None, help="decoder CP rank (default: GHNConfig's)")
    parser.add_argument("--name", default=None, help="a training run whose recipe differs: its folder train-NAME")
    parser.add_argument("--grad-clip", type=float, default=None, help="gradient norm clip (default: the recipe's; "
                                                                      "0: none)")
    parser.add_argument("--precision", default="fp32", choices=PRECISIONS, help="bf16: targets under bf16 autocast")
    parser.add_argument("--batch-size", type=int, default=None, help="GHN training image batch (default: the "
                                                                     "recipe's, 64 digits / 128 Fashion-MNIST)")
    parser.add_argument("--n", type=int, default=30, help="architectures per evaluation split")
    parser.add_argument("--n-ood", type=int, default=3, help="architectures of the wide and deep splits")
    parser.add_argument("--splits", default="test,wide,deep,predefined")
    parser.add_argument("--ghn", default=None, help="GHN to evaluate (default: this benchmark's trained one)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--ship", action="store_true", help="copy the trained GHN into the package")
    parser.add_argument("--converge-epochs", type=int, default=None,
                        help="epochs of the converged reference (default: the protocol's; 0 skips that column)")
    args = parser.parse_args()
    run = TrainingRun(args.encoder, args.rank, args.name)
    source = args.ghn or str(run.folder(args.dataset) / ghn_lib.GHN_FILE)
    flags = _ghn_flags(args.dataset, source, run)
    if args.part == "train":
        train(args.dataset, run, args.epochs, args.meta_batch, args.threads, args.ship, args.batch_size,
              args.grad_clip, args.precision)
    elif args.part == "train-report":
        train_report(args.dataset, run)
    elif args.part == "baselines":
        baselines(args.dataset, args.splits.split(","), args.n, args.n_ood, args.threads, args.converge_epochs)
    elif args.part == "eval":
        evaluate(args.dataset, args.splits.split(","), args.n, args.n_ood, args.threads, source, args.converge_epochs,
                 flags)
    elif args.part == "encoders":
        encoders(args.dataset, args.threads)
    else:
        speed(args.dataset, args.threads, source, flags)


if __name__ == "__main__":
    main()
