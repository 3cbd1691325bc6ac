"""Where tensors live and how a model is run over a split: the device, memory format and
autocast of a run (`Placement`), its batches (DataLoader or device-resident), and `extract`,
the no-augmentation pass that gives f, z and logits for every sample (selection, evaluation)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from pipeline import distributed
from pipeline.data.datasets import Dataset, Split
from pipeline.errors import UserError
from pipeline.method import augment, batch_augment
from pipeline.method.batches import Batches, ResidentSplit
from pipeline.runtime import Progress, configure


@dataclass
class Extraction:
    features: np.ndarray  # float32 (N, D), L2-normalised f
    projections: np.ndarray  # float32 (N, P), z
    logits: torch.Tensor  # float32 (N, K)

    @property
    def preds(self) -> np.ndarray:
        return self.logits.argmax(1).numpy()


@dataclass(frozen=True)
class Placement:
    """Where tensors live and how they are computed: device, memory format, autocast."""

    device: torch.device
    channels_last: bool = False
    amp: bool = False
    workers: int = 0
    data_path: str = "loader"  # "resident": images on the device, augmented a batch at a time
    explicit: bool = False  # data_path was asked for by name (not "auto"): no silent fallback
    eval_batch: int = field(kw_only=True)  # extraction and evaluation batch (runtime.eval_batch_size, resolved)
    _resident: dict = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def for_runtime(cls, runtime) -> Placement:
        device = configure(runtime)
        cuda = device.type == "cuda"
        path = runtime.data_path if runtime.data_path != "auto" else ("resident" if cuda else "loader")
        eval_batch = runtime.eval_batch_size if runtime.eval_batch_size != "auto" else (512 if cuda else 64)
        # channels_last on every device: oneDNN's NHWC convolutions make a CPU training step of the
        # protocol's model about 15 % faster too (benchmarks/data_path.py); autocast stays CUDA-only,
        # as bf16 on CPU would change a CPU run's numerics, not only its speed.
        return cls(device, runtime.channels_last, runtime.amp and cuda, runtime.workers, path,
                   runtime.data_path != "auto", eval_batch=eval_batch)

    def module(self, model: torch.nn.Module) -> torch.nn.Module:
        model = model.to(self.device)
        return model.to(memory_format=torch.channels_last) if self.channels_last else model

    def input(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, non_blocking=True)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def autocast(self):
        return torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.amp)

    def batches(self, split: Split, transform, positions: np.ndarray | None, batch_size: int,
                shuffle: bool, generator: torch.Generator | None = None, drop_last: bool = False,
                across_ranks: bool = True) -> Batches:
        """This rank's (view, position) batches of one pass; training drops the last partial
        batch (no size-1 batch for BatchNorm) unless that batch is all there is."""
        resident = self._resident_split(split, transform)
        return Batches(split, transform, positions, batch_size, shuffle=shuffle, generator=generator,
                       drop_last=drop_last, workers=self.workers, pin_memory=self.device.type == "cuda",
                       resident=resident, across_ranks=across_ranks)

    def _resident_split(self, split: Split, transform) -> ResidentSplit | None:
        """The split's device-resident images when the resident path applies to this view."""
        if self.data_path != "resident":
            return None
        if split.images is None or not batch_augment.supports(transform):
            if self.explicit:
                raise UserError("runtime.data_path 'resident' needs in-memory images under 64 px (npz, CIFAR, "
                                "digits); this dataset has image files or large images: use 'loader' or 'auto'")
            return None
        key = id(split)
        if key not in self._resident:
            self._resident[key] = ResidentSplit(split, transform_size(transform), self.device)
        return self._resident[key]


def transform_size(transform) -> int:
    """The image size a view (or pair of views) produces."""
    return (batch_augment.parts(transform) or (transform,))[0].image_size


@torch.no_grad()
def extract(model: torch.nn.Module, split: Split, data: Dataset, place: Placement, batch_size: int,
            progress: Progress | None = None, *, mirror: bool = False) -> Extraction:
    """f, z and logits of `model` for every sample of `split`, eval mode, no augmentation
    (`mirror`: of each image's mirror image, flipped left to right, as training views flip).
    The model goes back to the mode it was in (the key encoder computes keys in train mode).
    Under torchrun each rank extracts its share of the split and every rank gets all of it."""
    was_training = model.training
    model.eval()
    view = augment.eval_view(data.image_size, data.mean, data.std)
    share = np.arange(len(split))[distributed.shard(len(split))]
    loader = place.batches(split, view, share, batch_size, shuffle=False, across_ranks=False)
    if progress:
        progress.start_batches(len(loader), "extract")
    feats, projs, logits = [], [], []
    for x, _ in loader:
        with place.autocast():
            x = place.input(x)
            out = model(x.flip(3) if mirror else x)  # NCHW: axis 3 is the width
        feats.append(out.feature.float().cpu())
        projs.append(out.projection.float().cpu())
        logits.append(out.logits.float().cpu())
        if progress:
            progress.batch_done()
    model.train(was_training)
    whole = [distributed.all_gather_rows(torch.cat(part)) for part in (feats, projs, logits)]
    return Extraction(whole[0].numpy(), whole[1].numpy(), whole[2])
