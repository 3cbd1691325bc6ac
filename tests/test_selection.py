"""Tests of the confidence-set update (Eq. 2-3) and its two LOF backends."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.method.selection import (
    SelectionResult,
    confidence_set_quality,
    confident_joint_transition,
    gmm_clean_mask,
    label_posterior,
    lof_scores,
    select_by_lof,
    update_confidence_set,
)

M = 10  # LOF neighbourhood of the paper


def blobs_with_scatter(
    seed: int, num_classes: int = 3, n_blob: int = 40, n_scatter: int = 4, dim: int = 8
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per class a tight Gaussian blob plus a few far, mutually distant points, same label.

    Returns (features float32, labels int64, is_scatter bool).
    """
    rng = np.random.default_rng(seed)
    feats, labels, scatter = [], [], []
    for c in range(num_classes):
        centre = rng.normal(scale=20.0, size=dim)
        blob = centre + rng.normal(scale=0.1, size=(n_blob, dim))
        directions = rng.normal(size=(n_scatter, dim))
        directions /= np.linalg.norm(directions, axis=1, keepdims=True)
        far = centre + 5.0 * directions  # far from the blob and from each other
        feats += [blob, far]
        labels += [c] * (n_blob + n_scatter)
        scatter += [False] * n_blob + [True] * n_scatter
    return np.concatenate(feats).astype(np.float32), np.array(labels, dtype=np.int64), np.array(scatter)


# ------------------------------------------------------------------------ select_by_lof


def test_lof_selects_dense_blob_and_rejects_scattered_points() -> None:
    x, y, scatter = blobs_with_scatter(seed=0)
    selected, scores = select_by_lof(x, y, y.copy(), np.ones(len(y), bool), 3, n_neighbors=M)
    np.testing.assert_array_equal(selected, ~scatter)
    assert scores.dtype == np.float32 and not np.isnan(scores).any()
    assert scores[scatter].min() > 1.5 >= scores[~scatter].max()


def test_prediction_inconsistent_candidates_are_never_selected_nor_scored() -> None:
    x, y, scatter = blobs_with_scatter(seed=1)
    preds = y.copy()
    wrong = np.flatnonzero(~scatter)[::5]  # blob points: would be selected if consistent
    preds[wrong] = (y[wrong] + 1) % 3
    selected, scores = select_by_lof(x, y, preds, np.ones(len(y), bool), 3, n_neighbors=M)
    assert not selected[wrong].any()
    assert np.isnan(scores[wrong]).all()
    assert not selected[scatter].any()
    # Dropping every fifth blob point thins the blob; nearly all the rest stay inliers.
    assert selected[~scatter & (preds == y)].mean() > 0.9


def test_only_candidates_are_scored() -> None:
    x, y, scatter = blobs_with_scatter(seed=2)
    candidates = np.arange(len(y)) % 2 == 0
    selected, scores = select_by_lof(x, y, y.copy(), candidates, 3, n_neighbors=M)
    assert not selected[~candidates].any()
    np.testing.assert_array_equal(np.isnan(scores), ~candidates)
    # LOF is fitted on the candidates alone: same scores as scoring that subset directly.
    first = candidates & (y == 0)
    np.testing.assert_allclose(scores[first], lof_scores(x[first], n_neighbors=M), rtol=1e-6)


def test_class_with_fewer_than_m_plus_one_candidates_selects_nothing() -> None:
    x, y, _ = blobs_with_scatter(seed=3, n_blob=30, n_scatter=0)
    candidates = np.ones(len(y), bool)
    candidates[np.flatnonzero(y == 0)[M:]] = False  # class 0: exactly m candidates
    candidates[np.flatnonzero(y == 1)[M + 1 :]] = False  # class 1: exactly m + 1
    selected, scores = select_by_lof(x, y, y.copy(), candidates, 3, n_neighbors=M)
    assert not selected[y == 0].any() and np.isnan(scores[y == 0]).all()
    assert (~np.isnan(scores[y == 1])).sum() == M + 1
    assert selected[y == 2].all()


# -------------------------------------------------------------- update_confidence_set


@pytest.fixture
def epoch_state() -> dict:
    """Two classes, an initial G, and predictions that disagree with a few labels."""
    x, y, scatter = blobs_with_scatter(seed=4, num_classes=2, n_blob=30, n_scatter=3)
    n = len(y)
    rng = np.random.default_rng(4)
    in_G = rng.random(n) < 0.3
    preds = y.copy()
    flip = rng.random(n) < 0.15
    preds[flip] = 1 - y[flip]
    return {"x": x, "y": y, "preds": preds, "in_G": in_G, "scatter": scatter}


def _update(s: dict, **switches: bool) -> SelectionResult:
    return update_confidence_set(s["in_G"], s["x"], s["y"], s["preds"], 2, n_neighbors=M, **switches)


def test_full_mtadcs_update_is_selection_then_removal(epoch_state: dict) -> None:
    s = epoch_state
    consistent = s["preds"] == s["y"]
    q, _ = select_by_lof(s["x"], s["y"], s["preds"], ~s["in_G"], 2, n_neighbors=M)
    r = _update(s)
    assert q.any() and (s["in_G"] & ~consistent).any()  # the example exercises both steps
    np.testing.assert_array_equal(r.selected, q)
    assert not (r.selected & s["in_G"]).any()  # Q comes from Ḡ
    np.testing.assert_array_equal(r.removed, s["in_G"] & ~consistent)  # exactly the inconsistent G members
    assert not (r.selected & r.removed).any()  # a sample selected this epoch is never removed
    np.testing.assert_array_equal(r.in_G, (s["in_G"] | q) & consistent)
    np.testing.assert_array_equal(np.isnan(r.lof_score), ~(~s["in_G"] & consistent))


def test_removal_off_keeps_inconsistent_members(epoch_state: dict) -> None:
    s = epoch_state
    r = _update(s, removal=False)
    assert not r.removed.any()
    np.testing.assert_array_equal(r.in_G, s["in_G"] | r.selected)


def test_lof_alone_rebuilds_G_from_all_samples_each_epoch(epoch_state: dict) -> None:
    s = epoch_state
    q, _ = select_by_lof(s["x"], s["y"], s["preds"], np.ones(len(s["y"]), bool), 2, n_neighbors=M)
    r = _update(s, confidence_set=False)
    np.testing.assert_array_equal(r.selected, q)
    np.testing.assert_array_equal(r.in_G, q)  # nothing carries over from the old G
    assert (s["in_G"] & ~r.in_G).any() and (s["in_G"] & r.in_G).any()
    assert not r.removed.any()  # removal needs a persistent G: ignored


def test_confidence_set_alone_adds_prediction_consistent_samples(epoch_state: dict) -> None:
    s = epoch_state
    consistent = s["preds"] == s["y"]
    r = _update(s, lof=False)
    np.testing.assert_array_equal(r.selected, ~s["in_G"] & consistent)
    np.testing.assert_array_equal(r.removed, s["in_G"] & ~consistent)
    np.testing.assert_array_equal(r.in_G, consistent)
    assert np.isnan(r.lof_score).all()


@pytest.mark.parametrize("removal", [True, False])
def test_neither_switch_trains_on_everything(epoch_state: dict, removal: bool) -> None:
    r = _update(epoch_state, lof=False, confidence_set=False, removal=removal)
    assert r.in_G.all() and r.selected.all() and not r.removed.any()


def test_update_does_not_mutate_inputs(epoch_state: dict) -> None:
    s = epoch_state
    before = {k: v.copy() for k, v in s.items()}
    _update(s)
    for k, v in s.items():
        np.testing.assert_array_equal(v, before[k])


def test_bad_shapes_and_labels_are_rejected(epoch_state: dict) -> None:
    s = epoch_state
    with pytest.raises(ValueError, match="shape"):
        update_confidence_set(s["in_G"][:-1], s["x"], s["y"], s["preds"], 2)
    with pytest.raises(ValueError, match="must lie in"):
        update_confidence_set(s["in_G"], s["x"], s["y"], s["preds"], 1)
    with pytest.raises(ValueError, match="boolean"):
        update_confidence_set(s["in_G"].astype(int), s["x"], s["y"], s["preds"], 2)


# ------------------------------------------------------------------- torch backend


def _features_with_duplicates(seed: int, dim: int) -> np.ndarray:
    """Blobs + scatter with some rows copied onto others (pairs of exact duplicates).

    Ties in distance are harmless here: two exact copies are interchangeable (swapping
    them is an isometry of the point set), so whichever one a backend picks at a tied
    k-th neighbour, the scores are the same. Only pairs are made: with more than m copies
    of a point its density becomes the 1e10 guard value and the comparison is meaningless.
    """
    x, _, _ = blobs_with_scatter(seed, num_classes=1, n_blob=150, n_scatter=10, dim=dim)
    rng = np.random.default_rng(seed)
    src, dst = np.split(rng.choice(len(x), size=20, replace=False), 2)
    x[dst] = x[src]
    return x


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("dim", [8, 32])  # sklearn picks a kd-tree for dim <= 15, brute force above
def test_torch_backend_reproduces_sklearn(seed: int, dim: int) -> None:
    x = _features_with_duplicates(seed, dim)
    ref = lof_scores(x, n_neighbors=M, backend="sklearn")
    got = lof_scores(torch.from_numpy(x), n_neighbors=M, backend="torch", chunk_rows=37)
    np.testing.assert_allclose(got, ref, rtol=1e-4)
    # The same selection, and not by luck: no score sits within 1e-3 of the threshold.
    assert np.abs(ref - 1.5).min() > 1e-3
    assert (ref > 1.5).any() and (ref <= 1.5).any()
    np.testing.assert_array_equal(got <= 1.5, ref <= 1.5)


@pytest.mark.parametrize("seed", range(3))
def test_torch_backend_gives_the_same_selection(seed: int) -> None:
    x, y, _ = blobs_with_scatter(seed + 10, num_classes=3)
    rng = np.random.default_rng(seed)
    preds = np.where(rng.random(len(y)) < 0.1, (y + 1) % 3, y)
    candidates = rng.random(len(y)) < 0.8
    sel_ref, s_ref = select_by_lof(x, y, preds, candidates, 3, n_neighbors=M, backend="sklearn")
    sel_got, s_got = select_by_lof(
        torch.from_numpy(x), y, preds, candidates, 3, n_neighbors=M, backend="torch"
    )
    np.testing.assert_array_equal(sel_got, sel_ref)
    np.testing.assert_allclose(s_got, s_ref, rtol=1e-4, equal_nan=True)


def test_torch_backend_caps_neighbours_like_sklearn() -> None:
    x = np.random.default_rng(0).normal(size=(6, 4))  # fewer rows than m + 1
    with pytest.warns(UserWarning, match="n_neighbors"):
        ref = lof_scores(x, n_neighbors=M)
    np.testing.assert_allclose(
        lof_scores(torch.from_numpy(x), n_neighbors=M, backend="torch"), ref, rtol=1e-6
    )


def test_torch_backend_is_robust_to_features_far_from_the_origin() -> None:
    x = _features_with_duplicates(0, 16) * 0.01 + 1000.0  # |x|^2 - 2xy + |y|^2 would cancel
    ref = lof_scores(x.astype(np.float64), n_neighbors=M)
    got = lof_scores(torch.from_numpy(x.astype(np.float64)), n_neighbors=M, backend="torch")
    np.testing.assert_allclose(got, ref, rtol=1e-6)


def test_lof_scores_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="at least 2"):
        lof_scores(np.zeros((1, 3)))
    with pytest.raises(ValueError, match="2-D"):
        lof_scores(np.zeros(5))
    with pytest.raises(ValueError, match="backend"):
        lof_scores(np.zeros((5, 3)), backend="faiss")  # type: ignore[arg-type]


# ------------------------------------------------------------------------ quality


def test_confidence_set_quality_on_a_hand_example() -> None:
    labels = np.array([0, 1, 2, 0, 1, 2])
    clean = np.array([0, 1, 0, 0, 2, 2])  # samples 2 and 4 are mislabelled; 4 correct ones
    in_G = np.array([True, True, True, False, False, False])
    q = confidence_set_quality(in_G, labels, clean)
    assert q == {"size": 3, "precision": 2 / 3, "recall": 2 / 4}


def test_confidence_set_quality_of_an_empty_set() -> None:
    q = confidence_set_quality(np.zeros(3, bool), np.array([0, 1, 2]), np.array([0, 1, 2]))
    assert q["size"] == 0 and np.isnan(q["precision"]) and q["recall"] == 0.0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_torch_backend_on_cuda_matches_sklearn() -> None:
    x, y, _ = blobs_with_scatter(20, num_classes=3)
    ones = np.ones(len(y), bool)
    sel_ref, s_ref = select_by_lof(x, y, y, ones, 3, n_neighbors=M)
    sel_got, s_got = select_by_lof(torch.from_numpy(x).cuda(), y, y, ones, 3, n_neighbors=M, backend="torch")
    np.testing.assert_array_equal(sel_got, sel_ref)
    np.testing.assert_allclose(s_got, s_ref, rtol=1e-4)


def test_protected_samples_are_never_removed_and_always_in_G() -> None:
    rng = np.random.default_rng(0)
    features = rng.normal(size=(40, 4)).astype(np.float32)
    labels = np.repeat(np.arange(2), 20)
    preds = 1 - labels  # every prediction disagrees: removal would empty G
    in_G = np.zeros(40, dtype=bool)
    in_G[[0, 1, 20, 21]] = True
    protected = in_G.copy()
    full = update_confidence_set(in_G, features, labels, preds, 2, protected=protected)
    assert full.in_G.tolist() == protected.tolist()
    assert not (full.removed & protected).any()
    unguarded = update_confidence_set(in_G, features, labels, preds, 2)
    assert not unguarded.in_G.any()  # the death spiral the guard prevents
    lof_only = update_confidence_set(in_G, features, labels, preds, 2, confidence_set=False, protected=protected)
    assert (lof_only.in_G >= protected).all()


# -- variants: loss GMM filter, LOF fitted on G -------------------------------------------------


def test_gmm_clean_mask_splits_each_class_at_its_own_loss_gap() -> None:
    rng = np.random.default_rng(0)
    # class 0: losses near 0.1 (clean) and near 3 (noisy); class 1: near 1 and near 5, so one
    # threshold for both classes would call class 1's clean samples noisy
    losses = np.concatenate([rng.normal(0.1, 0.02, 20), rng.normal(3.0, 0.1, 10),
                             rng.normal(1.0, 0.02, 20), rng.normal(5.0, 0.1, 10)])
    labels = np.repeat([0, 0, 1, 1], [20, 10, 20, 10])
    clean = gmm_clean_mask(losses, labels, 2)
    expected = np.concatenate([np.ones(20), np.zeros(10), np.ones(20), np.zeros(10)]).astype(bool)
    np.testing.assert_array_equal(clean, expected)


def test_a_candidate_the_loss_filter_calls_noisy_is_never_selected() -> None:
    rng = np.random.default_rng(1)
    n = 40
    features = rng.normal(0, 1, (n, 4)).astype(np.float32)
    labels = np.zeros(n, dtype=np.int64)
    in_G = np.zeros(n, dtype=bool)
    clean = np.arange(n) % 2 == 0
    r = update_confidence_set(in_G, features, labels, labels.copy(), 1, lof=False, clean=clean)
    np.testing.assert_array_equal(r.selected, clean)  # agreement alone would take all 40
    r = update_confidence_set(in_G, features, labels, labels.copy(), 1, threshold=1e9, n_neighbors=5, clean=clean)
    np.testing.assert_array_equal(r.selected, clean)


def test_lof_fitted_on_G_rejects_a_dense_clump_far_from_G() -> None:
    """Class-conditional noise makes a dense clump of mislabelled samples: LOF fitted on the
    candidates alone finds it dense and selects it; fitted on G it sees it far from G."""
    rng = np.random.default_rng(2)
    G_members = rng.normal(0, 1, (30, 2))
    near = rng.normal(0, 1, (10, 2))
    clump = rng.normal(20, 0.5, (20, 2))  # far from G, dense among themselves
    features = np.concatenate([G_members, near, clump]).astype(np.float32)
    n = len(features)
    labels = np.zeros(n, dtype=np.int64)
    in_G = np.arange(n) < 30
    is_clump = np.arange(n) >= 40
    # threshold 3: the clump's LOF among the candidates is 0.9-2.3, against G about 27
    paper = update_confidence_set(in_G, features, labels, labels.copy(), 1, n_neighbors=5, removal=False,
                                  threshold=3.0)
    assert paper.selected[is_clump].all()
    on_G = update_confidence_set(in_G, features, labels, labels.copy(), 1, n_neighbors=5, removal=False,
                                 threshold=3.0, lof_reference="G")
    assert not on_G.selected[is_clump].any()
    assert on_G.selected[30:40].sum() >= 5  # candidates inside G's cloud mostly pass
    assert np.isfinite(on_G.lof_score[30:]).all() and np.isnan(on_G.lof_score[:30]).all()


def test_cap_removal_keeps_each_class_at_its_share_removing_the_least_likely_first() -> None:
    from pipeline.method.selection import cap_removal_per_class

    labels = np.array([0] * 10 + [1] * 4)
    in_G = np.ones(14, dtype=bool)
    removed = np.array([True] * 8 + [False] * 2 + [True, False, False, False])
    prob = np.array([0.9, 0.1, 0.5, 0.2, 0.8, 0.3, 0.7, 0.4, 0.0, 0.0, 0.5, 0, 0, 0])
    capped = cap_removal_per_class(removed, in_G, labels, 2, keep_share=0.5, priority=prob)
    # class 0: 10 in G, floor 5, so 5 of its 8 removals go: the five lowest label probabilities
    np.testing.assert_array_equal(np.flatnonzero(capped[:10]), [1, 2, 3, 5, 7])
    assert capped[10]  # class 1: 4 in G, floor 2, one removal asked: allowed


def test_cap_removal_takes_one_share_per_class() -> None:
    from pipeline.method.selection import cap_removal_per_class

    labels = np.array([0] * 10 + [1] * 10)
    in_G, removed = np.ones(20, dtype=bool), np.ones(20, dtype=bool)
    capped = cap_removal_per_class(removed, in_G, labels, 2, keep_share=np.array([0.3, 0.8]))
    assert (capped[:10].sum(), capped[10:].sum()) == (7, 2)  # floors of 3 and 8 members


def test_gmm_clean_share_is_each_classs_share_in_its_low_loss_cluster() -> None:
    from pipeline.method.selection import gmm_clean_share

    rng = np.random.default_rng(0)
    low, high = rng.normal(0.1, 0.01, 20), rng.normal(3.0, 0.01, 20)
    losses = np.concatenate([low[:6], high[:4], low[6:14], high[4:6]])  # class 0: 6 of 10 low; class 1: 8 of 10
    labels = np.array([0] * 10 + [1] * 10)
    shares = gmm_clean_share(losses, labels, 3)
    np.testing.assert_allclose(shares[:2], [0.6, 0.8])
    assert np.isnan(shares[2])  # no sample carries label 2


def test_an_unsure_agreement_counts_as_disagreement_for_entry_and_stay() -> None:
    features = np.eye(2, 4)[np.array([0, 0, 0, 1, 1, 1])].astype(np.float32)
    labels = np.array([0, 0, 0, 1, 1, 1])
    preds = labels.copy()  # every prediction agrees
    in_G = np.array([True, True, False, True, False, False])
    unsure = np.array([False, True, True, False, False, True])
    result = update_confidence_set(in_G, features, labels, preds, 2, lof=False, unsure=unsure)
    np.testing.assert_array_equal(result.selected, [False, False, False, False, True, False])
    np.testing.assert_array_equal(result.removed, [False, True, False, False, False, False])
    np.testing.assert_array_equal(result.in_G, [True, False, False, True, True, False])


def test_removal_takes_only_what_the_moving_trace_allows() -> None:
    features = np.eye(3, 4)[np.array([0, 0, 1, 1, 2, 2])].astype(np.float32)
    labels = np.array([0, 0, 1, 1, 2, 2])
    preds = np.array([1, 1, 1, 1, 2, 0])  # samples 0, 1 and 5 disagree
    in_G = np.ones(6, dtype=bool)
    removable = np.array([True, False, True, True, True, False])  # e.g. streak >= patience
    result = update_confidence_set(in_G, features, labels, preds, 3, lof=False, removable=removable)
    np.testing.assert_array_equal(result.removed, [True, False, False, False, False, False])
    np.testing.assert_array_equal(result.in_G, [False, True, True, True, True, True])


def test_per_class_recall_shows_a_class_that_selection_emptied() -> None:
    from pipeline.method.selection import per_class_recall

    clean = np.array([0, 0, 0, 0, 1, 1, 2])
    labels = np.array([0, 0, 0, 1, 1, 1, 0])  # one wrong label in class 0; class 2 has no correct one
    in_G = np.array([True, True, False, True, False, False, True])
    recall = per_class_recall(in_G, labels, clean, 3)
    np.testing.assert_allclose(recall[:2], [2 / 3, 0.0])
    assert np.isnan(recall[2])


def test_confident_per_class_takes_each_labels_most_probable_and_all_of_a_small_class() -> None:
    from pipeline.method.selection import confident_per_class

    labels = np.array([0, 0, 0, 0, 1, 1, 2, 2, 2])
    prob = np.array([0.2, 0.9, 0.5, 0.9, 0.1, 0.3, 0.6, 0.7, 0.8])
    chosen = confident_per_class(prob, labels, 4, per_class=2)
    # class 0: the two 0.9s (a tie: both taken); class 1 has only 2; class 2: 0.8 and 0.7; class 3: none
    np.testing.assert_array_equal(np.flatnonzero(chosen), [1, 3, 4, 5, 7, 8])
    tie = confident_per_class(np.array([0.5, 0.5, 0.5]), np.array([0, 0, 0]), 1, per_class=1)
    np.testing.assert_array_equal(tie, [True, False, False])  # ties go to the lower position


def test_removable_mask_combines_the_moving_trace_with_a_label_probability_ceiling() -> None:
    from pipeline.method.selection import removable_mask

    streak = np.array([3, 3, 1, 0])
    prob = np.array([0.01, 0.3, 0.01, 0.9])
    assert removable_mask(streak, 1) is None  # the paper: no limit
    np.testing.assert_array_equal(removable_mask(streak, 3), [True, True, False, False])
    np.testing.assert_array_equal(removable_mask(streak, 1, prob, 0.05), [True, False, True, False])
    np.testing.assert_array_equal(removable_mask(streak, 3, prob, 0.05), [True, False, False, False])
    with pytest.raises(ValueError, match="label_prob"):
        removable_mask(streak, 1, None, 0.05)


def test_top_up_brings_a_short_class_to_the_median_most_likely_first() -> None:
    from pipeline.method.selection import top_up_classes

    # G holds 6, 6, 2 of classes 0, 1, 2 (median 6); class 2 has four non-members
    labels = np.array([0] * 6 + [1] * 6 + [2] * 6 + [0])
    in_G = np.array([True] * 12 + [True, True, False, False, False, False] + [False])
    prob = np.zeros(19)
    prob[14:18] = [0.3, 0.9, 0.1, 0.6]
    prob[18] = 0.99  # class 0 is at the floor already: never added
    everything = top_up_classes(in_G, labels, 3, share=1.0, priority=prob)  # floor 6: all four it has
    np.testing.assert_array_equal(np.flatnonzero(everything), [14, 15, 16, 17])
    added = top_up_classes(in_G, labels, 3, share=0.8, priority=prob)  # floor ceil(4.8) = 5: three short
    np.testing.assert_array_equal(np.flatnonzero(added), [14, 15, 17])  # the three most likely
    half = top_up_classes(in_G, labels, 3, share=0.5, priority=prob)  # floor 3: one short
    np.testing.assert_array_equal(np.flatnonzero(half), [15])
    barred = top_up_classes(in_G, labels, 3, share=0.8, priority=prob, allowed=np.arange(19) != 15)
    np.testing.assert_array_equal(np.flatnonzero(barred), [14, 16, 17])


def test_class_floor_adds_after_removal_and_records_the_additions_as_selected() -> None:
    features = np.eye(3, 4)[np.array([0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2])].astype(np.float32)
    labels = np.repeat([0, 1, 2], 4)
    preds = labels.copy()
    preds[[9, 10, 11]] = 1  # class 2's non-members all predicted 1: agreement admits none
    preds[8] = 0  # and its one member disagrees: removal would empty the class
    in_G = np.array([True] * 8 + [True, False, False, False])
    prob = np.full(12, 0.9)
    prob[8:] = [0.2, 0.4, 0.3, 0.1]
    plain = update_confidence_set(in_G, features, labels, preds, 3, lof=False)
    assert not plain.in_G[8:].any()
    floored = update_confidence_set(in_G, features, labels, preds, 3, lof=False, min_class_share=0.5,
                                    label_prob=prob)
    # median class size after removal is 4, floor 2: class 2 gets its two most likely samples
    np.testing.assert_array_equal(np.flatnonzero(floored.in_G[8:]) + 8, [9, 10])
    assert floored.selected[[9, 10]].all() and floored.removed[8]
    with pytest.raises(ValueError, match="label_prob"):
        update_confidence_set(in_G, features, labels, preds, 3, lof=False, min_class_share=0.5)


def test_a_member_the_floor_takes_back_after_removal_is_recorded_as_neither_move() -> None:
    # the same classes, but class 2's disagreeing member is its label's likeliest sample: removal
    # takes it out and the floor brings it back in the same round, so G keeps it, and the round's
    # record must not count it both as removed and as selected (Q lies in the old G-bar)
    features = np.eye(3, 4)[np.array([0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2])].astype(np.float32)
    labels = np.repeat([0, 1, 2], 4)
    preds = labels.copy()
    preds[[8, 9, 10, 11]] = [0, 1, 1, 1]
    in_G = np.array([True] * 8 + [True, False, False, False])
    prob = np.full(12, 0.9)
    prob[8:] = [0.6, 0.4, 0.3, 0.1]
    floored = update_confidence_set(in_G, features, labels, preds, 3, lof=False, min_class_share=0.5,
                                    label_prob=prob)
    np.testing.assert_array_equal(np.flatnonzero(floored.in_G[8:]) + 8, [8, 9])
    assert not floored.removed[8] and not floored.selected[8]
    assert floored.selected[9] and not floored.removed.any()


# ------------------------------------------------------- posterior agreement (method.agreement)


def _noisy_probs(seed: int = 0, n: int = 3000, k: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Labels with 30 % of each class flipped to the next class, and probabilities that favour
    the true class: a case with a known transition matrix."""
    rng = np.random.default_rng(seed)
    true = rng.integers(0, k, n)
    given = true.copy()
    flip = rng.random(n) < 0.3
    given[flip] = (true[flip] + 1) % k
    logits = rng.normal(size=(n, k))
    logits[np.arange(n), true] += 2.0
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return probs, given


def test_confident_joint_transition_equals_cleanlabs_confident_joint() -> None:
    """The same counts as cleanlab's compute_confident_joint (uncalibrated; its rows are given
    labels, ours true classes), normalised to p(given | true), on the same input."""
    count = pytest.importorskip("cleanlab.count", reason="cleanlab is the [bench] extra")
    probs, given = _noisy_probs()
    joint = count.compute_confident_joint(given, probs, calibrate=False).T.astype(float)
    expected = joint / joint.sum(1, keepdims=True)
    np.testing.assert_allclose(confident_joint_transition(probs, given, 5), expected)


def test_confident_joint_transition_recovers_the_flips_of_sure_predictions() -> None:
    """With one-hot probabilities of the true class, T is exactly the flip table; a class that
    no sample is predicted as gets the identity row."""
    true = np.array([0, 0, 0, 0, 1, 1, 1, 1, 2, 2])
    given = np.array([0, 0, 0, 1, 1, 1, 0, 0, 2, 2])
    probs = np.eye(4)[true]
    T = confident_joint_transition(probs, given, 4)
    np.testing.assert_allclose(T[0], [0.75, 0.25, 0, 0])
    np.testing.assert_allclose(T[1], [0.5, 0.5, 0, 0])
    np.testing.assert_allclose(T[2], [0, 0, 1, 0])
    np.testing.assert_allclose(T[3], [0, 0, 0, 1])


def test_label_posterior_trusts_a_label_no_class_flips_into_and_doubts_a_shared_one() -> None:
    """Class 0 is flipped into class 1 (40 %), nothing into class 0: a sample labelled 0 is
    right whatever the model predicts; one labelled 1 is right with p(1) / (p(1) + 0.4 p(0))."""
    T = np.array([[0.6, 0.4], [0.0, 1.0]])
    probs = np.array([[0.1, 0.9], [0.5, 0.5], [0.5, 0.5]])
    post = label_posterior(probs, np.array([0, 1, 0]), T)
    np.testing.assert_allclose(post, [1.0, 0.5 / (0.5 + 0.2), 1.0])


def test_label_posterior_under_symmetric_noise_is_a_threshold_on_the_label_probability() -> None:
    """At 50 % symmetric noise over 10 classes (T: 0.5 on the diagonal, 0.5/9 elsewhere) the
    posterior reaches 0.9 exactly where p(label) reaches 0.5."""
    k = 10
    T = np.full((k, k), 0.5 / (k - 1)) + np.eye(k) * (0.5 - 0.5 / (k - 1))
    p_label = np.array([0.3, 0.49, 0.51, 0.8])
    probs = np.tile(((1 - p_label) / (k - 1))[:, None], (1, k))
    probs[:, 0] = p_label
    post = label_posterior(probs, np.zeros(4, dtype=int), T)
    np.testing.assert_array_equal(post >= 0.9, p_label >= 0.5)


def test_update_with_agrees_admits_and_removes_by_that_mask_not_by_the_prediction(epoch_state: dict) -> None:
    """`agrees` replaces prediction == label: a sample outside G whose prediction disagrees but
    which `agrees` marks is admitted (no LOF: the consistency rule), and a member whose
    prediction agrees but which `agrees` does not mark is removed."""
    s = epoch_state
    consistent = s["preds"] == s["y"]
    agrees = consistent.copy()
    admit = np.flatnonzero(~s["in_G"] & ~consistent)[:2]
    drop = np.flatnonzero(s["in_G"] & consistent)[:2]
    assert len(admit) == 2 and len(drop) == 2  # the case needs both kinds
    agrees[admit], agrees[drop] = True, False
    result = _update(s, lof=False, agrees=agrees)
    assert result.in_G[admit].all() and result.selected[admit].all()
    assert not result.in_G[drop].any() and result.removed[drop].all()
    plain = _update(s, lof=False)
    assert not plain.in_G[admit].any() and plain.in_G[drop].all()


def test_class_normalised_values_average_one_per_label_and_keep_their_order_within_it() -> None:
    from pipeline.method.selection import class_normalised

    values = np.array([0.1, 0.3, 0.8, 0.4, 0.0, 0.0])
    labels = np.array([0, 0, 1, 1, 2, 2])
    out = class_normalised(values, labels, 4)  # class 3 has no samples
    assert out == pytest.approx([0.5, 1.5, 4 / 3, 2 / 3, 1.0, 1.0])  # class 2: all zero, nothing to rank
    for c in (0, 1, 2):
        assert out[labels == c].mean() == pytest.approx(1.0)
