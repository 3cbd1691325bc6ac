"""Tests of the report: the paper's tables beside ours, the row mapping, and Figures 4 and 5."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from pipeline.config import (
    CROSS_ENTROPY,
    FULL,
    MIXUP,
    SWITCHES,
    CellIdentity,
    cell_identity,
    parse_params,
    resolve_cell,
    row_name,
)
from pipeline.data import trace_store
from pipeline.layout import NOT_RUN
from pipeline.report import write_report
from pipeline.report.figure_cells import FigureCells, default_figure_cells
from pipeline.report.inputs import CellResult, load_cell_metrics, load_cells, load_paper_tables
from pipeline.report.markdown import markdown_table
from pipeline.report.placement import placements
from pipeline.report.tables import (
    NOT_FINETUNED,
    TABLE3_NAMES,
    cells_table,
    project_table,
    table1,
    table2a,
    table2b,
    table3,
)
from pipeline.report.trace_stats import (
    CATEGORIES,
    CLEAN_EASY,
    CLEAN_HARD,
    MISLABELED_EASY,
    MISLABELED_HARD,
    UNCLASSIFIED,
    categorise,
    category_distances,
    choose_epochs,
    occurrence_threshold,
    selection_counts,
)
from stages import report as report_stage

ALL_ON = dict.fromkeys(SWITCHES, True)
ALL_OFF = dict.fromkeys(SWITCHES, False)
C10_SYM50 = "CIFAR-10 sym 50%"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def switches(*on: str) -> dict[str, bool]:
    return {k: k in on for k in SWITCHES}


def identity(sw: dict, *, dataset: str = "cifar10", noise: str = "sym", rate: float = 0.5) -> CellIdentity:
    return CellIdentity(dataset=dataset, noise=noise, rate=rate, convention="any", switches=sw)


def from_params(**sections) -> CellIdentity:
    """A cell's identity as the report stage resolves it from params.yaml's `runs:` entry."""
    return cell_identity(resolve_cell(parse_params({"runs": {"cell": sections}}), "cell"))


def done(cell: str, sw: dict, top1: float, *, dataset: str = "cifar10", noise: str = "sym", rate: float = 0.5,
         finetune: float | None = None) -> CellResult:
    """A finished cell: its identity, and its metrics JSON as the evaluate stage writes it."""
    ident = identity(sw, dataset=dataset, noise=noise, rate=rate)
    return CellResult(ident, {"cell": cell} | ident.as_dict() | {
        "status": "done", "realised_rate": rate * 0.9,
        "train": {"test/top1": top1, "test/top5": 97.1, "test/knn": top1 - 1.0},
        "finetune": None if finetune is None else {"test/top1": finetune, "test/top5": 97.3, "test/knn": 70.5},
        "G": {"size": 2300, "precision": 97.5, "recall": 80.1}, "knn_labels": "clean",
    })


def not_run(cell: str, ident: CellIdentity, reason: str) -> CellResult:
    """A cell that could not run, with the metrics JSON the evaluate stage then writes."""
    return CellResult(ident, {"cell": cell} | ident.as_dict() | {"status": NOT_RUN, "reason": reason})


def write_metrics(folder: Path, cells: dict[str, CellResult]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for cell, result in cells.items():
        (folder / f"{cell}.json").write_text(json.dumps(result.metrics))


def grid() -> dict[str, CellResult]:
    """One cell of every kind the report must place (the missing c100-sym50 has no file)."""
    cells = [
        done("c10-sym50", ALL_ON, 71.2, finetune=72.0),
        done("c10-sym20", ALL_ON, 80.04, rate=0.2, finetune=81.0),
        done("c10-sym50-none", ALL_OFF, 50.0),
        done("c10-sym50-mx", switches("mixup"), 55.5),
        done("c10-sym50-lof", switches("lof"), 60.0),
        done("c10-sym50-lof-cs", switches("lof", "confidence_set"), 65.0),
        done("c10-sym50-lof-cl", switches("lof", "contrastive"), 61.0),
        done("c10-sym50-seed1", ALL_ON, 70.0, finetune=71.0),  # second cell for a taken slot
        done("digits-sym40", ALL_ON, 88.8, dataset="digits", rate=0.4),
        not_run("webvision50", from_params(data={"dataset": "webvision50"}, noise={"kind": "none"}),
                "data.path not set"),
    ]
    return {result.metrics["cell"]: result for result in cells}


OPTIM = {"epochs": 14, "warmup_epochs": 2, "lr_milestones": [7, 11], "lr": 0.1}
PARAMS = {"c100-sym50": {"data": {"dataset": "cifar100"}, "noise": {"kind": "sym", "rate": 0.5},
                         "method": ALL_ON, "optim": OPTIM},
          "c10-sym50": {"data": {"dataset": "cifar10"}, "noise": {"kind": "sym", "rate": 0.5},
                        "method": ALL_ON, "optim": OPTIM}}
# Every cell's identity as the stage passes it; c100-sym50 never ran, so only params place it.
IDENTITIES = {cell: result.identity for cell, result in grid().items()} | {
    "c100-sym50": from_params(**PARAMS["c100-sym50"])}
CELLS = list(IDENTITIES)


@pytest.fixture(scope="module")
def paper() -> pd.DataFrame:
    return load_paper_tables()


@pytest.fixture(scope="module")
def loaded(tmp_path_factory) -> dict[str, CellResult]:
    folder = tmp_path_factory.mktemp("metrics")
    write_metrics(folder, grid())
    return load_cells(folder, IDENTITIES)


def row(frame: pd.DataFrame, name: str) -> pd.Series:
    hits = frame[frame["row"] == name]
    assert len(hits) == 1, f"{name!r} in {list(frame['row'])}"
    return hits.iloc[0]


# --------------------------------------------------------------------------- inputs and mapping

def test_paper_tables_ship_with_the_package(paper):
    assert len(paper) == 233
    t1 = paper[(paper.table == "table1") & (paper.method == "MTaDCS")]
    assert t1[(t1.dataset == "cifar10") & (t1.noise == "sym") & (t1.rate == 0.5)]["value"].item() == 95.4
    shared = Path(__file__).resolve().parents[2] / "shared" / "paper" / "paper_tables.csv"
    if shared.exists():
        pd.testing.assert_frame_equal(paper, pd.read_csv(shared), check_dtype=False)


@pytest.mark.parametrize(("on", "name"), [
    (tuple(SWITCHES), FULL), ((), CROSS_ENTROPY), (("mixup",), MIXUP), (("lof",), "LOF"),
    (("lof", "confidence_set"), "LOF+CS"), (("lof", "confidence_set", "removal"), "LOF+CS+SR"),
    (("lof", "confidence_set", "removal", "contrastive"), "LOF+CS+SR+CL"),
    (("lof", "confidence_set", "removal", "contrastive", "mixup"), "LOF+CS+SR+CL+Mixup"),
    (("contrastive", "lof"), "LOF+CL"),  # the paper's order, whatever the dict's
])
def test_row_name(on, name):
    assert row_name(switches(*on)) == name
    assert identity(switches(*on)).row == name


def test_table3_row_names_are_the_papers(paper):
    methods = set(paper.loc[paper.table == "table3", "method"])
    ablation = ["lof", "confidence_set", "removal", "contrastive", "mixup"]
    for n in range(1, 6):
        assert row_name(switches(*ablation[:n])) in methods
    assert TABLE3_NAMES[FULL] in methods and TABLE3_NAMES[CROSS_ENTROPY] in methods


def test_missing_metrics_file_is_not_run(tmp_path):
    got = load_cell_metrics(tmp_path, ["c10-sym90"])
    assert got == {"c10-sym90": {"cell": "c10-sym90", "status": NOT_RUN, "reason": "no metrics file"}}


def test_identity_comes_from_params_not_the_metrics_json(tmp_path, paper):
    """Placement reads only the identity resolved from params.yaml: a metrics JSON that
    contradicts it, or lacks it, supplies the numbers and nothing else."""
    lying = done("c10-sym50", ALL_ON, 71.2)
    lying = CellResult(lying.identity, lying.metrics | {"dataset": "cifar100", "noise": "sym", "rate": 0.9,
                                                        "switches": ALL_OFF, "row": CROSS_ENTROPY})
    bare = done("c10-sym20", ALL_ON, 80.04, rate=0.2)
    bare = CellResult(bare.identity, {k: bare.metrics[k] for k in ("status", "train", "finetune", "G")})
    write_metrics(tmp_path, {"c10-sym50": lying, "c10-sym20": bare})
    cells = load_cells(tmp_path, {"c10-sym50": lying.identity, "c10-sym20": bare.identity})
    t = table1(cells, paper)
    assert row(t, "MTaDCS (ours)")[C10_SYM50] == 71.2
    assert row(t, "MTaDCS (ours)")["CIFAR-10 sym 20%"] == 80.0
    assert math.isnan(row(t, "MTaDCS (ours)")["CIFAR-100 sym 90%"])  # where the JSON claims to be
    assert not (t["row"] == "Cross-Entropy (ours)").any()
    assert t.attrs["cells"] == {"MTaDCS (ours)": ["c10-sym50", "c10-sym20"]}
    every = cells_table(cells, paper).set_index("cell")
    assert list(every.loc["c10-sym50", ["dataset", "noise", "rate", "row"]]) == ["cifar10", "sym", "50%", FULL]
    assert list(every.loc["c10-sym20", ["dataset", "noise", "rate", "row"]]) == ["cifar10", "sym", "20%", FULL]


def test_report_stage_places_cells_by_their_resolved_params(tmp_path):
    """The stage resolves every cell of params.yaml and hands the report those identities: a cell
    whose metrics JSON says otherwise, or that has none, lands where params.yaml puts it."""
    params = {"data": {"dataset": "cifar10"}, "optim": OPTIM, "tracking": {"enabled": False},
              "runs": {"c10-sym50": {"noise": {"kind": "sym", "rate": 0.5}},
                       "c100-sym50-none": {"data": {"dataset": "cifar100"}, "noise": {"kind": "sym", "rate": 0.5},
                                           "method": ALL_OFF}}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    liar = done("c10-sym50", ALL_OFF, 71.2, dataset="digits", rate=0.4)  # its JSON contradicts params.yaml
    write_metrics(tmp_path / "metrics", {"c10-sym50": liar})
    written = report_stage.run(tmp_path, Path("params.yaml"))
    assert written and all(p.exists() for p in written)
    t1 = pd.read_csv(tmp_path / "reports" / "table1.csv")
    assert float(row(t1, "MTaDCS (ours)")[C10_SYM50]) == 71.2
    assert row(t1, "Cross-Entropy (ours)")["CIFAR-100 sym 50%"] == NOT_RUN  # no metrics file: placed from params
    assert math.isnan(float(row(t1, "Cross-Entropy (ours)")[C10_SYM50]))  # not where the JSON's switches say
    every = pd.read_csv(tmp_path / "reports" / "cells.csv").set_index("cell")
    assert list(every.loc["c10-sym50", ["dataset", "noise", "rate", "row"]]) == ["cifar10", "sym", "50%", FULL]
    assert every.loc["c100-sym50-none", "status"] == "not run: no metrics file"
    assert every.loc["c100-sym50-none", "row"] == CROSS_ENTROPY
    assert "`optim.epochs` = 14" in (tmp_path / "reports" / "report.md").read_text()


# --------------------------------------------------------------------------- tables

def test_table1_ours_paper_and_difference(loaded, paper):
    t = table1(loaded, paper)
    assert row(t, "MTaDCS (ours)")[C10_SYM50] == 71.2
    assert row(t, "MTaDCS (paper)")[C10_SYM50] == 95.4
    assert row(t, "Δ MTaDCS")[C10_SYM50] == -24.2
    assert row(t, "MTaDCS (ours)")["CIFAR-10 sym 20%"] == 80.0  # rounded to the paper's 0.1
    assert row(t, "Δ MTaDCS")["CIFAR-10 sym 20%"] == -15.9
    assert row(t, "Cross-Entropy (ours)")[C10_SYM50] == 50.0
    assert row(t, "Δ Cross-Entropy")[C10_SYM50] == -7.9
    assert row(t, "Δ Mixup")[C10_SYM50] == -22.1
    assert row(t, "MTaDCS (ours)")["CIFAR-100 sym 50%"] == NOT_RUN  # placed by its identity alone
    assert math.isnan(row(t, "MTaDCS (ours)")["CIFAR-10 sym 80%"])  # no cell there
    assert math.isnan(row(t, "MTaDCS (ours)")["CIFAR-10 avg"])  # not every column ran
    assert row(t, "TCL")["CIFAR-100 sym 90%"] == 54.5  # the paper's whole table for context
    assert t.attrs["cells"]["MTaDCS (ours)"] == ["c10-sym50", "c10-sym20", "c100-sym50"]


def test_table1_average_needs_every_column(paper):
    tops = {"c10-sym20": (0.2, 90.0), "c10-sym50": (0.5, 91.0), "c10-sym80": (0.8, 92.0), "c10-sym90": (0.9, 93.0)}
    cells = {c: done(c, ALL_ON, v, rate=r) for c, (r, v) in tops.items()}
    cells["c10-asym40"] = done("c10-asym40", ALL_ON, 94.0, noise="asym", rate=0.4)
    t = table1(cells, paper)
    assert row(t, "MTaDCS (ours)")["CIFAR-10 avg"] == 92.0
    assert row(t, "Δ MTaDCS")["CIFAR-10 avg"] == -1.5
    assert row(t, "Δ MTaDCS")["CIFAR-10 asym 40%"] == pytest.approx(-0.2)


def test_table2a_is_after_finetuning(loaded, paper):
    t = table2a(loaded, paper)
    assert row(t, "MTaDCS+ (ours)")[C10_SYM50] == 72.0
    assert row(t, "MTaDCS+ (paper)")[C10_SYM50] == 95.5
    assert row(t, "Δ MTaDCS+")[C10_SYM50] == -23.5
    assert not (t["row"] == "Cross-Entropy (ours)").any()


def test_table2b_shows_webvision_not_run(loaded, paper):
    t = table2b(loaded, paper)
    labels = ["WebVision top-1", "WebVision top-5", "ILSVRC12 top-1", "ILSVRC12 top-5"]
    assert list(t.columns[2:]) == labels
    for name in ("MTaDCS (ours)", "MTaDCS+ (ours)"):
        assert list(row(t, name)[labels]) == [NOT_RUN] * 4
    assert row(t, "MTaDCS (paper)")["ILSVRC12 top-1"] == 76.2
    assert math.isnan(row(t, "Δ MTaDCS")["ILSVRC12 top-1"])
    ours = list(t.loc[t["section"] == "ours vs paper", "row"])
    assert ours == ["MTaDCS (ours)", "MTaDCS+ (ours)", "MTaDCS (paper)", "Δ MTaDCS", "Δ MTaDCS+"]


def test_table2b_reads_the_webvision_test_sets(paper):
    m = done("wv", ALL_ON, 0.0, dataset="webvision50", noise="none")
    m = CellResult(m.identity, m.metrics | {"train": {"webvision_val/top1": 70.0, "webvision_val/top5": 90.0,
                                                      "ilsvrc12_val/top1": 66.2, "ilsvrc12_val/top5": 88.0}})
    t = table2b({"wv": m}, paper)
    assert row(t, "Δ MTaDCS")["ILSVRC12 top-1"] == -10.0
    assert row(t, "MTaDCS+ (ours)")["WebVision top-1"] == NOT_FINETUNED


def test_table3_ablation_rows(loaded, paper):
    t = table3(loaded, paper)
    assert row(t, "none (ours)")[C10_SYM50] == 50.0
    assert row(t, "Δ none")[C10_SYM50] == -9.1  # Table 3's CE number, not Table 1's
    assert row(t, "Δ LOF")[C10_SYM50] == -23.2
    assert row(t, "Δ LOF+CS")[C10_SYM50] == -25.9
    assert row(t, "Δ LOF+CS+SR+CL+Mixup+LC (full)")[C10_SYM50] == -24.2
    assert row(t, "LOF+CL (ours)")[C10_SYM50] == 61.0  # no paper row: shown alone
    assert not (t["row"] == "Δ LOF+CL").any()
    ours = list(t.loc[t["section"] == "ours vs paper", "row"])
    assert ours.index("none (ours)") < ours.index("LOF (ours)") < ours.index("LOF+CL (ours)")


def test_every_cell_is_shown_somewhere(loaded, paper):
    placed = placements(loaded, paper)
    project = project_table(loaded, paper)
    assert set(project["cell"]) == {"digits-sym40", "c10-sym50-seed1"}
    assert placed["table1"]["c10-sym50"] == FULL  # the first cell keeps the slot
    shown = set().union(*placed.values()) | set(project["cell"])
    assert shown == set(CELLS)
    digits = project.set_index("cell").loc["digits-sym40"]
    assert (digits["top1"], digits["|G|"], digits["rate"], digits["row"]) == (88.8, 2300, "40%", FULL)


def test_cells_table_reports_why_not_run(loaded, paper):
    cells = cells_table(loaded, paper).set_index("cell")
    assert cells.loc["webvision50", "status"] == "not run: data.path not set"
    assert cells.loc["webvision50", "tables"] == "table2b"
    assert cells.loc["c10-sym50-none", "finetuned top1"] == NOT_FINETUNED
    assert cells.loc["c10-sym50", "tables"] == "table1, table2a, table3"


def test_markdown_signs_differences_and_dashes_gaps():
    frame = pd.DataFrame([{"row": "A (ours)", "x": 1.25, "y": math.nan}, {"row": "Δ A", "x": -2.0, "y": 3.0}],
                         dtype=object)
    assert markdown_table(frame).splitlines()[2:] == ["| A (ours) | 1.2 | — |", "| Δ A | -2.0 | +3.0 |"]


# --------------------------------------------------------------------------- Figure 5b categories

def hand_built() -> tuple[pd.DataFrame, pd.Series]:
    """Ten epochs; sample i is in G in the first n_G[i] of them. Labels: 0 correct, 1 wrong."""
    n_g = {0: 10, 1: 0, 2: 6, 3: 4, 4: 2, 5: 8, 6: 5, 7: 5, 8: 10, 9: 1}
    clean = pd.Series({0: 0, 1: 0, 2: 0, 3: 0, 4: 0, 5: 0, 6: 0, 7: 0, 8: 0, 9: pd.NA}, dtype="Int64")
    given = {0: 0, 1: 1, 2: 0, 3: 1, 4: 0, 5: 1, 6: 0, 7: 1, 8: 1, 9: 1}
    rows = [{"epoch": e, "index": i, "given_label": given[i], "in_G": e < n_g[i],
             "dist_to_class_centre": float(i + e)} for e in range(10) for i in n_g]
    return pd.DataFrame(rows), clean


def test_categorise_hand_built_example():
    traces, clean = hand_built()
    got = categorise(traces, clean, threshold=3)
    assert got.to_dict() == {
        0: CLEAN_EASY,  # correct, never in Ḡ
        1: MISLABELED_EASY,  # wrong, never in G
        2: CLEAN_HARD,  # correct, 4 times in Ḡ (>= 3) but 6 in G
        3: MISLABELED_HARD,  # wrong, 4 times in G (>= 3) but 6 in Ḡ
        4: UNCLASSIFIED,  # correct but mostly in Ḡ
        5: UNCLASSIFIED,  # wrong but mostly in G (8 of 10)
        6: UNCLASSIFIED,  # correct, a tie
        7: UNCLASSIFIED,  # wrong, a tie
        8: UNCLASSIFIED,  # wrong, always in G
    }  # 9 has no clean label: left out


def test_categorise_scales_the_threshold_to_the_run():
    assert [occurrence_threshold(n) for n in (240, 120, 48, 12, 1)] == [10, 5, 2, 1, 1]
    traces, clean = hand_built()  # 10 epochs: k = 1, so "easy" means never in the other set
    got = categorise(traces, clean)
    assert got[9 - 1] == UNCLASSIFIED and got[2] == CLEAN_HARD and got[4] == UNCLASSIFIED


def test_category_distances_are_means_per_epoch():
    traces, clean = hand_built()
    cats = categorise(traces, clean, threshold=3)
    d = category_distances(traces, cats)
    assert list(d.columns) == list(CATEGORIES)
    assert d.loc[4, CLEAN_EASY] == 4.0 and d.loc[4, MISLABELED_HARD] == 7.0
    assert list(d.index) == list(range(10))


def test_default_figure_cells_follow_the_paper(loaded):
    chosen = default_figure_cells(loaded)
    assert chosen == FigureCells("c10-sym50-lof", "c10-sym50-lof-cs", ("c10-sym20",), "c10-sym50")
    assert default_figure_cells(loaded, "digits-sym40").fig5b == "digits-sym40"


def test_choose_epochs_like_the_paper():
    assert choose_epochs(range(11, 251)) == [30, 125, 250]
    assert choose_epochs(range(2, 14)) == [2, 6, 13]
    assert choose_epochs([]) == []


def test_selection_counts():
    traces, _ = hand_built()
    counts = selection_counts(traces, [0, 9])
    assert counts.loc[0, 0] == 1 and counts.loc[1, 0] == 9  # at epoch 0 only sample 1 is outside G
    assert counts[9].sum() == 10 and counts.loc[10, 9] == 2 and counts.loc[5, 9] == 2


# --------------------------------------------------------------------------- the whole report

N, K, T_P, T_MAX = 300, 10, 2, 13


def write_traces(root: Path, given: np.ndarray, clean: np.ndarray, *, keep: bool, seed: int) -> Path:
    """Epochs T_P..T_MAX in the real format: G grows (keep) or is redrawn each epoch (LOF alone)."""
    rng = np.random.default_rng(seed)
    correct = given == clean
    in_g = np.zeros(N, dtype=bool)
    for t, epoch in enumerate(range(T_P, T_MAX + 1)):
        draw = rng.random(N) < np.where(correct, 0.25, 0.03)
        in_g = (in_g | draw) if keep else draw
        dist = np.where(correct, 1.0 - 0.05 * t, 0.8 + 0.03 * t) + rng.normal(0, 0.02, N)
        trace_store.write_epoch(root, epoch, {
            "index": np.arange(N), "given_label": given, "label": given, "pred": clean, "in_G": in_g.copy(),
            "lof_score": np.where(draw, 1.0, np.nan), "selected": draw, "removed": np.zeros(N, bool),
            "flipped": np.zeros(N, bool), "dist_to_class_centre": dist.astype(np.float32)})
    return root


def history(g0: int, slope: float) -> pd.DataFrame:
    rows = [{"phase": "warmup", "epoch": e, "lr": 0.1, "loss": 1.0, "G_size": g0, "G_precision": 100.0}
            for e in range(1, T_P)]
    rows += [{"phase": "train", "epoch": e, "lr": 0.1, "loss": 1.0, "G_size": g0 + slope * (e - T_P + 1),
              "G_precision": 99.0 - 0.4 * (e - T_P), "G_recall": 50.0} for e in range(T_P, T_MAX + 1)]
    rows += [{"phase": "finetune", "epoch": e, "lr": 0.001, "loss": 0.5} for e in range(1, 4)]
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> tuple[Path, list[Path]]:
    base = tmp_path_factory.mktemp("project")
    write_metrics(base / "metrics", grid())
    rng = np.random.default_rng(0)
    clean = rng.integers(0, K, N)
    given = np.where(rng.random(N) < 0.5, rng.integers(0, K, N), clean)
    traces = {c: write_traces(base / "runs" / c / "train" / "epochs", given, clean, keep=c != "c10-sym50-lof", seed=i)
              for i, c in enumerate(["c10-sym50", "c10-sym50-lof", "c10-sym50-lof-cs"])}
    labels = base / "labels" / "c10-sym50.parquet"
    labels.parent.mkdir()
    pd.DataFrame({"index": np.arange(N), "clean_label": pd.array(clean, dtype="Int64"), "noisy_label": given,
                  "is_noisy": given != clean, "in_initial_confidence_set": False}).to_parquet(labels)
    histories = {}
    for cell, (g0, slope) in {"c10-sym20": (200, 60), "c10-sym50": (200, 30)}.items():
        histories[cell] = base / "plots" / f"{cell}.csv"
        histories[cell].parent.mkdir(exist_ok=True)
        history(g0, slope).to_csv(histories[cell], index=False)
    out = base / "reports"
    figures = FigureCells("c10-sym50-lof", "c10-sym50-lof-cs", ("c10-sym20", "c10-sym50"), "c10-sym50")
    paths = write_report(base / "metrics", IDENTITIES, out, settings=PARAMS, traces_for=traces,
                         labels_for={"c10-sym50": labels}, histories_for=histories, figures=figures)
    return out, paths


def test_write_report_writes_every_file(written):
    out, paths = written
    names = {p.relative_to(out).as_posix() for p in paths}
    assert names == {"report.md", "table1.csv", "table2a.csv", "table2b.csv", "table3.csv", "project.csv",
                     "cells.csv", "label_issues.csv", "fig4.png", "fig5a.png", "fig5b.png", "plots/fig4.csv", "plots/fig5a.csv",
                     "plots/fig5b.csv", "plots/fig5b_counts.csv"}
    assert all(p.exists() and p.stat().st_size > 0 for p in paths)
    for name in ("fig4.png", "fig5a.png", "fig5b.png"):
        assert (out / name).read_bytes()[:8] == PNG_MAGIC and (out / name).stat().st_size > 10_000


def test_report_markdown_has_the_tables(written):
    out, _ = written
    md = (out / "report.md").read_text()
    assert "| MTaDCS (ours) | 80.0 | 71.2 |" in md
    assert "| MTaDCS (paper) | 95.9 | 95.4 |" in md
    assert "| Δ MTaDCS | -15.9 | -24.2 |" in md
    assert "| MTaDCS (ours) | not run | not run | not run | not run |" in md  # WebVision
    assert "not run: data.path not set" in md and "not run: no metrics file" in md
    assert "digits-sym40" in md.split("## This project's cells")[1].split("## All cells")[0]
    for fig in ("fig4.png", "fig5a.png", "fig5b.png"):
        assert f"]({fig})" in md
    assert "`optim.epochs` = 14" in md
    t1 = pd.read_csv(out / "table1.csv")
    assert t1.loc[t1["row"] == "Δ MTaDCS", C10_SYM50].astype(float).item() == -24.2


def test_figure_data_for_dvc(written):
    out, _ = written
    fig4 = pd.read_csv(out / "plots" / "fig4.csv")
    assert list(fig4.columns) == ["times_in_G", "lof_e2", "lof_e6", "lof_e13", "lof_cs_e2", "lof_cs_e6", "lof_cs_e13"]
    assert (fig4.drop(columns="times_in_G").sum() == N).all()
    fig5a = pd.read_csv(out / "plots" / "fig5a.csv")
    assert {"c10-sym20_G_size", "c10-sym50_G_precision"} <= set(fig5a.columns) and fig5a["epoch"].max() == T_MAX
    counts = pd.read_csv(out / "plots" / "fig5b_counts.csv")
    assert counts["samples"].sum() == N and (counts.set_index("category").loc[[CLEAN_EASY, MISLABELED_EASY],
                                                                              "samples"] > 0).all()


def test_figures_skipped_when_their_cells_did_not_run(tmp_path):
    cells = {"c10-sym50": not_run("c10-sym50", identity(ALL_ON), "stopped")}
    write_metrics(tmp_path / "m", cells)
    paths = write_report(tmp_path / "m", {c: r.identity for c, r in cells.items()}, tmp_path / "r",
                         traces_for={}, labels_for={})
    md = (tmp_path / "r" / "report.md").read_text()
    assert "Figure 4 not drawn: the grid has no LOF-alone and LOF+CS cells to compare." in md
    assert "Figure 5b not drawn: cell c10-sym50 not run (stopped)." in md
    assert "Figure 5a not drawn: cell c10-sym50 not run (stopped)." in md
    assert (tmp_path / "r" / "fig5b.png").read_bytes()[:8] == PNG_MAGIC  # the PNG stating why, for DVC
    assert all(p.exists() for p in paths)
    assert pd.read_csv(tmp_path / "r" / "plots" / "fig5b.csv").columns[0] == "epoch"  # header only


def test_label_issue_quality_is_tabled_per_cell_and_a_cell_without_it_is_not_run(tmp_path):
    import json

    from pipeline.report.tables import label_issues_table

    (tmp_path / "label_issues").mkdir()
    (tmp_path / "label_issues" / "a.json").write_text(json.dumps(
        {"status": "done", "flagged": 40, "noisy": 50, "precision": 90.0, "recall": 72.0, "f1": 80.0,
         "suggested_accuracy": 61.5}))
    from pipeline.report.inputs import load_cell_metrics

    table = label_issues_table(load_cell_metrics(tmp_path / "label_issues", ["a", "b"])).set_index("cell")
    assert table.loc["a", "f1"] == 80.0 and table.loc["a", "flagged"] == 40
    assert table.loc["b", "status"] == "not run" and np.isnan(table.loc["b", "precision"])
