"""MLflow tracking: one parent run per grid cell, one nested child run per stage execution.

Why this shape: DVC runs each stage in its own process (and, under `dvc exp run --queue`,
in a temporary copy of the repository), so nothing may rely on mlflow's in-process
active-run stack. Every call here names its run by id through `MlflowClient`.

A cell's parent run is found by its tags `mtadcs.cell`, `mtadcs.labels` (a digest of the
cell's noisy-label file) and `mtadcs.params` (a digest of its resolved params, which the parent
carries as MLflow params): re-running a stage with the same inputs adds a child under the same
parent, while new noisy labels or a changed parameter start a new parent (MLflow params are
immutable, and the runs table compares cells by them). Two stage processes may start at the
same moment (`dvc repro -s` twice, `dvc queue start -j 2`), so store creation, experiment
creation and the parent's find-or-create all run under an exclusive `fcntl.flock`:

* sqlite URIs lock `<db path>.lock` beside the database, which every process sees;
* other URIs (a tracking server, PostgreSQL) lock `~/.cache/mtadcs/mlflow-<uri hash>.lock`,
  which serialises processes on one machine only. Across machines a race stays possible;
  after creating a parent we re-read the candidates and keep the oldest (deleting ours if
  it lost), which closes all but a sub-second window.

The default store is an ABSOLUTE sqlite path at the project root: mlflow >= 3.7 defaults to
`sqlite:///mlflow.db` relative to the working directory, which under a queued experiment
is a temporary copy that is deleted afterwards.

mlflow is imported lazily: importing it takes ~1.5 s, which stages with tracking disabled
and the digest helpers should not pay.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import re
import shutil
import socket
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import pandas as pd

from pipeline import faults
from pipeline.errors import UserError
from pipeline.layout import home_root

try:  # fcntl is POSIX-only; without it the locks below are no-ops (documented above).
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

if TYPE_CHECKING:
    from mlflow import MlflowClient

log = logging.getLogger(__name__)

DB_FILE = "mlflow.db"
ARTIFACTS_DIR = "mlartifacts"  # beside the sqlite file, as `mlflow server` names it
ROLE_TAG = "mtadcs.role"  # "cell" on parents, "stage" on children
CELL_TAG = "mtadcs.cell"
LABELS_TAG = "mtadcs.labels"
STAGE_TAG = "mtadcs.stage"
HOST_TAG, PID_TAG = "mtadcs.host", "mtadcs.pid"  # the process a stage run belongs to
PARAMS_TAG = "mtadcs.params"  # digest of the cell's params: a parent per distinct configuration
PARENT_TAG = "mlflow.parentRunId"  # what the MLflow UI nests children by
# MLflow >= 3 opens an experiment on its GenAI overview (traces) unless told it holds model
# training runs; the kind tag makes `mlflow ui` open on the runs table. The runs table shows no
# metric column until one is picked; the shared view (an experiment tag the UI's "Share" button
# writes, read back from `?viewStateShareKey=mtadcs`, see `runs_view_url`) picks the final
# metrics and the noise rate, newest runs first.
VIEW_KEY = "mtadcs"
RUNS_VIEW = {
    "selectedColumns": [*(f"metrics.`{m}`" for m in ("finetune/test/top1", "train/test/top1", "train/test/knn",
                                                      "G/precision", "G/recall", "label_issues/f1")),
                        "params.`noise.rate`", "tags.`switch_set`"],
    "orderByKey": "attributes.start_time", "orderByAsc": False,
}
EXPERIMENT_TAGS = {"mlflow.experimentKind": "custom_model_development",
                   f"mlflow.sharedViewState.{VIEW_KEY}": json.dumps(RUNS_VIEW)}


def runs_view_url(server: str, experiment_id: str) -> str:
    """The runs table of an experiment in `mlflow ui` with the project's columns."""
    return f"{server.rstrip('/')}/#/experiments/{experiment_id}/runs?viewStateShareKey={VIEW_KEY}"
DB_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")

_MAX_KEY = 250  # mlflow's MAX_ENTITY_KEY_LENGTH
_INVALID_NAME_CHARS = re.compile(r"[^/\w.\- ]")  # mlflow's portable (Windows) name alphabet


# ---------------------------------------------------------------- store and experiment


def default_tracking_uri(root: str | Path) -> str:
    """MLFLOW_TRACKING_URI when set, else an absolute sqlite store at `root`/mlflow.db (the
    repository's, when `root` is a queued experiment's temporary copy: runs logged there would
    be deleted with it)."""
    env = os.environ.get("MLFLOW_TRACKING_URI", "").strip()
    if env:
        if _is_relative_local(env):
            log.warning("MLFLOW_TRACKING_URI=%s is relative: under `dvc exp run --queue` it logs into a "
                        "temporary copy of the repository and is lost; use an absolute path", env)
        return env
    return f"sqlite:///{(home_root(Path(root)).resolve() / DB_FILE).as_posix()}"


def prepare_store(uri: str) -> None:
    """Create (or upgrade) a database store once, under the store lock.

    Concurrent first use of a fresh sqlite store races on schema creation; inside the lock
    the first process builds the schema and the others find it done. An older sqlite
    schema is copied to `<db>.<revision>.bak` before anything migrates it (mlflow itself
    migrates silently when a newer table is missing). Other databases are left to the user
    (`mlflow db upgrade`); server and file URIs need nothing here.
    """
    if _scheme(uri) not in DB_SCHEMES:
        return
    from mlflow.exceptions import MlflowException

    db = _sqlite_path(uri)
    if db is not None:
        db.parent.mkdir(parents=True, exist_ok=True)
    with store_lock(uri):
        if db is not None:
            _backup_if_outdated(uri, db)
        try:
            _client(uri).search_experiments(max_results=1)  # builds the store: creates/migrates
        except MlflowException as err:
            if "out-of-date database schema" not in str(err):
                raise
            if db is None:
                raise UserError(f"MLflow store {uri}: {err.message}") from None
            _upgrade_sqlite(uri)


def experiment_id(uri: str, name: str) -> str:
    """The id of experiment `name`, created if absent (race-safe under the store lock)."""
    from mlflow.exceptions import MlflowException

    client = _client(uri)
    with store_lock(uri):
        found = client.get_experiment_by_name(name)
        if found is None:
            try:
                created = client.create_experiment(name, artifact_location=_artifact_location(uri, name),
                                                   tags=EXPERIMENT_TAGS)
                return created
            except MlflowException as err:  # created meanwhile by another machine
                if err.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise
                found = client.get_experiment_by_name(name)
    if found.lifecycle_stage == "deleted":
        raise UserError(f"MLflow experiment '{name}' (id {found.experiment_id}) was deleted: restore it "
                        f"(`mlflow experiments restore -x {found.experiment_id}`) or set tracking.experiment")
    for key, value in EXPERIMENT_TAGS.items():  # an experiment created before the tag existed
        if found.tags.get(key) != value:
            client.set_experiment_tag(found.experiment_id, key, value)
    return found.experiment_id


@contextlib.contextmanager
def store_lock(uri: str) -> Iterator[Path]:
    """Hold an exclusive flock that every process using `uri` on this machine agrees on."""
    path = lock_path(uri)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        if fcntl is not None:
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield path
        finally:
            if fcntl is not None:
                fcntl.flock(handle, fcntl.LOCK_UN)


def lock_path(uri: str) -> Path:
    """`<db>.lock` for a sqlite file; a per-URI file under ~/.cache/mtadcs otherwise."""
    db = _sqlite_path(uri)
    if db is not None:
        return db.with_name(db.name + ".lock")
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mtadcs"
    return cache / f"mlflow-{hashlib.sha256(uri.encode()).hexdigest()[:16]}.lock"


def _client(uri: str) -> MlflowClient:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri)


def _scheme(uri: str) -> str:
    """'sqlite', 'postgresql', 'http', … ('postgresql+psycopg2' counts as 'postgresql')."""
    head, sep, _ = uri.partition("://")
    return head.split("+")[0].lower() if sep else "file"


def _sqlite_path(uri: str) -> Path | None:
    """The database file of a sqlite URI; None for in-memory or non-sqlite URIs."""
    if _scheme(uri) != "sqlite" or not uri.partition("://")[2].startswith("/"):
        return None
    raw = unquote(uri.partition("://")[2][1:].split("?")[0])
    return None if raw in ("", ":memory:") else Path(raw)


def _is_relative_local(uri: str) -> bool:
    db = _sqlite_path(uri)
    if db is not None:
        return not db.is_absolute()
    return _scheme(uri) == "file" and not uri.startswith("file:") and not Path(uri).is_absolute()


def _artifact_location(uri: str, name: str) -> str | None:
    """Absolute artifact dir beside a sqlite store; None lets a server/other store choose.

    mlflow's own default is `./mlruns` resolved against the working directory of whoever
    creates the experiment, i.e. possibly a queued experiment's temporary copy.
    """
    db = _sqlite_path(uri)
    if db is None:
        return None
    slug = re.sub(r"[^\w.-]", "_", name)
    return (db.resolve().parent / ARTIFACTS_DIR / slug).as_uri()


def _backup_if_outdated(uri: str, db: Path) -> None:
    """Copy an existing sqlite store whose schema is older than this mlflow's, once per revision."""
    from mlflow.store.db.utils import (
        _get_latest_schema_revision,
        _get_schema_version,
        create_sqlalchemy_engine,
    )

    if not db.is_file() or db.stat().st_size == 0:
        return
    engine = create_sqlalchemy_engine(uri)
    try:
        found = _get_schema_version(engine)
    finally:
        engine.dispose()
    if found is None or found == _get_latest_schema_revision():
        return
    backup = db.with_name(f"{db.name}.{found}.bak")
    if not backup.exists():
        shutil.copy2(db, backup)
    log.warning("MLflow store %s has schema %s, older than this mlflow's: backed up to %s, upgrading",
                db, found, backup)


def _upgrade_sqlite(uri: str) -> None:
    """What `mlflow db upgrade` does, for a store whose tables exist but whose revision is old."""
    from mlflow.store.db.utils import _upgrade_db, create_sqlalchemy_engine

    engine = create_sqlalchemy_engine(uri)
    try:
        _upgrade_db(engine)
    finally:
        engine.dispose()
    _client(uri).search_experiments(max_results=1)  # verifies the schema now matches


# ---------------------------------------------------------------- runs


@dataclass
class StageRun:
    """A nested child run of a cell's parent run; a thin wrapper over MlflowClient."""

    client: MlflowClient
    run_id: str
    parent_run_id: str
    experiment_id: str
    stage: str

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Nested dicts become 'section.key'; values are strings cut to mlflow's length limit."""
        _log_params(self.client, self.run_id, params)

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        """Log the numeric, finite values; anything else is skipped (debug-logged)."""
        self._log(self.run_id, _clean_metrics(metrics), step or 0)

    def log_epoch(self, record: Mapping[str, Any]) -> None:
        """One history row: 'phase/name' at step=epoch, on this run and mirrored on the parent.

        The parent carries every stage's curves so one chart shows warm-up, training and
        fine-tuning side by side; the prefix is the row's `phase` (default: this stage).
        """
        step = int(record["epoch"])
        prefix = str(record.get("phase") or self.stage)
        fields = {f"{prefix}/{k}": v for k, v in record.items() if k not in ("epoch", "phase")}
        metrics = _clean_metrics(fields)
        self._log(self.run_id, metrics, step)
        self._log(self.parent_run_id, metrics, step)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        """Upload a file, or a directory's contents, under `artifact_path`."""
        path = Path(path)
        if path.is_dir():
            self.client.log_artifacts(self.run_id, str(path), artifact_path)
        elif path.is_file():
            self.client.log_artifact(self.run_id, str(path), artifact_path)
        else:
            raise FileNotFoundError(f"artifact {path} does not exist")

    def log_parent_metrics(self, metrics: Mapping[str, Any]) -> None:
        """Final metrics on the cell's parent run (what the report and the runs table show)."""
        self._log(self.parent_run_id, _clean_metrics(metrics), 0)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        _set_tags(self.client, self.run_id, tags)

    def _log(self, run_id: str, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        if metrics:
            now = int(time.time() * 1000)
            batch = [Metric(k, v, now, step) for k, v in metrics.items()]
            faults.reached("mlflow_log")
            self.client.log_batch(run_id, metrics=batch)


class NullRun:
    """Stand-in when tracking is disabled: same methods, no effect, no mlflow import."""

    run_id: str | None = None
    parent_run_id: str | None = None
    experiment_id: str | None = None

    def __init__(self, stage: str = "") -> None:
        self.stage = stage

    def log_params(self, params: Mapping[str, Any]) -> None:
        pass

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        pass

    def log_epoch(self, record: Mapping[str, Any]) -> None:
        pass

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        pass

    def log_parent_metrics(self, metrics: Mapping[str, Any]) -> None:
        pass

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        pass


@contextlib.contextmanager
def stage_run(*, uri: str, experiment: str, cell: str, stage: str, labels_digest: str,
              tags: Mapping[str, Any] | None = None, cell_params: Mapping[str, Any] | None = None,
              enabled: bool = True) -> Iterator[StageRun | NullRun]:
    """A child run `<cell>/<stage>` under the cell's parent; FINISHED on success, FAILED on error
    (KILLED on Ctrl-C), the exception re-raised. A process killed by SIGKILL leaves its run
    RUNNING; the next execution of the stage (the resume) continues that run.

    `tags` (dataset, noise, rate, ablation, git_commit, dvc_lock_hash, …; None values are
    skipped) go on the child and refresh the parent's, so the parent shows the latest.
    `cell_params` (what the cell computes: its resolved params without runtime and tracking)
    are logged on the parent when it is created, so the runs table filters and compares cells
    by them; as MLflow params never change, other params start another parent.
    The parent's status follows the last child to end (RUNNING while one runs).
    """
    if not enabled:
        yield NullRun(stage)
        return
    for name, value in (("cell", cell), ("labels_digest", labels_digest)):
        if not value or "'" in value:
            raise ValueError(f"{name} must be a non-empty string without quotes, got {value!r}")
    prepare_store(uri)
    client = _client(uri)
    exp = experiment_id(uri, experiment)
    parent = _find_or_create_parent(client, uri, exp, ParentKey(cell, labels_digest, params_digest(cell_params or {})),
                                    tags or {}, cell_params or {})
    child_tags = _child_tags(cell, stage, labels_digest, parent, tags or {}) | _process_tags()
    child = _killed_child(client, exp, parent, stage)
    if child is None:
        child = client.create_run(exp, run_name=f"{cell}/{stage}", tags=child_tags).info.run_id
    else:  # the same stage was killed mid-way and now resumes: its run resumes with it
        _set_tags(client, child, child_tags)
        client.update_run(child, status="RUNNING")
    client.update_run(parent, status="RUNNING")
    run = StageRun(client, child, parent, exp, stage)
    try:
        yield run
    except BaseException as exc:
        _end(client, run, "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED")
        raise
    _end(client, run, "FINISHED")


def _process_tags() -> dict[str, str]:
    return {HOST_TAG: socket.gethostname(), PID_TAG: str(os.getpid())}


def _killed_child(client: MlflowClient, exp: str, parent: str, stage: str) -> str | None:
    """The newest RUNNING child of `parent` for `stage` whose process is gone from this machine
    (killed: SIGKILL lets no code mark the run), or None. A stage that resumes after a kill
    continues that run, so a killed-and-resumed stage still has exactly one run."""
    query = f"tags.`{PARENT_TAG}` = '{parent}' and tags.`{STAGE_TAG}` = '{stage}' and attributes.status = 'RUNNING'"
    for run in client.search_runs([exp], filter_string=query, order_by=["attributes.start_time DESC"]):
        tags = run.data.tags
        if tags.get(HOST_TAG) == socket.gethostname() and not _alive(int(tags.get(PID_TAG, "0"))):
            return run.info.run_id
    return None


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _end(client: MlflowClient, run: StageRun, status: str) -> None:
    """Terminate child and parent; a tracking failure here must not mask the stage's own error."""
    try:
        client.set_terminated(run.run_id, status=status)
        client.set_terminated(run.parent_run_id, status=status)
    except Exception:  # logged: the stage's own result matters more than its run status
        log.warning("could not mark MLflow run %s %s", run.run_id, status, exc_info=True)


@dataclass(frozen=True)
class ParentKey:
    """What makes two stage runs children of one parent: the cell, its noisy labels, its params."""

    cell: str
    labels: str
    params: str

    def tags(self) -> dict[str, str]:
        return {ROLE_TAG: "cell", CELL_TAG: self.cell, LABELS_TAG: self.labels, PARAMS_TAG: self.params}


def params_digest(params: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(flatten(params), sort_keys=True, default=str).encode()).hexdigest()[:16]


def _find_or_create_parent(client: MlflowClient, uri: str, exp: str, key: ParentKey, tags: Mapping[str, Any],
                           params: Mapping[str, Any]) -> str:
    """The oldest active parent for `key`, created (with its params) under the store lock if none."""
    with store_lock(uri):
        found = _parent_candidates(client, exp, key)
        if found:
            _set_tags(client, found[0], tags)
            return found[0]
        created = client.create_run(exp, run_name=key.cell, tags={**_tag_values(tags), **key.tags()}).info.run_id
        _log_params(client, created, params)
    candidates = _parent_candidates(client, exp, key)  # another machine may have raced us
    winner = candidates[0] if candidates else created
    if winner != created:
        log.warning("parent run for %s created concurrently elsewhere; using %s", key.cell, winner)
        client.delete_run(created)
    return winner


def _parent_candidates(client: MlflowClient, exp: str, key: ParentKey) -> list[str]:
    """Active parent run ids for `key`, oldest first (ties broken by id)."""
    query = " and ".join(f"tags.`{name}` = '{value}'" for name, value in key.tags().items())
    runs = client.search_runs([exp], filter_string=query, max_results=100)
    return [r.info.run_id for r in sorted(runs, key=lambda r: (r.info.start_time, r.info.run_id))]


def _log_params(client: MlflowClient, run_id: str, params: Mapping[str, Any]) -> None:
    """Nested dicts become 'section.key'; values are strings cut to mlflow's length limit."""
    from mlflow.entities import Param

    limit = _param_value_limit()
    flat = {_clean_name(k): _clip(_as_text(v), limit) for k, v in flatten(params).items()}
    items = [Param(k, v) for k, v in flat.items()]
    for start in range(0, len(items), 100):  # mlflow's log_batch takes at most 100 params
        client.log_batch(run_id, params=items[start:start + 100])


def _child_tags(cell: str, stage: str, digest: str, parent: str, tags: Mapping[str, Any]) -> dict[str, str]:
    base = {ROLE_TAG: "stage", STAGE_TAG: stage, CELL_TAG: cell, LABELS_TAG: digest, PARENT_TAG: parent}
    return {**_tag_values(tags), **base}


def _set_tags(client: MlflowClient, run_id: str, tags: Mapping[str, Any]) -> None:
    from mlflow.entities import RunTag

    values = _tag_values(tags)
    if values:
        client.log_batch(run_id, tags=[RunTag(k, v) for k, v in values.items()])


def _tag_values(tags: Mapping[str, Any]) -> dict[str, str]:
    """Tags as mlflow stores them: str values within its limit; None values dropped."""
    from mlflow.utils.validation import MAX_TAG_VAL_LENGTH

    return {_clean_name(k): _clip(str(v), MAX_TAG_VAL_LENGTH) for k, v in tags.items() if v is not None}


# ---------------------------------------------------------------- names and values


def flatten(params: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'optim': {'lr': 0.02}} -> {'optim.lr': 0.02}; lists and scalars are leaves."""
    flat: dict[str, Any] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def _clean_name(name: str) -> str:
    """A param/metric/tag key mlflow accepts on every OS: bad chars -> '_', no '.'/'..' parts."""
    text = _INVALID_NAME_CHARS.sub("_", str(name))
    parts = ["_" if p in (".", "..") else p for p in text.split("/") if p]
    return ("/".join(parts) or "_")[:_MAX_KEY]


def _clean_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    out: dict[str, float] = {}
    for key, value in metrics.items():
        number = _as_number(value)
        if number is None:
            log.debug("metric %s=%r skipped: not a finite number", key, value)
        else:
            out[_clean_name(key)] = number
    return out


def _as_number(value: Any) -> float | None:
    """float(value) for real numbers, numpy scalars and 0-d tensors; None for the rest."""
    if value is None or isinstance(value, (str, bytes)) or not hasattr(value, "__float__"):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError, RuntimeError):
        return None
    return number if math.isfinite(number) else None


def _as_text(value: Any) -> str:
    """Strings as they are, lists as JSON ('[80, 105]'), anything else through str()."""
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)):
        return json.dumps(value, default=str)
    return str(value)


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _param_value_limit() -> int:
    """mlflow's param value limit (6000 in 3.x, 500 in old releases)."""
    try:
        from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH
    except ImportError:  # pragma: no cover
        return 500
    return int(MAX_PARAM_VAL_LENGTH)


# ---------------------------------------------------------------- reading back


def find_cell_runs(uri: str, experiment: str) -> pd.DataFrame:
    """Parent (cell) runs, oldest first, as mlflow.search_runs lays them out.

    Columns: run_id, run_name, status, start_time, end_time, then `tags.*`, `params.*` and `metrics.*`
    (latest values: the final metrics plus the mirrored curves' last points). A cell whose
    labels were regenerated has several rows; the newest is the last.
    """
    prepare_store(uri)
    client = _client(uri)
    exp = client.get_experiment_by_name(experiment)
    base = ["run_id", "run_name", "status", "start_time", "end_time"]
    if exp is None:
        return pd.DataFrame(columns=base)
    rows = [_run_row(run) for run in _search_all(client, exp.experiment_id, f"tags.`{ROLE_TAG}` = 'cell'")]
    if not rows:
        return pd.DataFrame(columns=base)
    return pd.DataFrame(rows).sort_values("start_time", kind="stable").reset_index(drop=True)


def _search_all(client: MlflowClient, exp: str, query: str) -> list:
    runs, token = [], None
    while True:
        page = client.search_runs([exp], filter_string=query, max_results=1000, page_token=token,
                                  order_by=["attributes.start_time ASC"])
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def _run_row(run: Any) -> dict[str, Any]:
    info = run.info
    row: dict[str, Any] = {
        "run_id": info.run_id, "run_name": info.run_name, "status": info.status,
        "start_time": pd.to_datetime(info.start_time, unit="ms", utc=True),
        "end_time": pd.to_datetime(info.end_time, unit="ms", utc=True) if info.end_time else pd.NaT,
    }
    row.update({f"tags.{k}": v for k, v in run.data.tags.items()})
    row.update({f"params.{k}": v for k, v in run.data.params.items()})
    row.update({f"metrics.{k}": v for k, v in run.data.metrics.items()})
    return row


def log_report(uri: str, experiment: str, report_dir: str | Path, tags: Mapping[str, str]) -> str:
    """One top-level run 'report' holding the report's tables and figures as artifacts.

    The report spans every cell, so it belongs to no cell's parent; each `dvc repro` of the
    report stage adds a new one (tag mtadcs.role=report), the newest being the current one.
    """
    prepare_store(uri)
    client = _client(uri)
    run = client.create_run(experiment_id(uri, experiment), run_name="report",
                            tags={"mtadcs.role": "report", **{k: str(v) for k, v in tags.items()}})
    try:
        client.log_artifacts(run.info.run_id, str(report_dir), "report")
    except BaseException:
        client.set_terminated(run.info.run_id, "FAILED")
        raise
    client.set_terminated(run.info.run_id, "FINISHED")
    return run.info.run_id
