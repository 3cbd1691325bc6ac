"""Figures 4, 5a and 5b drawn with matplotlib, each returning the data it plotted (for DVC).

Figures use matplotlib's object API (`Figure`, rendered by Agg): no pyplot state and no
display, so the stage runs headless and figures never leak into one another.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from pipeline.files import atomic_path
from pipeline.report.trace_stats import (
    CATEGORIES,
    CLEAN_EASY,
    CLEAN_HARD,
    MISLABELED_EASY,
    MISLABELED_HARD,
    UNCLASSIFIED,
    categorise,
    category_counts,
    category_distances,
    occurrence_threshold,
    selection_counts,
    times_in_g,
)

DPI = 120
CATEGORY_COLOURS = {CLEAN_HARD: "C0", MISLABELED_HARD: "C1", CLEAN_EASY: "C2", MISLABELED_EASY: "C3",
                    UNCLASSIFIED: "0.6"}


def _new_figure(width: float, height: float) -> Figure:
    return Figure(figsize=(width, height), layout="constrained")


def _save(fig: Figure, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)


# --------------------------------------------------------------------------- Figure 4

def _stairs(ax: Any, times: pd.Series, n_max: int, label: str, colour: str) -> None:
    """Histogram of integer counts 0..n_max, in at most ~40 bins of whole numbers."""
    width = max(1, math.ceil((n_max + 1) / 40))
    edges = np.arange(-0.5, n_max + width + 0.5, width)
    counts, _ = np.histogram(times.to_numpy(), bins=edges)
    ax.stairs(counts, edges, fill=True, alpha=0.35, color=colour)
    ax.stairs(counts, edges, color=colour, label=label, linewidth=1.5)


def figure4(traces_lof: pd.DataFrame, traces_lof_cs: pd.DataFrame, epochs: Sequence[int],
            path: str | Path) -> pd.DataFrame:
    """Fig. 4: how many samples were in G how many times up to each epoch, LOF alone (G rebuilt
    every epoch) against LOF + CS (G kept). Returns the plotted counts (wide, for a DVC plot)."""
    fig = _new_figure(4.0 * len(epochs), 3.6)
    axes = np.atleast_1d(fig.subplots(1, len(epochs), squeeze=False)[0])
    for ax, e in zip(axes, epochs, strict=True):
        n_max = int((np.unique(traces_lof_cs["epoch"]) <= e).sum())
        _stairs(ax, times_in_g(traces_lof, e), n_max, "LOF", "C3")
        _stairs(ax, times_in_g(traces_lof_cs, e), n_max, "LOF + CS", "C0")
        ax.set(title=f"up to epoch {e} ({n_max} traced epoch{'s' if n_max != 1 else ''})", xlabel="times in G",
               xlim=(-0.5, n_max + 0.5))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[0].set_ylabel("number of samples")
    axes[0].legend()
    fig.suptitle("Times each sample was in the confidence set G (Fig. 4)")
    _save(fig, path)
    lof, cs = selection_counts(traces_lof, epochs), selection_counts(traces_lof_cs, epochs)
    data = lof.add_prefix("lof_e").join(cs.add_prefix("lof_cs_e"), how="outer").fillna(0).astype(int)
    return data.reset_index()


# --------------------------------------------------------------------------- Figure 5a

def _g_curve(history: pd.DataFrame) -> pd.DataFrame:
    """|G| and its precision per epoch before fine-tuning (fine-tuning does not change G)."""
    if "G_size" not in history:
        return pd.DataFrame(columns=["epoch", "G_size"])
    h = history[(history["phase"] != "finetune") & history["G_size"].notna()]
    cols = ["epoch", "G_size"] + (["G_precision"] if "G_precision" in h else [])
    return h[cols].drop_duplicates("epoch", keep="last").sort_values("epoch")


def figure5a(histories: Mapping[str, pd.DataFrame], path: str | Path) -> pd.DataFrame:
    """Fig. 5a: |G| (solid, left axis) and its precision in % (dashed, right axis) per epoch,
    one colour per cell. Precision is absent under real noise and then not drawn."""
    fig = _new_figure(7.5, 4.2)
    ax = fig.subplots()
    right = ax.twinx()
    merged: pd.DataFrame | None = None
    for i, (cell, history) in enumerate(histories.items()):
        curve = _g_curve(history)
        ax.plot(curve["epoch"], curve["G_size"], color=f"C{i}", label=f"{cell}: |G|")
        if "G_precision" in curve and curve["G_precision"].notna().any():
            right.plot(curve["epoch"], curve["G_precision"], color=f"C{i}", ls="--", label=f"{cell}: precision")
        part = curve.set_index("epoch").add_prefix(f"{cell}_")
        merged = part if merged is None else merged.join(part, how="outer")
    ax.set(xlabel="epoch", ylabel="|G| (samples in the confidence set)")
    right.set_ylabel("precision of G (%)")
    handles = ax.get_legend_handles_labels()[0] + right.get_legend_handles_labels()[0]
    ax.legend(handles=handles, loc="lower right", fontsize="small")
    ax.set_title("Size and precision of the confidence set (Fig. 5a)")
    _save(fig, path)
    return pd.DataFrame() if merged is None else merged.reset_index()


# --------------------------------------------------------------------------- Figure 5b

def _category_bars(ax: Any, counts: pd.Series, k: int, n_epochs: int) -> None:
    ax.bar(counts.index, counts.to_numpy(), color=[CATEGORY_COLOURS[c] for c in counts.index])
    for x, n in enumerate(counts.to_numpy()):
        ax.annotate(str(int(n)), (x, n), ha="center", va="bottom", fontsize="small")
    ax.set(ylabel="number of samples", title=f"Categories (k = {k}; {n_epochs} traced epochs)")
    ax.tick_params(axis="x", labelrotation=30)


def _distance_lines(ax: Any, distances: pd.DataFrame) -> None:
    for c in CATEGORIES:
        if distances[c].notna().any():
            ax.plot(distances.index, distances[c], color=CATEGORY_COLOURS[c], label=c, marker=".")
    ax.set(xlabel="epoch", ylabel="mean distance to class centre of G", title="Distance to the class centres")
    ax.legend(fontsize="small")


def figure5b(traces: pd.DataFrame, clean: pd.Series, path: str | Path, *,
             threshold: int | None = None, categories: pd.Series | None = None) -> pd.DataFrame:
    """Fig. 5b: panel 1 the number of samples per Section 4.6 category (see `categorise`:
    the paper's "10 occurrences" scaled to the run by occurrence_threshold); panel 2 per epoch
    each category's mean distance to its class centre in G. Returns panel 2's data.
    `categories` (from `categorise`) saves recomputing them on a long run."""
    if categories is None:
        categories = categorise(traces, clean, threshold)
    n_epochs = traces["epoch"].nunique()
    k = occurrence_threshold(n_epochs) if threshold is None else threshold
    distances = category_distances(traces, categories)
    fig = _new_figure(11.0, 4.0)
    bars, lines = fig.subplots(1, 2, width_ratios=[1, 1.6])
    _category_bars(bars, category_counts(categories), k, n_epochs)
    _distance_lines(lines, distances)
    fig.suptitle("Hard and mislabeled samples (Fig. 5b)")
    _save(fig, path)
    return distances.reset_index().rename(columns=lambda c: str(c).replace(" ", "_"))


def figure_explaining_absence(message: str, path: str | Path) -> None:
    """A PNG that says why a figure is missing, so a DVC-declared output always exists."""
    fig = _new_figure(6.0, 1.5)
    fig.text(0.5, 0.5, message, ha="center", va="center", wrap=True)
    _save(fig, path)
