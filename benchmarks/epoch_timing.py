"""Seconds per epoch of MTaDCS and of the CE baseline on CIFAR-10-5k, split by part.

Runs the library's own epoch loops (pipeline.method.engine) on ../shared/data/cifar10_subset.npz
with the CPU protocol's model (PreAct ResNet-18, width 16), batch 128, and N threads:
a few MTaDCS epochs (training step on G, feature extraction over S, LOF selection,
Parquet trace writing, MLflow logging into a throw-away SQLite store) and a few CE
epochs (every sample, one view, no selection). Prints a Markdown table and writes JSON.

    python benchmarks/epoch_timing.py --data ../shared/data/cifar10_subset.npz --threads 2
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from pipeline.config import SWITCHES, parse_params, resolve_cell
from pipeline.data.datasets import load_dataset
from pipeline.data.noise import initial_confidence_mask, make_noisy_labels
from pipeline.method import engine
from pipeline.method.trainer import TrainingLabels
from pipeline.tracking import mlflow_runs

PARTS = ("time_train", "time_extract", "time_lof", "time_store", "time_mlflow")
OFF = dict.fromkeys(SWITCHES, False)


def cell(threads: int, epochs: int, init_per_class: int, method: dict):
    raw = {
        "data": {"dataset": "npz", "path": "given-to-load_dataset.npz"}, "model": {"width": 16, "proj_dim": 128},
        "noise": {"init_per_class": init_per_class},
        "method": {"queue_size": 5000, **method},
        "optim": {"epochs": epochs + 1, "warmup_epochs": 1, "lr_milestones": [], "batch_size": 128},
        "train": {"feature_every": 1},
        "runtime": {"threads": threads, "workers": 0, "progress": "log"},
        "runs": {"bench": {}},
    }
    return resolve_cell(parse_params(raw, "benchmark"), "bench")


def timed_logger(run: mlflow_runs.StageRun, sink: list[float]):
    def log(record: dict) -> None:
        start = time.perf_counter()
        run.log_epoch(record)
        sink.append(time.perf_counter() - start)
    return log


def measure(name: str, c, data, labels, workdir: Path, uri: str) -> list[dict]:
    """Per-epoch records of the timed epochs, each with its MLflow logging time added."""
    mlflow_times: list[float] = []
    with mlflow_runs.stage_run(uri=uri, experiment="bench", cell=name, stage="train", labels_digest="0" * 16,
                            tags={}) as run:
        log = timed_logger(run, mlflow_times)
        if c.method.lof:
            engine.run_warmup(c, data, labels, workdir / name / "warmup")
            trainer = engine.run_train(c, data, labels, workdir / name / "warmup" / engine.CHECKPOINT,
                                       workdir / name / "train", on_epoch=log)
            records = [r for r in trainer.history if "time_train" in r]  # not the opening selection
        else:  # the CE baseline has no selection phase: its epochs are warm-up epochs with G = S
            ce = c.model_copy(update={"optim": c.optim.model_copy(update={"warmup_epochs": c.optim.epochs})})
            trainer = engine.run_warmup(ce, data, labels, workdir / name / "ce", on_epoch=log)
            records = trainer.history[1:]  # the first epoch pays one-off start-up costs
    for record, seconds in zip(records, mlflow_times[-len(records):], strict=True):
        record["time_mlflow"] = seconds
    return records


def summarise(records: list[dict]) -> dict:
    out = {part: statistics.mean(r.get(part, 0.0) for r in records) for part in PARTS}
    out["epoch_total"] = sum(out.values())
    out["train_samples"] = statistics.mean(r["train_samples"] for r in records)
    out["G_size"] = records[-1].get("G_size")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/cifar10_subset.npz"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=3, help="MTaDCS / CE epochs timed (after 1 warm-up epoch)")
    parser.add_argument("--init-per-class", type=int, default=250,
                        help="verified samples per class: sets |G| (and so the training step) for the timed epochs")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/epoch_timing.json"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)

    data = load_dataset("npz", path=args.data)
    clean = data.train.labels
    noisy = make_noisy_labels(clean, 10, kind="sym", rate=0.5, convention="other", seed=0)
    init = initial_confidence_mask(noisy, clean, 10, init_per_class=args.init_per_class, seeded=True, seed=0)
    labels = TrainingLabels(noisy, clean, init, verified=True)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        uri = f"sqlite:///{tmp}/mlflow.db"
        mlflow_runs.prepare_store(uri)
        for name, method in (("mtadcs", {}), ("ce", OFF)):
            c = cell(args.threads, args.epochs, args.init_per_class, method)
            results[name] = summarise(measure(name, c, data, labels, Path(tmp), uri))
    ratio = results["mtadcs"]["epoch_total"] / results["ce"]["epoch_total"]
    overhead = sum(results["mtadcs"][p] for p in ("time_lof", "time_store", "time_mlflow"))
    report = {
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
        "data": str(args.data), "n_train": len(data.train), "results": results,
        "mtadcs_over_ce": ratio, "lof_store_mlflow_share": overhead / results["mtadcs"]["epoch_total"],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print("| run | train step | extract | LOF | Parquet | MLflow | epoch | samples trained | final G |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, r in results.items():
        cells = " | ".join(f"{r[p]:.2f}" for p in PARTS)
        print(f"| {name} | {cells} | {r['epoch_total']:.2f} | {r['train_samples']:.0f} | {r['G_size']} |")
    print(f"\nMTaDCS epoch / CE epoch: {ratio:.2f}x; LOF + Parquet + MLflow: "
          f"{100 * report['lof_store_mlflow_share']:.1f}% of an MTaDCS epoch ({report['machine']})")


if __name__ == "__main__":
    main()
