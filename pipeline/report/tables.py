"""The report's tables as DataFrames: the paper's Tables 1, 2a, 2b and 3 with this project's
rows beside the paper's, the table of every cell, and the table of the cells the paper has
no place for.

Numbers are at the paper's precision (0.1 points) and each difference is taken between the
rounded numbers, so the three rows a reader compares always agree; the unrounded values stay
in metrics/<cell>.json. Every configured cell is shown, run or not: one that did not run
reads "not run" in its column, so the report never fails because a run is missing.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from pipeline.config import CROSS_ENTROPY, FULL
from pipeline.layout import NOT_RUN
from pipeline.report.inputs import CellResult
from pipeline.report.placement import (
    TABLE1_ROWS,
    TABLES,
    WEBVISION,
    Column,
    paper_columns,
    percent,
    placements,
    rate_key,
)

NOT_FINETUNED = "not fine-tuned"
# Table 3 spells the full method out and calls Cross-Entropy "none".
TABLE3_NAMES = {FULL: "LOF+CS+SR+CL+Mixup+LC (full)", CROSS_ENTROPY: "none"}
SECTION_OURS, SECTION_PAPER = "ours vs paper", "paper"


def paper_wide(paper: pd.DataFrame, table: str) -> pd.DataFrame:
    """The paper's table as printed: one row per method, one column per Column label."""
    t = paper[paper["table"] == table]
    columns = paper_columns(paper, table)
    wide = pd.DataFrame(np.nan, index=pd.Index(t["method"].unique(), name="method"),
                        columns=[c.label for c in columns])
    for d, n, r, m, method, value in t[["dataset", "noise", "rate", "metric", "method", "value"]].itertuples(index=False):
        wide.loc[method, Column(d, n, rate_key(r), m).label] = float(value)
    return wide


# --------------------------------------------------------------------------- our rows

def _metric(result: CellResult, phase: str, key: str) -> float | str:
    """One number of a cell at the paper's precision, or why there is none."""
    if not result.done:
        return NOT_RUN
    block = result.metrics.get(phase)
    if block is None:
        return NOT_FINETUNED if phase == "finetune" else math.nan
    value = block.get(key)
    return math.nan if value is None else round(float(value), 1)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not math.isnan(float(v))


@dataclass
class OurRow:
    """One of our rows: its name, the paper's row it is compared with, values by column label."""

    stem: str
    paper_method: str | None
    values: dict[str, Any] = field(default_factory=dict)
    cells: list[str] = field(default_factory=list)


def _our_rows(cells: Mapping[str, CellResult], rows: Mapping[str, str], columns: Sequence[Column],
              name: Callable[[str], tuple[str, str | None]], phase: str) -> dict[str, OurRow]:
    """Group the cells placed in a table by row; `name(row)` gives (stem, paper method)."""
    out: dict[str, OurRow] = {}
    for cell, row in rows.items():
        stem, paper_method = name(row)
        our = out.setdefault(stem, OurRow(stem, paper_method))
        our.cells.append(cell)
        for c in columns:
            if c.matches(cells[cell].identity):
                our.values[c.label] = _metric(cells[cell], phase, c.metric_key)
    return out


def _with_averages(our: OurRow, columns: Sequence[Column]) -> None:
    """Table 1's Avg per dataset, from the rounded values shown, only when all are there."""
    for avg in (c for c in columns if c.noise == "avg"):
        parts = [our.values.get(c.label) for c in columns if c.dataset == avg.dataset and c.noise != "avg"]
        if parts and all(_is_number(v) for v in parts):
            our.values[avg.label] = round(float(np.mean(parts)), 1)


# --------------------------------------------------------------------------- ours beside the paper's

def _difference(ours: Mapping[str, Any], published: pd.Series) -> dict[str, Any]:
    """ours − paper per column, where both are numbers (the rounded ones, as shown)."""
    return {c: round(ours[c] - published[c], 1) if _is_number(ours[c]) and _is_number(published[c])
            else math.nan for c in published.index}


def _comparison_records(ours: Sequence[OurRow], wide: pd.DataFrame) -> list[dict[str, Any]]:
    """Our rows, each group followed by the paper's row it is compared with (once) and, per
    our row, ours − paper. Our rows the paper has no counterpart for stand alone."""
    groups: dict[Any, list[OurRow]] = {}
    for our in ours:
        key = our.paper_method if our.paper_method in wide.index else ("alone", our.stem)
        groups.setdefault(key, []).append(our)
    records = []
    for key, members in groups.items():
        values = [{c: o.values.get(c, math.nan) for c in wide.columns} for o in members]
        records += [{"section": SECTION_OURS, "row": f"{o.stem} (ours)", **v} for o, v in zip(members, values, strict=True)]
        if isinstance(key, tuple):
            continue
        published = wide.loc[key]
        records.append({"section": SECTION_OURS, "row": f"{key} (paper)", **published.to_dict()})
        records += [{"section": SECTION_OURS, "row": f"Δ {o.stem}", **_difference(v, published)}
                    for o, v in zip(members, values, strict=True)]
    return records


def _compare_frame(ours: Sequence[OurRow], wide: pd.DataFrame) -> pd.DataFrame:
    """Our rows with the paper's row and the difference, then the paper's whole table."""
    paper_records = [{"section": SECTION_PAPER, "row": method, **row.to_dict()} for method, row in wide.iterrows()]
    frame = pd.DataFrame(_comparison_records(ours, wide) + paper_records,
                         columns=["section", "row", *wide.columns], dtype=object)
    frame.attrs["cells"] = {f"{o.stem} (ours)": list(o.cells) for o in ours}
    return frame


def _ordered(ours: Mapping[str, OurRow], wide: pd.DataFrame) -> list[OurRow]:
    """Rows the paper has, in its order; then ours alone, by name."""
    rank = {m: i for i, m in enumerate(wide.index)}
    return sorted(ours.values(), key=lambda o: (rank.get(o.paper_method, len(rank)), o.stem))


# --------------------------------------------------------------------------- the paper's tables

def table1(cells: Mapping[str, CellResult], paper: pd.DataFrame) -> pd.DataFrame:
    """Table 1: test top-1 after the MTaDCS epochs; rows MTaDCS, Cross-Entropy and Mixup."""
    columns, wide = paper_columns(paper, "table1"), paper_wide(paper, "table1")
    rows = placements(cells, paper)["table1"]
    ours = _our_rows(cells, rows, columns, lambda r: (TABLE1_ROWS[r], TABLE1_ROWS[r]), "train")
    for our in ours.values():
        _with_averages(our, columns)
    return _compare_frame(_ordered(ours, wide), wide)


def table2a(cells: Mapping[str, CellResult], paper: pd.DataFrame) -> pd.DataFrame:
    """Table 2a: test top-1 after fine-tuning on the final G (MTaDCS+)."""
    columns, wide = paper_columns(paper, "table2a"), paper_wide(paper, "table2a")
    rows = placements(cells, paper)["table2a"]
    ours = _our_rows(cells, rows, columns, lambda r: ("MTaDCS+", "MTaDCS+"), "finetune")
    return _compare_frame(_ordered(ours, wide), wide)


def table2b(cells: Mapping[str, CellResult], paper: pd.DataFrame) -> pd.DataFrame:
    """Table 2b: WebVision-50, top-1/top-5 on WebVision val and ILSVRC12 val.

    The paper trains WebVision with a 10-epoch fine-tune, without saying which model its table
    shows, so both are given: "MTaDCS" after the MTaDCS epochs and "MTaDCS+" after fine-tuning,
    each beside the paper's one MTaDCS row.
    """
    columns, wide = paper_columns(paper, "table2b"), paper_wide(paper, "table2b")
    rows = placements(cells, paper)["table2b"]

    def name(row: str, suffix: str = "") -> tuple[str, str | None]:
        stem = "MTaDCS" if row == FULL else row
        return stem + suffix, stem if stem in wide.index else None

    ours = _our_rows(cells, rows, columns, name, "train")
    tuned = _our_rows(cells, rows, columns, lambda r: name(r, "+"), "finetune")
    return _compare_frame(_ordered({**ours, **tuned}, wide), wide)


def table3(cells: Mapping[str, CellResult], paper: pd.DataFrame) -> pd.DataFrame:
    """Table 3: the ablation, test top-1 after the MTaDCS epochs, one row per switch set."""
    columns, wide = paper_columns(paper, "table3"), paper_wide(paper, "table3")
    rows = placements(cells, paper)["table3"]

    def name(row: str) -> tuple[str, str | None]:
        stem = TABLE3_NAMES.get(row, row)
        return stem, stem if stem in wide.index else None

    return _compare_frame(_ordered(_our_rows(cells, rows, columns, name, "train"), wide), wide)


PAPER_TABLES: dict[str, Callable[[Mapping[str, CellResult], pd.DataFrame], pd.DataFrame]] = {
    "table1": table1, "table2a": table2a, "table2b": table2b, "table3": table3}


def paper_tables(cells: Mapping[str, CellResult], paper: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Tables 1, 2a, 2b and 3, by name, in the paper's order."""
    return {name: PAPER_TABLES[name](cells, paper) for name in TABLES}


# --------------------------------------------------------------------------- per-cell tables

def _test_set(result: CellResult) -> str:
    return "webvision_val" if result.identity.dataset == WEBVISION else "test"


def _number(block: Any, key: str) -> Any:
    if not isinstance(block, Mapping) or block.get(key) is None:
        return math.nan
    return block[key]


def _cell_record(cell: str, result: CellResult, tables: Sequence[str]) -> dict[str, Any]:
    identity, m, done = result.identity, result.metrics, result.done
    test, g = _test_set(result), m.get("G") or {}
    train, tuned = m.get("train"), m.get("finetune")
    status = "done" if done else f"{result.status}: {result.reason}"
    return {
        "cell": cell, "status": status, "dataset": identity.dataset, "noise": identity.noise,
        "rate": percent(rate_key(identity.rate)), "realised rate": percent(rate_key(m.get("realised_rate"))),
        "row": identity.row, "tables": ", ".join(tables) or "—", "test set": test,
        "top1": _number(train, f"{test}/top1") if done else NOT_RUN,
        "top5": _number(train, f"{test}/top5") if done else NOT_RUN,
        "knn": _number(train, f"{test}/knn") if done else NOT_RUN,
        "finetuned top1": (_number(tuned, f"{test}/top1") if tuned is not None else NOT_FINETUNED) if done else NOT_RUN,
        "|G|": g.get("size", math.nan), "G precision": g.get("precision", math.nan),
        "G recall": g.get("recall", math.nan), "kNN labels": m.get("knn_labels", "—"),
    }


def cells_table(cells: Mapping[str, CellResult], paper: pd.DataFrame) -> pd.DataFrame:
    """Every cell, with the tables it appears in: the one place where each cell's kNN, |G|,
    precision, recall and not-run reason are shown."""
    placed = placements(cells, paper)
    records = [_cell_record(cell, result, [t for t in TABLES if cell in placed[t]]) for cell, result in cells.items()]
    return pd.DataFrame(records, dtype=object)


def project_table(cells: Mapping[str, CellResult], paper: pd.DataFrame) -> pd.DataFrame:
    """The cells no paper table has a place for (other datasets, rates or duplicates)."""
    every = cells_table(cells, paper)
    if every.empty:
        return every
    return every[every["tables"] == "—"].drop(columns=["tables"]).reset_index(drop=True)


LABEL_ISSUE_COLUMNS = ("flagged", "noisy", "precision", "recall", "f1", "suggested_accuracy", "relabelled_share",
                       "relabelled_accuracy", "G_size", "G_share", "G_class_share_min", "G_weakest_class")


def label_issues_table(metrics: Mapping[str, Mapping[str, Any]]) -> pd.DataFrame:
    """Issue detection per cell (cell → its metrics/label_issues/<cell>.json, as
    `inputs.load_cell_metrics` reads it): flagged samples and, where the clean labels are known,
    precision / recall / F1 against is-noisy and suggested-label accuracy."""
    records = [{"cell": cell, "status": found.get("status", NOT_RUN),
                **{k: found.get(k, math.nan) for k in LABEL_ISSUE_COLUMNS}} for cell, found in metrics.items()]
    return pd.DataFrame(records, columns=["cell", "status", *LABEL_ISSUE_COLUMNS])
