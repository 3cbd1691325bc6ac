"""Fuzzed bad inputs (hypothesis): every bad file a user can hand the pipeline ends in one line that
names the file (a `UserError`, which the CLI prints as `mtadcs: error: …` with exit status 2,
tests/test_cli.py), and leaves every output already written byte for byte as it was.

Each test builds a valid input, corrupts it one way per example, and runs the real reader or
stage. A corruption that happens to leave a valid file (say, a CSV cut at a line end that drops
nothing) may succeed; every corruption marked `must_fail` has to fail.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from pipeline.errors import UserError  # noqa: E402

N, K = 24, 4
FUZZ = settings(max_examples=30, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def assert_clean_error(err: UserError, path: Path) -> None:
    text = str(err)
    assert "\n" not in text, f"not one line: {text!r}"
    assert str(path) in text or path.name in text, f"{text!r} does not name {path}"


# -- label files (noise.kind: file) ---------------------------------------------------------------

def valid_labels() -> pd.DataFrame:
    return pd.DataFrame({"index": np.arange(N), "label": np.arange(N) % K})


TABLE_CORRUPTIONS = {
    # name: (corrupt the frame, must it fail?)
    "nan": (lambda f, i: f.astype({"label": float}).assign(label=lambda d: d["label"].where(d.index != i)), True),
    "negative": (lambda f, i: f.assign(label=np.where(f.index == i, -1, f["label"])), True),
    "out_of_range": (lambda f, i: f.assign(label=np.where(f.index == i, K + i, f["label"])), True),
    "fractional": (lambda f, i: f.astype({"label": float}).assign(
        label=lambda d: np.where(d.index == i, 1.5, d["label"])), True),
    "text": (lambda f, i: f.astype({"label": str}).assign(
        label=lambda d: np.where(d.index == i, "cat", d["label"])), True),
    "missing_index": (lambda f, i: f.drop(index=i), True),
    "duplicate_index": (lambda f, i: pd.concat([f, f.iloc[[i]]]), True),
    "unknown_index": (lambda f, i: f.assign(index=np.where(f.index == i, 10_000 + i, f["index"])), True),
    "wrong_column": (lambda f, i: f.rename(columns={"label": "lable"}), True),
}


def write_table(frame: pd.DataFrame, path: Path) -> None:
    if path.suffix == ".csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path, index=False)


@FUZZ
@given(corruption=st.sampled_from(sorted(TABLE_CORRUPTIONS)), row=st.integers(0, N - 1),
       suffix=st.sampled_from([".csv", ".parquet"]))
def test_a_corrupt_label_table_is_one_line_naming_it(tmp_path, corruption, row, suffix) -> None:
    from pipeline.data.noise import labels_from_file

    corrupt, must_fail = TABLE_CORRUPTIONS[corruption]
    path = tmp_path / f"labels-{corruption}-{row}{suffix}"
    write_table(corrupt(valid_labels(), row), path)
    with pytest.raises(UserError) as err:
        labels_from_file(path, key=None, index=np.arange(N), num_classes=K)
    assert must_fail
    assert_clean_error(err.value, path)


@FUZZ
@given(cut=st.floats(0.0, 0.98), suffix=st.sampled_from([".csv", ".parquet", ".pt"]))
def test_a_truncated_label_file_is_one_line_naming_it_or_still_valid(tmp_path, cut, suffix) -> None:
    from pipeline.data.noise import labels_from_file

    path = tmp_path / f"labels-{cut:.3f}{suffix}"
    if suffix == ".pt":
        torch.save({"noisy": torch.as_tensor(valid_labels()["label"].to_numpy())}, path)
    else:
        write_table(valid_labels(), path)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * cut)])
    try:
        labels = labels_from_file(path, key=None, index=np.arange(N), num_classes=K)
    except UserError as err:
        assert_clean_error(err, path)
    else:  # a cut that kept every row: the labels must be the originals
        assert (labels == valid_labels()["label"].to_numpy()).all()


@FUZZ
@given(shape=st.sampled_from(["2d", "short", "float", "key"]))
def test_a_pt_label_file_of_the_wrong_shape_or_key_is_one_line_naming_it(tmp_path, shape) -> None:
    from pipeline.data.noise import labels_from_file

    labels = torch.as_tensor(valid_labels()["label"].to_numpy())
    content = {"2d": {"noisy": labels.reshape(4, -1)}, "short": {"noisy": labels[: N // 2]},
               "float": {"noisy": labels.float() + 0.5}, "key": {"a": labels, "b": labels}}[shape]
    path = tmp_path / f"labels-{shape}.pt"
    torch.save(content, path)
    with pytest.raises(UserError) as err:
        labels_from_file(path, key=None, index=np.arange(N), num_classes=K)
    assert_clean_error(err.value, path)


# -- params.yaml ---------------------------------------------------------------------------------

PARAM_CORRUPTIONS = [
    {"noise": {"rate": "half"}},  # wrong type
    {"noise": {"rate": 1.5}},  # out of range
    {"noise": {"rtae": 0.2}},  # unknown key (typo)
    {"optim": {"lr": -0.1}},
    {"optim": {"epochs": 2.5}},
    {"model": {"arch": "resnet1000"}},
    {"method": {"lof_threshold": "high"}},
    {"runs": {"c": {"nosie": {"rate": 0.2}}}},  # a cell overriding a section that does not exist
    {"runs": {"c.1": {}}},  # a dotted cell name breaks DVC's param tracking
    {"runs": {"c": {"optim": {"batch_size": 0}}}},
    {"runs": {"c": ["not", "a", "mapping"]}},
    {"data": ["a", "list"]},
]


@FUZZ
@given(corruption=st.sampled_from(range(len(PARAM_CORRUPTIONS))))
def test_a_bad_params_file_is_one_line_naming_it(tmp_path, corruption) -> None:
    from pipeline.config import load_params

    params = {"data": {"dataset": "digits"}, "runs": {"c": {}}}
    for section, value in PARAM_CORRUPTIONS[corruption].items():
        params[section] = value if not isinstance(value, dict) or section == "runs" else {
            **params.get(section, {}), **value}
    path = tmp_path / f"params-{corruption}.yaml"
    path.write_text(yaml.safe_dump(params))
    with pytest.raises(UserError) as err:
        load_params(path)
    assert_clean_error(err.value, path)


@FUZZ
@given(cut=st.integers(1, 60))
def test_a_truncated_params_file_is_one_line_naming_it_or_still_valid(tmp_path, cut) -> None:
    from pipeline.config import load_params

    path = tmp_path / f"params-{cut}.yaml"
    text = yaml.safe_dump({"noise": {"rate": 0.4, "kind": "sym"}, "optim": {"lr": 0.02}, "runs": {"c": {}}})
    path.write_text(text[:cut])
    try:
        load_params(path)
    except UserError as err:
        assert_clean_error(err, path)


# -- npz datasets --------------------------------------------------------------------------------

def valid_npz() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {"x_train": rng.integers(0, 255, (N, 8, 8, 3), dtype=np.uint8), "y_train": np.arange(N) % K,
            "x_test": rng.integers(0, 255, (8, 8, 8, 3), dtype=np.uint8), "y_test": np.arange(8) % K}


NPZ_CORRUPTIONS = {
    "no_x_train": lambda a: {k: v for k, v in a.items() if k != "x_train"},
    "no_y_test": lambda a: {k: v for k, v in a.items() if k != "y_test"},
    "flat_images": lambda a: a | {"x_train": a["x_train"].reshape(N, -1)},
    "float_images": lambda a: a | {"x_train": a["x_train"].astype(np.float32) * 10},
    "short_labels": lambda a: a | {"y_train": a["y_train"][:-3]},
    "negative_label": lambda a: a | {"y_train": np.where(np.arange(N) == 0, -1, a["y_train"])},
    "float_labels": lambda a: a | {"y_train": a["y_train"] + 0.5},
    "object_array": lambda a: a | {"y_train": np.array([[1], [1, 2]] + [[0]] * (N - 2), dtype=object)},
    "duplicate_index": lambda a: a | {"train_index": np.zeros(N, dtype=np.int64)},
}


@FUZZ
@given(corruption=st.sampled_from(sorted(NPZ_CORRUPTIONS)))
def test_a_bad_npz_is_one_line_naming_it(tmp_path, corruption) -> None:
    from pipeline.data.datasets import load_dataset

    path = tmp_path / f"data-{corruption}.npz"
    buffer = io.BytesIO()
    np.savez(buffer, **NPZ_CORRUPTIONS[corruption](valid_npz()))
    path.write_bytes(buffer.getvalue())
    with pytest.raises(UserError) as err:
        load_dataset("npz", path=path, image_size=8)
    assert_clean_error(err.value, path)


# -- image folders -------------------------------------------------------------------------------

@FUZZ
@given(damage=st.sampled_from(["corrupt_png", "truncated_png", "empty_class", "no_test"]))
def test_a_damaged_image_folder_is_one_line_naming_what_is_wrong(tmp_path, damage) -> None:
    from pipeline.data.datasets import load_dataset
    from tests.fixtures import write_image_tree

    root = tmp_path / f"imgs-{damage}"
    write_image_tree(root, {"train": {"a": 3, "b": 3}, "test": {"a": 1, "b": 1}})
    (root / "train" / "a" / "notes.txt").write_text("not an image")  # ignored, like torchvision's ImageFolder
    bad = root / "train" / "b" / "0.png"
    if damage == "corrupt_png":
        bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    elif damage == "truncated_png":
        bad.write_bytes(bad.read_bytes()[:40])
    elif damage == "empty_class":
        (root / "train" / "c").mkdir()
        bad = root / "train"
    else:
        for p in (root / "test").rglob("*.png"):
            p.unlink()
        bad = root / "test"
    with pytest.raises(UserError) as err:
        data = load_dataset("folder", path=root, image_size=8)
        for i in range(len(data.train)):  # decoding happens when training reads an image
            data.train.image_tensor(i)
    assert_clean_error(err.value, bad)


# -- checkpoints ---------------------------------------------------------------------------------

@FUZZ
@given(cut=st.floats(0.0, 0.95))
def test_a_truncated_checkpoint_is_one_line_naming_it(tmp_path, cut) -> None:
    from pipeline.method.trainer import load_checkpoint

    path = tmp_path / f"checkpoint-{cut:.3f}.pt"
    torch.save({"model": {"w": torch.zeros(64, 64)}, "epoch": 3}, path)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * cut)])
    with pytest.raises(UserError) as err:
        load_checkpoint(path)
    assert_clean_error(err.value, path)


# -- the stage level: nothing already written changes ----------------------------------------------

@pytest.fixture(scope="module")
def labelled_workspace(tmp_path_factory) -> Path:
    """A workspace whose noise stage ran once from a good label file (noise.kind: file)."""
    from stages import noise
    from stages.common import context

    root = tmp_path_factory.mktemp("ws")
    np.savez(root / "data.npz", **valid_npz())
    write_table(valid_labels(), root / "given.csv")
    params = {"data": {"dataset": "npz", "path": "data.npz", "image_size": 8},
              "noise": {"kind": "file", "file": "given.csv"}, "tracking": {"enabled": False}, "runs": {"c": {}}}
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    noise.run(context(root, "params.yaml", "c"))
    return root


@FUZZ
@given(corruption=st.sampled_from(sorted(TABLE_CORRUPTIONS)), row=st.integers(0, N - 1))
def test_a_bad_label_file_leaves_the_label_file_already_written_untouched(labelled_workspace, corruption, row) -> None:
    from stages import noise
    from stages.common import context

    root = labelled_workspace
    before = digests(root / "data")
    corrupt, _ = TABLE_CORRUPTIONS[corruption]
    write_table(corrupt(valid_labels(), row), root / "given.csv")
    try:
        with pytest.raises(UserError) as err:
            noise.run(context(root, "params.yaml", "c"))
        assert_clean_error(err.value, root / "given.csv")
        assert digests(root / "data") == before
    finally:
        write_table(valid_labels(), root / "given.csv")


def test_the_cli_turns_a_bad_input_into_exit_2_with_outputs_unchanged(labelled_workspace) -> None:
    import subprocess
    import sys

    root = labelled_workspace
    before = digests(root / "data")
    (root / "given.csv").write_text("index,label\n0,1\n1,oops\n")
    try:
        out = subprocess.run([sys.executable, "-m", "stages.cli", "noise", "--cell", "c", "--root", str(root)],
                             capture_output=True, text=True)
    finally:
        write_table(valid_labels(), root / "given.csv")
    errors = [line for line in out.stderr.splitlines() if "error" in line]
    assert out.returncode == 2 and len(errors) == 1 and "given.csv" in errors[0] and "Traceback" not in out.stderr
    assert digests(root / "data") == before
