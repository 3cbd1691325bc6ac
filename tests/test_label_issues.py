"""Label issues: the ranked table a practitioner takes home from one run."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.analysis.label_issues import (
    ISSUE_CUT,
    cleaned_labels,
    detection_quality,
    find_label_issues,
    trace_summary,
)

# Five samples, three classes. Sample 1 left G; sample 2 was relabelled 0 -> 2 by Eq. 7; the
# rest stayed in G under their given label (sample 4 against a confident model).
GIVEN = np.array([0, 1, 0, 2, 1])
CURRENT = np.array([0, 1, 2, 2, 1])
IN_G = np.array([True, False, True, True, True])
PROBS = np.array([[0.9, 0.05, 0.05], [0.1, 0.2, 0.7], [0.3, 0.1, 0.6], [0.1, 0.1, 0.8], [0.8, 0.1, 0.1]])
CLEAN = np.array([0, 2, 2, 2, 0])


def issues(**kwargs) -> pd.DataFrame:
    return find_label_issues(GIVEN, CURRENT, IN_G, PROBS, index=np.array([10, 11, 12, 13, 14]), clean=CLEAN,
                             **kwargs)


def test_samples_the_run_rejected_rank_first_and_are_exactly_the_flagged_ones() -> None:
    table = issues()
    assert list(table["index"][:2]) == [11, 12]  # left G (p_given 0.2) and relabelled (p_given 0.3)
    assert table.loc[table["index"] == 11, "issue_score"].item() == pytest.approx(0.5 + 0.5 * 0.8)
    assert set(table.loc[table["is_issue"], "index"]) == {11, 12}
    assert (table["issue_score"].between(0, 1)).all() and list(table["rank"]) == [1, 2, 3, 4, 5]
    kept = table[~table["is_issue"]]
    assert (kept["issue_score"] < ISSUE_CUT).all()
    assert list(kept["index"]) == [14, 13, 10]  # within G: by the model's disagreement with the label


def test_suggested_label_is_the_correction_else_the_prediction() -> None:
    table = issues().set_index("index")
    assert table.loc[12, "suggested_label"] == 2 and table.loc[12, "relabelled"]  # Eq. 7's label
    assert table.loc[11, "suggested_label"] == 2  # the model's argmax
    assert table.loc[14, "suggested_label"] == 0 and table.loc[14, "suggestion_confidence"] == pytest.approx(0.8)
    assert list(table.loc[[10, 11], "is_noisy"]) == [False, True]


def test_a_noise_model_reads_the_model_through_the_transition_matrix() -> None:
    """With T, the suggestion is the likeliest true class given the image AND its label, not the
    model's argmax: a class the noise never turns into the given label cannot be its truth."""
    # classes deer 0, horse 1, cat 2: deer is labelled horse 40 % of the time, cats never are
    transition = np.array([[0.6, 0.4, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    given, probs = np.array([1, 1]), np.array([[0.3, 0.2, 0.5], [0.6, 0.3, 0.1]])
    table = find_label_issues(given, given, np.array([False, True]), probs, transition=transition).set_index("index")
    # sample 0: P(true c | x, horse) ∝ (0.3 * 0.4, 0.2 * 1, 0.5 * 0) = (0.12, 0.2, 0): horse, not cat
    assert table.loc[0, "suggested_label"] == 1 and probs[0].argmax() == 2
    assert table.loc[0, "p_label_right"] == pytest.approx(0.2 / 0.32) and table.loc[0, "p_given"] == pytest.approx(0.2)
    assert table.loc[0, "issue_score"] == pytest.approx(0.5 + 0.5 * 0.12 / 0.32)
    # sample 1: (0.24, 0.3, 0) -> horse at 0.3 / 0.54
    assert table.loc[1, "suggestion_confidence"] == pytest.approx(0.3 / 0.54)
    # a label no class is given as (a zero column) falls back to the model's own probabilities
    lost = find_label_issues(given, given, np.array([False, False]), probs, transition=np.diag([1.0, 0.0, 1.0]))
    assert lost.set_index("index").loc[0, "suggested_label"] == 2


def test_estimate_transition_reads_a_systematic_flip_off_the_probabilities() -> None:
    from pipeline.analysis.label_issues import estimate_transition
    # class 0 images: 6 labelled 0, 4 labelled 1; class 1 images: all 10 labelled 1
    probs = np.array([[0.9, 0.1]] * 10 + [[0.1, 0.9]] * 10)
    given = np.array([0] * 6 + [1] * 4 + [1] * 10)
    transition = estimate_transition(probs, given, 2)
    assert transition[0] == pytest.approx([0.6, 0.4]) and transition[1] == pytest.approx([0.0, 1.0])
    table = find_label_issues(given, given, np.ones(20, bool), probs, transition=transition).sort_values("index")
    assert list(table["suggested_label"]) == [0] * 10 + [1] * 10


def test_without_a_confidence_set_the_score_is_the_models_disagreement() -> None:
    table = find_label_issues(GIVEN, GIVEN, np.ones(5, bool), PROBS, uses_confidence_set=False).set_index("index")
    assert table["issue_score"].to_numpy() == pytest.approx(1 - PROBS[table.index, GIVEN[table.index]])
    assert set(table.index[table["is_issue"]]) == {1, 2, 4}  # p_given < 0.5


def test_detection_quality_counts_against_is_noisy() -> None:
    q = detection_quality(issues())
    # flagged {11, 12}; noisy {11, 12, 14} -> two hits: every flag right, two of three noisy found
    assert (q["flagged"], q["noisy"]) == (2, 3)
    assert q["precision"] == pytest.approx(100.0) and q["recall"] == pytest.approx(200 / 3)
    assert q["f1"] == pytest.approx(80.0)
    assert q["suggested_accuracy"] == pytest.approx(100.0)  # both suggestions are 2, both right
    assert detection_quality(find_label_issues(GIVEN, CURRENT, IN_G, PROBS)) == {}  # no truth, no numbers


def test_detection_quality_scores_only_the_suggestions_confident_enough_to_relabel() -> None:
    table = issues()
    table.loc[table["index"] == 12, "suggested_label"] = 1  # a wrong suggestion, at 0.6
    everything = detection_quality(table, min_confidence=0.5)
    assert everything["suggested_accuracy"] == pytest.approx(50.0)
    assert (everything["relabelled_share"], everything["relabelled_accuracy"]) == pytest.approx((100.0, 50.0))
    confident = detection_quality(table, min_confidence=0.65)  # only 11 (suggested 2 at 0.7, right)
    assert (confident["relabelled_share"], confident["relabelled_accuracy"]) == pytest.approx((50.0, 100.0))
    assert math.isnan(detection_quality(table, min_confidence=0.95)["relabelled_accuracy"])  # none that sure


def test_cleaned_labels_keep_the_unflagged_relabel_the_confident_and_drop_the_rest() -> None:
    table = cleaned_labels(issues(), min_confidence=0.65)
    # 11 is suggested 2 at 0.7 (kept, relabelled); 12 is suggested 2 at 0.6 (dropped)
    assert list(table["index"]) == [10, 11, 13, 14]
    assert list(table["label"]) == [0, 2, 2, 1] and list(table["relabelled"]) == [False, True, False, False]
    with pytest.raises(ValueError, match="min_confidence"):
        cleaned_labels(issues(), 1.5)


def test_trace_summary_maps_dataset_ids_to_rows_and_keeps_the_last_lof_score() -> None:
    index = np.array([7, 3, 5])  # a split whose ids are not in row order
    traces = pd.DataFrame({
        "epoch": [1, 1, 1, 2, 2, 2],
        "index": [3, 5, 7, 3, 5, 7],
        "in_G": [True, False, True, True, True, False],
        "lof_score": [1.1, np.nan, 0.9, np.nan, 1.3, np.nan],
    })
    share, last_lof = trace_summary(traces, index)
    assert share == pytest.approx([0.5, 1.0, 0.5])  # ids 7, 3, 5
    assert last_lof[0] == pytest.approx(0.9) and last_lof[1] == pytest.approx(1.1)
    assert last_lof[2] == pytest.approx(1.3)
    empty_share, empty_lof = trace_summary(traces.iloc[:0], index)
    assert np.isnan(empty_share).all() and np.isnan(empty_lof).all()


def test_mismatched_shapes_are_refused() -> None:
    with pytest.raises(ValueError, match="label issues"):
        find_label_issues(GIVEN, CURRENT[:4], IN_G, PROBS)


def test_a_folder_cell_gets_an_issue_table_with_paths_and_the_cli_exports_it(tmp_path, monkeypatch) -> None:
    """The whole path a user with their own folder takes: run the cell, then `mtadcs label-issues`."""
    import json
    import subprocess
    import sys

    import yaml

    from pipeline.errors import UserError
    from stages import evaluate, label_issues, noise, training
    from stages.common import context
    from tests.fixtures import write_image_tree

    write_image_tree(tmp_path / "imgs", {"train": {"cat": 10, "dog": 10}, "test": {"cat": 2, "dog": 2}})
    params = {"data": {"dataset": "folder", "path": "imgs", "image_size": 8}, "noise": {"kind": "none"},
              "model": {"width": 2, "proj_dim": 8}, "method": {"queue_size": 16},
              "optim": {"epochs": 2, "warmup_epochs": 1, "lr_milestones": [], "batch_size": 8},
              "finetune": {"epochs": 1, "batch_size": 8}, "evaluate": {"knn_k": 3},
              "runtime": {"threads": 1, "progress": "log"}, "tracking": {"enabled": False}, "runs": {"mine": {}}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    ctx = context(tmp_path, "params.yaml", "mine")
    noise.run(ctx)
    with pytest.raises(UserError, match="has not been trained"):
        label_issues.show(ctx, top=3)
    for stage in ("warmup", "train", "finetune"):
        training.run(ctx, stage)
    from pipeline.method import engine

    loaded, load = [], engine.load_checkpoint
    monkeypatch.setattr(engine, "load_checkpoint", lambda path: loaded.append(Path(path).parent.name) or load(path))
    evaluate.run(ctx)
    assert loaded.count("finetune") == 1  # the final model: loaded once for top-1, kNN and the label issues
    assert loaded.count("train") == 1  # the MTaDCS epochs' result: once for top-1, kNN and G's quality

    table = pd.read_parquet(tmp_path / "data/issues/mine.parquet")
    assert len(table) == 20 and table["path"].str.startswith(str(tmp_path / "imgs/train")).all()
    assert set(table["given_class"]) == {"cat", "dog"} and "is_noisy" not in table  # a user's labels: no truth
    assert table["issue_score"].is_monotonic_decreasing
    assert json.loads((tmp_path / "metrics/label_issues/mine.json").read_text())["samples"] == 20
    with pytest.raises(UserError, match="name it .csv or .parquet"):
        label_issues.show(ctx, top=0, out=tmp_path / "x.txt")

    out = subprocess.run([sys.executable, "-m", "stages.cli", "label-issues", "--cell", "mine", "--root", str(tmp_path),
                          "--top", "3", "--out", str(tmp_path / "x.csv"), "--cleaned", str(tmp_path / "clean.csv"),
                          "--min-confidence", "0"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert str(tmp_path / "imgs/train") in out.stdout and "20 samples" in out.stdout
    assert len(pd.read_csv(tmp_path / "x.csv")) == 20
    assert len(pd.read_csv(tmp_path / "clean.csv")) == 20  # min confidence 0: every flag relabelled, none dropped


def test_confidence_set_shares_name_the_class_the_final_G_kept_least_of() -> None:
    from pipeline.analysis.label_issues import confidence_set_shares

    given = np.array([0, 0, 0, 0, 1, 1, 2, 2])
    in_G = np.array([True, True, True, False, False, True, True, True])
    shares = confidence_set_shares(given, in_G, num_classes=4)
    assert shares["G_size"] == 6 and shares["G_share"] == 75.0
    assert shares["G_class_shares"][:3] == [75.0, 50.0, 100.0] and np.isnan(shares["G_class_shares"][3])
    assert shares["G_weakest_class"] == 1 and shares["G_class_share_min"] == 50.0  # an absent class is not "weakest"


def test_the_cli_relabels_at_the_confidence_the_quality_figures_use() -> None:
    """stages/cli.py writes the default as a literal (it imports nothing heavy for --help)."""
    import inspect

    from pipeline.analysis.label_issues import RELABEL_CONFIDENCE
    from stages import cli

    assert inspect.signature(cli.label_issues).parameters["min_confidence"].default.default == RELABEL_CONFIDENCE


def test_the_cli_summary_says_how_many_suggestions_it_would_accept_even_when_none() -> None:
    from stages.label_issues import quality_lines

    table = issues()
    assert quality_lines(detection_quality(table, 0.65), 0.65)[1].endswith("50.0 % of the flagged, right on 100.0 %")
    assert quality_lines(detection_quality(table, 0.95), 0.95)[1].endswith("0.0 % of the flagged, none of them that sure")
    assert quality_lines({}, 0.9) == []  # a user's own labels: no truth, no figures
    without_confidence = detection_quality(table.drop(columns="suggestion_confidence"))
    assert len(quality_lines(without_confidence, 0.9)) == 1  # nothing to say about confident suggestions


def test_a_label_the_noise_model_cannot_read_falls_back_to_the_model_and_kept_samples_stay_under_the_cut() -> None:
    """T[1, 1] = 0 (a weak model's estimate for a class it never predicts) would call every label 1
    wrong: those rows read the model alone, and a kept sample never reaches the cut even at
    probability 0 for its label. A relabelled sample's confidence is the model's own."""
    given, probs = np.array([1, 1, 0]), np.array([[0.3, 0.7, 0.0], [0.4, 0.6, 0.0], [0.1, 0.3, 0.6]])
    transition = np.array([[0.5, 0.5, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    current = np.array([1, 1, 2])  # sample 2 relabelled 0 -> 2 by Eq. 7
    table = find_label_issues(given, current, np.array([True, False, True]), probs,
                              transition=transition).set_index("index")
    assert table.loc[0, "p_label_right"] == pytest.approx(0.7) and table.loc[0, "suggested_label"] == 1
    assert not table.loc[0, "is_issue"] and table.loc[1, "is_issue"]
    kept_at_zero = find_label_issues(np.array([0]), np.array([0]), np.array([True]), np.array([[0.0, 1.0]]))
    assert kept_at_zero["issue_score"].item() < ISSUE_CUT and not kept_at_zero["is_issue"].item()
    # under T, class 2 is never given label 0 (posterior 0); the model itself gives it 0.6
    assert table.loc[2, "suggested_label"] == 2 and table.loc[2, "suggestion_confidence"] == pytest.approx(0.6)


def test_kept_samples_are_G_or_for_a_run_without_one_the_unflagged() -> None:
    from pipeline.analysis.label_issues import kept_samples

    table = find_label_issues(GIVEN, GIVEN, np.ones(5, bool), PROBS, uses_confidence_set=False)
    assert kept_samples(table, uses_confidence_set=True).all()  # G = S says nothing
    np.testing.assert_array_equal(kept_samples(table, uses_confidence_set=False), ~table["is_issue"].to_numpy())
    assert not kept_samples(table, uses_confidence_set=False).all()


def test_an_own_folder_cell_with_the_seedless_loss_weights_runs_end_to_end(tmp_path) -> None:
    """The seedless set on a user's own folder (G = S, loss weights): every stage runs, the weights
    the run trained with average 1 within each class (their values are tests/test_engine.py's), and
    the class shares in the label-issue metrics count the unflagged samples (G alone says 100 %)."""
    import json

    import torch
    import yaml

    from stages import evaluate, noise, training
    from stages.common import context
    from tests.fixtures import write_image_tree

    write_image_tree(tmp_path / "imgs", {"train": {"cat": 12, "dog": 12}, "test": {"cat": 2, "dog": 2}})
    switches = {"lof": False, "confidence_set": False, "removal": False, "contrastive": False, "mixup": False,
                "label_correction": False, "loss_weights": "posterior_per_class"}
    params = {"data": {"dataset": "folder", "path": "imgs", "image_size": 8}, "noise": {"kind": "none"},
              "model": {"width": 2, "proj_dim": 8}, "method": switches,
              "optim": {"epochs": 3, "warmup_epochs": 1, "lr_milestones": [], "batch_size": 8},
              "finetune": {"epochs": 1, "batch_size": 8, "mixup_alpha": 0.0}, "evaluate": {"knn_k": 3},
              "runtime": {"threads": 1, "progress": "log"}, "tracking": {"enabled": False}, "runs": {"mine": {}}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    ctx = context(tmp_path, "params.yaml", "mine")
    noise.run(ctx)
    for stage in ("warmup", "train", "finetune"):
        training.run(ctx, stage)
    evaluate.run(ctx)

    state = torch.load(ctx.paths.stage_dir("train") / "checkpoint.pt", map_location="cpu", weights_only=False)
    weights, given = state["loss_weight"].numpy(), state["labels"].numpy()
    assert state["in_G"].all() and np.isfinite(weights).all() and (weights >= 0).all()
    for c in (0, 1):
        assert weights[given == c].mean() == pytest.approx(1.0, abs=1e-4)
    metrics = json.loads((tmp_path / "metrics/label_issues/mine.json").read_text())
    table = pd.read_parquet(tmp_path / "data/issues/mine.parquet")
    assert metrics["G_share"] == pytest.approx(100.0 * (~table["is_issue"]).mean())
