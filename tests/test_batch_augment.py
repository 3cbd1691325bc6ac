"""The batched views of the resident data path against torchvision's per-image views."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from pipeline.method import augment, batch_augment

SIZE, MEAN, STD = 32, (0.5, 0.4, 0.3), (0.25, 0.2, 0.3)


def images(n: int, seed: int = 0) -> torch.Tensor:
    """Random uint8 images with structure (a gradient plus noise), so every op changes them."""
    g = torch.Generator().manual_seed(seed)
    ramp = torch.linspace(0, 200, SIZE).view(1, 1, 1, SIZE).expand(n, 3, SIZE, SIZE)
    return (ramp + torch.randint(0, 55, (n, 3, SIZE, SIZE), generator=g)).to(torch.uint8)


def normalised(x: torch.Tensor) -> torch.Tensor:
    return F.normalize(F.to_dtype(x, torch.float32, scale=True), list(MEAN), list(STD))


def test_eval_view_of_a_batch_equals_the_per_image_view() -> None:
    view = augment.eval_view(SIZE, MEAN, STD)
    x = images(6)
    batch = batch_augment.batch_views(view, x, batch_augment.draw_views(view, 6, torch.Generator()))
    torch.testing.assert_close(batch, torch.stack([view(img) for img in x]))


def test_crop_and_flip_equal_torchvision_pad_crop_flip_at_the_drawn_parameters() -> None:
    view = augment.weak_view(SIZE, MEAN, STD)
    x = images(64, seed=1)
    params = batch_augment.draw(view, 64, torch.Generator().manual_seed(3))
    out = batch_augment.apply(view, x, params)
    pad = SIZE // 8
    for i in range(64):
        top, left = (int(v) for v in params.offsets[i])
        expected = F.crop(F.pad(x[i], [pad]), top, left, SIZE, SIZE)
        if params.flips[i]:
            expected = F.horizontal_flip(expected)
        torch.testing.assert_close(out[i], normalised(expected))
    # the parameters cover RandomCrop's range: offsets 0..2*pad, both flips
    assert int(params.offsets.min()) == 0 and int(params.offsets.max()) == 2 * pad
    assert 0 < int(params.flips.sum()) < 64


def _randaugment_outcomes(image: torch.Tensor, magnitude: int) -> list[torch.Tensor]:
    """Every output one round of torchvision's RandAugment can give this image: one per (op, sign)."""
    ra = v2.RandAugment(num_ops=1, magnitude=magnitude)
    outcomes = []
    for name, (magnitudes_fn, signed) in ra._AUGMENTATION_SPACE.items():
        table = magnitudes_fn(31, SIZE, SIZE)
        value = float(table[magnitude]) if table is not None else 0.0
        for sign in ((1, -1) if signed and table is not None else (1,)):
            outcomes.append(ra._apply_image_or_video_transform(image, name, sign * value, interpolation=ra.interpolation,
                                                               fill=ra._fill))
    return outcomes


def _outcome_index(outcomes: list[torch.Tensor], out: torch.Tensor) -> int:
    for k, candidate in enumerate(outcomes):
        if torch.equal(candidate, out):
            return k
    return -1


def test_randaugment_round_has_torchvisions_support_and_frequencies() -> None:
    """One image, many draws: every batched output is one of RandAugment's outputs for that image,
    torchvision's own RandAugment gives only outputs of that set too, and the batched ops are
    drawn uniformly (14 ops, signs half and half), as torchvision draws them."""
    image = images(1, seed=2)[0]
    outcomes = _randaugment_outcomes(image, magnitude=9)
    view = augment.View(SIZE, MEAN, STD, crop="centre", flip=False, randaugment=(1, 9))
    n = 2800
    params = batch_augment.draw(view, n, torch.Generator().manual_seed(0))
    raw = batch_augment._randaugment_round(image.expand(n, -1, -1, -1).contiguous(), params.ops[:, 0],
                                           params.negative[:, 0], 9)
    hits = np.array([_outcome_index(outcomes, out) for out in raw])
    assert (hits >= 0).all()
    op_counts = np.bincount(params.ops[:, 0].numpy(), minlength=len(batch_augment.OPS))
    expected = n / len(batch_augment.OPS)
    chi2 = float(((op_counts - expected) ** 2 / expected).sum())
    assert chi2 < 40.0  # 13 degrees of freedom: p < 1e-4 beyond this
    assert 0.45 < float(params.negative.float().mean()) < 0.55
    torch.manual_seed(0)
    reference = v2.RandAugment(num_ops=1, magnitude=9)
    assert all(_outcome_index(outcomes, reference(image)) >= 0 for _ in range(300))


def test_randaugment_round_gives_each_image_its_own_drawn_op() -> None:
    """Distinct images: row i is torchvision's op for row i's drawn (op, sign) applied to image i,
    so the grouping by op and the gather back put every output in its own row."""
    x = images(64, seed=6)
    view = augment.View(SIZE, MEAN, STD, crop="centre", flip=False, randaugment=(1, 9))
    params = batch_augment.draw(view, 64, torch.Generator().manual_seed(11))
    out = batch_augment._randaugment_round(x, params.ops[:, 0], params.negative[:, 0], 9)
    ra = v2.RandAugment(num_ops=1, magnitude=9)
    for i in range(64):
        name = batch_augment.OPS[int(params.ops[i, 0])]
        magnitudes_fn, signed = ra._AUGMENTATION_SPACE[name]
        table = magnitudes_fn(31, SIZE, SIZE)
        value = float(table[9]) if table is not None else 0.0
        if signed and bool(params.negative[i, 0]):
            value = -value
        expected = ra._apply_image_or_video_transform(x[i], name, value, interpolation=ra.interpolation, fill=ra._fill)
        assert torch.equal(out[i], expected), (i, name)
    assert len(set(params.ops[:, 0].tolist())) > 10  # the batch mixes most of the 14 ops


@pytest.mark.parametrize("view", [
    augment.train_view(SIZE, MEAN, STD),
    augment.TwoViews(augment.train_view(SIZE, MEAN, STD)),
    augment.weak_strong_views(SIZE, MEAN, STD),
])
def test_training_views_keep_shape_dtype_and_range(view) -> None:
    x = images(32, seed=4)
    out = batch_augment.batch_views(view, x, batch_augment.draw_views(view, 32, torch.Generator().manual_seed(1)))
    parts = out if isinstance(out, tuple) else (out,)
    low = min((0 - m) / s for m, s in zip(MEAN, STD, strict=True))
    high = max((1 - m) / s for m, s in zip(MEAN, STD, strict=True))
    for part in parts:
        assert part.shape == (32, 3, SIZE, SIZE) and part.dtype == torch.float32
        assert float(part.min()) >= low - 1e-5 and float(part.max()) <= high + 1e-5
    if len(parts) == 2:
        assert not torch.equal(parts[0], parts[1])  # two independent draws


def test_parameters_of_a_global_batch_split_into_rows_give_the_same_views() -> None:
    """What a data-parallel rank does: draw for the global batch, apply its rows only."""
    view = augment.TwoViews(augment.train_view(SIZE, MEAN, STD))
    x = images(10, seed=5)
    params = batch_augment.draw_views(view, 10, torch.Generator().manual_seed(7))
    whole = batch_augment.batch_views(view, x, params)
    first = batch_augment.batch_views(view, x[:4], batch_augment.rows_of(params, slice(0, 4)))
    second = batch_augment.batch_views(view, x[4:], batch_augment.rows_of(params, slice(4, 10)))
    for k in range(2):
        torch.testing.assert_close(torch.cat([first[k], second[k]]), whole[k])


def test_two_views_of_one_recipe_run_as_one_batch_and_equal_each_view_alone() -> None:
    """TwoViews applies its recipe once to a double batch; each half is what that view's own
    parameters give when applied alone."""
    view = augment.TwoViews(augment.train_view(SIZE, MEAN, STD))
    x = images(24, seed=6)
    params = batch_augment.draw_views(view, 24, torch.Generator().manual_seed(9))
    pair = batch_augment.batch_views(view, x, params)
    for part, p in zip(pair, params, strict=True):
        torch.testing.assert_close(part, batch_augment.apply(view.transform, x, p))
        assert part.is_contiguous()


def test_large_image_views_are_not_batched() -> None:
    assert batch_augment.supports(augment.train_view(SIZE, MEAN, STD))
    assert not batch_augment.supports(augment.train_view(224, MEAN, STD))  # RandomResizedCrop
