"""Where each stage of a grid cell reads and writes, relative to the project root."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# The status a stage writes (status.json, metrics JSON) when its cell cannot run here, and what
# the report prints in that cell's place.
NOT_RUN = "not run"


@dataclass(frozen=True)
class CellPaths:
    root: Path
    cell: str

    @property
    def labels(self) -> Path:
        return self.root / "data" / "labels" / f"{self.cell}.parquet"

    def stage_dir(self, stage: str) -> Path:
        """warmup / train / finetune outputs: checkpoint.pt, history.csv, (train) epochs/."""
        return self.root / "data" / "runs" / self.cell / stage

    @property
    def metrics(self) -> Path:
        return self.root / "metrics" / f"{self.cell}.json"

    @property
    def label_issues(self) -> Path:
        """Ranked label issues, one row per training sample (Parquet; a CSV copy beside it)."""
        return self.root / "data" / "issues" / f"{self.cell}.parquet"

    @property
    def label_issues_metrics(self) -> Path:
        """Issue-detection quality against the clean labels, where they are known."""
        return self.root / "metrics" / "label_issues" / f"{self.cell}.json"

    @property
    def plots(self) -> Path:
        """Per-epoch history of every phase, one CSV per cell (a DVC plot)."""
        return self.root / "plots" / f"{self.cell}.csv"


def reports_dir(root: Path) -> Path:
    return root / "reports"


QUEUED_COPY = (".dvc", "tmp", "exps")  # where `dvc exp run --queue/--temp` runs: <repo>/.dvc/tmp/exps/tmpXXXX


def home_root(root: Path) -> Path:
    """The repository a queued or `--temp` `dvc exp run` started from, when `root` is its
    temporary copy (which holds only what git and DVC track, and is deleted afterwards);
    otherwise `root` itself. The MLflow store and inputs outside version control (downloads,
    ../shared/data) belong to the repository, not to the copy."""
    parts = Path(root).resolve().parts
    for i in range(len(parts) - len(QUEUED_COPY)):
        if parts[i:i + len(QUEUED_COPY)] == QUEUED_COPY:
            return Path(*parts[:i])
    return Path(root)
