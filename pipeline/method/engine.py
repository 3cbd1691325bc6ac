"""Epoch loops of MTaDCS: warm-up, the selection epochs (Algorithm 1), fine-tuning; checkpoints.

One `Trainer` owns everything that must survive a restart: the model, its momentum key
encoder and labelled queue, the optimizer, and the per-sample state (confidence mask G,
current labels, soft labels). A checkpoint holds all of it and is written atomically
after every epoch; loading it with `weights_only=True` and continuing gives the same
masks and metrics as an uninterrupted run on CPU (bit for bit; on CUDA, cudnn autotuning
and bf16 make runs close but not identical), because every source of randomness
(shuffling, augmentation, mixup) is re-seeded from (seed, epoch) at each epoch start.

Order inside one selection epoch t (Algorithm 1, with one feature extraction per epoch):
train on G (Eq. 6) → extract f and ŷ with the model at the end of t → label correction
(Eq. 7) → selection from Ḡ (Eq. 2) and removal from G (Eq. 3), giving the G that epoch
t+1 trains on. After the last epoch Algorithm 1 ends with Eq. 7; `method.final_selection` (the
default) runs Eq. 2-3 once more so labels corrected there can reach fine-tuning. The train
phase opens with one extraction and selection on the warmed-up model (recorded as epoch
T_P), so epoch T_P+1 already trains on the first selection, exactly as Algorithm 1 line 5
asks. Cells that use no prediction (`MethodConfig.uses_predictions` false: the CE / Mixup
rows) skip the extraction and write no trace.
"""

from __future__ import annotations

import io
import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

from pipeline import distributed, faults
from pipeline.config import CellConfig
from pipeline.data import trace_store
from pipeline.data.datasets import Dataset, Split
from pipeline.errors import UserError
from pipeline.files import atomic_path
from pipeline.method import augment, batch_augment
from pipeline.method.batches import Batches, ResidentSplit
from pipeline.method.contrastive import (
    LabelledQueue,
    cap_queue_size,
    local_supcon_loss,
    make_key_encoder,
    momentum_update,
)
from pipeline.method.correction import correct_labels, init_soft_labels, scaled_alpha
from pipeline.method.evaluate import knn_accuracy, topk_accuracy
from pipeline.method.losses import logit_adjustment, mixup, soft_cross_entropy, target_prior
from pipeline.method.models import build_model
from pipeline.method.outside_g import estimate_transition, fixmatch_loss, forward_corrected_loss
from pipeline.method.selection import (
    SelectionResult,
    confidence_set_quality,
    confident_per_class,
    gmm_clean_mask,
    gmm_clean_share,
    removable_mask,
    update_confidence_set,
)
from pipeline.runtime import Progress, configure, show_bar

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"
FINETUNE_SEED_OFFSET = 10_000  # fine-tuning epochs draw randomness apart from the training epochs'
EpochCallback = Callable[[dict], None]


@dataclass
class TrainingLabels:
    """The labels a run starts from, as read from the noise stage's label file."""

    given: np.ndarray  # int64 (N,), the noisy labels training sees
    clean: np.ndarray | None  # int64 (N,), only for analysis metrics; None for real noise
    init_G: np.ndarray  # bool (N,), the initial confidence set
    verified: bool = False  # init_G is a verified-clean subset (simulated noise), not "everything"


@dataclass
class Extraction:
    features: np.ndarray  # float32 (N, D), L2-normalised f
    projections: np.ndarray  # float32 (N, P), z
    logits: torch.Tensor  # float32 (N, K)

    @property
    def preds(self) -> np.ndarray:
        return self.logits.argmax(1).numpy()


def lr_at(epoch: int, base: float, milestones: list[int], gamma: float) -> float:
    """Step schedule: lr after `epoch` finished epochs (0-based), MultiStepLR's rule."""
    return base * gamma ** sum(epoch >= m for m in milestones)


@dataclass(frozen=True)
class Placement:
    """Where tensors live and how they are computed: device, memory format, autocast."""

    device: torch.device
    channels_last: bool = False
    amp: bool = False
    workers: int = 0
    data_path: str = "loader"  # "resident": images on the device, augmented a batch at a time
    explicit: bool = False  # data_path was asked for by name (not "auto"): no silent fallback
    eval_batch: int = 512  # extraction and evaluation batch (runtime.eval_batch_size, resolved)
    _resident: dict = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def for_runtime(cls, runtime) -> Placement:
        device = configure(runtime)
        cuda = device.type == "cuda"
        path = runtime.data_path if runtime.data_path != "auto" else ("resident" if cuda else "loader")
        eval_batch = runtime.eval_batch_size if runtime.eval_batch_size != "auto" else (512 if cuda else 64)
        return cls(device, runtime.channels_last and cuda, runtime.amp and cuda, runtime.workers, path,
                   runtime.data_path != "auto", eval_batch)

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
            progress: Progress | None = None) -> Extraction:
    """f, z and logits of `model` for every sample of `split`, eval mode, no augmentation.
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
            out = model(place.input(x))
        feats.append(out.feature.float().cpu())
        projs.append(out.projection.float().cpu())
        logits.append(out.logits.float().cpu())
        if progress:
            progress.batch_done()
    model.train(was_training)
    whole = [distributed.all_gather_rows(torch.cat(part)) for part in (feats, projs, logits)]
    return Extraction(whole[0].numpy(), whole[1].numpy(), whole[2])


PAPER_STEPS_PER_EPOCH = 50_000 // 128  # CIFAR at batch 128: where the paper's momentum 0.999 applies
PAPER_MOMENTUM = 0.999


def key_encoder_momentum(setting: float | str, num_samples: int, batch_size: int) -> float:
    """MoCo's momentum for this run. "auto" scales the paper's 0.999 per step at 390 steps an
    epoch (CIFAR, batch 128) to this dataset's |S|/batch steps an epoch: m = 0.999^(390 / steps).
    With `iters_per_epoch: S` that is the steps an epoch takes, so the key encoder lags as many
    epochs as the paper's; with `G` an epoch over a small G takes fewer steps and the lag, in
    epochs, is longer. With a fixed 0.999 a short run leaves the key encoder near its random
    initialisation (0.999^470 = 63 % after 470 steps), so Eq. 4 would pull queries toward random keys."""
    if setting != "auto":
        return float(setting)
    steps_per_epoch = max(num_samples // batch_size, 1)
    return PAPER_MOMENTUM ** (PAPER_STEPS_PER_EPOCH / steps_per_epoch)


def epoch_order(in_G: np.ndarray, labels: np.ndarray, *, iters: str | int, batch_size: int,
                class_balanced: bool, generator: torch.Generator) -> np.ndarray | None:
    """The sample positions one epoch draws, in order; None for "G" (the loader shuffles G).

    "S" draws |S| // batch batches, a number that many, from G: repeated shuffled passes over
    G, or with `class_balanced` every class of G equally likely (with replacement)."""
    if iters == "G":
        return None
    steps = max(len(in_G) // batch_size, 1) if iters == "S" else int(iters)
    total = steps * batch_size
    members = np.flatnonzero(in_G)
    if class_balanced:
        counts = np.bincount(labels[members])
        weights = torch.as_tensor(1.0 / counts[labels[members]], dtype=torch.float64)
        picks = torch.multinomial(weights, total, replacement=True, generator=generator).numpy()
        return members[picks]
    passes = -(-total // len(members))
    order = [members[torch.randperm(len(members), generator=generator).numpy()] for _ in range(passes)]
    return np.concatenate(order)[:total]


def seeded_generator(seed: int, epoch: int) -> torch.Generator:
    """Re-seed all randomness from (seed, epoch) so a resumed run replays identically."""
    seed = seed * 1_000_003 + epoch
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


class Trainer:
    """Model, key encoder, queue, optimizer and per-sample state of one run.

    Every change to that state goes through a method named for what it does: `run_epoch`
    (Eq. 6 on the current G), `correct_labels` (Eq. 7), `set_confidence_set` (Eq. 2-3's
    result), `include_all`, `begin_phase`, `record`, `restore`. Phase functions below only
    orchestrate them.
    """

    def __init__(self, cell: CellConfig, data: Dataset, labels: TrainingLabels, *, lr: float,
                 momentum: float, weight_decay: float, key_encoder: bool):
        self.cell, self.data = cell, data
        self.place = Placement.for_runtime(cell.runtime)
        self.device = self.place.device
        model = build_model(cell.model.arch, data.num_classes, width=cell.model.width, proj_dim=cell.model.proj_dim)
        if distributed.active() and self.device.type == "cuda":
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)  # BN over the global batch
        self.model = self.place.module(model)
        self.key_model = self.place.module(make_key_encoder(self.model)) if key_encoder else None
        self.forward = self._data_parallel(self.model)  # after key_model: its test reads it
        n = len(data.train)
        self.queue = LabelledQueue(cap_queue_size(cell.method.queue_size, n), cell.model.proj_dim).to(self.device)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
        self.key_momentum = key_encoder_momentum(cell.method.moco_momentum, n, cell.optim.batch_size)
        self.epoch = 0  # finished epochs of the current phase's global schedule
        self.in_G = labels.init_G.copy()
        self.labels = labels.given.copy()
        self.given = labels.given  # the labels as delivered: what forward correction learns through T
        self.soft = init_soft_labels(labels.given, data.num_classes)
        self.transition: torch.Tensor | None = None  # p(noisy | clean), for forward correction
        self.disagree_streak = np.zeros(n, dtype=np.int64)  # selection rounds in a row with ŷ != label
        self.agree_streak = np.zeros(n, dtype=np.int64)  # selection rounds in a row with ŷ == label
        self.kept: np.ndarray | None = None  # a self-picked seed kept in G all run (method.self_seed_keep)
        self.class_keep: np.ndarray | None = None  # min_class_keep "auto": the shares estimated at round one
        self.history: list[dict] = []

    def _data_parallel(self, model: torch.nn.Module) -> torch.nn.Module:
        """The module training steps call: the model, or under torchrun PyTorch's DDP around it
        (gradients averaged over ranks). On CPU (gloo) BatchNorm normalises each rank's share of
        the batch; on CUDA it is synchronised."""
        if not distributed.active():
            return model
        world = distributed.world_size()
        for name, batch in (("optim.batch_size", self.cell.optim.batch_size),
                            ("finetune.batch_size", self.cell.finetune.batch_size)):
            if batch < 2 * world:  # BatchNorm needs two samples on every rank
                raise UserError(f"{name} {batch} is under 2 samples for each of the {world} processes; "
                                f"raise it to {2 * world} or more, or lower runtime.processes")
        ids = [self.device.index] if self.device.type == "cuda" else None
        # The projection head takes no gradient in phases without Eq. 4 (fine-tuning, CE).
        unused = not (self.key_model is not None and self.cell.method.contrastive)
        return DistributedDataParallel(model, device_ids=ids, find_unused_parameters=unused)

    # -- state changes -------------------------------------------------------------------------
    def include_all(self) -> None:
        """G = S (the CE / Mixup rows); selection then keeps it so."""
        self.set_confidence_set(np.ones_like(self.in_G))

    def set_confidence_set(self, in_G: np.ndarray) -> None:
        """The new G; the queue keeps only keys of its members, under their current labels."""
        self.in_G = np.array(in_G, dtype=bool)  # a copy: never an alias of the caller's mask
        self.queue.refresh(torch.as_tensor(self.in_G), torch.as_tensor(self.labels))

    def keep_self_seed(self, seed: np.ndarray | None) -> None:
        """method.self_seed_keep: the self-picked seed stays in G, labels unchanged, all run (None: not kept)."""
        self.kept = None if seed is None else np.array(seed, dtype=bool)

    def note_predictions(self, preds: np.ndarray) -> np.ndarray:
        """One more selection round of the moving trace: each sample's run of rounds whose
        prediction disagrees with its current label grows by one, or restarts at 0 (and its run of
        agreeing rounds the other way round)."""
        disagrees = preds != self.labels
        self.disagree_streak = np.where(disagrees, self.disagree_streak + 1, 0)
        self.agree_streak = np.where(disagrees, 0, self.agree_streak + 1)
        return self.disagree_streak

    def begin_phase(self, first_epoch: int = 0) -> None:
        """A new phase starts an empty history. Fine-tuning counts its epochs from 0; the MTaDCS
        epochs go on counting from the warm-up's T_P, as they share one lr schedule."""
        self.epoch, self.history = first_epoch, []

    def record(self, row: dict) -> None:
        self.history.append(row)

    def correct_labels(self, preds: np.ndarray, *, alpha: float, gamma: float,
                       protected: np.ndarray | None) -> np.ndarray:
        """Eq. 7 on all of S: update the soft labels, flip confident disagreements (never a
        protected one), and drop the flipped samples from G. Returns the flipped mask."""
        soft, new_labels, flips = correct_labels(self.soft, torch.as_tensor(self.labels), torch.as_tensor(preds),
                                                 alpha=alpha, gamma=gamma)
        flipped = flips.numpy()
        if protected is not None:
            flipped &= ~protected  # a verified label is never corrected
        self.soft = soft
        self.labels = np.where(flipped, new_labels.numpy(), self.labels)
        # A flipped label is no longer trusted. The queue is refreshed by the selection that
        # always follows (`set_confidence_set`), once for both changes.
        self.in_G = self.in_G & ~flipped
        return flipped

    def run_epoch(self, transform, *, lr: float, batch_size: int, mixup_alpha: float, contrastive: bool,
                  seed_epoch: int, progress: Progress, iters: str | int = "G", class_balanced: bool = False,
                  semi: bool = False) -> dict:
        """One epoch on G at `lr` with L = L_CE (mixup; logit-adjusted when method.logit_adjustment
        is set, fine-tuning included) + lambda * L_LCL (Eq. 5, 4, 6): a pass
        over G, or the steps `iters` asks for (see `epoch_order`); the epoch counter moves on
        by one. With `semi` and `method.semi_supervised` set, each step adds a loss on a batch
        from outside G (FixMatch's, or the forward-corrected one); the warm-up passes `semi` too,
        so FixMatch on a verified seed is semi-supervised learning from the first epoch.
        Randomness is re-seeded from (seed, seed_epoch)."""
        self.set_lr(lr)
        generator = seeded_generator(self.cell.runtime.seed, seed_epoch)
        start = time.perf_counter()
        positions = self._positions()
        order = epoch_order(self.in_G, self.labels, iters=iters, batch_size=batch_size,
                            class_balanced=class_balanced, generator=generator)
        unlabelled = self._unlabelled_batches(batch_size, generator) if semi else None
        drawn = positions if order is None else order
        stats = self._train_pass(drawn, transform, batch_size=batch_size, mixup_alpha=mixup_alpha,
                                 contrastive=contrastive, generator=generator if order is None else None,
                                 progress=progress, unlabelled=unlabelled, shift=self._logit_shift(drawn))
        self.epoch += 1
        return {"epoch": self.epoch, "lr": lr, **stats, "time_train": time.perf_counter() - start}

    def set_lr(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    # -- training --------------------------------------------------------------------------------
    def _positions(self) -> np.ndarray:
        positions = np.flatnonzero(self.in_G)
        if len(positions) == 0:
            raise UserError("the confidence set is empty: raise noise.init_per_class or check the label file")
        return positions

    def _logit_shift(self, drawn: np.ndarray) -> torch.Tensor | None:
        """method.logit_adjustment's shift of the logits for an epoch that trains on the
        samples at `drawn` (None when off); see `losses.logit_adjustment`."""
        kind = self.cell.method.logit_adjustment
        if kind == "none":
            return None
        target = target_prior(kind, self.given, self.data.num_classes)
        return logit_adjustment(self.labels[drawn], target).to(self.device)

    def _train_pass(self, positions: np.ndarray, transform, *, batch_size: int, mixup_alpha: float,
                    contrastive: bool, generator: torch.Generator | None, progress: Progress,
                    unlabelled=None, shift: torch.Tensor | None = None) -> dict:
        """Train on `positions` in batches: shuffled by the loader with `generator`, or, with
        no generator, in the order given (an order `epoch_order` drew). `unlabelled` yields one
        batch (views, positions) from outside G per step (see `_unlabelled_batches`); `shift` is
        added to the logits in the classification loss (logit adjustment)."""
        self.model.train()
        labels = torch.as_tensor(self.labels)
        loader = self.place.batches(self.data.train, transform, positions, batch_size, shuffle=generator is not None,
                                    generator=generator, drop_last=True)
        progress.start_batches(len(loader), "train")
        sums = {"loss": 0.0, "loss_ce": 0.0, "loss_lcl": 0.0, "loss_u": 0.0, "pseudo_labelled": 0.0,
                "correct": 0.0, "seen": 0, "steps": 0}
        time_data, waited = 0.0, time.perf_counter()  # time spent waiting for batches (making views)
        for views, pos in loader:
            time_data += time.perf_counter() - waited
            query_view, key_view = views if isinstance(views, list | tuple) else (views, None)
            y = labels[pos].to(self.device)
            pair = next(unlabelled) if unlabelled is not None else None
            losses = self._step(self.place.input(query_view), key_view, y, pos, mixup_alpha, contrastive, pair,
                                shift)
            sums["steps"] += 1
            n = len(pos)
            for name in ("loss", "loss_ce", "loss_lcl", "loss_u", "pseudo_labelled"):
                sums[name] += losses[name] * n
            sums["correct"] += losses["correct"]
            sums["seen"] += n
            progress.batch_done()
            waited = time.perf_counter()
        # DDP broadcasts rank 0's BatchNorm statistics before each forward, and each rank then
        # updates them with its own share: make them rank 0's again, for extraction and the key encoder.
        for module in (self.model, self.key_model):
            if module is not None:
                distributed.broadcast_buffers(module)
        sums = dict(zip(sums, distributed.all_reduce_sum(list(sums.values())), strict=True))  # over all ranks
        sums["steps"] = int(sums["steps"]) // distributed.world_size()  # a step is one global batch
        seen, steps = max(int(sums.pop("seen")), 1), sums.pop("steps")
        return {k: v / seen for k, v in sums.items() if k != "correct"} | {
            "train_acc": 100.0 * sums["correct"] / seen, "train_samples": int(seen), "steps": steps,
            "time_data": time_data}

    def _unlabelled_batches(self, batch_size: int, generator: torch.Generator):
        """An endless stream of batches from outside G (shuffled passes) for `semi_supervised`:
        (weak, strong) views for FixMatch, the strong view alone for forward correction; None
        when it is off, or fewer samples than one batch lie outside G."""
        m = self.cell.method
        outside = np.flatnonzero(~self.in_G)
        size = max(int(round(m.fixmatch_ratio * batch_size)), 2 * distributed.world_size())
        if m.semi_supervised == "none" or len(outside) < size:
            return None
        if m.semi_supervised == "forward" and self.transition is None:
            return None  # T comes from the warm-up's model: no correction until the warm-up ends
        # FixMatch needs the weak view for its pseudo-labels; forward correction learns the given
        # label on the strong view alone, so it does not pay for a weak view it would discard.
        make = augment.weak_strong_views if m.semi_supervised == "fixmatch" else augment.train_view
        views = make(self.data.image_size, self.data.mean, self.data.std, num_ops=m.randaugment_ops,
                     magnitude=m.randaugment_magnitude)
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))

        def stream():
            for round_ in itertools.count():
                loader = self.place.batches(self.data.train, views, outside, size, shuffle=True,
                                            generator=torch.Generator().manual_seed(seed + round_), drop_last=True)
                yield from loader
        return stream()

    def _step(self, x: torch.Tensor, key_view, y: torch.Tensor, pos: torch.Tensor, mixup_alpha: float,
              contrastive: bool, pair=None, shift: torch.Tensor | None = None) -> dict:
        k, b = self.data.num_classes, len(y)
        onehot = F.one_hot(y, k).float()
        x_in, targets, lam, perm = x, onehot, 1.0, None
        if mixup_alpha > 0:
            x_in, targets, lam, perm = mixup(x, onehot, mixup_alpha)
        weak_probs = None
        if pair is not None:  # one forward over labelled and strong views, as FixMatch does (shared BN batch)
            views, outside = pair
            if self.cell.method.semi_supervised == "fixmatch":
                weak, strong = views
                weak_probs = self._teacher_probs(weak)
            else:  # forward correction draws the strong view alone
                strong = views
            x_in = torch.cat([x_in, self.place.input(strong)])
        with self.place.autocast():
            out = self.forward(x_in)
            logits = out.logits.float()
            loss_ce = soft_cross_entropy(logits[:b] if shift is None else logits[:b] + shift, targets)
            loss_lcl = torch.zeros((), device=self.device)
            if contrastive:
                loss_lcl = self._contrastive(out.projection[:b].float(), key_view, y, pos, lam, perm)
            loss_u, share = torch.zeros((), device=self.device), 0.0
            if weak_probs is not None:
                loss_u, share = fixmatch_loss(logits[b:], weak_probs, self.cell.method.fixmatch_threshold)
            elif pair is not None:
                given = torch.as_tensor(self.given[outside.numpy()]).to(self.device)
                loss_u, share = forward_corrected_loss(logits[b:], given, self.transition), 1.0
        m = self.cell.method
        loss = loss_ce + m.lambda_lcl * loss_lcl + m.fixmatch_lambda * loss_u
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        if self.key_model is not None:
            momentum_update(self.key_model, self.model, self.key_momentum)
        correct = (logits[:b].argmax(1) == y).sum().item()  # against the dominant label (lam >= 0.5)
        return {"loss": loss.item(), "loss_ce": loss_ce.item(), "loss_lcl": loss_lcl.item(), "loss_u": loss_u.item(),
                "pseudo_labelled": share, "correct": float(correct)}

    @torch.no_grad()
    def _teacher_probs(self, weak: torch.Tensor) -> torch.Tensor:
        """FixMatch's weak-view probabilities, from the model that selects (the student in eval
        mode, or its EMA copy)."""
        teacher = self.key_model if self.cell.method.selection_model == "ema" else self.model
        was_training = teacher.training
        teacher.eval()
        with self.place.autocast():
            probs = teacher(self.place.input(weak)).logits.float().softmax(1)
        teacher.train(was_training)
        return probs

    def estimate_transition(self, logits: torch.Tensor, verified: np.ndarray) -> None:
        """T from this model's predictions on the verified samples (their labels are clean)."""
        self.transition = estimate_transition(logits[verified].softmax(1), torch.as_tensor(self.labels[verified]),
                                              self.data.num_classes)

    def _contrastive(self, query: torch.Tensor, key_view: torch.Tensor, y: torch.Tensor, pos: torch.Tensor,
                     lam: float, perm: torch.Tensor | None) -> torch.Tensor:
        """Eq. 4 against the batch's keys and the queue; a mixed query counts its two labels by lam."""
        with torch.no_grad():
            keys = self.key_model(self.place.input(key_view)).projection.float()
        # Under torchrun the bank and the queue take every rank's keys (MoCo's concat_all_gather).
        keys, y_all = distributed.all_gather_rows(keys), distributed.all_gather_rows(y)
        pos = distributed.all_gather_rows(pos)
        queued_keys, queued_labels = self.queue.contents()
        bank, bank_labels = torch.cat([keys, queued_keys]), torch.cat([y_all, queued_labels])
        t = self.cell.method.temperature
        loss = lam * local_supcon_loss(query, y, bank, bank_labels, t)
        if perm is not None and lam < 1.0:
            loss = loss + (1.0 - lam) * local_supcon_loss(query, y[perm], bank, bank_labels, t)
        self.queue.enqueue(keys, y_all, pos)
        return loss

    def extract(self, split: Split, batch_size: int, progress: Progress | None = None, *,
                ema: bool = False) -> Extraction:
        """Features and logits of the model, or with `ema` of its momentum (key) encoder."""
        model = self.key_model if ema else self.model
        return extract(model, split, self.data, self.place, batch_size, progress)

    # -- checkpoints ---------------------------------------------------------------------------
    def save(self, path: Path, phase: str, fingerprint: str) -> None:
        state = {
            "phase": phase, "epoch": self.epoch, "fingerprint": fingerprint,
            "model": self.model.state_dict(),
            "key_model": self.key_model.state_dict() if self.key_model is not None else None,
            "queue": self.queue.state_dict(), "optimizer": self.optimizer.state_dict(),
            "in_G": torch.as_tensor(self.in_G), "labels": torch.as_tensor(self.labels), "soft": self.soft,
            "transition": self.transition, "disagree_streak": torch.as_tensor(self.disagree_streak),
            "agree_streak": torch.as_tensor(self.agree_streak),
            "kept": None if self.kept is None else torch.as_tensor(self.kept),
            "class_keep": None if self.class_keep is None else torch.as_tensor(self.class_keep),
            "history": self.history,
        }
        if distributed.is_main():  # under torchrun rank 0 writes; the others wait for the file
            buffer = io.BytesIO()  # serialised in memory first: torch's own writer hides a full disk's errno
            torch.save(state, buffer)
            with atomic_path(path) as tmp:
                tmp.write_bytes(buffer.getbuffer())
                faults.reached("checkpoint_write")
        distributed.barrier()

    def load(self, path: Path, *, weights_only_model: bool = False) -> dict:
        return self.restore(load_checkpoint(path), weights_only_model=weights_only_model, source=path)

    def restore(self, state: dict, *, weights_only_model: bool = False, source: str | Path = "checkpoint") -> dict:
        """Restore a checkpoint's state; with weights_only_model, take the model and per-sample
        state only (a new phase starting from the previous phase's result). A checkpoint of
        another cell, model or code version is a UserError naming `source`."""
        samples = len(state.get("in_G", ()))
        if samples != len(self.in_G):
            raise UserError(f"{source}: holds {samples} samples and this cell has {len(self.in_G)}: it belongs to "
                            "another cell or dataset; delete it and rerun the stage that wrote it")
        try:
            self._load_states(state, weights_only_model)
        except (RuntimeError, KeyError) as err:  # missing/unexpected keys, shape mismatch
            raise UserError(f"{source}: does not fit this code or model ({type(err).__name__}: "
                            f"{str(err).splitlines()[0][:120]}); delete it and rerun the stage that wrote it") from None
        self.in_G = state["in_G"].numpy().astype(bool)
        self.labels = state["labels"].numpy().astype(np.int64)
        self.soft = state["soft"]
        self.transition = state.get("transition")
        streak = state.get("disagree_streak")  # absent from checkpoints written before the moving trace
        self.disagree_streak = np.zeros(len(self.in_G), dtype=np.int64) if streak is None else streak.numpy().copy()
        agree = state.get("agree_streak")
        self.agree_streak = np.zeros(len(self.in_G), dtype=np.int64) if agree is None else agree.numpy().copy()
        kept = state.get("kept")  # absent from checkpoints written before self_seed_keep
        self.kept = None if kept is None else kept.numpy().astype(bool)
        keep = state.get("class_keep")
        self.class_keep = None if keep is None else keep.numpy().copy()
        if not weights_only_model:
            self.epoch = state["epoch"]
            self.history = list(state["history"])
        return state

    def _load_states(self, state: dict, weights_only_model: bool) -> None:
        self.model.load_state_dict(state["model"])
        if weights_only_model:
            if self.key_model is not None:
                self.key_model.load_state_dict(state["key_model"] or state["model"])
            return
        if self.key_model is not None and state["key_model"] is not None:
            self.key_model.load_state_dict(state["key_model"])
        self.queue.load_state_dict(state["queue"])
        self.optimizer.load_state_dict(state["optimizer"])


def load_checkpoint(path: str | Path) -> dict:
    """torch.load with weights_only=True, turning a missing or corrupt file into one clear line."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: checkpoint not found (run the previous stage first, e.g. `dvc repro`)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated zip, pickle of a foreign object, ...
        raise UserError(f"{path}: unreadable checkpoint ({type(err).__name__}); delete it and rerun the stage") from None


def _matching_state(path: Path, phase: str, fingerprint: str) -> dict | None:
    """The checkpoint at `path` when it belongs to this phase and these inputs, else None."""
    if not path.exists():
        return None
    state = load_checkpoint(path)
    return state if state.get("phase") == phase and state.get("fingerprint") == fingerprint else None


def _resume_point(trainer: Trainer, out_dir: Path, phase: str, fingerprint: str) -> bool:
    """Continue from out_dir's checkpoint when it belongs to this phase and these inputs."""
    path = out_dir / CHECKPOINT
    state = _matching_state(path, phase, fingerprint)
    if state is None:
        if path.exists():
            log.info("%s: checkpoint in %s is from other inputs; starting afresh", phase, out_dir)
        return False
    trainer.restore(state, source=path)
    log.info("%s: resuming after epoch %d", phase, trainer.epoch)
    return True


def _quality(trainer: Trainer, clean: np.ndarray | None) -> dict:
    if clean is None:
        return {"G_size": int(trainer.in_G.sum())}
    q = confidence_set_quality(trainer.in_G, trainer.labels, clean)
    return {"G_size": int(q["size"]), "G_precision": 100.0 * q["precision"], "G_recall": 100.0 * q["recall"]}


def _test_top1(trainer: Trainer) -> float:
    name, split = next(iter(trainer.data.tests.items()))
    out = trainer.extract(split, trainer.place.eval_batch)
    return topk_accuracy(out.logits, torch.as_tensor(split.labels), ks=(1,))["top1"]


def _finish_epoch(trainer: Trainer, record: dict, checkpoint: Path, fingerprint: str, progress: Progress,
                  on_epoch: EpochCallback | None) -> None:
    """Append the epoch's record to the history, then checkpoint (so the checkpoint holds every
    finished epoch's record and a resumed run's history is complete), then report."""
    trainer.record(record)
    trainer.save(checkpoint, record["phase"], fingerprint)
    shown = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in record.items()
                      if k in ("epoch", "loss", "train_acc", "test_top1", "G_size", "G_precision", "lr"))
    progress.epoch_done(f"{record['phase']} {shown}")
    if on_epoch is not None and distributed.is_main():
        on_epoch(record)


# -- phases -------------------------------------------------------------------------------------

def run_warmup(cell: CellConfig, data: Dataset, labels: TrainingLabels, out_dir: str | Path, *,
               fingerprint: str = "", on_epoch: EpochCallback | None = None) -> Trainer:
    """T_P epochs of Eq. 6 on the initial confidence set (Algorithm 1, lines 1-3)."""
    out_dir = Path(out_dir)
    m, o = cell.method, cell.optim
    trainer = Trainer(cell, data, labels, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay,
                      key_encoder=m.needs_key_encoder)
    _check_labels_fit(cell, labels)
    if m.keeps_all or m.warmup_set == "all":
        trainer.include_all()  # G = S from the start (update_confidence_set keeps it so)
        if m.semi_supervised == "forward":
            # GLC: T is read off the seed, so the noisy-label model must not have fitted it.
            trainer.set_confidence_set(~labels.init_G)
    _resume_point(trainer, out_dir, "warmup", fingerprint)
    views = _train_transform(cell, data)
    with Progress(show_bar(cell.runtime) and distributed.is_main(), f"{cell.name} warm-up", o.warmup_epochs, trainer.epoch) as progress:
        while trainer.epoch < o.warmup_epochs:
            record = _train_one(trainer, "warmup", views, progress, labels.clean)
            record["test_top1"] = _test_top1(trainer)  # the curve starts at epoch 1
            _finish_epoch(trainer, record, out_dir / CHECKPOINT, fingerprint, progress, on_epoch)
    missing = _matching_state(out_dir / CHECKPOINT, "warmup", fingerprint) is None
    distributed.barrier()  # every rank has looked before rank 0 writes: all of them save, or none
    if missing:  # T_P = 0: the untrained model is the warm-up result
        trainer.save(out_dir / CHECKPOINT, "warmup", fingerprint)
    return trainer


def _check_labels_fit(cell: CellConfig, labels: TrainingLabels) -> None:
    if cell.method.semi_supervised == "forward" and not labels.verified:
        raise UserError("method.semi_supervised 'forward' estimates its transition matrix on the verified seed, and "
                        "this run has none (noise.init all, real noise or your own labels); use 'fixmatch' or 'none'")


def _train_transform(cell: CellConfig, data: Dataset):
    m = cell.method
    view = augment.train_view(data.image_size, data.mean, data.std, num_ops=m.randaugment_ops,
                              magnitude=m.randaugment_magnitude)
    return augment.TwoViews(view) if m.contrastive else view  # one view suffices without the key encoder


def _train_one(trainer: Trainer, phase: str, transform, progress: Progress, clean: np.ndarray | None) -> dict:
    """One epoch of the warm-up / MTaDCS schedule (one lr schedule over both)."""
    o, m = trainer.cell.optim, trainer.cell.method
    stats = trainer.run_epoch(transform, lr=lr_at(trainer.epoch, o.lr, o.lr_milestones, o.lr_gamma),
                              batch_size=o.batch_size, mixup_alpha=m.mixup_alpha if m.mixup else 0.0,
                              contrastive=m.contrastive, seed_epoch=trainer.epoch, progress=progress,
                              iters=o.iters_per_epoch, class_balanced=o.class_balanced, semi=True)
    return {"phase": phase, **stats, **_quality(trainer, clean)}


def run_train(cell: CellConfig, data: Dataset, labels: TrainingLabels, warmup_checkpoint: str | Path,
              out_dir: str | Path, *, fingerprint: str = "", on_epoch: EpochCallback | None = None) -> Trainer:
    """Epochs T_P+1 … T_max of Algorithm 1, with per-epoch traces under out_dir/epochs
    (none for a cell that uses no prediction)."""
    out_dir = Path(out_dir)
    m, o = cell.method, cell.optim
    trainer = Trainer(cell, data, labels, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay,
                      key_encoder=m.needs_key_encoder)
    traces = out_dir / "epochs"
    _check_labels_fit(cell, labels)
    _warn_if_correction_cannot_flip(cell)
    if not _resume_point(trainer, out_dir, "train", fingerprint):
        trainer.load(Path(warmup_checkpoint))  # warm-up's optimizer, queue and epoch count carry on
        trainer.begin_phase(first_epoch=trainer.epoch)
        if m.warmup_set == "all" and not m.keeps_all:
            trainer.set_confidence_set(labels.init_G)  # warmed up on S; selection starts from the seed
        if distributed.is_main():
            trace_store.drop_epochs_after(traces, -1)
        with Progress(False, "", 0) as quiet:
            ext, seed = None, None
            if m.self_seed_per_class:  # no verified seed: the model picks one (its pass over S serves both)
                ext = _extract_for_selection(trainer, quiet)
                seed = _self_seed(trainer, ext)
                trainer.set_confidence_set(seed)
                trainer.keep_self_seed(seed if m.self_seed_keep else None)
            # The model that just picked the seed as its surest samples does not remove them in
            # the same round (with agreement_min_prob, a weak model's surest can sit under it);
            # from the next round on the seed is G like any other members.
            record = _select(trainer, labels, quiet, traces, correct=False, ext=ext, keep=seed)
        _finish_epoch(trainer, record, out_dir / CHECKPOINT, fingerprint, quiet, on_epoch)
    if distributed.is_main():
        trace_store.drop_epochs_after(traces, trainer.epoch)  # partial epochs of a killed run
    views = _train_transform(cell, data)
    total = o.epochs - o.warmup_epochs
    with Progress(show_bar(cell.runtime) and distributed.is_main(), f"{cell.name} MTaDCS", total, trainer.epoch - o.warmup_epochs) as progress:
        while trainer.epoch < o.epochs:
            record = _train_one(trainer, "train", views, progress, labels.clean)
            record |= _select(trainer, labels, progress, traces, correct=m.label_correction)
            _finish_epoch(trainer, record, out_dir / CHECKPOINT, fingerprint, progress, on_epoch)
    return trainer


def correction_alpha(cell: CellConfig) -> float:
    """Eq. 7's alpha for this schedule (rescaled when lc_alpha_reference_rounds is set)."""
    m, rounds = cell.method, cell.optim.epochs - cell.optim.warmup_epochs
    if m.lc_alpha_reference_rounds and rounds > 0:
        return scaled_alpha(m.lc_alpha, rounds, m.lc_alpha_reference_rounds)
    return m.lc_alpha


def _warn_if_correction_cannot_flip(cell: CellConfig) -> None:
    rounds = cell.optim.epochs - cell.optim.warmup_epochs
    reachable = 1.0 - (1.0 - correction_alpha(cell)) ** rounds
    if cell.method.label_correction and rounds > 0 and reachable <= cell.method.lc_gamma:
        log.warning("label correction can never flip a label: after %d rounds another class reaches at most "
                    "%.2f <= lc_gamma %.2f; set method.lc_alpha_reference_rounds (240: the paper's decay) or raise lc_alpha",
                    rounds, reachable, cell.method.lc_gamma)


def _select(trainer: Trainer, labels: TrainingLabels, progress: Progress, traces: Path, *, correct: bool,
            ext: Extraction | None = None, keep: np.ndarray | None = None) -> dict:
    """Extract (unless `ext` is this model's pass over S already) → label correction (Eq. 7) →
    selection and removal (Eq. 2-3) → trace. `keep` marks members this round may not remove or
    relabel, beside the verified seed (default: the kept self-seed, if any)."""
    cell, m = trainer.cell, trainer.cell.method
    if not m.uses_predictions:
        # Extracting f over S would only cost time (as much as the training step on CPU) and
        # make the baseline's epoch look dearer; no trace is written either.
        n = len(trainer.in_G)
        return {"phase": "train", "epoch": trainer.epoch, "selected": n, "removed": 0, "flipped": 0,
                "test_top1": _test_top1(trainer), **_quality(trainer, labels.clean)}
    start = time.perf_counter()
    if ext is None:
        ext = _extract_for_selection(trainer, progress)
    preds = ext.preds
    if m.semi_supervised == "forward" and trainer.transition is None and labels.verified:
        trainer.estimate_transition(ext.logits, labels.init_G)  # the all-data warm-up's model, once
    time_extract = time.perf_counter() - start
    flipped = np.zeros(len(preds), dtype=bool)
    protected = labels.init_G if (labels.verified and m.keep_verified) else None
    keep = keep if keep is not None else trainer.kept
    if keep is not None:
        protected = keep if protected is None else protected | keep
    if correct:
        flipped = trainer.correct_labels(preds, alpha=correction_alpha(cell), gamma=m.lc_gamma, protected=protected)
    start = time.perf_counter()
    selects = not (trainer.epoch >= cell.optim.epochs > cell.optim.warmup_epochs and not m.final_selection)
    if selects:
        result = _select_and_remove(trainer, ext, preds, protected)
    else:
        result = _no_selection(trainer.in_G)  # Algorithm 1 ends with Eq. 7: G after it is the final G
    # Every rank computed this from the same gathered f and ŷ; rank 0's result is made everyone's
    # so no floating-point tie can let the ranks' G drift apart.
    trainer.labels = distributed.broadcast_array(trainer.labels)
    trainer.set_confidence_set(distributed.broadcast_array(result.in_G))
    time_lof = time.perf_counter() - start
    start = time.perf_counter()
    _write_trace(trainer, labels, ext, result, flipped, traces)
    time_store = time.perf_counter() - start
    test_top1 = _test_top1(trainer)
    return {"phase": "train", "epoch": trainer.epoch, "selection": selects, "selected": int(result.selected.sum()),
            "removed": int(result.removed.sum()), "flipped": int(flipped.sum()), "test_top1": test_top1,
            "time_extract": time_extract, "time_lof": time_lof, "time_store": time_store,
            **_quality(trainer, labels.clean)}


def _extract_for_selection(trainer: Trainer, progress: Progress) -> Extraction:
    """f, z and logits over S from the model that selects (the student, or its EMA copy)."""
    return trainer.extract(trainer.data.train, trainer.place.eval_batch, progress,
                           ema=trainer.cell.method.selection_model == "ema")


def _self_seed(trainer: Trainer, ext: Extraction) -> np.ndarray:
    """method.self_seed_per_class: the warm-up model's most confident samples of each label."""
    chosen = confident_per_class(_label_prob(ext, trainer.labels), trainer.labels, trainer.data.num_classes,
                                 trainer.cell.method.self_seed_per_class)
    return distributed.broadcast_array(chosen)


def _label_prob(ext: Extraction, labels: np.ndarray) -> np.ndarray:
    """Each sample's predicted probability for its current label."""
    return ext.logits.softmax(1)[torch.arange(len(labels)), torch.as_tensor(labels)].numpy()


def _select_and_remove(trainer: Trainer, ext: Extraction, preds: np.ndarray,
                       protected: np.ndarray | None) -> SelectionResult:
    m = trainer.cell.method
    space = ext.features if m.lof_space == "feature" else ext.projections
    backend = m.lof_backend if m.lof_backend != "auto" else ("torch" if trainer.device.type == "cuda" else "sklearn")
    if backend == "torch":
        space = torch.from_numpy(space).to(trainer.device)  # LOF on the GPU when there is one
    streak = trainer.note_predictions(preds)
    label_prob = None
    if m.min_class_keep != 0 or m.removal_max_prob < 1 or m.min_class_share > 0 or m.agreement_min_prob > 0:
        label_prob = _label_prob(ext, trainer.labels)
    removable = removable_mask(streak, m.removal_patience, label_prob, m.removal_max_prob)
    clean = None  # what selection may admit besides Eq. 2's own conditions
    if m.loss_filter == "gmm":
        clean = gmm_clean_mask(_losses(ext, trainer.labels), trainer.labels, trainer.data.num_classes,
                               seed=trainer.cell.runtime.seed)
    if m.selection_patience > 1:
        settled = trainer.agree_streak >= m.selection_patience
        clean = settled if clean is None else clean & settled
    unsure = (preds == trainer.labels) & (label_prob < m.agreement_min_prob) if m.agreement_min_prob > 0 else None
    return update_confidence_set(
        trainer.in_G, space, trainer.labels, preds, trainer.data.num_classes, lof=m.lof,
        confidence_set=m.confidence_set, removal=m.removal, n_neighbors=m.lof_neighbors,
        threshold=m.lof_threshold, backend=backend, protected=protected,
        lof_reference=m.lof_reference, clean=clean, removable=removable, unsure=unsure,
        min_class_keep=_class_keep(trainer, ext), label_prob=label_prob, min_class_share=m.min_class_share)


def _losses(ext: Extraction, labels: np.ndarray) -> np.ndarray:
    return F.cross_entropy(ext.logits, torch.as_tensor(labels), reduction="none").numpy()


def _class_keep(trainer: Trainer, ext: Extraction) -> float | np.ndarray:
    """method.min_class_keep, or for "auto" the per-class clean shares a loss GMM estimates at the
    first selection round. Held afterwards: once removal stops training on a sample its loss
    grows, so a later estimate would follow G down instead of the labels' noise."""
    keep = trainer.cell.method.min_class_keep
    if keep != "auto":
        return keep
    if trainer.class_keep is None:
        shares = gmm_clean_share(_losses(ext, trainer.labels), trainer.labels, trainer.data.num_classes,
                                 seed=trainer.cell.runtime.seed)
        trainer.class_keep = distributed.broadcast_array(shares)
        log.info("min_class_keep auto: each class keeps at least %s of its labelled samples",
                 np.round(trainer.class_keep, 2).tolist())
    return trainer.class_keep


def _no_selection(in_G: np.ndarray) -> SelectionResult:
    n = len(in_G)
    none = np.zeros(n, dtype=bool)
    return SelectionResult(selected=none, removed=none, lof_score=np.full(n, np.nan, dtype=np.float32), in_G=in_G)


def class_centre_distance(features: np.ndarray, labels: np.ndarray, in_G: np.ndarray, num_classes: int) -> np.ndarray:
    """Distance of each f to the (normalised) mean f of G's members sharing its label; NaN if none."""
    dim = features.shape[1]
    sums = np.zeros((num_classes, dim), dtype=np.float64)
    np.add.at(sums, labels[in_G], features[in_G])
    norms = np.linalg.norm(sums, axis=1, keepdims=True)
    centres = np.divide(sums, norms, out=np.full_like(sums, np.nan), where=norms > 0)
    return np.linalg.norm(features - centres[labels], axis=1).astype(np.float32)


def _write_trace(trainer: Trainer, labels: TrainingLabels, ext: Extraction, result, flipped: np.ndarray,
                 traces: Path) -> None:
    cell, epoch = trainer.cell, trainer.epoch
    if not distributed.is_main():
        return
    last = epoch == cell.optim.epochs
    keep_features = last or epoch == cell.optim.warmup_epochs or epoch % cell.train.feature_every == 0
    columns = {
        "index": trainer.data.train.index, "given_label": labels.given, "label": trainer.labels,
        "pred": ext.preds, "in_G": trainer.in_G, "lof_score": result.lof_score,
        "selected": result.selected, "removed": result.removed, "flipped": flipped,
        "dist_to_class_centre": class_centre_distance(ext.features, trainer.labels, trainer.in_G,
                                                      trainer.data.num_classes),
    }
    trace_store.write_epoch(traces, epoch, columns, ext.features if keep_features else None)


def run_finetune(cell: CellConfig, data: Dataset, labels: TrainingLabels, train_checkpoint: str | Path,
                 out_dir: str | Path, *, fingerprint: str = "", on_epoch: EpochCallback | None = None) -> Trainer:
    """Fine-tune on the final G with weak augmentation and mixup CE (the '+' rows of Table 2a),
    logit-adjusted as the MTaDCS epochs are when method.logit_adjustment is set."""
    out_dir = Path(out_dir)
    f = cell.finetune
    trainer = Trainer(cell, data, labels, lr=f.lr, momentum=f.momentum, weight_decay=f.weight_decay,
                      key_encoder=False)
    if not _resume_point(trainer, out_dir, "finetune", fingerprint):
        trainer.load(Path(train_checkpoint), weights_only_model=True)
        trainer.begin_phase()
    weak = augment.weak_view(data.image_size, data.mean, data.std)
    with Progress(show_bar(cell.runtime) and distributed.is_main(), f"{cell.name} fine-tune", f.epochs, trainer.epoch) as progress:
        while trainer.epoch < f.epochs:
            stats = trainer.run_epoch(weak, lr=f.lr, batch_size=f.batch_size, mixup_alpha=f.mixup_alpha,
                                      contrastive=False, seed_epoch=FINETUNE_SEED_OFFSET + trainer.epoch,
                                      progress=progress, iters=f.iters_per_epoch)
            record = {"phase": "finetune", **stats, "test_top1": _test_top1(trainer)}
            _finish_epoch(trainer, record, out_dir / CHECKPOINT, fingerprint, progress, on_epoch)
    missing = f.epochs == 0 and _matching_state(out_dir / CHECKPOINT, "finetune", fingerprint) is None
    distributed.barrier()  # every rank has looked before rank 0 writes: all of them save, or none
    if missing:
        trainer.save(out_dir / CHECKPOINT, "finetune", fingerprint)  # no fine-tuning: the train result
    return trainer


def evaluate_checkpoint(cell: CellConfig, data: Dataset, labels: TrainingLabels, checkpoint: str | Path, *,
                        train: Extraction | None = None) -> dict:
    """Top-1/top-5 on every test set and weighted kNN on f (primary test set) of a checkpoint;
    `train`: the checkpoint's training-set outputs when the caller has them already."""
    e = cell.evaluate
    if e.knn_labels == "clean" and labels.clean is None:
        raise UserError("evaluate.knn_labels is 'clean' but this dataset has no clean labels; use 'auto' or 'current'")
    state = load_checkpoint(checkpoint)
    place = Placement.for_runtime(cell.runtime)
    model = _checkpoint_model(cell, data, state, place)
    batch = place.eval_batch
    if train is None:
        train = extract(model, data.train, data, place, batch)
    use_clean = labels.clean is not None and e.knn_labels in ("auto", "clean")
    vote_labels = labels.clean if use_clean else state["labels"].numpy().astype(np.int64)
    metrics: dict = {"knn_labels": "clean" if use_clean else "current"}
    for i, (name, split) in enumerate(data.tests.items()):
        out = extract(model, split, data, place, batch)
        targets = torch.as_tensor(split.labels)
        for key, value in topk_accuracy(out.logits, targets, ks=(1, 5)).items():
            metrics[f"{name}/{key}"] = value
        if i == 0:
            metrics[f"{name}/knn"] = knn_accuracy(
                torch.as_tensor(train.features), torch.as_tensor(vote_labels), torch.as_tensor(out.features),
                targets, data.num_classes, k=e.knn_k, temperature=e.knn_temperature)
    return metrics


def extract_checkpoint(cell: CellConfig, data: Dataset, checkpoint: str | Path, split: Split | None = None) -> Extraction:
    """A checkpoint's f, z and logits on every image of `split` (the training set when None), no augmentation."""
    place = Placement.for_runtime(cell.runtime)
    model = _checkpoint_model(cell, data, load_checkpoint(checkpoint), place)
    return extract(model, data.train if split is None else split, data, place, place.eval_batch)


def train_probabilities(cell: CellConfig, data: Dataset, checkpoint: str | Path) -> np.ndarray:
    """The checkpoint's softmax on every training image (no augmentation), float32 (N, K)."""
    return probabilities(extract_checkpoint(cell, data, checkpoint))


def probabilities(outputs: Extraction) -> np.ndarray:
    return torch.softmax(outputs.logits, dim=1).numpy()


def _checkpoint_model(cell: CellConfig, data: Dataset, state: dict, place: Placement) -> torch.nn.Module:
    model = build_model(cell.model.arch, data.num_classes, width=cell.model.width, proj_dim=cell.model.proj_dim)
    model.load_state_dict(state["model"])
    return place.module(model)
