"""Evaluation metrics: top-k accuracy of the classifier and weighted kNN accuracy of the features.

The kNN protocol is the one of instance discrimination (Wu et al. 2018), Sel-CL and TCL:
cosine similarity on L2-normalised features, the k = 200 most similar training samples
vote for their label with weight exp(similarity / 0.1), the class with the largest total
wins. Which training labels vote (clean or current) is the caller's choice.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

ArrayLike = np.ndarray | Tensor


def topk_accuracy(logits: Tensor, targets: Tensor, ks: Sequence[int] = (1, 5)) -> dict[str, float]:
    """Top-k accuracies in percent, keyed ``"top{k}"`` by the requested k.

    k is capped at the number of classes (so "top5" of a 3-class problem is 100%), which
    keeps one metric set valid for every dataset.
    """
    if logits.ndim != 2 or targets.shape != (logits.shape[0],):
        raise ValueError(
            f"expected logits (N, C) and targets (N,), got {tuple(logits.shape)}, {tuple(targets.shape)}"
        )
    if logits.shape[0] == 0:
        raise ValueError("no samples to score")
    targets = targets.to(logits.device)
    ranked = logits.topk(min(max(ks), logits.shape[1]), dim=1).indices
    hits = ranked == targets[:, None]
    result = {}
    for k in ks:
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        result[f"top{k}"] = 100.0 * hits[:, : min(k, logits.shape[1])].any(dim=1).float().mean().item()
    return result


def knn_predict(
    train_features: ArrayLike,
    train_labels: ArrayLike,
    test_features: ArrayLike,
    num_classes: int,
    *,
    k: int = 200,
    temperature: float = 0.1,
    chunk: int = 1024,
) -> Tensor:
    """Weighted-kNN class predictions of the test rows, on the training features' device.

    Features are L2-normalised here (again, if already), so the dot product is the cosine
    similarity. k is capped at the number of training samples. ``chunk`` test rows are
    scored at a time, bounding memory to ``chunk * N_train`` similarities.
    """
    train, labels, test = _check_knn_inputs(train_features, train_labels, test_features)
    if k < 1 or labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(f"need k >= 1 (got {k}) and train_labels in [0, {num_classes})")
    train = F.normalize(train, dim=1)
    test = F.normalize(test, dim=1)
    k = min(k, train.shape[0])
    preds = [
        _knn_vote(train, labels, test[start : start + chunk], num_classes, k, temperature)
        for start in range(0, test.shape[0], chunk)
    ]
    return torch.cat(preds) if preds else torch.empty(0, dtype=torch.long, device=train.device)


def knn_accuracy(
    train_features: ArrayLike,
    train_labels: ArrayLike,
    test_features: ArrayLike,
    test_labels: ArrayLike,
    num_classes: int,
    *,
    k: int = 200,
    temperature: float = 0.1,
    chunk: int = 1024,
) -> float:
    """Weighted-kNN accuracy of the test set in percent (see :func:`knn_predict`)."""
    preds = knn_predict(
        train_features, train_labels, test_features, num_classes, k=k, temperature=temperature, chunk=chunk
    )
    targets = torch.as_tensor(test_labels, device=preds.device).long()
    if targets.shape != preds.shape or preds.numel() == 0:
        raise ValueError(
            f"test_labels must have shape {tuple(preds.shape)} (non-empty), got {tuple(targets.shape)}"
        )
    return 100.0 * (preds == targets).float().mean().item()


def _knn_vote(
    train: Tensor, labels: Tensor, test: Tensor, num_classes: int, k: int, temperature: float
) -> Tensor:
    sim, idx = (test @ train.T).topk(k, dim=1)
    votes = torch.zeros(test.shape[0], num_classes, dtype=sim.dtype, device=sim.device)
    votes.scatter_add_(1, labels[idx], (sim / temperature).exp())
    return votes.argmax(dim=1)


def _check_knn_inputs(
    train_features: ArrayLike, train_labels: ArrayLike, test_features: ArrayLike
) -> tuple[Tensor, Tensor, Tensor]:
    """Float features and int64 labels, all on the training features' device, shapes checked."""
    train = _as_float(train_features)
    test = _as_float(test_features).to(train.device, train.dtype)
    labels = torch.as_tensor(train_labels, device=train.device).long()
    if train.ndim != 2 or test.ndim != 2 or test.shape[1] != train.shape[1]:
        raise ValueError(
            f"features must be (N, D) with the same D, got {tuple(train.shape)}, {tuple(test.shape)}"
        )
    if labels.shape != (train.shape[0],):
        raise ValueError(f"train_labels must have shape ({train.shape[0]},), got {tuple(labels.shape)}")
    if train.shape[0] == 0:
        raise ValueError("no training samples to vote")
    return train, labels, test


def _as_float(x: ArrayLike) -> Tensor:
    t = torch.as_tensor(x).detach()
    return t if t.dtype in (torch.float32, torch.float64) else t.float()
