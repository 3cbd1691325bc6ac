"""evaluate stage: top-1, top-5 and kNN of the model after the MTaDCS epochs (Tables 1, 3) and
after fine-tuning (Table 2a) → metrics/<cell>.json, plus the per-epoch history as a DVC plot and
the ranked label issues (stages/label_issues.py)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from pipeline.config import cell_identity
from pipeline.files import atomic_path
from pipeline.method import engine
from pipeline.method.engine import CHECKPOINT
from pipeline.method.selection import confidence_set_quality, per_class_recall
from pipeline.method.trainer import TrainingLabels
from stages import label_issues
from stages.common import NOT_RUN, StageContext, is_not_run, load_data, load_labels, stage_run, write_json


def run(ctx: StageContext) -> None:
    cell, paths = ctx.cell, ctx.paths
    summary = {"cell": cell.name} | cell_identity(cell).as_dict()
    if ctx.skip_reason or is_not_run(paths.stage_dir("train")):
        reason = ctx.skip_reason or "train did not run"
        write_json(paths.metrics, summary | {"status": NOT_RUN, "reason": reason})
        label_issues.write_not_run(ctx, reason)
        write_history_plot(ctx)
        return
    data = load_data(ctx)
    labels = load_labels(ctx, data)
    train_ckpt = paths.stage_dir("train") / CHECKPOINT
    final_path = label_issues.final_checkpoint(ctx)
    final = engine.load_trained(cell, data, final_path)  # loaded once: evaluation and the label issues
    final_outputs = engine.extract_checkpoint(cell, data, final)  # once, for kNN and the label issues
    metrics = summary | {"status": "done", "realised_rate": _realised_rate(ctx)}
    untuned = final_path == train_ckpt  # no fine-tuning: the final model is the train result
    trained = final if untuned else engine.load_trained(cell, data, train_ckpt)
    metrics["train"] = engine.evaluate_checkpoint(cell, data, labels, trained,
                                                  train=final_outputs if untuned else None)
    metrics["knn_labels"] = metrics["train"].pop("knn_labels")
    metrics["finetune"] = None
    if cell.finetune.epochs > 0:
        metrics["finetune"] = engine.evaluate_checkpoint(cell, data, labels, final, train=final_outputs)
        metrics["finetune"].pop("knn_labels")
    metrics["G"] = final_confidence_set(trained.state, labels)
    write_json(paths.metrics, metrics)
    write_history_plot(ctx)
    issue_metrics = label_issues.write(ctx, data, labels, engine.train_probabilities(cell, data, final, final_outputs))
    with stage_run(ctx, "evaluate") as tracker:
        flat = flatten(metrics) | issue_metrics
        tracker.log_metrics(flat)
        tracker.log_parent_metrics(flat)
        tracker.log_artifact(paths.metrics, "metrics")
        tracker.log_artifact(paths.label_issues.with_suffix(".csv"), "label_issues")
        if cell.tracking.log_model:
            tracker.log_artifact(final_path, "model")


def final_confidence_set(state: dict, labels: TrainingLabels) -> dict:
    """Size of a checkpoint's G (its saved `state`) and, where the clean labels are known, its
    precision, recall and smallest per-class recall, in percent."""
    in_G, current = state["in_G"].numpy(), state["labels"].numpy()
    if labels.clean is None:
        return {"size": int(in_G.sum())}
    q = confidence_set_quality(in_G, current, labels.clean)
    by_class = per_class_recall(in_G, current, labels.clean, int(labels.clean.max()) + 1)
    return {"size": int(q["size"]), "precision": 100.0 * q["precision"], "recall": 100.0 * q["recall"],
            "min_class_recall": 100.0 * float(np.nanmin(by_class))}


def _realised_rate(ctx: StageContext) -> float | None:
    import pyarrow.parquet as pq

    meta = pq.read_schema(ctx.paths.labels).metadata or {}
    return json.loads(meta.get(b"mtadcs", b"{}")).get("realised_rate")


def flatten(metrics: dict) -> dict[str, float]:
    """Numeric leaves as 'train/test/top1', 'G/precision', ... for MLflow."""
    flat: dict[str, float] = {}
    for phase in ("train", "finetune", "G"):
        for key, value in (metrics.get(phase) or {}).items():
            if isinstance(value, int | float):
                flat[f"{phase}/{key}"] = float(value)
    return flat


def write_history_plot(ctx: StageContext) -> None:
    """plots/<cell>.csv: every phase's per-epoch history in one table (a DVC plot)."""
    frames = [pd.read_csv(p) for s in ("warmup", "train", "finetune")
              if (p := ctx.paths.stage_dir(s) / "history.csv").exists() and p.stat().st_size > 1]
    history = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["phase", "epoch"])
    history.insert(0, "step", range(len(history)))
    with atomic_path(ctx.paths.plots) as tmp:
        history.to_csv(tmp, index=False)
