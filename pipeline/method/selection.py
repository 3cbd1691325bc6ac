"""The confidence set G of MTaDCS: LOF-based selection (Eq. 2) and removal (Eq. 3).

G is one boolean mask over the training set S; its complement is the non-confidence
set Ḡ. Each epoch (Algorithm 1, steps 5-8) the samples of Ḡ whose prediction agrees with
their label are grouped by label, a Local Outlier Factor (LOF) is fitted on each group
alone, and the inliers move into G (Eq. 2). Then the members of G whose prediction no
longer agrees with their label move back to Ḡ (Eq. 3).

Two LOF backends give the same scores:

- ``"sklearn"``: :class:`sklearn.neighbors.LocalOutlierFactor`, the reference definition.
- ``"torch"``: a chunked re-implementation of the same definition on ``torch.cdist`` and
  ``topk``, so that the features never leave the GPU when they are already there.

The ablation switches of the paper's Table 3 (LOF, CS = confidence set, SR = sample
removal) are arguments of :func:`update_confidence_set`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

logger = logging.getLogger(__name__)

Backend = Literal["sklearn", "torch"]
Features = np.ndarray | torch.Tensor

# sklearn's LocalOutlierFactor adds this to the mean reachability distance so that a point
# with more than n_neighbors exact duplicates gets a huge (not infinite) density.
_LRD_EPS = 1e-10
# Rows of the distance matrix held at once by the torch backend: 4096 x N floats.
_CHUNK_ROWS = 4096


# --------------------------------------------------------------------------- LOF scores


def lof_scores(
    features: Features,
    *,
    n_neighbors: int = 10,
    backend: Backend = "sklearn",
    chunk_rows: int = _CHUNK_ROWS,
) -> np.ndarray:
    """LOF score of every row of ``features`` against the other rows.

    The score is sklearn's ``-negative_outlier_factor_``: positive, about 1 for an inlier,
    larger the more isolated the point is relative to its neighbours. As in sklearn, the
    neighbourhood size is capped at ``N - 1`` and a point is never its own neighbour.

    Args:
        features: (N, D) float array or tensor, rows are samples; N >= 2.
        n_neighbors: m, the neighbourhood size (the paper uses 10).
        backend: ``"sklearn"`` (reference) or ``"torch"`` (same definition, chunked,
            runs on the tensor's device).
        chunk_rows: torch backend only: distance-matrix rows computed at once, which
            bounds memory to ``chunk_rows * N`` floats.

    Returns:
        float64 array (N,) of LOF scores.
    """
    n = _check_features(features)
    if n < 2:
        raise ValueError(f"LOF needs at least 2 samples, got {n}")
    if n_neighbors < 1:
        raise ValueError(f"n_neighbors must be >= 1, got {n_neighbors}")
    if backend == "sklearn":
        return _lof_sklearn(_to_numpy(features), n_neighbors)
    if backend == "torch":
        return _lof_torch(_to_tensor(features), n_neighbors, chunk_rows)
    raise ValueError(f"unknown LOF backend {backend!r}; use 'sklearn' or 'torch'")


def _lof_sklearn(x: np.ndarray, n_neighbors: int) -> np.ndarray:
    # float64 so the reference is as exact as sklearn can make it, whatever came in.
    from sklearn.neighbors import LocalOutlierFactor  # here: stages that never select skip the import

    lof = LocalOutlierFactor(n_neighbors=n_neighbors, metric="euclidean")
    lof.fit(np.asarray(x, dtype=np.float64))
    return -lof.negative_outlier_factor_


def _lof_torch(x: torch.Tensor, n_neighbors: int, chunk_rows: int) -> np.ndarray:
    """sklearn's LOF, step for step, on torch tensors (see ``_lof_sklearn``)."""
    if not x.is_floating_point() or x.dtype in (torch.float16, torch.bfloat16):
        x = x.float()
    # LOF is translation invariant; centring first keeps the |a|^2 - 2ab + |b|^2 form of
    # cdist from cancelling catastrophically on features far from the origin.
    x = x - x.mean(dim=0, keepdim=True)
    k = min(n_neighbors, x.shape[0] - 1)
    dist, idx = _knn_excluding_self(x, k, chunk_rows)
    k_dist = dist.max(dim=1).values  # distance to the k-th neighbour
    reach = torch.maximum(dist, k_dist[idx])  # reach-dist_k(p, o) = max(k-dist(o), d(p, o))
    lrd = 1.0 / (reach.mean(dim=1) + _LRD_EPS)
    lof = (lrd[idx] / lrd[:, None]).mean(dim=1)
    return lof.double().cpu().numpy()


def _knn_excluding_self(x: torch.Tensor, k: int, chunk_rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Distances and indices of each row's k nearest other rows, a chunk of rows at a time.

    The neighbours are ranked on ``torch.cdist`` (fast matrix-product form), then their
    distances are recomputed directly from the differences, so that the values fed to LOF
    carry no cancellation error (and exact duplicates are exactly 0 apart, as in sklearn).
    """
    n = x.shape[0]
    dists, idxs = [], []
    for start in range(0, n, chunk_rows):
        block = x[start : start + chunk_rows]
        d = torch.cdist(block, x)
        rows = torch.arange(block.shape[0], device=x.device)
        d[rows, rows + start] = float("inf")  # a point is not its own neighbour
        nn_idx = d.topk(k, dim=1, largest=False).indices
        exact = (block[:, None, :] - x[nn_idx]).norm(dim=2)
        dists.append(exact)
        idxs.append(nn_idx)
    return torch.cat(dists), torch.cat(idxs)


# ------------------------------------------------------------------------- selection


@dataclass
class SelectionResult:
    """The outcome of one epoch's update of the confidence set.

    Attributes:
        selected: bool (N,), Q: the samples this epoch's selection step put in G. With the
            confidence set on, Q lies in the old Ḡ, so these are exactly the moves Ḡ -> G.
        removed: bool (N,), T of Eq. 3: the members of G moved back to Ḡ because their
            prediction disagrees with their label (empty unless removal is on).
        lof_score: float32 (N,), the LOF score of each scored sample, NaN elsewhere.
        in_G: bool (N,), the new confidence mask.
    """

    selected: np.ndarray
    removed: np.ndarray
    lof_score: np.ndarray
    in_G: np.ndarray


def select_by_lof(
    features: Features,
    labels: np.ndarray,
    preds: np.ndarray,
    candidates: np.ndarray,
    num_classes: int,
    *,
    n_neighbors: int = 10,
    threshold: float = 1.5,
    backend: Backend = "sklearn",
    reference: np.ndarray | None = None,
    agrees: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Eq. 2: per class, the density inliers among the prediction-consistent candidates.

    For each class c, P̃_c = candidates with label c and prediction c. LOF is fitted on
    P̃_c alone (the "local" application of the paper: density is judged within a class,
    not across the whole set) and the samples with score <= ``threshold`` are selected.
    The default 1.5 is sklearn's ``contamination="auto"`` cut. A class with fewer than
    ``n_neighbors + 1`` candidates is too small for an m-neighbourhood; it selects nothing
    this epoch and its samples stay unscored.

    With ``reference`` (a bool mask, e.g. G), LOF is fitted on the class's reference samples
    instead and scores the candidates as new points (scikit-learn's ``novelty=True``): a
    candidate is kept when it is as dense as the trusted samples around it. The class then
    needs ``n_neighbors + 1`` reference samples. This variant always runs on scikit-learn.

    ``agrees`` (bool mask) replaces "prediction c" in P̃_c: the samples another rule says agree
    with their label (see :func:`label_posterior`).

    Returns:
        (selected bool mask (N,), float32 scores (N,) with NaN for unscored samples).
    """
    labels, preds, candidates = _check_masks(features, labels, preds, candidates, num_classes)
    consistent = candidates & ((preds == labels) if agrees is None else np.asarray(agrees, dtype=bool))
    selected = np.zeros(labels.shape[0], dtype=bool)
    scores = np.full(labels.shape[0], np.nan, dtype=np.float32)
    on_cpu = _to_numpy(features) if reference is not None else None  # once, not per class
    for c in range(num_classes):
        members = np.flatnonzero(consistent & (labels == c))
        if reference is not None:
            trusted = np.flatnonzero(reference & (labels == c))
            if members.size and trusted.size >= n_neighbors + 1:
                s = novelty_lof_scores(on_cpu[trusted], on_cpu[members], n_neighbors)
                scores[members] = s
                selected[members[s <= threshold]] = True
            continue
        if members.size < n_neighbors + 1:
            if members.size:
                logger.debug(
                    "class %d: %d candidates < m+1 = %d, none selected", c, members.size, n_neighbors + 1
                )
            continue
        s = lof_scores(_take_rows(features, members), n_neighbors=n_neighbors, backend=backend)
        scores[members] = s
        selected[members[s <= threshold]] = True
    return selected, scores


def novelty_lof_scores(reference: np.ndarray, queries: np.ndarray, n_neighbors: int) -> np.ndarray:
    """LOF of each query row against a LOF fitted on the reference rows (positive, ~1 inlier)."""
    from sklearn.neighbors import LocalOutlierFactor

    model = LocalOutlierFactor(n_neighbors=min(n_neighbors, len(reference) - 1), novelty=True)
    model.fit(reference)
    return (-model.score_samples(queries)).astype(np.float32)


def gmm_clean_mask(losses: np.ndarray, labels: np.ndarray, num_classes: int, *, seed: int = 0) -> np.ndarray:
    """Samples a per-class two-component Gaussian mixture on their loss calls clean.

    Mislabelled samples have a larger loss than clean ones while a network has not yet
    memorised them (Arazo et al., ICML 2019); DivideMix fits one GMM over all samples, here
    one per label class (UNICON's per-class reading), so a hard class is not judged against
    the easy ones. A sample is clean when the posterior of the lower-mean component exceeds
    0.5. A class with fewer than 4 samples, or whose losses are all equal, is all clean.
    """
    from sklearn.mixture import GaussianMixture

    losses = np.asarray(losses, dtype=np.float64)
    clean = np.ones(len(losses), dtype=bool)
    for c in range(num_classes):
        rows = np.flatnonzero(labels == c)
        x = losses[rows].reshape(-1, 1)
        if len(rows) < 4 or np.ptp(x) == 0:
            continue
        gmm = GaussianMixture(n_components=2, reg_covar=5e-4, max_iter=20, tol=1e-2, random_state=seed).fit(x)
        low = int(np.argmin(gmm.means_.ravel()))
        clean[rows] = gmm.predict_proba(x)[:, low] > 0.5
    return clean


def gmm_clean_share(losses: np.ndarray, labels: np.ndarray, num_classes: int, *, seed: int = 0) -> np.ndarray:
    """Each label class's share of samples that :func:`gmm_clean_mask` calls clean: an estimate of
    how many of its labels are right, for a run that does not know its noise rate (NaN for a
    class with no sample)."""
    clean = gmm_clean_mask(losses, labels, num_classes, seed=seed)
    counts = np.bincount(labels, minlength=num_classes).astype(float)
    kept = np.bincount(labels[clean], minlength=num_classes).astype(float)
    return np.divide(kept, counts, out=np.full(num_classes, np.nan), where=counts > 0)


def confident_per_class(label_prob: np.ndarray, labels: np.ndarray, num_classes: int, per_class: int) -> np.ndarray:
    """The `per_class` samples of each label with the highest probability for their label (all
    of a label's samples when it has fewer; ties go to the lower position)."""
    label_prob, labels = np.asarray(label_prob), np.asarray(labels)
    chosen = np.zeros(len(labels), dtype=bool)
    for c in range(num_classes):
        rows = np.flatnonzero(labels == c)
        order = np.argsort(-label_prob[rows], kind="stable")
        chosen[rows[order[:per_class]]] = True
    return chosen


def confident_joint_transition(probs: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """The noise's transition matrix T[i, j] = p(given label j | true class i), estimated by the
    confident joint of Northcutt et al. (JAIR 2021; cleanlab's `compute_confident_joint` without
    calibration): a sample counts towards (its likeliest class among those whose probability
    reaches the class's threshold, its given label), a class's threshold being its mean
    probability over the samples labelled with it; T's rows are the counts normalised. A class
    no sample counts towards gets the identity row (no evidence of noise)."""
    probs, labels = np.asarray(probs, dtype=np.float64), np.asarray(labels, dtype=np.int64)
    thresholds = np.array([probs[labels == c, c].mean() if np.any(labels == c) else np.inf for c in range(num_classes)])
    above = probs >= thresholds[None, :]
    counted = above.any(1)
    true_guess = np.where(above, probs, -np.inf).argmax(1)
    joint = np.zeros((num_classes, num_classes))
    np.add.at(joint, (true_guess[counted], labels[counted]), 1.0)
    rows = joint.sum(1, keepdims=True)
    return np.where(rows > 0, joint / np.maximum(rows, 1.0), np.eye(num_classes))


def label_posterior(probs: np.ndarray, labels: np.ndarray, transition: np.ndarray) -> np.ndarray:
    """P(the given label is the true class | x, given label): p(y|x) T[y, y] / sum_j p(j|x) T[j, y],
    with p the model's class probabilities and T = p(given | true) (Bayes over the true class).
    A sample whose label no class is ever given as (a zero column) gets 0."""
    probs, labels = np.asarray(probs, dtype=np.float64), np.asarray(labels, dtype=np.int64)
    transition = np.asarray(transition, dtype=np.float64)
    rows = np.arange(len(labels))
    right = probs[rows, labels] * transition[labels, labels]
    total = (probs * transition[:, labels].T).sum(1)
    return np.divide(right, total, out=np.zeros_like(right), where=total > 0)


def class_normalised(values: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """`values` divided by their mean over the samples sharing the label, so every label's values
    average 1: they rank samples within a class without moving weight between classes. A class
    whose values are all 0 gets 1 throughout (nothing to rank by)."""
    values, labels = np.asarray(values, dtype=np.float64), np.asarray(labels, dtype=np.int64)
    sums = np.bincount(labels, weights=values, minlength=num_classes)
    counts = np.bincount(labels, minlength=num_classes)
    means = np.divide(sums, counts, out=np.zeros(num_classes), where=counts > 0)
    mean = means[labels]
    return np.divide(values, mean, out=np.ones_like(values), where=mean > 0)


def update_confidence_set(
    in_G: np.ndarray,
    features: Features,
    labels: np.ndarray,
    preds: np.ndarray,
    num_classes: int,
    *,
    lof: bool = True,
    confidence_set: bool = True,
    removal: bool = True,
    n_neighbors: int = 10,
    threshold: float = 1.5,
    backend: Backend = "sklearn",
    protected: np.ndarray | None = None,
    lof_reference: Literal["candidates", "G"] = "candidates",
    clean: np.ndarray | None = None,
    removable: np.ndarray | None = None,
    unsure: np.ndarray | None = None,
    min_class_keep: float | np.ndarray = 0.0,
    label_prob: np.ndarray | None = None,
    min_class_share: float = 0.0,
    agrees: np.ndarray | None = None,
) -> SelectionResult:
    """One epoch's update of G (Algorithm 1, steps 6-8), with Table 3's ablation switches.

    In every mode ``new G = (old G if confidence_set else ∅) ∪ Q − T``, where Q is:

    - ``lof`` and ``confidence_set`` (MTaDCS): Eq. 2 on Ḡ, so G accumulates.
    - ``lof`` alone (Table 3's "LOF" row): Eq. 2 on all of S and G := Q; nothing carries
      over from one epoch to the next (the instability the paper's Fig. 4 shows).
    - ``confidence_set`` alone: this project's reading of a row the paper does not spell
      out: without LOF the only selection criterion left is prediction consistency, so
      Q = {x in Ḡ : prediction == label}.
    - neither (the CE / Mixup rows): Q = S, G is the whole training set.

    and T is Eq. 3's removal (``removal`` on): the members of G, after selection, whose
    prediction disagrees with their label. Selection runs first, as in Algorithm 1, so a
    sample selected this epoch (prediction == label) is never removed in the same step.
    Removal refines a persistent G; without the confidence set there is none to refine,
    so ``removal`` is ignored then.

    ``lof_reference="G"`` fits each class's LOF on its members of G and scores the candidates
    against it (see :func:`select_by_lof`). ``clean`` (bool mask, e.g. :func:`gmm_clean_mask`)
    is a further condition on every candidate, required together with prediction agreement.

    ``agrees`` (bool mask) replaces "prediction == label" throughout (Eq. 2's candidates, Eq. 3's
    disagreement), e.g. a posterior that the label is right (:func:`label_posterior`).

    ``unsure`` (bool mask, off by default) marks samples whose prediction agrees with their label
    too weakly to count (e.g. the model gives the label under even odds): they are treated as
    disagreeing, so selection cannot admit them and removal takes them.

    Two limits on removal for runs without a verified seed (both off by default, the paper's
    rule): ``removable`` (bool mask) is what removal may take at all, e.g. the samples whose
    prediction has disagreed with their label for several epochs in a row (the moving trace),
    or whose probability for their label is below a ceiling (:func:`removable_mask`);
    ``min_class_keep`` (one share, or one per class) keeps each class's G at no less than that
    share of the samples carrying its label, cancelling the removals of the highest ``label_prob``
    (see :func:`cap_removal_per_class`).

    ``min_class_share`` (off by default) tops up, after removal, every class of G smaller than
    that share of the median class's size in G with the non-members carrying its label that have
    the highest ``label_prob`` (see :func:`top_up_classes`): prediction agreement admits few
    samples of a class the model confuses with another, and a lopsided G then teaches that
    confusion.

    ``protected`` (bool mask) marks samples that stay in G whatever the mode: the verified
    subset G starts from under simulated noise. They are known to be clean, so Eq. 3's
    "possibly mislabelled" does not apply to them; keeping them stops a class whose
    predictions briefly vanish from losing every G member and never being learnt again.
    """
    labels, preds, in_G = _check_masks(features, labels, preds, in_G, num_classes)
    n = labels.shape[0]
    allowed = np.ones(n, dtype=bool) if clean is None else np.asarray(clean, dtype=bool)
    disagrees = (preds != labels) if agrees is None else ~np.asarray(agrees, dtype=bool)
    if unsure is not None:
        allowed = allowed & ~np.asarray(unsure, dtype=bool)
        disagrees = disagrees | np.asarray(unsure, dtype=bool)
    selected, scores = _admitted(in_G, features, labels, preds, ~disagrees, num_classes, allowed, lof=lof,
                                 confidence_set=confidence_set, n_neighbors=n_neighbors, threshold=threshold,
                                 backend=backend, lof_reference=lof_reference)
    new_G = (in_G if confidence_set else np.zeros(n, dtype=bool)) | selected
    removed = np.zeros(n, dtype=bool)
    if removal and confidence_set:
        removed = _removals(new_G & disagrees, new_G, labels, num_classes, removable=removable, protected=protected,
                            min_class_keep=min_class_keep, label_prob=label_prob)
        new_G = new_G & ~removed
    if min_class_share > 0 and confidence_set:
        if label_prob is None:
            raise ValueError("update_confidence_set: min_class_share > 0 needs label_prob")
        added = top_up_classes(new_G, labels, num_classes, min_class_share, label_prob, allowed)
        new_G = new_G | added
        # A member removed above and taken back by the floor stays in G: neither selected nor removed.
        selected, removed = selected | (added & ~in_G), removed & ~added
    if protected is not None:
        new_G = new_G | protected
    return SelectionResult(selected=selected, removed=removed, lof_score=scores, in_G=new_G)


def _admitted(in_G: np.ndarray, features: Features, labels: np.ndarray, preds: np.ndarray, agrees: np.ndarray,
              num_classes: int, allowed: np.ndarray, *, lof: bool, confidence_set: bool, n_neighbors: int, threshold: float,
              backend: Backend, lof_reference: str) -> tuple[np.ndarray, np.ndarray]:
    """Q of :func:`update_confidence_set` (its mode table) and the LOF scores behind it (NaN where
    none was computed). `agrees`: the samples whose label the prediction agrees with; `allowed`
    is the further condition on every candidate."""
    n = labels.shape[0]
    if lof:
        candidates = (~in_G if confidence_set else np.ones(n, dtype=bool)) & allowed
        reference = in_G if (lof_reference == "G" and confidence_set) else None
        return select_by_lof(features, labels, preds, candidates, num_classes, n_neighbors=n_neighbors,
                             threshold=threshold, backend=backend, reference=reference, agrees=agrees)
    scores = np.full(n, np.nan, dtype=np.float32)
    if confidence_set:
        return ~in_G & agrees & allowed, scores
    return np.ones(n, dtype=bool), scores


def _removals(disagreeing: np.ndarray, in_G: np.ndarray, labels: np.ndarray, num_classes: int, *,
              removable: np.ndarray | None, protected: np.ndarray | None, min_class_keep: float | np.ndarray,
              label_prob: np.ndarray | None) -> np.ndarray:
    """T of Eq. 3: the disagreeing members of G, within what `removable` allows, never the
    `protected` ones, and capped so each class keeps `min_class_keep` of its samples."""
    removed = disagreeing.copy()
    if removable is not None:
        removed &= np.asarray(removable, dtype=bool)
    if protected is not None:
        removed &= ~protected
    if np.any(np.asarray(min_class_keep) > 0):
        removed = cap_removal_per_class(removed, in_G, labels, num_classes, min_class_keep, label_prob)
    return removed


def removable_mask(streak: np.ndarray, patience: int, label_prob: np.ndarray | None = None,
                   max_prob: float = 1.0) -> np.ndarray | None:
    """What Eq. 3's removal may take: members whose prediction has disagreed with their label
    ``patience`` rounds in a row, and whose probability for their label is below ``max_prob``.
    None when neither limit is on (the paper's rule: any disagreeing member)."""
    mask = np.asarray(streak) >= patience if patience > 1 else None
    if max_prob < 1:
        if label_prob is None:
            raise ValueError("removable_mask: max_prob < 1 needs label_prob")
        unlikely = np.asarray(label_prob) < max_prob
        mask = unlikely if mask is None else mask & unlikely
    return mask


def cap_removal_per_class(removed: np.ndarray, in_G: np.ndarray, labels: np.ndarray, num_classes: int,
                          keep_share: float | np.ndarray, priority: np.ndarray | None = None) -> np.ndarray:
    """The removals that leave every class's G with at least ceil(keep_share x |class in S|)
    members (or all it had, if fewer); `keep_share` is one share or one per class. Within a
    class, the removals of lowest `priority` (the model's probability for the label; removal
    order by position when None) go first."""
    removed = np.asarray(removed, dtype=bool).copy()
    order = np.arange(len(labels)) if priority is None else np.asarray(priority)
    shares = np.broadcast_to(np.nan_to_num(np.asarray(keep_share, dtype=float)), (num_classes,))
    for c in range(num_classes):
        members = labels == c
        floor = int(np.ceil(shares[c] * members.sum()))
        may_remove = max(int((in_G & members).sum()) - floor, 0)
        candidates = np.flatnonzero(removed & members)
        if len(candidates) > may_remove:
            spared = candidates[np.argsort(order[candidates], kind="stable")][may_remove:]
            removed[spared] = False
    return removed


def top_up_classes(in_G: np.ndarray, labels: np.ndarray, num_classes: int, share: float,
                   priority: np.ndarray, allowed: np.ndarray | None = None) -> np.ndarray:
    """The non-members that bring every class of G up to ceil(share x median class size of G),
    or as near as its label's samples allow: within a class, the highest `priority` first (the
    model's probability for the label). Only `allowed` samples (all when None) are added."""
    labels, priority = np.asarray(labels), np.asarray(priority)
    in_G = np.asarray(in_G, dtype=bool)
    floor = int(np.ceil(share * np.median(np.bincount(labels[in_G], minlength=num_classes))))
    outside = ~in_G if allowed is None else ~in_G & np.asarray(allowed, dtype=bool)
    added = np.zeros(len(labels), dtype=bool)
    for c in range(num_classes):
        short = floor - int((in_G & (labels == c)).sum())
        rows = np.flatnonzero(outside & (labels == c))
        if short > 0 and rows.size:
            added[rows[np.argsort(-priority[rows], kind="stable")[:short]]] = True
    return added


def confidence_set_quality(in_G: np.ndarray, labels: np.ndarray, clean_labels: np.ndarray) -> dict:
    """Size, precision and recall of G against known clean labels (Fig. 5a).

    precision = share of G whose current label is the clean one (NaN when G is empty);
    recall = share of the correctly labelled samples that are in G (NaN when none is).
    ``labels`` are the current labels, i.e. after any label correction.
    """
    in_G = np.asarray(in_G, dtype=bool)
    correct = np.asarray(labels) == np.asarray(clean_labels)
    if not (in_G.shape == correct.shape and in_G.ndim == 1):
        raise ValueError(f"in_G {in_G.shape}, labels and clean_labels must all be the same (N,) shape")
    size = int(in_G.sum())
    n_correct = int(correct.sum())
    hits = int((in_G & correct).sum())
    return {
        "size": size,
        "precision": hits / size if size else float("nan"),
        "recall": hits / n_correct if n_correct else float("nan"),
    }


# --------------------------------------------------------------------------- helpers


def per_class_recall(in_G: np.ndarray, labels: np.ndarray, clean_labels: np.ndarray, num_classes: int) -> np.ndarray:
    """For each clean class, the share of its correctly labelled samples that are in G (NaN
    for a class with none): whether selection empties a class while G as a whole looks fine."""
    in_G, correct = np.asarray(in_G, dtype=bool), np.asarray(labels) == np.asarray(clean_labels)
    clean_labels = np.asarray(clean_labels)
    totals = np.bincount(clean_labels[correct], minlength=num_classes).astype(float)
    kept = np.bincount(clean_labels[correct & in_G], minlength=num_classes).astype(float)
    return np.divide(kept, totals, out=np.full(num_classes, np.nan), where=totals > 0)


def _check_features(features: Features) -> int:
    if features.ndim != 2:
        raise ValueError(f"features must be 2-D (N, D), got shape {tuple(features.shape)}")
    return int(features.shape[0])


def _check_masks(
    features: Features, labels: np.ndarray, preds: np.ndarray, mask: np.ndarray, num_classes: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validate shapes and label range; return (labels, preds, mask) as int64/int64/bool."""
    n = _check_features(features)
    labels = np.asarray(labels, dtype=np.int64)
    preds = np.asarray(preds, dtype=np.int64)
    mask = np.asarray(mask)
    for name, a in (("labels", labels), ("preds", preds), ("mask", mask)):
        if a.shape != (n,):
            raise ValueError(f"{name} must have shape ({n},) to match features, got {a.shape}")
    if mask.dtype != bool:
        raise ValueError(f"mask must be boolean, got dtype {mask.dtype}")
    for name, a in (("labels", labels), ("preds", preds)):
        if n and (a.min() < 0 or a.max() >= num_classes):
            raise ValueError(f"{name} must lie in [0, {num_classes}), got [{a.min()}, {a.max()}]")
    return labels, preds, mask


def _to_numpy(features: Features) -> np.ndarray:
    if isinstance(features, torch.Tensor):
        return features.detach().cpu().numpy()
    return np.asarray(features)


def _to_tensor(features: Features) -> torch.Tensor:
    if isinstance(features, torch.Tensor):
        return features.detach()
    return torch.from_numpy(np.ascontiguousarray(features))


def _take_rows(features: Features, rows: np.ndarray) -> Features:
    if isinstance(features, torch.Tensor):
        return features[torch.as_tensor(rows, device=features.device)]
    return features[rows]
