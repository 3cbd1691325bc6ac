"""The report stage: the paper's Tables 1, 2a, 2b and 3 with this project's numbers beside them,
a table of the cells the paper has no column for, and Figures 4, 5a and 5b from the traces.

Why it is shaped this way:

- A cell's place in the paper's tables follows from what it *is* (dataset, noise, rate and the
  six method switches), not from its name, so added or renamed cells land where they belong.
  A cell that fits no column of the paper (digits, npz, folder, a rate the paper did not run, a
  second cell for a slot already taken) is listed under "This project's cells": never dropped.
- Every configured cell is shown, run or not: one that did not run (WebVision without its data)
  reads "not run" in its column, and a figure whose cells did not run is replaced by a line
  saying so (its PNG by one stating why, so DVC still finds its outputs). The report never fails
  because a run is missing.
- Tables are at the paper's precision (0.1 points) and the difference is taken between the
  rounded numbers, so the three rows a reader compares always agree. The unrounded values
  stay in metrics/<cell>.json.
- Figures use matplotlib's object API (`Figure`, rendered by Agg): no pyplot state, no display.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from pipeline.data import trace_store
from pipeline.runtime import atomic_path, write_text_atomic

log = logging.getLogger(__name__)

SWITCHES = ("lof", "confidence_set", "removal", "contrastive", "mixup", "label_correction")
SWITCH_NAMES = {"lof": "LOF", "confidence_set": "CS", "removal": "SR", "contrastive": "CL",
                "mixup": "Mixup", "label_correction": "LC"}
FULL, CROSS_ENTROPY, MIXUP = "MTaDCS (full)", "Cross-Entropy", "Mixup"
NOT_RUN, NOT_FINETUNED = "not run", "not fine-tuned"
TABLES = ("table1", "table2a", "table2b", "table3")
TABLE1_ROWS = {FULL: "MTaDCS", CROSS_ENTROPY: "Cross-Entropy", MIXUP: "Mixup"}
TABLE3_NAMES = {FULL: "LOF+CS+SR+CL+Mixup+LC (full)", CROSS_ENTROPY: "none"}
DATASET_NAMES = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100", "webvision50": "WebVision-50"}
TEST_SET_NAMES = {"webvision_val": "WebVision", "ilsvrc12_val": "ILSVRC12"}
WEBVISION = "webvision50"

CLEAN_EASY, MISLABELED_EASY = "clean easy", "mislabeled easy"
CLEAN_HARD, MISLABELED_HARD = "clean hard", "mislabeled hard"
UNCLASSIFIED = "unclassified"
# Paper, Section 4.6: hard (blue) and mislabeled hard (orange) are the lines it contrasts.
CATEGORIES = (CLEAN_HARD, MISLABELED_HARD, CLEAN_EASY, MISLABELED_EASY)
CATEGORY_COLOURS = {CLEAN_HARD: "C0", MISLABELED_HARD: "C1", CLEAN_EASY: "C2", MISLABELED_EASY: "C3",
                    UNCLASSIFIED: "0.6"}
DPI = 120


# --------------------------------------------------------------------------- inputs

def load_paper_tables() -> pd.DataFrame:
    """The paper's published numbers (paper_tables.csv), shipped with the package so the report
    stage needs nothing outside it."""
    source = resources.files("pipeline").joinpath("resources/paper_tables.csv")
    with source.open("r") as f:
        return pd.read_csv(f, dtype={"table": str, "dataset": str, "noise": str, "metric": str, "method": str})


def load_cell_metrics(metrics_dir: str | Path, cells: Sequence[str]) -> dict[str, dict]:
    """Each cell's metrics JSON; a cell without one is 'not run' (so it is shown, not dropped)."""
    out: dict[str, dict] = {}
    for cell in cells:
        path = Path(metrics_dir) / f"{cell}.json"
        if not path.exists():
            out[cell] = {"cell": cell, "status": NOT_RUN, "reason": "no metrics file"}
            continue
        metrics = json.loads(path.read_text())
        metrics.setdefault("cell", cell)
        out[cell] = metrics
    return out


def row_name(switches: Mapping[str, bool]) -> str:
    """The paper's row for a set of method switches (a missing switch counts as off).

    All on: the full method; all off: Cross-Entropy (Table 1, and Table 3's "none"); mixup
    alone: Table 1's Mixup; otherwise the switches that are on, in Table 3's order, joined by "+".
    """
    on = [k for k in SWITCHES if bool(switches.get(k, False))]
    if len(on) == len(SWITCHES):
        return FULL
    if not on:
        return CROSS_ENTROPY
    if on == ["mixup"]:
        return MIXUP
    return "+".join(SWITCH_NAMES[k] for k in on)


def _placement_info(settings: Mapping[str, Any]) -> dict[str, Any]:
    """dataset/noise/rate/switches from a cell's settings, flat or in params.yaml's sections."""
    info: dict[str, Any] = {k: settings[k] for k in ("dataset", "noise", "rate", "switches") if k in settings}
    data, noise, method = (settings.get(k) for k in ("data", "noise", "method"))
    if isinstance(data, Mapping) and "dataset" in data:
        info["dataset"] = data["dataset"]
    if isinstance(noise, Mapping):
        info["noise"] = noise.get("kind", info.get("noise"))
        info["rate"] = noise.get("rate", info.get("rate"))
    if isinstance(method, Mapping) and any(k in method for k in SWITCHES):
        info["switches"] = {k: bool(method.get(k, False)) for k in SWITCHES}
    return info


def with_settings(metrics: Mapping[str, dict], params_summary: Any) -> dict[str, dict]:
    """Fill in what a cell is (dataset, noise, rate, switches) from its settings where its
    metrics do not say, so a cell that never ran still lands in its table as "not run"."""
    out = {cell: dict(m) for cell, m in metrics.items()}
    if not isinstance(params_summary, Mapping):
        return out
    for cell, m in out.items():
        settings = params_summary.get(cell)
        if isinstance(settings, Mapping):
            for key, value in _placement_info(settings).items():
                m.setdefault(key, value)
    return out


# --------------------------------------------------------------------------- table layout

def _rate_key(rate: Any) -> float | None:
    if rate is None or (isinstance(rate, float) and math.isnan(rate)):
        return None
    return round(float(rate), 4)


def _pct(rate: float | None) -> str:
    return "" if rate is None else f"{100 * rate:g}%"


@dataclass(frozen=True)
class Column:
    """One column of a paper table: (dataset, noise, rate) and the metric; for Table 2b the
    `noise` field holds the test set (webvision_val / ilsvrc12_val), as in paper_tables.csv."""

    dataset: str
    noise: str
    rate: float | None
    metric: str

    @property
    def label(self) -> str:
        if self.dataset == WEBVISION:
            return f"{TEST_SET_NAMES.get(self.noise, self.noise)} {self.metric.replace('top', 'top-')}"
        name = DATASET_NAMES.get(self.dataset, self.dataset)
        return f"{name} avg" if self.noise == "avg" else f"{name} {self.noise} {_pct(self.rate)}"

    @property
    def metric_key(self) -> str:
        """Key of this column's number in a metrics block ('test/top1', 'ilsvrc12_val/top5')."""
        test_set = self.noise if self.dataset == WEBVISION else "test"
        return f"{test_set}/{self.metric}"

    def matches(self, cell: Mapping[str, Any]) -> bool:
        if self.noise == "avg" or cell.get("dataset") != self.dataset:
            return False
        if self.dataset == WEBVISION:
            return True
        return cell.get("noise") == self.noise and _rate_key(cell.get("rate")) == self.rate


def paper_columns(paper: pd.DataFrame, table: str) -> list[Column]:
    """The table's columns in the paper's order (the CSV's order of first appearance)."""
    rows = paper.loc[paper["table"] == table, ["dataset", "noise", "rate", "metric"]]
    seen = dict.fromkeys(Column(d, n, _rate_key(r), m) for d, n, r, m in rows.itertuples(index=False))
    return list(seen)


def paper_wide(paper: pd.DataFrame, table: str) -> pd.DataFrame:
    """The paper's table as printed: one row per method, one column per Column label."""
    t = paper[paper["table"] == table]
    columns = paper_columns(paper, table)
    wide = pd.DataFrame(np.nan, index=pd.Index(t["method"].unique(), name="method"),
                        columns=[c.label for c in columns])
    for d, n, r, m, method, value in t[["dataset", "noise", "rate", "metric", "method", "value"]].itertuples(index=False):
        wide.loc[method, Column(d, n, _rate_key(r), m).label] = float(value)
    return wide


def _accepts(table: str, row: str) -> bool:
    if table == "table1":
        return row in TABLE1_ROWS
    if table == "table2a":
        return row == FULL
    return True


def placements(metrics: Mapping[str, dict], paper: pd.DataFrame) -> dict[str, dict[str, str]]:
    """table → {cell: row} for every cell that has a slot (row, column) in that table.

    Cells that ran take slots before cells that did not, then in the given order; a later cell
    for a slot already taken is left out of that table (and listed under the project's cells).
    """
    columns = {t: paper_columns(paper, t) for t in TABLES}
    order = sorted(metrics, key=lambda c: metrics[c].get("status") != "done")  # stable
    taken: set[tuple] = set()
    out: dict[str, dict[str, str]] = {t: {} for t in TABLES}
    for cell in order:
        m = metrics[cell]
        if not isinstance(m.get("switches"), Mapping):
            continue
        row = row_name(m["switches"])
        for table in TABLES:
            if not _accepts(table, row) or not any(c.matches(m) for c in columns[table]):
                continue
            where = m.get("dataset") if table == "table2b" else (m.get("dataset"), m.get("noise"),
                                                                 _rate_key(m.get("rate")))
            if (table, row, where) not in taken:
                taken.add((table, row, where))
                out[table][cell] = row
    return out


# --------------------------------------------------------------------------- comparison tables

def _metric(m: Mapping[str, Any], phase: str, key: str) -> float | str:
    """One number of a cell at the paper's precision, or why there is none."""
    if m.get("status") != "done":
        return NOT_RUN
    block = m.get(phase)
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


def _our_rows(metrics: Mapping[str, dict], rows: Mapping[str, str], columns: Sequence[Column],
              name: Callable[[str], tuple[str, str | None]], phase: str) -> dict[str, OurRow]:
    """Group the cells placed in a table by row; `name(row)` gives (stem, paper method)."""
    out: dict[str, OurRow] = {}
    for cell, row in rows.items():
        stem, paper_method = name(row)
        our = out.setdefault(stem, OurRow(stem, paper_method))
        our.cells.append(cell)
        for c in columns:
            if c.matches(metrics[cell]):
                our.values[c.label] = _metric(metrics[cell], phase, c.metric_key)
    return out


def _with_averages(our: OurRow, columns: Sequence[Column]) -> None:
    """Table 1's Avg per dataset, from the rounded values shown, only when all are there."""
    for avg in (c for c in columns if c.noise == "avg"):
        parts = [our.values.get(c.label) for c in columns if c.dataset == avg.dataset and c.noise != "avg"]
        if parts and all(_is_number(v) for v in parts):
            our.values[avg.label] = round(float(np.mean(parts)), 1)


def _comparison_records(ours: Sequence[OurRow], wide: pd.DataFrame) -> list[dict[str, Any]]:
    """Our rows, each group followed by the paper's row it is compared with (once) and, per
    our row, ours − paper. Our rows the paper has no counterpart for stand alone."""
    section = "ours vs paper"
    groups: dict[Any, list[OurRow]] = {}
    for our in ours:
        key = our.paper_method if our.paper_method in wide.index else ("alone", our.stem)
        groups.setdefault(key, []).append(our)
    records = []
    for key, members in groups.items():
        values = [{c: o.values.get(c, math.nan) for c in wide.columns} for o in members]
        records += [{"section": section, "row": f"{o.stem} (ours)", **v} for o, v in zip(members, values, strict=True)]
        if isinstance(key, tuple):
            continue
        published = wide.loc[key]
        records.append({"section": section, "row": f"{key} (paper)", **published.to_dict()})
        for o, v in zip(members, values, strict=True):
            diff = {c: round(v[c] - published[c], 1) if _is_number(v[c]) and _is_number(published[c])
                    else math.nan for c in wide.columns}
            records.append({"section": section, "row": f"Δ {o.stem}", **diff})
    return records


def _compare_frame(ours: Sequence[OurRow], wide: pd.DataFrame) -> pd.DataFrame:
    """Our rows with the paper's row and the difference, then the paper's whole table."""
    paper_records = [{"section": "paper", "row": method, **row.to_dict()} for method, row in wide.iterrows()]
    frame = pd.DataFrame(_comparison_records(ours, wide) + paper_records,
                         columns=["section", "row", *wide.columns], dtype=object)
    frame.attrs["cells"] = {f"{o.stem} (ours)": list(o.cells) for o in ours}
    return frame


def _ordered(ours: Mapping[str, OurRow], wide: pd.DataFrame) -> list[OurRow]:
    """Rows the paper has, in its order; then ours alone, by name."""
    rank = {m: i for i, m in enumerate(wide.index)}
    return sorted(ours.values(), key=lambda o: (rank.get(o.paper_method, len(rank)), o.stem))


def table1(metrics: Mapping[str, dict], paper: pd.DataFrame) -> pd.DataFrame:
    """Table 1: test top-1 after the MTaDCS epochs; rows MTaDCS, Cross-Entropy and Mixup."""
    columns, wide = paper_columns(paper, "table1"), paper_wide(paper, "table1")
    rows = placements(metrics, paper)["table1"]
    ours = _our_rows(metrics, rows, columns, lambda r: (TABLE1_ROWS[r], TABLE1_ROWS[r]), "train")
    for our in ours.values():
        _with_averages(our, columns)
    return _compare_frame(_ordered(ours, wide), wide)


def table2a(metrics: Mapping[str, dict], paper: pd.DataFrame) -> pd.DataFrame:
    """Table 2a: test top-1 after fine-tuning on the final G (MTaDCS+)."""
    columns, wide = paper_columns(paper, "table2a"), paper_wide(paper, "table2a")
    rows = placements(metrics, paper)["table2a"]
    ours = _our_rows(metrics, rows, columns, lambda r: ("MTaDCS+", "MTaDCS+"), "finetune")
    return _compare_frame(_ordered(ours, wide), wide)


def table2b(metrics: Mapping[str, dict], paper: pd.DataFrame) -> pd.DataFrame:
    """Table 2b: WebVision-50, top-1/top-5 on WebVision val and ILSVRC12 val.

    The paper trains WebVision with a 10-epoch fine-tune, without saying which model its table
    shows, so both are given: "MTaDCS" after the MTaDCS epochs and "MTaDCS+" after fine-tuning,
    each beside the paper's one MTaDCS row.
    """
    columns, wide = paper_columns(paper, "table2b"), paper_wide(paper, "table2b")
    rows = placements(metrics, paper)["table2b"]

    def name(row: str, suffix: str = "") -> tuple[str, str | None]:
        stem = "MTaDCS" if row == FULL else row
        return stem + suffix, stem if stem in wide.index else None

    ours = _our_rows(metrics, rows, columns, name, "train")
    tuned = _our_rows(metrics, rows, columns, lambda r: name(r, "+"), "finetune")
    return _compare_frame(_ordered({**ours, **tuned}, wide), wide)


def table3(metrics: Mapping[str, dict], paper: pd.DataFrame) -> pd.DataFrame:
    """Table 3: the ablation, test top-1 after the MTaDCS epochs, one row per switch set."""
    columns, wide = paper_columns(paper, "table3"), paper_wide(paper, "table3")
    rows = placements(metrics, paper)["table3"]

    def name(row: str) -> tuple[str, str | None]:
        stem = TABLE3_NAMES.get(row, row)
        return stem, stem if stem in wide.index else None

    return _compare_frame(_ordered(_our_rows(metrics, rows, columns, name, "train"), wide), wide)


# --------------------------------------------------------------------------- per-cell tables

def _test_set(m: Mapping[str, Any]) -> str:
    return "webvision_val" if m.get("dataset") == WEBVISION else "test"


def _number(block: Any, key: str) -> Any:
    if not isinstance(block, Mapping) or block.get(key) is None:
        return math.nan
    return block[key]


def _cell_record(cell: str, m: Mapping[str, Any], tables: Sequence[str]) -> dict[str, Any]:
    done = m.get("status") == "done"
    test, g = _test_set(m), m.get("G") or {}
    train, tuned = m.get("train"), m.get("finetune")
    status = "done" if done else f"{m.get('status', NOT_RUN)}: {m.get('reason', 'no reason given')}"
    switches = m.get("switches")
    return {
        "cell": cell, "status": status, "dataset": m.get("dataset", "?"), "noise": m.get("noise", "?"),
        "rate": _pct(_rate_key(m.get("rate"))), "realised rate": _pct(_rate_key(m.get("realised_rate"))),
        "row": row_name(switches) if isinstance(switches, Mapping) else "?",
        "tables": ", ".join(tables) or "—", "test set": test,
        "top1": _number(train, f"{test}/top1") if done else NOT_RUN,
        "top5": _number(train, f"{test}/top5") if done else NOT_RUN,
        "knn": _number(train, f"{test}/knn") if done else NOT_RUN,
        "finetuned top1": (_number(tuned, f"{test}/top1") if tuned is not None else NOT_FINETUNED) if done else NOT_RUN,
        "|G|": g.get("size", math.nan), "G precision": g.get("precision", math.nan),
        "G recall": g.get("recall", math.nan), "kNN labels": m.get("knn_labels", "—"),
    }


def cells_table(metrics: Mapping[str, dict], paper: pd.DataFrame) -> pd.DataFrame:
    """Every cell, with the tables it appears in: the one place where each cell's kNN, |G|,
    precision, recall and not-run reason are shown."""
    placed = placements(metrics, paper)
    records = [_cell_record(cell, m, [t for t in TABLES if cell in placed[t]]) for cell, m in metrics.items()]
    return pd.DataFrame(records, dtype=object)


def project_table(metrics: Mapping[str, dict], paper: pd.DataFrame) -> pd.DataFrame:
    """The cells no paper table has a place for (other datasets, rates or duplicates)."""
    every = cells_table(metrics, paper)
    if every.empty:
        return every
    return every[every["tables"] == "—"].drop(columns=["tables"]).reset_index(drop=True)


# --------------------------------------------------------------------------- Markdown

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


def _table_markdown(title: str, what: str, frame: pd.DataFrame) -> str:
    ours = frame[frame["section"] == "ours vs paper"].drop(columns=["section"])
    paper = frame[frame["section"] == "paper"].drop(columns=["section"])
    parts = [f"## {title}", "", what, ""]
    if ours.empty:
        parts += ["No cell of this grid falls in this table.", ""]
    else:
        cells = "; ".join(f"{row}: {', '.join(c)}" for row, c in frame.attrs.get("cells", {}).items())
        parts += [markdown_table(ours), "", f"Cells: {cells}.", ""]
    parts += ["The paper's table (all methods):", "", markdown_table(paper), ""]
    return "\n".join(parts)


def _flatten(settings: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in settings.items():
        if isinstance(value, Mapping):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value if isinstance(value, (int, float, str, bool, type(None))) else str(value)
    return out


def settings_markdown(params_summary: Any) -> str:
    """The settings the cells ran with: those common to all once, those that differ per cell."""
    if isinstance(params_summary, str):
        return f"```\n{params_summary.strip()}\n```"
    if not isinstance(params_summary, Mapping) or not params_summary:
        return "No settings were given to the report."
    flat = {cell: _flatten(s) if isinstance(s, Mapping) else {"value": s} for cell, s in params_summary.items()}
    keys = list(dict.fromkeys(k for s in flat.values() for k in s))
    common = [k for k in keys if len({repr(s.get(k)) for s in flat.values()}) == 1]
    differ = [k for k in keys if k not in common]
    lines = ["Common to all cells: " + (", ".join(f"`{k}` = {_fmt(flat[next(iter(flat))][k], raw=True)}" for k in common)
                                        or "none") + ".", ""]
    if differ:
        frame = pd.DataFrame([{"cell": c, **{k: s.get(k) for k in differ}} for c, s in flat.items()], dtype=object)
        lines.append(markdown_table(frame, raw=True))
    return "\n".join(lines)


# --------------------------------------------------------------------------- figures

def choose_epochs(available: Sequence[int], fractions: Sequence[float] = (0.12, 0.5, 1.0)) -> list[int]:
    """Epochs at ~12 %, 50 % and 100 % of the run (the paper's 30/120/240 of 250), each the
    traced epoch nearest to that share of the last one."""
    epochs = sorted(set(int(e) for e in available))
    if not epochs:
        return []
    picked = [min(epochs, key=lambda e, t=f * epochs[-1]: (abs(e - t), e)) for f in fractions]
    return list(dict.fromkeys(picked))


def _times_in_g(traces: pd.DataFrame, epoch: int) -> pd.Series:
    """How many traced epochs up to `epoch` each sample was in G."""
    upto = traces[traces["epoch"] <= epoch]
    return upto.groupby("index")["in_G"].sum().astype(int)


def selection_counts(traces: pd.DataFrame, epochs: Sequence[int]) -> pd.DataFrame:
    """Number of samples (rows) that were in G exactly x times (index) up to each epoch (columns)."""
    counts = {e: _times_in_g(traces, e).value_counts() for e in epochs}
    frame = pd.DataFrame(counts).fillna(0).astype(int)
    top = int(frame.index.max()) if len(frame) else 0
    return frame.reindex(range(top + 1), fill_value=0).rename_axis("times_in_G")


def _new_figure(width: float, height: float) -> Figure:
    return Figure(figsize=(width, height), layout="constrained")


def _save(fig: Figure, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)


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
        _stairs(ax, _times_in_g(traces_lof, e), n_max, "LOF", "C3")
        _stairs(ax, _times_in_g(traces_lof_cs, e), n_max, "LOF + CS", "C0")
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


def occurrence_threshold(n_epochs: int) -> int:
    """Section 4.6's "10 occurrences" (of 240 traced epochs) scaled to this run's length:
    max(1, round(10 * n_epochs / 240)), Python's round (half to even)."""
    return max(1, int(round(10 * n_epochs / 240)))


def categorise(traces: pd.DataFrame, clean: pd.Series, threshold: int | None = None) -> pd.Series:
    """Section 4.6's four categories per sample, from how often it was in G and in Ḡ.

    With k = `threshold` (default: occurrence_threshold of the traced epochs) and "label
    correct" meaning the given label equals the clean one:
    clean easy: correct, < k times in Ḡ; mislabeled easy: wrong, < k times in G;
    clean hard: correct, >= k times in Ḡ but more often in G than in Ḡ;
    mislabeled hard: wrong, >= k times in G but more often in Ḡ than in G.
    Anything else is "unclassified"; samples without a clean label are left out.
    Returns a Series of category names indexed by sample index.
    """
    n_epochs = traces["epoch"].nunique()
    k = occurrence_threshold(n_epochs) if threshold is None else threshold
    per = traces.groupby("index").agg(n_g=("in_G", "sum"), n=("in_G", "size"), given=("given_label", "first"))
    n_g, n_gbar = per["n_g"].to_numpy(), (per["n"] - per["n_g"]).to_numpy()
    truth = pd.Series(clean).reindex(per.index).to_numpy(dtype=float, na_value=np.nan)
    known = ~np.isnan(truth)
    correct = known & (per["given"].to_numpy(dtype=float) == truth)
    wrong = known & ~correct
    category = np.select(
        [correct & (n_gbar < k), wrong & (n_g < k),
         correct & (n_gbar >= k) & (n_g > n_gbar), wrong & (n_g >= k) & (n_gbar > n_g)],
        [CLEAN_EASY, MISLABELED_EASY, CLEAN_HARD, MISLABELED_HARD], default=UNCLASSIFIED)
    return pd.Series(category, index=per.index, name="category", dtype=object)[known]


def category_distances(traces: pd.DataFrame, categories: pd.Series) -> pd.DataFrame:
    """Per epoch (rows) and category (columns), the mean distance of the category's samples to
    their class centre in G (`dist_to_class_centre`). Features are stored only every few epochs,
    so this mean of distances stands in for the distance of the category's feature centre."""
    t = traces[["epoch", "index", "dist_to_class_centre"]].merge(
        categories.rename("category"), left_on="index", right_index=True)
    means = t.groupby(["epoch", "category"])["dist_to_class_centre"].mean().unstack()
    return means.reindex(columns=list(CATEGORIES)).rename_axis(columns=None)


def figure5b(traces: pd.DataFrame, clean: pd.Series, path: str | Path, *,
             threshold: int | None = None, categories: pd.Series | None = None) -> pd.DataFrame:
    """Fig. 5b: panel 1 the number of samples per Section 4.6 category (see `categorise`:
    the paper's "10 occurrences" scaled to the run by occurrence_threshold); panel 2 per epoch
    each category's mean distance to its class centre in G. Returns panel 2's data.
    `categories` (from `categorise`) saves recomputing them on a long run."""
    if categories is None:
        categories = categorise(traces, clean, threshold)
    k = occurrence_threshold(traces["epoch"].nunique()) if threshold is None else threshold
    counts = categories.value_counts().reindex([*CATEGORIES, UNCLASSIFIED], fill_value=0)
    distances = category_distances(traces, categories)
    fig = _new_figure(11.0, 4.0)
    bars, lines = fig.subplots(1, 2, width_ratios=[1, 1.6])
    bars.bar(counts.index, counts.to_numpy(), color=[CATEGORY_COLOURS[c] for c in counts.index])
    for x, n in enumerate(counts.to_numpy()):
        bars.annotate(str(int(n)), (x, n), ha="center", va="bottom", fontsize="small")
    bars.set(ylabel="number of samples", title=f"Categories (k = {k}; {traces['epoch'].nunique()} traced epochs)")
    bars.tick_params(axis="x", labelrotation=30)
    for c in CATEGORIES:
        if distances[c].notna().any():
            lines.plot(distances.index, distances[c], color=CATEGORY_COLOURS[c], label=c, marker=".")
    lines.set(xlabel="epoch", ylabel="mean distance to class centre of G", title="Distance to the class centres")
    lines.legend(fontsize="small")
    fig.suptitle("Hard and mislabeled samples (Fig. 5b)")
    _save(fig, path)
    return distances.reset_index().rename(columns=lambda c: str(c).replace(" ", "_"))


def figure_explaining_absence(message: str, path: str | Path) -> None:
    """A PNG that says why a figure is missing, so a DVC-declared output always exists."""
    fig = _new_figure(6.0, 1.5)
    fig.text(0.5, 0.5, message, ha="center", va="center", wrap=True)
    _save(fig, path)


def dvc_plot_data(frames: Mapping[str, pd.DataFrame], out_dir: str | Path) -> list[Path]:
    """Each figure's data as `out_dir/plots/<name>.csv`, which dvc.yaml can declare as plots."""
    paths = []
    for name, frame in frames.items():
        path = Path(out_dir) / "plots" / f"{name}.csv"
        with atomic_path(path) as tmp:
            frame.to_csv(tmp, index=False)
        paths.append(path)
    return paths


# --------------------------------------------------------------------------- figure inputs

@dataclass(frozen=True)
class FigureCells:
    """Which cells feed which figure (the stage decides; `default_figure_cells` is a fallback)."""

    fig4_lof: str | None = None
    fig4_lof_cs: str | None = None
    fig5a: tuple[str, ...] = ()
    fig5b: str | None = None


def _key(m: Mapping[str, Any]) -> tuple:
    return m.get("dataset"), m.get("noise"), _rate_key(m.get("rate"))


def _find(metrics: Mapping[str, dict], row: str, key: tuple | None = None) -> str | None:
    """The first cell with this row (and key), preferring cells that ran."""
    hits = [c for c, m in metrics.items() if isinstance(m.get("switches"), Mapping)
            and row_name(m["switches"]) == row and (key is None or _key(m) == key)]
    hits.sort(key=lambda c: metrics[c].get("status") != "done")
    return hits[0] if hits else None


def default_figure_cells(metrics: Mapping[str, dict], figure_cell: str | None = None) -> FigureCells:
    """The paper's choices where the grid has them: Fig. 5b (and the column of Fig. 4) on the
    full method at CIFAR-10 sym 50 % (or `figure_cell`), Fig. 4 on the LOF and LOF+CS cells of
    that column, Fig. 5a on the full method at CIFAR-10 sym 20 % and 80 %."""
    main = figure_cell or _find(metrics, FULL, ("cifar10", "sym", 0.5)) or _find(metrics, FULL)
    key = _key(metrics[main]) if main in metrics else None
    pair = [_find(metrics, "LOF", key), _find(metrics, "LOF+CS", key)]
    if None in pair:
        pair = [_find(metrics, "LOF"), _find(metrics, "LOF+CS")]
    fig5a = tuple(c for r in (0.2, 0.8) if (c := _find(metrics, FULL, ("cifar10", "sym", r))))
    return FigureCells(pair[0], pair[1], fig5a or ((main,) if main else ()), main)


def _unavailable(cell: str | None, metrics: Mapping[str, dict], paths: Mapping[str, Path],
                 what: str) -> str | None:
    """Why a cell's file cannot feed a figure, or None when it can."""
    if cell is None:
        return f"no cell chosen for it ({what})"
    m = metrics.get(cell, {"status": NOT_RUN, "reason": "not a configured cell"})
    if m.get("status") != "done":
        return f"cell {cell} not run ({m.get('reason', 'no reason given')})"
    path = paths.get(cell)
    if path is None:
        return f"no {what} given for cell {cell}"
    if not Path(path).exists() or (what == "traces" and not any(Path(path).glob("epoch=*"))):
        return f"{what} of cell {cell} absent ({path})"
    return None


TRACE_FIG4 = ["epoch", "index", "in_G"]
TRACE_FIG5B = ["epoch", "index", "given_label", "in_G", "dist_to_class_centre"]


def _clean_labels(path: Path) -> pd.Series:
    labels = pd.read_parquet(path, columns=["index", "clean_label"])
    return labels.set_index("index")["clean_label"]


@dataclass
class _Figures:
    paths: list[Path] = field(default_factory=list)
    data: dict[str, pd.DataFrame] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)
    drawn: set[str] = field(default_factory=set)


def _draw_fig4(cells: FigureCells, metrics: Mapping[str, dict], traces_for: Mapping[str, Path],
               out: Path, figs: _Figures) -> None:
    why = ("the grid has no LOF-alone and LOF+CS cells to compare" if None in (cells.fig4_lof, cells.fig4_lof_cs)
           else _unavailable(cells.fig4_lof, metrics, traces_for, "traces")
           or _unavailable(cells.fig4_lof_cs, metrics, traces_for, "traces"))
    if why:
        figs.notes["fig4"] = f"Figure 4 not drawn: {why}."
        return
    lof = trace_store.read_traces(traces_for[cells.fig4_lof], columns=TRACE_FIG4)
    cs = trace_store.read_traces(traces_for[cells.fig4_lof_cs], columns=TRACE_FIG4)
    epochs = choose_epochs(sorted(set(lof["epoch"]) & set(cs["epoch"])))
    if not epochs:
        figs.notes["fig4"] = f"Figure 4 not drawn: {cells.fig4_lof} and {cells.fig4_lof_cs} share no traced epoch."
        return
    figs.data["fig4"] = figure4(lof, cs, epochs, out / "fig4.png")
    figs.drawn.add("fig4")
    figs.notes["fig4"] = (f"Times each sample was in G up to epochs {', '.join(map(str, epochs))} "
                          f"(~12 %, 50 %, 100 % of the run; the paper shows 30, 120, 240 of 250): "
                          f"LOF alone ({cells.fig4_lof}) against LOF + CS ({cells.fig4_lof_cs}).")


def _draw_fig5a(cells: FigureCells, metrics: Mapping[str, dict], histories_for: Mapping[str, Path],
                out: Path, figs: _Figures) -> None:
    reasons = {c: _unavailable(c, metrics, histories_for, "history") for c in cells.fig5a}
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


def _draw_fig5b(cells: FigureCells, metrics: Mapping[str, dict], traces_for: Mapping[str, Path],
                labels_for: Mapping[str, Path], out: Path, figs: _Figures) -> None:
    cell = cells.fig5b
    why = _unavailable(cell, metrics, traces_for, "traces") or _unavailable(cell, metrics, labels_for, "labels")
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
    figs.data["fig5b_counts"] = (categories.value_counts()
                                 .reindex([*CATEGORIES, UNCLASSIFIED], fill_value=0)
                                 .rename_axis("category").reset_index(name="samples"))
    k = occurrence_threshold(traces["epoch"].nunique())
    figs.notes["fig5b"] = (f"Section 4.6's categories on {cell}; the paper's \"10 occurrences\" of 240 epochs is "
                           f"scaled to this run's {traces['epoch'].nunique()} traced epochs: k = {k}.")


def _draw_figures(cells: FigureCells, metrics: Mapping[str, dict], out: Path, traces_for: Mapping[str, Path],
                  labels_for: Mapping[str, Path], histories_for: Mapping[str, Path]) -> _Figures:
    figs = _Figures()
    _draw_fig4(cells, metrics, traces_for, out, figs)
    _draw_fig5a(cells, metrics, histories_for, out, figs)
    _draw_fig5b(cells, metrics, traces_for, labels_for, out, figs)
    for name in ("fig4", "fig5a", "fig5b"):
        path = out / f"{name}.png"
        if name not in figs.drawn:
            figure_explaining_absence(figs.notes[name], path)
            log.info("%s", figs.notes[name])
        figs.paths.append(path)
    for name, columns in EMPTY_PLOT_DATA.items():
        figs.data.setdefault(name, pd.DataFrame(columns=columns))
    return figs


# --------------------------------------------------------------------------- the report

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
# Header-only plot data for a figure not drawn, so the DVC plot file exists with its fields.
EMPTY_PLOT_DATA = {"fig4": ["times_in_G"], "fig5a": ["epoch"],
                   "fig5b": ["epoch", *(c.replace(" ", "_") for c in CATEGORIES)], "fig5b_counts": ["category", "samples"]}


def _summary(metrics: Mapping[str, dict]) -> str:
    done = sum(m.get("status") == "done" for m in metrics.values())
    return (f"{len(metrics)} cells configured: {done} run, {len(metrics) - done} not run. "
            "Tables are at the paper's precision (0.1 points): \"(ours)\" is this project's number, "
            "\"(paper)\" the published one, \"Δ\" ours − paper (from the rounded numbers). "
            "\"not run\" marks a configured cell that did not run (the reason is under \"All cells\"); "
            "\"—\" a column with no cell in this grid, or no number.")


def _cells_markdown(metrics: Mapping[str, dict], paper: pd.DataFrame) -> str:
    project = project_table(metrics, paper)
    parts = ["## This project's cells", "",
             "Cells with no place in the paper's tables (datasets or rates the paper does not have, "
             "or a second cell for a slot already taken).", ""]
    parts.append(markdown_table(project) if not project.empty else "None: every cell is in a paper table.")
    parts += ["", "## All cells", "", markdown_table(cells_table(metrics, paper)), ""]
    return "\n".join(parts)


def _figures_markdown(figs: _Figures) -> str:
    parts = ["## Figures", ""]
    for name, title in FIGURE_TITLES.items():
        if name in figs.drawn:
            parts += [f"### {title}", "", f"![{title}]({name}.png)", "", figs.notes[name], ""]
        else:
            parts += [f"### {title}", "", figs.notes[name], ""]
    return "\n".join(parts)


def render_markdown(metrics: Mapping[str, dict], paper: pd.DataFrame, tables: Mapping[str, pd.DataFrame],
                    figs: _Figures, params_summary: Any) -> str:
    parts = ["# MTaDCS: this project's results beside the paper's", "", _summary(metrics), ""]
    parts += [_table_markdown(*TABLE_TEXT[t], tables[t]) for t in TABLES]
    parts += [_cells_markdown(metrics, paper), _figures_markdown(figs),
              "## Settings", "", settings_markdown(params_summary), ""]
    return "\n".join(parts)


def write_report(metrics_dir: str | Path, cells: Sequence[str], params_summary: Any, out_dir: str | Path, *,
                 traces_for: Mapping[str, Path], labels_for: Mapping[str, Path],
                 histories_for: Mapping[str, Path] | None = None, figures: FigureCells | None = None,
                 figure_cell: str | None = None) -> list[Path]:
    """Write report.md, table1/2a/2b/3.csv, project.csv, cells.csv, fig4/5a/5b.png and
    plots/*.csv into `out_dir`; return the paths written.

    `params_summary`: cell → its settings, flat ({dataset, noise, rate, switches, …}) or in
    params.yaml's sections ({data: {dataset}, noise: {kind, rate}, method: {lof, …}, …}); it
    places cells that have no metrics file and is listed under "Settings". A string is shown
    as is. `traces_for` / `labels_for` / `histories_for`: cell → its trace directory, label
    file and history CSV. `figures` says which cells feed which figure; when None,
    `default_figure_cells(metrics, figure_cell)` chooses.
    """
    out = Path(out_dir)
    paper = load_paper_tables()
    metrics = with_settings(load_cell_metrics(metrics_dir, cells), params_summary)
    tables = {"table1": table1(metrics, paper), "table2a": table2a(metrics, paper),
              "table2b": table2b(metrics, paper), "table3": table3(metrics, paper)}
    csvs = {**tables, "project": project_table(metrics, paper), "cells": cells_table(metrics, paper)}
    written = []
    for name, frame in csvs.items():
        with atomic_path(out / f"{name}.csv") as tmp:
            frame.to_csv(tmp, index=False)
        written.append(out / f"{name}.csv")
    chosen = figures or default_figure_cells(metrics, figure_cell)
    figs = _draw_figures(chosen, metrics, out, traces_for, labels_for, histories_for or {})
    written += figs.paths + dvc_plot_data(figs.data, out)
    write_text_atomic(out / "report.md", render_markdown(metrics, paper, tables, figs, params_summary))
    return [out / "report.md", *written]
