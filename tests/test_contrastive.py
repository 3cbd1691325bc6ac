"""The supervised MoCo pieces: loss against a literal double loop, queue FIFO, momentum update."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.method.contrastive import (
    EMPTY_LABEL,
    LabelledQueue,
    cap_queue_size,
    local_supcon_loss,
    make_key_encoder,
    momentum_update,
)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def _unit(n: int, d: int) -> torch.Tensor:
    return F.normalize(torch.randn(n, d, dtype=torch.float64), dim=1)


def _loop_loss(q: torch.Tensor, yq: torch.Tensor, k: torch.Tensor, yk: torch.Tensor, tau: float) -> float:
    """Eq. 4 (log form) written out term by term, as METHOD.md states it."""
    losses = []
    for i in range(q.shape[0]):
        sims = [float(q[i] @ k[j]) / tau for j in range(k.shape[0])]
        denom = sum(math.exp(s) for s in sims)
        pos = [j for j in range(k.shape[0]) if int(yk[j]) == int(yq[i])]
        if not pos:
            continue
        losses.append(-sum(math.log(math.exp(sims[j]) / denom) for j in pos) / len(pos))
    return sum(losses) / len(losses)


# ---------------------------------------------------------------- loss


@pytest.mark.parametrize("tau", [0.1, 0.5])
def test_loss_matches_double_loop(tau: float) -> None:
    q, k = _unit(6, 8), _unit(15, 8)
    yq, yk = torch.randint(0, 3, (6,)), torch.randint(0, 3, (15,))
    yk[:3] = torch.tensor([0, 1, 2])  # every query has a positive
    got = local_supcon_loss(q, yq, k, yk, temperature=tau)
    assert got.item() == pytest.approx(_loop_loss(q, yq, k, yk, tau), abs=1e-5)


def test_loss_float32_matches_loop() -> None:
    q, k = _unit(6, 8), _unit(15, 8)
    yq, yk = torch.randint(0, 3, (6,)), torch.randint(0, 3, (15,))
    yk[:3] = torch.tensor([0, 1, 2])
    got = local_supcon_loss(q.float(), yq, k.float(), yk, temperature=0.1)
    assert got.item() == pytest.approx(_loop_loss(q, yq, k, yk, 0.1), abs=1e-5)


def test_queries_without_positive_are_skipped() -> None:
    q, k = _unit(6, 8), _unit(15, 8)
    yk = torch.randint(0, 3, (15,))
    yk[:3] = torch.tensor([0, 1, 2])
    yq = torch.tensor([0, 1, 2, 7, 7, 9])  # labels 7 and 9 never occur in the bank
    got = local_supcon_loss(q, yq, k, yk)
    only_positive = local_supcon_loss(q[:3], yq[:3], k, yk)
    torch.testing.assert_close(got, only_positive)
    assert got.item() == pytest.approx(_loop_loss(q, yq, k, yk, 0.1), abs=1e-5)


def test_a_query_mask_averages_over_the_marked_queries_only() -> None:
    q, k = _unit(6, 8).requires_grad_(True), _unit(15, 8)
    yk = torch.randint(0, 3, (15,))
    yk[:3] = torch.tensor([0, 1, 2])
    yq = torch.tensor([0, 1, 2, 0, 1, 2])
    mask = torch.tensor([True, False, True, False, True, False])
    torch.testing.assert_close(local_supcon_loss(q, yq, k, yk, query_mask=mask),
                               local_supcon_loss(q[mask], yq[mask], k, yk))
    none = local_supcon_loss(q, yq, k, yk, query_mask=torch.zeros(6, dtype=torch.bool))
    none.backward()
    assert none.item() == 0.0 and torch.count_nonzero(q.grad) == 0  # no marked query: a zero with a graph


def test_no_positive_at_all_gives_zero_with_grad() -> None:
    q = _unit(4, 8).requires_grad_(True)
    k = _unit(5, 8)
    loss = local_supcon_loss(q, torch.full((4,), 1), k, torch.zeros(5, dtype=torch.int64))
    assert loss.item() == 0.0
    assert loss.grad_fn is not None
    loss.backward()
    assert q.grad is not None and torch.count_nonzero(q.grad) == 0


def test_gradient_reaches_query_not_keys() -> None:
    q = _unit(6, 8).requires_grad_(True)
    k = _unit(15, 8).requires_grad_(True)  # even if the caller forgot to detach
    yq, yk = torch.randint(0, 3, (6,)), torch.randint(0, 3, (15,))
    yk[:3] = torch.tensor([0, 1, 2])
    local_supcon_loss(q, yq, k, yk).backward()
    assert q.grad is not None and torch.isfinite(q.grad).all() and q.grad.abs().sum() > 0
    assert k.grad is None


def test_loss_is_stable_for_tiny_temperature() -> None:
    q, k = _unit(6, 8), _unit(15, 8)
    yq, yk = torch.randint(0, 3, (6,)), torch.randint(0, 3, (15,))
    yk[:3] = torch.tensor([0, 1, 2])
    loss = local_supcon_loss(q.float(), yq, k.float(), yk, temperature=1e-3)  # exp(1000) overflows naively
    assert torch.isfinite(loss)


def test_loss_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError):
        local_supcon_loss(
            _unit(3, 8), torch.zeros(3, dtype=torch.int64), _unit(4, 5), torch.zeros(4, dtype=torch.int64)
        )
    with pytest.raises(ValueError):
        local_supcon_loss(
            _unit(3, 8), torch.zeros(2, dtype=torch.int64), _unit(4, 8), torch.zeros(4, dtype=torch.int64)
        )


# ---------------------------------------------------------------- queue


def _rows(start: int, n: int, dim: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """Keys whose every entry is the row's id, labels = id: makes FIFO order readable."""
    ids = torch.arange(start, start + n)
    return ids.float().view(-1, 1).expand(n, dim).clone(), ids


def test_empty_queue_has_no_contents() -> None:
    queue = LabelledQueue(5, 2)
    keys, labels = queue.contents()
    assert keys.shape == (0, 2) and labels.shape == (0,)
    assert len(queue) == 0
    assert (queue.labels == EMPTY_LABEL).all()


def test_queue_fifo_with_wraparound() -> None:
    queue = LabelledQueue(5, 2)
    queue.enqueue(*_rows(0, 3))
    assert queue.contents()[1].tolist() == [0, 1, 2]
    assert int(queue.ptr) == 3
    queue.enqueue(*_rows(3, 4))  # crosses the end: slots 3, 4, 0, 1
    keys, labels = queue.contents()
    assert labels.tolist() == [2, 3, 4, 5, 6]  # oldest (0, 1) overwritten
    assert keys[:, 0].tolist() == [2.0, 3.0, 4.0, 5.0, 6.0]
    assert int(queue.ptr) == 2 and len(queue) == 5
    assert queue.labels.tolist() == [5, 6, 2, 3, 4]  # ring layout


def test_queue_batch_larger_than_queue() -> None:
    queue = LabelledQueue(4, 2)
    queue.enqueue(*_rows(0, 1))
    queue.enqueue(*_rows(1, 10))  # equals writing 10 rows one at a time
    assert queue.contents()[1].tolist() == [7, 8, 9, 10]
    assert int(queue.ptr) == (1 + 10) % 4
    queue.enqueue(*_rows(11, 1))
    assert queue.contents()[1].tolist() == [8, 9, 10, 11]


def test_queue_matches_one_by_one_writes() -> None:
    batched, single = LabelledQueue(7, 3), LabelledQueue(7, 3)
    start = 0
    for n in [3, 5, 9, 1, 7, 2]:
        keys, labels = torch.randn(n, 3), torch.arange(start, start + n)
        batched.enqueue(keys, labels)
        for i in range(n):
            single.enqueue(keys[i : i + 1], labels[i : i + 1])
        start += n
        for a, b in zip(batched.state_dict().values(), single.state_dict().values(), strict=True):
            torch.testing.assert_close(a, b)


def test_queue_state_dict_round_trip() -> None:
    queue = LabelledQueue(5, 3)
    queue.enqueue(torch.randn(7, 3), torch.arange(7))
    restored = LabelledQueue(5, 3)
    restored.load_state_dict(queue.state_dict())
    for name in ("keys", "labels", "ptr", "filled"):
        torch.testing.assert_close(getattr(restored, name), getattr(queue, name))
    new_keys, new_labels = torch.randn(2, 3), torch.tensor([8, 9])
    queue.enqueue(new_keys, new_labels)
    restored.enqueue(new_keys, new_labels)
    for a, b in zip(queue.contents(), restored.contents(), strict=True):
        torch.testing.assert_close(a, b)


def test_queue_stores_detached_float32() -> None:
    queue = LabelledQueue(4, 2)
    keys = torch.randn(2, 2, dtype=torch.float64, requires_grad=True)
    queue.enqueue(keys, torch.tensor([0, 1]))
    stored, _ = queue.contents()
    assert stored.dtype == torch.float32 and not stored.requires_grad


def test_queue_rejects_bad_input() -> None:
    queue = LabelledQueue(4, 2)
    with pytest.raises(ValueError):
        queue.enqueue(torch.randn(2, 3), torch.tensor([0, 1]))
    with pytest.raises(ValueError):
        queue.enqueue(torch.randn(2, 2), torch.tensor([0, -1]))
    with pytest.raises(ValueError):
        LabelledQueue(0, 2)


def test_cap_queue_size() -> None:
    assert cap_queue_size(10_000, 50_000) == 10_000
    assert cap_queue_size(10_000, 600) == 600
    assert cap_queue_size(600, 600) == 600
    with pytest.raises(ValueError):
        cap_queue_size(0, 10)


# ---------------------------------------------------------------- momentum encoder


def _net() -> nn.Module:
    return nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3), nn.Linear(3, 2))


def _perturb(model: nn.Module) -> None:
    """Move the query model's weights and BN statistics away from the key copy."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))
    model.train()
    model(torch.randn(8, 4))  # updates running_mean / running_var / num_batches_tracked


def test_make_key_encoder_is_frozen_copy() -> None:
    query = _net()
    key = make_key_encoder(query)
    assert all(not p.requires_grad for p in key.parameters())
    assert all(p.requires_grad for p in query.parameters())
    for a, b in zip(key.state_dict().values(), query.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b)
    assert key[0].weight.data_ptr() != query[0].weight.data_ptr()


def test_momentum_zero_copies_and_one_keeps() -> None:
    query = _net()
    key = make_key_encoder(query)
    _perturb(query)
    before = {k: v.clone() for k, v in key.state_dict().items()}

    momentum_update(key, query, 1.0)
    for name, p in key.named_parameters():
        assert torch.equal(p, before[name])
    for name, b in key.named_buffers():  # buffers are copied whatever m is
        assert torch.equal(b, query.state_dict()[name])

    momentum_update(key, query, 0.0)
    for a, b in zip(key.state_dict().values(), query.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_momentum_interpolates() -> None:
    query = _net()
    key = make_key_encoder(query)
    _perturb(query)
    old = [p.clone() for p in key.parameters()]
    momentum_update(key, query, 0.9)
    for pk, pk_old, pq in zip(key.parameters(), old, query.parameters(), strict=True):
        torch.testing.assert_close(pk, 0.9 * pk_old + 0.1 * pq.detach())
        assert not pk.requires_grad


def test_momentum_rejects_mismatched_models() -> None:
    with pytest.raises(ValueError):
        momentum_update(_net(), nn.Linear(4, 3), 0.5)
    with pytest.raises(ValueError):
        momentum_update(_net(), _net(), 1.5)


# -- the bank holds only keys of the current G, under their current labels ---------------------


def test_refresh_drops_keys_of_samples_that_left_G_and_relabels_the_rest() -> None:
    queue = LabelledQueue(8, 2)
    keys, labels = _rows(0, 6)
    queue.enqueue(keys, labels, positions=torch.arange(6))  # sample i's key, label i
    in_G = torch.tensor([True, False, True, True, False, True])
    current = torch.tensor([9, 9, 7, 3, 9, 5])  # sample 2 was relabelled 2 -> 7
    queue.refresh(in_G, current)
    kept_keys, kept_labels = queue.contents()
    assert kept_keys[:, 0].tolist() == [0.0, 2.0, 3.0, 5.0]  # oldest first, samples 1 and 4 gone
    assert kept_labels.tolist() == [9, 7, 3, 5]
    assert len(queue) == 4


def test_refresh_caps_the_bank_at_the_size_of_G() -> None:
    queue = LabelledQueue(10, 2)
    for epoch in range(3):  # three epochs of keys of the same two samples
        queue.enqueue(*_rows(10 * epoch, 2), positions=torch.tensor([0, 1]))
    queue.refresh(torch.tensor([True, True, False]), torch.tensor([4, 5, 6]))
    keys, labels = queue.contents()
    assert keys[:, 0].tolist() == [20.0, 21.0]  # only the newest key of each member
    assert labels.tolist() == [4, 5]
    queue.enqueue(*_rows(30, 1), positions=torch.tensor([0]))  # a later key of sample 0
    keys, _ = queue.contents()
    assert keys[:, 0].tolist() == [21.0, 30.0]  # still at most |G| keys, the newest


def test_refresh_drops_keys_of_unknown_position_and_survives_a_state_dict_round_trip() -> None:
    queue = LabelledQueue(4, 2)
    queue.enqueue(*_rows(0, 2))  # no positions
    queue.enqueue(*_rows(2, 2), positions=torch.tensor([0, 1]))
    queue.refresh(torch.tensor([True, True]), torch.tensor([1, 1]))
    copy = LabelledQueue(4, 2)
    copy.load_state_dict(queue.state_dict())
    for q in (queue, copy):
        keys, labels = q.contents()
        assert keys[:, 0].tolist() == [2.0, 3.0] and labels.tolist() == [1, 1]


def test_loss_stays_float32_under_bf16_autocast() -> None:
    """Autocast would run q.k in bf16 whatever the inputs' dtype (about 0.02 a logit at tau 0.1);
    CUDA training runs under it, and CPU autocast rounds the same way, so this runs without a GPU."""
    q, k = _unit(6, 16).float(), _unit(40, 16).float()
    yq, yk = torch.randint(0, 3, (6,)), torch.randint(0, 3, (40,))
    yk[:3] = torch.tensor([0, 1, 2])
    want = local_supcon_loss(q, yq, k, yk, temperature=0.1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = local_supcon_loss(q, yq, k, yk, temperature=0.1)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
