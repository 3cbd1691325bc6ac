"""A self-contained DVC workspace for a params profile: what `mtadcs quickstart` runs.

The workspace is a fresh git + DVC repository holding a snapshot of the code (pipeline/,
stages/), the project's dvc.yaml and the profile as params.yaml. `dvc repro` there runs
the very pipeline the paper grid uses, every stage, with its own MLflow store, so the
quick profile never touches the project's own data/ or mlflow.db.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

from pipeline.errors import UserError

log = logging.getLogger(__name__)

PROJECT = Path(__file__).resolve().parents[2]
CODE = ("pipeline", "stages")
SOURCE_COMMIT = "SOURCE_COMMIT"  # the project commit whose code the workspace snapshots
# The MLflow store and its artifacts stay out of git; so do downloads and `dvc plots show` pages.
# Metrics, plots, reports and the training traces (DVC outputs with `cache: false`) are committed:
# a queued experiment's temporary copy holds only what git and DVC track.
WORKSPACE_GITIGNORE = "__pycache__/\n/mlflow.db\n/mlflow.db.lock\n/mlflow.db.*.bak\n/mlartifacts/\n/data/raw/\n/dvc_plots/\n"


def profile_path(profile: str, project: Path = PROJECT) -> Path:
    path = project / "profiles" / f"{profile}.yaml"
    if not path.exists():
        known = ", ".join(sorted(p.stem for p in (project / "profiles").glob("*.yaml")))
        raise UserError(f"{path}: no such profile (known: {known})")
    return path


def create(directory: Path, params_file: Path, project: Path = PROJECT) -> Path:
    """Lay out `directory` as a git + DVC repo with the code, dvc.yaml and params.yaml."""
    from pipeline.config import load_params

    load_params(params_file)  # a bad profile fails here, before anything is created
    directory.mkdir(parents=True, exist_ok=True)
    for name in CODE:
        target = directory / name
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(project / name, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copy2(project / "dvc.yaml", directory / "dvc.yaml")
    (directory / "params.yaml").write_text(_anchor_data_paths(params_file.read_text(), project))
    (directory / SOURCE_COMMIT).write_text(_source_commit(project) + "\n")
    (directory / ".gitignore").write_text(WORKSPACE_GITIGNORE)
    if not (directory / ".git").exists():
        _run(["git", "init", "-q"], directory)
    if not (directory / ".dvc").exists():
        _run([sys.executable, "-m", "dvc", "init", "-q"], directory)
        # What `dvc config core.analytics false` writes into the fresh, empty config, without a
        # second DVC process (a few seconds of imports on a small machine).
        (directory / ".dvc" / "config").write_text("[core]\n    analytics = false\n")
    commit(directory, f"mtadcs workspace: {params_file.name} on code {_source_commit(project)}")
    return directory


def commit(directory: Path, message: str) -> None:
    """Commit everything git sees (code, dvc.yaml, params.yaml, dvc.lock): `dvc exp run` and its
    queue need a baseline commit, and an empty repository has none. A machine without a git
    identity commits as "mtadcs"."""
    _run(["git", "add", "-A"], directory)
    if subprocess.run(["git", "diff", "--cached", "--quiet"], cwd=directory).returncode == 0:
        return  # nothing changed since the last commit
    identity = [] if _git_identity(directory) else ["-c", "user.name=mtadcs", "-c", "user.email=mtadcs@localhost"]
    _run(["git", *identity, "commit", "-q", "-m", message], directory)


def _git_identity(directory: Path) -> bool:
    found = subprocess.run(["git", "config", "user.email"], cwd=directory, capture_output=True, text=True)
    return bool(found.stdout.strip())


def _source_commit(project: Path) -> str:
    """HEAD of the project, marked '-dirty' when its code differs from that commit."""
    from pipeline.tracking.provenance import git_commit

    commit = git_commit(project) or "unknown"
    status = subprocess.run(["git", "status", "--porcelain", "--", *CODE, "dvc.yaml"], cwd=project,
                            capture_output=True, text=True)
    return commit + ("-dirty" if status.returncode == 0 and status.stdout.strip() else "")


def _anchor_data_paths(text: str, project: Path) -> str:
    """Make relative input paths (data.path, data.ilsvrc_root, noise.file) absolute against the
    project (e.g. ../shared/data/…), so the workspace reads the same files; a profile with
    none is kept as written."""
    import yaml

    params = yaml.safe_load(text)
    scopes = [params, *((cell or {}) for cell in (params.get("runs") or {}).values())]
    changed = False
    for scope in scopes:
        for section, key in (("data", "path"), ("data", "ilsvrc_root"), ("noise", "file")):
            value = (scope.get(section) or {}).get(key)
            if value and not Path(value).is_absolute() and (project / value).exists():
                scope[section][key] = str((project / value).resolve())
                changed = True
    return yaml.safe_dump(params, sort_keys=False) if changed else text


def repro(directory: Path, *targets: str) -> None:
    """`dvc repro` (output streams to the terminal). The stages run one at a time, and the
    first creates the MLflow store under its lock (`mtadcs prepare-tracking` does it ahead
    of parallel work such as a queue with several workers)."""
    _run([sys.executable, "-m", "dvc", "repro", *targets], directory)


def quickstart(directory: Path, *, profile: str = "quick", force: bool = False) -> Path:
    directory = directory.resolve()
    if directory.exists() and not directory.is_dir():
        raise UserError(f"{directory} is a file: pass --dir a directory for the workspace")
    if directory.exists() and any(directory.iterdir()) and not force:
        raise UserError(f"{directory} already exists: pass --force to reuse it, or --dir elsewhere")
    create(directory, profile_path(profile))
    log.info("workspace %s ready; running dvc repro", directory)
    repro(directory)
    commit(directory, "dvc repro of the quick profile")  # dvc.lock: the baseline `dvc exp` compares with
    log.info("report: %s; runs: mlflow ui --backend-store-uri sqlite:///%s, then open %s",
             directory / "reports" / "report.md", directory / "mlflow.db", _runs_view(directory))
    return directory


def _run(command: list[str], cwd: Path) -> subprocess.CompletedProcess:
    # dvc.yaml calls `python -m stages.cli`: put this interpreter's venv first on PATH so the
    # stages run with the same installation even when the venv is not activated.
    env = os.environ | {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    result = subprocess.run(command, cwd=cwd, env=env)
    if result.returncode != 0:
        raise UserError(f"`{' '.join(command[1:] if command[0] == sys.executable else command)}` "
                        f"failed in {cwd} (exit {result.returncode}); see the output above")
    return result


def _runs_view(directory: Path) -> str:
    from pipeline.config import load_params
    from pipeline.tracking import mlflow_runs

    uri = f"sqlite:///{directory / mlflow_runs.DB_FILE}"
    experiment = mlflow_runs.experiment_id(uri, load_params(directory / "params.yaml").tracking.experiment)
    return mlflow_runs.runs_view_url("http://127.0.0.1:5000", experiment)
