"""The augmentation views of `augment`, applied to a whole uint8 batch at once (the device-resident
data path): pad-and-crop, horizontal flip and RandAugment, on the device the batch lives on.

torchvision's v2 ops take a batch but draw one set of random parameters for all of it, and
RandAugment picks one op per call. Here every image draws its own parameters, as it does on
the DataLoader path: the crop offsets gather per-image windows out of the padded batch in one
indexing operation; the flips are one `where`; RandAugment groups the batch by (op, sign) and
applies torchvision's own op to each group, so every image gets exactly the output
`v2.RandAugment` gives when it draws that op (tests/test_batch_augment.py checks the support
and the frequencies against torchvision on the same images).

Parameters are drawn for a batch first (`draw`) and applied after (`apply`), so a data-parallel
run draws them for the global batch and each rank applies its rows: the same images get the
same augmentation whatever the number of processes.

Large images (RandomResizedCrop, >= 64 px) have no batched form here: they stay on the
DataLoader path (`supports`).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from torch import Tensor
from torchvision.transforms import v2

from pipeline.method.augment import TwoViews, View, WeakStrong

# torchvision's RandAugment ops, in its order; `_AUGMENTATION_SPACE` maps each to its magnitude
# table and whether its sign is random. One instance gives the op implementations.
_RANDAUGMENT = v2.RandAugment()
OPS = tuple(_RANDAUGMENT._AUGMENTATION_SPACE)
MAGNITUDE_BINS = 31  # RandAugment's num_magnitude_bins default, which `augment` keeps


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
    x = _crop(images, params.offsets.to(images.device), view.image_size // 8 if view.crop == "pad" else 0)
    if view.flip:
        x = torch.where(params.flips.to(x.device)[:, None, None, None], x.flip(-1), x)
    if view.randaugment:
        for r in range(view.randaugment[0]):
            x = _randaugment_round(x, params.ops[:, r], params.negative[:, r], view.randaugment[1])
    mean = torch.tensor(view.mean, device=x.device).view(1, -1, 1, 1)
    std = torch.tensor(view.std, device=x.device).view(1, -1, 1, 1)
    return (x.float() / 255.0 - mean) / std


def _crop(images: Tensor, offsets: Tensor, pad: int) -> Tensor:
    """Per-image `size` windows of the zero-padded batch at `offsets` (RandomCrop's padding fill)."""
    if pad == 0:
        return images
    b, c, h, w = images.shape
    padded = torch.nn.functional.pad(images, (pad, pad, pad, pad))
    rows = (offsets[:, 0, None] + torch.arange(h, device=images.device))[:, None, :, None]
    cols = (offsets[:, 1, None] + torch.arange(w, device=images.device))[:, None, None, :]
    batch = torch.arange(b, device=images.device)[:, None, None, None]
    channel = torch.arange(c, device=images.device)[None, :, None, None]
    return padded[batch, channel, rows, cols]


def _randaugment_round(x: Tensor, ops: Tensor, negative: Tensor, magnitude: int) -> Tensor:
    """One of RandAugment's num_ops rounds: each image gets its own op, applied group by group."""
    out = x.clone()
    height, width = x.shape[-2:]
    ops, negative = ops.cpu(), negative.cpu()  # the groups are found on the CPU: no device sync per group
    for op_index, name in enumerate(OPS):
        magnitudes_fn, signed = _RANDAUGMENT._AUGMENTATION_SPACE[name]
        table = magnitudes_fn(MAGNITUDE_BINS, height, width)
        value = float(table[magnitude]) if table is not None else 0.0
        for sign in ((False, True) if signed and table is not None else (None,)):
            members = ops == op_index
            if sign is not None:
                members = members & (negative == sign)
            rows = torch.nonzero(members).squeeze(1)
            if len(rows) == 0:
                continue
            rows = rows.to(x.device)
            signed_value = -value if sign else value
            out[rows] = _RANDAUGMENT._apply_image_or_video_transform(
                x[rows], name, signed_value, interpolation=_RANDAUGMENT.interpolation, fill=_RANDAUGMENT._fill)
    return out


def batch_views(view, images: Tensor, params):
    """`view`'s output for a batch: a tensor for one View, a (first, second) pair for TwoViews
    and WeakStrong. `params` is what `draw_views` drew for the same view."""
    pair = parts(view)
    if pair is None:
        return apply(view, images, params)
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
