"""The CPU benchmark on CIFAR-10-5k: MTaDCS against the cross-entropy baseline, one table.

Runs the protocol of ../shared/data/README.md through the pipeline itself: a DVC workspace
made from the `cifar10-5k` params profile (every noise setting has an MTaDCS cell and a CE
cell with the same model, epoch budget and RandAugment family), `dvc repro` of the noise,
warm-up, train, fine-tune and evaluate stages (each logged to the workspace's MLflow store),
then one results table, Markdown and JSON, read from what the stages wrote:

- test top-1 / top-5 / kNN of the final model, and top-1 after the MTaDCS epochs;
- the final confidence set: |G|, precision and recall against the clean labels;
- seconds per epoch of each phase, the MTaDCS epoch split into training step, feature
  extraction, LOF, Parquet writing and MLflow logging, and the peak memory of each stage.

    python benchmarks/cifar10_5k.py --data ../shared/data/cifar10_subset.npz --dir /tmp/bench-c10k

`--table-only` rebuilds the table from a finished workspace; `--cells` runs a subset.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd
import yaml

PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT))

from pipeline.config import MethodConfig, load_params  # noqa: E402
from pipeline.layout import CellPaths  # noqa: E402
from pipeline.tracking import workspace  # noqa: E402

SPLIT = ("time_train", "time_extract", "time_lof", "time_store")  # + MLflow, from resources.json
TRAINING_STAGES = ("warmup", "train", "finetune")
# Reference cells the benchmark adds at sym 50 % (--references): the same schedule and loss with
# selection off (LOF threshold below any score; verified samples are never removed), trained on
# the verified subset alone, or on every correctly labelled sample: what selection adds, and
# the ceiling a perfect confidence set would reach.
NO_SELECTION = {"lof_threshold": 0.001, "label_correction": False}
REFERENCES = {
    "c10k-sym50-verified-only": {"noise": {"kind": "sym", "rate": 0.5}, "method": NO_SELECTION},
    "c10k-sym50-all-clean": {"noise": {"kind": "sym", "rate": 0.5, "init_per_class": 100_000}, "method": NO_SELECTION},
}
REFERENCE_NAMES = {"c10k-sym50-verified-only": "verified subset only",
                   "c10k-sym50-all-clean": "all clean samples (oracle G)"}
TARGETS = {("sym", 0.5): 15.0, ("sym", 0.8): 20.0, ("asym", 0.4): 8.0}  # issue 5: MTaDCS - CE, points


def main() -> None:
    args = parse_args()
    directory = args.dir.resolve()
    params = (directory / "params.yaml" if args.table_only
              else make_params(args.profile, args.data, directory, args.references))
    cells = args.cells or list(load_params(params).runs)
    if not args.table_only:
        try:
            workspace.create(directory, params)
        finally:
            params.unlink()
        workspace.repro(directory, *[f"evaluate@{cell}" for cell in cells])
    rows = [cell_row(directory, cell) for cell in cells]
    result = {"command": " ".join(shlex.quote(a) for a in ["python", *sys.argv]), "machine": machine(),
              "date": datetime.date.today().isoformat(), "profile": args.profile,
              "source_commit": (directory / workspace.SOURCE_COMMIT).read_text().strip(),
              "rows": rows,
              "comparisons": compare(rows, TARGETS if args.profile == "cifar10-5k" else {})}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(markdown(result))
    plot_curves(directory, rows, args.out.with_suffix(".png"))
    print(markdown(result))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=PROJECT.parent / "shared/data/cifar10_subset.npz",
                        help="CIFAR-10-5k .npz (x_train, y_train, x_test, y_test)")
    parser.add_argument("--dir", type=Path, default=Path("bench-cifar10-5k"), help="the DVC workspace to run in")
    parser.add_argument("--profile", default="cifar10-5k", help="params profile under profiles/")
    parser.add_argument("--cells", nargs="*", help="run these cells only (default: every cell of the profile)")
    parser.add_argument("--out", type=Path, default=PROJECT / "benchmarks/results/cifar10_5k.md",
                        help="results table; the JSON goes beside it")
    parser.add_argument("--references", action="store_true",
                        help="also run the sym 50 %% reference cells (verified subset only; all clean samples)")
    parser.add_argument("--table-only", action="store_true", help="no training: tabulate a finished --dir")
    return parser.parse_args()


def make_params(profile: str, data: Path, directory: Path, references: bool) -> Path:
    """The profile with data.path pointing at --data (the profile's own path is the shared copy),
    and the reference cells when asked for."""
    if not data.is_file():
        sys.exit(f"{data}: no such file; pass --data the CIFAR-10-5k .npz (../shared/data/cifar10_subset.npz)")
    raw = yaml.safe_load(workspace.profile_path(profile).read_text())
    raw["data"]["path"] = str(data.resolve())
    if references:
        raw["runs"] |= REFERENCES
    handle = tempfile.NamedTemporaryFile("w", suffix=".yaml", prefix=f"{directory.name}-", delete=False)
    with handle:
        yaml.safe_dump(raw, handle, sort_keys=False)
    return Path(handle.name)


# -- reading what the stages wrote ------------------------------------------------------------

def cell_row(root: Path, cell: str) -> dict:
    paths = CellPaths(root, cell)
    if not paths.metrics.exists():
        raise SystemExit(f"{paths.metrics}: no metrics for cell {cell}; run its stages (drop --table-only)")
    metrics = json.loads(paths.metrics.read_text())
    if metrics.get("status") != "done":
        raise SystemExit(f"{paths.metrics}: cell {cell} did not run ({metrics.get('reason')})")
    final = metrics["finetune"] or metrics["train"]
    selects = MethodConfig(**metrics["switches"]).uses_predictions  # the engine's own rule
    row = {"cell": cell, "method": REFERENCE_NAMES.get(cell, "MTaDCS" if selects else "CE"), "noise": metrics["noise"],
           "rate": metrics["rate"], "realised_rate": metrics["realised_rate"],
           "top1": final["test/top1"], "top5": final["test/top5"], "knn": final["test/knn"],
           "top1_before_finetune": metrics["train"]["test/top1"],
           "G_size": metrics["G"]["size"], "G_precision": metrics["G"].get("precision"),
           "G_recall": metrics["G"].get("recall")}
    return row | epoch_times(paths, selects)


def epoch_times(paths: CellPaths, selects: bool) -> dict:
    """Mean seconds per epoch of each phase and the selection epoch's split.

    A CE cell's warm-up and train epochs are the same plain epoch (G = S, no extraction), so
    both count as its "epoch"; an MTaDCS epoch is a train-phase epoch with every part in it.
    The per-epoch test evaluation (monitoring, not training) is in no column. An epoch that ran
    no selection (the last one under `method.final_selection: false`, and in histories written
    before the `selection` column, where Algorithm 1 ended with Eq. 7) is left out of the split.
    """
    history = {s: _trained_rows(_history(paths, s)) for s in TRAINING_STAGES}
    usage = {s: _resources(paths, s) for s in TRAINING_STAGES}
    mlflow = {s: usage[s].get("mlflow_seconds_per_epoch", 0.0) for s in TRAINING_STAGES}
    out = {"epochs": {s: len(h) for s, h in history.items()}}
    if selects:
        train = history["train"]
        if "selection" in train:
            selecting = train[train["selection"].astype(bool)]
        else:
            selecting = train.iloc[:-1] if len(train) > 1 else train
        split = {part: _mean(selecting, part) for part in SPLIT} | {"time_mlflow": mlflow["train"]}
    else:
        plain = pd.concat([history["warmup"], history["train"]])
        split = {"time_train": _mean(plain, "time_train"), "time_extract": 0.0, "time_lof": 0.0, "time_store": 0.0,
                 "time_mlflow": _pooled_mlflow([usage["warmup"], usage["train"]])}
    out["split"] = split
    out["epoch_seconds"] = sum(split.values())
    out["warmup_epoch_seconds"] = _mean(history["warmup"], "time_train") + mlflow["warmup"]
    out["finetune_epoch_seconds"] = (_mean(history["finetune"], "time_train") + mlflow["finetune"]
                                     if out["epochs"]["finetune"] else 0.0)
    out["training_wall_seconds"] = sum(usage[s].get("wall_seconds", 0.0) for s in TRAINING_STAGES)
    out["peak_rss_mib"] = {s: usage[s].get("peak_rss_mib") for s in TRAINING_STAGES}
    return out


def _history(paths: CellPaths, stage: str) -> pd.DataFrame:
    path = paths.stage_dir(stage) / "history.csv"
    if not path.exists() or path.stat().st_size == 0:
        return pd.DataFrame()
    try:
        return pd.read_csv(path)
    except pd.errors.EmptyDataError:
        return pd.DataFrame()


def _trained_rows(history: pd.DataFrame) -> pd.DataFrame:
    """The rows of epochs that trained (not the train phase's opening selection)."""
    if "time_train" not in history:
        return history.iloc[0:0]
    return history[history["time_train"].notna()].reset_index(drop=True)


def _pooled_mlflow(usages: list[dict]) -> float:
    """MLflow seconds per logged record over several stages, each weighted by its records."""
    records = sum(u.get("epochs_logged", 0) for u in usages)
    if records:
        return sum(u.get("mlflow_seconds", 0.0) for u in usages) / records
    return statistics.mean(u.get("mlflow_seconds_per_epoch", 0.0) for u in usages)  # an older resources.json


def _resources(paths: CellPaths, stage: str) -> dict:
    path = paths.stage_dir(stage) / "resources.json"
    return json.loads(path.read_text()) if path.exists() else {}


def _mean(frame: pd.DataFrame, column: str) -> float:
    if column not in frame or frame[column].dropna().empty:
        return 0.0
    return float(frame[column].dropna().mean())


# -- the comparison and the table -------------------------------------------------------------

def compare(rows: list[dict], targets: dict) -> list[dict]:
    """Each noise setting's MTaDCS row against its CE row, with the protocol's targets."""
    out = []
    for m in (r for r in rows if r["method"] == "MTaDCS"):
        ce = next((r for r in rows if r["method"] == "CE" and (r["noise"], r["rate"]) == (m["noise"], m["rate"])), None)
        if ce is None:
            continue
        overhead = m["split"]["time_lof"] + m["split"]["time_store"] + m["split"]["time_mlflow"]
        out.append({"setting": f"{m['noise']} {m['rate']:g}", "mtadcs": m["cell"], "ce": ce["cell"],
                    "top1_gain": m["top1"] - ce["top1"], "top1_gain_target": targets.get((m["noise"], m["rate"])),
                    "epoch_ratio": _ratio(m["epoch_seconds"], ce["epoch_seconds"]),
                    "overhead_share": _ratio(overhead, m["epoch_seconds"]),
                    "training_wall_ratio": _ratio(m["training_wall_seconds"], ce["training_wall_seconds"])})
    return out


def _ratio(a: float, b: float) -> float | None:
    return a / b if b else None  # None: a workspace from before the stages recorded their cost


def markdown(result: dict) -> str:
    lines = [f"# CPU benchmark, profile {result['profile']}: MTaDCS vs cross-entropy ({result['date']})", "",
             f"Command: `{result['command']}`  ", f"Machine: {result['machine']}  ",
             f"Profile: `profiles/{result['profile']}.yaml`, code {result['source_commit']}", "",
             "| cell | method | noise | top-1 | top-5 | kNN | top-1 before FT | G size | G precision | G recall "
             "| s/epoch | train step | extract | LOF | Parquet | MLflow | epochs (warm-up/train/FT) | training wall s "
             "| peak RSS MiB |",
             "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
             "| ---: | --- | ---: | ---: |"]
    for r in result["rows"]:
        s, e = r["split"], r["epochs"]
        g = (f"{r['G_size']} | {_pct(r['G_precision'])} | {_pct(r['G_recall'])}" if r["method"] != "CE"
             else f"{r['G_size']} (all) | | ")
        peaks = [v for v in r["peak_rss_mib"].values() if v is not None]
        peak = f"{max(peaks):.0f}" if peaks else "n/a"
        lines.append(
            f"| {r['cell']} | {r['method']} | {r['noise']} {r['rate']:g} | {r['top1']:.1f} | {r['top5']:.1f} | "
            f"{r['knn']:.1f} | {r['top1_before_finetune']:.1f} | {g} | {r['epoch_seconds']:.2f} | "
            f"{s['time_train']:.2f} | {s['time_extract']:.2f} | {s['time_lof']:.3f} | {s['time_store']:.3f} | "
            f"{s['time_mlflow']:.3f} | {e['warmup']}/{e['train']}/{e['finetune']} | "
            f"{r['training_wall_seconds']:.0f} | {peak} |")
    lines += ["", "| setting | MTaDCS − CE top-1 | target | MTaDCS epoch / CE epoch | LOF+Parquet+MLflow share "
              "| MTaDCS / CE training wall time |", "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for c in result["comparisons"]:
        target = f"≥ +{c['top1_gain_target']:g}" if c["top1_gain_target"] is not None else ""
        lines.append(f"| {c['setting']} | {c['top1_gain']:+.1f} | {target} | {_fmt(c['epoch_ratio'], '.2f', '×')} | "
                     f"{_fmt(c['overhead_share'] and 100 * c['overhead_share'], '.2f', ' %')} | "
                     f"{_fmt(c['training_wall_ratio'], '.2f', '×')} |")
    lines += ["", "s/epoch: an MTaDCS epoch is a selection epoch (training step on G, extraction of f over all "
              "of S, LOF, Parquet trace, MLflow); an epoch that ran no selection is left out; a CE epoch is a "
              "training step on all of S plus MLflow. "
              "The per-epoch test evaluation is monitoring and in no column. Peak RSS: the largest of the "
              "warm-up, train and fine-tune stage processes (`ru_maxrss`)."]
    return "\n".join(lines) + "\n"


def plot_curves(root: Path, rows: list[dict], path: Path) -> None:
    """Per noise setting: test top-1 per training epoch of MTaDCS and CE (every phase in
    order), and the confidence set's size and precision per epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    settings = list(dict.fromkeys((r["noise"], r["rate"]) for r in rows))
    fig, axes = plt.subplots(2, len(settings), figsize=(4.5 * len(settings), 6.5), squeeze=False)
    for col, setting in enumerate(settings):
        top, bottom = axes[0, col], axes[1, col]
        for r in (r for r in rows if (r["noise"], r["rate"]) == setting):
            history = pd.read_csv(CellPaths(root, r["cell"]).plots)
            epochs = history[history["time_train"].notna()].reset_index(drop=True)
            x = epochs.index + 1
            top.plot(x, epochs["test_top1"], label=r["method"])
            if r["method"] == "MTaDCS" and "G_precision" in epochs:
                bottom.plot(x, epochs["G_precision"], color="tab:green", label="precision of G (%)")
                size = bottom.twinx()
                size.plot(x, epochs["G_size"], color="tab:gray", linestyle="--", label="|G|")
                size.set_ylabel("|G|")
        top.set_title(f"{setting[0]} {setting[1]:g}")
        top.set_ylabel("test top-1 (%)")
        top.legend()
        bottom.set_xlabel("training epoch (warm-up, MTaDCS, fine-tune)")
        bottom.set_ylabel("precision of G (%)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _pct(value: float | None) -> str:
    return "" if value is None else f"{value:.1f}"


def _fmt(value: float | None, spec: str, unit: str) -> str:
    return "n/a" if value is None else f"{value:{spec}}{unit}"


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        names = [ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                 if ln.startswith("model name")]
        cpu = names[0] if names else cpu
        mem = next(int(ln.split()[1]) for ln in Path("/proc/meminfo").read_text().splitlines()
                   if ln.startswith("MemTotal")) / 2**20
        memory = f", {mem:.0f} GiB RAM"
    except (OSError, StopIteration):
        memory = ""
    torch_version = subprocess.run([sys.executable, "-c", "import torch; print(torch.__version__)"],
                                   capture_output=True, text=True).stdout.strip()
    return f"{cpu}, {os.cpu_count()} cores{memory}, {platform.system()} {platform.release()}, torch {torch_version}"


if __name__ == "__main__":
    main()
