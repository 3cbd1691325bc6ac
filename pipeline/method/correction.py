"""Self-ensemble label correction (the paper's Eq. 7, after SELC [25]).

Every sample keeps a soft label p_i, started at the one-hot of its given label. After each
epoch it moves a step alpha towards the one-hot of the model's prediction:

    p_i <- (1 - alpha) * p_i + alpha * onehot(pred_i)

and once another class holds more than gamma of p_i, the hard label y_i flips to that
class (the caller then moves the sample to the non-confidence set).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F


def init_soft_labels(labels: np.ndarray | Tensor, num_classes: int) -> Tensor:
    """One-hot float32 (N, K) soft labels of the given labels, on the labels' device."""
    # np.array copies: label arrays read from Parquet are read-only, which torch warns about
    labels = labels if isinstance(labels, Tensor) else torch.from_numpy(np.array(labels))
    _check_labels("labels", labels, num_classes)
    return F.one_hot(labels.long(), num_classes).float()


def correct_labels(
    soft: Tensor, labels: Tensor, preds: Tensor, *, alpha: float, gamma: float
) -> tuple[Tensor, Tensor, Tensor]:
    """One epoch of Eq. 7: update the soft labels, then flip the confident disagreements.

    A label flips when the arg-max of the updated soft label is another class and holds
    more than ``gamma`` (strictly). With ``gamma >= 0.5`` that class is the only one above
    gamma, which is the paper's "a class other than y_i exceeds gamma".

    Args:
        soft: (N, K) float soft labels (rows on the simplex).
        labels: (N,) int64 current hard labels.
        preds: (N,) int64 model predictions of this epoch.
        alpha: momentum of the update, in [0, 1] (paper: 0.01 over 250 epochs, see
            :func:`scaled_alpha` for shorter runs).
        gamma: flip threshold (paper: 0.8).

    Returns:
        (new soft labels, new hard labels, bool mask of the flipped samples). The inputs
        are left untouched.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    if soft.ndim != 2 or labels.shape != (soft.shape[0],) or preds.shape != labels.shape:
        raise ValueError(
            f"expected soft (N, K), labels (N,), preds (N,); got {tuple(soft.shape)}, "
            f"{tuple(labels.shape)}, {tuple(preds.shape)}"
        )
    num_classes = soft.shape[1]
    _check_labels("labels", labels, num_classes)
    _check_labels("preds", preds, num_classes)
    target = F.one_hot(preds.long(), num_classes).to(soft.dtype)
    new_soft = (1.0 - alpha) * soft + alpha * target
    top_p, top_class = new_soft.max(dim=1)
    flipped = (top_class != labels) & (top_p > gamma)
    new_labels = torch.where(flipped, top_class, labels.long())
    return new_soft, new_labels, flipped


def scaled_alpha(alpha: float, epochs: int, reference_epochs: int = 250) -> float:
    """The per-epoch alpha that decays a one-hot over ``epochs`` as the paper's does over 250.

    Under Eq. 7, a soft label whose prediction never agrees with it keeps a share
    (1 - alpha)^t of its original class after t epochs. On a shorter run the paper's
    alpha = 0.01 would leave labels almost unchanged (0.99^50 = 0.6 keeps any flip from
    reaching gamma = 0.8), so alpha is raised to keep the total decay equal:

        (1 - alpha_T)^epochs = (1 - alpha)^reference_epochs
        alpha_T = 1 - (1 - alpha)^(reference_epochs / epochs)

    It returns ``alpha`` itself on the reference schedule. The engine passes the number of
    correction rounds, T_max - T_P, for both (the paper's: 250 - 10 = 240). A flip needs
    another class's share to pass gamma, i.e. (1 - alpha_T)^k < 1 - gamma after k rounds of
    that prediction: k > ln(1 - gamma) / ln(1 - alpha_T), about 2/3 of the rounds (0.8, 240).
    """
    if epochs < 1 or reference_epochs < 1:
        raise ValueError(f"epochs and reference_epochs must be >= 1, got {epochs}, {reference_epochs}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    if epochs == reference_epochs or alpha in (0.0, 1.0):
        return float(alpha)
    # 1 - (1 - a)^r, written with log1p/expm1 so a small alpha keeps its precision.
    return -math.expm1(reference_epochs / epochs * math.log1p(-alpha))


def _check_labels(name: str, labels: Tensor, num_classes: int) -> None:
    if labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise ValueError(f"{name} must be integer class indices, got dtype {labels.dtype}")
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(
            f"{name} must lie in [0, {num_classes}), got [{int(labels.min())}, {int(labels.max())}]"
        )
