"""Where a stage reads and writes when DVC runs it in a queued experiment's temporary copy."""

from __future__ import annotations

from pathlib import Path

from pipeline.layout import home_root


def test_a_queued_copy_belongs_to_the_repository_above_it(tmp_path) -> None:
    copy = tmp_path / "repo" / ".dvc" / "tmp" / "exps" / "tmpab12cd"
    copy.mkdir(parents=True)
    assert home_root(copy) == tmp_path / "repo"
    assert home_root(copy / "sub") == tmp_path / "repo"
    assert home_root(tmp_path / "repo") == tmp_path / "repo"
    assert home_root(tmp_path / "exps") == tmp_path / "exps"


def test_the_mlflow_store_and_untracked_inputs_of_a_queued_copy_are_the_repositorys(tmp_path, monkeypatch) -> None:
    from pipeline.tracking.mlflow_runs import default_tracking_uri
    from stages.common import resolve_path

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    repo = tmp_path / "repo"
    copy = repo / ".dvc" / "tmp" / "exps" / "tmp1"
    (copy / "labels").mkdir(parents=True)
    (copy / "labels" / "mine.csv").write_text("x")
    assert default_tracking_uri(copy) == f"sqlite:///{(repo / 'mlflow.db').as_posix()}"

    class Ctx:
        root = copy

    assert resolve_path(Ctx, "labels/mine.csv") == copy / "labels" / "mine.csv"  # tracked: the copy's own
    assert resolve_path(Ctx, "../shared/data/x.npz") == repo / "../shared/data/x.npz"  # untracked: the repo's
    assert resolve_path(Ctx, "/abs/x.npz") == Path("/abs/x.npz") and resolve_path(Ctx, None) is None
