"""report.md: the tables as Markdown pipe tables, with their captions, the figures with their
notes, and the settings the cells ran with."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from pipeline.analysis.label_issues import RELABEL_CONFIDENCE
from pipeline.report.figure_outputs import DrawnFigures
from pipeline.report.inputs import CellResult
from pipeline.report.placement import TABLES
from pipeline.report.tables import SECTION_OURS, SECTION_PAPER

TABLE_TEXT = {
    "table1": ("Table 1: CIFAR-10/100, test top-1 (%) after the MTaDCS epochs",
               "No fine-tuning. Cross-Entropy (ours) is the cell with every switch off, trained on all samples."),
    "table2a": ("Table 2a: test top-1 (%) after fine-tuning (MTaDCS+)",
                "Fine-tuning on the final confidence set G with weak augmentation and mixup."),
    "table2b": ("Table 2b: WebVision-50, top-1/top-5 (%) on WebVision val and ILSVRC12 val",
                "MTaDCS (ours): after the MTaDCS epochs; MTaDCS+ (ours): after fine-tuning. "
                "Both are set beside the paper's one MTaDCS row."),
    "table3": ("Table 3: ablation, test top-1 (%) after the MTaDCS epochs",
               "LOF: LOF selection, CS: confidence set kept across epochs, SR: sample removal, "
               "CL: contrastive loss, Mixup, LC: label correction. \"none\" is Cross-Entropy."),
}
FIGURE_TITLES = {"fig4": "Figure 4", "fig5a": "Figure 5a", "fig5b": "Figure 5b"}


# --------------------------------------------------------------------------- pipe tables

def _fmt(value: Any, signed: bool = False, raw: bool = False) -> str:
    """A table entry: numbers at the paper's 0.1 (signed for differences), or as given (`raw`)."""
    if value is None or (isinstance(value, (float, np.floating)) and math.isnan(value)):
        return "—"
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return f"{value:g}" if raw else (f"{value:+.1f}" if signed else f"{value:.1f}")
    return str(value).replace("|", "\\|")


def markdown_table(frame: pd.DataFrame, raw: bool = False) -> str:
    """A pipe table; a row whose first cell starts with "Δ" is signed (+1.2 / -3.4)."""
    header = [str(c).replace("|", "\\|") for c in frame.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    for row in frame.itertuples(index=False):
        signed = str(row[0]).startswith("Δ")
        lines.append("| " + " | ".join([_fmt(row[0])] + [_fmt(v, signed, raw) for v in row[1:]]) + " |")
    return "\n".join(lines)


# --------------------------------------------------------------------------- sections

def _summary(cells: Mapping[str, CellResult]) -> str:
    done = sum(result.done for result in cells.values())
    return (f"{len(cells)} cells configured: {done} run, {len(cells) - done} not run. "
            "Tables are at the paper's precision (0.1 points): \"(ours)\" is this project's number, "
            "\"(paper)\" the published one, \"Δ\" ours − paper (from the rounded numbers). "
            "\"not run\" marks a configured cell that did not run (the reason is under \"All cells\"); "
            "\"—\" a column with no cell in this grid, or no number.")


def _table_markdown(title: str, what: str, frame: pd.DataFrame) -> str:
    ours = frame[frame["section"] == SECTION_OURS].drop(columns=["section"])
    paper = frame[frame["section"] == SECTION_PAPER].drop(columns=["section"])
    parts = [f"## {title}", "", what, ""]
    if ours.empty:
        parts += ["No cell of this grid falls in this table.", ""]
    else:
        cells = "; ".join(f"{row}: {', '.join(c)}" for row, c in frame.attrs.get("cells", {}).items())
        parts += [markdown_table(ours), "", f"Cells: {cells}.", ""]
    parts += ["The paper's table (all methods):", "", markdown_table(paper), ""]
    return "\n".join(parts)


def _cells_markdown(project: pd.DataFrame, every: pd.DataFrame) -> str:
    parts = ["## This project's cells", "",
             "Cells with no place in the paper's tables (datasets or rates the paper does not have, "
             "or a second cell for a slot already taken).", ""]
    parts.append(markdown_table(project) if not project.empty else "None: every cell is in a paper table.")
    parts += ["", "## All cells", "", markdown_table(every), ""]
    return "\n".join(parts)


def _label_issues_markdown(frame: pd.DataFrame) -> str:
    return "\n".join([
        "## Label issues", "",
        "Per cell, `data/issues/<cell>.parquet` (and .csv) ranks every training sample by its issue score; "
        "`mtadcs label-issues --cell <cell>` prints the top of it. Flagged: score >= 0.5, the samples the run's "
        "final confidence set did not keep under their given label. Where the clean labels are known: "
        "precision, recall and F1 (%) of the flag against \"the given label is wrong\", and the accuracy (%) "
        "of the suggested labels on the flagged samples (suggested_accuracy); relabelled_share is the share (%) "
        f"of the flagged whose suggestion the model gives at least {RELABEL_CONFIDENCE:g} (what `mtadcs "
        "label-issues --cleaned` relabels by default; it drops the rest) and relabelled_accuracy the accuracy "
        "(%) of those suggestions. Without clean labels, watch the last columns: G_share is "
        "the share (%) of the training set the final confidence set kept, G_class_share_min the smallest share "
        "of any class's samples (by given label) it kept, and G_weakest_class that class. A class near 0 % was "
        "emptied (the model gave up on it); G_share near 100 % means nothing was removed. For a cell whose G "
        "is all of S (cross-entropy's switches, loss weights) the shares count the samples it does not flag.", "",
        markdown_table(frame), ""])


def _figures_markdown(figs: DrawnFigures) -> str:
    parts = ["## Figures", ""]
    for name, title in FIGURE_TITLES.items():
        if name in figs.drawn:
            parts += [f"### {title}", "", f"![{title}]({name}.png)", "", figs.notes[name], ""]
        else:
            parts += [f"### {title}", "", figs.notes[name], ""]
    return "\n".join(parts)


def _flatten(settings: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in settings.items():
        if isinstance(value, Mapping):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value if isinstance(value, (int, float, str, bool, type(None))) else str(value)
    return out


def settings_markdown(settings: Any) -> str:
    """The settings the cells ran with: those common to all once, those that differ per cell."""
    if isinstance(settings, str):
        return f"```\n{settings.strip()}\n```"
    if not isinstance(settings, Mapping) or not settings:
        return "No settings were given to the report."
    flat = {cell: _flatten(s) if isinstance(s, Mapping) else {"value": s} for cell, s in settings.items()}
    keys = list(dict.fromkeys(k for s in flat.values() for k in s))
    common = [k for k in keys if len({repr(s.get(k)) for s in flat.values()}) == 1]
    differ = [k for k in keys if k not in common]
    lines = ["Common to all cells: " + (", ".join(f"`{k}` = {_fmt(flat[next(iter(flat))][k], raw=True)}" for k in common)
                                        or "none") + ".", ""]
    if differ:
        frame = pd.DataFrame([{"cell": c, **{k: s.get(k) for k in differ}} for c, s in flat.items()], dtype=object)
        lines.append(markdown_table(frame, raw=True))
    return "\n".join(lines)


def render_markdown(cells: Mapping[str, CellResult], frames: Mapping[str, pd.DataFrame],
                    figs: DrawnFigures, settings: Any) -> str:
    """report.md: `frames` holds the paper tables by name plus "project" and "cells"."""
    parts = ["# MTaDCS: this project's results beside the paper's", "", _summary(cells), ""]
    parts += [_table_markdown(*TABLE_TEXT[t], frames[t]) for t in TABLES]
    parts += [_cells_markdown(frames["project"], frames["cells"]), _label_issues_markdown(frames["label_issues"]),
              _figures_markdown(figs),
              "## Settings", "", settings_markdown(settings), ""]
    return "\n".join(parts)
