"""Ranked label issues from one MTaDCS run: which given labels look wrong, and what they should be.

Everything here is a by-product of the run (no extra training): the final confidence set G and
the current (Eq. 7-corrected) labels from the train checkpoint, the final model's class
probabilities on the training images (the pipeline averages each image's with its mirror
image's: `engine.train_probabilities`), and the per-epoch traces.

The issue score of a sample with given label y is

    score = ½ · [the run ended with the sample outside G, or relabelled]  +  ½ · (1 − P(y is right | x, y))

The first half is MTaDCS's own verdict: its last selection (LOF on the class's features,
removal by prediction) did not keep the sample under its given label. The second half orders
samples within each verdict by how strongly the final model, read through the noise, doubts the
label: P(y is right | x, y) = p(y|x) T[y, y] / Σ_j p(j|x) T[j, y] (Bayes over the true class),
with p the final model's softmax and T[i, j] = p(given j | true i) the noise's transition matrix
estimated from the same probabilities by the confident joint (Northcutt et al., JAIR 2021).
Without T it is p(y|x) itself. So the score lies in [0, 1], every sample G rejected ranks above
every sample G kept, and the recommended cut is `score >= 0.5` (`is_issue`): exactly the samples
the run did not keep under their given label.

For a run without a confidence set (cross-entropy: every sample always in G) the verdict is
uninformative and the score is 1 − P(y is right | x, y) alone, with the same cut: the label is
more likely wrong than right.

The suggested label is the corrected label where Eq. 7 relabelled the sample, else the likeliest
true class given both the image and its given label, argmax_c p(c|x) T[c, y]: a horse-labelled
image the model finds deer-or-horse is suggested deer when the noise is known to turn deer into
horse. (On the validation split of CIFAR-10-5k this raised the share of right suggestions on the
flagged samples from 50 to 54 % at sym 50 % and from 44 to 69 % at asym 40 %, against the model's
argmax.) `suggestion_confidence` is that posterior's probability of the suggestion, so a user can
accept only confident suggestions.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

ISSUE_CUT = 0.5  # the recommended threshold on `issue_score` (see the module docstring)
# The default for accepting a suggestion (`mtadcs label-issues --cleaned --min-confidence`): a
# suggestion is only as right as the model, so the cleaned label set relabels a flagged sample
# only when the model is this sure of the suggested class, and drops it otherwise.
RELABEL_CONFIDENCE = 0.9


def trace_summary(traces: pd.DataFrame, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per training sample (in the order of `index`, the split's own ids): the share of traced
    epochs it spent in G, and its LOF score at the last epoch that scored it (NaN if none).
    `traces` is `trace_store.read_traces(...)` with columns index, in_G, lof_score, epoch."""
    n = len(index)
    if traces.empty:
        return np.full(n, np.nan), np.full(n, np.nan)
    row = pd.Series(np.arange(n), index=np.asarray(index))
    rows = row.loc[traces["index"].to_numpy()].to_numpy()
    share = np.bincount(rows, weights=traces["in_G"].to_numpy(dtype=float), minlength=n) / np.bincount(rows, minlength=n)
    scored = traces.assign(row=rows).dropna(subset=["lof_score"]).sort_values("epoch", kind="stable")
    last = scored.drop_duplicates("row", keep="last")
    last_lof = np.full(n, np.nan)
    last_lof[last["row"].to_numpy()] = last["lof_score"].to_numpy(dtype=float)
    return share, last_lof


def find_label_issues(
    given: np.ndarray,
    current: np.ndarray,
    in_G: np.ndarray,
    probs: np.ndarray,
    *,
    transition: np.ndarray | None = None,
    index: np.ndarray | None = None,
    uses_confidence_set: bool = True,
    share_in_G: np.ndarray | None = None,
    last_lof: np.ndarray | None = None,
    clean: np.ndarray | None = None,
    paths: list[str] | None = None,
) -> pd.DataFrame:
    """One row per training sample, ranked by `issue_score` (highest first).

    given, current: int (N,) given and current (corrected) labels; in_G: bool (N,) the final G;
    probs: float (N, K) the final model's softmax on the training images (no augmentation but,
    in the pipeline, the mirror image's averaged in);
    transition: (K, K) p(given | true), the noise model the score and suggestions read the model
    through (`estimate_transition`); None reads the model alone.
    Optional columns: the dataset's own `index`, the trace summaries, the `clean` labels (for
    simulated noise: adds clean_label and is_noisy) and image `paths` (for folder datasets).
    """
    given, current = np.asarray(given, dtype=np.int64), np.asarray(current, dtype=np.int64)
    in_G, probs = np.asarray(in_G, dtype=bool), np.asarray(probs, dtype=np.float64)
    n = len(given)
    if probs.shape[0] != n or current.shape != (n,) or in_G.shape != (n,):
        raise ValueError(f"label issues: {n} given labels but probs {probs.shape}, current {current.shape}, "
                         f"in_G {in_G.shape}")
    rows = np.arange(n)
    p_given = probs[rows, given]
    true_posterior = probs if transition is None else _true_class_posterior(probs, given, transition)
    p_right = true_posterior[rows, given]
    relabelled = current != given
    rejected = ~in_G | relabelled
    score = 1.0 - p_right
    if uses_confidence_set:  # a kept sample stays under the cut even where its label has probability 0
        score = np.where(rejected, 0.5 + 0.5 * score, np.minimum(0.5 * score, np.nextafter(ISSUE_CUT, 0.0)))
    suggested = np.where(relabelled, current, true_posterior.argmax(1))
    # Eq. 7's label is the run's, not the posterior's: its confidence is the model's own
    confidence = np.where(relabelled, probs[rows, suggested], true_posterior[rows, suggested])
    frame = pd.DataFrame({
        "index": np.arange(n) if index is None else np.asarray(index),
        "given_label": given,
        "suggested_label": suggested,
        "issue_score": score,
        "is_issue": score >= ISSUE_CUT,
        "p_given": p_given,
        "p_label_right": p_right,
        "suggestion_confidence": confidence,
        "in_final_G": in_G,
        "relabelled": relabelled,
        "share_epochs_in_G": np.full(n, np.nan) if share_in_G is None else share_in_G,
        "last_lof_score": np.full(n, np.nan) if last_lof is None else last_lof,
    })
    if clean is not None:
        frame["clean_label"] = np.asarray(clean, dtype=np.int64)
        frame["is_noisy"] = frame["clean_label"] != frame["given_label"]
    if paths is not None:
        frame["path"] = paths
    frame = frame.sort_values(["issue_score", "index"], ascending=[False, True], kind="stable")
    frame.insert(0, "rank", np.arange(1, n + 1))
    return frame.reset_index(drop=True)


def estimate_transition(probs: np.ndarray, given: np.ndarray, num_classes: int) -> np.ndarray:
    """The noise model of a run's export: T[i, j] = p(given j | true i) from the final model's
    probabilities on the training images by the confident joint (the estimate MTaDCS's own
    posterior agreement uses each round)."""
    # imported here: the report stage reads this module's constants and must not import torch
    from pipeline.method.selection import confident_joint_transition

    return confident_joint_transition(probs, given, num_classes)


def _true_class_posterior(probs: np.ndarray, given: np.ndarray, transition: np.ndarray) -> np.ndarray:
    """P(true class c | x, given y) ∝ p(c|x) T[c, y], per row. A row whose label T cannot read
    falls back to the model's own probabilities: no class is ever given it (no mass), or T says
    no sample of the class keeps it (T[y, y] = 0, a weak model's estimate for a class it never
    predicts, which would call every such label wrong)."""
    transition = np.asarray(transition, dtype=np.float64)
    joint = probs * transition[:, given].T
    total = joint.sum(1, keepdims=True)
    readable = (total > 0) & (transition[given, given] > 0)[:, None]
    return np.where(readable, joint / np.where(total > 0, total, 1.0), probs)


def kept_samples(issues: pd.DataFrame, uses_confidence_set: bool) -> np.ndarray:
    """What a run kept under its given labels, per row of `issues`: its final G, or, for a run
    whose G is all of S (cross-entropy's switches, with or without loss weights), the samples it
    does not flag, so the shares below still say how much of each class it believes."""
    if uses_confidence_set:
        return issues["in_final_G"].to_numpy(dtype=bool)
    return ~issues["is_issue"].to_numpy(dtype=bool)


def confidence_set_shares(given: np.ndarray, in_G: np.ndarray, num_classes: int) -> dict[str, float]:
    """How much of each class the final G kept, without clean labels: per class, the share (%) of
    the samples given that label that are in G. What a user with no verified labels can watch:
    a class near 0 % was emptied; G near 100 % of S everywhere removed nothing."""
    given, in_G = np.asarray(given, dtype=np.int64), np.asarray(in_G, dtype=bool)
    counts = np.bincount(given, minlength=num_classes)
    kept = np.bincount(given[in_G], minlength=num_classes)
    shares = np.divide(100.0 * kept, counts, out=np.full(num_classes, np.nan), where=counts > 0)
    present = np.flatnonzero(counts > 0)
    weakest = int(present[np.argmin(shares[present])]) if len(present) else -1
    return {"G_size": int(in_G.sum()), "G_share": 100.0 * float(in_G.mean()) if len(in_G) else math.nan,
            "G_class_share_min": float(shares[weakest]) if weakest >= 0 else math.nan, "G_weakest_class": weakest,
            "G_class_shares": [round(float(s), 2) for s in shares]}


def detection_quality(issues: pd.DataFrame, min_confidence: float = RELABEL_CONFIDENCE) -> dict[str, float]:
    """Precision, recall and F1 (percent) of `is_issue` against `is_noisy`, the accuracy of the
    suggested labels on the flagged samples, and, where the table has `suggestion_confidence`, the
    share of flagged samples suggested at least `min_confidence` (those the cleaned label set
    relabels) and the accuracy of those suggestions; empty when the truth is unknown."""
    if "is_noisy" not in issues:
        return {}
    flagged, noisy = issues["is_issue"].to_numpy(), issues["is_noisy"].to_numpy()
    hits = int((flagged & noisy).sum())
    precision = hits / flagged.sum() if flagged.any() else 0.0
    recall = hits / noisy.sum() if noisy.any() else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    right = issues["suggested_label"].to_numpy() == issues["clean_label"].to_numpy()
    quality = {"flagged": int(flagged.sum()), "noisy": int(noisy.sum()), "precision": 100.0 * precision,
               "recall": 100.0 * recall, "f1": 100.0 * f1, "suggested_accuracy": _percent(right[flagged])}
    if "suggestion_confidence" in issues:
        relabelled = flagged & (issues["suggestion_confidence"].to_numpy() >= min_confidence)
        quality |= {"relabelled_share": _percent(relabelled[flagged]), "relabelled_accuracy": _percent(right[relabelled])}
    return quality


def _percent(hits: np.ndarray) -> float:
    return 100.0 * float(hits.mean()) if len(hits) else math.nan


def cleaned_labels(issues: pd.DataFrame, min_confidence: float) -> pd.DataFrame:
    """A cleaned label set (index, label): samples not flagged keep their given label, flagged
    ones take the suggested label when the model gives it at least `min_confidence`, and the
    rest are dropped (a wrong label costs more than a missing one)."""
    if not 0.0 <= min_confidence <= 1.0:
        raise ValueError(f"min_confidence must lie in [0, 1], got {min_confidence}")
    flagged = issues["is_issue"].to_numpy()
    confident = issues["suggestion_confidence"].to_numpy() >= min_confidence
    keep = ~flagged | confident
    label = np.where(flagged, issues["suggested_label"], issues["given_label"])
    out = pd.DataFrame({"index": issues["index"], "label": label, "relabelled": flagged})[keep]
    return out.sort_values("index", kind="stable").reset_index(drop=True)
