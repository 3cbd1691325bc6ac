"""Provenance of a run: file digests, the git commit, and the inputs DVC recorded for a stage.

Kept apart from the MLflow module: these are plain git/DVC facts, used by the stages for tags
and by the DVC workspace for its source commit, and they need no MLflow import.
"""

from __future__ import annotations

import hashlib
import json
import logging
import subprocess
from pathlib import Path

import yaml

log = logging.getLogger(__name__)


def file_digest(path: str | Path) -> str:
    """sha256 of a file, first 16 hex: short enough for a tag, ample against collisions here."""
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            sha.update(block)
    return sha.hexdigest()[:16]


def git_commit(root: str | Path) -> str | None:
    """HEAD's commit in `root`; None outside a repository, before the first commit, or without git."""
    try:
        done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                              timeout=30, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    if done.returncode != 0:
        return None
    return done.stdout.strip() or None


def dvc_lock_digest(root: str | Path, stage_name: str) -> str | None:
    """Digest of `stage_name`'s inputs (cmd, deps, params) as dvc.lock records them.

    Outs are left out: they are results, and the digest should name what a run was fed.
    Note DVC rewrites a stage's entry only after its command exits, so read during
    `dvc repro` this describes the stage's previous run (None on its first).
    """
    entry = _dvc_lock_entry(Path(root) / "dvc.lock", stage_name)
    if entry is None:
        return None
    inputs = {k: entry.get(k) for k in ("cmd", "deps", "params")}
    text = json.dumps(inputs, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _dvc_lock_entry(lock: Path, stage_name: str) -> dict | None:
    if not lock.is_file():
        return None
    try:
        data = yaml.safe_load(lock.read_text())
    except yaml.YAMLError as err:
        log.warning("%s is not valid YAML (%s); no dvc_lock_hash recorded", lock, err)
        return None
    if not isinstance(data, dict):
        return None
    stages = data.get("stages", {}) if "schema" in data else data  # schema 1 had stages at the top
    entry = stages.get(stage_name) if isinstance(stages, dict) else None
    return entry if isinstance(entry, dict) else None


def code_commit(root: Path) -> str:
    """The commit of the code that runs: the project's HEAD, or in a quickstart workspace
    (whose own repo has no commits) the project commit it was made from."""
    from pipeline.tracking.workspace import SOURCE_COMMIT

    snapshot = root / SOURCE_COMMIT
    if snapshot.exists():
        return snapshot.read_text().strip()
    return git_commit(root) or "unknown"
