"""Checks that need a CUDA device (skipped without one; `benchmarks/gpu_check.sh` runs them):
bf16 autocast training, the device-resident data path on the GPU, and data-parallel training
over NCCL when the machine has two GPUs or more."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.method import engine
from pipeline.method.device import Placement
from pipeline.method.trainer import TrainingLabels
from tests.test_engine import data, labels, make_cell  # noqa: F401  (module fixtures)

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
GPU_RUNTIME = {"device": "cuda", "amp": True, "channels_last": True, "threads": 1, "workers": 0, "seed": 0,
               "progress": "log", "eval_batch_size": 64}


@cuda
@pytest.mark.parametrize("data_path", ["resident", "loader"])
def test_a_bf16_run_on_the_gpu_trains_selects_and_stays_finite(tmp_path, data, labels, data_path) -> None:  # noqa: F811
    cell = make_cell(runtime={**GPU_RUNTIME, "data_path": data_path})
    warm = engine.run_warmup(cell, data, labels, tmp_path / "w")
    assert warm.device.type == "cuda" and warm.place.amp
    trainer = engine.run_train(cell, data, labels, tmp_path / "w" / engine.CHECKPOINT, tmp_path / "t")
    losses = [r["loss"] for r in warm.history + trainer.history if "loss" in r]
    assert losses and np.isfinite(losses).all()
    assert trainer.history[-1]["test_top1"] > 50.0  # colour classes: any working model separates them
    assert trainer.history[0]["removed"] > 0  # the planted twins force a removal (see tests/test_engine.py)


@cuda
def test_draws_outside_G_train_on_the_gpu_with_the_contrastive_loss(tmp_path, data, labels) -> None:  # noqa: F811
    """method.outside_g_draws: the keys' membership mask (built on the CPU positions) indexes CUDA keys."""
    cell = make_cell(runtime={**GPU_RUNTIME, "data_path": "resident"}, method={"outside_g_draws": "posterior"},
                     optim={"iters_per_epoch": "S"})
    engine.run_warmup(cell, data, labels, tmp_path / "w")
    trainer = engine.run_train(cell, data, labels, tmp_path / "w" / engine.CHECKPOINT, tmp_path / "t")
    losses = [r["loss_lcl"] for r in trainer.history if "loss_lcl" in r]
    assert losses and np.isfinite(losses).all() and (trainer.draw_weight[~trainer.in_G] > 0).any()


# Switches no other CUDA test turns on: forward correction of G's outside (after an all-data
# warm-up, T from the verified seed), FixMatch with per-sample loss weights, the logit-adjusted loss.
GPU_SWITCHES = {
    "forward": {"warmup_set": "all", "semi_supervised": "forward", "fixmatch_ratio": 0.5,
                "logit_adjustment": "uniform", "agreement": "posterior"},
    "fixmatch-weighted": {"semi_supervised": "fixmatch", "fixmatch_ratio": 0.5, "loss_weights": "posterior",
                          "selection_model": "ema"},
}


def run_every_phase(cell, data, labels, root):  # noqa: F811
    """Warm-up, MTaDCS epochs and fine-tune of one cell; the final checkpoint's path."""
    engine.run_warmup(cell, data, labels, root / "w")
    engine.run_train(cell, data, labels, root / "w" / engine.CHECKPOINT, root / "t")
    engine.run_finetune(cell, data, labels, root / "t" / engine.CHECKPOINT, root / "f")
    return root / "f" / engine.CHECKPOINT


@cuda
@pytest.mark.parametrize("switches", list(GPU_SWITCHES))
def test_every_phase_on_the_gpu_evaluates_as_on_the_cpu(tmp_path, data, labels, switches) -> None:  # noqa: F811
    """Train, fine-tune, evaluate (kNN on the GPU) and the label-issue probabilities (mirror flip)
    under bf16 with the switches above; the final model then reads the same on the CPU."""
    verified = TrainingLabels(labels.given, labels.clean, labels.init_G, verified=True)
    gpu = make_cell(runtime={**GPU_RUNTIME, "data_path": "resident"}, method=GPU_SWITCHES[switches])
    final = run_every_phase(gpu, data, verified, tmp_path)
    cpu = make_cell(method=GPU_SWITCHES[switches])
    on_gpu, on_cpu = (engine.evaluate_checkpoint(c, data, verified, final) for c in (gpu, cpu))
    probs_gpu, probs_cpu = (engine.train_probabilities(c, data, final) for c in (gpu, cpu))
    assert np.isfinite(probs_gpu).all() and np.allclose(probs_gpu.sum(1), 1.0, atol=1e-4)
    assert np.abs(probs_gpu - probs_cpu).max() < 0.05  # bf16 trunk, float32 heads
    for key in ("test/top1", "test/knn"):  # a few of the 40 test images may sit on a tie
        assert abs(on_gpu[key] - on_cpu[key]) <= 10.0, key


@cuda
def test_the_resident_path_keeps_the_images_on_the_gpu(data) -> None:  # noqa: F811
    cell = make_cell(runtime={**GPU_RUNTIME, "data_path": "auto"})
    place = Placement.for_runtime(cell.runtime)
    views = engine._train_transform(cell, data)
    batches = place.batches(data.train, views, None, 16, shuffle=True, generator=torch.Generator().manual_seed(0))
    (query, key), pos = next(iter(batches))
    assert place.data_path == "resident" and query.is_cuda and key.is_cuda and not pos.is_cuda


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
def test_two_gpus_over_nccl_match_one_process(tmp_path_factory) -> None:
    from tests import test_distributed as ddp

    base = ddp._workspace(tmp_path_factory.mktemp("nccl") / "one", device="cuda", gpu_settings=True)
    ddp._stage(base, "noise", 1)
    two = tmp_path_factory.getbasetemp() / "nccl-two"
    import shutil

    shutil.copytree(base, two)
    for root, processes in ((base, 1), (two, 2)):
        for stage in ("warmup", "train"):
            log = ddp._stage(root, stage, processes).stderr  # two: torchrun on 2 GPUs
            if processes == 2 and stage == "warmup":
                assert "nccl" in log
    G1, history1 = ddp._final(base)
    G2, history2 = ddp._final(two)
    assert np.mean(G1 != G2) <= ddp.G_TOLERANCE
    assert abs(history1[-1]["test_top1"] - history2[-1]["test_top1"]) <= ddp.TOP1_TOLERANCE
