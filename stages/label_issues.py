"""A cell's ranked label issues and suggested labels → data/issues/<cell>.parquet (+ .csv), with the
detection quality (where the truth is known) in metrics/label_issues/<cell>.json.

The evaluate stage writes them (one process per cell: a stage of its own would cost a torch
import and an MLflow store open per cell for a second of work); `mtadcs label-issues` reads
them, and builds them when they are missing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.analysis.label_issues import (
    ISSUE_CUT,
    RELABEL_CONFIDENCE,
    cleaned_labels,
    confidence_set_shares,
    detection_quality,
    estimate_transition,
    find_label_issues,
    kept_samples,
    trace_summary,
)
from pipeline.config import CellConfig
from pipeline.data.datasets import Dataset
from pipeline.data.trace_store import read_traces
from pipeline.errors import UserError
from pipeline.files import atomic_path
from pipeline.method import engine
from pipeline.method.engine import CHECKPOINT
from pipeline.method.trainer import TrainingLabels, load_checkpoint
from stages.common import NOT_RUN, StageContext, is_not_run, load_data, load_labels, write_json


def final_checkpoint(ctx: StageContext) -> Path:
    """The model a user takes home: after fine-tuning when the cell fine-tunes."""
    return ctx.paths.stage_dir("finetune" if ctx.cell.finetune.epochs > 0 else "train") / CHECKPOINT


def build(ctx: StageContext, data: Dataset, labels: TrainingLabels, probs: np.ndarray | None = None) -> pd.DataFrame:
    """The ranked issue table of a cell whose train (and finetune) stages are done."""
    return issues_for_run(ctx.cell, data, labels, ctx.paths.stage_dir("train"), final_checkpoint(ctx), probs)


def issues_for_run(cell: CellConfig, data: Dataset, labels: TrainingLabels, train_dir: Path,
                   final: Path, probs: np.ndarray | None = None) -> pd.DataFrame:
    """Label issues from a run's train directory (checkpoint: final G and current labels;
    epochs/: traces) and the final model's checkpoint (or its softmax on the training images,
    `probs`, when the caller computed it already)."""
    state = load_checkpoint(train_dir / CHECKPOINT)
    if probs is None:
        probs = engine.train_probabilities(cell, data, final)
    traces_dir = train_dir / "epochs"
    traces = read_traces(traces_dir, columns=["index", "in_G", "lof_score"]) if traces_dir.exists() \
        else pd.DataFrame(columns=["index", "in_G", "lof_score", "epoch"])
    share, last_lof = trace_summary(traces, data.train.index)
    issues = find_label_issues(
        labels.given, state["labels"].numpy(), state["in_G"].numpy(), probs,
        transition=estimate_transition(probs, labels.given, data.num_classes), index=data.train.index,
        uses_confidence_set=not cell.method.keeps_all, share_in_G=share, last_lof=last_lof,
        clean=labels.clean, paths=data.train.paths)
    names = np.asarray(data.class_names, dtype=object)
    issues.insert(issues.columns.get_loc("given_label") + 1, "given_class", names[issues["given_label"]])
    issues.insert(issues.columns.get_loc("suggested_label") + 1, "suggested_class", names[issues["suggested_label"]])
    return issues


def write(ctx: StageContext, data: Dataset, labels: TrainingLabels, probs: np.ndarray | None = None
          ) -> dict[str, float]:
    """Build and write the cell's issue table and its metrics JSON; return the MLflow metrics."""
    issues = build(ctx, data, labels, probs)
    # a figure with nothing to measure (no suggestion confident enough) is left out: JSON has no NaN
    quality = {k: v for k, v in detection_quality(issues).items() if np.isfinite(v)}
    shares = confidence_set_shares(issues["given_label"].to_numpy(),
                                   kept_samples(issues, not ctx.cell.method.keeps_all), data.num_classes)
    _write_table(issues, ctx)
    write_json(ctx.paths.label_issues_metrics, {"status": "done", "samples": len(issues),
                                                "flagged": int(issues["is_issue"].sum()), **quality, **shares})
    return {f"label_issues/{k}": float(v) for k, v in {"flagged": issues["is_issue"].sum(), **quality}.items()}


def quality_lines(quality: dict[str, float], min_confidence: float) -> list[str]:
    """The detection figures as `mtadcs label-issues` prints them (none when the truth is unknown)."""
    if not quality:
        return []
    lines = ["against the clean labels: precision {precision:.1f} %, recall {recall:.1f} %, F1 {f1:.1f} %, "
             "suggested labels right on {suggested_accuracy:.1f} % of the flagged".format(**quality)]
    if "relabelled_share" in quality:  # a table with the model's confidence in its suggestions
        right = quality["relabelled_accuracy"]
        lines.append(f"suggested at >= {min_confidence:g} confidence (what --cleaned relabels): "
                     f"{quality['relabelled_share']:.1f} % of the flagged"
                     + (f", right on {right:.1f} %" if np.isfinite(right) else ", none of them that sure"))
    return lines


def write_not_run(ctx: StageContext, reason: str) -> None:
    write_json(ctx.paths.label_issues_metrics, {"status": NOT_RUN, "reason": reason})
    _write_table(pd.DataFrame(columns=["rank", "index", "given_label", "suggested_label", "issue_score"]), ctx)


def _write_table(issues: pd.DataFrame, ctx: StageContext) -> None:
    target = ctx.paths.label_issues
    with atomic_path(target) as tmp:
        issues.to_parquet(tmp, index=False)
    with atomic_path(target.with_suffix(".csv")) as tmp:
        issues.to_csv(tmp, index=False)


SHOWN = ["rank", "index", "given_class", "suggested_class", "issue_score", "p_label_right", "suggestion_confidence",
         "in_final_G", "relabelled", "is_noisy", "path"]


def show(ctx: StageContext, *, top: int, out: Path | None = None, cleaned: Path | None = None,
         min_confidence: float = RELABEL_CONFIDENCE, rebuild: bool = False) -> str:
    """`mtadcs label-issues`: the cell's table (built by the stage if missing), its top `top` rows
    as text, and the exports asked for. Returns the text to print."""
    if ctx.skip_reason or is_not_run(ctx.paths.stage_dir("train")):
        raise UserError(f"cell {ctx.cell.name!r} did not run here: {ctx.skip_reason or 'train did not run'}")
    if rebuild or not ctx.paths.label_issues.exists():
        if not (ctx.paths.stage_dir("train") / CHECKPOINT).exists():
            raise UserError(f"{ctx.paths.stage_dir('train') / CHECKPOINT}: cell {ctx.cell.name!r} has not been "
                            f"trained; run `dvc repro evaluate@{ctx.cell.name}` first")
        data = load_data(ctx)
        write(ctx, data, load_labels(ctx, data))
    issues = read_issues(ctx.paths.label_issues)
    lines = [f"{ctx.paths.label_issues.relative_to(ctx.root)}: {len(issues)} samples, {int(issues['is_issue'].sum())} flagged "
             f"(issue_score >= {ISSUE_CUT}); CSV beside it"]
    lines += quality_lines(detection_quality(issues, min_confidence), min_confidence)
    if top:
        shown = issues.head(top)[[c for c in SHOWN if c in issues]]
        lines.append(shown.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    if out is not None:
        _export(issues, out)
        lines.append(f"wrote {out}")
    if cleaned is not None:
        table = cleaned_labels(issues, min_confidence)
        _export(table, cleaned)
        lines.append(f"wrote {cleaned}: {len(table)} of {len(issues)} samples kept, "
                     f"{int(table['relabelled'].sum())} relabelled")
    return "\n".join(lines)


def read_issues(path: Path) -> pd.DataFrame:
    try:
        return pd.read_parquet(path)
    except Exception as err:
        raise UserError(f"{path}: unreadable label-issue table ({type(err).__name__}); "
                        "rerun with --rebuild") from None


def _export(frame: pd.DataFrame, path: Path) -> None:
    if path.suffix not in (".csv", ".parquet"):
        raise UserError(f"{path}: unknown export format; name it .csv or .parquet")
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False) if path.suffix == ".csv" else frame.to_parquet(tmp, index=False)
