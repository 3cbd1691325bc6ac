"""Cross-entropy with mixup on the confidence set G (paper Eq. 5).

The training loss of Eq. 6 is composed by the `Trainer` (`trainer.py`), not here::

    L = L_CE + lambda_lcl * L_LCL

with L_CE = `soft_classification_loss(logits_of_mixed_batch, t, kind, q)` (cross-entropy, the
paper's, or the generalized cross-entropy of `method.classification_loss`)
where `(x_mixed, t, lam) = mixup(x, one_hot(labels), mixup_alpha, generator)`, and L_LCL =
`pipeline.method.contrastive.local_supcon_loss` with the *mixed* query view's projection
against the unmixed key views and the queue, counted once per label of the mix and weighted
by lam and 1 - lam (Sel-CL's form; `Trainer._contrastive`). Both terms are
batch means over samples of G only; `lambda_lcl` is 1 in the paper (Eq. 6 has no
weight) and is kept as a parameter for the ablation of Table 3 (CL switched off).

Mixup follows Sel-CL (the paper's schedule and defaults are Sel-CL's): one lambda per
mini-batch, lambda ~ Beta(alpha, alpha), lambda := max(lambda, 1 - lambda) so that
each mixed sample stays closest to its own image, partners drawn by a random
permutation of the batch. mixup_alpha = 1 (uniform lambda) is METHOD.md's default.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor


def _torch_rng_seed(generator: torch.Generator | None) -> int:
    """A 63-bit seed drawn from `generator` (the global torch RNG when None)."""
    device = generator.device if generator is not None else torch.device("cpu")
    return int(torch.randint(0, 2**62, (1,), generator=generator, device=device).item())


def sample_mixup_lambda(alpha: float, generator: torch.Generator | None = None) -> float:
    """lambda ~ Beta(alpha, alpha), folded to max(lambda, 1 - lambda); 1.0 when alpha <= 0.

    torch's Beta/Gamma samplers accept no `torch.Generator`, so lambda is drawn by numpy
    from a seed that is itself drawn from the torch generator: one torch generator (or
    `torch.manual_seed` when None) still controls all the randomness, and numpy's
    global state is never touched.
    """
    if alpha <= 0:
        return 1.0
    lam = float(np.random.default_rng(_torch_rng_seed(generator)).beta(alpha, alpha))
    return max(lam, 1.0 - lam)


def mixup(
    x: Tensor,
    targets_onehot: Tensor,
    alpha: float,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor, float, Tensor | None]:
    """Mix each sample with a random partner in the batch: (x_mixed, targets_mixed, lambda, perm).

    `perm` (None when nothing is mixed) says which partner each row was mixed with, so a
    caller can weigh a second, label-based loss by lambda and 1 - lambda as well.

    `targets_onehot` (B, K) may be any probability vectors; the mixed targets are the same
    convex combination, so they still sum to 1. With alpha <= 0 nothing is mixed and no
    random number is drawn (the inputs are returned as they are, lambda = 1).

    The permutation is drawn on the generator's device (CPU when None) and moved to x's,
    so a seed gives the same pairs on CPU and GPU.
    """
    if x.shape[0] != targets_onehot.shape[0]:
        raise ValueError(f"x and targets disagree on batch size: {x.shape[0]} vs {targets_onehot.shape[0]}")
    if alpha <= 0:
        return x, targets_onehot, 1.0, None
    lam = sample_mixup_lambda(alpha, generator)
    device = generator.device if generator is not None else torch.device("cpu")
    perm = torch.randperm(x.shape[0], generator=generator, device=device).to(x.device)
    mixed_x = lam * x + (1.0 - lam) * x[perm]
    mixed_targets = lam * targets_onehot + (1.0 - lam) * targets_onehot[perm.to(targets_onehot.device)]
    return mixed_x, mixed_targets, lam, perm


def _batch_mean(per_sample: Tensor, weights: Tensor | None, total: float | None = None) -> Tensor:
    """The batch's mean loss, or with per-sample `weights` their weighted mean (sum w l / sum w):
    only the weights' ratios count, so reweighting moves the loss between samples without
    scaling the step. `total` replaces sum w (under DDP: the global batch's sum over the ranks,
    so the ranks' averaged gradients are the global batch's weighted mean)."""
    if weights is None:
        return per_sample.mean()
    weights = weights.float()
    denominator = weights.sum() if total is None else torch.as_tensor(total, dtype=torch.float32)
    return (weights * per_sample).sum() / denominator.clamp_min(1e-12)


def soft_cross_entropy(logits: Tensor, soft_targets: Tensor, weights: Tensor | None = None,
                       total: float | None = None) -> Tensor:
    """Batch mean of -sum_k p_k log softmax(logits)_k (cross-entropy against soft targets);
    weighted by `weights` per sample when given (see `_batch_mean`).

    Computed in float32 so it stays accurate under autocast.
    """
    if logits.shape != soft_targets.shape:
        raise ValueError(
            f"logits and soft targets differ in shape: {tuple(logits.shape)} vs {tuple(soft_targets.shape)}"
        )
    log_p = F.log_softmax(logits.float(), dim=1)
    return _batch_mean(-(soft_targets.float() * log_p).sum(dim=1), weights, total)


def generalized_cross_entropy(logits: Tensor, soft_targets: Tensor, q: float, weights: Tensor | None = None,
                              total: float | None = None) -> Tensor:
    """Batch mean of sum_k p_k (1 - softmax(logits)_k ** q) / q: the generalized cross-entropy
    of Zhang & Sabuncu (NeurIPS 2018), against soft targets (a mixed pair counts each label by
    its weight). q -> 0 gives cross-entropy, q = 1 the mean absolute error (halved). For a one-hot
    target its gradient is CE's scaled by p_label ** q, so samples the model finds unlikely
    (under symmetric noise, mostly the mislabelled ones) pull less.

    Computed in float32 so it stays accurate under autocast.
    """
    if logits.shape != soft_targets.shape:
        raise ValueError(
            f"logits and soft targets differ in shape: {tuple(logits.shape)} vs {tuple(soft_targets.shape)}"
        )
    # 1 - p ** q as -expm1(q log p): no 0 ** q gradient, and no cancellation where p ** q is near 1
    one_minus_p_q = -torch.expm1(q * F.log_softmax(logits.float(), dim=1))
    return _batch_mean((soft_targets.float() * one_minus_p_q / q).sum(dim=1), weights, total)


def soft_classification_loss(logits: Tensor, soft_targets: Tensor, kind: str = "ce", q: float = 0.7,
                             weights: Tensor | None = None, total: float | None = None) -> Tensor:
    """L_CE of Eq. 5 against soft targets: cross-entropy ("ce", the paper) or the generalized
    cross-entropy ("gce", `method.classification_loss`) with exponent q; a weighted mean over the
    batch with per-sample `weights` (`method.loss_weights`; `total`: see `_batch_mean`)."""
    if kind == "ce":
        return soft_cross_entropy(logits, soft_targets, weights, total)
    if kind == "gce":
        return generalized_cross_entropy(logits, soft_targets, q, weights, total)
    raise ValueError(f"classification loss {kind!r}: expected 'ce' or 'gce'")


def logit_adjustment(train_labels: np.ndarray, target: np.ndarray) -> Tensor:
    """log pi_train - log target, to add to the logits inside the training loss (the
    logit-adjusted loss of Menon et al., ICLR 2021, "Long-tail learning via logit adjustment").

    The model then fits p(y | x) under the target prior, not under the class shares it is
    trained on: a G that selection has left short of some classes (at asymmetric noise, the
    classes whose images carry another class's label) no longer teaches the model to predict
    those classes less, which would keep them out of the next G. A class absent from
    `train_labels` counts as one sample, so its shift stays finite."""
    num_classes = len(target)
    counts = np.maximum(np.bincount(train_labels, minlength=num_classes), 1).astype(np.float64)
    shift = np.log(counts / counts.sum()) - np.log(target)
    return torch.as_tensor(shift, dtype=torch.float32)


def target_prior(kind: str, given_labels: np.ndarray, num_classes: int) -> np.ndarray:
    """The class prior the logit adjustment trains towards: "uniform" (balanced classes, as in
    CIFAR), or "given" (the class shares of the labels as delivered, every class at least one)."""
    if kind == "uniform":
        return np.full(num_classes, 1.0 / num_classes)
    if kind != "given":
        raise ValueError(f"target prior {kind!r}: expected 'uniform' or 'given'")
    counts = np.maximum(np.bincount(given_labels, minlength=num_classes), 1).astype(np.float64)
    return counts / counts.sum()
