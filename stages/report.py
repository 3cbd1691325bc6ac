"""report stage: the paper's tables and figures beside ours → reports/ (Markdown, CSV, PNG, DVC plots)."""

from __future__ import annotations

from pathlib import Path

from pipeline.config import load_params, resolve_cell
from pipeline.layout import CellPaths, reports_dir
from pipeline.report import build
from pipeline.tracking import mlflow_runs
from stages.common import code_commit


def run(root: Path, params_file: Path) -> list[Path]:
    params = load_params(params_file if params_file.is_absolute() else root / params_file)
    cells = list(params.runs)
    paths = {cell: CellPaths(root, cell) for cell in cells}
    written = build.write_report(
        root / "metrics", cells,
        {cell: resolve_cell(params, cell).model_dump(exclude={"name"}) for cell in cells},
        reports_dir(root),
        traces_for={cell: p.stage_dir("train") / "epochs" for cell, p in paths.items()},
        labels_for={cell: p.labels for cell, p in paths.items()},
        histories_for={cell: p.plots for cell, p in paths.items()},
        figure_cell=params.report.figure_cell,
    )
    if params.tracking.enabled:
        mlflow_runs.log_report(mlflow_runs.default_tracking_uri(root), params.tracking.experiment, reports_dir(root),
                            {"git_commit": code_commit(root), "cells": str(len(cells))})
    return written
