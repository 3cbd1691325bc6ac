"""warmup, train and finetune stages: one engine phase each, checkpoint + history.csv in
data/runs/<cell>/<stage>/. A stage killed mid-way resumes from its last finished epoch
when run again with the same inputs (the checkpoint carries a fingerprint of them)."""

from __future__ import annotations

from pipeline import engine
from pipeline.engine import CHECKPOINT
from stages.common import (
    StageContext,
    digest,
    is_not_run,
    load_data,
    load_labels,
    stage_run,
    write_history,
    write_not_run,
)

PHASE_INPUTS = {  # the config sections a phase's result depends on (what its fingerprint covers)
    "warmup": ("data", "noise", "model", "method", "optim"),
    "train": ("data", "noise", "model", "method", "optim", "train", "evaluate"),
    "finetune": ("data", "noise", "model", "method", "optim", "train", "finetune", "evaluate"),
}
PREVIOUS = {"warmup": None, "train": "warmup", "finetune": "train"}


def run(ctx: StageContext, stage: str) -> None:
    out_dir = ctx.paths.stage_dir(stage)
    previous = PREVIOUS[stage]
    if ctx.skip_reason or (previous and is_not_run(ctx.paths.stage_dir(previous))):
        write_not_run(out_dir, ctx.skip_reason or f"{previous} did not run")
        return
    data = load_data(ctx)
    labels = load_labels(ctx, data)
    before = ctx.paths.stage_dir(previous) / CHECKPOINT if previous else None
    config = {s: getattr(ctx.cell, s).model_dump() for s in PHASE_INPUTS[stage]}
    fingerprint = digest(config, ctx.paths.labels, *([before] if before else []))
    with stage_run(ctx, stage) as tracker:
        if stage == "warmup":
            trainer = engine.run_warmup(ctx.cell, data, labels, out_dir, fingerprint=fingerprint,
                                        on_epoch=tracker.log_epoch)
        elif stage == "train":
            trainer = engine.run_train(ctx.cell, data, labels, before, out_dir, fingerprint=fingerprint,
                                       on_epoch=tracker.log_epoch)
        else:
            trainer = engine.run_finetune(ctx.cell, data, labels, before, out_dir, fingerprint=fingerprint,
                                          on_epoch=tracker.log_epoch)
        write_history(out_dir / "history.csv", trainer.history)
        tracker.log_artifact(out_dir / "history.csv", stage)
