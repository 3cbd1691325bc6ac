"""benchmarks/label_issues.py: cleanlab's folds share the protocol's step budget, every sample is
scored by a model that never saw it, and the table reports the issue's targets."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.fixtures import load_benchmark


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("label_issues")


def test_the_folds_together_take_the_budget_of_one_protocol_run(bench, tmp_path) -> None:
    npz = tmp_path / "fake.npz"
    np.savez(npz, x_train=np.zeros((40, 8, 8, 3), np.uint8), y_train=np.arange(40) % 10, train_index=np.arange(40),
             x_test=np.zeros((10, 8, 8, 3), np.uint8), y_test=np.arange(10), test_index=np.arange(10))
    cell = bench.fold_cell("sym50", npz, 0)
    assert bench.pv2.planned_steps(cell, 3877) * bench.FOLDS == bench.pv2.BUDGET
    assert not cell.method.uses_predictions and cell.optim.warmup_epochs == cell.optim.epochs  # plain CE


def test_each_sample_lands_in_exactly_one_stratified_fold(bench) -> None:
    given = np.repeat(np.arange(5), 40)
    fold = bench.fold_assignment(given, 4, seed=0)
    assert set(fold) == {0, 1, 2, 3}
    for k in range(4):  # 10 of each class per fold: stratified
        assert np.bincount(given[fold == k], minlength=5).tolist() == [10] * 5
    assert (bench.fold_assignment(given, 4, seed=0) == fold).all()


def test_the_table_says_whether_each_target_is_met(bench) -> None:
    common = {"noisy": 100, "precision": 80.0, "recall": 90.0, "flagged": 110, "commit": "abc", "command": "c",
              "machine": "m"}
    records = [{"method": "mtadcs", "setting": "sym50", "f1": 85.0, "suggested_accuracy": 60.0, "wall_s": 100.0,
                **common},
               {"method": "cleanlab", "setting": "sym50", "f1": 80.0, "suggested_accuracy": 50.0, "wall_s": 90.0,
                **common}]
    text = bench.markdown(records)
    assert "| sym50 | 85.0 | 80.0 | yes | 100 | 90 | no | 60.0 |" in text
    assert "| asym40 | – | – | not run yet |" in text
    elsewhere = [records[0], {**records[1], "setting": "sym50", "retrain_machine": "another VM"}]
    assert "| sym50 | 85.0 | 80.0 | yes | 100 | 90 | not comparable (timed on different machines) | 60.0 |" \
        in bench.markdown(elsewhere)


def test_the_mtadcs_export_refuses_a_best_set_record_of_another_configuration(bench, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(bench.pv2, "RESULTS", tmp_path / "protocol_v2")
    bench.pv2.save_records(tmp_path / "protocol_v2.json", [{"method": "mtadcs-best", "setting": "sym50",
                                                            "config_id": "an-older-best-set", "wall_s": 1.0}])
    with pytest.raises(SystemExit, match="another configuration"):
        bench.mtadcs_record("sym50", tmp_path, tmp_path / "unused.npz")


def test_cleanlabs_retrain_is_timed_on_this_machine_where_a_ce_timing_is(bench, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(bench.pv2, "RESULTS", tmp_path / "protocol_v2")
    monkeypatch.setattr(bench.pv2, "machine", lambda: "this VM")
    bench.pv2.save_records(tmp_path / "protocol_v2.json", [{"method": "ce", "setting": "sym50", "wall_s": 1700.0,
                                                            "machine": "another VM"}])
    assert bench.retrain_timing("sym50")["wall_s"] == 1700.0  # no timing file: the record's
    timings = [{"method": "ce", "setting": "sym50", "wall_s": 380.0, "machine": "this VM"},
               {"method": "ce", "setting": "asym40", "wall_s": 370.0, "machine": "this VM"},
               {"method": "ce", "setting": "sym50", "wall_s": 900.0, "machine": "another VM"}]
    (tmp_path / "protocol_v2_timing.jsonl").write_text("".join(json.dumps(t) + "\n" for t in timings))
    assert bench.retrain_timing("sym50")["wall_s"] == 380.0


def test_the_oracle_ceiling_reads_the_likeliest_class_other_than_the_given_label() -> None:
    oracle = load_benchmark("oracle_suggestions")
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6], [0.2, 0.5, 0.3]])
    given = np.array([0, 2, 0])
    assert oracle.likeliest_other_class(probs, given).tolist() == [1, 1, 1]
    assert probs[0, 0] == 0.7  # the caller's probabilities are left as they were
