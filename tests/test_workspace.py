"""The quickstart's workspace: a git + DVC repository DVC itself accepts, made without extra DVC processes."""

from __future__ import annotations

import subprocess
import sys

from pipeline.tracking import workspace


def test_a_fresh_workspace_is_committed_and_dvc_reads_analytics_off(tmp_path) -> None:
    ws = workspace.create(tmp_path / "ws", workspace.profile_path("quick"))
    for name in ("dvc.yaml", "params.yaml", "pipeline/config.py", "stages/cli.py", workspace.SOURCE_COMMIT):
        assert (ws / name).is_file(), name
    # The config file is written directly: DVC must parse it as `dvc config core.analytics false` would.
    read = subprocess.run([sys.executable, "-m", "dvc", "config", "core.analytics"], cwd=ws,
                          capture_output=True, text=True)
    assert read.returncode == 0 and read.stdout.strip() == "false", read.stderr
    status = subprocess.run(["git", "status", "--porcelain"], cwd=ws, capture_output=True, text=True)
    assert status.stdout.strip() == ""  # the baseline commit `dvc exp run` compares with holds everything
