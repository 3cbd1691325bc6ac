"""A training stage writing into a full filesystem or a read-only output folder: one clear line,
the previous checkpoint intact, and a later run resumes to the end. Needs a small tmpfs, which
only root can mount: skipped elsewhere, saying so."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from pipeline.errors import UserError


@pytest.fixture
def tiny_fs(tmp_path):
    mount = tmp_path / "fs"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount)], capture_output=True)
    if made.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root): disk-full and read-only cases not run")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_full_disk_then_a_read_only_folder_are_clear_errors_and_the_run_resumes(tmp_path, tiny_fs) -> None:
    from stages import noise, training
    from stages.common import context

    params = {"data": {"dataset": "digits", "image_size": 8}, "noise": {"kind": "sym", "rate": 0.5, "init_per_class": 5},
              "model": {"width": 2, "proj_dim": 8}, "method": {"queue_size": 32},
              "optim": {"epochs": 3, "warmup_epochs": 3, "lr_milestones": [], "batch_size": 64},
              "runtime": {"threads": 1, "progress": "log"}, "tracking": {"enabled": False}, "runs": {"c": {}}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    ctx = context(tmp_path, "params.yaml", "c")
    noise.run(ctx)
    out = ctx.paths.stage_dir("warmup")
    out.parent.mkdir(parents=True)
    out.symlink_to(tiny_fs, target_is_directory=True)  # the warm-up writes into the small filesystem

    class Stop(Exception):
        pass

    def stop_after_first_epoch(record: dict) -> None:
        raise Stop  # a run interrupted after its first checkpoint

    from pipeline.method import engine
    from pipeline.method.trainer import load_checkpoint
    from stages.common import load_data, load_labels

    data = load_data(ctx)
    with pytest.raises(Stop):
        engine.run_warmup(ctx.cell, data, load_labels(ctx, data), out, on_epoch=stop_after_first_epoch)
    checkpoint = out / "checkpoint.pt"
    before = _sha(checkpoint)

    filler = tiny_fs / "filler"
    with open(filler, "wb") as f:  # leave less room than one more checkpoint needs
        f.write(b"\0" * (shutil.disk_usage(tiny_fs).free - checkpoint.stat().st_size // 2))
    with pytest.raises(UserError) as full:
        training.run(ctx, "warmup")
    assert "\n" not in str(full.value) and "No space left on device" in str(full.value)
    assert str(out) in str(full.value) and "free disk space" in str(full.value)
    filler.unlink()

    subprocess.run(["mount", "-o", "remount,ro", str(tiny_fs)], check=True)
    with pytest.raises(UserError) as read_only:
        training.run(ctx, "warmup")
    assert "Read-only file system" in str(read_only.value) and "make the folder writable" in str(read_only.value)
    subprocess.run(["mount", "-o", "remount,rw", str(tiny_fs)], check=True)

    assert not list(tiny_fs.glob(".*.tmp"))  # no half-written temp file left behind
    training.run(ctx, "warmup")  # space and permissions back: resumes and finishes
    assert load_checkpoint(checkpoint)["epoch"] == 3 and _sha(checkpoint) != before
