"""Datasets: load every supported kind into one in-memory description (`Dataset`).

A `Dataset` holds a training `Split` and one or more test splits. A split keeps either
uint8 images in memory (CIFAR, digits, npz) or absolute file paths decoded on access
(folder, WebVision), so the training loop sees one interface: `Split.image_tensor(i)`
gives a uint8 CHW RGB tensor and `SplitDataset` wraps a split for a DataLoader,
returning the row position so that current labels and masks can be looked up by row.

Labels are the labels *as delivered*: clean for CIFAR/digits/npz (noise is injected
later by the noise stage) and noisy for WebVision. `Split.index` is a stable per-sample
id (e.g. the position in CIFAR's standard order) so per-sample label files apply.
"""

from __future__ import annotations

import logging
import re
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset as TorchDataset

from pipeline.config import DATASET_KINDS
from pipeline.errors import UserError

logger = logging.getLogger(__name__)


# Sel-CL's normalisation (MTaDCS follows Sel-CL's CIFAR conventions, see METHOD.md).
# The CIFAR-10 std is the widely copied (0.2023, 0.1994, 0.2010), kept for comparability.
CIFAR_STATS = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
    "cifar100": ((0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761)),
}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# torchvision.io.decode_image reads these; other IMG_EXTENSIONS (bmp, tiff, ppm) go via PIL.
_TORCHVISION_DECODABLE = (".jpg", ".jpeg", ".png", ".webp", ".gif")
_CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar.html"
_DIGITS_TEST_SHARE = 0.2
_DIGITS_SEED = 0  # fixed on purpose: the digits split must never move between runs


@dataclass
class Split:
    """One split. Either in-memory uint8 images (N,H,W,3) or a list of image file paths."""

    labels: np.ndarray
    index: np.ndarray
    images: np.ndarray | None = None
    paths: list[str] | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def image_tensor(self, i: int) -> torch.Tensor:
        """Image of row `i` as a uint8 (3,H,W) RGB tensor (a copy, safe to modify)."""
        if self.images is not None:
            return torch.from_numpy(np.ascontiguousarray(self.images[i].transpose(2, 0, 1)))
        if self.paths is None:
            raise ValueError("Split has neither images nor paths")
        return decode_rgb(self.paths[i])


@dataclass
class Dataset:
    """A loaded dataset: metadata, the training split and the ordered test splits."""

    name: str
    num_classes: int
    class_names: list[str]
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    train: Split
    tests: dict[str, Split]


class SplitDataset(TorchDataset):
    """(transform(image_tensor), position) pairs; position = row in the split (0..N-1).

    The training loop keeps labels and confidence masks in arrays indexed by row, so the
    loader returns the row rather than a label that could be stale after correction.
    """

    def __init__(
        self,
        split: Split,
        transform: Callable[[torch.Tensor], Any] | None = None,
        positions: np.ndarray | None = None,
    ) -> None:
        self.split = split
        self.transform = transform
        self.positions = None if positions is None else np.asarray(positions, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.split) if self.positions is None else len(self.positions)

    def __getitem__(self, k: int) -> tuple[Any, int]:
        pos = int(k if self.positions is None else self.positions[k])
        image = self.split.image_tensor(pos)
        return (image if self.transform is None else self.transform(image)), pos


def decode_rgb(path: str) -> torch.Tensor:
    """Decode an image file to uint8 (3,H,W) RGB; a corrupt file is a UserError naming it."""
    try:
        if Path(path).suffix.lower() in _TORCHVISION_DECODABLE:
            from torchvision.io import ImageReadMode, decode_image

            return decode_image(path, mode=ImageReadMode.RGB)
        from PIL import Image
        from torchvision.transforms.v2.functional import pil_to_tensor

        with Image.open(path) as img:
            return pil_to_tensor(img.convert("RGB"))
    except (RuntimeError, OSError, ValueError) as exc:
        raise UserError(
            f"{path}: cannot decode image ({_first_line(exc)}); replace or remove the file"
        ) from exc


def load_dataset(
    kind: str,
    *,
    root: str | Path = "data/raw",
    path: str | Path | None = None,
    download: bool = True,
    image_size: int | None = None,
    num_classes: int | None = None,
    ilsvrc_root: str | Path | None = None,
) -> Dataset:
    """Load a dataset of one of DATASET_KINDS.

    root: where CIFAR archives/folders live (CIFAR may also take `path` instead).
    path: the npz file, the folder/CSV of a user's images, or the WebVision root
        (default `root/webvision`).
    image_size: side the model sees, for the file-based kinds (folder: default 32,
        webvision50: default 224) and digits (8x8 originals upscaled; default 32). CIFAR and
        npz have a fixed side; a different value is an error rather than a silent resize.
    num_classes: npz/CSV with integer labels: default max label + 1; webvision50:
        first N classes (default 50); other kinds: checked against the data.
    ilsvrc_root: webvision50 only: ILSVRC2012 val in one folder per WordNet id
        (default `<path>/../ILSVRC2012/val`; left out with a warning when absent).
    """
    if kind in ("cifar10", "cifar100"):
        ds = _load_cifar(kind, Path(path) if path is not None else Path(root), download)
    elif kind == "digits":
        ds = _load_digits(image_size or 32)
    elif kind == "npz":
        ds = _load_npz(_required_path(kind, path), num_classes)
    elif kind == "folder":
        ds = _load_folder(_required_path(kind, path), image_size or 32, num_classes)
    elif kind == "webvision50":
        web_root = Path(path) if path is not None else Path(root) / "webvision"
        ds = _load_webvision(web_root, num_classes or 50, image_size or 224, ilsvrc_root)
    else:
        raise UserError(f"unknown dataset kind {kind!r}: use one of {', '.join(DATASET_KINDS)}")
    if kind in ("cifar10", "cifar100"):
        _check_fixed(ds, num_classes, image_size)
    elif kind == "digits":
        _check_fixed(ds, num_classes, None)
    elif kind == "npz":  # npz checks num_classes against its labels itself
        _check_fixed(ds, None, image_size)
    logger.info("loaded dataset %s", describe(ds))
    return ds


def describe(ds: Dataset) -> dict:
    """Counts per split plus the shape facts worth logging."""
    return {
        "name": ds.name,
        "num_classes": ds.num_classes,
        "image_size": ds.image_size,
        "splits": {"train": len(ds.train), **{name: len(s) for name, s in ds.tests.items()}},
    }


# ---------------------------------------------------------------- CIFAR-10 / CIFAR-100


def _load_cifar(kind: str, root: Path, download: bool) -> Dataset:
    from torchvision.datasets import CIFAR10, CIFAR100

    cls = CIFAR10 if kind == "cifar10" else CIFAR100
    _extract_cifar_archive(cls, root)
    train = _torchvision_cifar(cls, root, True, download)
    test = _torchvision_cifar(cls, root, False, download)
    mean, std = CIFAR_STATS[kind]
    splits = [
        Split(
            labels=np.asarray(d.targets, dtype=np.int64),
            index=np.arange(len(d), dtype=np.int64),
            images=d.data,
        )
        for d in (train, test)
    ]
    return Dataset(
        name=kind,
        num_classes=len(train.classes),
        class_names=list(train.classes),
        image_size=32,
        mean=mean,
        std=std,
        train=splits[0],
        tests={"test": splits[1]},
    )


def _extract_cifar_archive(cls: type, root: Path) -> None:
    """Unpack a hand-placed archive, so that download=False also works after copying it in."""
    archive = root / cls.filename
    if (root / cls.base_folder).is_dir() or not archive.is_file():
        return
    from torchvision.datasets.utils import extract_archive

    logger.info("extracting %s", archive)
    try:
        extract_archive(str(archive), str(root))
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise UserError(
            f"{archive}: cannot extract ({_first_line(exc)}); download it again from {_CIFAR_URL}"
        ) from exc


def _torchvision_cifar(cls: type, root: Path, train: bool, download: bool) -> Any:
    try:
        return cls(str(root), train=train, download=download)
    except (OSError, RuntimeError) as exc:  # URLError is an OSError; torchvision raises RuntimeError
        pretty = "CIFAR-10" if cls.__name__ == "CIFAR10" else "CIFAR-100"
        how = f"could not be downloaded ({_first_line(exc)})" if download else "download is off"
        raise UserError(
            f"{pretty} not found (or corrupted) in {root / cls.base_folder} and {how}: "
            f"put {cls.filename} ({_CIFAR_URL}) in {root} and run again"
        ) from exc


# ---------------------------------------------------------------- scikit-learn digits


def _load_digits(image_size: int = 32) -> Dataset:
    """scikit-learn's bundled 8x8 digits as RGB squares of `image_size` (default 32): the
    offline, no-download dataset. At 16 px a model costs a quarter of its 32 px time and
    loses nothing of the 8x8 originals (the quickstart's choice).

    Pixels 0..16 are scaled to 0..255 and upscaled with bilinear interpolation
    (smoother than nearest, so crops/flips act on plausible strokes). The stratified
    20 % test split is seeded with a constant; rows stay in load_digits order.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    from torchvision.transforms.v2.functional import InterpolationMode, resize

    bunch = load_digits()
    small = torch.from_numpy(np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8))[:, None]
    big = resize(small, [image_size, image_size], interpolation=InterpolationMode.BILINEAR, antialias=False)
    images = big.expand(-1, 3, -1, -1).permute(0, 2, 3, 1).contiguous().numpy()
    labels = bunch.target.astype(np.int64)
    rows = np.arange(len(labels), dtype=np.int64)
    train_rows, test_rows = train_test_split(
        rows, test_size=_DIGITS_TEST_SHARE, random_state=_DIGITS_SEED, stratify=labels
    )
    train_rows, test_rows = np.sort(train_rows), np.sort(test_rows)
    mean, std = channel_stats(images[train_rows])
    return Dataset(
        name="digits",
        num_classes=10,
        class_names=[str(c) for c in range(10)],
        image_size=image_size,
        mean=mean,
        std=std,
        train=Split(labels=labels[train_rows], index=train_rows, images=images[train_rows]),
        tests={"test": Split(labels=labels[test_rows], index=test_rows, images=images[test_rows])},
    )


# ---------------------------------------------------------------- npz arrays


def _load_npz(file: Path, num_classes: int | None) -> Dataset:
    """x_train, y_train, x_test, y_test (+ optional train_index, test_index, class_names)."""
    arrays = _read_npz(file)
    x_train = _npz_images(file, arrays, "x_train")
    x_test = _npz_images(file, arrays, "x_test")
    if x_train.shape[1:] != x_test.shape[1:]:
        raise UserError(
            f"{file}: x_train images are {x_train.shape[1:]} but x_test are {x_test.shape[1:]}; use one size"
        )
    y_train = _npz_labels(file, arrays, "y_train", len(x_train), "x_train")
    y_test = _npz_labels(file, arrays, "y_test", len(x_test), "x_test")
    class_names = _npz_class_names(file, arrays)
    if num_classes is None:
        num_classes = len(class_names) if class_names else int(max(y_train.max(), y_test.max(), -1)) + 1
    elif class_names and len(class_names) != num_classes:
        raise UserError(
            f"{file}: class_names has {len(class_names)} entries but num_classes is {num_classes}; make them agree"
        )
    for key, y in (("y_train", y_train), ("y_test", y_test)):
        check_labels(y, num_classes, f"{file}: {key}")
    mean, std = channel_stats(x_train)
    return Dataset(
        name="npz",
        num_classes=num_classes,
        class_names=class_names or [str(c) for c in range(num_classes)],
        image_size=int(x_train.shape[1]),
        mean=mean,
        std=std,
        train=Split(
            labels=y_train, index=_npz_index(file, arrays, "train_index", len(y_train)), images=x_train
        ),
        tests={
            "test": Split(
                labels=y_test, index=_npz_index(file, arrays, "test_index", len(y_test)), images=x_test
            )
        },
    )


def _read_npz(file: Path) -> dict[str, np.ndarray]:
    import zipfile

    if not file.is_file():
        raise UserError(
            f"{file}: npz file not found; check the path (it needs x_train, y_train, x_test, y_test)"
        )
    try:
        with np.load(file, allow_pickle=False) as data:
            return {key: data[key] for key in data.files}
    except (ValueError, OSError, zipfile.BadZipFile) as exc:
        raise UserError(
            f"{file}: cannot read as .npz without pickle ({_first_line(exc)}); save plain arrays with numpy.savez"
        ) from exc


def _npz_require(file: Path, arrays: dict[str, np.ndarray], key: str) -> np.ndarray:
    if key not in arrays:
        raise UserError(f"{file}: missing array {key!r}; the file needs x_train, y_train, x_test, y_test")
    return arrays[key]


def _npz_images(file: Path, arrays: dict[str, np.ndarray], key: str) -> np.ndarray:
    """(N,H,W,3) uint8 as is; (N,H,W) or (N,H,W,1) grayscale repeated to RGB."""
    x = _npz_require(file, arrays, key)
    if x.dtype != np.uint8:
        raise UserError(f"{file}: {key} has dtype {x.dtype}; store images as uint8 0..255")
    if x.ndim == 4 and x.shape[-1] == 1:
        x = x[..., 0]
    if x.ndim == 3:
        x = np.repeat(x[..., None], 3, axis=-1)
    if x.ndim != 4 or x.shape[-1] != 3:
        raise UserError(f"{file}: {key} has shape {x.shape}; expected (N,H,W,3) RGB or (N,H,W) grayscale")
    if x.shape[1] != x.shape[2]:
        raise UserError(
            f"{file}: {key} images are {x.shape[1]}x{x.shape[2]}; make them square (e.g. center-crop)"
        )
    return x


def _npz_labels(file: Path, arrays: dict[str, np.ndarray], key: str, n: int, images_key: str) -> np.ndarray:
    y = _npz_require(file, arrays, key)
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise UserError(f"{file}: {key} must be a 1-D integer array, got shape {y.shape} dtype {y.dtype}")
    if len(y) != n:
        raise UserError(
            f"{file}: {key} has {len(y)} labels but {images_key} has {n} images "
            f"(first unmatched row {min(len(y), n)}); make them the same length"
        )
    return y.astype(np.int64)


def _npz_index(file: Path, arrays: dict[str, np.ndarray], key: str, n: int) -> np.ndarray:
    """The stored per-sample ids, else row numbers."""
    if key not in arrays:
        return np.arange(n, dtype=np.int64)
    idx = arrays[key]
    if idx.ndim != 1 or not np.issubdtype(idx.dtype, np.integer) or len(idx) != n:
        raise UserError(
            f"{file}: {key} must be 1-D integers, one per image ({n}), got shape {idx.shape} dtype {idx.dtype}"
        )
    _, first, counts = np.unique(idx, return_index=True, return_counts=True)
    if (counts > 1).any():
        row = int(first[counts > 1].min())
        raise UserError(f"{file}: {key} repeats the id at row {row} ({idx[row]}); ids must be unique")
    return idx.astype(np.int64)


def _npz_class_names(file: Path, arrays: dict[str, np.ndarray]) -> list[str]:
    names = arrays.get("class_names")
    if names is None:
        return []
    if names.ndim != 1 or names.dtype.kind not in "US":
        raise UserError(
            f"{file}: class_names must be a 1-D string array, got shape {names.shape} dtype {names.dtype}"
        )
    return [n.decode() if isinstance(n, bytes) else str(n) for n in names.tolist()]


# ---------------------------------------------------------------- a user's image folder / CSV


def _load_folder(path: Path, image_size: int, num_classes: int | None) -> Dataset:
    """`path/train/<class>/*` + `path/test/<class>/*`, or a CSV with columns path,label,split."""
    if path.is_dir():
        class_names, train, test = _folder_tree(path)
    elif path.is_file():
        class_names, train, test = _folder_csv(path, num_classes)
    else:
        raise UserError(
            f"{path}: not found; give a folder with train/<class>/ and test/<class>/ or a CSV path,label,split"
        )
    if num_classes is not None and num_classes != len(class_names):
        raise UserError(
            f"{path}: found {len(class_names)} classes but num_classes is {num_classes}; drop the setting or fix the data"
        )
    return Dataset(
        name="folder",
        num_classes=len(class_names),
        class_names=class_names,
        image_size=image_size,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        train=train,
        tests={"test": test},
    )


def _folder_tree(root: Path) -> tuple[list[str], Split, Split]:
    """Class ids from the sorted train class folders (torchvision's ImageFolder rule)."""
    from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

    root = root.resolve()
    layout = f"lay images out as {root}/train/<class>/*.png and {root}/test/<class>/*.png"
    dirs = {name: root / name for name in ("train", "test")}
    for d in dirs.values():
        if not d.is_dir():
            raise UserError(f"{root}: no {d.name}/ folder; {layout} (or give a CSV path,label,split)")
    try:
        classes, class_to_idx = find_classes(str(dirs["train"]))
        train = make_dataset(str(dirs["train"]), class_to_idx, extensions=IMG_EXTENSIONS)
        test_classes, _ = find_classes(str(dirs["test"]))
    except FileNotFoundError as exc:
        raise UserError(f"{root}: {_first_line(exc)}; {layout}") from exc
    unknown = sorted(set(test_classes) - set(classes))
    if unknown:
        raise UserError(
            f"{dirs['test']}: class folder {unknown[0]!r} has no train/ counterpart; add it to train/ or remove it"
        )
    test = make_dataset(str(dirs["test"]), class_to_idx, extensions=IMG_EXTENSIONS, allow_empty=True)
    if not test:
        raise UserError(f"{dirs['test']}: no images found ({', '.join(IMG_EXTENSIONS)}); {layout}")
    return list(classes), _path_split(train), _path_split(test)


def _path_split(samples: list[tuple[str, int]], index: np.ndarray | None = None) -> Split:
    labels = np.array([label for _, label in samples], dtype=np.int64)
    rows = np.arange(len(samples), dtype=np.int64) if index is None else index
    return Split(labels=labels, index=rows, paths=[p for p, _ in samples])


def _folder_csv(csv: Path, num_classes: int | None) -> tuple[list[str], Split, Split]:
    """path,label,split rows; `index` is the CSV data row so per-row label files apply."""
    import pandas as pd

    csv = csv.resolve()
    try:
        df = pd.read_csv(csv, dtype=str, keep_default_na=False)
    except (ValueError, OSError, pd.errors.ParserError) as exc:
        raise UserError(
            f"{csv}: cannot read as CSV ({_first_line(exc)}); write columns path,label,split"
        ) from exc
    missing = [c for c in ("path", "label", "split") if c not in df.columns]
    if missing:
        raise UserError(f"{csv}: missing column {missing[0]!r}; the CSV needs columns path,label,split")
    df = df.apply(lambda col: col.str.strip())
    bad = df.index[~df["split"].isin(["train", "test"])]
    if len(bad):
        raise UserError(f"{csv}: line {bad[0] + 2}: split is {df['split'][bad[0]]!r}; use train or test")
    class_names, labels = _csv_labels(csv, df, num_classes)
    paths = [p if Path(p).is_absolute() else str(csv.parent / p) for p in df["path"]]
    for row, p in enumerate(paths):
        if not Path(p).is_file():
            raise UserError(
                f"{csv}: line {row + 2}: image {p} does not exist; fix the path (relative to {csv.parent}) or drop the row"
            )
    splits = []
    for name in ("train", "test"):
        rows = np.flatnonzero(df["split"].to_numpy() == name)
        if len(rows) == 0:
            raise UserError(f"{csv}: no rows with split={name}; the CSV needs both train and test rows")
        splits.append(Split(labels=labels[rows], index=rows.astype(np.int64), paths=[paths[r] for r in rows]))
    return class_names, splits[0], splits[1]


def _csv_labels(csv: Path, df: Any, num_classes: int | None) -> tuple[list[str], np.ndarray]:
    """Integer labels as given; class names mapped to ids in sorted order of the train names."""
    raw = df["label"].tolist()
    if all(re.fullmatch(r"-?\d+", v) for v in raw):
        labels = np.array([int(v) for v in raw], dtype=np.int64)
        n = num_classes if num_classes is not None else int(labels.max(initial=-1)) + 1
        check_labels(labels, n, str(csv), row_offset=2, row_word="line")
        return [str(c) for c in range(n)], labels
    names = sorted(set(df.loc[df["split"] == "train", "label"]))
    ids = {name: i for i, name in enumerate(names)}
    for row, v in enumerate(raw):
        if v not in ids:
            raise UserError(
                f"{csv}: line {row + 2}: label {v!r} is not a class of any train row; fix the label or add train images"
            )
    return names, np.array([ids[v] for v in raw], dtype=np.int64)


# ---------------------------------------------------------------- WebVision-50 (+ ILSVRC12 val)


def _load_webvision(root: Path, num_classes: int, image_size: int, ilsvrc_root: str | Path | None) -> Dataset:
    """WebVision 1.0 Google subset, first `num_classes` classes, in the official layout."""
    root = root.resolve()
    info = root / "info"
    synsets = _read_synsets(info / "synsets.txt")
    if not 0 < num_classes <= len(synsets):
        raise UserError(
            f"{info / 'synsets.txt'}: lists {len(synsets)} classes, cannot take the first {num_classes}; lower num_classes"
        )
    wnids = [wnid for wnid, _ in synsets[:num_classes]]
    tests = {
        "webvision_val": _filelist_split(info / "val_filelist.txt", root / "val_images_256", num_classes)
    }
    ilsvrc_dir = Path(ilsvrc_root) if ilsvrc_root is not None else root.parent / "ILSVRC2012" / "val"
    ilsvrc = _ilsvrc_split(ilsvrc_dir, wnids)
    if ilsvrc is not None:
        tests["ilsvrc12_val"] = ilsvrc
    return Dataset(
        name="webvision50",
        num_classes=num_classes,
        class_names=[name for _, name in synsets[:num_classes]],
        image_size=image_size,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        train=_filelist_split(info / "train_filelist_google.txt", root, num_classes),
        tests=tests,
    )


def _read_info(file: Path) -> list[str]:
    if not file.is_file():
        raise UserError(
            f"{file}: missing; unpack the WebVision 1.0 info archive (info/*.txt) into {file.parent.parent}"
        )
    return file.read_text(encoding="utf-8").splitlines()


def _read_synsets(file: Path) -> list[tuple[str, str]]:
    """`n01440764 tench, Tinca tinca` -> ('n01440764', 'tench'); class i = line i."""
    out = []
    for line in _read_info(file):
        if line.strip():
            wnid, _, words = line.strip().partition(" ")
            out.append((wnid, words.split(",")[0].strip() or wnid))
    return out


def _filelist_split(file: Path, image_dir: Path, num_classes: int) -> Split:
    """`relative/path.jpg label` lines; keeps labels < num_classes, index = line number (0-based)."""
    paths, labels, rows = [], [], []
    for row, line in enumerate(_read_info(file)):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2 or not parts[1].isdigit():
            raise UserError(f"{file}: line {row + 1}: expected '<image path> <label>', got {line.strip()!r}")
        if int(parts[1]) < num_classes:
            paths.append(str(image_dir / parts[0]))
            labels.append(int(parts[1]))
            rows.append(row)
    if not paths:
        raise UserError(f"{file}: no images with a label below {num_classes}; check the file list")
    for p, row in zip(paths, rows, strict=True):
        if not Path(p).is_file():
            raise UserError(
                f"{file}: line {row + 1}: image {p} does not exist; unpack the images under {image_dir}"
            )
    return Split(labels=np.array(labels, dtype=np.int64), index=np.array(rows, dtype=np.int64), paths=paths)


def _ilsvrc_split(val_dir: Path, wnids: list[str]) -> Split | None:
    """ILSVRC12 val in class-folder-by-wnid layout, restricted to the WebVision classes."""
    from torchvision.datasets.folder import IMG_EXTENSIONS, make_dataset

    if not val_dir.is_dir():
        logger.warning(
            "ILSVRC2012 val not found at %s: test set ilsvrc12_val left out "
            "(give ilsvrc_root, a folder with one sub-folder per WordNet id)",
            val_dir,
        )
        return None
    class_to_idx = {wnid: i for i, wnid in enumerate(wnids)}
    samples = make_dataset(str(val_dir.resolve()), class_to_idx, extensions=IMG_EXTENSIONS, allow_empty=True)
    if not samples:
        raise UserError(
            f"{val_dir}: no images in WordNet-id folders ({wnids[0]}/ ...); sort ILSVRC2012 val into "
            "one folder per class (e.g. with valprep.sh) or point ilsvrc_root elsewhere"
        )
    missing = sorted(set(wnids) - {Path(p).parent.name for p, _ in samples})
    if missing:
        logger.warning(
            "ILSVRC2012 val at %s has no images for %d classes (e.g. %s)", val_dir, len(missing), missing[0]
        )
    return _path_split(samples)


# ---------------------------------------------------------------- shared helpers


def check_labels(
    labels: np.ndarray, num_classes: int, where: str, row_offset: int = 0, row_word: str = "row"
) -> None:
    """UserError naming the first label outside 0..num_classes-1."""
    bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
    if len(bad):
        row = int(bad[0])
        raise UserError(
            f"{where}: {row_word} {row + row_offset} has label {labels[row]}, outside 0..{num_classes - 1}; "
            "fix the label (or num_classes)"
        )


def channel_stats(
    images: np.ndarray, chunk: int = 4096
) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """Per-channel mean and std of uint8 (N,H,W,3) images in 0..1, in chunks to bound memory."""
    total = np.zeros(3)
    squares = np.zeros(3)
    for start in range(0, len(images), chunk):
        x = images[start : start + chunk].reshape(-1, 3).astype(np.float64) / 255.0
        total += x.sum(axis=0)
        squares += np.square(x).sum(axis=0)
    n = max(len(images) * images.shape[1] * images.shape[2], 1)
    mean = total / n
    std = np.sqrt(np.maximum(squares / n - mean**2, 1e-12))
    r, g, b = (round(float(v), 4) for v in mean)
    sr, sg, sb = (round(float(v), 4) for v in std)
    return (r, g, b), (sr, sg, sb)


def _check_fixed(ds: Dataset, num_classes: int | None, image_size: int | None) -> None:
    if num_classes is not None and num_classes != ds.num_classes:
        raise UserError(
            f"dataset {ds.name} has {ds.num_classes} classes, not {num_classes}; drop num_classes"
        )
    if image_size is not None and image_size != ds.image_size:
        raise UserError(f"dataset {ds.name} has {ds.image_size}px images, not {image_size}; drop image_size")


def _required_path(kind: str, path: str | Path | None) -> Path:
    if path is None:
        raise UserError(f"dataset kind {kind!r} needs a path (set data.path in params.yaml)")
    return Path(path)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
