"""Named points where a fault-injection run may kill this process, to prove that a kill at the
worst moment loses nothing (benchmarks/fault_injection.py).

The driver sets MTADCS_KILL_AT="<point>:<n>" and MTADCS_KILL_COUNTER=<file>: the n-th time any
process of the run reaches <point> (counted in the file, so the count spans the stage processes
DVC starts), that process sends itself SIGKILL, as a pre-empted job would be killed. Without the
variables, `reached` is one environment lookup. The points sit where a kill hurts most: between
writing a temporary file and renaming it over the output, and inside an MLflow call.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

POINTS = ("checkpoint_write", "trace_write", "mlflow_log")


def reached(point: str) -> None:
    target = os.environ.get("MTADCS_KILL_AT")
    if not target or target.rpartition(":")[0] != point:
        return
    counter = Path(os.environ["MTADCS_KILL_COUNTER"])
    hits = int(counter.read_text() or 0) + 1 if counter.exists() else 1
    counter.write_text(str(hits))
    if hits == int(target.rpartition(":")[2]):
        os.kill(os.getpid(), signal.SIGKILL)
