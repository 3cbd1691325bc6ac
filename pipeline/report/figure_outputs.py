"""Every figure the report promises, drawn from its cells' files or replaced by a note saying
why not, plus each figure's data as a CSV that dvc.yaml declares as a plot.

A figure whose cells did not run (WebVision without its data, a stopped stage) or whose files
are absent is not an error: its PNG becomes one stating why, and its plot CSV keeps its header,
so every output DVC expects exists and the report still renders.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from pipeline.data import trace_store
from pipeline.files import atomic_path
from pipeline.report.figure_cells import FigureCells
from pipeline.report.figures import figure4, figure5a, figure5b, figure_explaining_absence
from pipeline.report.inputs import CellResult
from pipeline.report.trace_stats import (
    CATEGORIES,
    categorise,
    category_counts,
    choose_epochs,
    occurrence_threshold,
)

log = logging.getLogger(__name__)

FIGURES = ("fig4", "fig5a", "fig5b")
# Only the trace columns each figure reads: traces hold features too and are large.
TRACE_FIG4 = ["epoch", "index", "in_G"]
TRACE_FIG5B = ["epoch", "index", "given_label", "in_G", "dist_to_class_centre"]
# Header-only plot data for a figure not drawn, so the DVC plot file exists with its fields.
EMPTY_PLOT_DATA = {"fig4": ["times_in_G"], "fig5a": ["epoch"],
                   "fig5b": ["epoch", *(c.replace(" ", "_") for c in CATEGORIES)], "fig5b_counts": ["category", "samples"]}


@dataclass
class DrawnFigures:
    """What drawing the figures produced: PNG paths, plot data by name, a note per figure (its
    caption, or why it was not drawn) and which figures were drawn."""

    paths: list[Path] = field(default_factory=list)
    data: dict[str, pd.DataFrame] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)
    drawn: set[str] = field(default_factory=set)


def _unavailable(cell: str | None, cells: Mapping[str, CellResult], paths: Mapping[str, Path],
                 what: str) -> str | None:
    """Why a cell's file cannot feed a figure, or None when it can."""
    if cell is None:
        return f"no cell chosen for it ({what})"
    if cell not in cells:
        return f"cell {cell} not run (not a configured cell)"
    if not cells[cell].done:
        return f"cell {cell} not run ({cells[cell].reason})"
    path = paths.get(cell)
    if path is None:
        return f"no {what} given for cell {cell}"
    if not Path(path).exists() or (what == "traces" and not any(Path(path).glob("epoch=*"))):
        return f"{what} of cell {cell} absent ({path})"
    return None


def _clean_labels(path: Path) -> pd.Series:
    labels = pd.read_parquet(path, columns=["index", "clean_label"])
    return labels.set_index("index")["clean_label"]


def _draw_fig4(chosen: FigureCells, cells: Mapping[str, CellResult], traces_for: Mapping[str, Path],
               out: Path, figs: DrawnFigures) -> None:
    why = ("the grid has no LOF-alone and LOF+CS cells to compare" if None in (chosen.fig4_lof, chosen.fig4_lof_cs)
           else _unavailable(chosen.fig4_lof, cells, traces_for, "traces")
           or _unavailable(chosen.fig4_lof_cs, cells, traces_for, "traces"))
    if why:
        figs.notes["fig4"] = f"Figure 4 not drawn: {why}."
        return
    lof = trace_store.read_traces(traces_for[chosen.fig4_lof], columns=TRACE_FIG4)
    cs = trace_store.read_traces(traces_for[chosen.fig4_lof_cs], columns=TRACE_FIG4)
    epochs = choose_epochs(sorted(set(lof["epoch"]) & set(cs["epoch"])))
    if not epochs:
        figs.notes["fig4"] = f"Figure 4 not drawn: {chosen.fig4_lof} and {chosen.fig4_lof_cs} share no traced epoch."
        return
    figs.data["fig4"] = figure4(lof, cs, epochs, out / "fig4.png")
    figs.drawn.add("fig4")
    figs.notes["fig4"] = (f"Times each sample was in G up to epochs {', '.join(map(str, epochs))} "
                          f"(~12 %, 50 %, 100 % of the run; the paper shows 30, 120, 240 of 250): "
                          f"LOF alone ({chosen.fig4_lof}) against LOF + CS ({chosen.fig4_lof_cs}).")


def _draw_fig5a(chosen: FigureCells, cells: Mapping[str, CellResult], histories_for: Mapping[str, Path],
                out: Path, figs: DrawnFigures) -> None:
    reasons = {c: _unavailable(c, cells, histories_for, "history") for c in chosen.fig5a}
    ready = [c for c, why in reasons.items() if why is None]
    missing = "; ".join(why for why in reasons.values() if why)
    if not ready:
        figs.notes["fig5a"] = f"Figure 5a not drawn: {missing or 'no cells chosen'}."
        return
    histories = {c: pd.read_csv(histories_for[c]) for c in ready}
    figs.data["fig5a"] = figure5a(histories, out / "fig5a.png")
    figs.drawn.add("fig5a")
    figs.notes["fig5a"] = (f"Size of the confidence set G and its precision per epoch for {', '.join(ready)} "
                           f"(the paper: CIFAR-10 sym 20 % and 80 %)." + (f" Left out: {missing}." if missing else ""))


def _draw_fig5b(chosen: FigureCells, cells: Mapping[str, CellResult], traces_for: Mapping[str, Path],
                labels_for: Mapping[str, Path], out: Path, figs: DrawnFigures) -> None:
    cell = chosen.fig5b
    why = _unavailable(cell, cells, traces_for, "traces") or _unavailable(cell, cells, labels_for, "labels")
    clean = None if why else _clean_labels(labels_for[cell])
    if clean is not None and clean.isna().all():
        why = f"cell {cell} has no clean labels (real noise), so no sample is known to be mislabeled"
    if why:
        figs.notes["fig5b"] = f"Figure 5b not drawn: {why}."
        return
    traces = trace_store.read_traces(traces_for[cell], columns=TRACE_FIG5B)
    categories = categorise(traces, clean)
    figs.data["fig5b"] = figure5b(traces, clean, out / "fig5b.png", categories=categories)
    figs.drawn.add("fig5b")
    figs.data["fig5b_counts"] = category_counts(categories).rename_axis("category").reset_index(name="samples")
    k = occurrence_threshold(traces["epoch"].nunique())
    figs.notes["fig5b"] = (f"Section 4.6's categories on {cell}; the paper's \"10 occurrences\" of 240 epochs is "
                           f"scaled to this run's {traces['epoch'].nunique()} traced epochs: k = {k}.")


def draw_figures(chosen: FigureCells, cells: Mapping[str, CellResult], out: Path, traces_for: Mapping[str, Path],
                 labels_for: Mapping[str, Path], histories_for: Mapping[str, Path]) -> DrawnFigures:
    """Figures 4, 5a and 5b into `out` (a PNG stating why for each one not drawn)."""
    figs = DrawnFigures()
    _draw_fig4(chosen, cells, traces_for, out, figs)
    _draw_fig5a(chosen, cells, histories_for, out, figs)
    _draw_fig5b(chosen, cells, traces_for, labels_for, out, figs)
    for name in FIGURES:
        path = out / f"{name}.png"
        if name not in figs.drawn:
            figure_explaining_absence(figs.notes[name], path)
            log.info("%s", figs.notes[name])
        figs.paths.append(path)
    for name, columns in EMPTY_PLOT_DATA.items():
        figs.data.setdefault(name, pd.DataFrame(columns=columns))
    return figs


def dvc_plot_data(frames: Mapping[str, pd.DataFrame], out_dir: str | Path) -> list[Path]:
    """Each figure's data as `out_dir/plots/<name>.csv`, which dvc.yaml can declare as plots."""
    paths = []
    for name, frame in frames.items():
        path = Path(out_dir) / "plots" / f"{name}.csv"
        with atomic_path(path) as tmp:
            frame.to_csv(tmp, index=False)
        paths.append(path)
    return paths
