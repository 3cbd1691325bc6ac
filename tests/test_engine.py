"""Tests of the epoch loops (warm-up, MTaDCS epochs, fine-tuning), checkpoints and traces.

Everything runs on CPU with one thread on a synthetic 4-class set of 16-px images whose
class is its colour (128 training and 40 test images), a width-8 PreAct ResNet-18, and
8 warm-up + 4 MTaDCS epochs: small enough for a few seconds a run. Selection, removal and
label flips are made certain, not left to how well one torch build happens to train: a
planted group of identical images with conflicting labels sits in the initial G (see
`TWINS`), so a resume that dropped any piece of state would show.

The key property is that a run interrupted after any epoch and continued from its
checkpoint ends bit-for-bit where an uninterrupted run ends: same weights, optimizer and
queue, same G, labels and soft labels, same history and the same Parquet traces.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import torch

from pipeline.config import SWITCHES, CellConfig, parse_params, resolve_cell
from pipeline.data import trace_store
from pipeline.data.datasets import Dataset, Split
from pipeline.data.noise import initial_confidence_mask, make_noisy_labels
from pipeline.errors import UserError
from pipeline.method import engine, selection
from pipeline.method import trainer as learner  # the module, beside the tests' `trainer` objects
from pipeline.method.device import Extraction, Placement
from pipeline.method.trainer import (
    Trainer,
    TrainingLabels,
    epoch_order,
    key_encoder_momentum,
    load_checkpoint,
)
from pipeline.runtime import Progress

K = 4
N_TRAIN, N_TEST = 128, 40
T_P, T_MAX, FEATURE_EVERY = 8, 12, 3
FEATURE_EPOCHS = {8, 9, 12}  # T_P, the multiples of feature_every, the last
WIDTH = 8  # feature_dim = 8 * width
FINETUNE_EPOCHS = 2

PARAMS = {
    "noise": {"kind": "sym", "rate": 0.4, "init_per_class": 12},
    "model": {"width": WIDTH, "proj_dim": 16},
    "method": {"lof_neighbors": 5, "queue_size": 64, "lc_alpha": 0.9, "lc_gamma": 0.8,
               "randaugment_ops": 1, "randaugment_magnitude": 5},
    "optim": {"epochs": T_MAX, "warmup_epochs": T_P, "lr": 0.05, "lr_milestones": [11], "batch_size": 8},
    "train": {"feature_every": FEATURE_EVERY},
    "finetune": {"epochs": FINETUNE_EPOCHS, "lr": 0.01, "batch_size": 16},
    "evaluate": {"knn_k": 20},
    "runtime": {"device": "cpu", "threads": 1, "workers": 0, "progress": "log", "amp": False,
                "channels_last": False, "seed": 0, "eval_batch_size": 64},
    "tracking": {"enabled": False},
}


def make_cell(**overrides: dict) -> CellConfig:
    raw = {section: dict(values) for section, values in PARAMS.items()}
    for section, values in overrides.items():
        raw[section] = {**raw.get(section, {}), **values}
    return resolve_cell(parse_params({**raw, "runs": {"t": {}}}), "t")


# A planted group: TWINS copies of one class-0 image, half labelled 0 and half 1, all in the
# initial G and unprotected. Identical images get the same prediction ŷ, so whatever the model
# learns, every epoch at least half of them disagree with their label. Hence, by construction:
# - the opening selection (epoch T_P) removes at least TWINS/2 of them (Eq. 3);
# - the first correction round (T_P + 1) flips at least TWINS/2 (lc_alpha 0.9 > lc_gamma 0.8:
#   one disagreeing round suffices, Eq. 7);
# - after it all copies carry ŷ, and the >= TWINS/2 = lof_neighbors + 1 of them outside G are
#   candidates with identical features (LOF score exactly 1), so that round selects them (Eq. 2).
TWINS = 12
TWIN_POSITIONS = np.arange(TWINS) * K  # samples 0, 4, 8, ...: all of clean class 0


def _plant_twins(split: Split) -> Split:
    images = split.images.copy()
    images[TWIN_POSITIONS] = images[TWIN_POSITIONS[0]]
    return Split(labels=split.labels, index=split.index, images=images)


def _split(n: int, seed: int) -> Split:
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % K
    colours = np.array([[200, 40, 40], [40, 200, 40], [40, 40, 200], [200, 200, 40]])
    images = colours[labels][:, None, None, :] + rng.normal(0, 25, (n, 16, 16, 3))
    return Split(labels=labels.astype(np.int64), index=np.arange(1000, 1000 + n),
                 images=np.clip(images, 0, 255).astype(np.uint8))


class Interrupted(Exception):
    """Raised by an on_epoch callback to stop a run as a kill would, after a checkpoint."""


def stop_after(epoch: int) -> Callable[[dict], None]:
    def callback(record: dict) -> None:
        if record["epoch"] == epoch:
            raise Interrupted(epoch)
    return callback


def record_then_stop(seen: list[dict]) -> Callable[[dict], None]:
    """Record the first epoch's record, then interrupt the run."""
    def callback(record: dict) -> None:
        seen.append(record)
        raise Interrupted(record["epoch"])
    return callback


def without_timing(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if not k.startswith("time_")} for row in history]


def assert_same(a, b, where: str = "state") -> None:
    """Recursive bit-exact equality of checkpoint contents (tensors by torch.equal)."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape, where
        assert torch.equal(a, b), f"{where} differs"
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), f"{where}: keys {a.keys()} vs {b.keys()}"
        for key in a:
            assert_same(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, list | tuple):
        assert isinstance(b, list | tuple) and len(a) == len(b), f"{where}: length differs"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def assert_same_checkpoint(path_a: Path, path_b: Path) -> None:
    a, b = load_checkpoint(path_a), load_checkpoint(path_b)
    a["history"], b["history"] = without_timing(a["history"]), without_timing(b["history"])
    assert a.keys() == b.keys()
    for key in ("phase", "epoch", "fingerprint", "in_G", "labels", "soft", "model", "key_model", "queue",
                "optimizer", "history"):
        assert_same(a[key], b[key], key)


def trace_frame(root: Path) -> pd.DataFrame:
    return trace_store.read_traces(root).drop(columns="feature")


# -- shared runs --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def data() -> Dataset:
    return Dataset(name="synthetic", num_classes=K, class_names=[f"c{i}" for i in range(K)], image_size=16,
                   mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), train=_plant_twins(_split(N_TRAIN, 0)),
                   tests={"test": _split(N_TEST, 1)})


@pytest.fixture(scope="module")
def labels(data: Dataset) -> TrainingLabels:
    clean = data.train.labels
    given = make_noisy_labels(clean, K, kind="sym", rate=0.4, seed=0)
    init_G = initial_confidence_mask(given, clean, K, init_per_class=12, seeded=True, seed=0)
    given[TWIN_POSITIONS] = np.arange(TWINS) % 2  # half 0 (correct), half 1 (wrong)
    init_G[TWIN_POSITIONS] = True
    return TrainingLabels(given=given, clean=clean, init_G=init_G)


@pytest.fixture(scope="module")
def cell() -> CellConfig:
    return make_cell()


@pytest.fixture(scope="module")
def warm(tmp_path_factory, cell, data, labels) -> Path:
    """The uninterrupted warm-up (T_P epochs); returns its checkpoint."""
    out = tmp_path_factory.mktemp("warmup")
    engine.run_warmup(cell, data, labels, out, fingerprint="w")
    return out / engine.CHECKPOINT


@pytest.fixture(scope="module")
def run_a(tmp_path_factory, cell, data, labels, warm) -> tuple[Path, Trainer, list[dict]]:
    """The uninterrupted MTaDCS epochs: (out dir, trainer, records passed to on_epoch)."""
    out = tmp_path_factory.mktemp("train-a")
    seen: list[dict] = []
    trainer = engine.run_train(cell, data, labels, warm, out, fingerprint="fp", on_epoch=seen.append)
    return out, trainer, seen


# -- 1. resume equals an uninterrupted run ------------------------------------------------------


def test_reference_run_changes_state_every_epoch(run_a, labels) -> None:
    """Guard for the resume tests: the reference run exercises selection, removal and flips,
    by construction (the planted twins, see TWINS), whatever the torch/numpy build."""
    _, trainer, seen = run_a
    assert TWINS // 2 == PARAMS["method"]["lof_neighbors"] + 1
    assert [r["epoch"] for r in seen] == list(range(T_P, T_MAX + 1))
    opening, first_round = seen[0], seen[1]
    assert opening["removed"] >= TWINS // 2
    assert first_round["flipped"] >= TWINS // 2
    assert first_round["selected"] >= TWINS // 2
    twins_label = trainer.labels[TWIN_POSITIONS]
    assert (twins_label == twins_label[0]).all() or sum(r["flipped"] for r in seen[2:]) > 0
    assert not np.array_equal(trainer.labels, labels.given)


def test_uninterrupted_run_checkpoint_holds_every_epoch(run_a, cell) -> None:
    out, trainer, seen = run_a
    state = load_checkpoint(out / engine.CHECKPOINT)
    assert state["phase"] == "train" and state["epoch"] == T_MAX and state["fingerprint"] == "fp"
    assert without_timing(state["history"]) == without_timing(trainer.history) == without_timing(seen)
    # The lr column follows the step schedule of the whole run (warm-up epochs included).
    lrs = {r["epoch"]: r["lr"] for r in trainer.history if "lr" in r}
    o = cell.optim
    assert lrs == {e: engine.lr_at(e - 1, o.lr, o.lr_milestones, o.lr_gamma) for e in range(T_P + 1, T_MAX + 1)}
    assert lrs[T_MAX] == pytest.approx(o.lr * o.lr_gamma)


def test_warmup_resume_equals_uninterrupted(tmp_path, cell, data, labels, warm) -> None:
    with pytest.raises(Interrupted):
        engine.run_warmup(cell, data, labels, tmp_path, fingerprint="w", on_epoch=stop_after(3))
    assert load_checkpoint(tmp_path / engine.CHECKPOINT)["epoch"] == 3
    seen: list[dict] = []
    trainer = engine.run_warmup(cell, data, labels, tmp_path, fingerprint="w", on_epoch=seen.append)
    assert [r["epoch"] for r in seen] == list(range(4, T_P + 1))  # only the missing epochs ran
    assert [r["epoch"] for r in trainer.history] == list(range(1, T_P + 1))
    assert_same_checkpoint(warm, tmp_path / engine.CHECKPOINT)


@pytest.mark.parametrize("stop", [T_P, T_P + 2], ids=["after-first-selection", "mid-run"])
def test_train_resume_equals_uninterrupted(tmp_path, cell, data, labels, warm, run_a, stop: int) -> None:
    out_a, trainer_a, _ = run_a
    with pytest.raises(Interrupted):
        engine.run_train(cell, data, labels, warm, tmp_path, fingerprint="fp", on_epoch=stop_after(stop))
    assert load_checkpoint(tmp_path / engine.CHECKPOINT)["epoch"] == stop
    # A run killed after writing later traces than its checkpoint leaves them behind: they must go
    # before the resumed run goes on, so the traces never run ahead of the checkpoint.
    for epoch in (stop + 1, stop + 2):
        stale = trace_store.epoch_dir(tmp_path / "epochs", epoch) / "part-0.parquet"
        stale.parent.mkdir(parents=True, exist_ok=True)
        stale.write_bytes(b"half-written trace")

    seen: list[dict] = []
    listed: list[list[str]] = []

    def record(row: dict) -> None:
        seen.append(row)
        listed.append(sorted(p.name for p in (tmp_path / "epochs").iterdir()))

    trainer_b = engine.run_train(cell, data, labels, warm, tmp_path, fingerprint="fp", on_epoch=record)
    assert [r["epoch"] for r in seen] == list(range(stop + 1, T_MAX + 1))
    assert listed == [[trace_store.epoch_dir("", e).name for e in range(T_P, r["epoch"] + 1)] for r in seen]

    assert_same_checkpoint(out_a / engine.CHECKPOINT, tmp_path / engine.CHECKPOINT)
    assert without_timing(trainer_b.history) == without_timing(trainer_a.history)
    np.testing.assert_array_equal(trainer_b.in_G, trainer_a.in_G)
    np.testing.assert_array_equal(trainer_b.labels, trainer_a.labels)
    assert torch.equal(trainer_b.soft, trainer_a.soft)

    traces_a, traces_b = out_a / "epochs", tmp_path / "epochs"
    pd.testing.assert_frame_equal(trace_frame(traces_b), trace_frame(traces_a))
    for epoch in range(T_P, T_MAX + 1):  # the frames above leave out the features
        table_a = pq.read_table(trace_store.epoch_dir(traces_a, epoch) / "part-0.parquet")
        table_b = pq.read_table(trace_store.epoch_dir(traces_b, epoch) / "part-0.parquet")
        assert table_b.schema.equals(table_a.schema), f"trace schema of epoch {epoch} differs"
        if epoch in FEATURE_EPOCHS:
            assert table_b.column("feature").equals(table_a.column("feature")), f"features of epoch {epoch}"


def test_finished_run_resumes_as_a_no_op(tmp_path, cell, data, labels, warm, run_a) -> None:
    """Running a finished phase again (e.g. `dvc repro -f`) trains nothing and keeps the history."""
    out_a, trainer_a, _ = run_a
    seen: list[dict] = []
    trainer = engine.run_train(cell, data, labels, warm, out_a, fingerprint="fp", on_epoch=seen.append)
    assert seen == []
    assert trainer.epoch == T_MAX
    assert without_timing(trainer.history) == without_timing(trainer_a.history)
    assert sorted(p.name for p in (out_a / "epochs").iterdir()) == [
        trace_store.epoch_dir("", e).name for e in range(T_P, T_MAX + 1)]


def test_finetune_resume_equals_uninterrupted(tmp_path, cell, data, labels, run_a) -> None:
    train_ckpt = run_a[0] / engine.CHECKPOINT
    dir_a, dir_b = tmp_path / "a", tmp_path / "b"
    trainer_a = engine.run_finetune(cell, data, labels, train_ckpt, dir_a, fingerprint="ft")
    with pytest.raises(Interrupted):
        engine.run_finetune(cell, data, labels, train_ckpt, dir_b, fingerprint="ft", on_epoch=stop_after(1))
    trainer_b = engine.run_finetune(cell, data, labels, train_ckpt, dir_b, fingerprint="ft")
    assert_same_checkpoint(dir_a / engine.CHECKPOINT, dir_b / engine.CHECKPOINT)
    assert without_timing(trainer_b.history) == without_timing(trainer_a.history)
    assert [r["epoch"] for r in trainer_a.history] == list(range(1, FINETUNE_EPOCHS + 1))
    # Fine-tuning trains on the final G and leaves G and the labels alone.
    train_state = load_checkpoint(train_ckpt)
    np.testing.assert_array_equal(trainer_a.in_G, train_state["in_G"].numpy())
    np.testing.assert_array_equal(trainer_a.labels, train_state["labels"].numpy())
    g_size = int(train_state["in_G"].sum())
    batch = cell.finetune.batch_size
    expected = g_size // batch * batch if g_size > batch else g_size  # drop_last
    assert all(r["train_samples"] == expected for r in trainer_a.history)
    assert load_checkpoint(dir_a / engine.CHECKPOINT)["key_model"] is None


# -- 2. a changed fingerprint starts afresh -----------------------------------------------------


def test_changed_fingerprint_starts_afresh(tmp_path, cell, data, labels, warm) -> None:
    with pytest.raises(Interrupted):
        engine.run_train(cell, data, labels, warm, tmp_path, fingerprint="old", on_epoch=stop_after(T_P + 1))
    assert load_checkpoint(tmp_path / engine.CHECKPOINT)["epoch"] == T_P + 1

    seen: list[dict] = []
    with pytest.raises(Interrupted):
        engine.run_train(cell, data, labels, warm, tmp_path, fingerprint="new", on_epoch=record_then_stop(seen))
    assert [r["epoch"] for r in seen] == [T_P]  # restarted from the warm-up, not from T_P + 1
    state = load_checkpoint(tmp_path / engine.CHECKPOINT)
    assert state["fingerprint"] == "new" and state["epoch"] == T_P
    assert [r["epoch"] for r in state["history"]] == [T_P]
    # The stale run's later traces are gone.
    assert [p.name for p in (tmp_path / "epochs").iterdir()] == [trace_store.epoch_dir("", T_P).name]


def test_checkpoint_of_another_phase_is_not_resumed(tmp_path, cell, data, labels, warm) -> None:
    """A warm-up checkpoint found in the train directory must not be taken for a train resume."""
    (tmp_path / engine.CHECKPOINT).write_bytes(warm.read_bytes())
    seen: list[dict] = []
    with pytest.raises(Interrupted):
        engine.run_train(cell, data, labels, warm, tmp_path, fingerprint="w", on_epoch=record_then_stop(seen))
    assert seen[0]["epoch"] == T_P and "loss" not in seen[0]  # the selection-only record of epoch T_P
    assert load_checkpoint(tmp_path / engine.CHECKPOINT)["phase"] == "train"


# -- 3. traces ----------------------------------------------------------------------------------


def test_traces_read_in_one_call(run_a, labels) -> None:
    out, trainer, _ = run_a
    frame = pd.read_parquet(out / "epochs")
    assert set(trace_store.TRACE_COLUMNS) | {"epoch", "feature"} == set(frame.columns)
    frame["epoch"] = frame["epoch"].astype(int)
    assert sorted(frame["epoch"].unique()) == list(range(T_P, T_MAX + 1))
    assert (frame.groupby("epoch").size() == N_TRAIN).all()
    for epoch, rows in frame.groupby("epoch"):
        has_feature = rows["feature"].notna()
        assert has_feature.all() if epoch in FEATURE_EPOCHS else not has_feature.any(), epoch
        rows = rows.sort_values("index")
        np.testing.assert_array_equal(rows["index"].to_numpy(), np.arange(1000, 1000 + N_TRAIN))
        np.testing.assert_array_equal(rows["given_label"].to_numpy(), labels.given)
    last = trace_store.read_traces(out / "epochs").query(f"epoch == {T_MAX}")
    np.testing.assert_array_equal(last["in_G"].to_numpy(), trainer.in_G)
    np.testing.assert_array_equal(last["label"].to_numpy(), trainer.labels)


def test_trace_columns_follow_the_selection_rules(run_a, labels, cell) -> None:
    out, _, _ = run_a
    frame = trace_store.read_traces(out / "epochs").drop(columns="feature")
    previous_G, previous_label = labels.init_G, labels.given
    for epoch in range(T_P, T_MAX + 1):
        rows = frame[frame["epoch"] == epoch]
        in_G, label, pred = (rows[c].to_numpy() for c in ("in_G", "label", "pred"))
        selected, removed, flipped = (rows[c].to_numpy() for c in ("selected", "removed", "flipped"))
        scored = rows["lof_score"].notna().to_numpy()
        # Flips change the label and leave G; G = (G - flipped) ∪ selected − removed (Eq. 2, 3, 7).
        np.testing.assert_array_equal(label != previous_label, flipped)
        candidates = ~(previous_G & ~flipped)
        np.testing.assert_array_equal(in_G, ((previous_G & ~flipped) | selected) & ~removed)
        # LOF scores only candidates whose prediction agrees with their label; null elsewhere.
        assert not (scored & ~(candidates & (pred == label))).any(), epoch
        assert not (selected & ~scored).any()
        assert (rows["lof_score"].to_numpy()[selected] <= cell.method.lof_threshold).all()
        assert not (removed & (pred == label)).any()
        # removal leaves no disagreeing member, also after the last Eq. 7 (method.final_selection;
        # the paper's order, with no selection after it, is tested on its own below)
        assert not (in_G & (pred != label)).any()
        previous_G, previous_label = in_G, label
    assert frame["lof_score"].notna().any() and frame["lof_score"].isna().any()
    # Unscored rows are Parquet nulls, not NaN.
    table = pq.read_table(trace_store.epoch_dir(out / "epochs", T_P) / "part-0.parquet", columns=["lof_score"])
    column = table.column("lof_score")
    assert column.null_count > 0
    assert not pc.any(pc.is_nan(column.drop_null())).as_py()


def test_trace_features_are_float16_and_match_the_model(run_a, data) -> None:
    out, trainer, _ = run_a
    for epoch in FEATURE_EPOCHS:
        feats = trace_store.read_features(out / "epochs", epoch)
        assert feats.dtype == np.float16 and feats.shape == (N_TRAIN, 8 * WIDTH)
        np.testing.assert_allclose(np.linalg.norm(feats.astype(np.float32), axis=1), 1.0, atol=2e-3)
    final = trainer.extract(data.train).features
    np.testing.assert_array_equal(trace_store.read_features(out / "epochs", T_MAX), final.astype(np.float16))
    assert not np.array_equal(trace_store.read_features(out / "epochs", T_P), trace_store.read_features(out / "epochs", T_MAX))


# -- 4. ablation switches -----------------------------------------------------------------------


def test_all_switches_off_trains_on_every_sample(tmp_path, data, labels) -> None:
    off = dict.fromkeys(SWITCHES, False)
    cell = make_cell(method=off, optim={"epochs": 3, "warmup_epochs": 1, "lr_milestones": [3], "batch_size": 16})
    real = TrainingLabels(given=labels.given, clean=None, init_G=labels.init_G)  # clean unknown
    warm = engine.run_warmup(cell, data, real, tmp_path / "w")
    assert warm.in_G.all() and warm.key_model is None
    trainer = engine.run_train(cell, data, real, tmp_path / "w" / engine.CHECKPOINT, tmp_path / "t")
    rows = warm.history + trainer.history
    assert [r["train_samples"] for r in rows if "train_samples" in r] == [N_TRAIN] * 3
    assert all(r["loss_lcl"] == 0.0 for r in rows if "loss_lcl" in r)
    assert all(r["G_size"] == N_TRAIN and "G_precision" not in r for r in rows)
    assert trainer.in_G.all()
    np.testing.assert_array_equal(trainer.labels, labels.given)  # no label correction
    # G = S whatever the model says: no extraction over S and no trace, so a CE epoch costs a CE epoch
    assert not any("time_extract" in r for r in trainer.history)
    assert not (tmp_path / "t" / "epochs").exists()
    assert all("test_top1" in r for r in trainer.history)


def test_full_method_keeps_G_a_subset_and_reports_its_precision(run_a, labels) -> None:
    out, trainer, _ = run_a
    frame = trace_store.read_traces(out / "epochs")
    # G is a strict subset after the opening selection (the twins guarantee removals there);
    # later, lc_alpha 0.9 may relabel every sample to its prediction and so admit all of S.
    assert not frame[frame["epoch"] == T_P]["in_G"].all()
    for row in trainer.history:
        rows = frame[frame["epoch"] == row["epoch"]]
        in_G = rows["in_G"].to_numpy()
        correct = rows["label"].to_numpy() == labels.clean
        assert row["G_size"] == in_G.sum()
        assert row["G_precision"] == pytest.approx(100.0 * correct[in_G].mean())
        assert row["G_recall"] == pytest.approx(100.0 * in_G[correct].mean())
    assert all(0 < r["G_precision"] <= 100 for r in trainer.history)
    first_epoch = next(r for r in trainer.history if r["epoch"] == T_P + 1)
    assert first_epoch["train_samples"] < N_TRAIN  # it trains on the G of the opening selection


# -- 5. checkpoint errors -----------------------------------------------------------------------


def test_corrupt_checkpoint_is_a_user_error_naming_the_file(tmp_path) -> None:
    path = tmp_path / engine.CHECKPOINT
    path.write_bytes(b"\x00garbage, not a torch zip archive" * 10)
    with pytest.raises(UserError, match="unreadable checkpoint") as err:
        load_checkpoint(path)
    assert str(path) in str(err.value)


def test_truncated_checkpoint_is_a_user_error(tmp_path, warm) -> None:
    path = tmp_path / engine.CHECKPOINT
    path.write_bytes(warm.read_bytes()[: warm.stat().st_size // 2])
    with pytest.raises(UserError, match=str(path)):
        load_checkpoint(path)


def test_missing_checkpoint_is_a_user_error(tmp_path, cell, data, labels) -> None:
    path = tmp_path / "nowhere" / engine.CHECKPOINT
    with pytest.raises(UserError, match="checkpoint not found") as err:
        load_checkpoint(path)
    assert str(path) in str(err.value)
    with pytest.raises(UserError, match="not found"):  # a stage started before its predecessor
        engine.run_train(cell, data, labels, path, tmp_path / "t")


def test_corrupt_checkpoint_in_the_output_directory_stops_a_resume(tmp_path, cell, data, labels, warm) -> None:
    (tmp_path / engine.CHECKPOINT).write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="delete it and rerun"):
        engine.run_train(cell, data, labels, warm, tmp_path, fingerprint="fp")


# -- 6. evaluation ------------------------------------------------------------------------------


def test_evaluate_checkpoint_metrics(run_a, cell, data, labels) -> None:
    checkpoint = run_a[0] / engine.CHECKPOINT
    metrics = engine.evaluate_checkpoint(cell, data, labels, checkpoint)
    assert metrics["knn_labels"] == "clean"
    assert set(metrics) == {"knn_labels", "test/top1", "test/top5", "test/knn"}
    for key in ("test/top1", "test/top5", "test/knn"):
        assert 0.0 <= metrics[key] <= 100.0
    assert metrics["test/top5"] == 100.0  # 4 classes: top-5 is capped at top-4
    assert metrics["test/top1"] == run_a[1].history[-1]["test_top1"]

    real = TrainingLabels(given=labels.given, clean=None, init_G=np.ones(N_TRAIN, dtype=bool))
    current = engine.evaluate_checkpoint(cell, data, real, checkpoint)
    assert current["knn_labels"] == "current"
    assert 0.0 <= current["test/knn"] <= 100.0
    assert current["test/top1"] == metrics["test/top1"]

    forced = make_cell(evaluate={"knn_labels": "clean"})
    with pytest.raises(UserError, match="no clean labels"):
        engine.evaluate_checkpoint(forced, data, real, checkpoint)


# -- 7-8. helpers -------------------------------------------------------------------------------


def test_class_centre_distance_on_a_hand_example() -> None:
    features = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [0.6, 0.8, 0], [0, 1, 0]], dtype=np.float32)
    labels = np.array([0, 0, 0, 1, 2])
    in_G = np.array([True, True, False, True, False])  # class 2 has no member of G
    dist = engine.class_centre_distance(features, labels, in_G, num_classes=3)
    assert dist.dtype == np.float32 and dist.shape == (5,)
    centre0 = np.array([1, 1, 0]) / np.sqrt(2)  # normalised mean of G's class-0 members
    expected = [np.linalg.norm(features[i] - centre0) for i in range(3)]
    np.testing.assert_allclose(dist[:3], expected, rtol=1e-6)
    assert dist[0] == pytest.approx(np.sqrt(2 - np.sqrt(2)))
    assert dist[2] == pytest.approx(np.sqrt(2))  # not in G, still measured to its label's centre
    assert dist[3] == pytest.approx(0.0, abs=1e-6)  # the only member of class 1 is its centre
    assert np.isnan(dist[4])


def test_lr_at_is_a_step_schedule() -> None:
    values = [engine.lr_at(e, 0.1, [125, 200], 0.1) for e in (0, 124, 125, 199, 200, 249)]
    assert values == pytest.approx([0.1, 0.1, 0.01, 0.01, 0.001, 0.001])
    assert engine.lr_at(5, 0.5, [], 0.1) == 0.5
    assert engine.lr_at(3, 1.0, [3, 3], 0.5) == 0.25  # a repeated milestone applies twice, as MultiStepLR


def test_saving_the_same_state_twice_gives_identical_bytes(run_a, tmp_path) -> None:
    # A checkpoint's bytes feed the next stage's resume fingerprint: random temp names inside
    # the zip would make every no-op re-save restart the next stage from scratch.
    _, trainer, _ = run_a
    trainer.save(tmp_path / "a" / engine.CHECKPOINT, "train", "f")
    trainer.save(tmp_path / "b" / engine.CHECKPOINT, "train", "f")
    assert (tmp_path / "a" / engine.CHECKPOINT).read_bytes() == (tmp_path / "b" / engine.CHECKPOINT).read_bytes()


# -- 9. engine defects of the method review and the epoch definition ----------------------------


def test_auto_momentum_is_the_papers_at_paper_scale_and_lags_as_many_epochs_on_a_short_run() -> None:
    assert key_encoder_momentum("auto", 50_000, 128) == pytest.approx(0.999)
    small = key_encoder_momentum("auto", 5170, 128)  # 40 steps an epoch
    assert small == pytest.approx(0.999 ** (390 / 40))
    # the key encoder keeps as much of itself per epoch as the paper's does
    assert small ** 40 == pytest.approx(0.999 ** 390)
    assert key_encoder_momentum(0.99, 5170, 128) == 0.99


def test_trainer_moves_the_key_encoder_with_the_scaled_momentum(monkeypatch, data, labels) -> None:
    trainer = Trainer(make_cell(), data, labels, lr=0.1, momentum=0.9, weight_decay=0.0, key_encoder=True)
    assert trainer.key_momentum == pytest.approx(0.999 ** (390 / (N_TRAIN // 8)))
    used: list[float] = []
    real_update = learner.momentum_update
    monkeypatch.setattr(learner, "momentum_update", lambda k, q, m: used.append(m) or real_update(k, q, m))
    views = engine._train_transform(trainer.cell, data)
    with Progress(False, "", 0) as quiet:
        stats = trainer.run_epoch(views, lr=0.01, batch_size=8, mixup_alpha=1.0, contrastive=True,
                                  seed_epoch=0, progress=quiet)
    assert used == [trainer.key_momentum] * stats["steps"] and stats["steps"] > 0
    assert trainer.key_model.training  # keys are computed in train mode, epoch after epoch


def test_ema_extraction_leaves_the_key_encoder_in_train_mode(data, labels) -> None:
    trainer = Trainer(make_cell(), data, labels, lr=0.1, momentum=0.9, weight_decay=0.0, key_encoder=True)
    trainer.extract(data.train, ema=True)
    assert trainer.key_model.training


def test_a_checkpoint_from_other_code_is_a_one_line_user_error(tmp_path, cell, data, labels, warm) -> None:
    state = load_checkpoint(warm)
    del state["queue"]["positions"]  # as written before the queue remembered each key's sample
    trainer = Trainer(cell, data, labels, lr=0.1, momentum=0.9, weight_decay=0.0, key_encoder=True)
    with pytest.raises(UserError, match="checkpoint: does not fit this code"):
        trainer.restore(state)


def test_a_checkpoint_from_another_cell_or_model_is_a_user_error_naming_it(tmp_path, cell, data, labels, warm) -> None:
    state = load_checkpoint(warm)
    short = state | {"in_G": state["in_G"][:-3], "labels": state["labels"][:-3]}  # another dataset's samples
    torch.save(short, tmp_path / "other-cell.pt")
    trainer = Trainer(cell, data, labels, lr=0.1, momentum=0.9, weight_decay=0.0, key_encoder=True)
    with pytest.raises(UserError, match=r"other-cell.pt: holds \d+ samples .* another cell"):
        trainer.load(tmp_path / "other-cell.pt")
    wider = cell.model_copy(update={"model": cell.model.model_copy(update={"width": cell.model.width * 2})})
    trainer = Trainer(wider, data, labels, lr=0.1, momentum=0.9, weight_decay=0.0, key_encoder=True)
    with pytest.raises(UserError, match=f"{warm}: does not fit this code or model"):
        trainer.load(warm)


def test_epoch_order_S_draws_a_ce_epochs_steps_from_G_only() -> None:
    in_G = np.zeros(100, dtype=bool)
    in_G[[3, 5, 7, 11, 13, 17, 19]] = True
    labels = np.arange(100) % 3
    order = epoch_order(in_G, labels, iters="S", batch_size=8, class_balanced=False,
                               generator=torch.Generator().manual_seed(0))
    assert len(order) == (100 // 8) * 8
    assert in_G[order].all()
    counts = np.bincount(order, minlength=100)[in_G]
    assert counts.max() - counts.min() <= 1  # repeated shuffled passes over G
    assert epoch_order(in_G, labels, iters="G", batch_size=8, class_balanced=False,
                              generator=torch.Generator()) is None
    fixed = epoch_order(in_G, labels, iters=5, batch_size=8, class_balanced=False,
                               generator=torch.Generator().manual_seed(0))
    assert len(fixed) == 40


def test_epoch_order_class_balanced_draws_each_class_about_equally() -> None:
    in_G = np.zeros(300, dtype=bool)
    in_G[:200] = True  # class 0: 190 members of G, class 1: 10
    labels = np.where(np.arange(300) < 190, 0, 1)
    order = epoch_order(in_G, labels, iters=300, batch_size=40, class_balanced=True,
                               generator=torch.Generator().manual_seed(0))
    share = np.mean(labels[order] == 1)
    assert in_G[order].all() and 0.4 < share < 0.6  # 12000 draws: the share is 0.5 +- 0.005 (1 sd)


def test_iters_per_epoch_S_runs_the_same_steps_as_a_pass_over_S(tmp_path, data, labels) -> None:
    cell = make_cell(optim={"epochs": 2, "warmup_epochs": 2, "lr_milestones": [2], "iters_per_epoch": "S"})
    trainer = engine.run_warmup(cell, data, labels, tmp_path)
    batch = PARAMS["optim"]["batch_size"]
    assert labels.init_G.sum() < N_TRAIN  # G is a part of S, yet each epoch takes |S|/batch steps
    assert [r["steps"] for r in trainer.history] == [N_TRAIN // batch] * 2
    assert [r["train_samples"] for r in trainer.history] == [N_TRAIN // batch * batch] * 2


def _extraction_agreeing_with(clean: np.ndarray, n: int) -> Extraction:
    """Predictions = the clean labels; features in tight class clusters (every LOF score ~1)."""
    rng = np.random.default_rng(0)
    features = np.eye(K, 8)[clean] + rng.normal(0, 0.01, (n, 8))
    logits = torch.as_tensor(np.eye(K)[clean] * 10.0, dtype=torch.float32)
    return Extraction(features.astype(np.float32), features.astype(np.float32), logits)


@pytest.mark.parametrize("final_selection", [True, False])
def test_labels_corrected_in_the_last_round_reach_G_only_with_a_final_selection(
        tmp_path, monkeypatch, data, labels, final_selection: bool) -> None:
    cell = make_cell(method={"final_selection": final_selection, "lof_threshold": 1e6})
    trainer = Trainer(cell, data, labels, lr=0.1, momentum=0.9, weight_decay=0.0, key_encoder=True)
    trainer.epoch = T_MAX  # the last round of Algorithm 1
    monkeypatch.setattr(trainer, "extract", lambda split, *a, **k: _extraction_agreeing_with(labels.clean, N_TRAIN)
                        if split is data.train else Trainer.extract(trainer, split, *a, **k))
    with Progress(False, "", 0) as quiet:
        record = engine._select(trainer, labels, quiet, tmp_path / "epochs", correct=True)
    corrected = trainer.labels != labels.given
    assert record["flipped"] == corrected.sum() > 0  # lc_alpha 0.9: one disagreeing round flips
    assert (trainer.labels[corrected] == labels.clean[corrected]).all()
    assert trainer.in_G[corrected].all() == final_selection
    assert (record["selected"] > 0) == final_selection


# -- 10. switchable variants of the engine -------------------------------------------------------


def test_ema_selection_predicts_with_the_momentum_encoder_even_without_contrastive(
        tmp_path, monkeypatch, data, labels) -> None:
    cell = make_cell(method={"selection_model": "ema", "contrastive": False})
    trainer = Trainer(cell, data, labels, lr=0.1, momentum=0.9, weight_decay=0.0,
                             key_encoder=cell.method.needs_key_encoder)
    assert trainer.key_model is not None
    with torch.no_grad():  # make the two encoders disagree, so which one predicted shows
        for p in trainer.key_model.parameters():
            p.mul_(-1.0)
    used: list[torch.nn.Module] = []
    real_extract = learner.extract
    monkeypatch.setattr(learner, "extract", lambda model, *a, **k: used.append(model) or real_extract(model, *a, **k))
    with Progress(False, "", 0) as quiet:
        engine._select(trainer, labels, quiet, tmp_path / "epochs", correct=True)
    assert used[0] is trainer.key_model  # selection and correction: the EMA encoder over S
    assert used[1] is trainer.model  # the test-set curve stays the student's


def test_logit_adjustment_shifts_the_logits_of_the_classification_loss_by_the_epochs_class_shares(
        monkeypatch, data, labels) -> None:
    """With logit_adjustment uniform, every batch's classification loss sees the model's logits
    plus log(share of the class among the epoch's draws / 1/K); with none, the logits alone."""
    in_G = labels.init_G | (labels.given == 0)  # class 0 over-represented in G
    drawn = labels.given[in_G]
    expected = np.log(np.bincount(drawn, minlength=K) / len(drawn)) - np.log(1 / K)
    assert expected.max() - expected.min() > 0.5  # the case needs unequal shares
    real_loss = learner.soft_classification_loss
    for kind in ("none", "uniform"):
        trainer = Trainer(make_cell(method={"logit_adjustment": kind, "mixup": False}), data, labels, lr=0.0,
                                 momentum=0.0, weight_decay=0.0, key_encoder=True)
        trainer.set_confidence_set(in_G)
        forward, seen = trainer.forward, []
        monkeypatch.setattr(trainer, "forward", lambda x, forward=forward, seen=seen: seen.append(forward(x)) or seen[-1])
        monkeypatch.setattr(learner, "soft_classification_loss",
                            lambda logits, targets, *how, seen=seen: seen.append(logits) or real_loss(logits, targets, *how))
        with Progress(False, "", 0) as quiet:
            trainer.run_epoch(engine._train_transform(trainer.cell, data), lr=0.0, batch_size=8, mixup_alpha=0.0,
                              contrastive=False, seed_epoch=0, progress=quiet)
        pairs = list(zip(seen[0::2], seen[1::2], strict=True))
        assert len(pairs) >= 2
        for out, loss_logits in pairs:
            difference = (loss_logits - out.logits.float()).detach().numpy()
            want = expected if kind == "uniform" else np.zeros(K)
            np.testing.assert_allclose(difference, np.broadcast_to(want, difference.shape), atol=1e-5)


def test_classification_loss_gce_trains_every_step_with_the_generalized_cross_entropy(monkeypatch, data, labels) -> None:
    """method.classification_loss and gce_q reach each step's loss on G (the paper's CE otherwise)."""
    calls = []
    real_loss = learner.soft_classification_loss
    monkeypatch.setattr(learner, "soft_classification_loss",
                        lambda logits, targets, kind, q, weights, total: calls.append((kind, q, weights)) or
                        real_loss(logits, targets, kind, q, weights, total))
    trainer = Trainer(make_cell(method={"classification_loss": "gce", "gce_q": 0.5}), data, labels, lr=0.0,
                      momentum=0.0, weight_decay=0.0, key_encoder=False)
    with Progress(False, "", 0) as quiet:
        stats = trainer.run_epoch(engine._train_transform(trainer.cell, data), lr=0.0, batch_size=8, mixup_alpha=1.0,
                                  contrastive=False, seed_epoch=0, progress=quiet)
    assert len(calls) == stats["steps"] >= 2 and set(calls) == {("gce", 0.5, None)}  # loss_weights none: unweighted


def test_warmup_on_all_trains_on_S_then_selection_starts_from_the_seed(tmp_path, data, labels) -> None:
    cell = make_cell(method={"warmup_set": "all"},
                     optim={"epochs": 3, "warmup_epochs": 2, "lr_milestones": [3], "batch_size": 16})
    warm = engine.run_warmup(cell, data, labels, tmp_path / "w")
    assert [r["train_samples"] for r in warm.history] == [N_TRAIN] * 2
    trainer = engine.run_train(cell, data, labels, tmp_path / "w" / engine.CHECKPOINT, tmp_path / "t")
    opening = trace_store.read_traces(tmp_path / "t" / "epochs").query("epoch == 2")
    selected, removed = opening["selected"].to_numpy(), opening["removed"].to_numpy()
    np.testing.assert_array_equal(opening["in_G"].to_numpy(), (labels.init_G | selected) & ~removed)
    assert trainer.history[1]["train_samples"] < N_TRAIN


def test_fixmatch_adds_a_loss_on_samples_outside_G_only(tmp_path, monkeypatch, data, labels) -> None:
    cell = make_cell(method={"semi_supervised": "fixmatch", "fixmatch_threshold": 1e-6, "fixmatch_ratio": 0.5},
                     optim={"epochs": 1, "warmup_epochs": 1, "lr_milestones": [1]})
    drawn: list[np.ndarray] = []
    real_loader = Placement.batches

    def spy(self, split, transform, positions, *a, **k):
        drawn.append((type(transform).__name__, np.asarray(positions)))
        return real_loader(self, split, transform, positions, *a, **k)
    monkeypatch.setattr(Placement, "batches", spy)
    trainer = engine.run_warmup(cell, data, labels, tmp_path)
    record = trainer.history[0]
    assert record["loss_u"] > 0 and record["pseudo_labelled"] == 1.0  # threshold ~0: every sample passes
    outside = [positions for name, positions in drawn if name == "WeakStrong"]
    assert outside and not labels.init_G[np.concatenate(outside)].any()


def test_fixmatch_off_leaves_the_unlabelled_loss_at_zero(tmp_path, data, labels) -> None:
    cell = make_cell(optim={"epochs": 1, "warmup_epochs": 1, "lr_milestones": [1]})
    trainer = engine.run_warmup(cell, data, labels, tmp_path)
    assert trainer.history[0]["loss_u"] == 0.0 and trainer.history[0]["pseudo_labelled"] == 0.0


@pytest.mark.parametrize("data_path", ["loader", "resident"])
def test_forward_correction_estimates_T_on_the_seed_after_an_all_data_warmup(tmp_path, monkeypatch, data,
                                                                             labels, data_path) -> None:
    verified = TrainingLabels(labels.given, labels.clean, labels.init_G, verified=True)
    cell = make_cell(method={"warmup_set": "all", "semi_supervised": "forward", "fixmatch_ratio": 0.5},
                     optim={"epochs": 3, "warmup_epochs": 2, "lr_milestones": [3], "batch_size": 16},
                     runtime={"data_path": data_path})
    drawn: list[tuple[str, bool]] = []  # (transform, with RandAugment) of every batch stream
    real_loader = Placement.batches

    def spy(self, split, transform, *a, **k):
        drawn.append((type(transform).__name__, bool(getattr(transform, "randaugment", None))))
        return real_loader(self, split, transform, *a, **k)
    monkeypatch.setattr(Placement, "batches", spy)
    warm = engine.run_warmup(cell, data, verified, tmp_path / "w")
    assert warm.transition is None and all(r["loss_u"] == 0.0 for r in warm.history)  # nothing outside G yet
    assert not warm.in_G[labels.init_G].any() and warm.in_G[~labels.init_G].all()  # GLC: the seed is held out
    trainer = engine.run_train(cell, data, verified, tmp_path / "w" / engine.CHECKPOINT, tmp_path / "t")
    assert trainer.transition is not None and trainer.transition.shape == (K, K)
    torch.testing.assert_close(trainer.transition.sum(1), torch.ones(K))
    assert trainer.history[-1]["loss_u"] > 0
    # Ḡ's batches come as the one strong view the corrected loss learns on: no weak view is made
    assert "WeakStrong" not in [name for name, _ in drawn]
    assert any(name == "View" and randaugment for name, randaugment in drawn)
    resumed = load_checkpoint(tmp_path / "t" / engine.CHECKPOINT)
    torch.testing.assert_close(resumed["transition"], trainer.transition)


def test_finetune_iters_per_epoch_sets_the_finetune_steps(tmp_path, cell, data, labels, run_a) -> None:
    out, _, _ = run_a
    fixed = cell.model_copy(update={"finetune": cell.finetune.model_copy(update={"iters_per_epoch": 3})})
    trainer = engine.run_finetune(fixed, data, labels, out / engine.CHECKPOINT, tmp_path)
    assert [r["steps"] for r in trainer.history] == [3] * FINETUNE_EPOCHS


def _finetune_cell(cell: CellConfig, **update) -> CellConfig:
    return cell.model_copy(update={"finetune": cell.finetune.model_copy(update=update)})


def test_finetune_start_ema_hands_on_the_momentum_encoder(tmp_path, cell, data, labels, run_a) -> None:
    """With no fine-tuning epochs the result is the network the phase starts from: the momentum
    encoder's weights under finetune.start 'ema', the student's under 'student'."""
    out, _, _ = run_a
    train = load_checkpoint(out / engine.CHECKPOINT)
    assert any(not torch.equal(train["model"][k], train["key_model"][k]) for k in train["model"])  # they differ
    for start, source in (("student", "model"), ("ema", "key_model")):
        engine.run_finetune(_finetune_cell(cell, epochs=0, start=start), data, labels, out / engine.CHECKPOINT,
                            tmp_path / start)
        result = load_checkpoint(tmp_path / start / engine.CHECKPOINT)["model"]
        for name, weights in result.items():
            torch.testing.assert_close(weights, train[source][name])


def test_finetune_start_ema_refuses_a_run_without_a_momentum_encoder(tmp_path, cell, data, labels, run_a) -> None:
    with pytest.raises(UserError, match="momentum encoder"):
        make_cell(method={"contrastive": False}, finetune={"start": "ema"})
    out, _, _ = run_a
    # A fine-tuning checkpoint holds no key encoder: starting another fine-tuning from it by EMA is refused.
    engine.run_finetune(_finetune_cell(cell, epochs=0), data, labels, out / engine.CHECKPOINT, tmp_path / "ft")
    with pytest.raises(UserError, match="holds no momentum encoder"):
        engine.run_finetune(_finetune_cell(cell, epochs=0, start="ema"), data, labels,
                            tmp_path / "ft" / engine.CHECKPOINT, tmp_path / "again")
    assert not (tmp_path / "again" / engine.CHECKPOINT).exists()


@pytest.mark.parametrize("method, message", [
    ({"semi_supervised": "forward"}, "warmup_set 'all'"),
    ({"semi_supervised": "fixmatch", "lof": False, "confidence_set": False}, "nothing outside G"),
])
def test_variants_outside_G_refuse_settings_they_cannot_work_with(method, message) -> None:
    with pytest.raises(UserError, match=message):
        make_cell(method=method)


def test_removal_patience_spares_a_single_disagreement_and_the_streak_survives_a_restart(tmp_path, data, labels,
                                                                                           warm) -> None:
    """The planted twins disagree with half their labels at the opening selection; the paper's
    rule removes them at once, a patience of 2 cannot (no sample has disagreed twice yet)."""
    patient = make_cell(method={"removal_patience": 2})
    seen: list[dict] = []
    with pytest.raises(Interrupted):
        engine.run_train(patient, data, labels, warm, tmp_path / "t", on_epoch=record_then_stop(seen))
    assert seen[0]["epoch"] == T_P and seen[0]["removed"] == 0
    state = load_checkpoint(tmp_path / "t" / engine.CHECKPOINT)
    streak = state["disagree_streak"].numpy()
    assert (streak[TWIN_POSITIONS] == 1).sum() >= TWINS // 2  # the disagreeing twins are one round in
    trainer = Trainer(patient, data, labels, lr=0.1, momentum=0.9, weight_decay=0.0, key_encoder=True)
    trainer.restore(state)
    np.testing.assert_array_equal(trainer.disagree_streak, streak)


def test_selection_patience_admits_no_one_on_a_single_agreement_and_the_streak_survives_a_restart(
        tmp_path, data, labels, warm) -> None:
    """The opening selection is every sample's first round: with a patience of 2 no candidate has
    agreed twice yet, so none enters G, where the paper's rule selects some; the next round may."""
    seen: list[dict] = []
    for name, patience in (("paper", 1), ("patient", 2)):
        with pytest.raises(Interrupted):
            engine.run_train(make_cell(method={"selection_patience": patience}), data, labels, warm, tmp_path / name,
                             on_epoch=record_then_stop(seen))
    assert seen[0]["selected"] > 0  # the case needs the paper's rule to select at the opening round
    assert seen[1]["selected"] == 0
    state = load_checkpoint(tmp_path / "patient" / engine.CHECKPOINT)
    agree = state["agree_streak"].numpy()
    assert set(np.unique(agree)) <= {0, 1} and agree.sum() >= seen[0]["selected"]
    trainer = Trainer(make_cell(), data, labels, lr=0.1, momentum=0.9, weight_decay=0.0, key_encoder=True)
    trainer.restore(state)
    np.testing.assert_array_equal(trainer.agree_streak, agree)


def test_agreement_min_prob_keeps_only_members_the_model_gives_their_label_that_probability(
        tmp_path, data, labels, warm) -> None:
    """At the opening selection (the warm-up model's predictions) every member of G outside the
    protected seed must give its label at least agreement_min_prob; the paper's G has some that
    do not, so the switch must have removed or kept them out."""
    q = 0.999
    logits = engine.extract_checkpoint(make_cell(), data, warm).logits
    prob = logits.softmax(1)[torch.arange(len(labels.given)), torch.as_tensor(labels.given)].numpy()
    members = {}
    for name, method in (("paper", {}), ("sure", {"agreement_min_prob": q})):
        with pytest.raises(Interrupted):
            engine.run_train(make_cell(method={**method, "label_correction": False}), data, labels, warm,
                             tmp_path / name, on_epoch=record_then_stop([]))
        opening = trace_frame(tmp_path / name / "epochs").query(f"epoch == {T_P}")
        members[name] = opening["in_G"].to_numpy() & ~labels.init_G
    assert (prob[members["paper"]] < q).any()  # the case needs a weak agreement in the paper's G
    assert (prob[members["sure"]] >= q).all()


def test_posterior_agreement_keeps_only_members_whose_label_is_likely_right(tmp_path, data, labels, warm) -> None:
    """method.agreement "posterior": at the opening selection every member of G outside the
    protected seed has a posterior (under T estimated from the warm-up model's predictions) of
    at least posterior_min."""
    q = 0.9
    probs = engine.extract_checkpoint(make_cell(), data, warm).logits.softmax(1).numpy()
    k = data.num_classes
    posterior = selection.label_posterior(probs, labels.given, selection.confident_joint_transition(probs, labels.given, k))
    with pytest.raises(Interrupted):
        engine.run_train(make_cell(method={"agreement": "posterior", "posterior_min": q, "label_correction": False}),
                         data, labels, warm, tmp_path / "posterior", on_epoch=record_then_stop([]))
    opening = trace_frame(tmp_path / "posterior" / "epochs").query(f"epoch == {T_P}")
    members = opening["in_G"].to_numpy() & ~labels.init_G
    assert members.any()  # the check needs members beyond the seed
    assert (posterior[members] >= q - 1e-3).all()  # extraction batches may differ in the last float bits


def test_removal_max_prob_spares_the_members_whose_label_is_not_unlikely(tmp_path, data, labels, warm) -> None:
    """The opening selection removes at least TWINS/2 planted twins under the paper's rule; with a
    ceiling no float32 softmax of this tiny model reaches (1e-30), removal may take none. A ceiling
    of 0.5 changes nothing: a member whose prediction disagrees with its label gives that label at
    most 0.5 (equal only at an exact tie)."""
    seen: list[dict] = []
    for name, method in (("paper", {}), ("tiny", {"removal_max_prob": 1e-30}), ("half", {"removal_max_prob": 0.5})):
        with pytest.raises(Interrupted):
            engine.run_train(make_cell(method=method), data, labels, warm, tmp_path / name,
                             on_epoch=record_then_stop(seen))
    assert seen[0]["removed"] >= TWINS // 2
    assert seen[1]["removed"] == 0
    assert seen[2]["removed"] == seen[0]["removed"]


def test_class_floor_tops_short_classes_of_G_up_to_the_median(tmp_path, data, labels, warm) -> None:
    """min_class_share 1.0: the opening selection's G is the paper's plus, for every class smaller
    than the paper G's median class, its label's most likely non-members up to that median (Eq. 7
    off: it would relabel after the top-up). The two runs are identical up to the top-up."""
    sizes = {}
    for name, share in (("paper", 0.0), ("floor", 1.0)):
        with pytest.raises(Interrupted):
            engine.run_train(make_cell(method={"min_class_share": share, "label_correction": False}), data, labels,
                             warm, tmp_path / name, on_epoch=record_then_stop([]))
        opening = trace_store.read_traces(tmp_path / name / "epochs").query(f"epoch == {T_P}")
        in_G, label = opening["in_G"].to_numpy(), opening["label"].to_numpy()
        sizes[name] = np.bincount(label[in_G], minlength=data.num_classes)
    available = np.bincount(labels.given, minlength=data.num_classes)
    floor = np.minimum(np.ceil(np.median(sizes["paper"])), available)
    np.testing.assert_array_equal(sizes["floor"], np.maximum(sizes["paper"], floor))


def test_auto_class_keep_is_estimated_from_the_warm_up_model_and_held(tmp_path, data, labels) -> None:
    """min_class_keep auto without a seed: each class's floor is the share of its samples a loss
    GMM on the warm-up model calls clean, estimated at the opening selection and held afterwards;
    removal leaves every class at least that share of its labelled samples."""
    from pipeline.method.selection import gmm_clean_share

    seedless = TrainingLabels(given=labels.given, clean=labels.clean, init_G=np.ones_like(labels.init_G))
    cell = make_cell(noise={"init": "all"}, method={"min_class_keep": "auto", "label_correction": False})
    engine.run_warmup(cell, data, seedless, tmp_path / "w")
    warm = tmp_path / "w" / engine.CHECKPOINT
    logits = engine.extract_checkpoint(cell, data, warm).logits
    losses = torch.nn.functional.cross_entropy(logits, torch.as_tensor(seedless.given), reduction="none").numpy()
    expected = gmm_clean_share(losses, seedless.given, K)
    with pytest.raises(Interrupted):
        engine.run_train(cell, data, seedless, warm, tmp_path / "t", on_epoch=stop_after(T_P + 1))
    state = load_checkpoint(tmp_path / "t" / engine.CHECKPOINT)
    assert state["epoch"] == T_P + 1  # one selection round after the opening one
    np.testing.assert_allclose(state["class_keep"].numpy(), expected)
    opening = trace_frame(tmp_path / "t" / "epochs").query(f"epoch == {T_P}")
    in_G, label = opening["in_G"].to_numpy(), opening["label"].to_numpy()
    counts = np.bincount(label, minlength=K)
    assert (np.bincount(label[in_G], minlength=K) >= np.ceil(np.nan_to_num(expected) * counts)).all()


def test_forward_correction_without_a_verified_seed_is_a_user_error(tmp_path, data, labels) -> None:
    cell = make_cell(method={"warmup_set": "all", "semi_supervised": "forward"})
    with pytest.raises(UserError, match="no verified seed|has none"):
        engine.run_warmup(cell, data, labels, tmp_path)  # the fixture's labels are not a verified seed


def test_self_seed_restarts_G_from_each_labels_most_confident_samples(tmp_path, data, labels) -> None:
    """Without a verified seed G is all of S; with self_seed_per_class the opening selection starts
    from k samples per label instead. Removal and LOF are off, so the opening G is the seed plus
    the samples whose prediction agrees with their label: every label keeps at least k members,
    and only seed members may disagree. The planted twins guarantee some disagreement (half of
    them, all under one label, so at most k of them in the seed), hence G < S."""
    seedless = TrainingLabels(given=labels.given, clean=labels.clean, init_G=np.ones_like(labels.init_G))
    k = 3
    cell = make_cell(noise={"init": "all"}, method={"self_seed_per_class": k, "removal": False, "lof": False})
    engine.run_warmup(cell, data, seedless, tmp_path / "w")  # on all of S, as a seedless run warms up
    warm = tmp_path / "w" / engine.CHECKPOINT
    seen: list[dict] = []
    with pytest.raises(Interrupted):
        engine.run_train(cell, data, seedless, warm, tmp_path / "t", on_epoch=record_then_stop(seen))
    opening = trace_frame(tmp_path / "t" / "epochs").query(f"epoch == {T_P}")
    in_G, label, pred = opening["in_G"].to_numpy(), opening["label"].to_numpy(), opening["pred"].to_numpy()
    assert seen[0]["G_size"] == in_G.sum() < N_TRAIN
    assert all(in_G[label == c].sum() >= k for c in range(K))
    assert (in_G & (pred != label)).sum() <= k * K  # only seed members may disagree
    paper = make_cell(noise={"init": "all"}, method={"removal": False, "lof": False})
    with pytest.raises(Interrupted):
        engine.run_train(paper, data, seedless, warm, tmp_path / "p", on_epoch=record_then_stop(seen))
    assert seen[1]["G_size"] == N_TRAIN  # the paper's real-noise rule: G stays S


def test_the_self_seed_is_not_removed_in_the_round_that_picked_it(tmp_path, data, labels) -> None:
    """With agreement at p(label) >= 0.999999 no prediction of a briefly trained model counts as
    agreement, so removal would empty G in the opening round (it did, on CIFAR-10-5k at sym 50 %):
    the seed the model just picked stays, k members per label."""
    seedless = TrainingLabels(given=labels.given, clean=labels.clean, init_G=np.ones_like(labels.init_G))
    k = 3
    cell = make_cell(noise={"init": "all"}, method={"self_seed_per_class": k, "agreement_min_prob": 0.999999,
                                                    "label_correction": False})
    engine.run_warmup(cell, data, seedless, tmp_path / "w")
    seen: list[dict] = []
    with pytest.raises(Interrupted):
        engine.run_train(cell, data, seedless, tmp_path / "w" / engine.CHECKPOINT, tmp_path / "t",
                         on_epoch=record_then_stop(seen))
    opening = trace_frame(tmp_path / "t" / "epochs").query(f"epoch == {T_P}")
    in_G, label = opening["in_G"].to_numpy(), opening["label"].to_numpy()
    assert all(in_G[label == c].sum() >= k for c in range(K))


def test_a_kept_self_seed_stays_in_G_unrelabelled_all_run_and_through_a_resume(tmp_path, data, labels) -> None:
    """self_seed_keep: agreement at p >= 0.999999 admits nothing and would remove every member,
    and Eq. 7 at alpha 1 relabels every sample whose prediction differs; yet every round's G holds
    the whole seed under its given labels, also after the run is cut off and resumed."""
    seedless = TrainingLabels(given=labels.given, clean=labels.clean, init_G=np.ones_like(labels.init_G))
    cell = make_cell(noise={"init": "all"}, method={"self_seed_per_class": 3, "self_seed_keep": True,
                                                    "agreement_min_prob": 0.999999, "label_correction": True,
                                                    "lc_alpha": 1.0})
    engine.run_warmup(cell, data, seedless, tmp_path / "w")
    warm = tmp_path / "w" / engine.CHECKPOINT
    with pytest.raises(Interrupted):  # cut off after the opening round, then resumed
        engine.run_train(cell, data, seedless, warm, tmp_path / "t", on_epoch=record_then_stop([]))
    trainer = engine.run_train(cell, data, seedless, warm, tmp_path / "t")
    kept = trainer.kept
    assert kept is not None and kept.sum() == 3 * K
    traces = trace_frame(tmp_path / "t" / "epochs")
    assert traces["epoch"].nunique() >= 2
    for _, epoch in traces.groupby("epoch"):
        assert epoch["in_G"].to_numpy()[kept].all()
        np.testing.assert_array_equal(epoch["label"].to_numpy()[kept], labels.given[kept])
    assert (traces["label"] != traces["given_label"]).any()  # Eq. 7 did relabel samples outside the seed


def test_self_seed_keep_without_a_self_seed_is_refused() -> None:
    with pytest.raises(UserError, match="self_seed_keep keeps the seed"):
        make_cell(noise={"init": "all"}, method={"self_seed_keep": True})


def test_self_seed_is_refused_with_a_verified_seed_or_without_a_confidence_set() -> None:
    with pytest.raises(UserError, match="self_seed_per_class picks a seed for runs without one"):
        make_cell(method={"self_seed_per_class": 2})  # noise.init verified: the seed exists
    with pytest.raises(UserError, match="self_seed_per_class needs confidence_set"):
        make_cell(noise={"init": "all"}, method={"self_seed_per_class": 2, "lof": False, "confidence_set": False})


def test_extract_checkpoint_reads_the_split_it_is_given(cell, data, warm) -> None:
    on_train = engine.extract_checkpoint(cell, data, warm)
    on_test = engine.extract_checkpoint(cell, data, warm, data.tests["test"])
    assert len(on_train.logits) == N_TRAIN and len(on_test.logits) == N_TEST


def test_posterior_loss_weights_follow_each_round_even_where_G_stays_all_of_S(tmp_path, data, labels, warm) -> None:
    """method.loss_weights "posterior" on cross-entropy's switches (G = S after a round): the opening
    round sets each sample's weight to the posterior that its label is right under the warm-up
    model (T by the confident joint), the checkpoint carries them, and "none" leaves every
    weight at 1."""
    ce_switches = {"lof": False, "confidence_set": False, "removal": False, "contrastive": False, "mixup": False,
                   "label_correction": False}
    probs = engine.extract_checkpoint(make_cell(), data, warm).logits.softmax(1).numpy()
    k = data.num_classes
    posterior = selection.label_posterior(probs, labels.given, selection.confident_joint_transition(probs, labels.given, k))
    weights = {}
    verified = dataclasses.replace(labels, verified=True)  # keep_verified protects the seed
    for name, kind in (("weighted", "posterior"), ("plain", "none")):
        seen: list[dict] = []
        with pytest.raises(Interrupted):
            engine.run_train(make_cell(method={**ce_switches, "loss_weights": kind}), data, verified, warm,
                             tmp_path / name, on_epoch=record_then_stop(seen))
        state = load_checkpoint(tmp_path / name / engine.CHECKPOINT)
        weights[name] = state["loss_weight"].numpy()
        if kind == "posterior":  # its round ran Eq. 2-3 with neither switch: G = S
            assert state["in_G"].all()
    assert (weights["plain"] == 1).all()
    assert weights["weighted"].min() < 0.5  # the case needs labels the model doubts
    seed = labels.init_G  # the verified seed (keep_verified): its labels are right, full weight
    assert (weights["weighted"][seed] == 1).all() and (posterior[seed] < 0.99).any()
    np.testing.assert_allclose(weights["weighted"][~seed], posterior[~seed], atol=1e-3)  # extraction: last bits
    with pytest.raises(Interrupted):
        engine.run_train(make_cell(method={**ce_switches, "loss_weights": "posterior_per_class"}), data, labels, warm,
                         tmp_path / "per-class", on_epoch=record_then_stop([]))
    per_class = load_checkpoint(tmp_path / "per-class" / engine.CHECKPOINT)["loss_weight"].numpy()
    expected = selection.class_normalised(posterior, labels.given, k)  # no verified seed in `labels`
    np.testing.assert_allclose(per_class, expected, rtol=1e-2, atol=1e-3)
    assert abs(per_class[labels.given == 0].mean() - 1) < 1e-3 and not np.allclose(per_class, posterior, atol=0.05)


def test_each_step_weighs_its_samples_by_their_loss_weight_and_mixup_keeps_a_zero_weight_label_out(
        monkeypatch, data, labels) -> None:
    """The classification loss gets `loss_weight[pos]` for the drawn samples; under mixup each label
    of a mixed pair weighs in its own target, so a label of weight 0 puts no mass in any target
    (here every label 0 weighs 0 and every other label 1)."""
    seen = []
    real_loss = learner.soft_classification_loss

    def spy(logits, targets, kind, q, weights, total):
        seen.append((targets.detach().clone(), None if weights is None else weights.detach().clone()))
        return real_loss(logits, targets, kind, q, weights, total)

    monkeypatch.setattr(learner, "soft_classification_loss", spy)
    cell = make_cell(method={"loss_weights": "posterior"})
    trainer = Trainer(cell, data, labels, lr=0.0, momentum=0.0, weight_decay=0.0, key_encoder=False)
    trainer.include_all()
    trainer.set_loss_weights((labels.given != 0).astype(np.float32))
    with Progress(False, "", 0) as quiet:
        trainer.run_epoch(engine._train_transform(cell, data), lr=0.0, batch_size=8, mixup_alpha=1.0,
                          contrastive=False, seed_epoch=0, progress=quiet)
    assert seen and all(w is not None for _, w in seen)
    mixed = torch.cat([w for _, w in seen])
    assert ((mixed > 0) & (mixed < 1)).any()  # the case needs pairs of a weight-0 and a weight-1 label
    for targets, weights in seen:
        assert torch.all((targets * weights[:, None])[:, 0].abs() < 1e-6)  # label 0 carries no weight anywhere
        assert torch.allclose(targets.sum(1)[weights > 0], torch.ones(int((weights > 0).sum())))
    seen.clear()
    with Progress(False, "", 0) as quiet:  # without mixup the weights are exactly loss_weight of the drawn rows
        trainer.run_epoch(engine._train_transform(cell, data), lr=0.0, batch_size=8, mixup_alpha=0.0,
                          contrastive=False, seed_epoch=1, progress=quiet)
    drawn = torch.cat([t.argmax(1) for t, _ in seen])
    weights = torch.cat([w for _, w in seen])
    assert torch.equal(weights, (drawn != 0).float())  # a label-0 row weighs 0, every other row 1


def test_a_checkpoint_from_before_loss_weights_restores_every_weight_to_one(tmp_path, data, labels, warm) -> None:
    state = load_checkpoint(warm)
    state.pop("loss_weight", None)
    trainer = Trainer(make_cell(method={"loss_weights": "posterior"}), data, labels, lr=0.0, momentum=0.0,
                      weight_decay=0.0, key_encoder=True)
    trainer.loss_weight[:] = 0.5
    trainer.restore(state)
    assert (trainer.loss_weight == 1).all()


def test_epoch_order_with_outside_weights_draws_non_members_in_proportion_and_never_a_zero_weight() -> None:
    """method.outside_g_draws: members of G draw at weight 1, a non-member at its weight; all-zero
    weights outside G (before the first round) leave G's own shuffled passes."""
    in_G = np.zeros(300, dtype=bool)
    in_G[:100] = True
    outside = np.zeros(300, dtype=np.float32)
    outside[100:200] = 0.5  # 100 non-members at half a member's weight, 100 at 0
    outside[:100] = 0.0  # a member's own weight is ignored: members draw at 1
    labels = np.arange(300) % 3
    order = epoch_order(in_G, labels, iters=300, batch_size=40, class_balanced=False,
                        generator=torch.Generator().manual_seed(0), outside_weights=outside)
    assert len(order) == 12000 and not (order >= 200).any()
    share = np.mean(~in_G[order])
    assert 0.3 < share < 0.37  # expected 50 / 150 = 0.333 (sd 0.004 over 12000 draws)
    plain = epoch_order(in_G, labels, iters=5, batch_size=8, class_balanced=False,
                        generator=torch.Generator().manual_seed(0))
    none_yet = epoch_order(in_G, labels, iters=5, batch_size=8, class_balanced=False,
                           generator=torch.Generator().manual_seed(0), outside_weights=np.zeros(300))
    assert np.array_equal(plain, none_yet)


def test_outside_g_draws_set_each_rounds_posterior_and_keep_eq4_to_members_of_G(tmp_path, data, labels, warm) -> None:
    """method.outside_g_draws "posterior": the round after the warm-up sets each sample's draw weight to
    the posterior that its label is right (the checkpoint carries it); the next epoch's steps
    then draw non-members too, yet only members of G are queries' labels or keys in the queue."""
    probs = engine.extract_checkpoint(make_cell(), data, warm).logits.softmax(1).numpy()
    k = data.num_classes
    posterior = selection.label_posterior(probs, labels.given, selection.confident_joint_transition(probs, labels.given, k))
    cell = make_cell(method={"outside_g_draws": "posterior"}, optim={"iters_per_epoch": "S"})
    seen: list[dict] = []
    with pytest.raises(Interrupted):
        engine.run_train(cell, data, labels, warm, tmp_path / "soft", on_epoch=record_then_stop(seen))
    state = load_checkpoint(tmp_path / "soft" / engine.CHECKPOINT)
    draw = state["draw_weight"].numpy()
    np.testing.assert_allclose(draw, posterior, atol=1e-3)
    in_G = state["in_G"].numpy()
    assert (~in_G).any() and (draw[~in_G] > 0.01).sum() >= 8  # the case needs non-members that can be drawn
    trainer = Trainer(cell, data, labels, lr=0.01, momentum=0.9, weight_decay=0.0, key_encoder=True)
    trainer.restore(state)
    drawn: list[np.ndarray] = []
    real_step = trainer._step

    def spy(x, key_view, y, pos, *args, **kwargs):
        drawn.append(pos.numpy().copy())
        return real_step(x, key_view, y, pos, *args, **kwargs)

    enqueued: list[np.ndarray] = []
    real_enqueue = trainer.queue.enqueue

    def enqueue_spy(keys, labels, positions=None):
        enqueued.append(positions.cpu().numpy().copy())
        return real_enqueue(keys, labels, positions)

    trainer._step, trainer.queue.enqueue = spy, enqueue_spy
    with Progress(False, "", 0) as quiet:
        trainer.run_epoch(engine._train_transform(cell, data), lr=0.01, batch_size=8, mixup_alpha=1.0,
                          contrastive=True, seed_epoch=trainer.epoch, progress=quiet, iters=40)
    drawn_all = np.concatenate(drawn)
    assert (~in_G[drawn_all]).any()  # 320 draws with a non-member's mass >= 8 * 0.01 of ~|G|: certain
    queued = np.concatenate(enqueued)
    assert len(enqueued) == 40 and len(queued) and in_G[queued].all()  # every step's keys: members only


def test_lift_draws_only_labels_more_likely_right_than_wrong_by_their_margin(tmp_path, data, labels, warm) -> None:
    """method.outside_g_draws "lift": the round after the warm-up sets each draw weight to
    max(0, 2 P - 1) of the same posterior "posterior" uses; a label at even odds or worse is never drawn."""
    probs = engine.extract_checkpoint(make_cell(), data, warm).logits.softmax(1).numpy()
    k = data.num_classes
    posterior = selection.label_posterior(probs, labels.given, selection.confident_joint_transition(probs, labels.given, k))
    assert (posterior < 0.5).any() and ((posterior > 0.5) & (posterior < 1.0)).any()  # both sides of even odds
    cell = make_cell(method={"outside_g_draws": "lift"}, optim={"iters_per_epoch": "S"})
    with pytest.raises(Interrupted):
        engine.run_train(cell, data, labels, warm, tmp_path / "lift", on_epoch=record_then_stop([]))
    draw = load_checkpoint(tmp_path / "lift" / engine.CHECKPOINT)["draw_weight"].numpy()
    np.testing.assert_allclose(draw, np.clip(2 * posterior - 1, 0, 1), atol=2e-3)
    assert (draw[posterior < 0.499] == 0).all()


def test_outside_g_draws_needs_drawn_epochs_and_a_G_smaller_than_S() -> None:
    with pytest.raises(UserError, match="iters_per_epoch"):
        make_cell(method={"outside_g_draws": "posterior"})
    with pytest.raises(UserError, match="class_balanced"):
        make_cell(method={"outside_g_draws": "posterior"}, optim={"iters_per_epoch": "S", "class_balanced": True})
    with pytest.raises(UserError, match="count twice"):
        make_cell(method={"outside_g_draws": "posterior", "loss_weights": "posterior"}, optim={"iters_per_epoch": "S"})
    with pytest.raises(UserError, match="nothing outside G"):
        make_cell(method={"outside_g_draws": "posterior", "lof": False, "confidence_set": False},
                  optim={"iters_per_epoch": "S"})


def test_a_checkpoint_from_before_outside_g_draws_restores_every_draw_weight_to_zero(data, labels, warm) -> None:
    state = load_checkpoint(warm)
    state.pop("draw_weight", None)
    trainer = Trainer(make_cell(), data, labels, lr=0.0, momentum=0.0, weight_decay=0.0, key_encoder=True)
    trainer.draw_weight[:] = 0.5
    trainer.restore(state)
    assert (trainer.draw_weight == 0).all()


@pytest.mark.parametrize("channels_last", [False, True])
def test_label_issue_probabilities_average_each_image_with_its_mirror(data, warm, channels_last) -> None:
    """engine.train_probabilities: the softmax on each training image averaged with the softmax on
    the same image flipped left to right (the mirror extraction equals extracting flipped images),
    in either memory format (the flip acts on the logical width axis)."""
    cell = make_cell(runtime={"channels_last": channels_last})
    flipped = Split(labels=data.train.labels, index=data.train.index,
                    images=np.ascontiguousarray(data.train.images[:, :, ::-1]))
    plain = engine.extract_checkpoint(cell, data, warm)
    on_flipped = engine.extract_checkpoint(cell, data, warm, flipped)
    expected = (engine.probabilities(plain) + engine.probabilities(on_flipped)) / 2
    assert not np.allclose(engine.probabilities(plain), engine.probabilities(on_flipped), atol=1e-3)  # the case needs asymmetric images
    np.testing.assert_allclose(engine.train_probabilities(cell, data, warm), expected, atol=1e-5)
    np.testing.assert_allclose(engine.train_probabilities(cell, data, warm, plain), expected, atol=1e-5)


def test_eq4_under_outside_g_draws_masks_local_queries_and_gathered_keys_apart(monkeypatch, data, labels) -> None:
    """Under torchrun the keys are gathered from every rank and the queries are this rank's own:
    a stand-in for a second rank whose keys are all non-members shows that its keys never reach
    the queue while every local query (all members here) still counts."""
    cell = make_cell(method={"outside_g_draws": "posterior"}, optim={"iters_per_epoch": "S"})
    trainer = Trainer(cell, data, labels, lr=0.0, momentum=0.0, weight_decay=0.0, key_encoder=True)
    members, others = np.flatnonzero(trainer.in_G)[:6], np.flatnonzero(~trainer.in_G)[:6]
    assert len(members) == len(others) == 6
    other_rank = {}

    def gather(local: torch.Tensor) -> torch.Tensor:  # this rank's rows, then the other rank's
        if local.dtype == torch.int64 and local.ndim == 1 and torch.equal(local, torch.as_tensor(members)):
            return torch.cat([local, torch.as_tensor(others)])
        return torch.cat([local, other_rank.setdefault(tuple(local.shape), torch.randn_like(local) if local.is_floating_point() else local.clone())])

    monkeypatch.setattr(learner.distributed, "all_gather_rows", gather)
    enqueued = []
    real_enqueue = trainer.queue.enqueue
    monkeypatch.setattr(trainer.queue, "enqueue", lambda k, y, p=None: (enqueued.append(p.clone()), real_enqueue(k, y, p)))
    view = engine._train_transform(cell, data)
    batch = next(iter(trainer.place.batches(data.train, view, members, 6, shuffle=False)))
    (query_view, key_view), pos = batch
    query = torch.nn.functional.normalize(torch.randn(6, PARAMS["model"]["proj_dim"]), dim=1).requires_grad_()
    y = torch.as_tensor(trainer.labels)[pos]
    loss = trainer._contrastive(query, key_view, y, pos, 1.0, None)
    loss.backward()
    assert float(loss.detach()) > 0 and (query.grad.abs().sum(1) > 0).all()  # every local query (a member) counts
    assert len(enqueued) == 1 and set(enqueued[0].tolist()) == set(members.tolist())  # the other rank's non-members: dropped
