"""The one training loop of bitsmith: every method trains through this Trainer and extends it with callbacks."""

from __future__ import annotations

import copy
import json
import math
import statistics
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset, DistributedSampler

from bitsmith import _config, _io
from bitsmith.engine import distributed as dist
from bitsmith.engine.callbacks import Callback
from bitsmith.engine.checkpoint import check_shared, load_checkpoint, save_checkpoint
from bitsmith.engine.config import TrainConfig
from bitsmith.engine.progress import EpochProgress
from bitsmith.engine.seeding import deterministic_kernels, rng_state, seed_everything, set_rng_state
from bitsmith.errors import BitsmithError, CheckpointError

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
CHECKPOINT_FILE = "checkpoint.safetensors"
#: metrics records of steps dropped after a non-finite loss or gradient (``TrainConfig.on_nonfinite``)
NONFINITE_RECORDS = ("skip", "restore")


class NonFiniteLossError(BitsmithError):
    """The loss, a gradient or a weight became NaN or infinite; the last checkpoint on disk is the last good state."""


def dataset_tensors(data: Dataset) -> tuple[torch.Tensor, torch.Tensor]:
    """All images and labels of a dataset as two tensors (fast path for in-memory datasets)."""
    if hasattr(data, "tensors") and callable(data.tensors):
        x, y = data.tensors()
        return x, y
    xs, ys = zip(*(data[i] for i in range(len(data))), strict=True)
    return torch.stack([torch.as_tensor(x) for x in xs]), torch.as_tensor(ys, dtype=torch.long)


@torch.no_grad()
def evaluate_model(model: nn.Module, data: Dataset | tuple[torch.Tensor, torch.Tensor], batch_size: int = 512,
                   device: torch.device | str | None = None) -> dict[str, float]:
    """Mean cross-entropy loss and top-1 accuracy of ``model`` on ``data`` (model left in its original mode)."""
    x_all, y_all = data if isinstance(data, tuple) else dataset_tensors(data)
    device = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    loss_sum, correct = 0.0, 0
    for i in range(0, len(y_all), batch_size):
        x = x_all[i:i + batch_size].to(device)
        y = y_all[i:i + batch_size].to(device)
        out, target = stacked(model(x), y)
        loss_sum += F.cross_entropy(out, target, reduction="sum").item() * len(y) / len(target)
        correct += (out.argmax(1) == target).sum().item() * len(y) / len(target)
    model.train(was_training)
    n = max(len(y_all), 1)
    return {"loss": loss_sum / n, "acc": correct / n}


def stacked(out: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and targets for the loss: a model may return (M, B, classes), M predictions for the same batch (e.g. one
    per architecture of a hypernetwork's meta-batch); they are flattened and the targets repeated, so the loss and
    accuracy are the mean over the M predictions."""
    if out.dim() == 3 and y.dim() == 1 and out.shape[1] == y.shape[0]:
        return out.flatten(0, 1), y.repeat(out.shape[0])
    return out, y


def is_run_dir(path: str | Path) -> bool:
    """True if ``path`` holds a bitsmith run (a config and a checkpoint)."""
    p = Path(path)
    return (p / CONFIG_FILE).is_file() and (p / CHECKPOINT_FILE).is_file()


def require_run_dir(path: str | Path) -> Path:
    """``path`` as a Path if it is a run directory, else a one-line CheckpointError saying what is missing."""
    p = Path(path)
    if not p.is_dir():
        raise CheckpointError(f"{p}: no such run directory")
    missing = [f for f in (CONFIG_FILE, CHECKPOINT_FILE) if not (p / f).is_file()]
    if missing:
        raise CheckpointError(f"{p} is not a bitsmith run directory (missing {', '.join(missing)})")
    return p


class Trainer:
    """Trains ``model`` on ``train_data`` with ``config``; evaluates each epoch; checkpoints; resumes exactly.

    ``eval_data`` maps split names (e.g. ``"val"``, ``"test"``) to datasets evaluated after every epoch.
    With ``out_dir`` set, the run directory gets ``config.json``, ``metrics.jsonl`` and ``checkpoint.safetensors``,
    written by rank 0 only and always atomically.
    """

    def __init__(self, model: nn.Module, config: TrainConfig, train_data: Dataset,
                 eval_data: Mapping[str, Dataset] | None = None, out_dir: str | Path | None = None,
                 callbacks: Sequence[Callback] = (), run_config: Mapping[str, Any] | None = None,
                 quiet: bool = False) -> None:
        self.config = config
        self.model = model
        self.train_data = train_data
        self.eval_data = dict(eval_data or {})
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.callbacks = list(callbacks)
        self.run_config = dict(run_config) if run_config is not None else {
            "command": "train", "train": _config.to_dict(config)}
        self.quiet = quiet
        self.device = dist.local_device(config.device)
        self.epoch = 0
        self.global_step = 0
        self.history: list[dict[str, Any]] = []
        self.optimizer: torch.optim.Optimizer | None = None
        self.scheduler: torch.optim.lr_scheduler.LRScheduler | None = None
        self.ddp_model: nn.Module | None = None
        self._good_state: dict[str, Any] | None = None
        self._nonfinite = 0
        self._saved_epoch = 0

    # -- construction ---------------------------------------------------------------------------------------
    def _build_optimizer(self) -> torch.optim.Optimizer:
        cfg = self.config
        groups: list[dict[str, Any]] = []
        claimed: set[int] = set()
        for cb in self.callbacks:
            for group in cb.param_groups(self.model) or []:
                params = [p for p in group["params"] if p.requires_grad]
                claimed.update(id(p) for p in params)
                extra = {"lr": cfg.lr * group["lr_scale"]} if "lr_scale" in group else {}
                groups.append({**group, **extra, "params": params})
        default = [p for p in self.model.parameters() if p.requires_grad and id(p) not in claimed]
        groups.insert(0, {"params": default})
        # foreach: one multi-tensor kernel per step instead of torch's per-parameter loop on CPU (quantized models
        # carry many small step-size parameters)
        if cfg.optimizer == "sgd":
            return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                                   foreach=True)
        if cfg.optimizer == "adamw":
            return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay, foreach=True)
        return torch.optim.Adam(groups, lr=cfg.lr, weight_decay=cfg.weight_decay, foreach=True)

    def _build_scheduler(self, optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LRScheduler | None:
        cfg = self.config
        if cfg.scheduler == "cosine":
            return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs)
        if cfg.scheduler == "step":
            return torch.optim.lr_scheduler.StepLR(optimizer, step_size=cfg.step_size, gamma=cfg.gamma)
        return None

    # -- checkpointing --------------------------------------------------------------------------------------
    def checkpoint_state(self) -> dict[str, Any]:
        """Everything needed to continue this run bit-for-bit."""
        assert self.optimizer is not None
        rng_tensors, rng_meta = rng_state()
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "rng": rng_tensors,
            "rng_meta": rng_meta,
            "epoch": self.epoch,
            "global_step": self.global_step,
            "history": self.history,
            "callbacks": [cb.state_dict() for cb in self.callbacks],
            "train_config": _config.to_dict(self.config),
        }

    def _save(self) -> None:
        """Checkpoint first, then metrics.jsonl: the metrics on disk never run ahead of the checkpoint."""
        self._check_weights()
        if self.out_dir is not None and dist.is_main():
            save_checkpoint(self.out_dir / CHECKPOINT_FILE, self.checkpoint_state())
            self._write_metrics()
        self._saved_epoch = self.epoch + 1

    def _write_metrics(self) -> None:
        """metrics.jsonl from the history in memory (rank 0, atomically)."""
        if self.out_dir is not None and dist.is_main():
            _io.write_text(self.out_dir / METRICS_FILE, "".join(jsonl_line(r) for r in self.history))

    def _restore(self) -> int:
        """Load the run's checkpoint; returns the first epoch still to train."""
        assert self.out_dir is not None and self.optimizer is not None
        require_run_dir(self.out_dir)
        state = load_checkpoint(self.out_dir / CHECKPOINT_FILE, map_location="cpu")
        if "optimizer" not in state:
            raise CheckpointError(f"{self.out_dir} holds no training state (e.g. a post-training quantization run); "
                                  "there is nothing to resume")
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            if self.scheduler is not None and state.get("scheduler") is not None:
                self.scheduler.load_state_dict(state["scheduler"])
            for cb, cb_state in zip(self.callbacks, state.get("callbacks", []), strict=False):
                cb.load_state_dict(cb_state)
            set_rng_state(state["rng"], state["rng_meta"])
            self.history = list(state.get("history", []))
            self.global_step = int(state["global_step"])
            epoch = int(state["epoch"])
        except (KeyError, RuntimeError, ValueError, TypeError) as exc:
            msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise CheckpointError(f"{self.out_dir / CHECKPOINT_FILE}: cannot resume from it ({msg})") from None
        check_shared(self.model, state["model"], self.out_dir / CHECKPOINT_FILE)
        self._nonfinite = sum(r.get("type") in NONFINITE_RECORDS for r in self.history)
        self._saved_epoch = epoch + 1
        # a crash between the checkpoint and the metrics write leaves metrics.jsonl one epoch behind: catch it up
        self._write_metrics()
        return epoch + 1

    def _prepare_out_dir(self, resume: bool) -> None:
        if self.out_dir is None or not dist.is_main():
            return
        if not resume and (self.out_dir / CHECKPOINT_FILE).exists():
            raise BitsmithError(f"{self.out_dir} already holds a run; resume it or choose another output folder")
        try:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            for stale in self.out_dir.glob(".*.tmp"):
                stale.unlink()
            if not resume:
                _io.write_json(self.out_dir / CONFIG_FILE, self.run_config)
                _io.write_text(self.out_dir / METRICS_FILE, "")
        except OSError as exc:
            raise BitsmithError(f"cannot write to output folder {self.out_dir} ({exc.strerror})") from None

    # -- the loop -------------------------------------------------------------------------------------------
    def fit(self, resume: bool = False) -> dict[str, Any]:
        """Train for ``config.epochs`` epochs (continuing from the checkpoint if ``resume``); returns final metrics."""
        cfg = self.config
        if cfg.num_threads:
            torch.set_num_threads(cfg.num_threads)
        distributed = dist.init(self.device)
        if not resume:
            seed_everything(cfg.seed)
        self.model.to(self.device)
        if cfg.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.optimizer = self._build_optimizer()
        self.scheduler = self._build_scheduler(self.optimizer)
        self._prepare_out_dir(resume)
        start_epoch = self._restore() if resume else 0
        if resume:
            deterministic_kernels()
        self.ddp_model = self.model
        if distributed:
            self.ddp_model = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)

        x_all, y_all = dataset_tensors(self.train_data)
        world, rank = dist.world_size(), dist.rank()
        sampler = DistributedSampler(range(len(y_all)), num_replicas=world, rank=rank, shuffle=True, seed=cfg.seed)
        per_rank_batch = max(1, cfg.batch_size // world)
        for cb in self.callbacks:
            cb.on_fit_start(self)
        self._remember_good_state()

        with EpochProgress(quiet=self.quiet or not dist.is_main()) as bar:
            for epoch in range(start_epoch, cfg.epochs):
                if cfg.max_steps is not None and self.global_step >= cfg.max_steps:
                    break
                self.epoch = epoch
                sampler.set_epoch(epoch)
                indices = torch.tensor(list(sampler), dtype=torch.long)
                batches = [indices[i:i + per_rank_batch] for i in range(0, len(indices), per_rank_batch)]
                record = self._train_epoch(epoch, x_all, y_all, batches, bar)
                for cb in self.callbacks:
                    cb.after_train_epoch(self, epoch)
                evals = []
                merged = dict(record)
                for name, data in self.eval_data.items():
                    scores = evaluate_model(self.model, data, cfg.eval_batch_size, self.device)
                    evals.append({"type": "eval", "epoch": epoch + 1, "split": name, **scores})
                    merged.update({f"{name}_{key}": value for key, value in scores.items()})
                eval_keys = set(merged) - set(record)
                for cb in self.callbacks:
                    cb.after_epoch(self, epoch, merged)
                record.update({k: v for k, v in merged.items() if k not in eval_keys})
                self.history.extend([record, *evals])
                bar.end_epoch(_summary(merged))
                self._save()
                self._remember_good_state()
                dist.barrier()

        result = final_metrics(self.history)
        result["epochs"] = cfg.epochs
        for cb in self.callbacks:
            cb.on_fit_end(self, result)
        return result

    def _remember_good_state(self) -> None:
        """Keep an in-memory copy of model and optimizer state to roll back to after a non-finite step."""
        if self.config.on_nonfinite == "restore" and self.optimizer is not None:
            self._good_state = copy.deepcopy({"model": self.model.state_dict(),
                                              "optimizer": self.optimizer.state_dict()})

    def _finite(self, value: float, epoch: int, what: str = "loss") -> bool:
        """True if ``value`` is finite (on every rank). Otherwise act as ``config.on_nonfinite`` says: drop the step
        ("skip"), or roll back to the last good state and drop it ("restore"), and return False; or, with "stop"
        or once ``max_nonfinite`` steps were dropped, raise NonFiniteLossError."""
        cfg = self.config
        bad = dist.all_reduce_sum([0.0 if math.isfinite(value) else 1.0], self.device)[0] \
            if cfg.on_nonfinite != "stop" and dist.world_size() > 1 else float(not math.isfinite(value))
        if not bad:
            return True
        assert self.optimizer is not None
        if cfg.on_nonfinite == "stop" or self._nonfinite >= cfg.max_nonfinite:
            raise NonFiniteLossError(self._stop_message(f"{what} became {value} at epoch {epoch + 1}, step "
                                                        f"{self.global_step + 1}"))
        self._nonfinite += 1
        if cfg.on_nonfinite == "restore" and self._good_state is not None:
            self.model.load_state_dict(self._good_state["model"])
            self.optimizer.load_state_dict(self._good_state["optimizer"])
        self.optimizer.zero_grad(set_to_none=True)
        self.history.append({"type": cfg.on_nonfinite, "epoch": epoch + 1, "step": self.global_step, "what": what,
                             "count": self._nonfinite})
        return False

    def _stop_message(self, event: str) -> str:
        """One line: what went wrong, what the run directory still holds, what to try."""
        cfg = self.config
        if cfg.on_nonfinite != "stop":
            event += f", after {self._nonfinite} dropped step(s) (max_nonfinite {cfg.max_nonfinite})"
        if self.out_dir is None:
            kept = "no run directory was written"
        elif self._saved_epoch:
            kept = f"{self.out_dir / CHECKPOINT_FILE} holds epoch {self._saved_epoch}, the last good state"
        else:
            kept = "no checkpoint was written (the first epoch did not finish)"
        return (f"training stopped: {event}; {kept} (lower the learning rate or clip gradients; "
                "--on-nonfinite skip drops such steps instead)")

    def _grad_norm(self) -> float:
        """The total 2-norm of every gradient (NaN or Inf if any entry is), to tell a bad step before it is taken."""
        grads = [p.grad.detach() for p in self.model.parameters() if p.grad is not None]
        if not grads:
            return 0.0
        total_norm = getattr(torch.nn.utils, "get_total_norm", None)  # torch >= 2.6: one fused kernel
        if total_norm is not None:
            return float(total_norm(grads))
        return float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])))

    def _check_weights(self) -> None:
        """Refuse to checkpoint non-finite weights: the checkpoint on disk must stay the last good state."""
        bad = [name for name, p in self.model.named_parameters() if not bool(torch.isfinite(p).all())]
        if bad:
            more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
            raise NonFiniteLossError(self._stop_message(
                f"weights {', '.join(bad[:3])}{more} became non-finite in epoch {self.epoch + 1} (not checkpointed)"))

    def _train_epoch(self, epoch: int, x_all: torch.Tensor, y_all: torch.Tensor,
                     batches: list[torch.Tensor], bar: EpochProgress) -> dict[str, Any]:
        cfg = self.config
        assert self.optimizer is not None and self.ddp_model is not None
        model = self.ddp_model
        model.train()
        for cb in self.callbacks:
            cb.on_epoch_start(self, epoch)
        bar.start_epoch(f"epoch {epoch + 1}/{cfg.epochs}", len(batches))
        loss_sum, correct, seen = 0.0, 0, 0
        step_times: list[float] = []
        t_epoch = time.perf_counter()
        for idx in batches:
            x = x_all[idx].to(self.device, non_blocking=True)
            if cfg.channels_last and x.dim() == 4:
                x = x.contiguous(memory_format=torch.channels_last)
            y = y_all[idx].to(self.device, non_blocking=True)
            for cb in self.callbacks:
                cb.before_step(self, x, y)
            t0 = time.perf_counter()
            self.optimizer.zero_grad(set_to_none=True)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16"):
                raw = model(x)
            raw = raw.float()  # the loss, callbacks' extra losses and accuracy in float32 whatever the precision
            out, target = stacked(raw, y)
            loss = F.cross_entropy(out, target, label_smoothing=cfg.label_smoothing)
            for cb in self.callbacks:
                extra = cb.extra_loss(self, raw, y)
                if extra is not None:
                    loss = loss + extra
            loss_value = loss.item()
            if not self._finite(loss_value, epoch):
                continue
            loss.backward()
            if not self._finite(self._grad_norm(), epoch, "gradient norm"):
                continue
            for cb in self.callbacks:
                cb.after_backward(self)
            if cfg.grad_clip is not None:
                norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
                if not self._finite(float(norm), epoch, "gradient norm"):
                    continue
            self.optimizer.step()
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            step_times.append(time.perf_counter() - t0)
            loss_sum += loss_value * len(idx)
            correct += (out.detach().argmax(1) == target).sum().item() * len(idx) / len(target)
            seen += len(idx)
            for cb in self.callbacks:
                cb.after_step(self, self.global_step, loss_value)
            self.global_step += 1
            bar.advance(f"loss {loss_sum / max(seen, 1):.4f}")
            if cfg.max_steps is not None and self.global_step >= cfg.max_steps:
                break
        if self.scheduler is not None:
            self.scheduler.step()
        loss_sum, correct, seen = dist.all_reduce_sum([loss_sum, float(correct), float(seen)], self.device)
        return {
            "type": "epoch",
            "epoch": epoch + 1,
            "step": self.global_step,
            "lr": self.optimizer.param_groups[0]["lr"],
            "train_loss": loss_sum / max(seen, 1),
            "train_acc": correct / max(seen, 1),
            "epoch_time_s": time.perf_counter() - t_epoch,
            "step_ms_median": 1000 * statistics.median(step_times) if step_times else None,
        }


def final_metrics(history: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The last epoch record merged with that epoch's evaluations as ``<split>_<metric>`` keys; for a run that only
    evaluated (PTQ, predicted parameters) its last evaluations alone."""
    epochs = [r for r in history if r.get("type") == "epoch"]
    evals = [r for r in history if r.get("type") == "eval"]
    if not epochs and not evals:
        return {}
    last = dict(epochs[-1]) if epochs else {"epoch": evals[-1].get("epoch", 0)}
    for r in history:
        if r.get("type") == "eval" and r.get("epoch") == last["epoch"]:
            last.update({f"{r['split']}_{k}": v for k, v in r.items() if k not in ("type", "epoch", "split")})
    return last


def jsonl_line(record: Mapping[str, Any]) -> str:
    """One metrics record as a JSON line."""
    return json.dumps(dict(record)) + "\n"


def _summary(record: Mapping[str, Any]) -> str:
    parts = [f"loss {record['train_loss']:.4f}"]
    for key in ("val_acc", "test_acc"):
        if key in record:
            parts.append(f"{key.split('_')[0]} acc {100 * record[key]:.2f}%")
    return "  ".join(parts)
