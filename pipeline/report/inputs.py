"""What the report reads: the paper's published numbers, and each configured cell as its
identity (from params.yaml) paired with its metrics JSON.

A cell's identity — dataset, noise, rate, the six method switches — comes only from the
resolved params, handed in by the stage. The metrics JSON supplies only the numbers and
whether the cell ran (status, reason). Identity keys the JSON also holds (the evaluate stage
writes them for people and MLflow) are ignored here, so the two can never disagree about
where a cell lands, and a cell that never wrote a JSON is placed exactly as if it had.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline.config import CellIdentity
from pipeline.layout import NOT_RUN

DONE = "done"


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


@dataclass(frozen=True)
class CellResult:
    """One configured cell: what it is (`identity`, from params.yaml) and what it gave
    (`metrics`, its metrics JSON or the 'not run' stand-in for a missing one)."""

    identity: CellIdentity
    metrics: Mapping[str, Any]

    @property
    def done(self) -> bool:
        return self.metrics.get("status") == DONE

    @property
    def status(self) -> str:
        return self.metrics.get("status", NOT_RUN)

    @property
    def reason(self) -> str:
        return self.metrics.get("reason", "no reason given")


def load_cells(metrics_dir: str | Path, identities: Mapping[str, CellIdentity]) -> dict[str, CellResult]:
    """Every cell of `identities`, in its order, with its metrics from `metrics_dir`."""
    metrics = load_cell_metrics(metrics_dir, list(identities))
    return {cell: CellResult(identity, metrics[cell]) for cell, identity in identities.items()}
