"""Mixup and the (soft) classification losses of Eq. 5: cross-entropy and generalized cross-entropy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pipeline.method.losses import (
    generalized_cross_entropy,
    logit_adjustment,
    mixup,
    sample_mixup_lambda,
    soft_classification_loss,
    soft_cross_entropy,
    target_prior,
)

K = 5


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def _batch(n: int = 8) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    x = torch.randn(n, 3, 4, 4)
    labels = torch.randint(0, K, (n,))
    return x, labels, F.one_hot(labels, K).float()


def test_soft_ce_equals_cross_entropy_for_one_hot() -> None:
    logits = torch.randn(8, K) * 3
    labels = torch.randint(0, K, (8,))
    torch.testing.assert_close(
        soft_cross_entropy(logits, F.one_hot(labels, K).float()), F.cross_entropy(logits, labels)
    )


def test_soft_ce_matches_torch_probability_targets() -> None:
    logits = torch.randn(8, K)
    targets = torch.softmax(torch.randn(8, K), dim=1)
    torch.testing.assert_close(soft_cross_entropy(logits, targets), F.cross_entropy(logits, targets))


def test_soft_ce_is_stable_for_large_logits() -> None:
    logits = torch.tensor([[1000.0, -1000.0, 0.0]], requires_grad=True)
    loss = soft_cross_entropy(logits, torch.tensor([[0.5, 0.5, 0.0]]))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()


def test_gce_at_q_one_is_half_the_mean_absolute_error() -> None:
    logits = torch.randn(8, K) * 2
    labels = torch.randint(0, K, (8,))
    p_label = torch.softmax(logits, 1)[torch.arange(8), labels]
    torch.testing.assert_close(generalized_cross_entropy(logits, F.one_hot(labels, K).float(), 1.0),
                               (1 - p_label).mean())


def test_gce_tends_to_cross_entropy_as_q_goes_to_zero() -> None:
    logits = torch.randn(8, K) * 2
    labels = torch.randint(0, K, (8,))
    gce = generalized_cross_entropy(logits, F.one_hot(labels, K).float(), 1e-5)
    torch.testing.assert_close(gce, F.cross_entropy(logits, labels), rtol=1e-4, atol=1e-4)


def test_gce_gradient_is_the_ce_gradient_scaled_by_p_label_to_the_q() -> None:
    """What makes it robust: a sample whose label the model finds unlikely pulls less."""
    q = 0.7
    logits = (torch.randn(6, K) * 2).requires_grad_()
    labels = torch.randint(0, K, (6,))
    # Sum over the batch (x 6): per-sample gradients, not the mean's.
    (6 * generalized_cross_entropy(logits, F.one_hot(labels, K).float(), q)).backward()
    probs = torch.softmax(logits.detach(), 1)
    ce_grad = probs - F.one_hot(labels, K).float()
    expected = ce_grad * probs[torch.arange(6), labels][:, None] ** q
    torch.testing.assert_close(logits.grad, expected)


def test_gce_of_a_mixed_target_weighs_the_two_labels_by_lambda() -> None:
    logits = torch.randn(4, K)
    a, b = F.one_hot(torch.tensor([0, 1, 2, 3]), K).float(), F.one_hot(torch.tensor([4, 3, 2, 1]), K).float()
    lam = 0.7
    mixed = generalized_cross_entropy(logits, lam * a + (1 - lam) * b, 0.7)
    parts = lam * generalized_cross_entropy(logits, a, 0.7) + (1 - lam) * generalized_cross_entropy(logits, b, 0.7)
    torch.testing.assert_close(mixed, parts)


def test_gce_is_stable_for_large_logits() -> None:
    logits = torch.tensor([[1000.0, -1000.0, 0.0]], requires_grad=True)
    loss = generalized_cross_entropy(logits, torch.tensor([[0.0, 1.0, 0.0]]), 0.7)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()


def test_soft_classification_loss_picks_the_configured_loss() -> None:
    logits, targets = torch.randn(8, K), torch.softmax(torch.randn(8, K), 1)
    torch.testing.assert_close(soft_classification_loss(logits, targets, "ce"), soft_cross_entropy(logits, targets))
    torch.testing.assert_close(soft_classification_loss(logits, targets, "gce", 0.5),
                               generalized_cross_entropy(logits, targets, 0.5))
    with pytest.raises(ValueError, match="classification loss"):
        soft_classification_loss(logits, targets, "mae")


def test_mixup_alpha_zero_is_identity() -> None:
    x, _, t = _batch()
    state = torch.get_rng_state()
    for alpha in (0.0, -1.0):
        mx, mt, lam, _ = mixup(x, t, alpha)
        assert lam == 1.0 and torch.equal(mx, x) and torch.equal(mt, t)
    assert torch.equal(torch.get_rng_state(), state)  # no draw when not mixing


@pytest.mark.parametrize("alpha", [0.2, 1.0, 4.0])
def test_lambda_at_least_half(alpha: float) -> None:
    gen = torch.Generator().manual_seed(1)
    lams = [sample_mixup_lambda(alpha, gen) for _ in range(200)]
    assert all(0.5 <= lam <= 1.0 for lam in lams)
    assert len(set(lams)) > 100  # actually random


def test_mixup_is_a_convex_combination_with_a_permutation() -> None:
    x, _, t = _batch(16)
    mx, mt, lam, perm = mixup(x, t, 1.0, torch.Generator().manual_seed(3))
    assert 0.5 <= lam <= 1.0
    assert sorted(perm.tolist()) == list(range(16))  # the returned partners are a permutation
    torch.testing.assert_close(mx, lam * x + (1 - lam) * x[perm])
    torch.testing.assert_close(mt.sum(dim=1), torch.ones(16))
    assert (mt >= 0).all()
    # Recover each partner from the targets' mixing and check the inputs mixed the same way.
    for i in range(16):
        partners = [j for j in range(16) if torch.allclose(mx[i], lam * x[i] + (1 - lam) * x[j], atol=1e-6)]
        assert partners, f"sample {i} is not lam * x_i + (1 - lam) * x_j for any j"
        j = partners[0]
        torch.testing.assert_close(mt[i], lam * t[i] + (1 - lam) * t[j])


def test_mixup_soft_targets_stay_distributions() -> None:
    x = torch.randn(8, 2)
    t = torch.softmax(torch.randn(8, K), dim=1)
    _, mt, _, _ = mixup(x, t, 1.0, torch.Generator().manual_seed(0))
    torch.testing.assert_close(mt.sum(dim=1), torch.ones(8))


def test_mixup_determinism() -> None:
    x, _, t = _batch()
    a = mixup(x, t, 1.0, torch.Generator().manual_seed(7))
    b = mixup(x, t, 1.0, torch.Generator().manual_seed(7))
    c = mixup(x, t, 1.0, torch.Generator().manual_seed(8))
    assert a[2] == b[2] and torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert a[2] != c[2]
    # Without a generator the global torch seed controls it.
    torch.manual_seed(5)
    d = mixup(x, t, 1.0)
    torch.manual_seed(5)
    e = mixup(x, t, 1.0)
    assert d[2] == e[2] and torch.equal(d[0], e[0])


def test_mixup_rejects_mismatched_batch() -> None:
    x, _, t = _batch(8)
    with pytest.raises(ValueError):
        mixup(x, t[:4], 1.0)


def test_logit_adjustment_is_the_log_ratio_of_the_training_shares_to_the_target() -> None:
    labels = np.array([0] * 6 + [1] * 3 + [2] * 1)
    shift = logit_adjustment(labels, target_prior("uniform", labels, 4))
    expected = np.log(np.array([6, 3, 1, 1]) / 11) - np.log(0.25)  # class 3 absent: counted once
    np.testing.assert_allclose(shift.numpy(), expected, rtol=1e-6)
    np.testing.assert_allclose(target_prior("given", labels, 4), np.array([6, 3, 1, 1]) / 11)
    assert torch.equal(logit_adjustment(labels, target_prior("given", labels, 4)), torch.zeros(4))
    with pytest.raises(ValueError, match="none"):
        target_prior("none", labels, 4)


def test_the_logit_adjusted_loss_fits_the_target_prior_not_the_training_shares() -> None:
    """One input seen under labels drawn 70/20/10: plain cross-entropy's best logits predict
    those shares; with the adjustment towards uniform they predict uniform (a convex problem)."""
    labels = torch.tensor([0] * 7 + [1] * 2 + [2] * 1)
    shift = logit_adjustment(labels.numpy(), target_prior("uniform", labels.numpy(), 3))
    fitted = {}
    for name, add in (("plain", torch.zeros(3)), ("adjusted", shift)):
        z = torch.zeros(3, requires_grad=True)
        optimizer = torch.optim.LBFGS([z], max_iter=200)

        def closure(add=add, z=z, optimizer=optimizer):
            optimizer.zero_grad()
            loss = F.cross_entropy((z + add).expand(len(labels), 3), labels)
            loss.backward()
            return loss
        optimizer.step(closure)
        fitted[name] = z.detach().softmax(0)
    torch.testing.assert_close(fitted["plain"], torch.tensor([0.7, 0.2, 0.1]), atol=1e-3, rtol=0)
    torch.testing.assert_close(fitted["adjusted"], torch.full((3,), 1 / 3), atol=1e-3, rtol=0)


def test_weighted_classification_loss_is_the_weighted_mean_over_the_batch() -> None:
    """method.loss_weights: sum w l / sum w, so equal weights give the plain mean (the step is not
    scaled) and a zero weight takes a sample out of the loss and its gradient."""
    from pipeline.method.losses import soft_classification_loss

    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0]], requires_grad=True)
    targets = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    per_sample = -(targets * torch.log_softmax(logits, 1)).sum(1)
    for kind in ("ce", "gce"):
        plain = soft_classification_loss(logits, targets, kind)
        assert soft_classification_loss(logits, targets, kind, weights=torch.full((3,), 0.3)).item() == \
            pytest.approx(plain.item())
    weighted = soft_classification_loss(logits, targets, weights=torch.tensor([1.0, 0.0, 3.0]))
    assert weighted.item() == pytest.approx(((per_sample[0] + 3 * per_sample[2]) / 4).item())
    weighted.backward()
    assert torch.equal(logits.grad[1], torch.zeros(2))  # the zero-weight sample pulls nothing
