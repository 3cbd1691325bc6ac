"""Stage wrappers: a cell that could not run earlier runs once its data is there."""

from __future__ import annotations

import json

from stages.common import clear_not_run, is_not_run, write_not_run


def test_a_stale_not_run_status_is_cleared(tmp_path) -> None:
    out = tmp_path / "warmup"
    write_not_run(out, "data.path not set")
    assert is_not_run(out) and json.loads((out / "status.json").read_text())["reason"] == "data.path not set"
    clear_not_run(out)
    assert not is_not_run(out)
    clear_not_run(out)  # idempotent


def _context(tmp_path, data: dict, noise: dict, **sections):
    import yaml

    from stages.common import context

    params = {"data": data, "noise": noise, "tracking": {"enabled": False}, "runs": {"c": {}}, **sections}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    return context(tmp_path, "params.yaml", "c")


def test_a_users_folder_has_no_clean_labels_and_starts_with_everything_in_G(tmp_path) -> None:
    from stages import noise
    from stages.common import load_data, load_labels
    from tests.fixtures import write_image_tree

    write_image_tree(tmp_path / "imgs", {"train": {"a": 6, "b": 6}, "test": {"a": 2, "b": 2}})
    ctx = _context(tmp_path, {"dataset": "folder", "path": "imgs"}, {"kind": "none"})
    noise.run(ctx)
    labels = load_labels(ctx, load_data(ctx))
    assert labels.clean is None and labels.init_G.all() and not labels.verified


def test_injected_noise_on_digits_keeps_clean_labels_and_a_verified_subset(tmp_path) -> None:
    from pipeline.data.noise import write_label_file
    from stages import noise
    from stages.common import load_data, load_labels

    ctx = _context(tmp_path, {"dataset": "digits"}, {"kind": "sym", "rate": 0.5, "init_per_class": 3})
    table, metadata = noise.make_label_table(ctx, load_data(ctx))
    assert table["clean_label"].notna().all() and table["in_initial_confidence_set"].sum() == 30
    assert abs(metadata["realised_rate"] - 0.45) < 0.03  # 'any' convention: r (K-1)/K
    write_label_file(table, ctx.paths.labels, metadata)
    assert load_labels(ctx, load_data(ctx)).verified


def test_injected_noise_without_a_seed_starts_G_as_all_of_S_with_clean_labels_kept(tmp_path) -> None:
    from pipeline.data.noise import write_label_file
    from stages import noise
    from stages.common import load_data, load_labels

    ctx = _context(tmp_path, {"dataset": "digits"}, {"kind": "sym", "rate": 0.5, "init": "all"})
    table, metadata = noise.make_label_table(ctx, load_data(ctx))
    assert table["in_initial_confidence_set"].all() and table["is_noisy"].any()
    write_label_file(table, ctx.paths.labels, metadata)
    labels = load_labels(ctx, load_data(ctx))
    assert labels.clean is not None and labels.init_G.all() and not labels.verified  # nothing is protected


def test_a_training_stage_records_what_it_cost(tmp_path) -> None:
    from stages import noise, training

    ctx = _context(tmp_path, {"dataset": "digits"}, {"kind": "sym", "rate": 0.5, "init_per_class": 3},
                   model={"width": 4, "proj_dim": 8}, method={"queue_size": 32},
                   optim={"epochs": 2, "warmup_epochs": 2, "lr_milestones": [], "batch_size": 16},
                   runtime={"threads": 1, "progress": "log"})
    noise.run(ctx)
    training.run(ctx, "warmup")
    resources = ctx.paths.stage_dir("warmup") / "resources.json"
    usage = json.loads(resources.read_text())
    assert usage["peak_rss_mib"] > 50  # a torch process is never this small
    assert usage["epochs_logged"] == 2 and usage["wall_seconds"] > usage["mlflow_seconds"] >= 0.0
    before = (resources.read_bytes(), (ctx.paths.stage_dir("warmup") / "checkpoint.pt").read_bytes())
    training.run(ctx, "warmup")  # nothing left to train: DVC must see the same outputs
    assert (resources.read_bytes(), (ctx.paths.stage_dir("warmup") / "checkpoint.pt").read_bytes()) == before


def test_the_switch_set_tag_names_the_papers_row_and_each_variant_turned_on(tmp_path) -> None:
    from stages.common import switch_set

    paper = _context(tmp_path, {"dataset": "digits"}, {"kind": "sym", "rate": 0.5})
    assert switch_set(paper.cell) == "MTaDCS (full)"
    seedless = _context(tmp_path, {"dataset": "digits"}, {"kind": "sym", "rate": 0.5, "init": "all"},
                        method={"selection_model": "ema", "removal_patience": 3, "lof": False})
    assert switch_set(seedless.cell) == "CS+SR+CL+Mixup+LC (selection_model=ema, removal_patience=3, init=all)"
    self_seeded = _context(tmp_path, {"dataset": "digits"}, {"kind": "sym", "rate": 0.5, "init": "all"},
                           method={"self_seed_per_class": 100})
    assert switch_set(self_seeded.cell) == "MTaDCS (full) (self_seed_per_class=100, init=all)"
    kept = _context(tmp_path, {"dataset": "digits"}, {"kind": "sym", "rate": 0.5, "init": "all"},
                    method={"self_seed_per_class": 100, "self_seed_keep": True, "logit_adjustment": "uniform"})
    assert switch_set(kept.cell) == ("MTaDCS (full) (self_seed_per_class=100, self_seed_keep=True, "
                                     "logit_adjustment=uniform, init=all)")
    robust = _context(tmp_path, {"dataset": "digits"}, {"kind": "sym", "rate": 0.5},
                      method={"classification_loss": "gce"})
    assert switch_set(robust.cell) == "MTaDCS (full) (classification_loss=gce, gce_q=0.7)"
    averaged = _context(tmp_path, {"dataset": "digits"}, {"kind": "sym", "rate": 0.5},
                        finetune={"epochs": 0, "start": "ema"})
    assert switch_set(averaged.cell) == "MTaDCS (full) (finetune_start=ema)"
