"""The real `dvc repro` of a tiny profile in a temporary git + DVC workspace.

Slow (about two minutes on 2 cores: every stage is a fresh Python process), so it is
marked `slow`; CI runs it after the fast suite.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from pipeline.tracking import mlflow_runs, workspace

pytestmark = pytest.mark.slow

TINY = {
    "data": {"dataset": "digits"},
    "noise": {"kind": "sym", "rate": 0.5, "sym_convention": "other", "init_per_class": 10},
    "model": {"width": 4, "proj_dim": 16},
    "method": {"queue_size": 256},
    "optim": {"epochs": 3, "warmup_epochs": 1, "lr_milestones": [], "batch_size": 128},
    "train": {"feature_every": 2},
    "finetune": {"epochs": 1, "batch_size": 128},
    "evaluate": {"knn_k": 10},
    "runtime": {"threads": 1, "workers": 0, "progress": "log"},
    "tracking": {"experiment": "tiny"},
    "report": {"figure_cell": "t-full"},
    "runs": {
        "t-full": {},
        "t-ce": {"finetune": {"epochs": 0}, "method": {k: False for k in (
            "lof", "confidence_set", "removal", "contrastive", "mixup", "label_correction")}},
    },
}


def dvc(ws: Path, *args: str) -> str:
    env = os.environ | {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop("MLFLOW_TRACKING_URI", None)
    out = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=ws, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout + out.stderr


def ran_stages(log: str) -> set[str]:
    return {line.split("'")[1] for line in log.splitlines() if line.startswith("Running stage")}


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ws")
    params = root / "tiny.yaml"
    params.write_text(yaml.safe_dump(TINY))
    ws = workspace.create(root / "ws", params)
    subprocess.run([sys.executable, "-m", "stages.cli", "prepare-tracking"], cwd=ws, check=True)
    ws.joinpath("first.log").write_text(dvc(ws, "repro"))
    return ws


def test_first_repro_runs_every_stage_and_writes_all_outputs(ws: Path) -> None:
    ran = ran_stages(ws.joinpath("first.log").read_text())
    expected = {f"{s}@{c}" for s in ("noise", "warmup", "train", "finetune", "evaluate") for c in TINY["runs"]}
    assert ran == expected | {"report"}
    for cell in TINY["runs"]:
        assert (ws / "data" / "labels" / f"{cell}.parquet").exists()
        metrics = json.loads((ws / "metrics" / f"{cell}.json").read_text())
        assert metrics["status"] == "done" and 0 <= metrics["train"]["test/top1"] <= 100
    traces = ws / "data" / "runs" / "t-full" / "train" / "epochs"
    assert sorted(p.name for p in traces.iterdir()) == ["epoch=0001", "epoch=0002", "epoch=0003"]
    for name in ("report.md", "table1.csv", "table3.csv", "fig5a.png", "fig5b.png"):
        assert (ws / "reports" / name).stat().st_size > 0
    assert "t-full" in dvc(ws, "metrics", "show")
    issues = json.loads((ws / "metrics" / "label_issues" / "t-full.json").read_text())
    assert issues["samples"] == len(pd.read_csv(ws / "data" / "issues" / "t-full.csv")) and 0 <= issues["f1"] <= 100
    assert "## Label issues" in (ws / "reports" / "report.md").read_text()


def test_mlflow_holds_one_parent_per_cell_with_tags_and_nested_stages(ws: Path) -> None:
    uri = f"sqlite:///{ws / 'mlflow.db'}"
    parents = mlflow_runs.find_cell_runs(uri, "tiny")
    assert sorted(parents["tags.mtadcs.cell"]) == ["t-ce", "t-full"]
    full = parents[parents["tags.mtadcs.cell"] == "t-full"].iloc[0]
    assert full["tags.dataset"] == "digits" and full["tags.noise"] == "sym" and full["tags.rate"] == "0.5"
    assert full["tags.git_commit"] not in ("", "unknown") and "metrics.train/test/top1" in parents.columns
    assert 0 <= full["metrics.label_issues/precision"] <= 100
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    children = client.search_runs([client.get_experiment_by_name("tiny").experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{full['run_id']}'")
    assert sorted(c.data.tags["mtadcs.stage"] for c in children) == ["evaluate", "finetune", "noise", "train", "warmup"]
    report = client.search_runs([client.get_experiment_by_name("tiny").experiment_id],
                                filter_string="tags.`mtadcs.role` = 'report'")
    artifacts = {a.path for a in client.list_artifacts(report[0].info.run_id, "report")}
    assert {"report/report.md", "report/fig5a.png", "report/table1.csv"} <= artifacts


def test_second_repro_runs_nothing_and_a_finetune_edit_reruns_only_its_descendants(ws: Path) -> None:
    assert ran_stages(dvc(ws, "repro")) == set()
    params = yaml.safe_load((ws / "params.yaml").read_text())
    params["finetune"]["lr"] = 0.002
    (ws / "params.yaml").write_text(yaml.safe_dump(params))
    ran = ran_stages(dvc(ws, "repro"))
    assert ran == {"finetune@t-full", "finetune@t-ce", "evaluate@t-full", "evaluate@t-ce", "report"}


def test_dvc_exp_runs_in_place_and_from_the_queue_logging_into_the_workspace_store(ws: Path) -> None:
    """The workspace is a git repo with a baseline commit, so `dvc exp` works; a queued experiment
    runs in a temporary copy under .dvc/tmp/exps, and still logs into the workspace's MLflow store."""
    workspace.commit(ws, "baseline for experiments")
    ran = ran_stages(dvc(ws, "exp", "run", "-n", "knn30", "-S", "evaluate.knn_k=30"))
    assert ran == {"evaluate@t-full", "evaluate@t-ce", "report"}
    dvc(ws, "exp", "run", "--queue", "-n", "knn20", "-S", "evaluate.knn_k=20")
    dvc(ws, "queue", "start", "-j", "1")
    for _ in range(120):
        status = dvc(ws, "queue", "status")
        if "Queued" not in status and "Running" not in status:
            break
        time.sleep(5)
    assert "Success" in status and "Failed" not in status, status
    shown = json.loads(dvc(ws, "exp", "show", "--json"))
    names = {exp.get("name") for rev in shown for exp in (rev.get("experiments") or [])}
    assert {"knn30", "knn20"} <= names
    assert "evaluate.knn_k" in dvc(ws, "exp", "diff", "knn30", "knn20")
    uri = f"sqlite:///{ws / 'mlflow.db'}"
    cells = mlflow_runs.find_cell_runs(uri, "tiny")
    knn = set(cells.loc[cells["tags.mtadcs.cell"] == "t-full", "params.evaluate.knn_k"])
    assert {"10", "30", "20"} <= knn  # the queued run's parent is in the workspace's store


def test_a_real_browser_sees_the_cells_with_metric_columns_in_mlflow_ui(ws: Path, tmp_path: Path) -> None:
    """`mlflow server` over the workspace's store, driven by headless Chromium: the runs page of the
    project's view lists both cells with their final top-1. Skips where Chromium is not installed
    (.ci/run installs Debian's `chromium`)."""
    import re
    import shutil
    import socket

    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("chromium is not installed (apt-get install chromium)")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
                               "--backend-store-uri", f"sqlite:///{ws / 'mlflow.db'}", "--workers", "1"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        uri = f"http://127.0.0.1:{port}"
        from mlflow import MlflowClient

        deadline = time.monotonic() + 90
        while True:
            try:
                experiment = MlflowClient(uri).get_experiment_by_name("tiny").experiment_id
                break
            except Exception:
                assert time.monotonic() < deadline and server.poll() is None, "mlflow server did not start"
                time.sleep(1)
        url = mlflow_runs.runs_view_url(uri, experiment)
        common = [browser, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                  "--virtual-time-budget=20000", "--window-size=1600,900"]
        dom = subprocess.run([*common, "--dump-dom", url], capture_output=True, text=True, timeout=180).stdout
        shot = tmp_path / "mlflow-runs.png"
        subprocess.run([*common, f"--screenshot={shot}", url], capture_output=True, timeout=180)
    finally:
        server.terminate()
        server.wait(timeout=30)
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", re.sub(r"<style[^>]*>.*?</style>", " ", dom, flags=re.S)))
    table = text[text.find("Run Name"):]
    assert "t-full" in table and "t-ce" in table, table[:2000]
    assert "finetune/test/top1" in table and "train/test/top1" in table, table[:2000]  # metric columns
    assert re.search(r"\b\d{1,3}\.\d+\b", table), "no metric value shown"
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
