"""Which cells feed which figure. The stage may say (`FigureCells`); otherwise the paper's own
choices are looked up in the grid by what each cell is (its identity), not by its name."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from pipeline.config import FULL, row_name
from pipeline.report.inputs import CellResult
from pipeline.report.placement import column_key, rate_key

LOF_ALONE = row_name({"lof": True})  # Fig. 4 contrasts these two rows of Table 3
LOF_CS = row_name({"lof": True, "confidence_set": True})


@dataclass(frozen=True)
class FigureCells:
    """Which cells feed which figure (the stage decides; `default_figure_cells` is a fallback)."""

    fig4_lof: str | None = None
    fig4_lof_cs: str | None = None
    fig5a: tuple[str, ...] = ()
    fig5b: str | None = None


def _find(cells: Mapping[str, CellResult], row: str, key: tuple | None = None) -> str | None:
    """The first cell with this row (and column key), preferring cells that ran."""
    hits = [c for c, result in cells.items()
            if result.identity.row == row and (key is None or column_key(result.identity) == key)]
    hits.sort(key=lambda c: not cells[c].done)
    return hits[0] if hits else None


def default_figure_cells(cells: Mapping[str, CellResult], figure_cell: str | None = None) -> FigureCells:
    """The paper's choices where the grid has them: Fig. 5b (and the column of Fig. 4) on the
    full method at CIFAR-10 sym 50 % (or `figure_cell`), Fig. 4 on the LOF and LOF+CS cells of
    that column, Fig. 5a on the full method at CIFAR-10 sym 20 % and 80 %."""
    main = figure_cell or _find(cells, FULL, ("cifar10", "sym", rate_key(0.5))) or _find(cells, FULL)
    key = column_key(cells[main].identity) if main in cells else None
    pair = [_find(cells, LOF_ALONE, key), _find(cells, LOF_CS, key)]
    if None in pair:
        pair = [_find(cells, LOF_ALONE), _find(cells, LOF_CS)]
    fig5a = tuple(c for r in (0.2, 0.8) if (c := _find(cells, FULL, ("cifar10", "sym", rate_key(r)))))
    return FigureCells(pair[0], pair[1], fig5a or ((main,) if main else ()), main)
