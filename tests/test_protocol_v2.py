"""benchmarks/protocol_v2.py: the step budget is planned and enforced, the validation split
never touches x_test, and the results table reports the issue's targets."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from tests.fixtures import load_benchmark


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("protocol_v2")


@pytest.fixture(scope="module")
def npz(tmp_path_factory) -> Path:
    rng = np.random.default_rng(0)
    n, m = 400, 50
    path = tmp_path_factory.mktemp("data") / "fake.npz"
    np.savez(path, x_train=rng.integers(0, 255, (n, 8, 8, 3), dtype=np.uint8), y_train=np.arange(n) % 10,
             train_index=np.arange(n) + 7, x_test=np.full((m, 8, 8, 3), 255, dtype=np.uint8),
             y_test=np.arange(m) % 10, test_index=np.arange(m))
    return path


def test_every_method_plans_exactly_the_budget_on_cifar10_5k(bench, npz) -> None:
    for method, override in bench.METHODS.items():
        cell = bench.make_cell(override, method, npz, "sym50")
        assert bench.planned_steps(cell, 5170) == bench.BUDGET == 2000


def test_tuning_trials_plan_the_same_epochs_at_a_share_of_the_steps(bench, npz) -> None:
    cell = bench.make_cell(bench.TRIALS["paper"], "t", npz, "sym50", steps_per_epoch=20)
    assert bench.planned_steps(cell, 4654) == 1000
    assert (cell.optim.epochs, cell.finetune.epochs) == (45, 5)


def test_an_epoch_of_G_cannot_be_planned_and_is_refused(bench, npz) -> None:
    cell = bench.make_cell({}, "g", npz, "sym50")
    cell = cell.model_copy(update={"optim": cell.optim.model_copy(update={"iters_per_epoch": "G"})})
    with pytest.raises(SystemExit, match="no size known in advance"):
        bench.planned_steps(cell, 5170)


def test_a_cell_off_budget_is_refused_before_it_trains(bench, npz, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(bench.engine, "run_warmup", lambda *a, **k: pytest.fail("trained off budget"))
    cell = bench.make_cell({"optim": {"epochs": 44, "lr_milestones": [40]}}, "short", npz, "sym50")
    with pytest.raises(SystemExit, match="budget is 2000"):
        bench.run_cell(cell, tmp_path)


def test_validation_split_holds_out_training_images_only_with_noisy_labels(bench, npz, tmp_path) -> None:
    split = np.load(bench.validation_npz(npz, "sym80", tmp_path))
    source = np.load(npz)
    assert len(split["x_test"]) == 40 and len(split["x_train"]) == 360  # 10 % of each class
    np.testing.assert_array_equal(np.bincount(source["y_train"][np.isin(source["train_index"], split["test_index"])]),
                                  [4] * 10)
    assert sorted([*split["train_index"], *split["test_index"]]) == sorted(source["train_index"])
    assert not (split["x_test"] == 255).all(axis=(1, 2, 3)).any()  # no x_test image
    clean = source["y_train"][np.searchsorted(source["train_index"], split["test_index"])]
    assert (split["y_test"] != clean).mean() > 0.6  # the practitioner's noisy labels (sym 80 %)
    np.testing.assert_array_equal(split["y_train"], source["y_train"][np.isin(source["train_index"],
                                                                                 split["train_index"])])


def _record(method: str, setting: str, top1: float, wall: float) -> dict:
    return {"method": method, "setting": setting, "top1": top1, "top5": 90.0, "knn": top1, "top1_before_finetune": None,
            "G_size": 100, "G_precision": 96.0, "G_recall": 71.0, "steps": 2000, "s_per_step": 0.8, "wall_s": wall,
            "curve": [[40, 10.0], [2000, top1]], "commit": "abc", "command": "python x", "machine": "m"}


def test_table_reports_gaps_wall_ratio_and_missed_targets(bench, tmp_path, monkeypatch) -> None:
    records = [_record("ce", "sym50", 50.0, 1000.0), _record("mtadcs-best", "sym50", 62.5, 1900.0),
               _record("ce", "sym80", 20.0, 1000.0), _record("mtadcs-best", "sym80", 35.0, 2500.0)]
    text = bench.markdown(records)
    assert "| sym50 | 50.0 | 62.5 | +12.5 | +10 | yes | 1.900 | yes |" in text  # 1900 s against CE's 1000 s
    assert "| sym10 | – | – | – | -1 | not run yet |\n" in text  # the seedless targets: no wall target
    assert "| sym80 | 20.0 | 35.0 | +15.0 | +20 | no | 2.500 | no |" in text
    assert "| asym40 | – | – | – | +3 | not run yet | – | – |" in text
    assert "| 2.500 | abc |" in text  # wall / CE at sym 80 %
    elsewhere = [*records[:3], {**records[3], "machine": "faster"}]
    assert "| – | abc |" in bench.markdown(elsewhere)  # CE never timed on that machine: no ratio
    timed = [{"method": "ce", "setting": "sym80", "wall_s": 500.0, "machine": "faster"}]
    assert "| 5.000 | abc |" in bench.markdown(elsewhere, timed)  # 2500 s against CE's 500 s there
    rerun = [*timed, {"method": "mtadcs-best", "setting": "sym80", "wall_s": 900.0, "machine": "faster"}]
    assert "| 1.800 | abc |" in bench.markdown(elsewhere, rerun)  # both rerun there: 900 s against 500 s
    monkeypatch.setattr(bench, "RESULTS", tmp_path / "protocol_v2")
    bench.write_table(records)
    assert (tmp_path / "protocol_v2.png").stat().st_size > 0 and (tmp_path / "protocol_v2.md").exists()


def test_wall_ratio_pairs_one_code_with_one_code_and_a_run_with_its_copies(bench) -> None:
    """A record pairs with CE's wall dated no later on its machine; a rerun with CE's rerun made
    before it there. A copy (`same_run_as`) and the run it copies share their reruns, whichever
    name the rerun was made under (`configuration_of`), and a stale copy's record never wins."""
    day1, day2 = {"machine": "m", "date": "2026-11-30"}, {"machine": "m", "date": "2026-12-01"}
    run = _record("mtadcs-best-v3", "asym40", 66.9, 627.0) | day1
    copy = run | {"method": "mtadcs-best", "same_run_as": "mtadcs-best-v3"}
    older = _record("mtadcs-best-v2", "asym40", 62.4, 738.0) | day1
    timings = [{"method": "ce", "setting": "asym40", "wall_s": 378.0} | day1,
               {"method": "ce", "setting": "asym40", "wall_s": 350.0} | day2,  # faster code
               {"method": "mtadcs-best", "configuration_of": "mtadcs-best-v3", "setting": "asym40",
                "wall_s": 613.0} | day2]
    records = [run, older, copy]
    assert bench.wall_ratio(older, records, timings) == pytest.approx(738 / 378)  # not over the faster CE
    for row in (run, copy):
        assert bench.wall_ratio(row, records, timings) == pytest.approx(613 / 350)
    assert bench.wall_ratio(run, records, timings[:2]) == pytest.approx(627 / 378)  # no rerun: the record
    rerun_first = [timings[2], *timings[:2]]  # a rerun with no CE rerun before it does not count
    assert bench.wall_ratio(run, records, rerun_first) == pytest.approx(627 / 378)
    renamed = [*timings[:2], timings[2] | {"method": "mtadcs-best-v3"}]
    assert bench.wall_ratio(copy, records, renamed) == pytest.approx(613 / 350)
    assert bench.wall_ratio(_record("ce", "asym40", 66.8, 1893.0), records, timings) == 1.0


def test_table_shows_what_each_ablated_switch_adds(bench, monkeypatch) -> None:
    monkeypatch.setattr(bench, "ABLATED", {})  # the four component variants, whatever the tuning picked
    records = [_record(bench.ABLATED_METHOD, "sym50", 60.0, 2000.0),
               _record("ablation:best-without-mixup", "sym50", 57.5, 1900.0),
               _record("ablation:best-without-removal", "sym50", 61.0, 1800.0)]
    text = bench.markdown(records)
    assert f"| {bench.ABLATED_METHOD} (the set ablated) | 60.0 | – |" in text
    assert "| best-without-mixup | 57.5 | +2.5 |" in text  # mixup helps
    assert "| best-without-removal | 61.0 | -1.0 |" in text  # removal hurts
    assert "| best-without-contrastive | not run yet |" in text
    names = [line.split(" | ")[0][2:] for line in text.splitlines() if line.startswith("| best-without-")]
    assert names == list(bench.ablation_variants())  # one row per variant, run or not, in the variants' order
    assert "Ablation" not in bench.markdown(records[:1])  # no ablation cell: no section
    without_best = bench.markdown(records[1:])
    assert f"| {bench.ABLATED_METHOD} (the set ablated) | not run yet |" in without_best
    assert "| best-without-mixup | 57.5 | – |" in without_best


def test_wall_clock_adds_up_the_processes_that_ran_a_cell(bench, tmp_path) -> None:
    first = bench.WallClock(tmp_path)
    first.before = 100.0  # as if it had run 100 s already
    first.save()
    second = bench.WallClock(tmp_path)  # a resumed process
    assert 100.0 <= second.seconds < 110.0


def test_wall_clock_drops_the_seconds_of_a_run_that_was_discarded(bench, tmp_path) -> None:
    first = bench.WallClock(tmp_path, "fingerprint-a")
    first.before = 700.0  # a run killed part-way
    first.save()
    same = bench.WallClock(tmp_path, "fingerprint-a")  # resumes from its checkpoints
    assert same.seconds >= 700.0
    afresh = bench.WallClock(tmp_path, "fingerprint-b")  # code changed: no checkpoint matches
    assert afresh.seconds < 10.0


def test_a_method_with_the_configuration_of_a_finished_cell_reuses_its_run(bench, npz, tmp_path,
                                                                          monkeypatch) -> None:
    monkeypatch.setattr(bench, "RESULTS", tmp_path / "protocol_v2")
    monkeypatch.setitem(bench.METHODS, "mtadcs-best", {})  # the tuning picked the paper's switches
    monkeypatch.setattr(bench, "run_cell", lambda *a, **k: pytest.fail("ran a configuration already run"))
    paper = bench.make_cell(bench.METHODS["mtadcs-paper"], "mtadcs-paper-sym50", npz, "sym50")
    bench.save_records(tmp_path / "protocol_v2.json", [_record("mtadcs-paper", "sym50", 40.0, 10.0)
                                                       | {"config_id": bench.config_id(paper)}])
    args = type("Args", (), {"methods": ["mtadcs-best"], "settings": ["sym50"], "ablation": None, "force": False,
                             "data": npz, "dir": tmp_path})()
    bench.command_run(args)
    records = bench.load_records(tmp_path / "protocol_v2.json")
    assert [(r["method"], r.get("same_run_as")) for r in records] == [("mtadcs-paper", None),
                                                                      ("mtadcs-best", "mtadcs-paper")]


def test_run_refuses_a_request_that_names_no_cell(bench, npz, tmp_path) -> None:
    """`run --methods mtadcs-seedless-v2 --settings sym80` matches nothing in CELLS: say so, not exit 0."""
    args = type("Args", (), {"methods": ["mtadcs-seedless-v2"], "settings": ["sym80"], "ablation": None,
                             "force": False, "data": npz, "dir": tmp_path})()
    with pytest.raises(SystemExit, match="no benchmark cell"):
        bench.command_run(args)


def test_run_ablation_runs_only_the_variants_named(bench, npz, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(bench, "RESULTS", tmp_path / "protocol_v2")
    ran = []

    def fake_run_cell(cell, out, budget=bench.BUDGET):
        ran.append(cell.name)
        result = _record("unused", "sym50", 50.0, 1.0)
        return {k: v for k, v in result.items() if k not in ("method", "setting")}

    monkeypatch.setattr(bench, "run_cell", fake_run_cell)
    monkeypatch.setattr(bench, "provenance", lambda: {"command": "c", "commit": "abc", "machine": "m", "date": "d"})
    args = type("Args", (), {"methods": ["ce"], "settings": ["sym80"], "ablation": ["best-without-removal"],
                             "force": False, "data": npz, "dir": tmp_path})()
    monkeypatch.setattr(bench, "CELLS", [])  # no method cell: only the ablation one
    bench.command_run(args)
    assert ran == ["ablation-best-without-removal-sym50"]
    args.ablation = ["best-without-everything"]
    with pytest.raises(SystemExit, match="unknown ablation variants"):
        bench.command_run(args)


def test_ablation_turns_back_each_switch_of_the_best_set_and_skips_components_it_has_off(bench, monkeypatch) -> None:
    monkeypatch.setattr(bench, "ABLATED", {"method": {"label_correction": False, "selection_model": "ema"}})
    variants = bench.ablation_variants()
    assert variants["best-with-paper-label_correction"] == {"method": {"selection_model": "ema"}}
    assert variants["best-with-paper-selection_model"] == {"method": {"label_correction": False}}
    assert "best-without-label_correction" not in variants  # already off: it would be the best set itself
    assert variants["best-without-removal"] == {"method": {"label_correction": False, "selection_model": "ema",
                                                           "removal": False}}


def test_a_record_names_the_directory_of_the_run_it_reports(bench) -> None:
    own = {"method": "ce", "setting": "sym50"}
    shared = {"method": "mtadcs-best", "setting": "sym80", "same_run_as": "mtadcs-paper"}
    adopted = {"method": "mtadcs-best", "setting": "sym50", "ran_as": "ablation:best-without-label_correction"}
    assert bench.run_dir_name(own) == "ce-sym50"
    assert bench.run_dir_name(shared) == "mtadcs-paper-sym80"
    assert bench.run_dir_name(adopted) == "ablation-best-without-label_correction-sym50"


def test_a_record_hashed_before_a_field_was_added_is_the_same_configuration_and_only_that(bench, npz) -> None:
    """The paper's cell ran before removal_max_prob existed: its config_id lacks the field."""
    paper = bench.make_cell(bench.METHODS["mtadcs-paper"], "mtadcs-paper-sym50", npz, "sym50")
    dump = paper.model_dump(mode="json", exclude={"name"})
    del dump["method"]["removal_max_prob"]
    dump["runtime"]["eval_batch_size"] = 512  # as it was then
    older = {"method": "mtadcs-paper", "setting": "sym50", "config_id": bench._digest(dump)}
    assert older["config_id"] != bench.config_id(paper)
    assert bench.same_configuration(older, paper)
    ceiling = bench.make_cell({"method": {"removal_max_prob": 0.05}}, "p05-sym50", npz, "sym50")
    assert not bench.same_configuration(older, ceiling)  # the field set otherwise: no older record ran it
    assert not bench.same_configuration(older, bench.make_cell(bench.METHODS["mtadcs-paper"], "mtadcs-paper-sym80", npz, "sym80"))
    assert not bench.same_configuration(older, bench.make_cell({"method": {"mixup": False}}, "m-sym50", npz, "sym50"))


def test_a_record_hashed_with_the_old_extraction_batch_is_the_same_configuration(bench, npz) -> None:
    """Records made before eval_batch_size left the id were hashed with its old value, 512."""
    paper = bench.make_cell(bench.METHODS["mtadcs-paper"], "mtadcs-paper-sym50", npz, "sym50")
    dump = paper.model_dump(mode="json", exclude={"name"})
    assert dump["runtime"]["eval_batch_size"] == "auto"
    dump["runtime"]["eval_batch_size"] = 512
    older = {"method": "mtadcs-paper", "setting": "sym50", "config_id": bench._digest(dump)}
    assert bench.same_configuration(older, paper)
    dump["runtime"]["eval_batch_size"] = 100
    assert not bench.same_configuration(older | {"config_id": bench._digest(dump)}, paper)
    faster = bench.make_cell(merge_runtime(bench.METHODS["mtadcs-paper"], {"eval_batch_size": 32}), "p-sym50", npz, "sym50")
    assert bench.config_id(faster) == bench.config_id(paper)  # how it runs, not what it computes


def merge_runtime(sections: dict, runtime: dict) -> dict:
    return {**sections, "runtime": {**sections.get("runtime", {}), **runtime}}


# The config fields the oldest records in protocol_v2.json were hashed over (83 of them), as a
# digest of their sorted "section.key" names.
RECORDED_SCHEMA_DIGEST = "0bd50bd2091fc73a"


def test_a_renamed_run_directory_still_names_the_cell_its_files_are_named_after(bench, tmp_path) -> None:
    renamed = tmp_path / "mtadcs-best-v3-sym50"
    (renamed / "data" / "labels").mkdir(parents=True)
    with pytest.raises(SystemExit, match="expected one label file"):
        bench.cell_name_in(renamed)
    (renamed / "data" / "labels" / "mtadcs-best-sym50.parquet").touch()
    assert bench.cell_name_in(renamed) == "mtadcs-best-sym50"


def test_a_config_field_added_since_the_records_were_made_is_listed_in_added_fields(bench, npz) -> None:
    """A field missing from ADDED_FIELDS makes every record another configuration than its cell
    (label_issues.py then refuses them, and `run` would retrain what was already measured)."""
    dump = bench.make_cell(bench.METHODS["mtadcs-paper"], "mtadcs-paper-sym50", npz, "sym50").model_dump(mode="json", exclude={"name"})
    fields = sorted(f"{section}.{key}" for section, values in dump.items() for key in values
                    if (section, key) not in bench.ADDED_FIELDS)  # the run-only fields were hashed too
    digest = hashlib.sha256(" ".join(fields).encode()).hexdigest()[:16]
    assert digest == RECORDED_SCHEMA_DIGEST, (
        "the config schema has a field the records were not hashed over: add it to ADDED_FIELDS in "
        "benchmarks/protocol_v2.py with the value that does what the code did before it")


def test_a_reused_result_is_taken_from_a_run_of_its_own_and_names_that_runs_directory(bench, npz, tmp_path,
                                                                                       monkeypatch) -> None:
    monkeypatch.setattr(bench, "RESULTS", tmp_path / "protocol_v2")
    monkeypatch.setattr(bench, "run_cell", lambda *a, **k: pytest.fail("ran a configuration already run"))
    monkeypatch.setitem(bench.METHODS, "mtadcs-other", bench.METHODS["mtadcs-best"])  # copied a run since rerun with --force
    best = bench.make_cell(bench.METHODS["mtadcs-best"], "mtadcs-best-sym50", npz, "sym50")
    original = _record("ablation:best-without-removal", "sym50", 67.0, 10.0) | {"config_id": bench.config_id(best)}
    stale_copy = _record("mtadcs-other", "sym50", 60.0, 10.0) | {"config_id": bench.config_id(best),
                                                                "same_run_as": "mtadcs-gone"}
    bench.save_records(tmp_path / "protocol_v2.json", [stale_copy, original])
    args = type("Args", (), {"methods": ["mtadcs-best"], "settings": ["sym50"], "ablation": None, "force": False,
                             "data": npz, "dir": tmp_path})()
    bench.command_run(args)
    reused = next(r for r in bench.load_records(tmp_path / "protocol_v2.json") if r["method"] == "mtadcs-best")
    assert (reused["top1"], reused["same_run_as"]) == (67.0, "ablation:best-without-removal")
    assert bench.run_dir_name(reused) == "ablation-best-without-removal-sym50"


def test_a_timing_names_the_run_whose_configuration_it_times(bench, npz, tmp_path, monkeypatch) -> None:
    """`time` of mtadcs-best, whose record is a copy of another run, is a timing of that run."""
    monkeypatch.setattr(bench, "RESULTS", tmp_path / "protocol_v2")
    result = {"wall_s": 5.0, "s_per_step": 0.1, "steps": 2000, "top1": 50.0}
    monkeypatch.setattr(bench, "run_cell", lambda *a, **k: result)
    best = bench.make_cell(bench.METHODS["mtadcs-best"], "mtadcs-best-sym50", npz, "sym50")
    run = _record("mtadcs-best-v3", "sym50", 67.0, 10.0) | {"config_id": bench.config_id(best)}
    copy = run | {"method": "mtadcs-best", "same_run_as": "mtadcs-best-v3"}
    bench.save_records(tmp_path / "protocol_v2.json", [copy, run])
    args = type("Args", (), {"methods": ["mtadcs-best", "ce"], "settings": ["sym50"], "data": npz, "dir": tmp_path})()
    bench.command_time(args)
    lines = bench.load_timings()
    assert [(t["method"], t["configuration_of"]) for t in lines] == [("mtadcs-best", "mtadcs-best-v3"), ("ce", "ce")]


def test_a_tuning_trial_at_another_budget_is_another_record(bench, npz, tmp_path, monkeypatch) -> None:
    """A trial run at half budget does not stand for the same switch set at the whole budget:
    both run (in directories of their own) and both records are kept."""
    monkeypatch.setattr(bench, "RESULTS", tmp_path / "protocol_v2")
    ran: list[str] = []

    def fake_run(cell, out, budget):
        ran.append(out.name)
        return {"top1": 30.0, "top1_before_finetune": 29.0, "G_size": 1, "G_precision": 1.0, "G_recall": 1.0,
                "steps": budget, "s_per_step": 0.1, "wall_s": 1.0, "curve": [[budget, 30.0]]}

    monkeypatch.setattr(bench, "run_cell", fake_run)
    for fraction in (0.5, 1.0, 0.5):  # the last one is finished already: skipped
        args = type("Args", (), {"trials": ["paper"], "setting": "sym50", "budget_fraction": fraction, "force": False,
                                 "data": npz, "dir": tmp_path, "mlflow_uri": f"sqlite:///{tmp_path / 'm.db'}"})()
        bench.command_tune(args)
    assert ran == ["tune-paper-sym50-20spe", "tune-paper-sym50-40spe"]
    lines = (tmp_path / "protocol_v2_tuning.jsonl").read_text().splitlines()
    assert sorted(json.loads(line)["steps_per_epoch"] for line in lines) == [20, 40]


def test_time_reruns_a_cell_for_its_wall_time_only(bench, npz, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(bench, "RESULTS", tmp_path / "protocol_v2")
    bench.save_records(tmp_path / "protocol_v2.json", [_record("ce", "sym50", 50.9, 1742.0)])
    monkeypatch.setattr(bench, "run_cell", lambda cell, out, budget=2000: {"wall_s": 364.0, "s_per_step": 0.16,
                                                                           "steps": 2000, "top1": 52.6})
    args = type("Args", (), {"methods": ["ce"], "settings": ["sym50"], "data": npz, "dir": tmp_path})()
    bench.command_time(args)
    bench.command_time(args)
    lines = [json.loads(line) for line in (tmp_path / "protocol_v2_timing.jsonl").read_text().splitlines()]
    assert [(t["method"], t["wall_s"]) for t in lines] == [("ce", 364.0)] * 2  # appended, both kept
    assert bench.load_records(tmp_path / "protocol_v2.json")[0]["wall_s"] == 1742.0  # the record is untouched


def test_the_oracle_diagnosis_reads_the_validation_images_clean_labels_in_their_order(bench, npz, tmp_path) -> None:
    oracle = load_benchmark("oracle_validation")
    split = np.load(bench.validation_npz(npz, "asym40", tmp_path))
    source = np.load(npz)
    clean = source["y_train"][np.searchsorted(source["train_index"], split["test_index"])]
    np.testing.assert_array_equal(oracle.held_out_clean_labels(npz), clean)
    assert oracle.trial_of("tune-ce-asym40", "asym40") == ("ce", 20)
    assert oracle.trial_of("tune-paper-no-lc-sure-adjusted-sym50-40spe", "sym50") == ("paper-no-lc-sure-adjusted", 40)
