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

    @property
    def parts(self) -> tuple:
        """The transform of each view, in output order."""
        return self.transform, self.transform

    def __repr__(self) -> str:
        return f"TwoViews({self.transform!r})"


class WeakStrong:
    """A weak and a strong view of one image: FixMatch's pair for an unlabelled sample."""

    def __init__(self, weak: Callable[[Tensor], Tensor], strong: Callable[[Tensor], Tensor]) -> None:
        self.weak, self.strong = weak, strong

    def __call__(self, image: Tensor) -> tuple[Tensor, Tensor]:
        return self.weak(image), self.strong(image)

    @property
    def parts(self) -> tuple:
        """The transform of each view, in output order."""
        return self.weak, self.strong

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


class View:
    """One augmentation recipe, applied per image (`view(image)`, the DataLoader path) or to a
    whole batch at once by `pipeline.method.batch_augment` (the device-resident path), which
    reads the recipe from these attributes: `crop` ("pad", "resized", "resize-crop" or
    "centre"), `flip`, `randaugment` ((num_ops, magnitude) or None)."""

    def __init__(self, image_size: int, mean: Sequence[float], std: Sequence[float], *, crop: str, flip: bool,
                 randaugment: tuple[int, int] | None = None) -> None:
        self.image_size, self.mean, self.std = image_size, tuple(mean), tuple(std)
        self.crop, self.flip, self.randaugment = crop, flip, randaugment
        steps = _geometry(image_size, crop, flip)
        if randaugment is not None:
            steps.append(v2.RandAugment(num_ops=randaugment[0], magnitude=randaugment[1]))
        self.compose = v2.Compose([*steps, *_finish(mean, std)])

    def __call__(self, image: Tensor) -> Tensor:
        return self.compose(image)

    def __repr__(self) -> str:
        return f"View(crop={self.crop!r}, flip={self.flip}, randaugment={self.randaugment}, size={self.image_size})"


def _geometry(image_size: int, crop: str, flip: bool) -> list[v2.Transform]:
    """The deterministic fit and the random crop of a view."""
    flips = [v2.RandomHorizontalFlip()] if flip else []
    if crop == "pad":
        return [*_fit(image_size), v2.RandomCrop(image_size, padding=image_size // 8), *flips]
    if crop == "resized":
        return [v2.RGB(), v2.RandomResizedCrop(image_size, scale=RESIZED_CROP_SCALE, antialias=True), *flips]
    if crop == "resize-crop":
        return [v2.RGB(), v2.Resize(_resize_side(image_size), antialias=True), v2.RandomCrop(image_size), *flips]
    if _is_large(image_size):  # "centre": evaluation
        return [v2.RGB(), v2.Resize(_resize_side(image_size), antialias=True), v2.CenterCrop(image_size)]
    return _fit(image_size)


def _random_crop(image_size: int, *, resized_crop: bool) -> str:
    """Pad-and-crop at small sizes; at large ones RandomResizedCrop for training, else resize-crop."""
    if not _is_large(image_size):
        return "pad"
    return "resized" if resized_crop else "resize-crop"


def train_views(
    image_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    *,
    num_ops: int = 2,
    magnitude: int = 9,
) -> TwoViews:
    """Two independent RandAugment views (query, key) of one uint8 image, for MTaDCS epochs."""
    return TwoViews(train_view(image_size, mean, std, num_ops=num_ops, magnitude=magnitude))


def train_view(image_size: int, mean: Sequence[float], std: Sequence[float], *, num_ops: int = 2,
               magnitude: int = 9) -> View:
    """One RandAugment training view (what a run without the key encoder needs)."""
    return View(image_size, mean, std, crop=_random_crop(image_size, resized_crop=True), flip=True,
                randaugment=(num_ops, magnitude))


def weak_view(image_size: int, mean: Sequence[float], std: Sequence[float]) -> View:
    """Crop and horizontal flip only: the fine-tuning augmentation (Table 2a's "+" rows)."""
    return View(image_size, mean, std, crop=_random_crop(image_size, resized_crop=False), flip=True)


def weak_strong_views(image_size: int, mean: Sequence[float], std: Sequence[float], *,
                      num_ops: int = 2, magnitude: int = 9) -> WeakStrong:
    """FixMatch's pair: the weak view gives the pseudo-label, the strong (RandAugment) view learns it."""
    return WeakStrong(weak_view(image_size, mean, std),
                      train_view(image_size, mean, std, num_ops=num_ops, magnitude=magnitude))


def eval_view(image_size: int, mean: Sequence[float], std: Sequence[float]) -> View:
    """Deterministic view for feature extraction, selection and testing."""
    return View(image_size, mean, std, crop="centre", flip=False)
