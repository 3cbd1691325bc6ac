"""Epoch loops of MTaDCS: warm-up, the selection epochs (Algorithm 1), fine-tuning; checkpoints.

One `Trainer` (`trainer.py`) owns everything that must survive a restart: the model, its key
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

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from pipeline import distributed
from pipeline.config import CellConfig
from pipeline.data import trace_store
from pipeline.data.datasets import Dataset, Split
from pipeline.errors import UserError
from pipeline.method import augment
from pipeline.method.correction import scaled_alpha
from pipeline.method.device import Extraction, Placement, extract
from pipeline.method.evaluate import knn_accuracy, topk_accuracy
from pipeline.method.models import build_model
from pipeline.method.selection import (
    SelectionResult,
    class_normalised,
    confidence_set_quality,
    confident_joint_transition,
    confident_per_class,
    gmm_clean_mask,
    gmm_clean_share,
    label_posterior,
    removable_mask,
    update_confidence_set,
)
from pipeline.method.trainer import Trainer, TrainingLabels, load_checkpoint
from pipeline.runtime import Progress, show_bar

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"
FINETUNE_SEED_OFFSET = 10_000  # fine-tuning epochs draw randomness apart from the training epochs'
EpochCallback = Callable[[dict], None]


def lr_at(epoch: int, base: float, milestones: list[int], gamma: float) -> float:
    """Step schedule: lr after `epoch` finished epochs (0-based), MultiStepLR's rule."""
    return base * gamma ** sum(epoch >= m for m in milestones)


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
    out = trainer.extract(split)
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
            record = _train_one(trainer, "warmup", views, progress) | _quality(trainer, labels.clean)
            record["test_top1"] = _test_top1(trainer)  # the curve starts at epoch 1
            _finish_epoch(trainer, record, out_dir / CHECKPOINT, fingerprint, progress, on_epoch)
    _save_if_untrained(trainer, out_dir / CHECKPOINT, "warmup", fingerprint, o.warmup_epochs)
    return trainer


def _save_if_untrained(trainer: Trainer, checkpoint: Path, phase: str, fingerprint: str, epochs: int) -> None:
    """A phase of no epochs hands on the model it started from: save it as the phase's result,
    unless a matching checkpoint is there already (a phase with epochs saved after each one)."""
    missing = epochs == 0 and _matching_state(checkpoint, phase, fingerprint) is None
    distributed.barrier()  # every rank has looked before rank 0 writes: all of them save, or none
    if missing:
        trainer.save(checkpoint, phase, fingerprint)


def _check_labels_fit(cell: CellConfig, labels: TrainingLabels) -> None:
    if cell.method.semi_supervised == "forward" and not labels.verified:
        raise UserError("method.semi_supervised 'forward' estimates its transition matrix on the verified seed, and "
                        "this run has none (noise.init all, real noise or your own labels); use 'fixmatch' or 'none'")


def _train_transform(cell: CellConfig, data: Dataset):
    m = cell.method
    view = augment.train_view(data.image_size, data.mean, data.std, num_ops=m.randaugment_ops,
                              magnitude=m.randaugment_magnitude)
    return augment.TwoViews(view) if m.contrastive else view  # one view suffices without the key encoder


def _train_one(trainer: Trainer, phase: str, transform, progress: Progress) -> dict:
    """One epoch of the warm-up / MTaDCS schedule (one lr schedule over both); the MTaDCS epochs'
    records take G's size and quality from the selection round after it (`_select`)."""
    o, m = trainer.cell.optim, trainer.cell.method
    stats = trainer.run_epoch(transform, lr=lr_at(trainer.epoch, o.lr, o.lr_milestones, o.lr_gamma),
                              batch_size=o.batch_size, mixup_alpha=m.mixup_alpha if m.mixup else 0.0,
                              contrastive=m.contrastive, seed_epoch=trainer.epoch, progress=progress,
                              iters=o.iters_per_epoch, class_balanced=o.class_balanced, semi=True)
    return {"phase": phase, **stats}


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
            record = _train_one(trainer, "train", views, progress)
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
    posterior = None  # once a round, on the labels after Eq. 7: agreement, loss weights and draws read it
    if (selects and m.agreement == "posterior") or m.loss_weights != "none" or m.outside_g_draws != "none":
        posterior = _label_right_probability(trainer, ext)
    if selects:
        result = _select_and_remove(trainer, ext, preds, protected, posterior)
    else:
        result = _no_selection(trainer.in_G)  # Algorithm 1 ends with Eq. 7: G after it is the final G
    trainer.end_round(result.in_G)
    if m.loss_weights != "none":
        trainer.set_loss_weights(_loss_weights(trainer, posterior, labels))
    if m.outside_g_draws != "none":  # for the non-members of the new G (members draw at 1)
        trainer.set_draw_weights(draw_weights(posterior, m.outside_g_draws))
    time_lof = time.perf_counter() - start
    start = time.perf_counter()
    _write_trace(trainer, labels, ext, preds, result, flipped, traces)
    time_store = time.perf_counter() - start
    test_top1 = _test_top1(trainer)
    return {"phase": "train", "epoch": trainer.epoch, "selection": selects, "selected": int(result.selected.sum()),
            "removed": int(result.removed.sum()), "flipped": int(flipped.sum()), "test_top1": test_top1,
            "time_extract": time_extract, "time_lof": time_lof, "time_store": time_store,
            **_quality(trainer, labels.clean)}


def _extract_for_selection(trainer: Trainer, progress: Progress) -> Extraction:
    """f, z and logits over S from the model that selects (the student, or its EMA copy)."""
    return trainer.extract(trainer.data.train, progress,
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
                       protected: np.ndarray | None, posterior: np.ndarray | None) -> SelectionResult:
    """Eq. 2-3 on this round's pass over S; `posterior`: P(label right | x, label), which
    method.agreement "posterior" reads (the samples at posterior_min or above agree)."""
    m = trainer.cell.method
    space = ext.features if m.lof_space == "feature" else ext.projections
    backend = m.lof_backend if m.lof_backend != "auto" else ("torch" if trainer.device.type == "cuda" else "sklearn")
    if backend == "torch" and m.lof and m.lof_reference == "candidates":  # the LOF that runs in torch
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
        min_class_keep=_class_keep(trainer, ext), label_prob=label_prob, min_class_share=m.min_class_share,
        agrees=posterior >= m.posterior_min if m.agreement == "posterior" else None)


def _loss_weights(trainer: Trainer, posterior: np.ndarray, labels: TrainingLabels) -> np.ndarray:
    """method.loss_weights: P(label right | x, label) per sample (`posterior`, left as it is), 1
    for a label known right (the verified seed under keep_verified, a kept self-seed), and with
    "posterior_per_class" divided by the label's mean so every class keeps its share of the loss."""
    weights = posterior.copy()
    known = labels.init_G if (labels.verified and trainer.cell.method.keep_verified) else np.zeros(len(weights), bool)
    if trainer.kept is not None:
        known = known | trainer.kept
    weights[known] = 1.0
    if trainer.cell.method.loss_weights == "posterior_per_class":
        weights = class_normalised(weights, trainer.labels, trainer.data.num_classes)
    return weights


def _label_right_probability(trainer: Trainer, ext: Extraction) -> np.ndarray:
    """P(current label right | x, label) per sample, under T estimated from this round's
    predictions over S by the confident joint."""
    probs = ext.logits.softmax(1).numpy()
    labels, k = trainer.labels, trainer.data.num_classes
    transition = confident_joint_transition(probs, labels, k)
    log.debug("estimated transition matrix, diagonal: %s", np.round(np.diag(transition), 2))
    return label_posterior(probs, labels, transition)


def draw_weights(posterior: np.ndarray, rule: str) -> np.ndarray:
    """method.outside_g_draws: a non-member's draw weight from P(label right | x, label), the
    posterior itself or ("lift") its margin over even odds, max(0, 2 P - 1)."""
    return posterior if rule == "posterior" else np.clip(2.0 * posterior - 1.0, 0.0, 1.0)


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
        trainer.hold_class_keep(shares)
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


def _write_trace(trainer: Trainer, labels: TrainingLabels, ext: Extraction, preds: np.ndarray, result,
                 flipped: np.ndarray, traces: Path) -> None:
    cell, epoch = trainer.cell, trainer.epoch
    if not distributed.is_main():
        return
    last = epoch == cell.optim.epochs
    keep_features = last or epoch == cell.optim.warmup_epochs or epoch % cell.train.feature_every == 0
    columns = {
        "index": trainer.data.train.index, "given_label": labels.given, "label": trainer.labels,
        "pred": preds, "in_G": trainer.in_G, "lof_score": result.lof_score,
        "selected": result.selected, "removed": result.removed, "flipped": flipped,
        "dist_to_class_centre": class_centre_distance(ext.features, trainer.labels, trainer.in_G,
                                                      trainer.data.num_classes),
    }
    trace_store.write_epoch(traces, epoch, columns, ext.features if keep_features else None)


def run_finetune(cell: CellConfig, data: Dataset, labels: TrainingLabels, train_checkpoint: str | Path,
                 out_dir: str | Path, *, fingerprint: str = "", on_epoch: EpochCallback | None = None) -> Trainer:
    """Fine-tune on the final G with weak augmentation and mixup CE (the '+' rows of Table 2a),
    with the MTaDCS epochs' classification loss (method.classification_loss, logit_adjustment)."""
    out_dir = Path(out_dir)
    f = cell.finetune
    trainer = Trainer(cell, data, labels, lr=f.lr, momentum=f.momentum, weight_decay=f.weight_decay,
                      key_encoder=False)
    if not _resume_point(trainer, out_dir, "finetune", fingerprint):
        state = trainer.load(Path(train_checkpoint), weights_only_model=True)
        if f.start == "ema":
            _start_from_momentum_encoder(trainer, state, train_checkpoint)
        trainer.begin_phase()
    weak = augment.weak_view(data.image_size, data.mean, data.std)
    with Progress(show_bar(cell.runtime) and distributed.is_main(), f"{cell.name} fine-tune", f.epochs, trainer.epoch) as progress:
        while trainer.epoch < f.epochs:
            stats = trainer.run_epoch(weak, lr=f.lr, batch_size=f.batch_size, mixup_alpha=f.mixup_alpha,
                                      contrastive=False, seed_epoch=FINETUNE_SEED_OFFSET + trainer.epoch,
                                      progress=progress, iters=f.iters_per_epoch)
            record = {"phase": "finetune", **stats, "test_top1": _test_top1(trainer)}
            _finish_epoch(trainer, record, out_dir / CHECKPOINT, fingerprint, progress, on_epoch)
    _save_if_untrained(trainer, out_dir / CHECKPOINT, "finetune", fingerprint, f.epochs)  # 0 epochs: the train result
    return trainer


def _start_from_momentum_encoder(trainer: Trainer, state: dict, source: str | Path) -> None:
    """finetune.start 'ema': the student takes the momentum encoder's weights (BN statistics
    included, which momentum_update copies from the student)."""
    if state.get("key_model") is None:
        raise UserError(f"{source}: holds no momentum encoder, which finetune.start 'ema' starts from; "
                        "rerun the MTaDCS epochs with method.contrastive true, or set finetune.start 'student'")
    trainer.model.load_state_dict(state["key_model"])


@dataclass(frozen=True)
class TrainedModel:
    """A checkpoint loaded once: its result network on the run's device, the placement that
    runs it (which keeps the device-resident images between passes) and the saved state."""

    model: torch.nn.Module
    place: Placement
    state: dict


def load_trained(cell: CellConfig, data: Dataset, checkpoint: str | Path | TrainedModel) -> TrainedModel:
    """The checkpoint at `checkpoint` ready to run (a TrainedModel is returned as it is), so a
    caller that reads one checkpoint several ways loads and places it once."""
    if isinstance(checkpoint, TrainedModel):
        return checkpoint
    state = load_checkpoint(checkpoint)
    place = Placement.for_runtime(cell.runtime)
    return TrainedModel(_checkpoint_model(cell, data, state, place), place, state)


def evaluate_checkpoint(cell: CellConfig, data: Dataset, labels: TrainingLabels,
                        checkpoint: str | Path | TrainedModel, *, train: Extraction | None = None) -> dict:
    """Top-1/top-5 on every test set and weighted kNN on f (primary test set) of a checkpoint;
    `train`: the checkpoint's training-set outputs when the caller has them already."""
    e = cell.evaluate
    if e.knn_labels == "clean" and labels.clean is None:
        raise UserError("evaluate.knn_labels is 'clean' but this dataset has no clean labels; use 'auto' or 'current'")
    trained = load_trained(cell, data, checkpoint)
    model, place, state = trained.model, trained.place, trained.state
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
            # on the run's device: the (test x train) similarities are the costly part at scale
            metrics[f"{name}/knn"] = knn_accuracy(
                torch.as_tensor(train.features).to(place.device), torch.as_tensor(vote_labels),
                torch.as_tensor(out.features),
                targets, data.num_classes, k=e.knn_k, temperature=e.knn_temperature)
    return metrics


def extract_checkpoint(cell: CellConfig, data: Dataset, checkpoint: str | Path | TrainedModel,
                       split: Split | None = None) -> Extraction:
    """A checkpoint's f, z and logits on every image of `split` (the training set when None), no augmentation."""
    trained = load_trained(cell, data, checkpoint)
    return extract(trained.model, data.train if split is None else split, data, trained.place, trained.place.eval_batch)


def train_probabilities(cell: CellConfig, data: Dataset, checkpoint: str | Path | TrainedModel,
                        plain: Extraction | None = None) -> np.ndarray:
    """The checkpoint's softmax on every training image, averaged with its softmax on the image's
    mirror (training views flip, so the model has learnt both; on the validation split's tuning
    cells this made 1-2 points more of the label-issue suggestions right), float32 (N, K).
    `plain`: the checkpoint's outputs on the unflipped images, when the caller has them already."""
    trained = load_trained(cell, data, checkpoint)
    model, place = trained.model, trained.place
    if plain is None:
        plain = extract(model, data.train, data, place, place.eval_batch)
    mirrored = extract(model, data.train, data, place, place.eval_batch, mirror=True)
    return (probabilities(plain) + probabilities(mirrored)) / 2


def probabilities(outputs: Extraction) -> np.ndarray:
    return torch.softmax(outputs.logits, dim=1).numpy()


def _checkpoint_model(cell: CellConfig, data: Dataset, state: dict, place: Placement) -> torch.nn.Module:
    model = build_model(cell.model.arch, data.num_classes, width=cell.model.width, proj_dim=cell.model.proj_dim)
    model.load_state_dict(state["model"])
    return place.module(model)
