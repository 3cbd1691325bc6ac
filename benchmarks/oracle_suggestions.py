"""The ceiling of issue 13's suggested labels under perfect selection (a diagnosis: it chooses nothing).

The protocol v2 cell `mtadcs-best-oracle` trains the best switch set on an oracle G, every
correctly labelled sample and no other. Its label-issue export then flags exactly the samples
whose label is wrong, so the accuracy of its suggestions on them is what a perfect selection
would leave to the model of this budget (2000 CPU steps on CIFAR-10-5k). Printed and written to
benchmarks/results/oracle_suggestions.json, per setting:
  - the export's suggested-label accuracy on its flagged samples (the issue's figure);
  - the model's argmax, and its likeliest class other than the given label, against the clean
    labels of the mislabelled images (what any rule reading this model could reach there).

    python benchmarks/protocol_v2.py run --dir /work/bench/pv2 --methods mtadcs-best-oracle --settings sym50
    python benchmarks/oracle_suggestions.py --dir /work/bench/pv2 --settings sym50 asym40
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np

PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT))

from benchmarks import label_issues  # noqa: E402
from benchmarks import protocol_v2 as pv2  # noqa: E402
from pipeline.analysis.label_issues import detection_quality  # noqa: E402
from pipeline.files import atomic_path  # noqa: E402
from pipeline.method import engine  # noqa: E402
from stages.label_issues import issues_for_run  # noqa: E402

METHOD = "mtadcs-best-oracle"
RESULTS = PROJECT / "benchmarks/results/oracle_suggestions.json"


def likeliest_other_class(probs: np.ndarray, given: np.ndarray) -> np.ndarray:
    """Per row, the most probable class that is not the given label."""
    masked = probs.copy()
    masked[np.arange(len(given)), given] = -np.inf
    return masked.argmax(1)


def oracle_record(setting: str, bench: Path, data_path: Path) -> dict:
    record, cell, out, data, labels = label_issues.trained_cell(METHOD, setting, bench, data_path)
    final = out / "finetune" / engine.CHECKPOINT
    probs = engine.train_probabilities(cell, data, final)
    noisy = labels.given != labels.clean
    export = detection_quality(issues_for_run(cell, data, labels, out / "train", final, probs=probs))
    return {"setting": setting, "test_top1": record["top1"], "mislabelled": int(noisy.sum()),
            "flagged": export["flagged"], "flag_precision": export["precision"], "flag_recall": export["recall"],
            "suggested_accuracy": export["suggested_accuracy"],
            "argmax_accuracy_on_mislabelled": 100 * float(np.mean(probs.argmax(1)[noisy] == labels.clean[noisy])),
            "other_class_accuracy_on_mislabelled": 100 * float(np.mean(
                likeliest_other_class(probs, labels.given)[noisy] == labels.clean[noisy])),
            "cell_commit": record["commit"], **pv2.provenance()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=PROJECT.parent / "shared/data/cifar10_subset.npz")
    parser.add_argument("--dir", type=Path, default=Path("bench-protocol-v2"), help="the protocol v2 cells' directory")
    parser.add_argument("--settings", nargs="+", default=["sym50", "asym40"], choices=list(pv2.SETTINGS))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    kept = [r for r in (json.loads(RESULTS.read_text()) if RESULTS.exists() else []) if r["setting"] not in args.settings]
    records = kept + [oracle_record(s, args.dir, args.data) for s in args.settings]
    for r in records:
        print(f"{r['setting']}: oracle model {r['test_top1']:.1f} % test top-1; on its {r['mislabelled']} mislabelled "
              f"training images the argmax is right on {r['argmax_accuracy_on_mislabelled']:.1f} %, the likeliest class "
              f"other than the given one on {r['other_class_accuracy_on_mislabelled']:.1f} %; the export flags "
              f"{r['flagged']:.0f} (precision {r['flag_precision']:.1f} %) with suggestions right on "
              f"{r['suggested_accuracy']:.1f} %")
    with atomic_path(RESULTS) as tmp:
        Path(tmp).write_text(json.dumps(records, indent=1) + "\n")


if __name__ == "__main__":
    main()
