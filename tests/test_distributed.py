"""Data-parallel training under torchrun: 2 CPU processes (gloo) against one process with the
same global batch, through the real stage entry points (`python -m stages.cli`).

What must agree: the confidence set G and the metrics, within a stated tolerance. They cannot
agree bit for bit on CPU: gloo has no synchronised BatchNorm, so each rank normalises its half
of the batch, and mixup pairs images within a rank's half. The data make the outcome certain
whatever the torch build: four colour classes (every model that trains at all separates them)
with 30 % symmetric noise (and no RandAugment, whose colour ops would hide the class), so G's decisions (keep a sample whose prediction matches its label,
drop one that does not) are the same for both runs up to a few LOF borderline cases. The schedule
is what makes "trains at all" certain: at lr 0.05, batch 16 (8 a rank) and a 3-epoch warm-up on
the 24-sample seed, a build with other CPU kernels (AVX-512) left one run unable to tell two
colours apart at the first selection (test top-1 50-75 %) and G differed in 17 % of the samples;
lr 0.02, batch 32 and a 5-epoch warm-up reach 100 % in both runs before selection starts.

Tolerances: G differs in at most 10 % of the samples; test top-1 within 10 points; the same
number of optimizer steps (a step is one global batch).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from pipeline.data.noise import read_label_file
from pipeline.layout import CellPaths

PROJECT = Path(__file__).resolve().parents[1]
K, N_TRAIN, N_TEST, SIZE = 4, 96, 32, 16
G_TOLERANCE, TOP1_TOLERANCE = 0.10, 10.0

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not torch.distributed.is_available(), reason="torch built without distributed")]


def _images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % K
    colours = np.array([[200, 40, 40], [40, 200, 40], [40, 40, 200], [200, 200, 40]])
    images = colours[labels][:, None, None, :] + rng.normal(0, 25, (n, SIZE, SIZE, 3))
    return np.clip(images, 0, 255).astype(np.uint8), labels.astype(np.int64)


def _workspace(root: Path, device: str = "cpu", gpu_settings: bool = False) -> Path:
    """The tiny cell's workspace; `gpu_settings` turns on bf16 autocast and channels_last (CUDA)."""
    root.mkdir(parents=True)
    x_train, y_train = _images(N_TRAIN, 0)
    x_test, y_test = _images(N_TEST, 1)
    np.savez(root / "colours.npz", x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    params = {
        "data": {"dataset": "npz", "path": "colours.npz"},
        "noise": {"kind": "sym", "rate": 0.3, "init_per_class": 6, "sym_convention": "other"},
        "model": {"width": 8, "proj_dim": 16},
        "method": {"lof_neighbors": 5, "queue_size": 64, "randaugment_ops": 0},  # colour ops would hide the class
        "optim": {"epochs": 8, "warmup_epochs": 5, "lr": 0.02, "lr_milestones": [7], "batch_size": 32,
                  "iters_per_epoch": 8},  # 8 steps an epoch, whatever G's size: enough to learn the colours
        "train": {"feature_every": 3},
        "finetune": {"epochs": 1, "lr": 0.01, "batch_size": 16},
        "runtime": {"device": device, "threads": 1, "workers": 0, "progress": "log", "amp": gpu_settings,
                    "channels_last": gpu_settings, "seed": 0, "eval_batch_size": 64, "data_path": "resident"},
        "tracking": {"enabled": False},
        "runs": {"c": {}},
    }
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    return root


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stage(root: Path, stage: str, processes: int) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(PROJECT), "OMP_NUM_THREADS": "1"}
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes),
                "--master_addr", "127.0.0.1", "--master_port", str(_free_port())] if processes > 1 else [sys.executable]
    done = subprocess.run([*launcher, "-m", "stages.cli", stage, "--cell", "c"], cwd=root, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{stage} on {processes} process(es) failed:\n{done.stderr[-3000:]}"
    return done


def _final(root: Path) -> tuple[np.ndarray, list[dict]]:
    state = torch.load(root / "data/runs/c/train/checkpoint.pt", weights_only=True)
    return state["in_G"].numpy(), state["history"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[int, Path]:
    base = _workspace(tmp_path_factory.mktemp("ddp") / "one")
    _stage(base, "noise", 1)
    two = tmp_path_factory.getbasetemp() / "two"
    shutil.copytree(base, two)
    params = yaml.safe_load((two / "params.yaml").read_text())
    params["runtime"]["processes"] = 2  # the stage command relaunches itself under torchrun
    (two / "params.yaml").write_text(yaml.safe_dump(params))
    logs = {}
    for root, processes in ((base, 1), (two, 2)):
        logs[processes] = [_stage(root, stage, 1).stderr for stage in ("warmup", "train")]
    return {1: base, 2: two, "logs": logs}


def test_two_gloo_processes_reach_the_same_G_and_metrics_as_one(runs) -> None:
    G1, history1 = _final(runs[1])
    G2, history2 = _final(runs[2])
    assert "launching 2 processes" in runs["logs"][2][0] and "gloo" in runs["logs"][2][0]
    assert np.mean(G1 != G2) <= G_TOLERANCE, f"G differs in {np.mean(G1 != G2):.0%} of the samples"
    assert abs(history1[-1]["test_top1"] - history2[-1]["test_top1"]) <= TOP1_TOLERANCE
    steps1 = [r.get("steps") for r in history1]
    assert steps1 == [r.get("steps") for r in history2]  # the same global batches
    table = read_label_file(CellPaths(runs[2], "c").labels).table
    noisy = table["noisy_label"].to_numpy() != table["clean_label"].to_numpy()
    assert G2[~noisy].mean() > G2[noisy].mean()  # G keeps clean samples over noisy ones

def test_rank_zero_alone_writes_and_a_rerun_under_torchrun_resumes(runs) -> None:
    """torchrun started by hand (as the README shows) resumes the stage's checkpoint."""
    out = runs[2] / "data/runs/c/train"
    traces = sorted(p.name for p in (out / "epochs").iterdir())
    assert traces and len(traces) == len(set(traces))
    assert not list(out.glob(".*.tmp"))  # no temp file of a second writer left behind
    before = (out / "checkpoint.pt").read_bytes()
    again = _stage(runs[2], "train", 2)
    assert "resuming after epoch 8" in again.stderr
    assert (out / "checkpoint.pt").read_bytes() == before  # nothing left to train: untouched
