"""Tests of MLflow tracking: parent/child runs, metric curves, provenance, and process races.

One migrated sqlite store serves the whole session (building one costs seconds); each test
uses its own experiment. Only the concurrency test builds a fresh store, because the race
on schema creation is part of what it checks.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

pytest.importorskip("mlflow")
from mlflow import MlflowClient  # noqa: E402

from pipeline.tracking.mlflow_runs import (  # noqa: E402
    NullRun,
    default_tracking_uri,
    experiment_id,
    find_cell_runs,
    flatten,
    lock_path,
    prepare_store,
    stage_run,
)
from pipeline.tracking.provenance import dvc_lock_digest, file_digest, git_commit  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def store_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One migrated sqlite store for the session."""
    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
    prepare_store(uri)
    return uri


@pytest.fixture
def experiment(request: pytest.FixtureRequest) -> str:
    return f"exp-{request.node.name}"


@pytest.fixture
def client(store_uri: str) -> Iterator[MlflowClient]:
    yield MlflowClient(tracking_uri=store_uri)


def _runs(client: MlflowClient, uri: str, experiment: str, stage: str) -> list:
    """The cell (parent) runs for stage='cell', else the child runs of that stage."""
    exp = experiment_id(uri, experiment)
    query = "tags.`mtadcs.role` = 'cell'" if stage == "cell" else f"tags.`mtadcs.stage` = '{stage}'"
    return client.search_runs([exp], filter_string=query, max_results=1000)


def _env() -> dict[str, str]:
    """The environment for a child Python process that imports this checkout's `pipeline`."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}


def _history(client: MlflowClient, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


# ---------------------------------------------------------------- store location


def test_default_uri_is_an_absolute_sqlite_file_at_the_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    uri = default_tracking_uri(".")
    assert uri == f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"
    assert uri.startswith("sqlite:////")  # three slashes of the scheme, one of the absolute path


def test_default_uri_honours_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://tracking.example:5000")
    assert default_tracking_uri(tmp_path) == "http://tracking.example:5000"


def test_lock_sits_beside_a_sqlite_file_and_in_the_cache_otherwise(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert lock_path(f"sqlite:///{tmp_path}/x/mlflow.db") == tmp_path / "x" / "mlflow.db.lock"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    server = lock_path("http://tracking.example:5000")
    assert server.parent == tmp_path / "cache" / "mtadcs" and server.name.startswith("mlflow-")
    assert lock_path("http://other:5000") != server


def test_prepare_store_is_idempotent(store_uri: str) -> None:
    started = time.perf_counter()
    prepare_store(store_uri)
    prepare_store(store_uri)
    assert time.perf_counter() - started < 5
    assert lock_path(store_uri).exists()


def test_prepare_store_backs_up_and_upgrades_an_old_schema(store_uri: str, tmp_path: Path) -> None:
    """A store from an older mlflow is migrated (in a fresh process, as a stage would see it)."""
    from alembic import command
    from mlflow.store.db.utils import _get_alembic_config, _get_schema_version, create_sqlalchemy_engine

    db = tmp_path / "mlflow.db"
    shutil.copy2(store_uri.removeprefix("sqlite:///"), db)
    uri = f"sqlite:///{db}"
    engine = create_sqlalchemy_engine(uri)
    head = _get_schema_version(engine)
    config = _get_alembic_config(uri)
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "-1")
    old = _get_schema_version(engine)
    assert old != head
    code = f"from pipeline.tracking.mlflow_runs import prepare_store; prepare_store({uri!r})"
    subprocess.run([sys.executable, "-c", code], env=_env(), check=True, capture_output=True, timeout=60)
    assert _get_schema_version(engine) == head
    assert (tmp_path / f"mlflow.db.{old}.bak").is_file()
    engine.dispose()


def test_experiment_artifacts_live_beside_the_store(store_uri: str, client: MlflowClient, experiment: str) -> None:
    exp = experiment_id(store_uri, experiment)
    assert experiment_id(store_uri, experiment) == exp
    db = Path(store_uri.removeprefix("sqlite:///"))
    assert client.get_experiment(exp).artifact_location == (db.parent / "mlartifacts" / experiment).as_uri()


# ---------------------------------------------------------------- runs


def test_stage_run_nests_a_child_with_params_curves_and_tags(
    store_uri: str, client: MlflowClient, experiment: str, tmp_path: Path
) -> None:
    artifact = tmp_path / "history.csv"
    artifact.write_text("epoch,loss\n0,2.0\n")
    with stage_run(uri=store_uri, experiment=experiment, cell="c10-sym20", stage="warmup",
                   labels_digest="0123456789abcdef", tags={"dataset": "cifar10", "rate": 0.2, "git_commit": None}) as run:
        run.log_params({"optim": {"lr": 0.02, "milestones": [125, 200]}, "note": "x" * 7000, "seed": 1})
        for epoch in range(3):
            run.log_epoch({"epoch": epoch, "phase": "warmup", "loss": 2.0 - epoch, "acc": None,
                           "lof": float("nan"), "arch": "preact", "G_precision": 0.5 + 0.1 * epoch})
        run.log_metrics({"time:total": 3.5, "bad": "n/a", "flag": True}, step=2)
        run.log_artifact(artifact, "history")
        run.set_tags({"device": "cpu"})
    child = client.get_run(run.run_id)
    parent = client.get_run(run.parent_run_id)

    assert child.info.status == "FINISHED" and parent.info.status == "FINISHED"
    assert child.info.run_name == "c10-sym20/warmup"
    assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert child.data.tags["mtadcs.stage"] == "warmup" and child.data.tags["device"] == "cpu"
    assert child.data.tags["dataset"] == parent.data.tags["dataset"] == "cifar10"
    assert parent.data.tags["mtadcs.cell"] == child.data.tags["mtadcs.cell"] == "c10-sym20"
    assert (parent.data.tags["mtadcs.role"], child.data.tags["mtadcs.role"]) == ("cell", "stage")
    assert parent.data.tags["mtadcs.labels"] == "0123456789abcdef"
    assert parent.data.tags["rate"] == "0.2" and "git_commit" not in parent.data.tags
    assert "mlflow.parentRunId" not in parent.data.tags

    params = child.data.params
    assert params["optim.lr"] == "0.02" and params["optim.milestones"] == "[125, 200]" and params["seed"] == "1"
    assert len(params["note"]) == 6000 and params["note"].endswith("...")

    for run_id in (child.info.run_id, parent.info.run_id):  # the parent mirrors the curves
        assert _history(client, run_id, "warmup/loss") == [(0, 2.0), (1, 1.0), (2, 0.0)]
        assert [s for s, _ in _history(client, run_id, "warmup/G_precision")] == [0, 1, 2]
    assert not {"warmup/acc", "warmup/lof", "warmup/arch", "warmup/epoch"} & set(child.data.metrics)
    assert child.data.metrics["time_total"] == 3.5 and child.data.metrics["flag"] == 1.0
    assert "bad" not in child.data.metrics
    assert [f.path for f in client.list_artifacts(run.run_id, "history")] == ["history/history.csv"]


def test_a_failing_stage_marks_its_run_failed_and_reraises(
    store_uri: str, client: MlflowClient, experiment: str
) -> None:
    with pytest.raises(RuntimeError, match="diverged"):
        with stage_run(uri=store_uri, experiment=experiment, cell="c1", stage="train",
                       labels_digest="aa", tags={}) as run:
            run.log_metrics({"loss": 1.0})
            raise RuntimeError("diverged")
    assert client.get_run(run.run_id).info.status == "FAILED"
    assert client.get_run(run.parent_run_id).info.status == "FAILED"


def test_parent_is_reused_per_labels_digest(store_uri: str, client: MlflowClient, experiment: str) -> None:
    def run(stage: str, digest: str, commit: str) -> tuple[str, str]:
        with stage_run(uri=store_uri, experiment=experiment, cell="c1", stage=stage,
                       labels_digest=digest, tags={"git_commit": commit}) as r:
            if stage == "evaluate":
                r.log_parent_metrics({"top1": 91.5, "knn": float("nan")})
            return r.parent_run_id, r.run_id

    first, _ = run("warmup", "aa", "c0")
    again, _ = run("finetune", "aa", "c1")
    rerun, _ = run("finetune", "aa", "c2")
    other, _ = run("evaluate", "bb", "c3")
    assert first == again == rerun != other
    children = _runs(client, store_uri, experiment, "finetune")
    assert len(children) == 2 and {c.data.tags["mlflow.parentRunId"] for c in children} == {first}
    assert client.get_run(first).data.tags["git_commit"] == "c2"  # the parent shows the latest commit

    cells = find_cell_runs(store_uri, experiment)
    assert list(cells["run_id"]) == [first, other]
    assert list(cells["tags.mtadcs.labels"]) == ["aa", "bb"]
    assert cells.loc[1, "metrics.top1"] == 91.5 and "metrics.knn" not in cells
    assert find_cell_runs(store_uri, f"{experiment}-absent").empty


def test_disabled_tracking_touches_no_store(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'never' / 'mlflow.db'}"
    with stage_run(uri=uri, experiment="x", cell="c1", stage="train", labels_digest="aa", tags={},
                   enabled=False) as run:
        assert isinstance(run, NullRun)
        run.log_params({"a": {"b": 1}})
        run.log_epoch({"epoch": 0, "loss": 1.0})
        run.log_metrics({"x": 1.0})
        run.log_parent_metrics({"top1": 1.0})
        run.log_artifact(tmp_path / "missing")
        run.set_tags({"k": "v"})
    assert not (tmp_path / "never").exists()


def test_flatten_and_name_sanitising(store_uri: str, client: MlflowClient, experiment: str) -> None:
    assert flatten({"a": {"b": {"c": 1}, "d": [1, 2]}, "e": None}) == {"a.b.c": 1, "a.d": [1, 2], "e": None}
    with stage_run(uri=store_uri, experiment=experiment, cell="c1", stage="train", labels_digest="aa",
                   tags={}) as run:
        run.log_metrics({"top-1 (%)": 1.0, "/lead//slash/": 2.0, "a/./b": 3.0, "é:x": 4.0})
    metrics = client.get_run(run.run_id).data.metrics
    assert metrics == {"top-1 ___": 1.0, "lead/slash": 2.0, "a/_/b": 3.0, "é_x": 4.0}


# ---------------------------------------------------------------- races between processes

_WORKER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    import mlflow  # imported before the barrier, so the processes hit the store together
    from pipeline.tracking.mlflow_runs import stage_run

    uri, experiment, stage, ready, go = sys.argv[1:]
    Path(ready).touch()
    while not Path(go).exists():
        time.sleep(0.005)
    with stage_run(uri=uri, experiment=experiment, cell="c10-sym50", stage=stage,
                   labels_digest="feedbeef", tags={"worker": stage}) as run:
        for epoch in range(3):
            run.log_epoch({"epoch": epoch, "loss": 1.0 / (epoch + 1)})
""")


def _run_at_barrier(tmp_path: Path, script: str, uri: str, experiment: str, names: list[str],
                    timeout: float) -> list[str]:
    """Start one `script` process per name, release them together once all are ready, and return
    their outputs; each must exit 0."""
    go = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", script, uri, experiment, name, str(tmp_path / f"ready-{name}"),
                               str(go)], env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for name in names]
    deadline = time.monotonic() + 300  # hang guards, not speed checks: generous for a loaded 2-core machine
    while not all((tmp_path / f"ready-{name}").exists() for name in names):
        assert time.monotonic() < deadline and all(p.poll() is None for p in procs), "worker died before the barrier"
        time.sleep(0.01)
    go.touch()
    outputs = []
    for proc in procs:
        out, _ = proc.communicate(timeout=timeout)
        assert proc.returncode == 0, out
        outputs.append(out)
    return outputs


def test_simultaneous_stage_processes_share_one_parent_on_a_fresh_store(tmp_path: Path) -> None:
    """Two processes start on a store that does not exist yet: one schema, one parent, both children.

    Without the store lock this fails every time (sqlite schema migration races: 'duplicate
    column name'); two processes are enough for that and keep the test cheap on shared cores.
    """
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    stages = ["train", "finetune"]
    for out in _run_at_barrier(tmp_path, _WORKER, uri, "race", stages, timeout=300):
        assert "Traceback" not in out, out

    client = MlflowClient(tracking_uri=uri)
    parents = _runs(client, uri, "race", "cell")
    assert len(parents) == 1
    children = [r for s in stages for r in _runs(client, uri, "race", s)]
    assert sorted(c.data.tags["worker"] for c in children) == sorted(stages)
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parents[0].info.run_id}
    assert all(c.info.status == "FINISHED" for c in children)
    for stage in stages:  # each child's curve reached the parent
        assert [s for s, _ in _history(client, parents[0].info.run_id, f"{stage}/loss")] == [0, 1, 2]


# ---------------------------------------------------------------- provenance


def _write_lock(root: Path, params: dict, outs_md5: str = "o1") -> None:
    lock = {
        "schema": "2.0",
        "stages": {
            "train@c1": {
                "cmd": "python -m stages.cli train c1",
                "deps": [{"path": "data/labels/c1.parquet", "hash": "md5", "md5": "d1", "size": 10}],
                "params": {"params.yaml": params},
                "outs": [{"path": "data/runs/c1/train", "hash": "md5", "md5": outs_md5, "size": 5, "nfiles": 2}],
            },
            "noise@c1": {"cmd": "python -m stages.cli noise c1", "outs": []},
        },
    }
    (root / "dvc.lock").write_text(yaml.safe_dump(lock, sort_keys=False))


def test_dvc_lock_digest_follows_the_stage_inputs(tmp_path: Path) -> None:
    assert dvc_lock_digest(tmp_path, "train@c1") is None  # no dvc.lock yet
    _write_lock(tmp_path, {"optim": {"lr": 0.02}})
    digest = dvc_lock_digest(tmp_path, "train@c1")
    assert digest is not None and len(digest) == 16
    assert dvc_lock_digest(tmp_path, "train@c1") == digest
    assert dvc_lock_digest(tmp_path, "noise@c1") not in (None, digest)
    assert dvc_lock_digest(tmp_path, "train@c2") is None

    _write_lock(tmp_path, {"optim": {"lr": 0.02}}, outs_md5="o2")
    assert dvc_lock_digest(tmp_path, "train@c1") == digest  # outs are results, not inputs
    _write_lock(tmp_path, {"optim": {"lr": 0.05}})
    assert dvc_lock_digest(tmp_path, "train@c1") != digest


def test_git_commit_inside_and_outside_a_repository(tmp_path: Path) -> None:
    assert git_commit(tmp_path) is None
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", "-c", "commit.gpgsign=false"]
    subprocess.run([*git, "init", "-q"], cwd=tmp_path, check=True)
    assert git_commit(tmp_path) is None  # no commit yet
    subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", "x"], cwd=tmp_path, check=True)
    head = git_commit(tmp_path)
    assert head is not None and len(head) == 40 and int(head, 16) >= 0


def test_file_digest_is_a_sha256_prefix(tmp_path: Path) -> None:
    path = tmp_path / "labels.parquet"
    path.write_bytes(b"abc" * 1_000_000)
    assert file_digest(path) == hashlib.sha256(b"abc" * 1_000_000).hexdigest()[:16]


def test_the_parent_carries_the_cells_params_and_a_changed_param_starts_another(
    store_uri: str, client: MlflowClient, experiment: str
) -> None:
    def parent(stage: str, rate: float, lr: float) -> str:
        params = {"noise": {"rate": rate}, "finetune": {"lr": lr}}
        with stage_run(uri=store_uri, experiment=experiment, cell="c1", stage=stage, labels_digest="aa", tags={},
                       cell_params=params) as r:
            return r.parent_run_id

    first = parent("train", 0.5, 0.001)
    assert parent("evaluate", 0.5, 0.001) == first  # same configuration: one parent
    edited = parent("finetune", 0.5, 0.002)  # MLflow params are immutable: a new parent
    assert edited != first
    assert client.get_run(first).data.params == {"noise.rate": "0.5", "finetune.lr": "0.001"}
    exp = client.get_experiment_by_name(experiment)
    found = client.search_runs([exp.experiment_id], filter_string="params.`finetune.lr` = '0.002'")
    assert [r.info.run_id for r in found] == [edited]
    # `mlflow ui` opens the experiment on its runs table, not the GenAI overview
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    view = json.loads(exp.tags["mlflow.sharedViewState.mtadcs"])  # the runs table's columns
    assert "metrics.`finetune/test/top1`" in view["selectedColumns"]


def test_a_stage_killed_mid_run_continues_its_run_when_it_resumes(store_uri: str, client: MlflowClient,
                                                                   experiment: str) -> None:
    code = textwrap.dedent(f"""
        import os, signal
        from pipeline.tracking.mlflow_runs import stage_run
        with stage_run(uri={store_uri!r}, experiment={experiment!r}, cell="c1", stage="train", labels_digest="aa",
                       tags={{}}) as run:
            run.log_metrics({{"loss": 2.0}}, step=1)
            os.kill(os.getpid(), signal.SIGKILL)
    """)
    killed = subprocess.run([sys.executable, "-c", code], cwd=REPO)
    assert killed.returncode == -9
    with stage_run(uri=store_uri, experiment=experiment, cell="c1", stage="train", labels_digest="aa",
                   tags={}) as run:
        run.log_metrics({"loss": 1.0}, step=2)
    children = _runs(client, store_uri, experiment, "train")
    assert len(children) == 1 and children[0].info.status == "FINISHED"  # one run, none stuck at RUNNING
    history = client.get_metric_history(children[0].info.run_id, "loss")
    assert sorted((m.step, m.value) for m in history) == [(1, 2.0), (2, 1.0)]


_LOGGER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    import mlflow
    from pipeline.tracking.mlflow_runs import stage_run

    uri, experiment, cell, ready, go = sys.argv[1:]
    Path(ready).touch()
    while not Path(go).exists():
        time.sleep(0.005)
    with stage_run(uri=uri, experiment=experiment, cell=cell, stage="train", labels_digest="feedbeef",
                   tags={}, cell_params={"cell": cell}) as run:
        for epoch in range(40):
            run.log_epoch({"epoch": epoch, "loss": 1.0 / (epoch + 1), "G_size": 100 + epoch})
""")


def _four_workers_log_at_once(tmp_path: Path, uri: str) -> None:
    cells = [f"c{i}" for i in range(4)]
    for out in _run_at_barrier(tmp_path, _LOGGER, uri, "many", cells, timeout=300):
        assert "database is locked" not in out, out
    client = MlflowClient(tracking_uri=uri)
    parents = _runs(client, uri, "many", "cell")
    assert sorted(p.data.tags["mtadcs.cell"] for p in parents) == cells  # no run lost
    children = _runs(client, uri, "many", "train")
    assert len(children) == 4 and all(c.info.status == "FINISHED" for c in children)
    for child in children:
        assert [s for s, _ in _history(client, child.info.run_id, "train/loss")] == list(range(40))


@pytest.mark.slow
def test_four_processes_log_to_one_sqlite_store_at_once(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    prepare_store(uri)
    _four_workers_log_at_once(tmp_path, uri)


@pytest.mark.slow
def test_four_processes_log_through_one_tracking_server_at_once(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
                               "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
                               "--artifacts-destination", str(tmp_path / "artifacts"), "--workers", "1"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env())
    try:
        uri = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        while True:
            try:
                MlflowClient(tracking_uri=uri).search_experiments(max_results=1)
                break
            except Exception:
                assert time.monotonic() < deadline and server.poll() is None, "mlflow server did not start"
                time.sleep(1)
        _four_workers_log_at_once(tmp_path, uri)
    finally:
        server.terminate()
        server.wait(timeout=30)
