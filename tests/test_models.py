"""Shapes, norms, sizes and gradient flow of the two encoders (tiny inputs: CPU-cheap)."""

from __future__ import annotations

import pytest
import torch

from pipeline.method.models import (
    MODEL_ARCHS,
    ModelOutput,
    PreActResNet18,
    ResNet18,
    build_model,
    count_parameters,
)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def _check_output(out: ModelOutput, batch: int, num_classes: int, dim: int, proj_dim: int) -> None:
    assert isinstance(out, ModelOutput)
    assert out.logits.shape == (batch, num_classes)
    assert out.feature.shape == (batch, dim)
    assert out.projection.shape == (batch, proj_dim)
    ones = torch.ones(batch)
    torch.testing.assert_close(out.feature.norm(dim=1), ones)
    torch.testing.assert_close(out.projection.norm(dim=1), ones)


def test_preact_shapes_and_unit_norms() -> None:
    model = PreActResNet18(num_classes=10, width=8, proj_dim=16)
    assert model.feature_dim == 64
    out = model(torch.randn(2, 3, 32, 32))
    _check_output(out, batch=2, num_classes=10, dim=64, proj_dim=16)


def test_preact_accepts_other_image_sizes() -> None:
    # Global average pooling, not a fixed 4x4 pool: folder datasets may not be 32 px.
    out = PreActResNet18(num_classes=3, width=8).eval()(torch.randn(2, 3, 24, 24))
    assert out.logits.shape == (2, 3)


def test_resnet18_shapes_and_unit_norms() -> None:
    model = ResNet18(num_classes=50, proj_dim=128)
    assert model.feature_dim == 512
    out = model(torch.randn(2, 3, 64, 64))
    _check_output(out, batch=2, num_classes=50, dim=512, proj_dim=128)


def test_resnet18_rejects_other_widths() -> None:
    with pytest.raises(ValueError, match="width 64"):
        ResNet18(num_classes=10, width=16)


@pytest.mark.parametrize(("width", "low", "high"), [(16, 0.6e6, 0.8e6), (64, 10.5e6, 11.5e6)])
def test_preact_parameter_count(width: int, low: float, high: float) -> None:
    # The CPU protocol promises "about 0.7 M parameters" at width 16; the paper's net is ~11 M.
    n = count_parameters(build_model("preact_resnet18", 10, width=width))
    assert low < n < high


def test_resnet18_parameter_count() -> None:
    n = count_parameters(build_model("resnet18", 50))
    assert 11.0e6 < n < 11.5e6  # torchvision's 11.69 M less the 1000-way fc, plus two heads


@pytest.mark.parametrize("arch", MODEL_ARCHS)
def test_gradients_reach_every_parameter(arch: str) -> None:
    width = 8 if arch == "preact_resnet18" else 64
    model = build_model(arch, 4, width=width, proj_dim=8)
    out = model(torch.randn(3, 3, 32, 32))  # 32 px reaches 1x1 in torchvision's net too: cheap
    loss = torch.nn.functional.cross_entropy(out.logits, torch.tensor([0, 1, 2]))
    loss = loss + (out.projection[0] @ out.projection[1:].T).sum()
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []


def test_channels_last_matches_contiguous() -> None:
    model = PreActResNet18(num_classes=5, width=8).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ref = model(x)
        model = model.to(memory_format=torch.channels_last)
        out = model(x.to(memory_format=torch.channels_last))
    for a, b in zip(out, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_unknown_arch_lists_allowed() -> None:
    with pytest.raises(ValueError, match="preact_resnet18, resnet18"):
        build_model("vit", 10)


def test_heads_run_in_float32_under_bf16_autocast() -> None:
    """On CUDA training runs under bf16 autocast; the logits that selection reads must not be
    rounded to bf16's 8 bits (CPU autocast rounds the same way, so this runs without a GPU)."""
    model = PreActResNet18(num_classes=5, width=8).eval()
    pooled = (torch.randn(4, model.feature_dim) * 10).bfloat16()  # logits of order 10: a bf16 step of 0.06
    with torch.no_grad():
        expected = model.heads(pooled.float())  # the bf16 input's rounding is all that may remain
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model.heads(pooled)
    for got, want in zip(out, expected, strict=True):
        assert got.dtype == torch.float32
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
