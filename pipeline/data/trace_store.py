"""Per-epoch traces of the MTaDCS loop as a Parquet dataset, one file per epoch.

Layout: `<dir>/epoch=0012/part-0.parquet`, a hive-partitioned dataset, so
`pandas.read_parquet(dir)` returns every epoch with an `epoch` column in one call.
Each file holds, per sample: index, given label, current (corrected) label, prediction,
in_G, LOF score (null when not scored), selected / removed / flipped this epoch, and the
distance to its class centre; every `feature_every` epochs (and the last) also the
feature vector as float16 (a fixed-size list column), so features cost 2 bytes a dim.

Each epoch file is written atomically, so a killed run leaves only whole epochs.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline import faults
from pipeline.files import atomic_path

TRACE_COLUMNS = (
    "index", "given_label", "label", "pred", "in_G", "lof_score",
    "selected", "removed", "flipped", "dist_to_class_centre",
)


def epoch_dir(root: str | Path, epoch: int) -> Path:
    return Path(root) / f"epoch={epoch:04d}"


def write_epoch(root: str | Path, epoch: int, columns: dict[str, np.ndarray],
                features: np.ndarray | None = None) -> Path:
    """Write one epoch's trace; `columns` must hold every name in TRACE_COLUMNS."""
    missing = [c for c in TRACE_COLUMNS if c not in columns]
    if missing:
        raise ValueError(f"trace for epoch {epoch} lacks columns {missing}")
    arrays = {name: pa.array(columns[name]) for name in TRACE_COLUMNS}
    lof = np.asarray(columns["lof_score"], dtype=np.float32)
    arrays["lof_score"] = pa.array(lof, mask=np.isnan(lof))  # null, not NaN, where not scored
    if features is not None:
        feats = np.ascontiguousarray(features, dtype=np.float16)
        flat = pa.array(feats.reshape(-1))
        arrays["feature"] = pa.FixedSizeListArray.from_arrays(flat, feats.shape[1])
    table = pa.table(arrays)
    path = epoch_dir(root, epoch) / "part-0.parquet"
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")
        faults.reached("trace_write")
    return path


def drop_epochs_after(root: str | Path, epoch: int) -> None:
    """Remove traces of epochs later than `epoch` (left by a run that was killed mid-way)."""
    root = Path(root)
    if not root.exists():
        return
    for part in root.glob("epoch=*"):
        if int(part.name.split("=")[1]) > epoch:
            shutil.rmtree(part)


def read_traces(root: str | Path, columns: list[str] | None = None) -> pd.DataFrame:
    """All epochs as one frame with an integer `epoch` column."""
    if columns is not None and "epoch" not in columns:
        columns = [*columns, "epoch"]  # the partition column is only read when named
    frame = pd.read_parquet(root, columns=columns)
    frame["epoch"] = frame["epoch"].astype(int)
    return frame.sort_values(["epoch", "index"], kind="stable").reset_index(drop=True)


def read_features(root: str | Path, epoch: int) -> np.ndarray:
    """The float16 feature matrix stored for `epoch` (rows in sample order)."""
    table = pq.read_table(epoch_dir(root, epoch) / "part-0.parquet", columns=["feature"])
    column = table.column("feature").combine_chunks()
    return column.values.to_numpy(zero_copy_only=False).reshape(len(column), -1)
