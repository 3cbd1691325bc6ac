"""benchmarks/cifar10_5k.py reads what the stages wrote into one table; check it on a fake workspace."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from pipeline.layout import CellPaths
from tests.fixtures import load_benchmark


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("cifar10_5k")


def _write_cell(root: Path, cell: str, *, method: bool, top1: float, history: dict[str, list[dict]],
                resources: dict[str, dict]) -> None:
    paths = CellPaths(root, cell)
    paths.metrics.parent.mkdir(parents=True, exist_ok=True)
    scores = {"test/top1": top1, "test/top5": 90.0, "test/knn": top1 + 1}
    paths.metrics.write_text(json.dumps({
        "status": "done", "noise": "sym", "rate": 0.5, "realised_rate": 0.5,
        "switches": dict.fromkeys(("lof", "confidence_set", "removal", "contrastive", "mixup", "label_correction"),
                                 method), "train": scores, "finetune": None,
        "G": {"size": 100, "precision": 98.0, "recall": 40.0} if method else {"size": 200}}))
    for stage, rows in history.items():
        paths.stage_dir(stage).mkdir(parents=True, exist_ok=True)
        pd.DataFrame(rows).to_csv(paths.stage_dir(stage) / "history.csv", index=False)
    for stage, usage in resources.items():
        (paths.stage_dir(stage) / "resources.json").write_text(json.dumps(usage))


def test_the_table_splits_an_mtadcs_epoch_and_compares_it_with_ce(tmp_path, bench) -> None:
    usage = {"wall_seconds": 10.0, "peak_rss_mib": 700.0, "mlflow_seconds_per_epoch": 0.1}
    _write_cell(tmp_path, "m", method=True, top1=60.0, resources={"warmup": usage, "train": usage},
                history={"warmup": [{"phase": "warmup", "epoch": 1, "time_train": 1.0}],
                         "train": [{"phase": "train", "epoch": 1},  # the opening selection: no training step
                                   {"phase": "train", "epoch": 2, "time_train": 2.0, "time_extract": 1.0,
                                    "time_lof": 0.4, "time_store": 0.5},
                                   {"phase": "train", "epoch": 3, "time_train": 2.0, "time_extract": 1.0,  # the last:
                                    "time_lof": 0.0, "time_store": 0.5}]})  # no selection, not in the split
    ce_usage = {"warmup": usage | {"epochs_logged": 1, "mlflow_seconds": 0.1},
                "train": usage | {"epochs_logged": 2, "mlflow_seconds": 0.2}}  # pooled: 0.3 s over 3 records
    _write_cell(tmp_path, "c", method=False, top1=40.0, resources=ce_usage,
                history={"warmup": [{"phase": "warmup", "epoch": 1, "time_train": 3.0}],
                         "train": [{"phase": "train", "epoch": 1}, {"phase": "train", "epoch": 2, "time_train": 5.0}]})
    rows = [bench.cell_row(tmp_path, "m"), bench.cell_row(tmp_path, "c")]
    m, c = rows
    assert m["epochs"] == {"warmup": 1, "train": 2, "finetune": 0}
    assert m["epoch_seconds"] == pytest.approx(2.0 + 1.0 + 0.4 + 0.5 + 0.1)
    assert c["epoch_seconds"] == pytest.approx((3.0 + 5.0) / 2 + 0.1)  # warm-up and train epochs alike
    assert c["split"]["time_extract"] == 0.0 and m["peak_rss_mib"]["warmup"] == 700.0
    (comparison,) = bench.compare(rows, bench.TARGETS)
    assert comparison["top1_gain"] == pytest.approx(20.0) and comparison["top1_gain_target"] == 15.0
    assert comparison["epoch_ratio"] == pytest.approx(4.0 / 4.1)
    assert comparison["overhead_share"] == pytest.approx(1.0 / 4.0)
    table = bench.markdown({"date": "d", "command": "c", "machine": "x", "profile": "p", "source_commit": "s",
                            "rows": rows, "comparisons": [comparison]})
    assert "| m | MTaDCS | sym 0.5 | 60.0 |" in table and "| +20.0 | ≥ +15 |" in table


def test_a_cell_that_did_not_run_is_an_error_naming_its_file(tmp_path, bench) -> None:
    paths = CellPaths(tmp_path, "w")
    paths.metrics.parent.mkdir(parents=True)
    paths.metrics.write_text(json.dumps({"status": "not run", "reason": "data.path not set"}))
    with pytest.raises(SystemExit, match="w.json: cell w did not run"):
        bench.cell_row(tmp_path, "w")
