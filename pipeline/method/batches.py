"""The batches of one pass over a split: which positions each step takes, on which rank, and
how their views are made (per image in DataLoader workers, or per batch on the device).

Both paths share the order: `torch.randperm` on the epoch's generator after one draw for the
loader's base seed, which is exactly what `DataLoader(shuffle=True, generator=g)` does, so a
single-process run on the loader path replays the batches of earlier versions. Under
`torchrun` every rank draws the same global batch and takes its contiguous share of it
(`distributed.shard`), so the ranks together see what one process with the same global batch
sees.

The resident path keeps a split's images as one uint8 tensor on the device, fitted once to
the image size, and augments whole batches there (`batch_augment`): no worker processes, no
per-image Python work. The airbench / hlb-CIFAR10 way of feeding a GPU.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader
from torchvision.transforms import v2

from pipeline import distributed
from pipeline.data.datasets import Split, SplitDataset
from pipeline.method import batch_augment

FIT_CHUNK = 4096  # images resized at a time when a split is fitted to the image size


def global_batches(n: int, batch_size: int, *, shuffle: bool, generator: torch.Generator | None,
                   drop_last: bool) -> tuple[list[np.ndarray], int]:
    """Indices 0..n-1 in the pass's order, cut into batches; the last partial batch is dropped
    with `drop_last` unless it is the only one (no size-1 batch for BatchNorm). Also returns
    the DataLoader's base seed for worker processes, drawn first as DataLoader draws it (from
    the global RNG when there is no generator)."""
    base_seed = int(torch.empty((), dtype=torch.int64).random_(generator=generator))
    order = torch.randperm(n, generator=generator).numpy() if shuffle else np.arange(n)
    batches = [order[i:i + batch_size] for i in range(0, n, batch_size)]
    if drop_last and n > batch_size and len(batches[-1]) < batch_size:
        batches.pop()
    return batches, base_seed


class SeedWorker:
    """A DataLoader worker's torch seed: base seed + worker id (DataLoader's own rule), offset by
    the rank so data-parallel ranks augment differently."""

    def __init__(self, base_seed: int, offset: int) -> None:
        self.base_seed, self.offset = base_seed, offset

    def __call__(self, worker_id: int) -> None:
        torch.manual_seed(self.base_seed + self.offset + worker_id)


class ResidentSplit:
    """A split's images as one uint8 (N, 3, S, S) tensor on `device`, fitted to `image_size`
    (the deterministic resize and centre crop the per-image views start with)."""

    def __init__(self, split: Split, image_size: int, device: torch.device) -> None:
        if split.images is None:
            raise ValueError("the resident path needs in-memory images")
        fit = v2.Compose([v2.Resize(image_size, antialias=True), v2.CenterCrop(image_size)])
        chunks = []
        for start in range(0, len(split), FIT_CHUNK):
            chunk = torch.from_numpy(np.ascontiguousarray(split.images[start:start + FIT_CHUNK].transpose(0, 3, 1, 2)))
            if chunk.shape[1] == 1:
                chunk = chunk.expand(-1, 3, -1, -1)
            chunks.append(chunk if chunk.shape[-2:] == (image_size, image_size) else fit(chunk))
        self.images = torch.cat(chunks).to(device).contiguous()

    def __len__(self) -> int:
        return len(self.images)


class Batches:
    """(views, positions) per step for this rank: `len()` steps, iterated once."""

    def __init__(self, split: Split, transform, positions: np.ndarray | None, batch_size: int, *, shuffle: bool,
                 generator: torch.Generator | None, drop_last: bool, workers: int = 0, pin_memory: bool = False,
                 resident: ResidentSplit | None = None, across_ranks: bool = True) -> None:
        self.split, self.transform, self.resident = split, transform, resident
        self.across_ranks = across_ranks  # False: the caller passes this rank's positions already
        self.positions = np.arange(len(split)) if positions is None else np.asarray(positions, dtype=np.int64)
        self.workers, self.pin_memory = workers, pin_memory
        # The pass's seed (from its generator, or the epoch's re-seeded global RNG: the same on every
        # rank and on a resume) seeds the DataLoader's workers, or the resident path's augmentation.
        self.batches, self.seed = global_batches(len(self.positions), batch_size, shuffle=shuffle,
                                                 generator=generator, drop_last=drop_last)

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[tuple[object, torch.Tensor]]:
        if self.resident is None:
            return iter(self._loader())
        return self._resident()

    def _local(self, batch: np.ndarray) -> tuple[np.ndarray, slice]:
        rows = distributed.shard(len(batch)) if self.across_ranks else slice(None)
        return batch[rows], rows

    def _loader(self) -> DataLoader:
        local = [self._local(batch)[0].tolist() for batch in self.batches]
        dataset = SplitDataset(self.split, self.transform, self.positions)
        # DataLoader would draw its workers' base seed once more (from the global RNG, which the
        # per-image views use in this process): a spare generator takes that draw, and the
        # workers are seeded from the one `global_batches` drew where DataLoader used to.
        offset = distributed.rank() * max(self.workers, 1) if self.across_ranks else 0
        return DataLoader(dataset, batch_sampler=local, num_workers=self.workers, pin_memory=self.pin_memory,
                          persistent_workers=False, generator=torch.Generator(),
                          worker_init_fn=SeedWorker(self.seed, offset) if self.workers else None)

    def _resident(self) -> Iterator[tuple[object, torch.Tensor]]:
        generator = torch.Generator().manual_seed(self.seed)
        for batch in self.batches:
            params = batch_augment.draw_views(self.transform, len(batch), generator)  # for the global batch
            local, rows = self._local(batch)
            pos = torch.as_tensor(self.positions[local])
            images = self.resident.images[pos.to(self.resident.images.device)]
            yield batch_augment.batch_views(self.transform, images, batch_augment.rows_of(params, rows)), pos
