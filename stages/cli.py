"""`mtadcs` command line: one command per DVC stage (what dvc.yaml calls), plus quickstart.

dvc.yaml calls `python -m stages.cli <stage> --cell <cell>` rather than the console
script: inside a queued `dvc exp run`, an editable install's console script would import
the main workspace's code instead of the experiment's copy.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import typer

from pipeline.errors import UNWRITABLE, UserError

app = typer.Typer(
    no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
    help="MTaDCS (ECCV 2024): learn image classifiers from noisily-labelled data. "
         "Stages run one grid cell each; `dvc repro` runs them all.",
)

CELL = typer.Option(..., "--cell", "-c", help="Grid cell name from params.yaml `runs:`.")
PARAMS = typer.Option(Path("params.yaml"), "--params", "-p", help="Params file (relative to --root).")
ROOT = typer.Option(Path("."), "--root", help="Project root: outputs go under data/, metrics/, reports/.")


def _context(root: Path, params: Path, cell: str):
    from stages.common import context

    return context(root, params, cell)


def _training(root: Path, params: Path, cell: str, stage: str) -> None:
    """A training stage in this process, or, with `runtime.processes` N > 1, under torchrun on N
    processes (gloo on CPU, NCCL on CUDA with one GPU each), each running this same command."""
    import os

    from pipeline import distributed
    from pipeline.runtime import pick_device
    from stages import training

    ctx = _context(root, params, cell)
    processes = ctx.cell.runtime.processes
    if processes > 1 and not distributed.launched():
        import torch

        gpus = torch.cuda.device_count() if pick_device(ctx.cell.runtime).type == "cuda" else processes
        if processes > gpus:
            raise UserError(f"runtime.processes is {processes} but this machine has {gpus} GPU(s); "
                            "lower it to one process per GPU")
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes),
                   "-m", "stages.cli", stage, "--cell", cell, "--params", str(params), "--root", str(root)]
        logging.getLogger(__name__).info("%s: launching %d processes: %s", stage, processes, " ".join(command))
        logging.shutdown()
        # torchrun takes this process's place, so a kill of the stage (dvc, Ctrl-C) reaches it
        # and it stops its workers; its exit status is the stage's.
        os.execv(sys.executable, command)
    training.run(ctx, stage)


@app.command()
def noise(cell: str = CELL, params: Path = PARAMS, root: Path = ROOT) -> None:
    """Generate the cell's noisy label file (data/labels/<cell>.parquet)."""
    from stages import noise as stage

    stage.run(_context(root, params, cell))


@app.command()
def warmup(cell: str = CELL, params: Path = PARAMS, root: Path = ROOT) -> None:
    """Warm up on the initial confidence set (T_P epochs of Eq. 6)."""

    _training(root, params, cell, "warmup")


@app.command()
def train(cell: str = CELL, params: Path = PARAMS, root: Path = ROOT) -> None:
    """MTaDCS epochs: LOF selection, removal, contrastive training, label correction; Parquet traces."""

    _training(root, params, cell, "train")


@app.command()
def finetune(cell: str = CELL, params: Path = PARAMS, root: Path = ROOT) -> None:
    """Fine-tune on the final confidence set (weak augmentation, mixup CE)."""

    _training(root, params, cell, "finetune")


@app.command()
def evaluate(cell: str = CELL, params: Path = PARAMS, root: Path = ROOT) -> None:
    """Top-1, top-5 and kNN accuracy → metrics/<cell>.json."""
    from stages import evaluate as stage

    stage.run(_context(root, params, cell))


@app.command("label-issues")
def label_issues(
    cell: str = CELL, params: Path = PARAMS, root: Path = ROOT,
    top: int = typer.Option(20, "--top", "-n", min=0, help="How many of the highest-ranked issues to print."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Also write the whole ranked table here (.csv or .parquet)."),
    cleaned: Path | None = typer.Option(None, "--cleaned", help="Write a cleaned label CSV (index,label) here."),
    min_confidence: float = typer.Option(0.9, min=0.0, max=1.0,  # RELABEL_CONFIDENCE (test_label_issues)
                                         help="--cleaned relabels a flagged sample only this confidently; else drops it."),
    rebuild: bool = typer.Option(False, help="Recompute data/issues/<cell>.parquet even if it exists."),
) -> None:
    """Ranked label issues of a finished cell: given vs suggested label, issue score (flag at >= 0.5)."""
    from stages import label_issues as stage

    ctx = _context(root, params, cell)
    typer.echo(stage.show(ctx, top=top, out=out, cleaned=cleaned, min_confidence=min_confidence, rebuild=rebuild))


@app.command()
def report(params: Path = PARAMS, root: Path = ROOT) -> None:
    """The paper's tables and figures beside our numbers → reports/."""
    from stages import report as stage

    stage.run(root.resolve(), params)


@app.command("run-cell")
def run_cell(cell: str = CELL, params: Path = PARAMS, root: Path = ROOT) -> None:
    """Every stage of one cell in this process, without DVC (for debugging and notebooks)."""
    from stages import evaluate as evaluate_stage
    from stages import noise as noise_stage
    from stages import training

    ctx = _context(root, params, cell)
    noise_stage.run(ctx)
    for stage in ("warmup", "train", "finetune"):
        training.run(ctx, stage)
    evaluate_stage.run(ctx)


@app.command("check-params")
def check_params(params: Path = PARAMS, root: Path = ROOT) -> None:
    """Validate a params file and list its cells."""
    from pipeline.config import load_params

    loaded = load_params(root / params)
    typer.echo(f"{root / params}: valid, {len(loaded.runs)} cells: {', '.join(loaded.runs)}")


@app.command("prepare-tracking")
def prepare_tracking(root: Path = ROOT) -> None:
    """Create (or migrate) the MLflow store once, before stages run in parallel."""
    from pipeline.tracking import mlflow_runs

    uri = mlflow_runs.default_tracking_uri(root.resolve())
    mlflow_runs.prepare_store(uri)
    typer.echo(f"MLflow store ready: {uri}")


@app.command()
def quickstart(
    directory: Path = typer.Option(Path("quickstart"), "--dir", help="Workspace to create (git + DVC)."),
    profile: str = typer.Option("quick", help="Profile from profiles/<name>.yaml used as params.yaml."),
    force: bool = typer.Option(False, help="Reuse an existing workspace (dvc repro runs only what changed)."),
) -> None:
    """Run the whole pipeline (dvc repro) on the offline digits profile in a fresh workspace."""
    from pipeline.tracking import workspace

    workspace.quickstart(directory, profile=profile, force=force)


def _configure_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S", stream=sys.stderr)
    for noisy in ("alembic", "mlflow", "urllib3", "matplotlib", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def main() -> None:
    """Entry point: a UserError becomes one line on stderr and exit code 2, with no traceback.

    Typer runs in standalone mode, so usage errors, --help and a bare `mtadcs` are handled
    (and exit) the usual click way; anything else propagates with its traceback (a bug).
    """
    _configure_logging()
    try:
        app()
    except UserError as err:
        typer.echo(f"mtadcs: error: {err}", err=True)
        raise SystemExit(2) from None
    except OSError as err:  # a full disk or an unwritable folder outside an atomic write
        if err.errno not in UNWRITABLE:
            raise
        typer.echo(f"mtadcs: error: {err.filename}: cannot write ({err.strerror}); {UNWRITABLE[err.errno]}", err=True)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
