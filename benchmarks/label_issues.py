"""Label issues on CIFAR-10-5k (protocol v2): the MTaDCS export of one run against cleanlab.

    pip install -e ".[bench]"                                     # cleanlab: an optional extra
    python benchmarks/label_issues.py run --dir /work/bench/pv2    # every missing (method, setting)
    python benchmarks/label_issues.py run --methods mtadcs --settings sym50
    python benchmarks/label_issues.py table

`mtadcs`: the label-issue table (pipeline/analysis/label_issues.py) of the protocol v2 cell of
the best switch set, which `benchmarks/protocol_v2.py run` trains in the same directory. Its wall
time is that one training run's plus the export's.

`cleanlab`: cleanlab's documented usage. Out-of-sample predicted probabilities come from K-fold
cross-validation (stratified on the given labels, as `cleanlab.count.estimate_cv_predicted_probabilities`
does) of the same model with the project's own training code (cross-entropy on all given labels,
the protocol's CE recipe), under the same total step budget: the K fold models together take the
2000 steps of one protocol run. `cleanlab.filter.find_label_issues(labels, pred_probs)` (its
default, prune_by_noise_rate) flags the issues; the suggested label is the out-of-sample argmax.
Its wall time is the K folds plus cleanlab plus the retrain on the cleaned data that its workflow
ends with (CleanLearning); that retrain is the same model, batch and 2000 steps as the protocol's
CE cell, so its time is the CE cell's measured wall time rather than a second run of it (the CE
cell as `protocol_v2.py time` timed it on this machine, where it has; see `retrain_timing`).

Both sides are scored against the clean labels: precision, recall and F1 of "flagged" against
"the given label is wrong", and the accuracy of the suggested labels on the flagged samples.
Each finished record is written to benchmarks/results/label_issues.json at once; folds resume.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT))

from benchmarks import protocol_v2 as pv2  # noqa: E402
from benchmarks.protocol_v2_sets import CE  # noqa: E402
from pipeline.analysis.label_issues import RELABEL_CONFIDENCE, detection_quality  # noqa: E402
from pipeline.data.datasets import Dataset, Split  # noqa: E402
from pipeline.layout import CellPaths  # noqa: E402
from pipeline.method import engine  # noqa: E402
from pipeline.method.trainer import TrainingLabels  # noqa: E402
from stages import noise as noise_stage  # noqa: E402
from stages.common import CODE_ROOT, StageContext, digest, load_data, load_labels  # noqa: E402
from stages.label_issues import issues_for_run  # noqa: E402
from stages.training import TRAINING_CODE  # noqa: E402

log = logging.getLogger("label_issues")

RESULTS = PROJECT / "benchmarks/results/label_issues"
SETTINGS = ("sym50", "sym80", "asym40")
METHODS = ("mtadcs", "cleanlab")
FOLDS = 4
FOLD_EPOCHS = 10  # each fold: 10 epochs of BUDGET / FOLDS / 10 steps, lr drop after 90 % (as the CE cell)
CV_SEED = 0


def protocol_record(method: str, setting: str) -> dict:
    records = pv2.load_records(pv2.RESULTS.with_suffix(".json"))
    found = next((r for r in records if r["method"] == method and r["setting"] == setting), None)
    if found is None:
        raise SystemExit(f"protocol v2 has no {method} cell at {setting}: run "
                         f"`python benchmarks/protocol_v2.py run --methods {method} --settings {setting}` first")
    return found


# -- MTaDCS: the export of one run ---------------------------------------------------------------

def trained_cell(method: str, setting: str, bench: Path, data_path: Path):
    """A protocol v2 cell's record, configuration (named as its files are), run directory, data
    and labels; refused if the record ran another configuration than today's set of that name."""
    trained = protocol_record(method, setting)
    run_dir = pv2.run_dir_name(trained)
    cell = pv2.make_cell(pv2.METHODS[method], run_dir, data_path, setting)
    if not pv2.same_configuration(trained, cell):
        raise SystemExit(f"the protocol v2 {method} record at {setting} was trained with another configuration "
                         f"than today's set of that name: rerun `python benchmarks/protocol_v2.py run --methods "
                         f"{method} --settings {setting} --force` first")
    out = bench / run_dir
    cell = cell.model_copy(update={"name": pv2.cell_name_in(out)})  # its files' name, if the directory was renamed
    ctx = StageContext(out, cell, CellPaths(out, cell.name))
    data = load_data(ctx)
    return trained, cell, out, data, load_labels(ctx, data)


def mtadcs_record(setting: str, bench: Path, data_path: Path) -> dict:
    started = time.perf_counter()
    trained, cell, out, data, labels = trained_cell("mtadcs-best", setting, bench, data_path)
    issues = issues_for_run(cell, data, labels, out / "train", out / "finetune" / engine.CHECKPOINT)
    export_s = time.perf_counter() - started
    issues.to_parquet(out / "label_issues.parquet", index=False)
    return {**detection_quality(issues), "wall_s": trained["wall_s"] + export_s, "train_wall_s": trained["wall_s"],
            "export_s": export_s, "run": f"protocol_v2 mtadcs-best at {setting}, run in {out.name}"}


# -- cleanlab: K-fold out-of-sample probabilities, then find_label_issues --------------------------

def fold_cell(setting: str, data_path: Path, k: int):
    steps = pv2.BUDGET // FOLDS // FOLD_EPOCHS
    ce = pv2.merge(CE, {"optim": {"epochs": FOLD_EPOCHS, "warmup_epochs": FOLD_EPOCHS,
                                      "lr_milestones": [int(0.9 * FOLD_EPOCHS)]}})
    return pv2.make_cell(ce, f"cleanlab-{setting}-fold{k}", data_path, setting, steps_per_epoch=steps)


def fold_assignment(given: np.ndarray, folds: int, seed: int) -> np.ndarray:
    from sklearn.model_selection import StratifiedKFold

    fold = np.empty(len(given), dtype=np.int64)
    for k, (_, held) in enumerate(StratifiedKFold(folds, shuffle=True, random_state=seed).split(given, given)):
        fold[held] = k
    return fold


def subset(split: Split, rows: np.ndarray) -> Split:
    return Split(labels=split.labels[rows], index=split.index[rows], images=split.images[rows])


def out_of_sample_probs(setting: str, bench: Path, data_path: Path, clock: pv2.WallClock) -> tuple[np.ndarray, dict]:
    """Each sample's class probabilities from the fold model that never saw it."""
    base = fold_cell(setting, data_path, 0)
    root = bench / f"cleanlab-{setting}"
    ctx = StageContext(root, base, CellPaths(root, base.name))
    noise_stage.run(ctx)
    data = load_data(ctx)
    labels = load_labels(ctx, data)
    fold = fold_assignment(labels.given, FOLDS, CV_SEED)
    probs = np.zeros((len(fold), data.num_classes), dtype=np.float32)
    for k in range(FOLDS):
        cached = root / f"fold{k}" / "probs.npy"
        if not cached.exists():
            probs_k = train_fold(fold_cell(setting, data_path, k), data, labels, fold != k, root / f"fold{k}", clock)
            np.save(cached, probs_k)
        probs[fold == k] = np.load(cached)
    return probs, {"given": labels.given, "clean": labels.clean, "index": data.train.index}


def train_fold(cell, data: Dataset, labels: TrainingLabels, train_rows: np.ndarray, out: Path,
               clock: pv2.WallClock) -> np.ndarray:
    train = np.flatnonzero(train_rows)
    fold_data = Dataset(data.name, data.num_classes, data.class_names, data.image_size, data.mean, data.std,
                        subset(data.train, train), data.tests)
    fold_labels = TrainingLabels(labels.given[train], labels.clean[train], np.ones(len(train), bool))
    planned = pv2.planned_steps(cell, len(train))
    if planned * FOLDS != pv2.BUDGET:
        raise SystemExit(f"{cell.name}: {FOLDS} folds of {planned} steps miss the budget of {pv2.BUDGET}")
    fp = digest(cell.model_dump(mode="json"), {"rows": train.tolist()}, *[CODE_ROOT / n for n in TRAINING_CODE])
    trainer = engine.run_warmup(cell, fold_data, fold_labels, out, fingerprint=fp, on_epoch=clock.save)
    held = subset(data.train, np.flatnonzero(~train_rows))
    logits = trainer.extract(held).logits
    return torch.softmax(logits, dim=1).numpy()


def retrain_timing(setting: str) -> dict:
    """What stands for cleanlab's retrain: the latest CE cell timed on this machine
    (`protocol_v2.py time`, benchmarks/results/protocol_v2_timing.jsonl), so the folds and the
    retrain are timed on one machine; else the CE record's own time, wherever it ran."""
    here = pv2.machine()
    timed_here = pv2.latest_ce_rerun(pv2.load_timings(), setting, here)
    return {"wall_s": timed_here, "machine": here} if timed_here else protocol_record("ce", setting)


def cleanlab_record(setting: str, bench: Path, data_path: Path) -> dict:
    from cleanlab.filter import find_label_issues

    clock = pv2.WallClock(bench / f"cleanlab-{setting}")
    probs, truth = out_of_sample_probs(setting, bench, data_path, clock)
    started = time.perf_counter()
    flagged = find_label_issues(labels=truth["given"], pred_probs=probs)
    cleanlab_s = time.perf_counter() - started
    folds_s = clock.seconds - cleanlab_s
    frame = pd.DataFrame({"is_issue": flagged, "is_noisy": truth["given"] != truth["clean"],
                          "suggested_label": probs.argmax(1), "suggestion_confidence": probs.max(1),
                          "clean_label": truth["clean"]})
    retrain = retrain_timing(setting)
    retrain_s = retrain["wall_s"]
    return {**detection_quality(frame), "wall_s": folds_s + cleanlab_s + retrain_s, "folds_wall_s": folds_s,
            "cleanlab_s": cleanlab_s, "retrain_wall_s": retrain_s, "retrain_machine": retrain.get("machine"), "folds": FOLDS,
            "fold_steps": pv2.BUDGET // FOLDS, "oos_top1_noisy": 100.0 * float((probs.argmax(1) == truth["given"]).mean())}


# -- records --------------------------------------------------------------------------------------

def command_run(args: argparse.Namespace) -> None:
    path = RESULTS.with_suffix(".json")
    pv2.provenance()  # the commit the run imported, not whatever is committed while it runs
    for setting in args.settings:
        for method in args.methods:
            records = pv2.load_records(path)
            if any(r["method"] == method and r["setting"] == setting for r in records) and not args.force:
                log.info("%s at %s: finished, skipped", method, setting)
                continue
            log.info("%s at %s: running", method, setting)
            build = mtadcs_record if method == "mtadcs" else cleanlab_record
            result = build(setting, args.dir, args.data)
            # JSON has no NaN: a figure with nothing to measure (no suggestion confident enough) is null
            result = {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in result.items()}
            record = {"method": method, "setting": setting, **result, **pv2.provenance()}
            kept = [r for r in pv2.load_records(path) if not (r["method"] == method and r["setting"] == setting)]
            pv2.save_records(path, [*kept, record])
            log.info("%s at %s: F1 %.1f, suggested %.1f %%, %.0f s", method, setting, result["f1"],
                     result["suggested_accuracy"], result["wall_s"])
            write_table(pv2.load_records(path))


COLUMNS = ("setting", "method", "flagged", "noisy", "precision", "recall", "f1", "suggested_accuracy",
           "relabelled_share", "relabelled_accuracy", "wall_s", "commit")


def markdown(records: list[dict]) -> str:
    rows = sorted(records, key=lambda r: (SETTINGS.index(r["setting"]), METHODS.index(r["method"])))
    lines = ["# Label issues on CIFAR-10-5k: one MTaDCS run against cleanlab (protocol v2)", "",
             "Flagged: samples called label issues; precision, recall and F1 (%) of the flag against \"the given "
             "label is wrong\"; suggested_accuracy (%): the suggested label equals the clean one, on the flagged "
             "samples; relabelled_share and relabelled_accuracy (%): the flagged samples whose suggestion the model "
             f"gives at least {RELABEL_CONFIDENCE:g} (what `mtadcs label-issues --cleaned` relabels by default; the "
             "rest it drops) and the accuracy of those suggestions (a dash: no suggestion that confident, or a "
             "record made before these columns); "
             "wall_s: MTaDCS = its one 2000-step training run + the export; cleanlab = "
             f"{FOLDS} folds of {pv2.BUDGET // FOLDS} steps + find_label_issues + the 2000-step retrain "
             "(the CE cell's measured time). Protocol v2: both sides train 2000 optimizer steps in all, and nothing "
             "was tuned on x_test. Caveat: the issue score's form was chosen after comparing a few candidate rules "
             "(model disagreement alone, share of epochs in G, final G) on the sym 50 % cell against its clean "
             "labels, so that cell's MTaDCS figure is not held out; sym 80 % and asym 40 % are. The suggestion rule "
             "(the likeliest true class given the image and its label, through T from the confident joint) was "
             "chosen on the validation split's tuning cells, never on these cells. cleanlab runs with "
             "its defaults. See the docstring of benchmarks/label_issues.py.", "",
             "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in rows:
        lines.append("| " + " | ".join(pv2._fmt(r.get(c)) for c in COLUMNS) + " |")
    lines += ["", "## Targets (issue 13)", "", "| setting | MTaDCS F1 | cleanlab F1 | F1 met | MTaDCS wall | "
              "cleanlab wall | wall met | suggested acc. (MTaDCS) |", "|---|---|---|---|---|---|---|---|"]
    by = {(r["method"], r["setting"]): r for r in records}
    for setting in SETTINGS:
        m, c = by.get(("mtadcs", setting)), by.get(("cleanlab", setting))
        if m is None or c is None:
            lines.append(f"| {setting} | {pv2._fmt(m and m['f1'])} | {pv2._fmt(c and c['f1'])} | not run yet | "
                         f"{pv2._fmt(m and m['wall_s'])} | {pv2._fmt(c and c['wall_s'])} | not run yet | "
                         f"{pv2._fmt(m and m['suggested_accuracy'])} |")
            continue
        wall_met = ('yes' if m['wall_s'] <= c['wall_s'] else 'no') if same_machine(m, c) else \
            "not comparable (timed on different machines)"
        lines.append(f"| {setting} | {m['f1']:.1f} | {c['f1']:.1f} | {'yes' if m['f1'] >= c['f1'] else 'no'} | "
                     f"{m['wall_s']:.0f} | {c['wall_s']:.0f} | {wall_met} | {m['suggested_accuracy']:.1f} |")
    last = rows[-1] if rows else {}
    lines += ["", f"Command: `{last.get('command', '')}`; machine: {last.get('machine', '')}.", ""]
    return "\n".join(lines)


def same_machine(mtadcs: dict, cleanlab: dict) -> bool:
    """Whether both wall times were measured on one machine: MTaDCS's run, cleanlab's folds and the
    CE cell whose time stands for cleanlab's retrain (the machine string names the VM's kernel build)."""
    machines = {mtadcs.get("machine"), cleanlab.get("machine"), cleanlab.get("retrain_machine", cleanlab.get("machine"))}
    return len(machines) == 1


def write_table(records: list[dict]) -> None:
    from pipeline.files import write_text_atomic

    write_text_atomic(RESULTS.with_suffix(".md"), markdown(records))


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="score every missing (method, setting); folds resume")
    run.add_argument("--dir", type=Path, default=Path("bench-protocol-v2"),
                     help="the protocol v2 benchmark directory (the MTaDCS cells are read from it)")
    run.add_argument("--data", type=Path, default=PROJECT.parent / "shared/data/cifar10_subset.npz")
    run.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    run.add_argument("--settings", nargs="+", choices=SETTINGS, default=list(SETTINGS))
    run.add_argument("--force", action="store_true", help="recompute finished records")
    sub.add_parser("table", help="rewrite the Markdown from the JSON")
    args = parser.parse_args()
    torch.set_num_threads(2)
    if args.command == "run" and not args.data.is_file():
        sys.exit(f"{args.data}: no such file; pass --data the CIFAR-10-5k .npz (../shared/data/cifar10_subset.npz)")
    if args.command == "run":
        command_run(args)
    else:
        write_table(pv2.load_records(RESULTS.with_suffix(".json")))


if __name__ == "__main__":
    main()
