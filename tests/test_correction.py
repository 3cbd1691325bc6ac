"""Tests of the self-ensemble label correction (Eq. 7)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pipeline.method.correction import correct_labels, init_soft_labels, scaled_alpha


def test_init_soft_labels_is_one_hot_float32() -> None:
    soft = init_soft_labels(np.array([2, 0, 1]), 3)
    assert soft.dtype == torch.float32
    torch.testing.assert_close(soft, torch.tensor([[0.0, 0, 1], [1, 0, 0], [0, 1, 0]]))
    assert init_soft_labels(torch.tensor([1]), 2).tolist() == [[0.0, 1.0]]


def test_init_soft_labels_rejects_out_of_range() -> None:
    with pytest.raises(ValueError, match="must lie in"):
        init_soft_labels(np.array([0, 3]), 3)


def _one_step(p_other: float, *, label: int = 0, pred: int = 1) -> tuple:
    """A 3-class sample whose soft label puts p_other on class 1 before the update."""
    soft = torch.tensor([[1.0 - p_other, p_other, 0.0]], dtype=torch.float64)
    return correct_labels(soft, torch.tensor([label]), torch.tensor([pred]), alpha=0.1, gamma=0.8)


def test_flips_exactly_when_the_other_class_exceeds_gamma() -> None:
    # After the step class 1 holds 0.9 * p + 0.1; it equals gamma = 0.8 at p = 7/9.
    p_gamma = 7 / 9
    _, labels, flipped = _one_step(p_gamma - 1e-6)
    assert not flipped.item() and labels.item() == 0
    _, labels, flipped = _one_step(p_gamma + 1e-6)
    assert flipped.item() and labels.item() == 1


def test_never_flips_when_the_argmax_is_the_label() -> None:
    soft = torch.tensor([[0.05, 0.95, 0.0], [1.0, 0.0, 0.0]])
    labels = torch.tensor([1, 0])
    for _ in range(50):  # predictions agree with the labels: they only get more confident
        soft, new_labels, flipped = correct_labels(soft, labels, labels, alpha=0.3, gamma=0.5)
        assert not flipped.any()
        torch.testing.assert_close(new_labels, labels)


def test_flip_takes_the_argmax_class() -> None:
    soft = torch.tensor([[0.05, 0.0, 0.95, 0.0]])
    _, labels, flipped = correct_labels(soft, torch.tensor([0]), torch.tensor([2]), alpha=0.01, gamma=0.8)
    assert flipped.tolist() == [True] and labels.tolist() == [2]


def test_soft_labels_stay_on_the_simplex() -> None:
    gen = torch.Generator().manual_seed(0)
    n, k = 200, 10
    labels = torch.randint(0, k, (n,), generator=gen)
    soft = init_soft_labels(labels, k)
    for _ in range(30):
        preds = torch.randint(0, k, (n,), generator=gen)
        soft, labels, _ = correct_labels(soft, labels, preds, alpha=0.2, gamma=0.8)
        assert (soft >= 0).all() and (soft <= 1).all()
        torch.testing.assert_close(soft.sum(dim=1), torch.ones(n))


def test_no_in_place_mutation() -> None:
    soft = init_soft_labels(np.array([0, 1, 2, 0]), 3)
    soft[0] = torch.tensor([0.1, 0.85, 0.05])
    labels = torch.tensor([0, 1, 2, 0])
    preds = torch.tensor([1, 0, 2, 1])
    before = (soft.clone(), labels.clone(), preds.clone())
    new_soft, new_labels, flipped = correct_labels(soft, labels, preds, alpha=0.5, gamma=0.8)
    assert flipped.tolist() == [True, False, False, False]
    for a, b in zip((soft, labels, preds), before, strict=True):
        assert torch.equal(a, b)
    assert new_soft.data_ptr() != soft.data_ptr() and new_labels.data_ptr() != labels.data_ptr()


def test_correct_labels_validates_inputs() -> None:
    soft = init_soft_labels(np.array([0, 1]), 2)
    with pytest.raises(ValueError, match="alpha"):
        correct_labels(soft, torch.tensor([0, 1]), torch.tensor([0, 1]), alpha=1.5, gamma=0.8)
    with pytest.raises(ValueError, match="expected"):
        correct_labels(soft, torch.tensor([0]), torch.tensor([0, 1]), alpha=0.1, gamma=0.8)
    with pytest.raises(ValueError, match="preds must lie"):
        correct_labels(soft, torch.tensor([0, 1]), torch.tensor([0, 2]), alpha=0.1, gamma=0.8)


def test_scaled_alpha_is_alpha_on_the_reference_schedule() -> None:
    assert scaled_alpha(0.01, 250) == 0.01
    assert scaled_alpha(0.3, 40, reference_epochs=40) == 0.3


@pytest.mark.parametrize("epochs", [1, 10, 50, 100, 1000])
def test_scaled_alpha_keeps_the_total_decay(epochs: int) -> None:
    a = scaled_alpha(0.01, epochs)
    assert math.isclose((1 - a) ** epochs, 0.99**250, rel_tol=1e-12)
    assert (a > 0.01) == (epochs < 250)


def test_scaled_alpha_matches_the_simulated_decay() -> None:
    # A sample whose prediction is always another class: after the whole run its original
    # class keeps the same share on a 25-epoch schedule as on the paper's 250 epochs.
    def remaining(alpha: float, epochs: int) -> float:
        soft = init_soft_labels(np.array([0]), 2).double()
        for _ in range(epochs):
            soft, _, _ = correct_labels(soft, torch.tensor([0]), torch.tensor([1]), alpha=alpha, gamma=1.0)
        return soft[0, 0].item()

    assert math.isclose(remaining(scaled_alpha(0.01, 25), 25), remaining(0.01, 250), rel_tol=1e-9)


def test_scaled_alpha_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        scaled_alpha(0.01, 0)
    with pytest.raises(ValueError):
        scaled_alpha(-0.1, 10)
