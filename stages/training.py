"""warmup, train and finetune stages: one engine phase each, checkpoint + history.csv in
data/runs/<cell>/<stage>/. A stage killed mid-way resumes from its last finished epoch
when run again with the same inputs (the checkpoint carries a fingerprint of them)."""

from __future__ import annotations

import time
from collections.abc import Callable

from pipeline import distributed
from pipeline.method import engine
from pipeline.method.engine import CHECKPOINT
from pipeline.runtime import peak_memory_mib
from stages.common import (
    CODE_ROOT,
    StageContext,
    clear_not_run,
    digest,
    is_not_run,
    load_data,
    load_labels,
    resolve_path,
    stage_run,
    write_history,
    write_json,
    write_not_run,
)

PHASE_INPUTS = {  # the config sections a phase's result depends on (what its fingerprint covers)
    "warmup": ("data", "noise", "model", "method", "optim"),
    "train": ("data", "noise", "model", "method", "optim", "train"),
    "finetune": ("data", "noise", "model", "method", "optim", "train", "finetune"),
}
# The code a training phase runs: dvc.yaml lists these as deps of warmup/train/finetune, and
# the resume fingerprint hashes them, so a code change restarts a persisted stage instead of
# resuming (or silently keeping) a result the old code made. tests/test_dvc_yaml.py checks both agree.
TRAINING_CODE = (
    "pipeline/method/engine.py", "pipeline/method/trainer.py", "pipeline/method/device.py", "pipeline/method/models.py", "pipeline/method/augment.py", "pipeline/method/contrastive.py",
    "pipeline/method/losses.py", "pipeline/method/selection.py", "pipeline/method/correction.py", "pipeline/method/evaluate.py",
    "pipeline/method/outside_g.py", "pipeline/method/batch_augment.py", "pipeline/method/batches.py",
    "pipeline/distributed.py",
    "pipeline/data/trace_store.py", "pipeline/data/datasets.py", "pipeline/data/noise.py", "pipeline/runtime.py",
    "pipeline/files.py", "pipeline/config.py", "pipeline/errors.py", "pipeline/layout.py", "pipeline/faults.py", "stages/training.py",
    "stages/common.py",
)
PREVIOUS = {"warmup": None, "train": "warmup", "finetune": "train"}


def run(ctx: StageContext, stage: str) -> None:
    out_dir = ctx.paths.stage_dir(stage)
    previous = PREVIOUS[stage]
    writer = distributed.rank_from_env() == 0  # the process group does not exist yet
    if ctx.skip_reason or (previous and is_not_run(ctx.paths.stage_dir(previous))):
        if writer:
            write_not_run(out_dir, ctx.skip_reason or f"{previous} did not run")
        return
    if writer:
        clear_not_run(out_dir)  # the out dir persists: a "not run" from an earlier run must go
    data = load_data(ctx)
    labels = load_labels(ctx, data)
    before = ctx.paths.stage_dir(previous) / CHECKPOINT if previous else None
    config = {s: getattr(ctx.cell, s).model_dump() for s in PHASE_INPUTS[stage]} | {"seed": ctx.cell.runtime.seed}
    code = [CODE_ROOT / name for name in TRAINING_CODE]
    data_file = resolve_path(ctx, ctx.cell.data.path)
    inputs = [ctx.paths.labels, *code, *([before] if before else []), *([data_file] if data_file and data_file.is_file() else [])]
    fingerprint = digest(config, *inputs)
    start = time.perf_counter()
    with stage_run(ctx, stage) as tracker:
        meter = EpochMeter(tracker.log_epoch)
        if stage == "warmup":
            trainer = engine.run_warmup(ctx.cell, data, labels, out_dir, fingerprint=fingerprint, on_epoch=meter)
        elif stage == "train":
            trainer = engine.run_train(ctx.cell, data, labels, before, out_dir, fingerprint=fingerprint,
                                       on_epoch=meter)
        else:
            trainer = engine.run_finetune(ctx.cell, data, labels, before, out_dir, fingerprint=fingerprint,
                                          on_epoch=meter)
        if not distributed.is_main():
            return  # under torchrun rank 0 writes the stage's outputs
        write_history(out_dir / "history.csv", trainer.history)
        tracker.log_artifact(out_dir / "history.csv", stage)
        if meter.records:  # a re-run with nothing left to train leaves its outputs byte-identical
            usage = meter.usage(time.perf_counter() - start, trainer.device)
            write_json(out_dir / "resources.json", usage)
            tracker.log_metrics({f"resources/{k}": v for k, v in usage.items()})


class EpochMeter:
    """The stage's epoch callback: logs each record to MLflow and meters what that costs."""

    def __init__(self, log_epoch: Callable[[dict], None]) -> None:
        self.log_epoch = log_epoch
        self.records = 0
        self.mlflow_seconds = 0.0

    def __call__(self, record: dict) -> None:
        started = time.perf_counter()
        self.log_epoch(record)
        self.mlflow_seconds += time.perf_counter() - started
        self.records += 1

    def usage(self, wall_seconds: float, device) -> dict[str, float]:
        """This process's share of the stage (a resumed run counts only the epochs it ran):
        wall time from data loaded to last epoch logged, peak memory, and MLflow time per
        logged record (one per epoch; the train stage adds its opening selection)."""
        return {"wall_seconds": wall_seconds, **peak_memory_mib(device), "epochs_logged": self.records,
                "mlflow_seconds": self.mlflow_seconds,
                "mlflow_seconds_per_epoch": self.mlflow_seconds / self.records}
