"""pipeline.data: every dataset kind on tiny fixtures in the real on-disk formats."""

from __future__ import annotations

import logging
import tarfile
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.datasets.cifar as tv_cifar

from pipeline.data.datasets import (
    CIFAR_STATS,
    DATASET_KINDS,
    IMAGENET_MEAN,
    Split,
    SplitDataset,
    describe,
    load_dataset,
)
from pipeline.errors import UserError
from tests.fixtures import (
    CIFAR10_NAMES,
    SHARED_DATA,
    write_cifar10,
    write_cifar100,
    write_image,
    write_image_tree,
    write_webvision,
)


def _hwc(rows: np.ndarray) -> np.ndarray:
    """CIFAR's planar (N, 3072) rows as (N, 32, 32, 3) images."""
    return rows.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)


# ---------------------------------------------------------------- CIFAR


@pytest.fixture
def skip_md5(monkeypatch: pytest.MonkeyPatch) -> None:
    """torchvision checks the md5 of every CIFAR file, which a fixture cannot match.

    `_check_integrity` covers the batch files and the module-level `check_integrity`
    the meta file (CIFAR100 inherits both from CIFAR10).
    """
    monkeypatch.setattr(tv_cifar.CIFAR10, "_check_integrity", lambda self: True)
    monkeypatch.setattr(tv_cifar, "check_integrity", lambda *args, **kwargs: True)


@pytest.mark.usefixtures("skip_md5")
def test_cifar10_reads_the_real_pickle_layout(tmp_path: Path) -> None:
    truth = write_cifar10(tmp_path, per_batch=4)
    ds = load_dataset("cifar10", root=tmp_path, download=False)
    assert (ds.name, ds.num_classes, ds.image_size) == ("cifar10", 10, 32)
    assert ds.class_names == CIFAR10_NAMES
    assert (ds.mean, ds.std) == CIFAR_STATS["cifar10"]
    assert list(ds.tests) == ["test"]
    np.testing.assert_array_equal(ds.train.labels, truth["train_labels"])
    np.testing.assert_array_equal(ds.tests["test"].labels, truth["test_labels"])
    np.testing.assert_array_equal(ds.train.index, np.arange(20))  # 5 batches x 4, standard order
    np.testing.assert_array_equal(ds.train.images, _hwc(truth["train_data"]))
    assert ds.train.labels.dtype == np.int64 and ds.train.index.dtype == np.int64
    # image_tensor is CHW: channel 0 is the first 1024 values of the row (red plane)
    first = ds.train.image_tensor(5)
    assert first.dtype == torch.uint8 and first.shape == (3, 32, 32)
    np.testing.assert_array_equal(first[0].flatten().numpy(), truth["train_data"][5, :1024])


@pytest.mark.usefixtures("skip_md5")
def test_cifar100_uses_fine_labels(tmp_path: Path) -> None:
    truth = write_cifar100(tmp_path, n_train=8, n_test=4)
    ds = load_dataset("cifar100", root=tmp_path, download=False)
    assert ds.num_classes == 100 and ds.class_names[:2] == ["fine00", "fine01"]
    assert (ds.mean, ds.std) == CIFAR_STATS["cifar100"]
    np.testing.assert_array_equal(ds.train.labels, truth["train_labels"])
    np.testing.assert_array_equal(ds.tests["test"].images, _hwc(truth["test_data"]))


def test_cifar_offline_without_files_names_the_archive(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"cifar-10-python\.tar\.gz .*cs\.toronto\.edu") as err:
        load_dataset("cifar10", root=tmp_path, download=False)
    assert str(tmp_path / "cifar-10-batches-py") in str(err.value)
    assert "\n" not in str(err.value)


def test_cifar_failed_download_is_a_user_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_network(*args: object, **kwargs: object) -> None:
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(tv_cifar, "download_and_extract_archive", no_network)
    with pytest.raises(UserError, match=r"could not be downloaded \(URLError.*cifar-100-python\.tar\.gz"):
        load_dataset("cifar100", root=tmp_path, download=True)


@pytest.mark.usefixtures("skip_md5")
def test_cifar_hand_placed_archive_is_extracted_without_download(tmp_path: Path) -> None:
    staging = tmp_path / "staging"
    truth = write_cifar10(staging, per_batch=2)
    root = tmp_path / "raw"
    root.mkdir()
    with tarfile.open(root / "cifar-10-python.tar.gz", "w:gz") as tar:
        tar.add(staging / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    ds = load_dataset("cifar10", root=root, download=False)
    np.testing.assert_array_equal(ds.train.labels, truth["train_labels"])


# ---------------------------------------------------------------- digits


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def test_digits_is_32px_rgb_with_a_stratified_split(digits) -> None:
    from sklearn.datasets import load_digits

    target = load_digits().target
    train, test = digits.train, digits.tests["test"]
    assert (digits.num_classes, digits.image_size, len(train), len(test)) == (10, 32, 1437, 360)
    assert train.images.shape == (1437, 32, 32, 3) and train.images.dtype == np.uint8
    assert train.images.max() == 255 and train.images.min() == 0
    # index = row of load_digits; the two splits partition the rows and keep the labels
    assert sorted(np.concatenate([train.index, test.index]).tolist()) == list(range(1797))
    np.testing.assert_array_equal(test.labels, target[test.index])
    assert np.all(np.diff(train.index) > 0)
    # stratified: every class holds ~20 % of its rows in test
    share = np.bincount(test.labels, minlength=10) / np.bincount(target, minlength=10)
    assert np.all(np.abs(share - 0.2) < 0.02)
    # grey images: identical channels; stats computed, not defaults
    assert np.array_equal(train.images[..., 0], train.images[..., 2])
    assert digits.mean[0] == digits.mean[1] and 0.2 < digits.mean[0] < 0.4


def test_digits_split_is_deterministic(digits) -> None:
    again = load_dataset("digits")
    np.testing.assert_array_equal(again.train.index, digits.train.index)
    np.testing.assert_array_equal(again.tests["test"].images, digits.tests["test"].images)


def test_fixed_kinds_reject_a_different_class_count() -> None:
    with pytest.raises(UserError, match="digits has 10 classes, not 12"):
        load_dataset("digits", num_classes=12)


def test_digits_at_16px_are_the_32px_split_at_a_quarter_of_the_pixels(digits) -> None:
    small = load_dataset("digits", image_size=16)
    assert small.image_size == 16 and small.train.images.shape[1:] == (16, 16, 3)
    np.testing.assert_array_equal(small.train.index, digits.train.index)
    np.testing.assert_array_equal(small.train.labels, digits.train.labels)


def test_unknown_kind_lists_the_choices() -> None:
    with pytest.raises(UserError, match="unknown dataset kind 'mnist'.*webvision50"):
        load_dataset("mnist")
    assert DATASET_KINDS == ("cifar10", "cifar100", "digits", "npz", "folder", "webvision50")


# ---------------------------------------------------------------- npz


def _npz(path: Path, **overrides: object) -> Path:
    rng = np.random.default_rng(0)
    arrays = {
        "x_train": rng.integers(0, 256, (6, 4, 4, 3), dtype=np.uint8),
        "y_train": np.array([0, 1, 2, 0, 1, 2]),
        "x_test": rng.integers(0, 256, (3, 4, 4, 3), dtype=np.uint8),
        "y_test": np.array([2, 1, 0]),
    }
    arrays.update(overrides)
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    return path


def test_npz_rgb_with_ids_and_names(tmp_path: Path) -> None:
    file = _npz(
        tmp_path / "d.npz",
        train_index=np.array([10, 11, 12, 20, 21, 22]),
        class_names=np.array(["a", "b", "c", "d"]),
    )
    ds = load_dataset("npz", path=file)
    assert (ds.num_classes, ds.class_names, ds.image_size) == (4, ["a", "b", "c", "d"], 4)
    np.testing.assert_array_equal(ds.train.index, [10, 11, 12, 20, 21, 22])
    np.testing.assert_array_equal(ds.tests["test"].index, [0, 1, 2])  # no test_index: rows
    # mean/std are the train images' own per-channel stats
    np.testing.assert_allclose(ds.mean, np.load(file)["x_train"].reshape(-1, 3).mean(0) / 255, atol=1e-4)
    with pytest.raises(UserError, match="npz has 4px images, not 32"):
        load_dataset("npz", path=file, image_size=32)


def test_npz_grayscale_becomes_rgb_and_num_classes_defaults_to_max_plus_one(tmp_path: Path) -> None:
    gray = np.arange(6 * 4 * 4, dtype=np.uint8).reshape(6, 4, 4)
    file = _npz(tmp_path / "g.npz", x_train=gray, x_test=gray[:3, :, :, None])
    ds = load_dataset("npz", path=file)
    assert ds.num_classes == 3 and ds.class_names == ["0", "1", "2"]
    assert ds.train.images.shape == (6, 4, 4, 3) and ds.tests["test"].images.shape == (3, 4, 4, 3)
    np.testing.assert_array_equal(ds.train.image_tensor(1)[2].numpy(), gray[1])


@pytest.mark.parametrize(
    ("overrides", "num_classes", "pattern"),
    [
        ({"y_test": None}, None, r"missing array 'y_test'"),
        ({"y_train": np.array([0, 1, -1, 0, 1, 2])}, None, r"y_train: row 2 has label -1"),
        ({"y_test": np.array([0, 5, 1])}, 3, r"y_test: row 1 has label 5, outside 0\.\.2"),
        (
            {"y_train": np.array([0, 1, 2, 0])},
            None,
            r"y_train has 4 labels but x_train has 6 images \(first unmatched row 4\)",
        ),
        ({"x_train": np.zeros((6, 4, 4, 3), np.float32)}, None, r"x_train has dtype float32"),
        ({"train_index": np.array([0, 1, 2, 2, 3, 4])}, None, r"train_index repeats the id at row 2"),
    ],
)
def test_npz_errors_name_file_array_and_row(
    tmp_path: Path, overrides: dict, num_classes: int | None, pattern: str
) -> None:
    file = _npz(tmp_path / "bad.npz", **overrides)
    with pytest.raises(UserError, match=pattern) as err:
        load_dataset("npz", path=file, num_classes=num_classes)
    assert str(err.value).startswith(str(file))


def test_npz_missing_file_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"nope\.npz: npz file not found"):
        load_dataset("npz", path=tmp_path / "nope.npz")
    with pytest.raises(UserError, match="needs a path"):
        load_dataset("npz")


@pytest.mark.shared_data
def test_npz_on_the_real_cifar10_subset() -> None:
    file = SHARED_DATA / "cifar10_subset.npz"
    if not file.is_file():
        pytest.skip(f"{file} absent (real CIFAR-10-5k subset, see shared/data/README.md)")
    ds = load_dataset("npz", path=file)
    assert (len(ds.train), len(ds.tests["test"]), ds.num_classes) == (5170, 1017, 10)
    # train_index holds positions in the 50,000-image order: batch 2 starts at 10000
    assert ds.train.index[1101] == 1101 and ds.train.index[1102] == 10000
    assert ds.train.index.max() < 50000 and len(np.unique(ds.train.index)) == 5170
    # the real data's own stats are close to the standard CIFAR-10 mean
    np.testing.assert_allclose(ds.mean, CIFAR_STATS["cifar10"][0], atol=0.01)


# ---------------------------------------------------------------- folder / CSV


def test_folder_tree_sorted_classes_and_decoding(tmp_path: Path) -> None:
    write_image_tree(tmp_path, {"train": {"dog": 2, "cat": 3}, "test": {"cat": 1, "dog": 1}})
    ds = load_dataset("folder", path=tmp_path)
    assert (ds.class_names, ds.num_classes, ds.image_size, ds.mean) == (["cat", "dog"], 2, 32, IMAGENET_MEAN)
    np.testing.assert_array_equal(ds.train.labels, [0, 0, 0, 1, 1])
    assert all(Path(p).is_absolute() for p in ds.train.paths)
    img = ds.train.image_tensor(0)
    assert img.dtype == torch.uint8 and img.shape == (3, 8, 8)  # native size; transforms resize
    assert load_dataset("folder", path=tmp_path, image_size=64).image_size == 64


def test_folder_tree_errors(tmp_path: Path) -> None:
    write_image_tree(tmp_path, {"train": {"cat": 1}, "test": {"cat": 1, "cow": 1}})
    with pytest.raises(UserError, match=r"test: class folder 'cow' has no train/ counterpart"):
        load_dataset("folder", path=tmp_path)
    write_image_tree(tmp_path / "only_train", {"train": {"cat": 1}})
    with pytest.raises(UserError, match=r"no test/ folder"):
        load_dataset("folder", path=tmp_path / "only_train")
    with pytest.raises(UserError, match="not found"):
        load_dataset("folder", path=tmp_path / "missing")


def test_folder_csv_with_class_names(tmp_path: Path) -> None:
    for name in ("a.png", "b.jpg", "sub/c.png", "d.png"):
        write_image(tmp_path / name, (1, 2, 3))
    csv = tmp_path / "images.csv"
    csv.write_text(
        "path,label,split\na.png,zebra,train\nb.jpg,ant,train\nsub/c.png,zebra,test\nd.png,ant,train\n"
    )
    ds = load_dataset("folder", path=csv, image_size=48)
    assert (ds.class_names, ds.image_size) == (["ant", "zebra"], 48)
    np.testing.assert_array_equal(ds.train.labels, [1, 0, 0])
    np.testing.assert_array_equal(ds.train.index, [0, 1, 3])  # CSV data rows
    assert ds.tests["test"].paths == [str(tmp_path.resolve() / "sub" / "c.png")]
    assert ds.train.image_tensor(1).shape == (3, 8, 8)


def test_folder_csv_integer_labels_and_errors(tmp_path: Path) -> None:
    write_image(tmp_path / "a.png", (1, 2, 3))
    csv = tmp_path / "l.csv"
    csv.write_text("path,label,split\na.png,3,train\na.png,0,test\n")
    assert load_dataset("folder", path=csv).num_classes == 4
    with pytest.raises(UserError, match=r"l\.csv: line 2 has label 3, outside 0\.\.2"):
        load_dataset("folder", path=csv, num_classes=3)
    csv.write_text("path,label,split\na.png,0,train\ngone.png,1,test\n")
    with pytest.raises(UserError, match=r"l\.csv: line 3: image .*gone\.png does not exist"):
        load_dataset("folder", path=csv)
    csv.write_text("path,label,split\na.png,0,val\n")
    with pytest.raises(UserError, match=r"line 2: split is 'val'"):
        load_dataset("folder", path=csv)
    csv.write_text("file,label,split\n")
    with pytest.raises(UserError, match=r"missing column 'path'"):
        load_dataset("folder", path=csv)
    csv.write_text("path,label,split\na.png,cat,train\na.png,dog,test\n")
    with pytest.raises(UserError, match=r"line 3: label 'dog' is not a class of any train row"):
        load_dataset("folder", path=csv)


def test_corrupt_image_is_a_user_error_naming_it(tmp_path: Path) -> None:
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not a jpeg")
    split = Split(labels=np.array([0]), index=np.array([0]), paths=[str(bad)])
    with pytest.raises(UserError, match=r"broken\.jpg: cannot decode image"):
        split.image_tensor(0)


# ---------------------------------------------------------------- WebVision-50


def test_webvision_official_layout(tmp_path: Path) -> None:
    lists = write_webvision(tmp_path / "webvision")
    ds = load_dataset("webvision50", path=tmp_path / "webvision", num_classes=2)
    assert (ds.name, ds.num_classes, ds.image_size) == ("webvision50", 2, 224)
    assert ds.class_names == ["tench", "goldfish"]
    assert list(ds.tests) == ["webvision_val", "ilsvrc12_val"]
    # train keeps labels < 2; index is the line of the full Google file list
    np.testing.assert_array_equal(ds.train.index, [0, 1, 4, 5])
    np.testing.assert_array_equal(ds.train.labels, [0, 1, 0, 1])
    assert ds.train.paths[2].endswith(lists["train"][4].split()[0])
    val = ds.tests["webvision_val"]
    np.testing.assert_array_equal(val.labels, [1, 0])  # lines 0 (label 1) and 3 (label 0)
    assert val.paths[0].endswith("val_images_256/val000001.jpg")
    # ILSVRC12 val: only the first 2 wnids, mapped through synsets.txt; grayscale JPEG -> RGB
    ilsvrc = ds.tests["ilsvrc12_val"]
    np.testing.assert_array_equal(ilsvrc.labels, [0, 1, 1])
    assert ilsvrc.image_tensor(0).shape == (3, 8, 8)
    assert describe(ds)["splits"] == {"train": 4, "webvision_val": 2, "ilsvrc12_val": 3}


def test_webvision_without_ilsvrc_warns_and_defaults_to_50(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write_webvision(tmp_path / "webvision", ilsvrc=False)
    with caplog.at_level(logging.WARNING, logger="pipeline.data"):
        with pytest.raises(UserError, match=r"lists 4 classes, cannot take the first 50"):
            load_dataset("webvision50", root=tmp_path)  # default path root/webvision, 50 classes
        ds = load_dataset("webvision50", path=tmp_path / "webvision", num_classes=4)
    assert list(ds.tests) == ["webvision_val"] and len(ds.train) == 8
    assert "ilsvrc12_val left out" in caplog.text


def test_webvision_ilsvrc_root_override(tmp_path: Path) -> None:
    write_webvision(tmp_path / "webvision")
    moved = tmp_path / "elsewhere"
    (tmp_path / "ILSVRC2012" / "val").rename(moved)
    ds = load_dataset("webvision50", path=tmp_path / "webvision", num_classes=3, ilsvrc_root=moved)
    assert len(ds.tests["ilsvrc12_val"]) == 1 + 2 + 3


@pytest.mark.parametrize("missing", ["synsets.txt", "val_filelist.txt", "train_filelist_google.txt"])
def test_webvision_missing_info_file_is_named(tmp_path: Path, missing: str) -> None:
    write_webvision(tmp_path / "wv", ilsvrc=False)
    (tmp_path / "wv" / "info" / missing).unlink()
    with pytest.raises(UserError, match=rf"info/{missing}: missing"):
        load_dataset("webvision50", path=tmp_path / "wv", num_classes=2)


def test_webvision_missing_image_names_list_and_line(tmp_path: Path) -> None:
    lists = write_webvision(tmp_path / "wv", ilsvrc=False)
    (tmp_path / "wv" / lists["train"][1].split()[0]).unlink()
    with pytest.raises(UserError, match=r"train_filelist_google\.txt: line 2: image .* does not exist"):
        load_dataset("webvision50", path=tmp_path / "wv", num_classes=2)


# ---------------------------------------------------------------- SplitDataset / describe


def test_split_dataset_returns_chw_uint8_and_positions() -> None:
    images = np.arange(5 * 2 * 3 * 3, dtype=np.uint8).reshape(5, 2, 3, 3)
    split = Split(labels=np.zeros(5, np.int64), index=np.arange(5), images=images)
    full = SplitDataset(split)
    assert len(full) == 5
    img, pos = full[3]
    assert pos == 3 and img.dtype == torch.uint8 and img.shape == (3, 2, 3)
    np.testing.assert_array_equal(img.permute(1, 2, 0).numpy(), images[3])
    img[:] = 0  # a copy: the split's array is untouched
    assert images[3].any()

    subset = SplitDataset(split, transform=lambda t: t.float() / 255, positions=np.array([4, 1]))
    assert len(subset) == 2 and subset[0][1] == 4 and subset[1][1] == 1
    assert subset[0][0].dtype == torch.float32
    batch_images, batch_pos = next(iter(torch.utils.data.DataLoader(subset, batch_size=2)))
    assert batch_images.shape == (2, 3, 2, 3) and batch_pos.tolist() == [4, 1]


def test_describe_counts_every_split(digits) -> None:
    assert describe(digits) == {
        "name": "digits",
        "num_classes": 10,
        "image_size": 32,
        "splits": {"train": 1437, "test": 360},
    }
