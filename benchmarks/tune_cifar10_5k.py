"""One tuning run of the cifar10-5k profile: a cell with overrides, in-process, one JSON line.

The profile's short-schedule choices (README "CPU benchmark (CIFAR-10-5k)") were picked with
this: it calls the engine's phases directly (no DVC, no MLflow), so two runs can share the
2 cores at one thread each. The override is a JSON object merged into the cell's sections:

    python benchmarks/tune_cifar10_5k.py lof105 '{"method": {"lof_threshold": 1.05}}' --threads 1
    python benchmarks/tune_cifar10_5k.py warm25 '{"optim": {"warmup_epochs": 25}}' --warmup-only

Per-epoch lines go to the log; the result (test top-1/top-5/kNN of the final model, top-1
before fine-tuning, the final confidence set) is printed and appended to --results.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import torch
import yaml

PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT))

from pipeline.config import parse_params, resolve_cell  # noqa: E402
from pipeline.layout import CellPaths  # noqa: E402
from pipeline.method import engine  # noqa: E402
from pipeline.method.trainer import TrainingLabels  # noqa: E402
from stages import noise  # noqa: E402
from stages.common import StageContext, load_data, load_labels  # noqa: E402
from stages.evaluate import final_confidence_set  # noqa: E402


def merge(base: dict, override: dict) -> dict:
    for key, value in override.items():
        base[key] = merge(dict(base.get(key) or {}), value) if isinstance(value, dict) else value
    return base


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", help="run name: its directory under --out and its result's key")
    parser.add_argument("override", help="JSON object merged into the cell's sections")
    parser.add_argument("--cell", default="c10k-sym50")
    parser.add_argument("--data", type=Path, default=PROJECT.parent / "shared/data/cifar10_subset.npz")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup-only", action="store_true", help="stop after warm-up and evaluate that model")
    parser.add_argument("--out", type=Path, default=Path("tune-cifar10-5k"))
    parser.add_argument("--results", type=Path, default=Path("tune-cifar10-5k/results.jsonl"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)

    raw = yaml.safe_load((PROJECT / "profiles/cifar10-5k.yaml").read_text())
    raw["data"]["path"] = str(args.data.resolve())
    raw["runtime"] |= {"threads": args.threads, "progress": "log"}
    raw["runs"][args.cell] = merge(raw["runs"].get(args.cell, {}), json.loads(args.override))
    cell = resolve_cell(parse_params(raw, "tuning override"), args.cell)
    out, started = args.out / args.name, time.perf_counter()
    ctx = StageContext(out, cell, CellPaths(out, cell.name))
    noise.run(ctx)  # the noise stage's own label file, read back as the training stages do
    data = load_data(ctx)
    labels = load_labels(ctx, data)
    result = run(cell, data, labels, out, warmup_only=args.warmup_only)
    result = {"name": args.name, "override": args.override, **result,
              "minutes": (time.perf_counter() - started) / 60}
    print(json.dumps(result))
    args.results.parent.mkdir(parents=True, exist_ok=True)
    with args.results.open("a") as handle:
        handle.write(json.dumps(result) + "\n")


def run(cell, data, labels: TrainingLabels, out: Path, *, warmup_only: bool) -> dict:
    """Warm-up, MTaDCS epochs and fine-tune as the stages run them; the CE cell is its warm-up."""
    if not cell.method.uses_predictions:  # one plain phase of every epoch, as the CE cell's stages amount to
        cell = cell.model_copy(update={"optim": cell.optim.model_copy(update={"warmup_epochs": cell.optim.epochs})})
    engine.run_warmup(cell, data, labels, out / "warmup")
    checkpoint, before = out / "warmup" / engine.CHECKPOINT, None
    if cell.method.uses_predictions and not warmup_only:
        trained = engine.run_train(cell, data, labels, checkpoint, out / "train")
        engine.run_finetune(cell, data, labels, out / "train" / engine.CHECKPOINT, out / "finetune")
        checkpoint, before = out / "finetune" / engine.CHECKPOINT, trained.history[-1]["test_top1"]
    final = engine.load_trained(cell, data, checkpoint)  # loaded once: evaluation and G
    metrics = engine.evaluate_checkpoint(cell, data, labels, final)
    return {"top1_before_finetune": before, **metrics, "G": final_confidence_set(final.state, labels)}


if __name__ == "__main__":
    main()
