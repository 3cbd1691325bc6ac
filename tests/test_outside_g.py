"""The losses on samples outside G: FixMatch and forward correction with a GLC transition matrix."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from pipeline.method.outside_g import estimate_transition, fixmatch_loss, forward_corrected_loss


def test_fixmatch_counts_only_confident_weak_predictions_but_averages_over_the_batch() -> None:
    weak = torch.tensor([[0.97, 0.03], [0.6, 0.4], [0.02, 0.98]])
    strong = torch.tensor([[0.0, 2.0], [5.0, 0.0], [1.0, 0.0]])
    loss, share = fixmatch_loss(strong, weak, threshold=0.95)
    expected = (F.cross_entropy(strong[0:1], torch.tensor([0])) + F.cross_entropy(strong[2:3], torch.tensor([1]))) / 3
    assert share == pytest.approx(2 / 3)
    assert loss.item() == pytest.approx(expected.item())


def test_fixmatch_with_no_confident_sample_adds_nothing() -> None:
    loss, share = fixmatch_loss(torch.randn(4, 3), torch.full((4, 3), 1 / 3), threshold=0.5)
    assert share == 0.0 and loss.item() == 0.0


def test_transition_rows_are_the_mean_predictions_of_each_clean_class() -> None:
    probs = torch.tensor([[0.6, 0.4, 0.0], [0.8, 0.2, 0.0], [0.0, 1.0, 0.0]])
    T = estimate_transition(probs, torch.tensor([0, 0, 1]), 3)
    torch.testing.assert_close(T[0], torch.tensor([0.7, 0.3, 0.0]))
    torch.testing.assert_close(T[1], torch.tensor([0.0, 1.0, 0.0]))
    torch.testing.assert_close(T[2], torch.tensor([0.0, 0.0, 1.0]))  # no trusted sample: identity row


def test_forward_correction_is_plain_cross_entropy_under_the_identity() -> None:
    logits, labels = torch.randn(6, 4), torch.tensor([0, 1, 2, 3, 0, 1])
    loss = forward_corrected_loss(logits, labels, torch.eye(4))
    assert loss.item() == pytest.approx(F.cross_entropy(logits, labels).item(), rel=1e-5)


def test_forward_correction_forgives_the_flip_the_matrix_predicts() -> None:
    """With T saying class 0 is always labelled 1, a confident class-0 prediction under label 1
    costs almost nothing, while plain CE punishes it."""
    T = torch.tensor([[0.0, 1.0], [0.0, 1.0]])
    logits, noisy = torch.tensor([[6.0, -6.0]]), torch.tensor([1])
    assert forward_corrected_loss(logits, noisy, T).item() < 1e-3
    assert F.cross_entropy(logits, noisy).item() > 10


def test_forward_correction_stays_float32_under_bf16_autocast() -> None:
    """softmax @ T before the log: autocast would run the product in bf16 (CUDA training runs
    under it; CPU autocast rounds the same way, so this runs without a GPU)."""
    torch.manual_seed(0)
    logits, labels = torch.randn(32, 5) * 3, torch.randint(0, 5, (32,))
    T = torch.full((5, 5), 0.1) + 0.5 * torch.eye(5)
    T = T / T.sum(1, keepdim=True)
    want = forward_corrected_loss(logits, labels, T)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = forward_corrected_loss(logits, labels, T)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
