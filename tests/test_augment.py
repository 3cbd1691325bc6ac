"""Transforms: output format, determinism under a seed, both size regimes, resizing."""

from __future__ import annotations

import pickle

import pytest
import torch

from pipeline.method.augment import eval_view, train_views, weak_view

MEAN = (0.5, 0.4, 0.3)
STD = (0.2, 0.25, 0.3)


def _image(size: int | tuple[int, int], channels: int = 3, seed: int = 0) -> torch.Tensor:
    h, w = (size, size) if isinstance(size, int) else size
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (channels, h, w), dtype=torch.uint8, generator=gen)


def _check(out: torch.Tensor, size: int) -> None:
    assert out.shape == (3, size, size)
    assert out.dtype == torch.float32


def test_eval_view_is_normalised_and_deterministic() -> None:
    img = _image(32)
    out = eval_view(32, MEAN, STD)(img)
    _check(out, 32)
    mean, std = torch.tensor(MEAN)[:, None, None], torch.tensor(STD)[:, None, None]
    torch.testing.assert_close(out, (img.float() / 255 - mean) / std)
    torch.testing.assert_close(eval_view(32, MEAN, STD)(img), out)


@pytest.mark.parametrize(("in_size", "image_size"), [(32, 32), (96, 64)])
def test_train_views_differ_and_are_seeded(in_size: int, image_size: int) -> None:
    views = train_views(image_size, MEAN, STD)
    img = _image(in_size)
    torch.manual_seed(1)
    query, key = views(img)
    _check(query, image_size)
    _check(key, image_size)
    assert not torch.equal(query, key)
    torch.manual_seed(1)
    again = views(img)
    torch.testing.assert_close(again[0], query)
    torch.testing.assert_close(again[1], key)


@pytest.mark.parametrize(("in_size", "image_size"), [(32, 32), (96, 64)])
def test_weak_view_is_seeded(in_size: int, image_size: int) -> None:
    view = weak_view(image_size, MEAN, STD)
    img = _image(in_size)
    torch.manual_seed(3)
    first = view(img)
    _check(first, image_size)
    torch.manual_seed(3)
    torch.testing.assert_close(view(img), first)


def test_weak_view_only_shifts_and_flips() -> None:
    # No photometric change: the output's centre is a shifted (maybe mirrored) window of the input.
    img = _image(32)
    ref = eval_view(32, MEAN, STD)(img)
    out = weak_view(32, MEAN, STD)(img)[:, 4:28, 4:28]
    windows = [
        src[:, 4 + dy : 28 + dy, 4 + dx : 28 + dx]
        for src in (ref, ref.flip(-1))
        for dy in range(-4, 5)
        for dx in range(-4, 5)
    ]
    assert any(torch.allclose(out, w) for w in windows)


def test_eval_view_large_is_deterministic() -> None:
    img = _image((96, 120))
    view = eval_view(64, MEAN, STD)
    _check(view(img), 64)
    torch.testing.assert_close(view(img), view(img))


@pytest.mark.parametrize("make", [eval_view, weak_view, lambda *a: (lambda x: train_views(*a)(x)[0])])
def test_other_input_sizes_and_grayscale_are_fitted(make) -> None:
    transform = make(32, MEAN, STD)
    for img in (_image((40, 56)), _image(20), _image(32, channels=1)):
        _check(transform(img), 32)


def test_transforms_pickle() -> None:
    # DataLoader workers started with `spawn` pickle the dataset and its transform.
    for obj in (train_views(32, MEAN, STD), weak_view(32, MEAN, STD), eval_view(32, MEAN, STD)):
        clone = pickle.loads(pickle.dumps(obj))
        torch.manual_seed(0)
        a = obj(_image(32))
        torch.manual_seed(0)
        b = clone(_image(32))
        torch.testing.assert_close(a, b)  # compares tuples element-wise too
