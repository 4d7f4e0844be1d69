"""Training and evaluation: the one Trainer, its callbacks, checkpoints, resume, seeding and DDP support."""

from bitsmith.engine import faults
from bitsmith.engine.batchnorm import recalibrate_bn, seeded_batches
from bitsmith.engine.callbacks import Callback
from bitsmith.engine.checkpoint import load_checkpoint, save_checkpoint
from bitsmith.engine.config import TrainConfig
from bitsmith.engine.run import TrainResult, build_datasets, build_model, load_split, save_run, train
from bitsmith.engine.trainer import (
    CHECKPOINT_FILE,
    CONFIG_FILE,
    METRICS_FILE,
    NonFiniteLossError,
    Trainer,
    dataset_tensors,
    evaluate_model,
    final_metrics,
    is_run_dir,
    require_run_dir,
    stacked,
)

evaluate = evaluate_model

faults.arm_from_env()  # test-only kill points (BITSMITH_KILL_AT); a no-op when it is unset

__all__ = [
    "CHECKPOINT_FILE", "CONFIG_FILE", "METRICS_FILE", "Callback", "NonFiniteLossError", "TrainConfig", "TrainResult",
    "Trainer",
    "build_datasets", "build_model", "dataset_tensors", "evaluate", "evaluate_model", "final_metrics", "is_run_dir",
    "load_checkpoint", "load_split",
    "recalibrate_bn", "require_run_dir", "save_checkpoint", "save_run", "seeded_batches", "stacked", "train",
]
