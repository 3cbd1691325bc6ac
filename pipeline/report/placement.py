"""Where a cell lands in the paper's tables: which table, which column, which row.

A cell's place follows from what it *is* — its CellIdentity (dataset, noise, rate and the six
method switches) — never from its name, so added or renamed cells land where they belong. A
cell that fits no column of the paper (digits, npz, folder, a rate the paper did not run, a
second cell for a slot already taken) gets no slot and is listed under "This project's cells"
instead: it is never dropped.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd

from pipeline.config import CROSS_ENTROPY, FULL, MIXUP, CellIdentity
from pipeline.report.inputs import CellResult

TABLES = ("table1", "table2a", "table2b", "table3")
# Table 1 compares only these rows (ours → the paper's name for it); Table 2a only the full method.
TABLE1_ROWS = {FULL: "MTaDCS", CROSS_ENTROPY: "Cross-Entropy", MIXUP: "Mixup"}
DATASET_NAMES = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100", "webvision50": "WebVision-50"}
TEST_SET_NAMES = {"webvision_val": "WebVision", "ilsvrc12_val": "ILSVRC12"}
WEBVISION = "webvision50"


def rate_key(rate: Any) -> float | None:
    """A noise rate as columns compare it, rounded so params' 0.2 and the CSV's 0.2 agree;
    None for no rate (or pandas' NaN for an empty CSV field)."""
    if rate is None or (isinstance(rate, float) and math.isnan(rate)):
        return None
    return round(float(rate), 4)


def percent(rate: float | None) -> str:
    return "" if rate is None else f"{100 * rate:g}%"


def column_key(identity: CellIdentity) -> tuple[str, str, float | None]:
    """(dataset, noise, rate): the column a cell fills in Tables 1, 2a and 3."""
    return identity.dataset, identity.noise, rate_key(identity.rate)


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
        return f"{name} avg" if self.noise == "avg" else f"{name} {self.noise} {percent(self.rate)}"

    @property
    def metric_key(self) -> str:
        """Key of this column's number in a metrics block ('test/top1', 'ilsvrc12_val/top5')."""
        test_set = self.noise if self.dataset == WEBVISION else "test"
        return f"{test_set}/{self.metric}"

    def matches(self, identity: CellIdentity) -> bool:
        # An average is computed from the other columns, never filled by a cell; WebVision has
        # real noise, so every WebVision cell fits every column of its table.
        if self.noise == "avg" or identity.dataset != self.dataset:
            return False
        if self.dataset == WEBVISION:
            return True
        # The paper's CIFAR columns start G from a verified seed; a seedless cell is this project's own.
        return identity.seeded and identity.noise == self.noise and rate_key(identity.rate) == self.rate


def paper_columns(paper: pd.DataFrame, table: str) -> list[Column]:
    """The table's columns in the paper's order (the CSV's order of first appearance)."""
    rows = paper.loc[paper["table"] == table, ["dataset", "noise", "rate", "metric"]]
    seen = dict.fromkeys(Column(d, n, rate_key(r), m) for d, n, r, m in rows.itertuples(index=False))
    return list(seen)


def _accepts(table: str, row: str) -> bool:
    if table == "table1":
        return row in TABLE1_ROWS
    if table == "table2a":
        return row == FULL
    return True


def placements(cells: Mapping[str, CellResult], paper: pd.DataFrame) -> dict[str, dict[str, str]]:
    """table → {cell: row} for every cell that has a slot (row, column) in that table.

    Cells that ran take slots before cells that did not, then in the given order; a later cell
    for a slot already taken is left out of that table (and listed under the project's cells).
    """
    columns = {t: paper_columns(paper, t) for t in TABLES}
    order = sorted(cells, key=lambda c: not cells[c].done)  # stable
    taken: set[tuple] = set()
    out: dict[str, dict[str, str]] = {t: {} for t in TABLES}
    for cell in order:
        identity = cells[cell].identity
        row = identity.row
        for table in TABLES:
            if not _accepts(table, row) or not any(c.matches(identity) for c in columns[table]):
                continue
            # Table 2b's columns are test sets, so a WebVision cell's slot is its dataset alone.
            where = identity.dataset if table == "table2b" else column_key(identity)
            if (table, row, where) not in taken:
                taken.add((table, row, where))
                out[table][cell] = row
    return out
