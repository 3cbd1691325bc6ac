"""Training throughput of the two data paths, side by side in one run: the DataLoader path
(per-image torchvision views) and the device-resident path (one uint8 tensor, batch
augmentation), on the same model, data and batches, with the epoch split into augmentation,
training step (forward, backward, update, key encoder) and feature extraction.

    python benchmarks/data_path.py                    # CIFAR-10-5k from ../shared/data, else digits
    python benchmarks/data_path.py --steps 20 --rounds 3 --device cuda

The two paths alternate round by round (loader, resident, loader, ...) so load on the machine
from other work falls on both alike; each figure is the median over rounds. Writes
benchmarks/results/data_path.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
from pathlib import Path

import numpy as np

PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT))

from benchmarks.protocol_v2 import provenance  # noqa: E402
from pipeline.config import parse_params, resolve_cell  # noqa: E402
from pipeline.data.datasets import load_dataset  # noqa: E402
from pipeline.data.noise import make_noisy_labels  # noqa: E402
from pipeline.files import write_text_atomic  # noqa: E402
from pipeline.method import engine  # noqa: E402
from pipeline.method.trainer import Trainer, TrainingLabels  # noqa: E402
from pipeline.runtime import Progress  # noqa: E402

log = logging.getLogger("data_path")
SHARED_DATA = PROJECT.parent / "shared/data/cifar10_subset.npz"
RESULT = PROJECT / "benchmarks/results/data_path.json"


def load(args: argparse.Namespace):
    if args.data == "digits" or (args.data == "auto" and not SHARED_DATA.exists()):
        return "digits", load_dataset("digits", image_size=args.image_size or 32)
    return "cifar10-5k", load_dataset("npz", path=SHARED_DATA)


def make_cell(args: argparse.Namespace, data_path: str):
    params = {
        "data": {"dataset": "digits", "image_size": args.image_size} if args.data_name == "digits" else {"dataset": "npz", "path": str(SHARED_DATA)},
        "model": {"arch": "preact_resnet18", "width": args.width, "proj_dim": 128},
        "method": {"queue_size": 5000},
        "optim": {"batch_size": args.batch, "iters_per_epoch": args.steps},
        "runtime": {"device": args.device, "threads": args.threads, "workers": args.workers, "progress": "log",
                    "data_path": data_path, "seed": 0},
        "tracking": {"enabled": False},
        "runs": {data_path: {}},
    }
    return resolve_cell(parse_params(params, "data path benchmark"), data_path)


def labels_for(data) -> TrainingLabels:
    """Sym 50 % labels, G = all of S: every path trains on the same samples."""
    clean = data.train.labels
    given = make_noisy_labels(clean, data.num_classes, kind="sym", rate=0.5, seed=0)
    return TrainingLabels(given, clean, np.ones(len(clean), dtype=bool), verified=False)


def one_round(trainer: Trainer, views, args: argparse.Namespace, epoch: int) -> dict:
    """One training epoch (its time split into producing batches and the step), then one
    feature extraction over the training set."""
    with Progress(False, "", 0) as quiet:
        stats = trainer.run_epoch(views, lr=0.05, batch_size=args.batch, mixup_alpha=1.0, contrastive=True,
                                  seed_epoch=epoch, progress=quiet, iters=args.steps)
    start = time.perf_counter()
    trainer.extract(trainer.data.train)
    extract_s = time.perf_counter() - start
    images = stats["steps"] * args.batch
    return {"train_s": stats["time_train"], "augment_s": stats["time_data"],
            "step_s": stats["time_train"] - stats["time_data"], "extract_s": extract_s,
            "img_per_s": images / stats["time_train"], "augment_img_per_s": images / stats["time_data"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", choices=["auto", "cifar10-5k", "digits"], default="auto")
    parser.add_argument("--steps", type=int, default=10, help="training steps per round and path")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--image-size", type=int, default=None, help="digits only: side in pixels (quickstart: 16)")
    parser.add_argument("--width", type=int, default=16, help="PreAct ResNet-18 width (protocol v2: 16)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers of the loader path")
    parser.add_argument("--out", type=Path, default=RESULT)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    name, data = load(args)
    args.data_name = name
    labels = labels_for(data)
    trainers, views = {}, {}
    for path in ("loader", "resident"):
        cell = make_cell(args, path)
        trainers[path] = Trainer(cell, data, labels, lr=0.05, momentum=0.9, weight_decay=1e-4, key_encoder=True)
        views[path] = engine._train_transform(cell, data)
    rounds: dict[str, list[dict]] = {"loader": [], "resident": []}
    for r in range(args.rounds + 1):  # round 0 warms up (allocations, resident copy), not counted
        for path in ("loader", "resident"):
            result = one_round(trainers[path], views[path], args, epoch=r)
            log.info("round %d %s: %.1f img/s (augmentation %.1f s, step %.1f s, extraction %.1f s)", r, path,
                     result["img_per_s"], result["augment_s"], result["step_s"], result["extract_s"])
            if r:
                rounds[path].append(result)
    median = {path: {k: statistics.median(x[k] for x in rs) for k in rs[0]} for path, rs in rounds.items()}
    report = {
        "loader_img_per_s": round(median["loader"]["img_per_s"], 1),
        "resident_img_per_s": round(median["resident"]["img_per_s"], 1),
        "ratio": round(median["resident"]["img_per_s"] / median["loader"]["img_per_s"], 3),
        "epoch_split_s": {path: {k: round(median[path][k], 2) for k in ("augment_s", "step_s", "extract_s")}
                          for path in median},
        "augmentation_img_per_s": {path: round(median[path]["augment_img_per_s"], 1) for path in median},
        "setup": {"data": name, "train_images": len(data.train), "steps_per_round": args.steps, "rounds": args.rounds,
                  "batch": args.batch, "model": f"preact_resnet18 width {args.width}", "views": "two RandAugment views "
                  "(MTaDCS epochs), mixup, key encoder", "device": args.device, "threads": args.threads,
                  "loader_workers": args.workers, "extraction_batch": trainers["loader"].place.eval_batch},
        "note": "augment_s: the training epoch's time spent producing batches (indexing, two augmented views "
                "per image); step_s: the rest of the epoch (forward, backward, update, key encoder, queue); "
                "extract_s: one pass of feature extraction over the training set (what each selection epoch adds). "
                "img_per_s counts training images per second of the training epoch.",
        **provenance(),  # command, code commit, machine, date
    }
    write_text_atomic(args.out, json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
