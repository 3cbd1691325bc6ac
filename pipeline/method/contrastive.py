"""Local supervised contrastive learning on the confidence set G (paper Eq. 4).

MTaDCS extends MoCo (He et al., 2020) with labels: the query encoder is the model being
trained, the key encoder its momentum copy, and a FIFO memory bank keeps the last L key
embeddings *with their labels*, so that every bank entry sharing the query's label is a
positive. The pieces here follow facebookresearch/moco's `builder.py`: the bank lives in
registered buffers (saved in `state_dict`, restored on resume, moved by `.to()`), and the
momentum update runs under `no_grad`.

The loss is METHOD.md's settled form of Eq. 4, the supervised contrastive loss over a
bank::

    L_q = -(1/D) * sum_{j: y_j = y_q} log( exp(q.k_j / tau) / sum_{all j} exp(q.k_j / tau) )

The paper's printed formula drops the log; with the log this is SupCon (Khosla et al.,
2020) with a MoCo bank, which is what Eq. 4 extends. The caller builds the bank as the
current batch's key views concatenated with the queue contents (so a query always has
its own key view as a positive) and enqueues the batch's keys afterwards. Only samples
of G are ever queries or keys: the caller enqueues keys of G's members only, and after each
selection and label correction calls `LabelledQueue.refresh`, which drops the keys of samples
that left G, relabels the rest with their current labels, and limits the bank to |G| keys
(a bank longer than G would hold several keys of one image from different epochs).
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

EMPTY_LABEL = -1  # label stored in a slot that has never been written


class LabelledQueue(nn.Module):
    """MoCo memory bank of `size` keys with their labels, held in buffers.

    Buffers: `keys` (size, dim) float32, `labels` (size,) int64 (`EMPTY_LABEL` in slots
    never written), `positions` (size,) int64, the training-set position each key was drawn
    from (-1 when unknown), `ptr` (1,) int64, the slot the next key goes to, `filled` (1,)
    int64, how many slots hold a key, and `limit` (1,) int64, how many of the newest keys
    `contents()` returns (|G| after a `refresh`, at most `size`). Keeping `filled` explicitly
    (rather than testing `labels == -1`) keeps `contents()` a slice, with no mask over the
    whole bank per step.
    """

    keys: Tensor
    labels: Tensor
    positions: Tensor
    ptr: Tensor
    filled: Tensor
    limit: Tensor

    def __init__(self, size: int, dim: int) -> None:
        super().__init__()
        if size < 1 or dim < 1:
            raise ValueError(f"queue size and dim must be >= 1, got size={size}, dim={dim}")
        self.size = int(size)
        self.dim = int(dim)
        self.register_buffer("keys", torch.zeros(self.size, self.dim, dtype=torch.float32))
        self.register_buffer("labels", torch.full((self.size,), EMPTY_LABEL, dtype=torch.int64))
        self.register_buffer("positions", torch.full((self.size,), -1, dtype=torch.int64))
        self.register_buffer("ptr", torch.zeros(1, dtype=torch.int64))
        self.register_buffer("filled", torch.zeros(1, dtype=torch.int64))
        self.register_buffer("limit", torch.full((1,), self.size, dtype=torch.int64))

    @torch.no_grad()
    def enqueue(self, keys: Tensor, labels: Tensor, positions: Tensor | None = None) -> None:
        """Write `keys` (n, dim), `labels` (n,) and the samples' `positions` (n,) at the pointer,
        overwriting the oldest.

        The result equals writing the rows one by one around the ring: a batch that
        crosses the end wraps to slot 0, and a batch larger than the queue leaves only its
        last `size` rows, with the pointer advanced by n (mod size) either way.
        """
        if keys.ndim != 2 or keys.shape[1] != self.dim:
            raise ValueError(f"keys must have shape (n, {self.dim}), got {tuple(keys.shape)}")
        if labels.shape != (keys.shape[0],):
            raise ValueError(f"labels must have shape ({keys.shape[0]},), got {tuple(labels.shape)}")
        n = keys.shape[0]
        if n == 0:
            return
        if bool((labels < 0).any()):
            raise ValueError("labels must be >= 0 (negative labels mark empty slots)")
        ptr = int(self.ptr.item())
        kept = min(n, self.size)
        # Rows dropped from an oversized batch would have been overwritten anyway.
        start = (ptr + n - kept) % self.size
        slots = (start + torch.arange(kept, device=self.keys.device)) % self.size
        self.keys[slots] = keys[n - kept :].detach().to(self.keys.device, self.keys.dtype)
        self.labels[slots] = labels[n - kept :].to(self.labels.device, torch.int64)
        if positions is None:
            self.positions[slots] = -1
        else:
            self.positions[slots] = positions[n - kept :].to(self.positions.device, torch.int64)
        self.ptr.fill_((ptr + n) % self.size)
        self.filled.fill_(min(int(self.filled.item()) + n, self.size))

    def contents(self) -> tuple[Tensor, Tensor]:
        """The newest `limit` filled slots as (keys, labels), oldest first.

        The loss does not depend on the order; oldest-first makes the FIFO behaviour
        inspectable. While the ring has not yet wrapped, filled slots are 0..filled-1
        (a view, no copy); once full, the oldest key sits at `ptr`.
        """
        keys, labels, _ = self._ordered()
        return keys, labels

    def _ordered(self) -> tuple[Tensor, Tensor, Tensor]:
        filled = int(self.filled.item())
        if filled < self.size:
            keys, labels, positions = self.keys[:filled], self.labels[:filled], self.positions[:filled]
        else:
            shift = -int(self.ptr.item())
            keys, labels, positions = (torch.roll(t, shift, dims=0) for t in (self.keys, self.labels, self.positions))
        newest = min(filled, int(self.limit.item()))
        return keys[filled - newest:], labels[filled - newest:], positions[filled - newest:]

    @torch.no_grad()
    def refresh(self, in_G: Tensor, labels: Tensor) -> None:
        """Keep only keys of samples now in G, under their current labels, at most |G| of them.

        `in_G` (N,) bool and `labels` (N,) int64 are indexed by training-set position. Keys
        of unknown position (enqueued without one) are dropped. The kept keys are compacted
        to slots 0.. in their old order, so the FIFO goes on overwriting the oldest first.
        """
        keys, _, positions = self._ordered()
        known = positions >= 0
        keep = known.clone()
        keep[known] = in_G.to(positions.device)[positions[known]]
        cap = min(self.size, max(int(in_G.sum().item()), 1))
        kept_keys, kept_positions = keys[keep][-cap:], positions[keep][-cap:]
        n = kept_keys.shape[0]
        self.keys.zero_()
        self.labels.fill_(EMPTY_LABEL)
        self.positions.fill_(-1)
        self.keys[:n] = kept_keys
        self.labels[:n] = labels.to(self.labels.device)[kept_positions]
        self.positions[:n] = kept_positions
        self.ptr.fill_(n % self.size)
        self.filled.fill_(n)
        self.limit.fill_(cap)

    def __len__(self) -> int:
        return min(int(self.filled.item()), int(self.limit.item()))

    def extra_repr(self) -> str:
        return f"size={self.size}, dim={self.dim}"


def cap_queue_size(requested: int, num_samples: int) -> int:
    """Bank slots allocated: `requested`, but never more than |S| (METHOD.md).

    A bank longer than the training set would hold stale duplicates of the same samples
    (several keys per image from different epochs of the key encoder); `refresh` narrows
    the keys in use further, to |G|.
    """
    if requested < 1 or num_samples < 1:
        raise ValueError(f"queue size and number of samples must be >= 1, got {requested} and {num_samples}")
    return min(int(requested), int(num_samples))


def make_key_encoder(model: nn.Module) -> nn.Module:
    """A frozen deep copy of the query encoder, to be moved only by `momentum_update`.

    Starting from an exact copy (MoCo initialises param_k = param_q) keeps the first keys
    consistent with the queries; freezing keeps the optimiser and autograd off it.
    """
    key_model = copy.deepcopy(model)
    key_model.requires_grad_(False)
    return key_model


def _matching(key_items: list[tuple[str, Tensor]], query_items: list[tuple[str, Tensor]], kind: str) -> None:
    """Fail loudly if the two models do not line up name by name (a wrong pairing would average unrelated weights)."""
    key_names = [name for name, _ in key_items]
    query_names = [name for name, _ in query_items]
    if key_names != query_names:
        raise ValueError(f"key and query models have different {kind}: {key_names} vs {query_names}")


@torch.no_grad()
def momentum_update(key_model: nn.Module, query_model: nn.Module, m: float) -> None:
    """param_k <- m * param_k + (1 - m) * param_q; buffers copied from the query model.

    Buffers (BN running statistics, `num_batches_tracked`) are copied rather than
    averaged: they are statistics, not weights, and the key encoder must evaluate with the
    statistics that match its (slowly moving) weights' recent inputs. `mul_` then `add_`
    (not `lerp`) makes m = 0 an exact copy and m = 1 an exact no-op.
    """
    if not 0.0 <= m <= 1.0:
        raise ValueError(f"momentum must be in [0, 1], got {m}")
    key_params = list(key_model.named_parameters())
    query_params = list(query_model.named_parameters())
    _matching(key_params, query_params, "parameters")
    pk = [p for _, p in key_params]
    pq = [p.detach() for _, p in query_params]
    if pk:
        # foreach kernels: two launches for the whole model instead of two per tensor.
        torch._foreach_mul_(pk, m)
        torch._foreach_add_(pk, pq, alpha=1.0 - m)
    key_buffers = list(key_model.named_buffers())
    query_buffers = list(query_model.named_buffers())
    _matching(key_buffers, query_buffers, "buffers")
    for (_, bk), (_, bq) in zip(key_buffers, query_buffers, strict=True):
        bk.copy_(bq)


def _check_loss_inputs(
    query: Tensor, query_labels: Tensor, keys: Tensor, key_labels: Tensor, temperature: float
) -> None:
    if query.ndim != 2 or keys.ndim != 2 or query.shape[1] != keys.shape[1]:
        raise ValueError(
            f"query (B, d) and keys (N, d) must share d, got {tuple(query.shape)} and {tuple(keys.shape)}"
        )
    if query_labels.shape != (query.shape[0],) or key_labels.shape != (keys.shape[0],):
        raise ValueError("query_labels and key_labels must be 1-D, one label per row of query / keys")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")


def local_supcon_loss(
    query: Tensor,
    query_labels: Tensor,
    keys: Tensor,
    key_labels: Tensor,
    temperature: float = 0.1,
    query_mask: Tensor | None = None,
) -> Tensor:
    """Supervised MoCo loss of Eq. 4 (log form), averaged over queries with a positive
    (and, with `query_mask` (B,) bool, only over the queries it marks: members of G where
    the batch draws from outside it).

    `query` (B, d) and `keys` (N, d) are L2-normalised embeddings; `keys` is the whole
    bank (current key views + queue contents). For each query, D = number of bank entries
    with its label; queries with D = 0 contribute nothing (their loss would be 0/0), and
    if no query has a positive the result is a zero that is still attached to `query`'s
    graph, so `backward()` works without a special case in the engine.

    The keys are detached here as well as by the caller: in MoCo the key side is only
    moved by the momentum update, never by this loss. The similarities are computed in
    float32, with autocast off (it would run the matmul in bf16 whatever its inputs), so the
    log-sum-exp stays accurate (q.k/tau reaches 1/tau).
    """
    _check_loss_inputs(query, query_labels, keys, key_labels, temperature)
    with torch.autocast(query.device.type, enabled=False):
        logits = query.float() @ keys.detach().float().T / temperature  # (B, N)
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    positive = query_labels.view(-1, 1) == key_labels.view(1, -1)  # (B, N)
    num_pos = positive.sum(dim=1)  # D per query
    has_pos = num_pos > 0
    if query_mask is not None:
        has_pos = has_pos & query_mask.to(has_pos.device)
    has_pos = has_pos.to(log_prob.dtype)
    # log_prob is finite everywhere, so zeroing non-positives by where() is exact.
    pos_log_prob = torch.where(positive, log_prob, torch.zeros_like(log_prob)).sum(dim=1)
    per_query = -pos_log_prob / num_pos.clamp(min=1)
    # Masked mean rather than boolean indexing: no host sync, and with no positive at all
    # it is 0 * (graph) / 1, a zero that still has a grad_fn.
    return (per_query * has_pos).sum() / has_pos.sum().clamp(min=1.0)
