"""The report stage's one call: read every cell, build the tables and figures, write them all."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline.config import CellIdentity
from pipeline.files import atomic_path, write_text_atomic
from pipeline.report.figure_cells import FigureCells, default_figure_cells
from pipeline.report.figure_outputs import draw_figures, dvc_plot_data
from pipeline.report.inputs import load_cell_metrics, load_cells, load_paper_tables
from pipeline.report.markdown import render_markdown
from pipeline.report.tables import cells_table, label_issues_table, paper_tables, project_table


def _write_csv(frame: pd.DataFrame, path: Path) -> Path:
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)
    return path


def write_report(metrics_dir: str | Path, identities: Mapping[str, CellIdentity], out_dir: str | Path, *,
                 traces_for: Mapping[str, Path], labels_for: Mapping[str, Path],
                 histories_for: Mapping[str, Path] | None = None, settings: Any = None,
                 figures: FigureCells | None = None, figure_cell: str | None = None) -> list[Path]:
    """Write report.md, table1/2a/2b/3.csv, project.csv, cells.csv, label_issues.csv, fig4/5a/5b.png and
    plots/*.csv into `out_dir`; return the paths written.

    `identities`: every configured cell, in params.yaml's order, → what it is (resolved from
    params.yaml). It alone places a cell in the tables; `metrics_dir/<cell>.json` supplies only
    its numbers and status, and a cell without one is shown as "not run".
    `settings`: cell → its resolved params sections (or a string), listed under "Settings" for
    the reader; it does not affect placement. `traces_for` / `labels_for` / `histories_for`:
    cell → its trace directory, label file and history CSV. `figures` says which cells feed
    which figure; when None, `default_figure_cells(cells, figure_cell)` chooses.
    """
    out = Path(out_dir)
    paper = load_paper_tables()
    cells = load_cells(metrics_dir, identities)
    frames = {**paper_tables(cells, paper), "project": project_table(cells, paper), "cells": cells_table(cells, paper),
              "label_issues": label_issues_table(load_cell_metrics(Path(metrics_dir) / "label_issues", list(identities)))}
    written = [_write_csv(frame, out / f"{name}.csv") for name, frame in frames.items()]
    chosen = figures or default_figure_cells(cells, figure_cell)
    figs = draw_figures(chosen, cells, out, traces_for, labels_for, histories_for or {})
    written += figs.paths + dvc_plot_data(figs.data, out)
    write_text_atomic(out / "report.md", render_markdown(cells, frames, figs, settings))
    return [out / "report.md", *written]
