"""Data-parallel runs under `torchrun`: process group, rank, and the collectives the engine uses.

`torchrun --nproc_per_node N -m stages.cli <stage> --cell C` starts N processes with RANK,
WORLD_SIZE and LOCAL_RANK set; `init_from_env` joins them into one group, on NCCL when the
run is on CUDA (one GPU per process, `cuda:LOCAL_RANK`) and on gloo on CPU. Without those
variables (or with WORLD_SIZE 1) every function here is the single-process identity, so the
engine calls them unconditionally.
"""

from __future__ import annotations

import datetime
import logging
import os

import numpy as np
import torch
import torch.distributed as dist

log = logging.getLogger(__name__)


def launched() -> bool:
    """Whether this process was started by torchrun (or another launcher) with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_from_env(device_type: str) -> None:
    """Join the launcher's process group once: NCCL on CUDA, gloo on CPU."""
    if not launched() or dist.is_initialized():
        return
    backend = "nccl" if device_type == "cuda" else "gloo"
    dist.init_process_group(backend=backend, timeout=datetime.timedelta(minutes=30))
    log.info("rank %d of %d joined the %s process group", rank(), world_size(), backend)


def rank_from_env() -> int:
    """This process's rank as the launcher set it, before the process group exists."""
    return int(os.environ.get("RANK", "0"))


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    """Rank 0 alone writes checkpoints, traces and MLflow runs."""
    return rank() == 0


def local_device_index() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def barrier() -> None:
    if active():
        dist.barrier()


def shard(n: int, part: int | None = None, parts: int | None = None) -> slice:
    """This rank's contiguous share of n rows (the first n % parts ranks take one more)."""
    part, parts = rank() if part is None else part, world_size() if parts is None else parts
    base, extra = divmod(n, parts)
    start = part * base + min(part, extra)
    return slice(start, start + base + (1 if part < extra else 0))


def _collective_device(default: torch.device) -> torch.device:
    """Where a collective's tensors must live: this rank's GPU under NCCL, else `default`."""
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else default


def all_gather_rows(local: torch.Tensor) -> torch.Tensor:
    """Every rank's `local` rows concatenated in rank order (shares may differ by one row)."""
    if not active():
        return local
    home = local.device
    device = _collective_device(home)
    local = local.to(device)
    sizes = [torch.zeros(1, dtype=torch.int64, device=device) for _ in range(world_size())]
    dist.all_gather(sizes, torch.tensor([len(local)], device=device))
    longest = int(max(s.item() for s in sizes))
    padded = torch.zeros((longest, *local.shape[1:]), dtype=local.dtype, device=device)
    padded[:len(local)] = local
    gathered = [torch.empty_like(padded) for _ in range(world_size())]
    dist.all_gather(gathered, padded.contiguous())
    return torch.cat([g[:int(s.item())] for g, s in zip(gathered, sizes, strict=True)]).to(home)


def all_reduce_sum(values: list[float]) -> list[float]:
    """The sums of `values` over all ranks (per-epoch counts and loss sums)."""
    if not active():
        return values
    device = _collective_device(torch.device("cpu"))
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.cpu().tolist()


def broadcast_buffers(module: torch.nn.Module) -> None:
    """Rank 0's buffers (BatchNorm running statistics) on every rank."""
    if not active():
        return
    for buffer in module.buffers():
        dist.broadcast(buffer, src=0)


def broadcast_array(array: np.ndarray) -> np.ndarray:
    """Rank 0's array on every rank (same shape and dtype everywhere)."""
    if not active():
        return array
    as_bytes = array.dtype == np.bool_  # gloo has no bool tensors
    tensor = torch.from_numpy(np.ascontiguousarray(array.astype(np.uint8) if as_bytes else array)).clone()
    tensor = tensor.to(_collective_device(tensor.device))
    dist.broadcast(tensor, src=0)
    out = tensor.cpu().numpy()
    return out.astype(bool) if as_bytes else out
