"""The report stage's library: the paper's Tables 1, 2a, 2b and 3 with this project's numbers
beside them, a table of the cells the paper has no column for, and Figures 4, 5a and 5b from
the traces, all written by `write_report`.

Modules, in the order data flows through them:

- `inputs`: the paper's numbers (shipped CSV) and each cell as identity + metrics JSON.
- `placement`: which table, column and row a cell lands in, from its identity alone.
- `tables`: the comparison tables, the table of every cell and of the unplaced ones.
- `trace_stats`: the numbers Figures 4 and 5b show, computed from the per-epoch traces.
- `figures`: drawing Figures 4, 5a and 5b with matplotlib.
- `figure_cells`: which cells feed which figure.
- `figure_outputs`: each figure drawn or replaced by a note saying why; its DVC plot data.
- `markdown`: report.md.
- `writer`: `write_report`, which reads, builds and writes all of the above.

The report never fails because a run is missing: every configured cell is shown, a cell that
did not run reads "not run", and a figure that cannot be drawn says why.
"""

from pipeline.report.writer import write_report

__all__ = ["write_report"]
