"""Where and how training runs: device, threads, seeding, progress reporting."""

from __future__ import annotations

import logging
import sys

import torch

from pipeline import distributed
from pipeline.config import RuntimeConfig

log = logging.getLogger(__name__)


def pick_device(runtime: RuntimeConfig) -> torch.device:
    """CUDA when asked for or available under 'auto'; CPU otherwise."""
    if runtime.device == "cuda" and not torch.cuda.is_available():
        log.warning("runtime.device is 'cuda' but no GPU is visible; running on CPU")
        return torch.device("cpu")
    if runtime.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(runtime.device)


def configure(runtime: RuntimeConfig) -> torch.device:
    """Apply thread count and seed; return the device to train on. Under torchrun, join the
    process group and take this process's GPU (`cuda:LOCAL_RANK`)."""
    if runtime.threads:
        torch.set_num_threads(runtime.threads)
    torch.manual_seed(runtime.seed)
    device = pick_device(runtime)
    if device.type == "cuda" and distributed.launched():
        device = torch.device("cuda", distributed.local_device_index())
        torch.cuda.set_device(device)
    distributed.init_from_env(device.type)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    return device


def show_bar(runtime: RuntimeConfig) -> bool:
    """A live bar on a terminal; one log line per epoch under DVC or CI (stdout not a TTY)."""
    if runtime.progress == "auto":
        return sys.stderr.isatty()
    return runtime.progress == "bar"


class Progress:
    """Epoch/batch progress: a rich bar on a TTY, nothing per batch otherwise.

    The per-epoch summary line always goes through logging, so a non-interactive run
    (DVC, CI) gets exactly one line per epoch.
    """

    def __init__(self, enabled: bool, description: str, total_epochs: int, done_epochs: int = 0):
        self._bar = None
        if enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
            from rich.progress import Progress as RichProgress

            self._bar = RichProgress(
                TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[status]}"), TimeRemainingColumn(), transient=False,
            )
            self._epochs = self._bar.add_task(description, total=total_epochs, completed=done_epochs, status="")
            self._batches = self._bar.add_task("  batches", total=1, status="")

    def __enter__(self) -> Progress:
        if self._bar is not None:
            self._bar.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.stop()

    def start_batches(self, total: int, what: str) -> None:
        if self._bar is not None:
            self._bar.reset(self._batches, total=max(total, 1), description=f"  {what}")

    def batch_done(self) -> None:
        if self._bar is not None:
            self._bar.advance(self._batches)

    def epoch_done(self, summary: str) -> None:
        if self._bar is not None:
            self._bar.update(self._epochs, advance=1, status=summary)
        log.info(summary)


def peak_memory_mib(device: torch.device | None = None) -> dict[str, float]:
    """This process's peak resident memory (and the GPU's peak allocation on CUDA), in MiB;
    no RSS entry where the POSIX `resource` module is missing (Windows)."""
    peak: dict[str, float] = {}
    try:
        import resource
    except ImportError:
        resource = None
    if resource is not None:
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        rss_bytes = rss if sys.platform == "darwin" else rss * 1024  # macOS reports bytes, Linux KiB
        peak["peak_rss_mib"] = rss_bytes / 2**20
    if device is not None and device.type == "cuda":
        peak["peak_cuda_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    return peak
