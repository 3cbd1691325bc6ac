"""What Figures 4 and 5b show, computed from the per-epoch traces: how often each sample was
in the confidence set G, and Section 4.6's easy/hard, clean/mislabeled categories with their
distances to the class centres. Plain pandas, no drawing, so the numbers can be tested alone.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

CLEAN_EASY, MISLABELED_EASY = "clean easy", "mislabeled easy"
CLEAN_HARD, MISLABELED_HARD = "clean hard", "mislabeled hard"
UNCLASSIFIED = "unclassified"
# Paper, Section 4.6: hard (blue) and mislabeled hard (orange) are the lines it contrasts.
CATEGORIES = (CLEAN_HARD, MISLABELED_HARD, CLEAN_EASY, MISLABELED_EASY)


def choose_epochs(available: Sequence[int], fractions: Sequence[float] = (0.12, 0.5, 1.0)) -> list[int]:
    """Epochs at ~12 %, 50 % and 100 % of the run (the paper's 30/120/240 of 250), each the
    traced epoch nearest to that share of the last one."""
    epochs = sorted(set(int(e) for e in available))
    if not epochs:
        return []
    picked = [min(epochs, key=lambda e, t=f * epochs[-1]: (abs(e - t), e)) for f in fractions]
    return list(dict.fromkeys(picked))


def times_in_g(traces: pd.DataFrame, epoch: int) -> pd.Series:
    """How many traced epochs up to `epoch` each sample was in G."""
    upto = traces[traces["epoch"] <= epoch]
    return upto.groupby("index")["in_G"].sum().astype(int)


def selection_counts(traces: pd.DataFrame, epochs: Sequence[int]) -> pd.DataFrame:
    """Number of samples (rows) that were in G exactly x times (index) up to each epoch (columns)."""
    counts = {e: times_in_g(traces, e).value_counts() for e in epochs}
    frame = pd.DataFrame(counts).fillna(0).astype(int)
    top = int(frame.index.max()) if len(frame) else 0
    return frame.reindex(range(top + 1), fill_value=0).rename_axis("times_in_G")


def occurrence_threshold(n_epochs: int) -> int:
    """Section 4.6's "10 occurrences" (of 240 traced epochs) scaled to this run's length:
    max(1, round(10 * n_epochs / 240)), Python's round (half to even)."""
    return max(1, int(round(10 * n_epochs / 240)))


def categorise(traces: pd.DataFrame, clean: pd.Series, threshold: int | None = None) -> pd.Series:
    """Section 4.6's four categories per sample, from how often it was in G and in Ḡ.

    With k = `threshold` (default: occurrence_threshold of the traced epochs) and "label
    correct" meaning the given label equals the clean one:
    clean easy: correct, < k times in Ḡ; mislabeled easy: wrong, < k times in G;
    clean hard: correct, >= k times in Ḡ but more often in G than in Ḡ;
    mislabeled hard: wrong, >= k times in G but more often in Ḡ than in G.
    Anything else is "unclassified"; samples without a clean label are left out.
    Returns a Series of category names indexed by sample index.
    """
    n_epochs = traces["epoch"].nunique()
    k = occurrence_threshold(n_epochs) if threshold is None else threshold
    per = traces.groupby("index").agg(n_g=("in_G", "sum"), n=("in_G", "size"), given=("given_label", "first"))
    n_g, n_gbar = per["n_g"].to_numpy(), (per["n"] - per["n_g"]).to_numpy()
    truth = pd.Series(clean).reindex(per.index).to_numpy(dtype=float, na_value=np.nan)
    known = ~np.isnan(truth)
    correct = known & (per["given"].to_numpy(dtype=float) == truth)
    wrong = known & ~correct
    category = np.select(
        [correct & (n_gbar < k), wrong & (n_g < k),
         correct & (n_gbar >= k) & (n_g > n_gbar), wrong & (n_g >= k) & (n_gbar > n_g)],
        [CLEAN_EASY, MISLABELED_EASY, CLEAN_HARD, MISLABELED_HARD], default=UNCLASSIFIED)
    return pd.Series(category, index=per.index, name="category", dtype=object)[known]


def category_distances(traces: pd.DataFrame, categories: pd.Series) -> pd.DataFrame:
    """Per epoch (rows) and category (columns), the mean distance of the category's samples to
    their class centre in G (`dist_to_class_centre`). Features are stored only every few epochs,
    so this mean of distances stands in for the distance of the category's feature centre."""
    t = traces[["epoch", "index", "dist_to_class_centre"]].merge(
        categories.rename("category"), left_on="index", right_index=True)
    means = t.groupby(["epoch", "category"])["dist_to_class_centre"].mean().unstack()
    return means.reindex(columns=list(CATEGORIES)).rename_axis(columns=None)


def category_counts(categories: pd.Series) -> pd.Series:
    """Samples per category, every category listed (zero when empty), unclassified last."""
    return categories.value_counts().reindex([*CATEGORIES, UNCLASSIFIED], fill_value=0)
