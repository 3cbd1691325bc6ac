"""noise stage: inject (or read) noisy labels and pick the initial confidence set → data/labels/<cell>.parquet."""

from __future__ import annotations

from pipeline.data import noise
from pipeline.data.datasets import Dataset
from stages.common import StageContext, load_data, resolve_path, stage_run

# Datasets whose delivered labels are the clean ones (noise is injected on top). A user's
# folder of images and WebVision come with labels of unknown correctness: no clean labels,
# so no precision/recall, and kNN votes with the current labels.
CLEAN_LABELLED = ("cifar10", "cifar100", "digits", "npz")


def asym_map(ctx: StageContext) -> str:
    """noise.asym_map, or the dataset's own map (CIFAR-10/100); other datasets flip c → c+1."""
    chosen = ctx.cell.noise.asym_map
    if chosen:
        return chosen
    return ctx.cell.data.dataset if ctx.cell.data.dataset in ("cifar10", "cifar100") else "next"


def run(ctx: StageContext) -> None:
    out = ctx.paths.labels
    if ctx.skip_reason:
        noise.write_label_file(noise.build_label_table([], None, [], []), out,
                               {"status": "not run", "reason": ctx.skip_reason})
        return
    data = load_data(ctx)
    table, metadata = make_label_table(ctx, data)
    noise.write_label_file(table, out, metadata)
    with stage_run(ctx, "noise") as run:
        run.log_metrics({"realised_rate": metadata["realised_rate"] or 0.0, "init_G": int(table.in_initial_confidence_set.sum())})
        run.log_artifact(out, "labels")


def make_label_table(ctx: StageContext, data: Dataset):
    n = ctx.cell.noise
    delivered = data.train.labels
    clean = delivered if data.name in CLEAN_LABELLED else None
    noisy = noise.make_noisy_labels(
        delivered, data.num_classes, kind=n.kind, rate=n.rate, convention=n.sym_convention,
        asym_map=asym_map(ctx), seed=n.seed, file=resolve_path(ctx, n.file), file_key=n.file_key,
        index=data.train.index)
    init = noise.initial_confidence_mask(noisy, clean, data.num_classes, init_per_class=n.init_per_class,
                                         real_noise=n.real_noise, seed=n.seed)
    metadata = {
        "cell": ctx.cell.name, "dataset": data.name, "num_classes": data.num_classes, "kind": n.kind,
        "rate": n.rate, "convention": n.sym_convention, "asym_map": asym_map(ctx), "seed": n.seed,
        "init_per_class": n.init_per_class, "real_noise": n.real_noise, "source_file": n.file,
        "file_key": n.file_key, "realised_rate": None if clean is None else noise.realised_rate(clean, noisy),
    }
    return noise.build_label_table(data.train.index, clean, noisy, init), metadata
