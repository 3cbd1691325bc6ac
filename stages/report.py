"""report stage: the paper's tables and figures beside ours → reports/ (Markdown, CSV, PNG, DVC plots)."""

from __future__ import annotations

from pathlib import Path

from pipeline.config import cell_identity, load_params, resolve_cell
from pipeline.layout import CellPaths, reports_dir
from pipeline.report import write_report
from pipeline.tracking import mlflow_runs
from pipeline.tracking.provenance import code_commit


def run(root: Path, params_file: Path) -> list[Path]:
    params = load_params(params_file if params_file.is_absolute() else root / params_file)
    # Every cell's identity comes from params.yaml, resolved here: the report places cells by it
    # alone, so a cell that never wrote metrics lands where it would have.
    resolved = {name: resolve_cell(params, name) for name in params.runs}
    paths = {cell: CellPaths(root, cell) for cell in resolved}
    written = write_report(
        root / "metrics", {cell: cell_identity(config) for cell, config in resolved.items()}, reports_dir(root),
        settings={cell: config.model_dump(exclude={"name"}) for cell, config in resolved.items()},
        traces_for={cell: p.stage_dir("train") / "epochs" for cell, p in paths.items()},
        labels_for={cell: p.labels for cell, p in paths.items()},
        histories_for={cell: p.plots for cell, p in paths.items()},
        figure_cell=params.report.figure_cell,
    )
    if params.tracking.enabled:
        mlflow_runs.log_report(mlflow_runs.default_tracking_uri(root), params.tracking.experiment, reports_dir(root),
                            {"git_commit": code_commit(root), "cells": str(len(resolved))})
    return written
