"""Tests for pipeline.noise: noise injection, label files from users/CIFAR-N, the label file."""

from __future__ import annotations

import logging
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from pipeline.data import noise
from pipeline.data.noise import (
    CIFAR10_ASYM_MAP,
    CIFAR100_COARSE,
    LabelFile,
    asymmetric_noise,
    build_label_table,
    initial_confidence_mask,
    labels_from_file,
    make_noisy_labels,
    read_label_file,
    realised_rate,
    symmetric_noise,
    write_label_file,
)
from pipeline.errors import UserError

# The CIFAR-100 super-classes as listed on the CIFAR page, by fine-class name; written
# independently of CIFAR100_COARSE so that a slip in either shows up.
CIFAR100_FINE_NAMES = (
    "apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus "
    "butterfly camel can castle caterpillar cattle chair chimpanzee clock cloud cockroach couch "
    "crab crocodile cup dinosaur dolphin elephant flatfish forest fox girl hamster house kangaroo "
    "keyboard lamp lawn_mower leopard lion lizard lobster man maple_tree motorcycle mountain mouse "
    "mushroom oak_tree orange orchid otter palm_tree pear pickup_truck pine_tree plain plate poppy "
    "porcupine possum rabbit raccoon ray road rocket rose sea seal shark shrew skunk skyscraper "
    "snail snake spider squirrel streetcar sunflower sweet_pepper table tank telephone television "
    "tiger tractor train trout tulip turtle wardrobe whale willow_tree wolf woman worm"
).split()
CIFAR100_SUPERCLASSES = {  # in coarse-id order (alphabetical coarse_label_names)
    "aquatic_mammals": "beaver dolphin otter seal whale",
    "fish": "aquarium_fish flatfish ray shark trout",
    "flowers": "orchid poppy rose sunflower tulip",
    "food_containers": "bottle bowl can cup plate",
    "fruit_and_vegetables": "apple mushroom orange pear sweet_pepper",
    "household_electrical_devices": "clock keyboard lamp telephone television",
    "household_furniture": "bed chair couch table wardrobe",
    "insects": "bee beetle butterfly caterpillar cockroach",
    "large_carnivores": "bear leopard lion tiger wolf",
    "large_man-made_outdoor_things": "bridge castle house road skyscraper",
    "large_natural_outdoor_scenes": "cloud forest mountain plain sea",
    "large_omnivores_and_herbivores": "camel cattle chimpanzee elephant kangaroo",
    "medium_mammals": "fox porcupine possum raccoon skunk",
    "non-insect_invertebrates": "crab lobster snail spider worm",
    "people": "baby boy girl man woman",
    "reptiles": "crocodile dinosaur lizard snake turtle",
    "small_mammals": "hamster mouse rabbit shrew squirrel",
    "trees": "maple_tree oak_tree palm_tree pine_tree willow_tree",
    "vehicles_1": "bicycle bus motorcycle pickup_truck train",
    "vehicles_2": "lawn_mower rocket streetcar tank tractor",
}


def balanced_labels(num_classes: int, per_class: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).permutation(np.repeat(np.arange(num_classes), per_class))


# --------------------------------------------------------------------------- tables


def test_cifar100_coarse_has_20_superclasses_of_5():
    assert CIFAR100_COARSE.shape == (100,)
    assert np.array_equal(np.bincount(CIFAR100_COARSE, minlength=20), np.full(20, 5))


def test_cifar100_coarse_matches_named_superclasses():
    assert len(CIFAR100_FINE_NAMES) == 100 and CIFAR100_FINE_NAMES == sorted(CIFAR100_FINE_NAMES)
    for coarse_id, members in enumerate(CIFAR100_SUPERCLASSES.values()):
        fine_ids = sorted(CIFAR100_FINE_NAMES.index(name) for name in members.split())
        assert list(np.flatnonzero(CIFAR100_COARSE == coarse_id)) == fine_ids, coarse_id


def test_cifar10_map_is_the_sel_cl_map():
    assert CIFAR10_ASYM_MAP == {9: 1, 2: 0, 4: 7, 3: 5, 5: 3}


# --------------------------------------------------------------------------- simulated noise


@pytest.mark.parametrize("rate", [0.2, 0.5, 0.8])
def test_symmetric_rates_both_conventions(rate):
    clean = balanced_labels(10, 1000)
    rng = np.random.default_rng(0)
    anyc = symmetric_noise(clean, 10, rate, "any", rng)
    other = symmetric_noise(clean, 10, rate, "other", rng)
    assert abs(realised_rate(clean, anyc) - rate * 9 / 10) < 0.01
    assert abs(realised_rate(clean, other) - rate) < 1e-4  # exact up to rounding
    assert anyc.min() >= 0 and anyc.max() < 10 and anyc.dtype == np.int64


def test_symmetric_touches_exactly_round_rate_n_samples():
    clean = balanced_labels(10, 100)
    # 'other' changes every chosen sample, so the changed count is the chosen count.
    assert np.sum(symmetric_noise(clean, 10, 0.333, "other", np.random.default_rng(1)) != clean) == 333
    assert np.array_equal(symmetric_noise(clean, 10, 0.0, "any", np.random.default_rng(1)), clean)


def test_symmetric_other_draws_all_other_classes_uniformly():
    clean = np.zeros(9000, dtype=np.int64)
    noisy = symmetric_noise(clean, 10, 1.0, "other", np.random.default_rng(0))
    counts = np.bincount(noisy, minlength=10)
    assert counts[0] == 0 and counts[1:].min() > 850 and counts[1:].max() < 1150


def test_asym_cifar10_touches_only_source_classes_and_maps_correctly():
    clean = balanced_labels(10, 1000)
    noisy = asymmetric_noise(clean, 10, 0.4, "cifar10", np.random.default_rng(0))
    changed = noisy != clean
    assert set(np.unique(clean[changed])) == set(CIFAR10_ASYM_MAP)
    for src, dst in CIFAR10_ASYM_MAP.items():
        in_src = clean == src
        assert np.all(np.isin(noisy[in_src], [src, dst]))
        assert np.sum(changed & in_src) == 400  # exact per-class count
    assert abs(realised_rate(clean, noisy) - 0.2) < 1e-9


def test_asym_cifar100_stays_within_superclass():
    clean = balanced_labels(100, 100)
    noisy = asymmetric_noise(clean, 100, 0.4, "cifar100", np.random.default_rng(0))
    changed = noisy != clean
    assert abs(changed.mean() - 0.4) < 1e-9
    assert np.array_equal(CIFAR100_COARSE[noisy], CIFAR100_COARSE[clean])
    # "next within the super-class": each class goes to one fixed class, the next by fine id.
    for c in (0, 4, 99):
        members = list(np.flatnonzero(CIFAR100_COARSE == CIFAR100_COARSE[c]))
        expected = members[(members.index(c) + 1) % 5]
        assert set(noisy[changed & (clean == c)]) == {expected}


def test_asym_next_is_pair_flip():
    clean = balanced_labels(7, 100)
    noisy = asymmetric_noise(clean, 7, 0.3, "next", np.random.default_rng(0))
    changed = noisy != clean
    assert np.array_equal(noisy[changed], (clean[changed] + 1) % 7)
    assert abs(changed.mean() - 0.3) < 1e-9


def test_asym_map_needs_matching_class_count():
    with pytest.raises(UserError, match="noise.asym_map 'cifar10' needs 10 classes"):
        asymmetric_noise(np.zeros(5, dtype=np.int64), 100, 0.4, "cifar10", np.random.default_rng(0))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"kind": "bogus"}, "noise.kind must be one of"),
        ({"kind": "sym", "rate": 1.5}, r"rate must lie in \[0, 1\]"),
        ({"kind": "sym", "rate": 0.2, "convention": "all"}, "sym_convention must be one of"),
        ({"kind": "asym", "rate": 0.2, "asym_map": "pairs"}, "asym_map must be one of"),
        ({"kind": "file"}, "needs noise.file"),
    ],
)
def test_make_noisy_labels_rejects_bad_settings(kwargs, match):
    with pytest.raises(UserError, match=match):
        make_noisy_labels(balanced_labels(10, 5), 10, **kwargs)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"kind": "sym", "rate": 0.5, "convention": "any"},
        {"kind": "sym", "rate": 0.5, "convention": "other"},
        {"kind": "asym", "rate": 0.4, "asym_map": "cifar10"},
    ],
)
def test_make_noisy_labels_is_deterministic_in_seed(kwargs):
    clean = balanced_labels(10, 200)
    first = make_noisy_labels(clean, 10, seed=3, **kwargs)
    assert np.array_equal(first, make_noisy_labels(clean, 10, seed=3, **kwargs))
    assert not np.array_equal(first, make_noisy_labels(clean, 10, seed=4, **kwargs))
    assert np.array_equal(clean, balanced_labels(10, 200))  # input untouched


def test_make_noisy_labels_none_returns_clean():
    clean = balanced_labels(10, 20)
    out = make_noisy_labels(clean, 10, kind="none", rate=0.9)
    assert np.array_equal(out, clean) and out is not clean


def test_make_noisy_labels_file_uses_index(tmp_path):
    path = tmp_path / "labels.csv"
    pd.DataFrame({"index": [2, 0, 1, 3], "label": [5, 6, 7, 8]}).to_csv(path, index=False)
    out = make_noisy_labels(None, 10, kind="file", file=path, index=np.array([3, 0]))
    assert out.tolist() == [8, 6]
    assert make_noisy_labels(np.zeros(4, dtype=np.int64), 10, kind="file", file=path).tolist() == [6, 7, 5, 8]


# --------------------------------------------------------------------------- initial confidence set


def test_initial_mask_simulated_picks_correct_samples_per_class():
    clean = balanced_labels(10, 100)
    noisy = make_noisy_labels(clean, 10, kind="sym", rate=0.5, convention="other", seed=0)
    mask = initial_confidence_mask(noisy, clean, 10, init_per_class=20, seeded=True, seed=0)
    assert mask.dtype == bool and mask.sum() == 200
    assert np.all(noisy[mask] == clean[mask])
    assert np.array_equal(np.bincount(noisy[mask], minlength=10), np.full(10, 20))
    again = initial_confidence_mask(noisy, clean, 10, init_per_class=20, seeded=True, seed=0)
    other = initial_confidence_mask(noisy, clean, 10, init_per_class=20, seeded=True, seed=1)
    assert np.array_equal(mask, again) and not np.array_equal(mask, other)


def test_initial_mask_short_class_takes_all_and_warns(caplog):
    clean = np.array([0] * 50 + [1] * 3, dtype=np.int64)
    with caplog.at_level(logging.WARNING, logger="pipeline.data.noise"):
        mask = initial_confidence_mask(clean, clean, 2, init_per_class=10, seeded=True, seed=0)
    assert mask[50:].all() and mask[:50].sum() == 10
    assert "class 1 has only 3" in caplog.text


@pytest.mark.parametrize(("seeded", "clean"), [(False, np.zeros(6, dtype=np.int64)), (True, None)])
def test_initial_mask_without_a_seed_is_everything(seeded, clean):
    mask = initial_confidence_mask(
        np.ones(6, dtype=np.int64), clean, 2, init_per_class=1, seeded=seeded, seed=0
    )
    assert mask.dtype == bool and mask.all()


# --------------------------------------------------------------------------- label file


def _table(clean: np.ndarray | None = None) -> pd.DataFrame:
    noisy = np.array([0, 1, 1, 2, 2, 0], dtype=np.int64)
    return build_label_table(np.arange(10, 16), clean, noisy, np.array([1, 0, 1, 0, 0, 1], dtype=bool))


META = {
    "kind": "sym",
    "rate": 0.5,
    "convention": "other",
    "seed": np.int64(0),
    "realised_rate": 0.5,
    "num_classes": 3,
    "dataset": "toy",
    "init_per_class": 1,
    "real_noise": False,
    "source_file": None,
}


def test_build_label_table_dtypes():
    table = _table(np.array([0, 1, 2, 2, 1, 0]))
    assert dict(table.dtypes.astype(str)) == {
        "index": "int64", "clean_label": "Int64", "noisy_label": "int64",
        "is_noisy": "boolean", "in_initial_confidence_set": "bool",
    }  # fmt: skip
    assert table["is_noisy"].tolist() == [False, False, True, False, True, False]
    unknown = _table(None)
    assert unknown["clean_label"].isna().all() and unknown["is_noisy"].isna().all()


@pytest.mark.parametrize("clean", [np.array([0, 1, 2, 2, 1, 0]), None])
def test_label_file_round_trip(tmp_path, clean):
    table = _table(clean)
    path = tmp_path / "deep" / "dir" / "labels.parquet"
    write_label_file(table, path, META)
    loaded = read_label_file(path, num_classes=3, expected_index=np.arange(10, 16))
    assert isinstance(loaded, LabelFile)
    pd.testing.assert_frame_equal(loaded.table, table)
    assert loaded.metadata == {**META, "seed": 0}
    assert list(path.parent.iterdir()) == [path]  # no temp file left behind


def test_label_file_is_byte_identical_for_same_seed(tmp_path):
    def write(name: str) -> bytes:
        clean = balanced_labels(10, 50)
        noisy = make_noisy_labels(clean, 10, kind="sym", rate=0.5, seed=7)
        mask = initial_confidence_mask(noisy, clean, 10, init_per_class=5, seeded=True, seed=7)
        table = build_label_table(np.arange(len(clean)), clean, noisy, mask)
        write_label_file(table, tmp_path / name, {**META, "realised_rate": realised_rate(clean, noisy)})
        return (tmp_path / name).read_bytes()

    assert write("a.parquet") == write("b.parquet")


def test_failed_write_keeps_old_file(tmp_path, monkeypatch):
    path = tmp_path / "labels.parquet"
    write_label_file(_table(), path, META)
    before = path.read_bytes()

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(pq, "write_table", boom)
    with pytest.raises(OSError, match="disk full"):
        write_label_file(_table(np.zeros(6, dtype=np.int64)), path, {"other": 1})
    assert path.read_bytes() == before
    assert list(tmp_path.iterdir()) == [path]


def test_read_label_file_missing_says_run_noise_stage(tmp_path):
    with pytest.raises(UserError, match=r"nope\.parquet not found; run the noise stage"):
        read_label_file(tmp_path / "nope.parquet")


def test_read_label_file_corrupt(tmp_path):
    path = tmp_path / "labels.parquet"
    path.write_bytes(b"not parquet at all")
    with pytest.raises(UserError, match="labels.parquet: not a readable Parquet"):
        read_label_file(path)


def test_read_label_file_validates_labels_and_index(tmp_path):
    path = tmp_path / "labels.parquet"
    write_label_file(_table(np.array([0, 1, 2, 2, 1, 0])), path, META)
    with pytest.raises(UserError, match=r"labels.parquet: row 3 has noisy_label 2, outside \[0, 2\)"):
        read_label_file(path, num_classes=2)
    with pytest.raises(UserError, match="labels.parquet: has 6 rows but the dataset has 5 samples"):
        read_label_file(path, expected_index=np.arange(10, 15))
    expected = np.arange(10, 16)
    expected[4] = 99
    with pytest.raises(UserError, match="labels.parquet: row 4 is sample 14 but the dataset expects 99"):
        read_label_file(path, expected_index=expected)


def test_read_label_file_missing_column(tmp_path):
    path = tmp_path / "labels.parquet"
    _table().drop(columns="is_noisy").to_parquet(path)
    with pytest.raises(UserError, match=r"labels.parquet: missing column\(s\) \['is_noisy'\]"):
        read_label_file(path)


# --------------------------------------------------------------------------- label files from outside


@pytest.fixture
def cifar_n_pt(tmp_path) -> Path:
    """A CIFAR-N style file: a dict of numpy label arrays plus a tensor and a list."""
    import torch

    path = tmp_path / "CIFAR-10_human.pt"
    base = np.arange(20, dtype=np.int64) % 10
    torch.save(
        {
            "clean_label": base,
            "worse_label": (base + 1) % 10,
            "aggre_label": torch.tensor((base + 2) % 10),
            "random_label1": ((base + 3) % 10).tolist(),
        },
        path,
    )
    return path


@pytest.mark.parametrize(("key", "shift"), [("worse_label", 1), ("aggre_label", 2), ("random_label1", 3)])
def test_labels_from_cifar_n_pt(cifar_n_pt, key, shift):
    index = np.array([5, 0, 19])
    out = labels_from_file(cifar_n_pt, key=key, index=index, num_classes=10)
    assert out.dtype == np.int64 and out.tolist() == ((index % 10 + shift) % 10).tolist()


def test_labels_from_pt_saved_with_numpy_1_module_names(cifar_n_pt, tmp_path):
    """CIFAR-N files were pickled under numpy 1.x, whose arrays reference numpy.core.*."""
    legacy = tmp_path / "legacy.pt"
    with zipfile.ZipFile(cifar_n_pt) as zin, zipfile.ZipFile(legacy, "w") as zout:
        for name in zin.namelist():
            data = zin.read(name)
            if name.endswith("data.pkl"):
                data = data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
            zout.writestr(name, data)
    out = labels_from_file(legacy, key="worse_label", index=np.array([0, 9]), num_classes=10)
    assert out.tolist() == [1, 0]


def test_pt_missing_key_lists_keys(cifar_n_pt):
    with pytest.raises(UserError, match=r"CIFAR-10_human.pt: key 'worst_label' not found; .*'aggre_label'"):
        labels_from_file(cifar_n_pt, key="worst_label", index=np.arange(3), num_classes=10)
    with pytest.raises(UserError, match=r"CIFAR-10_human.pt: no key given"):
        labels_from_file(cifar_n_pt, key=None, index=np.arange(3), num_classes=10)


def test_pt_too_short(cifar_n_pt):
    with pytest.raises(
        UserError, match=r"CIFAR-10_human.pt.*has 20 labels but the dataset needs ids up to 20"
    ):
        labels_from_file(cifar_n_pt, key="worse_label", index=np.array([0, 20]), num_classes=10)


def test_pt_label_out_of_range(tmp_path):
    import torch

    path = tmp_path / "bad.pt"
    torch.save({"noisy_label": np.array([1, 2, 12, 3])}, path)
    with pytest.raises(UserError, match=r"bad.pt.*row 2 has label 12, outside \[0, 10\)"):
        labels_from_file(path, key=None, index=np.arange(4), num_classes=10)


@pytest.mark.parametrize("content", [b"garbage", b""])
def test_pt_unreadable(tmp_path, content):
    path = tmp_path / "broken.pt"
    path.write_bytes(content)
    with pytest.raises(UserError, match="broken.pt: cannot read it as a torch"):
        labels_from_file(path, key="worse_label", index=np.arange(3), num_classes=10)


def test_missing_noise_file(tmp_path):
    with pytest.raises(UserError, match="absent.csv does not exist"):
        labels_from_file(tmp_path / "absent.csv", key=None, index=np.arange(3), num_classes=10)


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_labels_from_table_any_row_order(tmp_path, suffix):
    path = tmp_path / f"mine{suffix}"
    frame = pd.DataFrame({"index": [4, 2, 0, 1, 3, 7], "label": [9, 8, 7, 6, 5, 4]})
    frame.to_csv(path, index=False) if suffix == ".csv" else frame.to_parquet(path)
    out = labels_from_file(path, key=None, index=np.array([0, 1, 2, 3, 4]), num_classes=10)
    assert out.tolist() == [7, 6, 8, 5, 9]


@pytest.mark.parametrize(
    ("rows", "match"),
    [
        ("index,label\n0,1\n1,10\n", r"mine.csv: line 3 has label 10, outside \[0, 10\)"),
        ("index,label\n0,1\n1,-1\n", r"mine.csv: line 3 has label -1, outside \[0, 10\)"),
        ("index,label\n0,1\n1,2.5\n", r"mine.csv: line 3 has label '2.5', not an integer"),
        ("index,label\n0,1\n1,\n", r"mine.csv: line 3 has label '', not an integer"),
        ("index,label\n0,1\n2,2\n", r"mine.csv: no label for sample id 1"),
        ("index,label\n0,1\n0,2\n1,3\n", r"mine.csv: line 3 repeats sample id 0"),
        ("id,label\n0,1\n", r"mine.csv: missing column\(s\) \['index'\]"),
    ],
)
def test_bad_csv_label_files(tmp_path, rows, match):
    path = tmp_path / "mine.csv"
    path.write_text(rows)
    with pytest.raises(UserError, match=match):
        labels_from_file(path, key=None, index=np.arange(2), num_classes=10)


def test_bad_parquet_label_file(tmp_path):
    path = tmp_path / "mine.parquet"
    pd.DataFrame({"index": [0, 1, 2], "label": [1, 2, 30]}).to_parquet(path)
    with pytest.raises(UserError, match=r"mine.parquet: row 2 has label 30, outside \[0, 10\)"):
        labels_from_file(path, key=None, index=np.arange(3), num_classes=10)
    path.write_bytes(b"PAR1 corrupt")
    with pytest.raises(UserError, match="mine.parquet: cannot read it as a label table"):
        labels_from_file(path, key=None, index=np.arange(3), num_classes=10)


def test_messages_are_one_line(tmp_path):
    path = tmp_path / "broken.pt"
    path.write_bytes(b"garbage")
    with pytest.raises(UserError) as info:
        labels_from_file(path, key="k", index=np.arange(3), num_classes=10)
    assert "\n" not in str(info.value)


def test_realised_rate():
    assert realised_rate(np.array([0, 1, 2, 3]), np.array([0, 1, 0, 0])) == 0.5
    assert noise.realised_rate(np.array([], dtype=np.int64), np.array([], dtype=np.int64)) == 0.0
