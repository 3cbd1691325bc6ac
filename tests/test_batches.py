"""The batches of a pass: the loader path replays DataLoader's shuffled order exactly; the
resident path covers the same positions with views of the same shape, reproducibly."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader

from pipeline.data.datasets import Split, SplitDataset
from pipeline.method import augment
from pipeline.method.batches import Batches, ResidentSplit, global_batches

SIZE = 32


def split(n: int = 50) -> Split:
    rng = np.random.default_rng(0)
    return Split(labels=rng.integers(0, 3, n), index=np.arange(n),
                 images=rng.integers(0, 256, (n, SIZE, SIZE, 3), dtype=np.uint8))


def view():
    return augment.TwoViews(augment.train_view(SIZE, (0.5,) * 3, (0.25,) * 3))


def test_the_loader_path_replays_a_shuffled_dataloader_draw_for_draw() -> None:
    """Same positions in the same order and the same per-image augmentation as
    `DataLoader(shuffle=True, generator=g, drop_last=True)`: earlier runs replay unchanged."""
    s, positions = split(), np.arange(3, 50)
    torch.manual_seed(5)
    old = list(DataLoader(SplitDataset(s, view(), positions), batch_size=8, shuffle=True, drop_last=True,
                          generator=torch.Generator().manual_seed(9)))
    torch.manual_seed(5)
    new = list(Batches(s, view(), positions, 8, shuffle=True, generator=torch.Generator().manual_seed(9),
                       drop_last=True))
    assert len(old) == len(new) == 47 // 8
    for (old_views, old_pos), (new_views, new_pos) in zip(old, new, strict=True):
        assert torch.equal(old_pos, new_pos)
        torch.testing.assert_close(old_views[0], new_views[0])
        torch.testing.assert_close(old_views[1], new_views[1])


def test_global_batches_keep_a_lone_partial_batch_and_drop_a_trailing_one() -> None:
    def sizes(n: int, drop_last: bool) -> list[int]:
        return [len(b) for b in global_batches(n, 8, shuffle=False, generator=None, drop_last=drop_last)[0]]
    assert sizes(5, True) == [5] and sizes(20, True) == [8, 8] and sizes(20, False) == [8, 8, 4]


def test_worker_processes_augment_as_dataloader_workers_did_and_differ_by_epoch() -> None:
    """With a worker process, the same views as DataLoader(shuffle=True, num_workers=1), and
    another pass (another epoch's generator) draws other augmentations."""
    s, positions = split(20), np.arange(20)

    def views(batches) -> torch.Tensor:
        return torch.cat([v[0] for v, _ in batches])
    old = DataLoader(SplitDataset(s, view(), positions), batch_size=8, shuffle=True, drop_last=True, num_workers=1,
                     generator=torch.Generator().manual_seed(3))
    new = Batches(s, view(), positions, 8, shuffle=True, generator=torch.Generator().manual_seed(3), drop_last=True,
                  workers=1)
    torch.testing.assert_close(views(old), views(new))
    other = Batches(s, view(), positions, 8, shuffle=True, generator=torch.Generator().manual_seed(4), drop_last=True,
                    workers=1)
    assert not torch.equal(views(new), views(other))


def test_the_resident_path_covers_the_same_positions_reproducibly() -> None:
    s, positions = split(), np.arange(50)
    resident = ResidentSplit(s, SIZE, torch.device("cpu"))

    def one_pass():
        torch.manual_seed(1)
        return list(Batches(s, view(), positions, 16, shuffle=True, generator=torch.Generator().manual_seed(2),
                            drop_last=True, resident=resident))
    first, second = one_pass(), one_pass()
    loader = list(Batches(s, view(), positions, 16, shuffle=True, generator=torch.Generator().manual_seed(2),
                          drop_last=True))
    for (views, pos), (again, pos_again), (_, loader_pos) in zip(first, second, loader, strict=True):
        assert torch.equal(pos, loader_pos) and torch.equal(pos, pos_again)
        assert views[0].shape == (16, 3, SIZE, SIZE) and views[0].dtype == torch.float32
        torch.testing.assert_close(views[0], again[0])


def test_a_resident_split_fits_other_sizes_like_the_per_image_view() -> None:
    rng = np.random.default_rng(1)
    small = Split(labels=np.zeros(4, dtype=np.int64), index=np.arange(4),
                  images=rng.integers(0, 256, (4, 8, 8, 3), dtype=np.uint8))
    resident = ResidentSplit(small, SIZE, torch.device("cpu"))
    eval_view = augment.eval_view(SIZE, (0.0,) * 3, (1.0,) * 3)
    for i in range(4):
        expected = eval_view(small.image_tensor(i))
        torch.testing.assert_close(resident.images[i].float() / 255.0, expected)
