"""The augmentation views of `augment`, applied to a whole uint8 batch at once (the device-resident
data path): pad-and-crop, horizontal flip and RandAugment, on the device the batch lives on.

torchvision's v2 ops take a batch but draw one set of random parameters for all of it, and
RandAugment picks one op per call. Here every image draws its own parameters, as it does on
the DataLoader path: the crop offsets and flips become gathers of per-image windows (rows, then columns) out of
the padded batch (a flipped window is read right to left); RandAugment sorts the batch by
(op, sign), applies torchvision's own op once to each contiguous group and gathers the rows
back, so every image gets exactly the output `v2.RandAugment` gives when it draws that op
(tests/test_batch_augment.py checks this image by image, and the support and the frequencies
against torchvision on the same images).

Parameters are drawn for a batch first (`draw`) and applied after (`apply`), so a data-parallel
run draws them for the global batch and each rank applies its rows: the same images get the
same augmentation whatever the number of processes.

Large images (RandomResizedCrop, >= 64 px) have no batched form here: they stay on the
DataLoader path (`supports`).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from functools import cache

import torch
from torch import Tensor
from torchvision.transforms import v2

from pipeline.method.augment import TwoViews, View, WeakStrong

# torchvision's RandAugment ops, in its order; `_AUGMENTATION_SPACE` maps each to its magnitude
# table and whether its sign is random. One instance gives the op implementations.
_RANDAUGMENT = v2.RandAugment()
OPS = tuple(_RANDAUGMENT._AUGMENTATION_SPACE)
MAGNITUDE_BINS = 31  # RandAugment's num_magnitude_bins default, which `augment` keeps
SIGNED = torch.tensor([_RANDAUGMENT._AUGMENTATION_SPACE[name][1] for name in OPS])  # the op's sign is drawn


def parts(view) -> tuple | None:
    """The Views of a pair of views (TwoViews, WeakStrong); None for a single view."""
    return view.parts if isinstance(view, TwoViews | WeakStrong) else None


def supports(view) -> bool:
    """Whether `batch_views` can apply this view (or pair of views) to a batch."""
    return all(isinstance(v, View) and v.crop in ("pad", "centre") and v.image_size < 64
               for v in parts(view) or (view,))


@dataclass(frozen=True)
class Params:
    """The random parameters of one view for a batch: row i belongs to image i."""

    offsets: Tensor  # (B, 2) top-left corner of the crop in the padded image
    flips: Tensor  # (B,) bool
    ops: Tensor  # (B, num_ops) index into OPS
    negative: Tensor  # (B, num_ops) bool: the op's magnitude is negated (signed ops only)

    def rows(self, index: slice | Tensor) -> Params:
        return Params(*(getattr(self, f.name)[index] for f in fields(self)))


def draw(view: View, n: int, generator: torch.Generator) -> Params:
    """Each image's crop offsets, flip, RandAugment ops and signs, drawn as the per-image views do."""
    pad = view.image_size // 8 if view.crop == "pad" else 0
    offsets = torch.randint(0, 2 * pad + 1, (n, 2), generator=generator)
    flips = torch.rand(n, generator=generator) < 0.5 if view.flip else torch.zeros(n, dtype=torch.bool)
    num_ops = view.randaugment[0] if view.randaugment else 0
    ops = torch.randint(0, len(OPS), (n, num_ops), generator=generator)
    negative = torch.rand(n, num_ops, generator=generator) <= 0.5
    return Params(offsets, flips, ops, negative)


def apply(view: View, images: Tensor, params: Params) -> Tensor:
    """The view of each uint8 (B, 3, S, S) image (already fitted to `view.image_size`) under its
    parameters, as float32 normalised with the view's mean and std."""
    pad = view.image_size // 8 if view.crop == "pad" else 0
    flips = params.flips.to(images.device) if view.flip else None
    x = _crop_and_flip(images, params.offsets.to(images.device), pad, flips)
    if view.randaugment:
        for r in range(view.randaugment[0]):
            x = _randaugment_round(x, params.ops[:, r], params.negative[:, r], view.randaugment[1])
    # (x / 255 - mean) / std as one multiply-add on the float copy
    std = torch.tensor(view.std, device=x.device).view(1, -1, 1, 1)
    mean = torch.tensor(view.mean, device=x.device).view(1, -1, 1, 1)
    return torch.addcmul(-mean / std, x.float(), 1.0 / (255.0 * std))


def _crop_and_flip(images: Tensor, offsets: Tensor, pad: int, flips: Tensor | None) -> Tensor:
    """Per-image windows of the zero-padded batch at `offsets` (RandomCrop's padding fill), read
    right to left where `flips` is set: crop and flip as two gathers, the rows then the columns
    (a third of the time of one four-index gather on CPU)."""
    if pad == 0 and flips is None:
        return images
    b, c, h, w = images.shape
    padded = torch.nn.functional.pad(images, (pad, pad, pad, pad)) if pad else images
    across = torch.arange(w, device=images.device)
    if flips is not None:
        across = torch.where(flips[:, None], w - 1 - across, across)  # (B, W)
    rows = offsets[:, 0, None] + torch.arange(h, device=images.device)  # (B, H)
    cols = offsets[:, 1, None] + across  # (B, W)
    x = padded.gather(2, rows[:, None, :, None].expand(b, c, h, padded.shape[3]))
    return x.gather(3, cols[:, None, None, :].expand(b, c, h, w))


def _randaugment_round(x: Tensor, ops: Tensor, negative: Tensor, magnitude: int) -> Tensor:
    """One of RandAugment's num_ops rounds: each image gets its own op. The batch is sorted by
    (op, sign), each op runs once on its contiguous slice, and one gather puts the rows back."""
    height, width = x.shape[-2:]
    ops, negative = ops.cpu(), negative.cpu()  # the groups are found on the CPU: no device sync per group
    key = 2 * ops + (negative & SIGNED[ops]).long()  # an unsigned op ignores its drawn sign
    order = torch.argsort(key, stable=True)
    counts = torch.bincount(key, minlength=2 * len(OPS)).tolist()
    grouped = x[order.to(x.device)]
    pieces, start = [], 0
    for group, count in enumerate(counts):
        if count == 0:
            continue
        name = OPS[group // 2]
        value = _magnitude(name, magnitude, height, width)
        pieces.append(_RANDAUGMENT._apply_image_or_video_transform(
            grouped[start:start + count], name, -value if group % 2 else value,
            interpolation=_RANDAUGMENT.interpolation, fill=_RANDAUGMENT._fill))
        start += count
    return torch.cat(pieces)[torch.argsort(order).to(x.device)]


@cache
def _magnitude(name: str, magnitude: int, height: int, width: int) -> float:
    """The op's magnitude at this bin, from RandAugment's own table (computed once per size)."""
    table = _RANDAUGMENT._AUGMENTATION_SPACE[name][0](MAGNITUDE_BINS, height, width)
    return float(table[magnitude]) if table is not None else 0.0


def batch_views(view, images: Tensor, params):
    """`view`'s output for a batch: a tensor for one View, a (first, second) pair for TwoViews
    and WeakStrong. `params` is what `draw_views` drew for the same view. Two views of one
    recipe (TwoViews) run as one batch of twice the size: RandAugment's per-group calls are
    then shared by both views."""
    pair = parts(view)
    if pair is None:
        return apply(view, images, params)
    first, second = pair
    if first is second:
        both = Params(*(torch.cat([getattr(p, f.name) for p in params]) for f in fields(Params)))
        return tuple(apply(first, torch.cat([images, images]), both).chunk(2))
    return tuple(apply(v, images, p) for v, p in zip(pair, params, strict=True))


def draw_views(view, n: int, generator: torch.Generator):
    """The parameters `batch_views` needs for `n` images."""
    pair = parts(view)
    return draw(view, n, generator) if pair is None else tuple(draw(v, n, generator) for v in pair)


def rows_of(params, index: slice | Tensor):
    """The rows `index` of what `draw_views` drew (one rank's share of a global batch)."""
    if isinstance(params, tuple):
        return tuple(p.rows(index) for p in params)
    return params.rows(index)
