"""Tests of top-k and weighted-kNN accuracy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.neighbors import KNeighborsClassifier

from pipeline.method.evaluate import knn_accuracy, knn_predict, topk_accuracy


def test_topk_accuracy_on_a_hand_example() -> None:
    logits = torch.tensor(
        [
            [0.9, 0.1, 0.0, 0.0, 0.0, 0.0],  # target 0: rank 1
            [0.1, 0.9, 0.5, 0.4, 0.3, 0.2],  # target 2: rank 2
            [0.6, 0.5, 0.4, 0.3, 0.2, 0.1],  # target 5: rank 6, missed by top-5
            [0.1, 0.2, 0.3, 0.4, 0.5, 0.6],  # target 1: rank 5
        ]
    )
    targets = torch.tensor([0, 2, 5, 1])
    assert topk_accuracy(logits, targets) == {"top1": 25.0, "top5": 75.0}
    assert topk_accuracy(logits, targets, ks=(2,)) == {"top2": 50.0}


def test_topk_caps_k_at_the_number_of_classes() -> None:
    logits = torch.tensor([[0.2, 0.5, 0.3], [0.9, 0.05, 0.05]])
    assert topk_accuracy(logits, torch.tensor([0, 2])) == {"top1": 0.0, "top5": 100.0}


def test_topk_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError, match="expected"):
        topk_accuracy(torch.zeros(3, 4), torch.zeros(2, dtype=torch.long))


def _clustered(seed: int, n: int, num_classes: int, dim: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Noisy class clusters: continuous random features, so no ties in similarity or votes."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(num_classes, dim))
    labels = rng.integers(0, num_classes, n)
    feats = centres[labels] + rng.normal(scale=1.5, size=(n, dim))
    return feats / np.linalg.norm(feats, axis=1, keepdims=True), labels


def _sklearn_knn(train, train_labels, test, k: int, t: float) -> np.ndarray:
    clf = KNeighborsClassifier(
        n_neighbors=k, metric="cosine", algorithm="brute", weights=lambda d: np.exp((1 - d) / t)
    )
    return clf.fit(train, train_labels).predict(test)


@pytest.mark.parametrize(
    ("k", "n_train", "dtype"),
    [(5, 300, np.float64), (5, 300, np.float32), (200, 500, np.float64), (200, 500, np.float32)],
)
def test_knn_matches_sklearn(k: int, n_train: int, dtype: type) -> None:
    train, y_train = _clustered(k, n_train, num_classes=5)
    test, _ = _clustered(k + 100, 300, num_classes=5)
    train, test = train.astype(dtype), test.astype(dtype)
    expected = _sklearn_knn(train, y_train, test, k, 0.1)
    got = knn_predict(
        torch.from_numpy(train), torch.from_numpy(y_train), torch.from_numpy(test), 5, k=k, chunk=64
    )
    np.testing.assert_array_equal(got.numpy(), expected)
    assert len(np.unique(expected)) == 5  # the comparison is not trivial


def test_knn_normalises_its_inputs_and_caps_k() -> None:
    train, y_train = _clustered(1, 50, num_classes=3)
    test, _ = _clustered(2, 40, num_classes=3)
    expected = _sklearn_knn(train, y_train, test, 50, 0.1)  # k = N_train: every sample votes
    scale = np.random.default_rng(0).uniform(0.5, 3.0, size=(50, 1))
    got = knn_predict(train * scale, y_train, test * 7.0, 3, k=200)
    np.testing.assert_array_equal(got.numpy(), expected)


def test_knn_accuracy_in_percent() -> None:
    train = np.eye(3)
    y_train = np.array([0, 1, 2])
    test = np.array([[1.0, 0.1, 0.0], [0.0, 1.0, 0.1], [0.1, 0.0, 1.0], [1.0, 0.0, 0.1]])
    # k = 1: each test row takes the label of its nearest axis.
    assert knn_accuracy(train, y_train, test, np.array([0, 1, 2, 1]), 3, k=1) == 75.0


def test_knn_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="same D"):
        knn_predict(np.zeros((4, 3)), np.zeros(4, int), np.zeros((2, 5)), 2)
    with pytest.raises(ValueError, match="train_labels"):
        knn_predict(np.ones((4, 3)), np.array([0, 1, 2, 3]), np.ones((2, 3)), 2)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_knn_on_cuda_matches_sklearn() -> None:
    train, y_train = _clustered(3, 500, num_classes=5)
    test, _ = _clustered(4, 200, num_classes=5)
    expected = _sklearn_knn(train, y_train, test, 200, 0.1)
    got = knn_predict(torch.from_numpy(train).cuda(), y_train, test, 5, k=200)
    assert got.is_cuda
    np.testing.assert_array_equal(got.cpu().numpy(), expected)
