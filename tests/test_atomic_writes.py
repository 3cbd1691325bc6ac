"""Atomic writes and the fault points that fault injection kills a process at."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from pipeline.files import atomic_path


def test_a_failed_write_keeps_the_previous_file_and_leaves_no_temp(tmp_path) -> None:
    target = tmp_path / "out.json"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("disk full")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_the_temp_file_of_a_killed_write_is_removed_by_the_next_write(tmp_path) -> None:
    target = tmp_path / "checkpoint.pt"
    (tmp_path / ".checkpoint.pt.abc123.tmp").write_text("left by SIGKILL")  # no finally ran
    (tmp_path / ".other.pt.abc123.tmp").write_text("another file's")
    with atomic_path(target) as tmp:
        tmp.write_text("new")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.pt.abc123.tmp", "checkpoint.pt"]


def test_a_fault_point_kills_its_process_at_the_nth_arrival_counted_across_processes(tmp_path) -> None:
    counter = tmp_path / "count"
    env = os.environ | {"MTADCS_KILL_AT": "trace_write:3", "MTADCS_KILL_COUNTER": str(counter)}
    code = "from pipeline import faults\nfor _ in range(2): faults.reached('trace_write')\nprint('alive')"
    first = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert first.returncode == 0 and "alive" in first.stdout and counter.read_text() == "2"
    second = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert second.returncode == -signal.SIGKILL and "alive" not in second.stdout
    other = subprocess.run([sys.executable, "-c", code.replace("trace_write", "mlflow_log")], env=env)
    assert other.returncode == 0  # another point never fires
