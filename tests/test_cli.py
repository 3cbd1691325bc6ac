"""The command line: help without arguments, one-line errors with exit code 2."""

from __future__ import annotations

import subprocess
import sys

import yaml


def mtadcs(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stages.cli", *args], cwd=cwd, capture_output=True, text=True)


def test_no_arguments_prints_help_without_a_traceback() -> None:
    out = mtadcs()
    assert "Usage" in out.stdout + out.stderr and "Traceback" not in out.stderr
    assert "quickstart" in out.stdout + out.stderr


def test_a_params_typo_is_one_line_and_exit_2(tmp_path) -> None:
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"noise": {"rtae": 0.2}, "runs": {"c": {}}}))
    out = mtadcs("noise", "--cell", "c", "--root", str(tmp_path))
    assert out.returncode == 2
    error_lines = [line for line in out.stderr.splitlines() if "error" in line]
    assert error_lines == [f"mtadcs: error: {tmp_path / 'params.yaml'}: noise.rtae: unknown key "
                           "(check the spelling against params.yaml's defaults)"]
    assert "Traceback" not in out.stderr


def test_an_unknown_option_is_a_usage_error() -> None:
    out = mtadcs("noise", "--no-such-option")
    assert out.returncode == 2 and "No such option" in out.stderr and "Traceback" not in out.stderr


def test_the_report_stage_starts_without_torch_or_the_engine() -> None:
    """The report runs once per `dvc repro`; importing torch and torchvision costs it ~8 s here."""
    code = ("import sys, stages.cli, stages.report; "
            "print(sorted({'torch', 'torchvision', 'pipeline.method.engine'} & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
