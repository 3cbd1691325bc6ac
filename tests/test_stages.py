"""Stage wrappers: a cell that could not run earlier runs once its data is there."""

from __future__ import annotations

import json

from stages.common import clear_not_run, is_not_run, write_not_run


def test_a_stale_not_run_status_is_cleared(tmp_path) -> None:
    out = tmp_path / "warmup"
    write_not_run(out, "data.path not set")
    assert is_not_run(out) and json.loads((out / "status.json").read_text())["reason"] == "data.path not set"
    clear_not_run(out)
    assert not is_not_run(out)
    clear_not_run(out)  # idempotent
