"""Time MTaDCS at the paper's model width on one GPU and project a full CIFAR-10 paper cell.

Runs the library's epoch loops (warm-up, MTaDCS epochs with extraction and LOF selection,
fine-tuning) on CIFAR-10-5k (or, without ../shared/data, a synthetic CIFAR-shaped set of the
same size: timing does not depend on the pixels), PreAct ResNet-18 at width 64, batch 128,
the device-resident data path, bf16 autocast. Prints images/s, seconds per epoch of each phase,
peak GPU memory, and the projected wall time of one paper cell on full CIFAR-10 (50,000 images,
250 warm-up + MTaDCS epochs, 70 fine-tuning epochs), with G at its largest (all of S) so the
projection is an upper bound.

    python benchmarks/gpu_timing.py [--data PATH] [--epochs 3] [--device cuda]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT))

from pipeline.config import parse_params, resolve_cell  # noqa: E402
from pipeline.data.datasets import load_dataset  # noqa: E402
from pipeline.data.noise import initial_confidence_mask, make_noisy_labels  # noqa: E402
from pipeline.method import engine  # noqa: E402
from pipeline.method.trainer import TrainingLabels  # noqa: E402

log = logging.getLogger("gpu_timing")
PAPER_IMAGES, PAPER_EPOCHS, PAPER_FINETUNE, PAPER_TEST = 50_000, 250, 70, 10_000
SHARED = PROJECT.parent / "shared/data/cifar10_subset.npz"


def dataset_file(path: Path | None, scratch: Path) -> Path:
    if path is not None and path.exists():
        return path
    if SHARED.exists():
        return SHARED
    log.info("no CIFAR-10-5k file: timing on a synthetic CIFAR-shaped set of the same size")
    rng = np.random.default_rng(0)
    target = scratch / "synthetic.npz"
    np.savez(target, x_train=rng.integers(0, 256, (5170, 32, 32, 3), dtype=np.uint8),
             y_train=np.arange(5170) % 10, x_test=rng.integers(0, 256, (1017, 32, 32, 3), dtype=np.uint8),
             y_test=np.arange(1017) % 10)
    return target


def make_cell(args: argparse.Namespace, data_file: Path):
    params = {
        "data": {"dataset": "npz", "path": str(data_file)},
        "noise": {"kind": "sym", "rate": 0.5},
        "model": {"arch": "preact_resnet18", "width": args.width, "proj_dim": 128},
        "method": {"queue_size": 5000},
        "optim": {"epochs": 1 + args.epochs, "warmup_epochs": 1, "lr_milestones": [], "batch_size": 128,
                  "iters_per_epoch": "S"},
        "finetune": {"epochs": 1, "batch_size": 128, "iters_per_epoch": "S"},
        "train": {"feature_every": 1000},
        "runtime": {"device": args.device, "progress": "log", "data_path": args.data_path, "threads": 0},
        "tracking": {"enabled": False},
        "runs": {"gpu": {}},
    }
    return resolve_cell(parse_params(params, "gpu timing"), "gpu")


def seconds(history: list[dict], key: str) -> float:
    return float(np.median([r[key] for r in history if key in r]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--epochs", type=int, default=3, help="MTaDCS epochs timed (after one warm-up epoch)")
    parser.add_argument("--width", type=int, default=64, help="PreAct ResNet-18 width (the paper: 64)")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--data-path", default="auto", choices=["auto", "loader", "resident"])
    parser.add_argument("--out", type=Path, default=None, help="also write the figures as JSON here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    with tempfile.TemporaryDirectory() as scratch:
        cell = make_cell(args, dataset_file(args.data, Path(scratch)))
        data = load_dataset("npz", path=Path(cell.data.path))
        clean = data.train.labels
        given = make_noisy_labels(clean, data.num_classes, kind="sym", rate=0.5, seed=0)
        init_G = initial_confidence_mask(given, clean, data.num_classes, init_per_class=min(100, len(clean) // (4 * data.num_classes)), seeded=True, seed=0)
        labels = TrainingLabels(given, clean, init_G)
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        warm = engine.run_warmup(cell, data, labels, Path(scratch) / "w")
        train = engine.run_train(cell, data, labels, Path(scratch) / "w" / engine.CHECKPOINT, Path(scratch) / "t")
        tune = engine.run_finetune(cell, data, labels, Path(scratch) / "t" / engine.CHECKPOINT, Path(scratch) / "f")
        wall = time.perf_counter() - start
        device = warm.device
    epochs = [r for r in train.history if r.get("steps")]
    n = len(data.train)
    train_img_s = float(np.median([r["steps"] * cell.optim.batch_size / r["time_train"] for r in epochs]))
    extract_img_s = n / seconds(epochs, "time_extract")
    tune_img_s = float(np.median([r["steps"] * cell.finetune.batch_size / r["time_train"] for r in tune.history]))
    per_epoch = {"train_s": seconds(epochs, "time_train"), "extract_s": seconds(epochs, "time_extract"),
                 "selection_s": seconds(epochs, "time_lof"), "trace_s": seconds(epochs, "time_store")}
    # Full CIFAR-10: each MTaDCS epoch trains on |S| images (G's largest), extracts S, selects over S
    # (LOF cost grows with the class sizes: scaled by (50000/n)^2 as an upper bound for the k-NN
    # search), and tests on 10,000 images; fine-tuning trains 70 epochs on |S|.
    scale = PAPER_IMAGES / n
    epoch_paper = (PAPER_IMAGES / train_img_s + PAPER_IMAGES / extract_img_s + per_epoch["selection_s"] * scale**2
                   + PAPER_TEST / extract_img_s)
    projected = PAPER_EPOCHS * epoch_paper + PAPER_FINETUNE * (PAPER_IMAGES / tune_img_s + PAPER_TEST / extract_img_s)
    report = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else str(device),
        "data_path": warm.place.data_path, "width": args.width, "train_images": n,
        "train_img_per_s": round(train_img_s, 1), "extract_img_per_s": round(extract_img_s, 1),
        "finetune_img_per_s": round(tune_img_s, 1),
        "seconds_per_mtadcs_epoch": {k: round(v, 3) for k, v in per_epoch.items()},
        "peak_gpu_mib": round(torch.cuda.max_memory_allocated(device) / 2**20, 1) if device.type == "cuda" else None,
        "timed_wall_s": round(wall, 1),
        "projected_full_cifar10_cell_min": round(projected / 60, 1),
        "projected_target_min": 30,
    }
    print(json.dumps(report, indent=2))
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
