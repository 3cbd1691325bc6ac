"""Image transforms: two RandAugment views for training, a weak view for fine-tuning, eval.

All take what the data module yields, a uint8 CHW tensor of any size, and return float32
tensors scaled to [0, 1] and normalised with `mean`/`std`. Everything is
`torchvision.transforms.v2`, so randomness comes from torch's global RNG: a worker's
`torch.manual_seed` fixes it (DataLoader seeds each worker's torch RNG by itself).

Two regimes, as in Section 4.1 (and Sel-CL's scripts for the details the paper omits):

* small images (`image_size` < 64, CIFAR): pad-and-crop with padding `image_size // 8`
  (4 at 32 px) and a horizontal flip; RandAugment on top for training. An input whose
  side is not `image_size` (folder or npz datasets) is first resized (shorter side) and
  centre-cropped to `image_size`; at the right size both steps are no-ops.
* large images (>= 64 px, WebVision): training uses RandomResizedCrop(scale=(0.2, 1))
  as Sel-CL's WebVision script does (it resizes to 256 first; we crop the original,
  the same crop distribution up to interpolation, and cheaper), flip and RandAugment.
  Fine-tuning and evaluation follow Sel-CL: Resize(256) then RandomCrop(224) / CenterCrop
  (224), with 256 scaled as `image_size * 256 / 224` for other sizes.

Grayscale inputs are turned into 3 channels (`v2.RGB`, a no-op on RGB), because the
encoders have a 3-channel stem.

The objects returned are picklable (no closures), so they survive DataLoader workers
started with `spawn`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor
from torchvision.transforms import v2

LARGE_IMAGE_MIN = 64  # from this side on, ImageNet-style crops replace pad-and-crop
RESIZED_CROP_SCALE = (0.2, 1.0)  # Sel-CL's WebVision RandomResizedCrop


class TwoViews:
    """Apply one random transform twice, independently: MoCo's query and key views."""

    def __init__(self, transform: Callable[[Tensor], Tensor]) -> None:
        self.transform = transform

    def __call__(self, image: Tensor) -> tuple[Tensor, Tensor]:
        return self.transform(image), self.transform(image)

    def __repr__(self) -> str:
        return f"TwoViews({self.transform!r})"


class WeakStrong:
    """A weak and a strong view of one image: FixMatch's pair for an unlabelled sample."""

    def __init__(self, weak: Callable[[Tensor], Tensor], strong: Callable[[Tensor], Tensor]) -> None:
        self.weak, self.strong = weak, strong

    def __call__(self, image: Tensor) -> tuple[Tensor, Tensor]:
        return self.weak(image), self.strong(image)

    def __repr__(self) -> str:
        return f"WeakStrong({self.weak!r}, {self.strong!r})"


def _is_large(image_size: int) -> bool:
    return image_size >= LARGE_IMAGE_MIN


def _resize_side(image_size: int) -> int:
    """The shorter side to resize to before a crop: 256 for 224, in the same ratio otherwise."""
    return round(image_size * 256 / 224)


def _fit(image_size: int) -> list[v2.Transform]:
    """Bring any input to a 3-channel `image_size` square; no-ops when it already is one."""
    return [v2.RGB(), v2.Resize(image_size, antialias=True), v2.CenterCrop(image_size)]


def _finish(mean: Sequence[float], std: Sequence[float]) -> list[v2.Transform]:
    return [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]


def _crop_flip(image_size: int, *, resized_crop: bool) -> list[v2.Transform]:
    """The geometric part of the random views; `resized_crop` picks the training crop at large sizes."""
    if not _is_large(image_size):
        return [*_fit(image_size), v2.RandomCrop(image_size, padding=image_size // 8), v2.RandomHorizontalFlip()]
    if resized_crop:
        crop = [v2.RandomResizedCrop(image_size, scale=RESIZED_CROP_SCALE, antialias=True)]
    else:
        crop = [v2.Resize(_resize_side(image_size), antialias=True), v2.RandomCrop(image_size)]
    return [v2.RGB(), *crop, v2.RandomHorizontalFlip()]


def train_views(
    image_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    *,
    num_ops: int = 2,
    magnitude: int = 9,
) -> Callable[[Tensor], tuple[Tensor, Tensor]]:
    """Two independent RandAugment views (query, key) of one uint8 image, for MTaDCS epochs."""
    randaugment = v2.RandAugment(num_ops=num_ops, magnitude=magnitude)
    steps = [*_crop_flip(image_size, resized_crop=True), randaugment, *_finish(mean, std)]
    return TwoViews(v2.Compose(steps))


def weak_view(image_size: int, mean: Sequence[float], std: Sequence[float]) -> Callable[[Tensor], Tensor]:
    """Crop and horizontal flip only: the fine-tuning augmentation (Table 2a's "+" rows)."""
    return v2.Compose([*_crop_flip(image_size, resized_crop=False), *_finish(mean, std)])


def weak_strong_views(image_size: int, mean: Sequence[float], std: Sequence[float], *,
                      num_ops: int = 2, magnitude: int = 9) -> WeakStrong:
    """FixMatch's pair: the weak view gives the pseudo-label, the strong (RandAugment) view learns it."""
    strong = v2.Compose([*_crop_flip(image_size, resized_crop=True), v2.RandAugment(num_ops=num_ops, magnitude=magnitude),
                         *_finish(mean, std)])
    return WeakStrong(weak_view(image_size, mean, std), strong)


def eval_view(image_size: int, mean: Sequence[float], std: Sequence[float]) -> Callable[[Tensor], Tensor]:
    """Deterministic view for feature extraction, selection and testing."""
    if _is_large(image_size):
        fit = [v2.RGB(), v2.Resize(_resize_side(image_size), antialias=True), v2.CenterCrop(image_size)]
    else:
        fit = _fit(image_size)
    return v2.Compose([*fit, *_finish(mean, std)])
