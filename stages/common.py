"""What every stage does before and after its one library call: load the cell, its data and
labels, open its MLflow run, and write small JSON/CSV outputs atomically."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline import distributed
from pipeline.config import CellConfig, cell_identity, load_params, resolve_cell
from pipeline.data.datasets import Dataset, load_dataset
from pipeline.data.noise import read_label_file
from pipeline.files import atomic_path, write_text_atomic
from pipeline.layout import NOT_RUN, CellPaths, home_root
from pipeline.method.trainer import TrainingLabels
from pipeline.tracking import mlflow_runs, provenance

log = logging.getLogger(__name__)
CODE_ROOT = Path(__file__).resolve().parents[1]  # the directory holding pipeline/ and stages/


@dataclass
class StageContext:
    root: Path
    cell: CellConfig
    paths: CellPaths

    @property
    def skip_reason(self) -> str | None:
        """Why this cell cannot run here (WebVision without its data), or None."""
        return self.cell.data.skip_reason


def context(root: str | Path, params_file: str | Path, cell_name: str) -> StageContext:
    root = Path(root).resolve()
    params_path = Path(params_file) if Path(params_file).is_absolute() else root / params_file
    cell = resolve_cell(load_params(params_path), cell_name)
    return StageContext(root, cell, CellPaths(root, cell_name))


def resolve_path(ctx: StageContext, path: str | None) -> Path | None:
    """Paths in params.yaml are relative to the project root; in a queued experiment's temporary
    copy, a path the copy lacks (untracked data, downloads) is the repository's."""
    if path is None or Path(path).is_absolute():
        return None if path is None else Path(path)
    here = ctx.root / path
    return here if here.exists() else home_root(ctx.root) / path


def load_data(ctx: StageContext) -> Dataset:
    d = ctx.cell.data
    return load_dataset(d.dataset, root=resolve_path(ctx, d.root), path=resolve_path(ctx, d.path),
                        download=d.download, image_size=d.image_size, num_classes=d.num_classes,
                        ilsvrc_root=resolve_path(ctx, d.ilsvrc_root))


def load_labels(ctx: StageContext, data: Dataset) -> TrainingLabels:
    """The noise stage's label file, checked against this dataset's samples."""
    file = read_label_file(ctx.paths.labels, num_classes=data.num_classes, expected_index=data.train.index)
    table = file.table
    clean = None if table["clean_label"].isna().any() else table["clean_label"].to_numpy(dtype=np.int64)
    return TrainingLabels(table["noisy_label"].to_numpy(dtype=np.int64), clean,
                          table["in_initial_confidence_set"].to_numpy(dtype=bool),
                          verified=clean is not None and is_seeded(file.metadata))


def is_seeded(metadata: dict) -> bool:
    """The label file's initial G is a verified seed (files written before `seeded` infer it)."""
    return bool(metadata.get("seeded", not metadata.get("real_noise", True)))


def digest(*parts: str | Path | dict) -> str:
    """A short hash of files and config dicts: what a checkpoint is resumable against."""
    h = hashlib.sha256()
    for part in parts:
        if isinstance(part, dict):
            h.update(json.dumps(part, sort_keys=True, default=str).encode())
        else:
            h.update(provenance.file_digest(part).encode())
    return h.hexdigest()[:16]


def write_json(path: Path, payload: dict) -> None:
    write_text_atomic(path, json.dumps(payload, indent=2, sort_keys=True, default=_plain) + "\n")


def _plain(value):
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def write_history(path: Path, history: list[dict]) -> None:
    with atomic_path(path) as tmp:
        pd.DataFrame(history).to_csv(tmp, index=False)


def write_not_run(out_dir: Path, reason: str) -> None:
    """Outputs of a stage that cannot run here, so DVC sees its outs and the report says why."""
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / "status.json", {"status": NOT_RUN, "reason": reason})


def clear_not_run(out_dir: Path) -> None:
    status = out_dir / "status.json"
    if status.exists():  # unlinking a missing file on a read-only filesystem still fails
        status.unlink()


def is_not_run(out_dir: Path) -> bool:
    status = out_dir / "status.json"
    return status.exists() and json.loads(status.read_text()).get("status") == NOT_RUN


# What a cell computes, for its MLflow parent: not how it ran (threads, progress) or was logged.
CELL_PARAMS_EXCLUDED = {"name", "runtime", "tracking", "report"}


def cell_tags(cell: CellConfig) -> dict[str, str]:
    identity = cell_identity(cell)
    return {
        "dataset": identity.dataset, "noise": identity.noise, "rate": "" if identity.rate is None else str(identity.rate),
        "sym_convention": identity.convention, "ablation": identity.row, "switch_set": switch_set(cell),
    }


def switch_set(cell: CellConfig) -> str:
    """The paper's row of the cell's switches, plus the variants beyond the paper it turns on."""
    m, default = cell.method, type(cell.method)()
    variants = [f"{name}={getattr(m, name)}" for name in VARIANT_FIELDS if getattr(m, name) != getattr(default, name)]
    if m.classification_loss == "gce":
        variants.append(f"gce_q={m.gce_q}")
    if m.agreement == "posterior":
        variants.append(f"posterior_min={m.posterior_min}")
    if cell.noise.init != type(cell.noise)().init:
        variants.append(f"init={cell.noise.init}")
    if cell.finetune.start != type(cell.finetune)().start:
        variants.append(f"finetune_start={cell.finetune.start}")
    return cell_identity(cell).row + (f" ({', '.join(variants)})" if variants else "")


VARIANT_FIELDS = ("warmup_set", "selection_model", "semi_supervised", "loss_filter", "lof_reference", "lof_space",
                  "removal_patience", "selection_patience", "agreement_min_prob", "min_class_keep", "removal_max_prob",
                  "self_seed_per_class", "self_seed_keep", "min_class_share", "logit_adjustment",
                  "classification_loss", "agreement", "loss_weights", "outside_g_draws")


@contextlib.contextmanager
def stage_run(ctx: StageContext, stage: str, labels_file: Path | None = None) -> Iterator[mlflow_runs.StageRun]:
    """The MLflow child run of this stage under the cell's parent run, with params and tags."""
    t = ctx.cell.tracking
    uri = mlflow_runs.default_tracking_uri(ctx.root)
    labels_digest = provenance.file_digest(labels_file or ctx.paths.labels) if t.enabled else ""
    tags = cell_tags(ctx.cell) | {
        "git_commit": provenance.code_commit(ctx.root),
        "dvc_lock": provenance.dvc_lock_digest(ctx.root, f"{stage}@{ctx.cell.name}") or "none",
    }
    cell_params = ctx.cell.model_dump(mode="json", exclude=CELL_PARAMS_EXCLUDED)
    with mlflow_runs.stage_run(uri=uri, experiment=t.experiment, cell=ctx.cell.name, stage=stage,
                            labels_digest=labels_digest, tags=tags, cell_params=cell_params,
                            enabled=t.enabled and distributed.rank_from_env() == 0) as run:
        run.log_params(ctx.cell.model_dump(exclude={"name"}))
        yield run
