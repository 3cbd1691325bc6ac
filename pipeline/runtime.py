"""Where and how training runs: device, threads, seeding, progress reporting, atomic writes."""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import torch

from pipeline import distributed
from pipeline.config import RuntimeConfig
from pipeline.errors import UNWRITABLE, UserError

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


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temp path beside `path`; on success rename it over `path`, on failure delete it.

    A crash or an error mid-write therefore never leaves a half-written file, and the
    previous version (if any) stays intact; the temp file of a write that was killed (SIGKILL
    runs no cleanup) is removed by the next write of the same file. The data is flushed to
    disk before the rename, so the rename never exposes a partial file after a power loss
    either. A full disk or a read-only / unwritable folder is a UserError naming the file.
    """
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        for stale in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):  # left by a write that was killed
            stale.unlink(missing_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        yield Path(tmp)
        with open(tmp, "rb") as written:
            os.fsync(written.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; outputs are ordinary files
        os.replace(tmp, path)
    except OSError as err:
        if err.errno not in UNWRITABLE:
            raise
        raise UserError(f"{path}: cannot write ({os.strerror(err.errno)}); {UNWRITABLE[err.errno]}") from None
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def write_text_atomic(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


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
