"""Writes that never leave a half-written file (temp file beside the target, then rename).

Kept free of torch so that stages which only read results and write tables (the report)
start without importing it.
"""

from __future__ import annotations

import contextlib
import glob
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from pipeline.errors import UNWRITABLE, UserError


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
