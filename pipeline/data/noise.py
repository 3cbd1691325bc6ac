"""Noisy training labels: inject simulated noise, read real noise, and keep it in a label file.

The noise stage writes one Parquet label file per run setting; every later stage reads the
labels (and the initial confidence set G) from that file rather than re-drawing them, so a
run is tied to exactly one, recorded draw. See METHOD.md, "Noise" and "Initialisation of G".

Everything here is deterministic: the same seed gives the same arrays and the same file bytes.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.errors import UserError
from pipeline.files import atomic_path

logger = logging.getLogger(__name__)

NOISE_KINDS = ("none", "sym", "asym", "file")
SYM_CONVENTIONS = ("any", "other")
ASYM_MAPS = ("cifar10", "cifar100", "next")

# Sel-CL / DivideMix CIFAR-10 asymmetric flips (class ids in CIFAR-10's order).
CIFAR10_ASYM_MAP: dict[int, int] = {9: 1, 2: 0, 4: 7, 3: 5, 5: 3}

# CIFAR-100 fine label -> super-class ("coarse label"), fine ids in the alphabetical order of
# `fine_label_names` (0 apple ... 99 worm) and super-class ids in the alphabetical order of
# `coarse_label_names` (0 aquatic_mammals ... 19 vehicles_2). tests/test_noise.py checks it
# against the super-class membership lists by name.
CIFAR100_COARSE: np.ndarray = np.array(
    [
        4, 1, 14, 8, 0, 6, 7, 7, 18, 3,  # apple .. bottle
        3, 14, 9, 18, 7, 11, 3, 9, 7, 11,  # bowl .. cattle
        6, 11, 5, 10, 7, 6, 13, 15, 3, 15,  # chair .. dinosaur
        0, 11, 1, 10, 12, 14, 16, 9, 11, 5,  # dolphin .. keyboard
        5, 19, 8, 8, 15, 13, 14, 17, 18, 10,  # lamp .. mountain
        16, 4, 17, 4, 2, 0, 17, 4, 18, 17,  # mouse .. pine_tree
        10, 3, 2, 12, 12, 16, 12, 1, 9, 19,  # plain .. rocket
        2, 10, 0, 1, 16, 12, 9, 13, 15, 13,  # rose .. spider
        16, 19, 2, 4, 6, 19, 5, 5, 8, 19,  # squirrel .. tractor
        18, 1, 2, 15, 6, 0, 17, 8, 14, 13,  # train .. worm
    ],
    dtype=np.int64,
)  # fmt: skip
CIFAR100_COARSE.setflags(write=False)

LABEL_COLUMNS = ("index", "clean_label", "noisy_label", "is_noisy", "in_initial_confidence_set")
METADATA_KEY = b"mtadcs"

# Separate stream for the initial-set draw, so changing how the noise is drawn never shifts G.
_INIT_MASK_STREAM = 1


# --------------------------------------------------------------------------- simulated noise


def symmetric_noise(
    labels: np.ndarray,
    num_classes: int,
    rate: float,
    convention: Literal["any", "other"],
    rng: np.random.Generator,
) -> np.ndarray:
    """Symmetric noise on exactly round(rate*N) samples, chosen without replacement.

    'any' (Sel-CL/DivideMix): the chosen samples get a label uniform over all K classes, so
    about 1/K of them keep their label and the realised rate is about rate*(K-1)/K.
    'other': the chosen samples get a label uniform over the K-1 other classes, so the
    realised rate equals rate up to rounding.
    """
    labels = _check_labels(labels, num_classes)
    _check_rate(rate)
    if convention not in SYM_CONVENTIONS:
        raise UserError(f"noise.sym_convention must be one of {SYM_CONVENTIONS}; got {convention!r}")
    if convention == "other" and num_classes < 2:
        raise UserError("noise.sym_convention 'other' needs at least 2 classes")
    noisy = labels.copy()
    chosen = rng.choice(len(labels), size=_round_half_up(rate * len(labels)), replace=False)
    if convention == "any":
        noisy[chosen] = rng.integers(0, num_classes, size=len(chosen))
    else:
        # A shift in 1..K-1 is uniform over the other classes and never lands on the label.
        noisy[chosen] = (labels[chosen] + rng.integers(1, num_classes, size=len(chosen))) % num_classes
    return noisy


def asymmetric_noise(
    labels: np.ndarray,
    num_classes: int,
    rate: float,
    mapping: Literal["cifar10", "cifar100", "next"],
    rng: np.random.Generator,
) -> np.ndarray:
    """Class-dependent flips: a share `rate` of each source class c moves to target(c).

    'cifar10': truck->automobile, bird->airplane, deer->horse, cat<->dog; other classes keep
    their label, so the overall rate is about rate/2. 'cifar100': to the next fine class within
    the same super-class (circular, by fine id). 'next': c -> (c+1) % K (pair flip).

    Each sample flips with probability `rate`, drawn as an exact count round(rate*n_c) per
    source class, chosen without replacement, rather than N independent coin flips: the
    realised rate is then tight (within rounding of `rate` inside the source classes)
    instead of binomially spread around it.
    """
    labels = _check_labels(labels, num_classes)
    _check_rate(rate)
    target = asym_target(mapping, num_classes)
    noisy = labels.copy()
    for c in np.flatnonzero(target != np.arange(num_classes)):
        members = np.flatnonzero(labels == c)  # from the clean labels, so cat<->dog flips once
        chosen = rng.choice(members, size=_round_half_up(rate * len(members)), replace=False)
        noisy[chosen] = target[c]
    return noisy


def asym_target(mapping: str, num_classes: int) -> np.ndarray:
    """The (K,) flip table of an asymmetric mapping: class c flips to target[c]."""
    if mapping not in ASYM_MAPS:
        raise UserError(f"noise.asym_map must be one of {ASYM_MAPS}; got {mapping!r}")
    if mapping == "next":
        return (np.arange(num_classes) + 1) % num_classes
    expected = 10 if mapping == "cifar10" else 100
    if num_classes != expected:
        raise UserError(
            f"noise.asym_map {mapping!r} needs {expected} classes, the dataset has {num_classes}; "
            "use noise.asym_map 'next' for other datasets"
        )
    if mapping == "cifar10":
        target = np.arange(10)
        for src, dst in CIFAR10_ASYM_MAP.items():
            target[src] = dst
        return target
    return _cifar100_next_in_superclass()


def _cifar100_next_in_superclass() -> np.ndarray:
    """Each fine class -> the next fine class (by id, circularly) in its super-class."""
    target = np.empty(100, dtype=np.int64)
    for sc in range(20):
        members = np.flatnonzero(CIFAR100_COARSE == sc)  # sorted by fine id
        target[members] = np.roll(members, -1)
    return target


# --------------------------------------------------------------------------- labels from a file


def labels_from_file(path: str | Path, *, key: str | None, index: np.ndarray, num_classes: int) -> np.ndarray:
    """Noisy labels for the samples `index` (ids in the dataset's standard training order).

    Reads a CIFAR-N style `.pt` (a dict of label arrays in the standard order; `key` picks
    one, e.g. 'worse_label') or a CSV/Parquet with columns `index,label` in any row order.
    Every label in the file is validated, not only the rows used, so a corrupt file is
    caught whichever subset is trained on.
    """
    path = Path(path)
    index = np.asarray(index, dtype=np.int64)
    if not path.is_file():
        raise UserError(f"noise label file {path} does not exist; check noise.file")
    suffix = path.suffix.lower()
    if suffix in (".pt", ".pth"):
        return _labels_from_pt(path, key, index, num_classes)
    if suffix in (".csv", ".parquet", ".pq"):
        return _labels_from_table(path, index, num_classes)
    raise UserError(f"{path}: unsupported noise label file type {suffix!r}; use .pt, .csv or .parquet")


def _labels_from_pt(path: Path, key: str | None, index: np.ndarray, num_classes: int) -> np.ndarray:
    obj = _torch_load_labels(path)
    if isinstance(obj, dict):
        keys = sorted(str(k) for k in obj)
        if key is None and len(obj) == 1:
            key = next(iter(obj))
        if key is None or key not in obj:
            what = "no key given" if key is None else f"key {key!r} not found"
            raise UserError(f"{path}: {what}; set noise.file_key to one of {keys}")
        obj = obj[key]
    values = obj.numpy() if hasattr(obj, "numpy") else np.asarray(obj)
    if values.ndim != 1:
        raise UserError(
            f"{path}: labels under key {key!r} have shape {values.shape}; expected one label per sample"
        )
    where = f"{path} [{key!r}]" if key is not None else str(path)
    labels = _validate_label_values(values, num_classes, where, row_offset=0)
    needed = int(index.max()) + 1 if len(index) else 0
    if len(labels) < needed:
        raise UserError(
            f"{where}: has {len(labels)} labels but the dataset needs ids up to {needed - 1} "
            f"(at least {needed} labels); is it the label file for this dataset?"
        )
    return labels[index]


def _torch_load_labels(path: Path) -> Any:
    """torch.load with weights_only=True, allowing the numpy arrays CIFAR-N files hold."""
    import torch  # lazy: only the .pt path needs torch

    try:
        serialization = torch.serialization
        if hasattr(serialization, "safe_globals"):
            with serialization.safe_globals(_numpy_safe_globals()):
                return torch.load(path, map_location="cpu", weights_only=True)
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for bad files; all mean "unreadable"
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise UserError(
            f"{path}: cannot read it as a torch .pt label file ({type(exc).__name__}: {first_line[:120]})"
        ) from exc


def _numpy_safe_globals() -> list[Any]:
    """What pickled numpy label arrays reference, under numpy 1.x and 2.x module names."""
    reconstruct = np.array([0]).__reduce__()[0]  # numpy.core or numpy._core _reconstruct
    dtype_classes = [type(np.dtype(code)) for code in "?bBhHiIlLqQefdg"]
    return [
        reconstruct,
        (reconstruct, "numpy.core.multiarray._reconstruct"),
        (reconstruct, "numpy._core.multiarray._reconstruct"),
        np.ndarray,
        np.dtype,
        *dtype_classes,
    ]


def _labels_from_table(path: Path, index: np.ndarray, num_classes: int) -> np.ndarray:
    frame = _read_index_label_table(path)
    is_csv = path.suffix.lower() == ".csv"
    # CSV rows are reported by file line (the header is line 1), Parquet rows from 0.
    row = "line" if is_csv else "row"
    offset = 2 if is_csv else 0
    ids = _validate_ids(frame["index"].to_numpy(), path, offset, row)
    labels = _validate_label_values(
        frame["label"].to_numpy(), num_classes, str(path), row_offset=offset, row_word=row
    )
    lookup = pd.Series(np.arange(len(ids)), index=ids)
    missing = ~np.isin(index, ids)
    if missing.any():
        raise UserError(
            f"{path}: no label for sample id {int(index[np.argmax(missing)])} "
            f"({int(missing.sum())} of {len(index)} ids missing); the file must cover every sample"
        )
    return labels[lookup.loc[index].to_numpy()]


def _read_index_label_table(path: Path) -> pd.DataFrame:
    try:
        if path.suffix.lower() == ".csv":
            frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        else:
            frame = pq.read_table(path).to_pandas()
    except Exception as exc:  # parser, decoding, Arrow errors: the file is unreadable either way
        raise UserError(
            f"{path}: cannot read it as a label table ({type(exc).__name__}); expected columns index,label"
        ) from exc
    frame.columns = [str(c).strip() for c in frame.columns]
    missing = [c for c in ("index", "label") if c not in frame.columns]
    if missing:
        raise UserError(
            f"{path}: missing column(s) {missing}; expected columns index,label, found {list(frame.columns)}"
        )
    return frame


def _validate_ids(values: np.ndarray, path: Path, row_offset: int, row_word: str) -> np.ndarray:
    """Sample ids must be non-negative integers, each at most once."""
    ids = _as_integers(values, str(path), row_offset, row_word, what="sample id")
    bad = ids < 0
    if bad.any():
        row = int(np.argmax(bad))
        raise UserError(f"{path}: {row_word} {row + row_offset} has negative sample id {ids[row]}")
    dup = pd.Series(ids).duplicated().to_numpy()
    if dup.any():
        row = int(np.argmax(dup))
        raise UserError(
            f"{path}: {row_word} {row + row_offset} repeats sample id {ids[row]}; each id must appear once"
        )
    return ids


def _validate_label_values(
    values: np.ndarray, num_classes: int, where: str, *, row_offset: int, row_word: str = "row"
) -> np.ndarray:
    labels = _as_integers(values, where, row_offset, row_word, what="label")
    bad = (labels < 0) | (labels >= num_classes)
    if bad.any():
        row = int(np.argmax(bad))
        raise UserError(
            f"{where}: {row_word} {row + row_offset} has label {labels[row]}, outside [0, {num_classes}); "
            "does num_classes match the file?"
        )
    return labels


def _as_integers(values: np.ndarray, where: str, row_offset: int, row_word: str, *, what: str) -> np.ndarray:
    """int64 copy of `values`, or a UserError naming the first value that is not an integer."""
    values = np.asarray(values)
    if values.dtype.kind in "iu":
        return values.astype(np.int64)
    if values.dtype.kind == "b":
        raise UserError(f"{where}: {what}s are booleans; expected integers")
    numeric = pd.to_numeric(pd.Series(values, dtype=object), errors="coerce").to_numpy(dtype=float)
    with np.errstate(invalid="ignore"):
        bad = ~np.isfinite(numeric) | (numeric != np.round(numeric))
    if bad.any():
        row = int(np.argmax(bad))
        raise UserError(f"{where}: {row_word} {row + row_offset} has {what} {values[row]!r}, not an integer")
    return numeric.astype(np.int64)


# --------------------------------------------------------------------------- the noise stage's API


def make_noisy_labels(
    clean: np.ndarray | None,
    num_classes: int,
    *,
    kind: str,
    rate: float = 0.0,
    convention: str = "any",
    asym_map: str = "cifar10",
    seed: int = 0,
    file: str | Path | None = None,
    file_key: str | None = None,
    index: np.ndarray | None = None,
) -> np.ndarray:
    """The noisy training labels for one noise setting (deterministic in `seed`).

    `clean` may be None only for kind 'file' (real noise, clean labels unknown). `index`
    gives each sample's id in the standard training order, used to pick rows of a label
    file; it defaults to 0..N-1.
    """
    if kind not in NOISE_KINDS:
        raise UserError(f"noise.kind must be one of {NOISE_KINDS}; got {kind!r}")
    if kind == "file":
        if file is None:
            raise UserError(
                "noise kind 'file' needs noise.file (a CIFAR-N .pt, or a CSV/Parquet of index,label)"
            )
        if index is None:
            if clean is None:
                raise ValueError("make_noisy_labels(kind='file') needs `index` when `clean` is None")
            index = np.arange(len(clean))
        return labels_from_file(file, key=file_key, index=index, num_classes=num_classes)
    if clean is None:
        raise ValueError(f"noise kind {kind!r} needs the clean labels")
    rng = np.random.default_rng(seed)
    if kind == "none":
        return _check_labels(clean, num_classes).copy()
    if kind == "sym":
        return symmetric_noise(clean, num_classes, rate, convention, rng)  # type: ignore[arg-type]
    return asymmetric_noise(clean, num_classes, rate, asym_map, rng)  # type: ignore[arg-type]


def initial_confidence_mask(
    noisy: np.ndarray,
    clean: np.ndarray | None,
    num_classes: int,
    *,
    init_per_class: int,
    seeded: bool,
    seed: int,
) -> np.ndarray:
    """The initial confidence set G as a boolean mask over the samples.

    `seeded` (simulated noise with `noise.init: verified`): per class, `init_per_class` samples
    whose noisy label is correct, standing in for a small manually verified subset. Otherwise
    (real noise, unknown clean labels, or `noise.init: all`): every sample.
    """
    noisy = np.asarray(noisy)
    if not seeded or clean is None:
        return np.ones(len(noisy), dtype=bool)
    clean = np.asarray(clean)
    if clean.shape != noisy.shape:
        raise ValueError(f"clean {clean.shape} and noisy {noisy.shape} labels differ in shape")
    if init_per_class < 1:
        raise UserError(f"noise.init_per_class must be at least 1; got {init_per_class}")
    rng = np.random.default_rng([seed, _INIT_MASK_STREAM])
    mask = np.zeros(len(noisy), dtype=bool)
    for c in range(num_classes):
        candidates = np.flatnonzero((noisy == c) & (clean == c))
        if len(candidates) < init_per_class:
            logger.warning(
                "class %d has only %d correctly labelled samples, fewer than init_per_class=%d; "
                "the initial confidence set takes all of them",
                c, len(candidates), init_per_class,
            )  # fmt: skip
            mask[candidates] = True
        else:
            mask[rng.choice(candidates, size=init_per_class, replace=False)] = True
    return mask


def realised_rate(clean: np.ndarray, noisy: np.ndarray) -> float:
    """Share of samples whose noisy label differs from the clean one."""
    clean, noisy = np.asarray(clean), np.asarray(noisy)
    if clean.shape != noisy.shape:
        raise ValueError(f"clean {clean.shape} and noisy {noisy.shape} labels differ in shape")
    return float(np.mean(clean != noisy)) if len(clean) else 0.0


# --------------------------------------------------------------------------- the label file


@dataclass
class LabelFile:
    """A label file's table (see LABEL_COLUMNS) and the noise setting that made it."""

    table: pd.DataFrame
    metadata: dict


def build_label_table(
    index: np.ndarray, clean: np.ndarray | None, noisy: np.ndarray, init_mask: np.ndarray
) -> pd.DataFrame:
    """One row per training sample; clean-label columns are <NA> when clean labels are unknown."""
    index, noisy, init_mask = np.asarray(index), np.asarray(noisy), np.asarray(init_mask)
    n = len(index)
    if len(noisy) != n or len(init_mask) != n or (clean is not None and len(clean) != n):
        raise ValueError("index, clean, noisy and init_mask must have the same length")
    if clean is None:
        clean_col = pd.array([pd.NA] * n, dtype="Int64")
        is_noisy = pd.array([pd.NA] * n, dtype="boolean")
    else:
        clean = np.asarray(clean, dtype=np.int64)
        clean_col = pd.array(clean, dtype="Int64")
        is_noisy = pd.array(clean != noisy, dtype="boolean")
    return pd.DataFrame(
        {
            "index": index.astype(np.int64),
            "clean_label": clean_col,
            "noisy_label": noisy.astype(np.int64),
            "is_noisy": is_noisy,
            "in_initial_confidence_set": init_mask.astype(bool),
        }
    )


def write_label_file(table: pd.DataFrame, path: str | Path, metadata: dict) -> None:
    """Write the label file atomically: a crash leaves the old file or the new one, never half.

    The noise setting goes, as sorted-key JSON, under the schema-metadata key b"mtadcs".
    The bytes depend only on the inputs (no timestamps), so a re-run is byte-identical.
    """
    path = Path(path)
    missing = [c for c in LABEL_COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"label table lacks columns {missing}")
    arrow = pa.Table.from_pandas(table.loc[:, list(LABEL_COLUMNS)], preserve_index=False)
    meta = dict(arrow.schema.metadata or {})
    meta[METADATA_KEY] = json.dumps(metadata, sort_keys=True, default=_json_default).encode()
    arrow = arrow.replace_schema_metadata(meta)
    with atomic_path(path) as tmp:
        pq.write_table(arrow, tmp)


def _json_default(value: Any) -> Any:
    """JSON for the numpy scalars and paths that metadata tends to carry."""
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"label file metadata value {value!r} is not JSON-serialisable")


def read_label_file(
    path: str | Path, *, num_classes: int | None = None, expected_index: np.ndarray | None = None
) -> LabelFile:
    """Read and validate a label file written by write_label_file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"label file {path} not found; run the noise stage first")
    try:
        arrow = pq.read_table(path)
    except Exception as exc:  # Arrow/OS errors: unreadable either way
        raise UserError(
            f"{path}: not a readable Parquet label file ({type(exc).__name__}); re-run the noise stage"
        ) from exc
    missing = [c for c in LABEL_COLUMNS if c not in arrow.column_names]
    if missing:
        raise UserError(f"{path}: missing column(s) {missing}; re-run the noise stage")
    raw_meta = (arrow.schema.metadata or {}).get(METADATA_KEY)
    try:
        metadata = json.loads(raw_meta) if raw_meta else {}
    except ValueError as exc:
        raise UserError(f"{path}: corrupt mtadcs metadata; re-run the noise stage") from exc
    table = _normalise_dtypes(arrow.to_pandas().loc[:, list(LABEL_COLUMNS)], path)
    if num_classes is not None:
        _check_table_labels(table, num_classes, path)
    if expected_index is not None:
        _check_table_index(table, np.asarray(expected_index), path)
    return LabelFile(table=table, metadata=metadata)


def _normalise_dtypes(table: pd.DataFrame, path: Path) -> pd.DataFrame:
    """Give each column its documented dtype, whatever the writer's pandas metadata said."""
    for col in ("index", "noisy_label", "in_initial_confidence_set"):
        if table[col].isna().any():
            row = int(np.argmax(table[col].isna().to_numpy()))
            raise UserError(f"{path}: row {row} has no {col}; re-run the noise stage")
    try:
        return table.astype(
            {
                "index": "int64",
                "clean_label": "Int64",
                "noisy_label": "int64",
                "is_noisy": "boolean",
                "in_initial_confidence_set": "bool",
            }
        )
    except (TypeError, ValueError) as exc:
        raise UserError(f"{path}: a column has the wrong type ({exc}); re-run the noise stage") from exc


def _check_table_labels(table: pd.DataFrame, num_classes: int, path: Path) -> None:
    for col in ("noisy_label", "clean_label"):
        values = table[col]
        bad = (values.notna() & ((values < 0) | (values >= num_classes))).to_numpy(dtype=bool)
        if bad.any():
            row = int(np.argmax(bad))
            raise UserError(
                f"{path}: row {row} has {col} {values.iloc[row]}, outside [0, {num_classes}); "
                "was it written for another dataset? re-run the noise stage"
            )


def _check_table_index(table: pd.DataFrame, expected: np.ndarray, path: Path) -> None:
    index = table["index"].to_numpy()
    if len(index) != len(expected):
        raise UserError(
            f"{path}: has {len(index)} rows but the dataset has {len(expected)} samples; "
            "re-run the noise stage for this dataset"
        )
    bad = index != expected
    if bad.any():
        row = int(np.argmax(bad))
        raise UserError(
            f"{path}: row {row} is sample {index[row]} but the dataset expects {expected[row]}; "
            "re-run the noise stage for this dataset"
        )


# --------------------------------------------------------------------------- small checks


def _check_labels(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """int64 copy-free view of clean labels; out-of-range labels are a data-loading bug."""
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise ValueError(f"labels must be a 1-D integer array; got {labels.dtype} {labels.shape}")
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes}); got [{labels.min()}, {labels.max()}]")
    return labels.astype(np.int64, copy=False)


def _check_rate(rate: float) -> None:
    if not 0.0 <= float(rate) <= 1.0:
        raise UserError(f"noise.rate must lie in [0, 1]; got {rate}")


def _round_half_up(x: float) -> int:
    """round() without banker's rounding, so 0.5 of 5 samples is 3 whatever the parity."""
    return int(np.floor(x + 0.5))
