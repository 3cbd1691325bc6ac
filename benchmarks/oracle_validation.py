"""Diagnosis of tuning trials against the validation images' clean labels (an oracle: it chooses
nothing; `protocol_v2.py tune` scores trials on the noisy labels a practitioner has).

At asymmetric noise noisy validation labels understate a fix of the flipped confusions (with 40 %
of deer labelled horse, a deer predicted deer scores 0.6 on average, one predicted horse 0.4), so
this prints, per trial run directory, top-1 against the clean and the noisy labels, per-class
clean accuracy, the model's predicted class counts and its final G per label.

    python benchmarks/oracle_validation.py --dir /work/bench/pv2 --setting asym40 \
        tune-ce-asym40 tune-paper-no-lc-sure-adjusted-asym40-20spe
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

PROJECT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(PROJECT), str(PROJECT / "benchmarks")]

import protocol_v2 as pv2  # noqa: E402

from pipeline.layout import CellPaths  # noqa: E402
from pipeline.method import engine  # noqa: E402
from pipeline.method.trainer import load_checkpoint  # noqa: E402
from stages.common import StageContext, load_data  # noqa: E402


def held_out_clean_labels(source: Path) -> np.ndarray:
    """The clean labels of the validation images, in the order `validation_npz` stores them."""
    y = np.load(source)["y_train"]
    return y[pv2.validation_mask(y)]


def trial_of(run: str, setting: str) -> tuple[str, int]:
    """(trial name, steps an epoch) from a tuning run directory's name."""
    stem = run.removeprefix("tune-")
    per_epoch = pv2.STEPS_PER_EPOCH // 2
    if stem.endswith("spe"):
        stem, _, spe = stem.rpartition("-")
        per_epoch = int(spe.removesuffix("spe"))
    return stem.removesuffix(f"-{setting}"), per_epoch


def diagnose(run_dir: Path, setting: str, npz: Path, clean: np.ndarray) -> None:
    trial, per_epoch = trial_of(run_dir.name, setting)
    cell = pv2.make_cell(pv2.TRIALS[trial], run_dir.name, npz, setting, per_epoch)
    data = load_data(StageContext(run_dir, cell, CellPaths(run_dir, cell.name)))
    checkpoint = next(run_dir / phase / engine.CHECKPOINT for phase in ("finetune", "train", "warmup")
                      if (run_dir / phase / engine.CHECKPOINT).exists())
    state = load_checkpoint(checkpoint)
    preds = engine.extract_checkpoint(cell, data, checkpoint, data.tests["test"]).preds
    noisy = data.tests["test"].labels
    k = data.num_classes
    G, labels = np.asarray(state["in_G"]), np.asarray(state["labels"])
    print(f"{run_dir.name}: top-1 {100 * np.mean(preds == clean):.1f} (clean labels), "
          f"{100 * np.mean(preds == noisy):.1f} (noisy)")
    print("  clean accuracy per class", [round(float(np.mean(preds[clean == c] == c)), 2) for c in range(k)])
    print("  predicted class counts  ", np.bincount(preds, minlength=k).tolist())
    print("  final G per label       ", np.bincount(labels[G], minlength=k).tolist())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", type=Path, required=True, help="the tuning directory (`tune --dir`)")
    parser.add_argument("--setting", choices=list(pv2.SETTINGS), required=True)
    parser.add_argument("--data", type=Path, default=PROJECT.parent / "shared/data/cifar10_subset.npz")
    parser.add_argument("runs", nargs="+", help="run directory names under --dir, e.g. tune-ce-asym40")
    args = parser.parse_args()
    npz = pv2.validation_npz(args.data, args.setting, args.dir)
    clean = held_out_clean_labels(args.data)
    for run in args.runs:
        diagnose(args.dir / run, args.setting, npz, clean)


if __name__ == "__main__":
    main()
