"""benchmarks/fault_injection.py at its smallest: three SIGKILLs of a tiny cell's stage processes
under `dvc repro`, resumed to the end. Slow (real processes, a few minutes): CI runs it with -m slow."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


def test_three_kills_resume_to_identical_outputs_with_no_run_lost(tmp_path) -> None:
    out = tmp_path / "fi.json"
    run = subprocess.run([sys.executable, "benchmarks/fault_injection.py", "--kills", "3", "--trials", "1",
                          "--seed", "1", "--work", str(tmp_path / "work"), "--out", str(out)],
                         cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["kills"] >= 1 and result["identical"] == result["kills"], result["per_trial"]
    assert (result["lost_runs"], result["duplicate_runs"], result["stuck_runs"]) == (0, 0, 0)
