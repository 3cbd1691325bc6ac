"""The learner of one run: a `Trainer` owns everything that must survive a restart (the model,
its momentum key encoder and labelled queue, the optimizer, and the per-sample state: the
confidence mask G, current labels, soft labels, the moving trace's streaks) and changes it only
through named methods. A checkpoint holds all of it (`save`, `restore`, `load_checkpoint`).
Every source of randomness (shuffling, augmentation, mixup) is re-seeded from (seed, epoch) at
each epoch start, so a resumed run continues as an uninterrupted one would."""

from __future__ import annotations

import io
import itertools
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

from pipeline import distributed, faults
from pipeline.config import CellConfig
from pipeline.data.datasets import Dataset, Split
from pipeline.errors import UserError
from pipeline.files import atomic_path
from pipeline.method import augment
from pipeline.method.contrastive import (
    LabelledQueue,
    cap_queue_size,
    local_supcon_loss,
    make_key_encoder,
    momentum_update,
)
from pipeline.method.correction import correct_labels, init_soft_labels
from pipeline.method.device import Extraction, Placement, extract
from pipeline.method.losses import logit_adjustment, mixup, soft_classification_loss, target_prior
from pipeline.method.models import build_model
from pipeline.method.outside_g import estimate_transition, fixmatch_loss, forward_corrected_loss
from pipeline.runtime import Progress


@dataclass
class TrainingLabels:
    """The labels a run starts from, as read from the noise stage's label file."""

    given: np.ndarray  # int64 (N,), the noisy labels training sees
    clean: np.ndarray | None  # int64 (N,), only for analysis metrics; None for real noise
    init_G: np.ndarray  # bool (N,), the initial confidence set
    verified: bool = False  # init_G is a verified-clean subset (simulated noise), not "everything"


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
                class_balanced: bool, generator: torch.Generator,
                outside_weights: np.ndarray | None = None) -> np.ndarray | None:
    """The sample positions one epoch draws, in order; None for "G" (the loader shuffles G).

    "S" draws |S| // batch batches, a number that many, from G: repeated shuffled passes over
    G, or with `class_balanced` every class of G equally likely (with replacement). With
    `outside_weights` (method.outside_g_draws) they come from all of S with replacement, each
    member of G with weight 1 and each other sample with its weight there."""
    if iters == "G":
        return None
    steps = max(len(in_G) // batch_size, 1) if iters == "S" else int(iters)
    total = steps * batch_size
    if outside_weights is not None and outside_weights[~in_G].any():  # all zero (before a round): G's draws
        weights = torch.as_tensor(np.where(in_G, 1.0, np.clip(outside_weights, 0.0, 1.0)), dtype=torch.float64)
        return torch.multinomial(weights, total, replacement=True, generator=generator).numpy()
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
    result), `end_round`, `hold_class_keep`, `include_all`, `begin_phase`, `record`, `restore`.
    The phase functions (`engine.py`) only orchestrate them.
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
        self.loss_weight = np.ones(n, dtype=np.float32)  # method.loss_weights: each sample's weight in L_CE
        self.draw_weight = np.zeros(n, dtype=np.float32)  # method.outside_g_draws: a non-member's draw weight
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

    def end_round(self, in_G: np.ndarray) -> None:
        """A selection round's outcome: the new G, with rank 0's labels and G made every rank's.
        Each rank computed them from the same gathered f and ŷ; no floating-point tie may let the
        ranks' G drift apart."""
        self.labels = distributed.broadcast_array(self.labels)
        self.set_confidence_set(distributed.broadcast_array(in_G))

    def hold_class_keep(self, shares: np.ndarray) -> None:
        """min_class_keep "auto": the per-class floors estimated at the first round, held all run (rank 0's)."""
        self.class_keep = distributed.broadcast_array(shares)

    def set_loss_weights(self, weights: np.ndarray) -> None:
        """method.loss_weights: each sample's weight in the classification loss from now on (rank 0's)."""
        self.loss_weight = distributed.broadcast_array(np.asarray(weights, dtype=np.float32))

    def set_draw_weights(self, weights: np.ndarray) -> None:
        """method.outside_g_draws: how likely each sample outside G is drawn from now on, against
        a member's 1 (rank 0's)."""
        self.draw_weight = distributed.broadcast_array(np.asarray(weights, dtype=np.float32))

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
        """One epoch on G at `lr` with L = L_CE (mixup; method.classification_loss, cross-entropy
        or GCE; logit-adjusted when method.logit_adjustment is set; fine-tuning included)
        + lambda * L_LCL (Eq. 5, 4, 6): a pass
        over G, or the steps `iters` asks for (see `epoch_order`); the epoch counter moves on
        by one. With `semi` and `method.semi_supervised` set, each step adds a loss on a batch
        from outside G (FixMatch's, or the forward-corrected one); the warm-up passes `semi` too,
        so FixMatch on a verified seed is semi-supervised learning from the first epoch.
        Randomness is re-seeded from (seed, seed_epoch)."""
        self.set_lr(lr)
        generator = seeded_generator(self.cell.runtime.seed, seed_epoch)
        start = time.perf_counter()
        positions = self._positions()
        outside = self.draw_weight if self.cell.method.outside_g_draws != "none" else None
        order = epoch_order(self.in_G, self.labels, iters=iters, batch_size=batch_size,
                            class_balanced=class_balanced, generator=generator, outside_weights=outside)
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
            weights = None if self.cell.method.loss_weights == "none" else \
                torch.as_tensor(self.loss_weight[pos.cpu().numpy()]).to(self.device)
            losses = self._step(self.place.input(query_view), key_view, y, pos, mixup_alpha, contrastive, pair,
                                shift, weights)
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
              contrastive: bool, pair=None, shift: torch.Tensor | None = None,
              weights: torch.Tensor | None = None) -> dict:
        k, b = self.data.num_classes, len(y)
        onehot = F.one_hot(y, k).float()
        x_in, targets, lam, perm = x, onehot, 1.0, None
        if mixup_alpha > 0:
            x_in, targets, lam, perm = mixup(x, onehot, mixup_alpha)
            if weights is not None:  # each label of a mixed pair weighs in its own target (CE and GCE are linear in it)
                other = weights[perm.to(weights.device)]
                weighted = lam * weights[:, None] * onehot + (1.0 - lam) * other[:, None] * onehot[perm.to(onehot.device)]
                weights = lam * weights + (1.0 - lam) * other
                targets = weighted / weights.clamp_min(1e-12)[:, None]  # times the weight again in the weighted mean
        total = None
        if weights is not None and distributed.active():  # the global batch's weighted mean (see losses._batch_mean)
            total = distributed.all_reduce_sum([float(weights.sum())])[0] / distributed.world_size()
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
            loss_ce = soft_classification_loss(logits[:b] if shift is None else logits[:b] + shift, targets,
                                               self.cell.method.classification_loss, self.cell.method.gce_q, weights,
                                               total)
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
        # Where draws reach outside G (method.outside_g_draws) only members' labels are Eq. 4's:
        # a query counts for each of its labels whose sample is in G, and only members' keys enter the bank.
        in_G = torch.as_tensor(self.in_G) if self.cell.method.outside_g_draws != "none" else None
        query_in = None if in_G is None else in_G[pos.cpu()].to(query.device)
        # Under torchrun the bank and the queue take every rank's keys (MoCo's concat_all_gather).
        keys, y_all = distributed.all_gather_rows(keys), distributed.all_gather_rows(y)
        pos = distributed.all_gather_rows(pos)
        if in_G is not None:  # the mask is indexed onto each tensor's own device (pos stays on the CPU)
            key_in = in_G[pos.cpu()]
            keys, y_all, pos = keys[key_in.to(keys.device)], y_all[key_in.to(y_all.device)], pos[key_in.to(pos.device)]
        queued_keys, queued_labels = self.queue.contents()
        bank, bank_labels = torch.cat([keys, queued_keys]), torch.cat([y_all, queued_labels])
        t = self.cell.method.temperature
        loss = lam * local_supcon_loss(query, y, bank, bank_labels, t, query_in)
        if perm is not None and lam < 1.0:
            partner_in = None if query_in is None else query_in[perm.to(query_in.device)]
            loss = loss + (1.0 - lam) * local_supcon_loss(query, y[perm], bank, bank_labels, t, partner_in)
        self.queue.enqueue(keys, y_all, pos)
        return loss

    def extract(self, split: Split, progress: Progress | None = None, *, ema: bool = False) -> Extraction:
        """Features and logits of the model, or with `ema` of its momentum (key) encoder, at the
        run's extraction batch (`runtime.eval_batch_size`, resolved by the placement)."""
        model = self.key_model if ema else self.model
        return extract(model, split, self.data, self.place, self.place.eval_batch, progress)

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
            "loss_weight": torch.as_tensor(self.loss_weight), "draw_weight": torch.as_tensor(self.draw_weight),
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
        weight = state.get("loss_weight")  # absent from checkpoints written before method.loss_weights
        self.loss_weight = np.ones(len(self.in_G), dtype=np.float32) if weight is None else weight.numpy().copy()
        draw = state.get("draw_weight")  # absent from checkpoints written before method.outside_g_draws
        self.draw_weight = np.zeros(len(self.in_G), dtype=np.float32) if draw is None else draw.numpy().copy()
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
