"""noise stage: inject (or read) noisy labels and pick the initial confidence set → data/labels/<cell>.parquet."""

from __future__ import annotations

from pipeline.config import CLEAN_LABELLED
from pipeline.data import noise
from pipeline.data.datasets import Dataset
from pipeline.layout import NOT_RUN
from stages.common import StageContext, load_data, resolve_path, stage_run


def run(ctx: StageContext) -> None:
    out = ctx.paths.labels
    if ctx.skip_reason:
        noise.write_label_file(noise.build_label_table([], None, [], []), out,
                               {"status": NOT_RUN, "reason": ctx.skip_reason})
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
        asym_map=ctx.cell.noise.asym_map_for(ctx.cell.data.dataset), seed=n.seed, file=resolve_path(ctx, n.file), file_key=n.file_key,
        index=data.train.index)
    init = noise.initial_confidence_mask(noisy, clean, data.num_classes, init_per_class=n.init_per_class,
                                         seeded=n.seeded, seed=n.seed)
    metadata = {
        "cell": ctx.cell.name, "dataset": data.name, "num_classes": data.num_classes, "kind": n.kind,
        "rate": n.rate, "convention": n.sym_convention, "asym_map": ctx.cell.noise.asym_map_for(ctx.cell.data.dataset), "seed": n.seed,
        "init_per_class": n.init_per_class, "real_noise": n.real_noise, "seeded": n.seeded, "source_file": n.file,
        "file_key": n.file_key, "realised_rate": None if clean is None else noise.realised_rate(clean, noisy),
    }
    return noise.build_label_table(data.train.index, clean, noisy, init), metadata
