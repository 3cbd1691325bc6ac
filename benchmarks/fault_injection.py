"""Fault injection: kill a tiny cell's stage processes with SIGKILL at random moments while
`dvc repro` runs it, resume with `dvc repro` until it finishes, and check that nothing differs
from an uninterrupted run and that MLflow lost, duplicated or stranded no run.

    python benchmarks/fault_injection.py --kills 20 --seed 0      # -> benchmarks/results/fault_injection.json
    python benchmarks/fault_injection.py --kills 3 --trials 1 --out /tmp/fi.json   # the slow test's size

The kills are spread over `--trials` fresh workspaces (each a git + DVC workspace of the tiny
profile below, one MTaDCS cell), so every trial ends in one comparison; a kill planned after its
trial's cell had already finished cannot fire, and an extra trial makes up the count. Each kill is, at random
(seeded), one of:
  * `checkpoint_write`, `trace_write`, `mlflow_log`: the stage process kills itself at its n-th
    arrival at that point (pipeline/faults.py): between writing a checkpoint or an epoch's Parquet
    trace to its temporary file and renaming it, or just before an MLflow call;
  * `timed`: the driver sends SIGKILL to the running stage process after a random delay.
After each kill, `dvc repro` runs again (and may be killed again) until the cell finishes.

Compared with an uninterrupted run of the same workspace: the label file (bytes), every
checkpoint's tensors (model, optimizer, G, labels; not the history's timings, nor the resume
fingerprint, which hashes the previous checkpoint file and so its timings), the per-epoch
traces and the confidence-set masks (Parquet content), and the metrics JSONs. MLflow: exactly one
parent run and one FINISHED run per stage, none RUNNING.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT))

from pipeline.faults import POINTS  # noqa: E402
from pipeline.files import write_text_atomic  # noqa: E402
from pipeline.tracking import workspace  # noqa: E402

CELL = "fi"
STAGES = ("noise", "warmup", "train", "finetune", "evaluate")
TINY = {
    "data": {"dataset": "digits", "image_size": 8},
    "noise": {"kind": "sym", "rate": 0.5, "sym_convention": "other", "init_per_class": 10},
    "model": {"width": 4, "proj_dim": 16},
    "method": {"queue_size": 256},
    "optim": {"epochs": 6, "warmup_epochs": 2, "lr_milestones": [], "batch_size": 128},
    "train": {"feature_every": 2},
    "finetune": {"epochs": 2, "batch_size": 128},
    "evaluate": {"knn_k": 10},
    "runtime": {"threads": 1, "workers": 0, "progress": "log"},
    "tracking": {"experiment": "fault-injection"},
    "report": {"figure_cell": CELL},
    "runs": {CELL: {}},
}


def make_workspace(directory: Path) -> Path:
    directory.parent.mkdir(parents=True, exist_ok=True)
    params = directory.parent / f"{directory.name}.yaml"
    params.write_text(yaml.safe_dump(TINY))
    ws = workspace.create(directory, params)
    subprocess.run([sys.executable, "-m", "stages.cli", "prepare-tracking"], cwd=ws, check=True, capture_output=True)
    return ws


def dvc_repro(ws: Path, env: dict[str, str] | None = None, kill_after: float | None = None) -> tuple[int, bool]:
    """Run `dvc repro`; with `kill_after`, SIGKILL the stage process running at that moment.
    Returns (exit status, whether a stage was killed)."""
    env = os.environ | {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"} | (env or {})
    env.pop("MLFLOW_TRACKING_URI", None)
    proc = subprocess.Popen([sys.executable, "-m", "dvc", "repro"], cwd=ws, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    killed = False
    if kill_after is not None:
        deadline = time.monotonic() + kill_after
        while proc.poll() is None and not killed:
            time.sleep(0.2)
            stage = _stage_process(proc.pid)
            if stage is not None and time.monotonic() >= deadline:
                os.kill(stage, signal.SIGKILL)
                killed = True
    output = proc.communicate()[0]
    (ws / "repro.log").open("a").write(output)
    return proc.returncode, killed or "-9" in output or "SIGKILL" in output


def _stage_process(dvc_pid: int) -> int | None:
    """The pid of the `stages.cli` process DVC started, if one runs now."""
    import psutil

    try:
        for child in psutil.Process(dvc_pid).children(recursive=True):
            if "stages.cli" in " ".join(child.cmdline()):
                return child.pid
    except psutil.Error:
        return None
    return None


def finish(ws: Path) -> None:
    code, _ = dvc_repro(ws)
    if code != 0:
        raise SystemExit(f"{ws}: dvc repro failed after the kills (exit {code}); see {ws / 'repro.log'}")


# -- what must be identical -------------------------------------------------------------------------

def fingerprint(ws: Path) -> dict[str, str]:
    """A digest per output that must not depend on kills and resumes."""
    import pandas as pd
    import torch

    out = {"labels": _sha(ws / "data" / "labels" / f"{CELL}.parquet")}
    for stage in ("warmup", "train", "finetune"):
        state = torch.load(ws / "data" / "runs" / CELL / stage / "checkpoint.pt", map_location="cpu", weights_only=True)
        # Not the history (it holds wall times) nor the resume fingerprint (it hashes the previous
        # phase's checkpoint file, history and all): everything else, tensors byte for byte.
        kept = {k: v for k, v in state.items() if k not in ("history", "fingerprint")}
        out[f"checkpoint/{stage}"] = _sha_bytes(_tensor_bytes(kept))
    traces = pd.read_parquet(ws / "data" / "runs" / CELL / "train" / "epochs")
    out["traces"] = _sha_bytes(pd.util.hash_pandas_object(traces.drop(columns=["feature"], errors="ignore"))
                               .to_numpy().tobytes())
    out["masks"] = _sha_bytes(traces[["epoch", "index", "in_G", "label"]].to_csv(index=False).encode())
    for name in (f"metrics/{CELL}.json", f"metrics/label_issues/{CELL}.json"):
        out[name] = _sha(ws / name)
    return out


def _tensor_bytes(obj) -> bytes:
    import torch

    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu().contiguous().numpy().tobytes()
    if isinstance(obj, dict):
        return b"".join(str(k).encode() + _tensor_bytes(v) for k, v in sorted(obj.items(), key=lambda kv: str(kv[0])))
    if isinstance(obj, list | tuple):
        return b"".join(_tensor_bytes(v) for v in obj)
    return repr(obj).encode()


def _sha(path: Path) -> str:
    return _sha_bytes(path.read_bytes())


def _sha_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def mlflow_audit(ws: Path) -> dict[str, int]:
    """Parents and stage runs of the cell in the workspace's store."""
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{ws / 'mlflow.db'}")
    exp = client.get_experiment_by_name(TINY["tracking"]["experiment"])
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("mtadcs.role") == "cell"]
    children = [r for r in runs if r.data.tags.get("mtadcs.role") == "stage"]
    per_stage = {s: [r for r in children if r.data.tags.get("mtadcs.stage") == s] for s in STAGES}
    return {"parents": len(parents),
            "lost_runs": sum(not [r for r in rs if r.info.status == "FINISHED"] for rs in per_stage.values()),
            "duplicate_runs": sum(max(0, len(rs) - 1) for rs in per_stage.values()),
            "stuck_runs": sum(r.info.status == "RUNNING" for r in runs)}


# -- the experiment ---------------------------------------------------------------------------------

def plan(kills: int, trials: int, rng: random.Random) -> list[list[dict]]:
    """`kills` kills dealt round-robin to `trials` trials; each a fault point and arrival, or a delay."""
    dealt: list[list[dict]] = [[] for _ in range(trials)]
    for k in range(kills):
        kind = rng.choice([*POINTS, "timed"])
        kill = {"kind": kind, "delay_s": round(rng.uniform(2.0, 25.0), 1)} if kind == "timed" else \
            {"kind": kind, "arrival": rng.randint(1, 3)}
        dealt[k % trials].append(kill)
    return dealt


def run_trial(directory: Path, kills: list[dict], reference: dict[str, str]) -> dict:
    ws = make_workspace(directory)
    started, fired = time.perf_counter(), []
    for kill in kills:
        counter = directory.parent / f"{directory.name}.count"
        counter.unlink(missing_ok=True)
        if kill["kind"] == "timed":
            _, hit = dvc_repro(ws, kill_after=kill["delay_s"])
        else:
            env = {"MTADCS_KILL_AT": f"{kill['kind']}:{kill['arrival']}", "MTADCS_KILL_COUNTER": str(counter)}
            code, _ = dvc_repro(ws, env=env)
            hit = code != 0
        fired.append(kill | {"fired": bool(hit)})
    finish(ws)
    same = fingerprint(ws) == reference
    return {"kills": fired, "identical": same, "wall_s": time.perf_counter() - started, **mlflow_audit(ws)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--trials", type=int, default=5, help="fresh workspaces the kills are spread over")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=Path("fault-injection"), help="scratch directory (wiped)")
    parser.add_argument("--out", type=Path, default=PROJECT / "benchmarks/results/fault_injection.json")
    args = parser.parse_args()
    shutil.rmtree(args.work, ignore_errors=True)
    started = time.perf_counter()
    ref_ws = make_workspace(args.work / "reference")
    finish(ref_ws)
    reference_s = time.perf_counter() - started
    reference = fingerprint(ref_ws)
    rng, trials = random.Random(args.seed), []
    planned = plan(args.kills, args.trials, rng)
    while planned:
        trials.append(run_trial(args.work / f"trial{len(trials)}", planned.pop(0), reference))
        print(json.dumps({"trial": len(trials) - 1, **{k: v for k, v in trials[-1].items() if k != "kills"}}),
              flush=True)
        fired = sum(k["fired"] for t in trials for k in t["kills"])
        if not planned and fired < args.kills and len(trials) < 2 * args.trials:
            # a kill planned after its trial's cell had finished never fired: one more trial makes up the count
            planned = plan(args.kills - fired, 1, rng)
    fired = [k for t in trials for k in t["kills"] if k["fired"]]
    result = {
        "kills": len(fired), "planned_kills": args.kills, "trials": len(trials), "seed": args.seed,
        "identical": sum(k["fired"] for t in trials if t["identical"] for k in t["kills"]),
        "trials_identical": sum(t["identical"] for t in trials),
        "lost_runs": sum(t["lost_runs"] for t in trials), "duplicate_runs": sum(t["duplicate_runs"] for t in trials),
        "stuck_runs": sum(t["stuck_runs"] for t in trials),
        "kills_by_kind": {kind: sum(k["kind"] == kind for k in fired) for kind in (*POINTS, "timed")},
        "reference_wall_s": reference_s,
        "time_lost_s": sum(t["wall_s"] for t in trials) - reference_s * len(trials),
        "per_trial": trials, "command": " ".join(["python", *sys.argv]),
    }
    write_text_atomic(args.out, json.dumps(result, indent=1) + "\n")
    print(f"{result['identical']} of {result['kills']} kills resumed to identical outputs; "
          f"lost {result['lost_runs']}, duplicated {result['duplicate_runs']}, stuck {result['stuck_runs']} MLflow runs; "
          f"{result['time_lost_s']:.0f} s lost to resumes")


if __name__ == "__main__":
    main()
