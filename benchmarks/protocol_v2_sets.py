"""The switch sets of the protocol-v2 benchmark: the noise settings, what every cell shares,
the methods whose test cells `benchmarks/protocol_v2.py run` records, and the candidate sets
`tune` scores on the validation split. Data only: each set is a params override merged over
BASE. The comment on each says why it was tried and what it scored, so the record of what was
chosen, and on what evidence, sits beside the set itself (docs/benchmark-log.md tells it in order).
"""

from __future__ import annotations

SETTINGS = {"sym10": {"kind": "sym", "rate": 0.1}, "sym50": {"kind": "sym", "rate": 0.5},
            "sym80": {"kind": "sym", "rate": 0.8}, "asym40": {"kind": "asym", "rate": 0.4}}

# What every cell shares: the data, model and optimizer of the protocol. An epoch is 40 steps
# (a CE pass over the 5170 images, 5170 // 128; also on the 90 % the tuning trains on), so
# 50 epochs are the 2000 steps; MTaDCS cells spend 45 of them in warm-up and selection epochs
# and 5 in fine-tuning.
STEPS_PER_EPOCH = 40
BASE = {
    "data": {"dataset": "npz", "path": None},
    "noise": {"sym_convention": "other", "seed": 0, "init_per_class": 100, "asym_map": "cifar10"},
    "model": {"arch": "preact_resnet18", "width": 16, "proj_dim": 128},
    "method": {"queue_size": 5000, "lc_alpha_reference_rounds": 240},
    "optim": {"epochs": 45, "warmup_epochs": 10, "lr": 0.05, "lr_milestones": [40], "batch_size": 128,
              "iters_per_epoch": STEPS_PER_EPOCH},
    "train": {"feature_every": 5},
    "finetune": {"epochs": 5, "lr": 0.001, "batch_size": 128, "iters_per_epoch": STEPS_PER_EPOCH},
    "evaluate": {"knn_k": 200},
    "runtime": {"device": "cpu", "threads": 2, "workers": 0, "progress": "log"},
    "tracking": {"enabled": False},
}
CE = {"optim": {"epochs": 50, "warmup_epochs": 50, "lr_milestones": [45]},
      "finetune": {"epochs": 0},
      "method": {"lof": False, "confidence_set": False, "removal": False, "contrastive": False, "mixup": False,
                 "label_correction": False}}
PAPER: dict = {}  # the paper's switches and values (params.yaml defaults), on the shared schedule
# The switch set the tuning on the validation split picked (benchmarks/results/protocol_v2_tuning.jsonl):
# of the trials run at sym 50 %, paper-no-lc scored 28.5 % validation top-1, the paper's switches
# 27.7 % and fixmatch-ema 24.8 %. paper-no-lc was tried because the test ablation measured label
# correction at -5.9 points; validation agrees, by four images of 516. Until 2026-11-30 the best
# set was the paper's (its old mtadcs-best records were copies of the mtadcs-paper cells). At
# asym 40 %, where it trails CE (51.4 against 57.6 on validation), none of class-balanced draws,
# a class floor, an all-data warm-up, forward correction or FixMatch on Ḡ scored 2 points above it.
# That set is now mtadcs-best-v1 (its records keep that name). On 2026-11-30 evening, agreement
# that counts only at p(label) >= 0.5 (paper-no-lc-sure) scored 30.0 on the same validation split
# (G 1581 at 97.0 % precision, against 1854 at 93.0 %), the best sym 50 % trial so far.
BEST_V1: dict = {"method": {"label_correction": False}}
# That set's records are mtadcs-best-v2 since the logit-adjusted loss (paper-no-lc-sure-adjusted)
# scored 30.2 on the sym 50 % validation split against its 30.0 (one image of 516: a tie) and,
# at asym 40 %, 51.0 against mtadcs-best-v1's 51.4 (noisy validation labels, which at asymmetric
# noise credit a model for predicting a flipped class: see docs/benchmark-log.md) with G 97.0 % precise
# against 90.1 %; it was adopted for the reason it was tried, the classes asym 40 % empties.
BEST_V2: dict = {"method": {"label_correction": False, "agreement_min_prob": 0.5}}
# That set's records were mtadcs-best-v3 for a day, when the same with forward correction of Ḡ
# (paper-no-lc-sure-adjusted-forward, now mtadcs-best-v4) tied it at sym 50 % on validation
# (30.2 and 30.2) and beat it at asym 40 % (52.7 against 51.0): ties at sym 50 % go to the better
# asym 40 % score. Its test cells then took 2.11-2.25x CE's wall time on one VM, over the issue's
# 2x, for the batch from Ḡ it adds to each step. The rule since 2026-12-01: a set is admissible
# as mtadcs-best only if its cells meet the wall-time target (a cost no label of x_test bears
# on), and the validation rule above picks among the admissible ones. The same set with a
# quarter-size batch from Ḡ (cheaper) scored 29.7 at sym 50 %, three images under 30.2 (and 50.6
# at asym 40 %, under both). So the logit-adjusted set is mtadcs-best again; its cells are the
# mtadcs-best-v3 runs (same_run_as). Re-timed without the weak view it used to discard, v4 took
# 2.00x CE's time at sym 80 % and 2.14x at asym 40 % (protocol_v2_timing.jsonl): still over.
# With extraction at batch 64 on CPU (eval_batch_size auto, code a30862d), 2.03x at asym 40 %.
BEST_V3: dict = {"method": {"label_correction": False, "agreement_min_prob": 0.5, "logit_adjustment": "uniform"}}
BEST_V4: dict = {"method": {**BEST_V3["method"], "warmup_set": "all", "semi_supervised": "forward",
                            "fixmatch_ratio": 0.5}}
# The set from 2026-12-01: BEST_V3 with agreement by the posterior that the label is right
# (posterior_min 0.8) in place of even odds. Validation (Intel VM): asym 40 % whole budget 59.7
# against BEST_V3's 57.8 (G recall 84.0 % against 70.5 % at 97 % precision); sym 50 % half
# budget 29.5 against 30.2 (a tie: the same G in theory and in fact). By the choice rule (a sym
# 50 % tie goes to the better asym 40 % score) it is mtadcs-best since its test cells exist at all
# three settings; its cells ran as mtadcs-best-v5 (the mtadcs-best records are same_run_as copies),
# and BEST_V3's keep their records as mtadcs-best-v3.
BEST_V5: dict = {"method": {"label_correction": False, "agreement": "posterior", "posterior_min": 0.8,
                            "logit_adjustment": "uniform"}}
# BEST_V5 at posterior_min 0.7 (trial paper-no-lc-posterior70-adjusted): validation (Intel VM)
# asym 40 % whole budget 60.3 against BEST_V5's 59.7 (G recall 89.7 % against 84.0 %, precision
# 95.2 % against 97.2 %); sym 50 % half budget 29.8 against 29.5 (G 1745 at 95.2 % precision,
# 71.4 % recall against 1580 at 97.3 %, 66.1 %). By the choice rule (a sym 50 % tie or lead and
# the better asym 40 % score) it was the next best set, and its test cells ran as mtadcs-best-v6:
# asym 40 % 67.35 (BEST_V5 67.75), sym 50 % 66.47 (68.63) with G 94.1 % precise, under the method
# issue's 95 % at sym 50 %. A set whose cells miss a target that no label of x_test bears on (the
# wall time, and since this set G's precision and recall at sym 50 %) is not admissible as
# mtadcs-best (docs/benchmark-log.md: that reading of the rule came after these two cells), so BEST stays
# BEST_V5 and v6's sym 80 % cell was not run.
BEST_V6: dict = {"method": {**BEST_V5["method"], "posterior_min": 0.7}}
# BEST_V5 with every epoch drawing from all of S, non-members of G at the posterior that their
# label is right (TRIALS' paper-no-lc-posterior80-adjusted-soft; why, its rule and its validation
# beside it): not adopted, so it has no test cells.
BEST_V7: dict = {"method": {**BEST_V5["method"], "outside_g_draws": "posterior"}}
# BEST_V5 with the soft G's weight the posterior's margin over even odds (TRIALS'
# paper-no-lc-posterior80-adjusted-lift; why and its rule beside it). The set since 2026-12-02:
# its validation passed the rule written before it, and its test cells (run as mtadcs-best-v8;
# the mtadcs-best records are same_run_as copies) meet the wall-time target (1.45-1.66x CE) and
# the sym 50 % G target (95.9 % precision, 79.6 % recall): asym 40 % 69.71 (BEST_V5 67.75),
# sym 50 % 69.22 (68.63), sym 80 % 66.18 (63.87). BEST_V5 keeps its records as mtadcs-best-v5.
BEST_V8: dict = {"method": {**BEST_V5["method"], "outside_g_draws": "lift"}}
# BEST_V8 with no fine-tuning epochs, their steps spent as MTaDCS epochs (the lr drop still at
# epoch 40), and the momentum encoder as the result (TRIALS' paper-no-lc-posterior80-adjusted-lift-ema;
# why, and its rule, beside it).
BEST_V9: dict = {"method": BEST_V8["method"], "optim": {"epochs": 50}, "finetune": {"epochs": 0, "start": "ema"}}
# BEST_V8 with its fine-tuning steps spent as MTaDCS epochs (TRIALS' paper-no-lc-posterior80-adjusted-lift-noft),
# and with a 5-epoch warm-up (...-lift-warmup5): the two trials registered after BEST_V9's (why, and their rules, beside them).
BEST_V10: dict = {"method": BEST_V8["method"], "optim": {"epochs": 50}, "finetune": {"epochs": 0}}
BEST_V11: dict = {"method": BEST_V8["method"], "optim": {"warmup_epochs": 5}}
BEST: dict = BEST_V10  # since 2026-12-02 (session 41); BEST_V8 keeps its records as mtadcs-best-v8
# Diagnosis, not a method: the best set's training on an oracle G, every correctly labelled
# sample from the start and nothing admitted or removed (the verified seed takes every clean
# sample and is never removed; no LOF score passes 0.001). Its test top-1 is the most that
# perfect selection could give this training at this budget, to tell a selection shortfall from
# a training one where the best set misses a target (asym 40 %). It chooses nothing. It and the
# seed pairs below are BEST_V5's, the set they ran with, whatever BEST is now.
BEST_ORACLE: dict = {**BEST_V5, "noise": {"init_per_class": 100_000},
                     "method": {**BEST_V5["method"], "lof_threshold": 0.001}}
# The ablation at sym 50 % was measured on BEST_V1, the best set until then; what the later
# switch adds is mtadcs-best against mtadcs-best-v1.
ABLATED_METHOD = "mtadcs-best-v1"
ABLATED: dict = BEST_V1
# No verified seed (issue 17): G starts as all of S, as for a user's own labels. The set is the
# seedless trial, of those validated at both sym 10 % and sym 50 %, with the smallest worst-case
# gap to CE (the targets are gaps to CE at three settings, one of them "do no harm").
# Until 2026-12-01 evening it was SEEDLESS_P05 (SEEDLESS is now SEEDLESS_V5, below):
# seedless-p05, -1.0 at sym 50 % (25.2 against 26.2) and -1.9 at sym 10 % (59.3 against 61.2);
# seedless-ft-plain, the best at sym 50 % alone (26.2), was -4.7 at sym 10 % (56.6). The ceiling
# and this rule came after ft-plain's sym 10 % test cell (docs/benchmark-log.md: not an untouched estimate). Earlier sets keep their test records
# under their own names: mtadcs-seedless-v1 (removal patience 3, 50 % class floor, EMA selection,
# the paper's losses; code fc0bb2b), mtadcs-seedless-v2 (seedless-removal-only, fine-tuned with
# mixup; codes 2d570d0 and 52ab3e7) and mtadcs-seedless-v3 (seedless-ft-plain, code 2a10d92). Its
# test cells ran first under the name mtadcs-seedless; this set's ran under mtadcs-seedless too,
# and are mtadcs-seedless-p05 since SEEDLESS_V5 replaced it.
SEEDLESS_V2 = {"noise": {"init": "all"}, "optim": {"warmup_epochs": 20},
               "method": {"contrastive": False, "mixup": False, "label_correction": False,
                          "removal_patience": 3, "min_class_keep": 0.7, "selection_model": "ema"}}
SEEDLESS_V3 = {**SEEDLESS_V2, "finetune": {"mixup_alpha": 0.0}}
SEEDLESS_P05 = {**SEEDLESS_V3, "method": {**SEEDLESS_V3["method"], "removal_max_prob": 0.05}}
SEEDLESS_V1 = {"noise": {"init": "all"}, "method": {"removal_patience": 3, "min_class_keep": 0.5,
                                                      "selection_model": "ema"}}
# The candidate next seedless set (TRIALS' seedless-selfseed50-kept-posterior; why, and the tie-break
# that makes it the candidate, beside that trial): the best set's switches on a kept self-seed.
SEEDLESS_V4 = {"noise": {"init": "all"}, "optim": {"warmup_epochs": 20},
               "method": {**BEST_V5["method"], "self_seed_per_class": 50, "self_seed_keep": True}}
# Cross-entropy on all of S with the loss weighted by the per-class normalised posterior that each
# label is right (TRIALS' seedless-weighted-per-class; its validation and the rule that chose it
# are beside it there). Its test cells ran as mtadcs-seedless-v5.
SEEDLESS_V5 = {"noise": {"init": "all"}, "finetune": {"mixup_alpha": 0.0},
               "method": {**CE["method"], "loss_weights": "posterior_per_class"}}
# The seedless set since 2026-12-01 evening (the rule and its validation beside the trial): its
# cells ran as mtadcs-seedless-v5 and the mtadcs-seedless records are same_run_as copies; the set
# it replaced (seedless-p05) keeps its records as mtadcs-seedless-p05.
SEEDLESS = SEEDLESS_V5
# The earlier seedless sets are not in CELLS: their records are kept beside the set that replaced them.
# Cross-entropy with another training seed (weights, batch order, augmentation; the same noisy
# labels): how far two runs of one configuration lie apart on x_test, the yardstick for the
# small gaps (asym 40 %, and the seedless cells).
CE_SEED1 = {**CE, "runtime": {"seed": 1}}
# The same for the best set at asym 40 %: BEST_V3 (+0.1 over CE; its record ran as mtadcs-best-seed1,
# before v5 was adopted) and BEST_V5.
BEST_V3_SEED1 = {**BEST_V3, "runtime": {"seed": 1}}
BEST_SEED1 = {**BEST_V5, "runtime": {"seed": 1}}
# A third seed of both at asym 40 %, where the best set's lead (+1.0 and +4.5 over the first two
# same-seed pairs) straddles the +3 target.
CE_SEED2 = {**CE, "runtime": {"seed": 2}}
BEST_SEED2 = {**BEST_V5, "runtime": {"seed": 2}}
# A fourth pair, run to tighten the mean's estimate (three pairs: +1.0, +4.5, +2.5); the target
# is read on the record (seed 0) whatever this pair gives.
CE_SEED3 = {**CE, "runtime": {"seed": 3}}
BEST_SEED3 = {**BEST_V5, "runtime": {"seed": 3}}
# The same three seeds for BEST_V8, the set that replaced BEST_V5 (its seed-0 cell: +2.95, one
# test image short of +3): its spread over seeds beside CE's seed cells above. The target is still
# read on the record (seed 0) whatever these give.
def seed_cells(method: str, sections: dict, seeds=(1, 2, 3)) -> dict[str, dict]:
    """`sections` with other training seeds, as methods named `<method>-seed<n>`."""
    return {f"{method}-seed{n}": {**sections, "runtime": {"seed": n}} for n in seeds}


BEST_V8_SEEDS = seed_cells("mtadcs-best-v8", BEST_V8)
# The same three seeds for BEST_V10, the set that replaced BEST_V8, planned before any of them ran:
# with its record cell, four seeds as BEST_V5 and BEST_V8 have (over seeds 0-3: +3.29 over CE on
# the mean, docs/benchmark-log.md).
BEST_V10_SEEDS = seed_cells("mtadcs-best-v10", BEST_V10)
METHODS = {"ce": CE, "mtadcs-paper": PAPER, "mtadcs-best": BEST, "mtadcs-best-v1": BEST_V1, "mtadcs-best-v2": BEST_V2,
           "mtadcs-best-v3": BEST_V3, "mtadcs-best-v4": BEST_V4, "mtadcs-seedless": SEEDLESS,
           "mtadcs-seedless-p05": SEEDLESS_P05,
           "mtadcs-seedless-v1": SEEDLESS_V1, "mtadcs-seedless-v2": SEEDLESS_V2, "mtadcs-seedless-v3": SEEDLESS_V3,
           "ce-seed1": CE_SEED1, "mtadcs-best-seed1": BEST_SEED1, "mtadcs-best-v3-seed1": BEST_V3_SEED1,
           "mtadcs-best-v5": BEST_V5, "mtadcs-best-oracle": BEST_ORACLE, "mtadcs-best-v6": BEST_V6,
           "mtadcs-best-v8": BEST_V8, "mtadcs-best-v10": BEST_V10,
           "ce-seed2": CE_SEED2, "mtadcs-best-seed2": BEST_SEED2, "ce-seed3": CE_SEED3,
           "mtadcs-best-seed3": BEST_SEED3, "mtadcs-seedless-v4": SEEDLESS_V4, "mtadcs-seedless-v5": SEEDLESS_V5,
           **BEST_V8_SEEDS, **BEST_V10_SEEDS}
# The cells of the benchmark: the method issue's three methods at three settings, the seedless
# set beside CE at sym 10 % (do no harm), sym 50 % and asym 40 %, CE and the best set with another seed,
# the posterior set's own cells, and the oracle-G diagnosis at asym 40 % and at sym 50 % (there the
# ceiling of issue 13's suggested labels: the model of a perfect G, on the images whose label is wrong).
CELLS = [*[(m, s) for s in ("sym50", "sym80", "asym40") for m in ("ce", "mtadcs-paper", "mtadcs-best")],
         ("ce", "sym10"), *[("mtadcs-seedless", s) for s in ("sym10", "sym50", "asym40")],
         ("ce-seed1", "sym50"), ("ce-seed1", "asym40"), ("mtadcs-best-seed1", "asym40"),
         *[("mtadcs-best-v5", s) for s in ("asym40", "sym50", "sym80")], ("mtadcs-best-oracle", "asym40"),
         ("mtadcs-best-oracle", "sym50"),
         *[("mtadcs-best-v6", s) for s in ("asym40", "sym50")],
         *[(m, "asym40") for m in ("ce-seed2", "mtadcs-best-seed2", "ce-seed3", "mtadcs-best-seed3")],
         ("mtadcs-seedless-v4", "sym50"), *[("mtadcs-seedless-v5", s) for s in ("sym50", "sym10", "asym40")],
         *[("mtadcs-best-v8", s) for s in ("asym40", "sym50", "sym80")], *[(m, "asym40") for m in BEST_V8_SEEDS],
         *[("mtadcs-best-v10", s) for s in ("asym40", "sym50", "sym80")], *[(m, "asym40") for m in BEST_V10_SEEDS]]

# Candidate switch sets tried by `tune` (each merged over BASE), scored on the validation split.
TRIALS = {
    "paper": PAPER,
    # The paper's switches without Eq. 7. Tried because the sym 50 % test ablation measured label
    # correction at -5.9 points (61.2 with it, 67.1 without): a lead from x_test, so the switch set
    # changes only if the validation split agrees.
    "paper-no-lc": BEST_V1,
    # The best set with another training seed (same noise, same split): how far two runs of one
    # set lie apart on validation, the yardstick for the differences between trials.
    "paper-no-lc-seed1": {"method": {"label_correction": False}, "runtime": {"seed": 1}},
    # The best set with every class of G drawn equally often. Tried for asym 40 %, where the best
    # set's final G held 121 correctly labelled deer against 552 horses (102 of them flipped deer),
    # so the model saw deer images labelled horse almost as often as labelled deer (the MTaDCS
    # epochs draw balanced; fine-tuning keeps its shuffled passes over G).
    "paper-no-lc-balanced": {**BEST_V1, "optim": {"class_balanced": True}},
    # The best set with a class floor: after each round, a class of G under 0.8 x the median class
    # size is topped up with its label's most likely non-members (asym 40 %: the deer and birds
    # that prediction agreement leaves out).
    "paper-no-lc-floor": {"method": {"label_correction": False, "min_class_share": 0.8}},
    # The best set with entry after two agreeing rounds in a row. For G's precision at sym 50 %
    # (94.2 % on test, target 95): 123 of the 131 wrong labels in that final G had left G and come
    # back at least once, i.e. the model predicted their label on some rounds and not on others.
    "paper-no-lc-settled": {"method": {"label_correction": False, "selection_patience": 2}},
    # It moved G's precision by 0.3 points (93.3 %): about 70 samples enter and 70 leave each
    # round, a quarter of the entrants mislabelled. Its final G, cut offline to members the
    # model gives their label at even odds or better, was 96.1 % precise: agreement that counts
    # only at p(label) >= 0.5, for entry (Eq. 2) and stay (Eq. 3).
    "paper-no-lc-sure": BEST_V2,
    # The best set with the logit-adjusted loss towards balanced classes. At asym 40 % its test
    # cell's final G held 125 deer and 127 dogs against 453 horses and 430 ships: the model,
    # trained on G's shares, gave deer 4.5 % of its predictions over S, and agreement admitted
    # fewer deer round after round. Offline, that model's probabilities divided by G's class
    # shares classified the training images 3.6 points better against their clean labels
    # (64.7 -> 68.3 %; sym 50 %: 70.4 -> 71.1 %).
    "paper-no-lc-sure-adjusted": BEST_V3,
    # The best set with the images outside G learnt too, through T read off the verified seed
    # (forward correction after an all-data warm-up): at asym 40 % what separates it from CE is
    # the 31 % of correctly labelled images G leaves out. Over mtadcs-best-v1 forward correction
    # raised the validation images' clean-label accuracy from 48.4 to 53.9 (oracle_validation.py).
    "paper-no-lc-sure-adjusted-forward": BEST_V4,
    # Its test cells took 2.11-2.25x CE's wall time (target: 2x), a third more per step than the
    # set without forward correction, for the batch from Ḡ each step adds: the same set with that
    # batch a quarter of the labelled batch instead of a half (and, from code of 2026-11-30, no
    # unused weak view made for it).
    "paper-no-lc-sure-adjusted-forward-quarter": {"method": {**BEST_V4["method"], "fixmatch_ratio": 0.25}},
    # Still 2.03x CE at asym 40 % with the faster extraction: the step's cost is the method's own.
    # Timed alone (time_train per step): CE 0.165 s; the best set's warm-up 0.28 s and MTaDCS
    # epochs 0.28 s; the forward-corrected set's MTaDCS epochs 0.35 s (the batch from Ḡ). The
    # same set with the batch from Ḡ kept and Eq. 4 dropped instead: its warm-up step took 0.17 s
    # against 0.27 s with Eq. 4 (its MTaDCS epochs overlapped a test run: not comparable).
    "paper-no-lc-sure-adjusted-forward-no-contrastive": {"method": {**BEST_V4["method"], "contrastive": False}},
    # Validation at sym 50 % (half budget): 27.5 against the best set's 30.2, fourteen images
    # under: Eq. 4 is worth more there than Ḡ (its asym 40 % trial was stopped, moot for the choice).
    # The best set with Ḡ used too, for asym 40 %, where CE beats a clean G by training on every
    # image: FixMatch pseudo-labels from the EMA teacher, or Ḡ's given labels through the
    # transition matrix read off the verified seed (forward correction; needs the all-data warm-up).
    "paper-no-lc-fixmatch-ema": {"method": {"label_correction": False, "semi_supervised": "fixmatch",
                                            "fixmatch_ratio": 0.5, "selection_model": "ema"}},
    "all-data-no-lc-forward": {"method": {"warmup_set": "all", "label_correction": False,
                                          "semi_supervised": "forward", "fixmatch_ratio": 0.5}},
    "all-data": {"method": {"warmup_set": "all"}},
    # The best set after a warm-up on all of S: at asym 40 % most labels are right (80 %), so a
    # warm-up on all of them selects with a model near CE's rather than the seed's 1000 samples.
    "all-data-no-lc": {"method": {"warmup_set": "all", "label_correction": False}},
    "all-data-ema": {"method": {"warmup_set": "all", "selection_model": "ema"}},
    "fixmatch-ema": {"method": {"semi_supervised": "fixmatch", "fixmatch_ratio": 0.5, "selection_model": "ema"}},
    "all-data-ema-fixmatch": {"method": {"warmup_set": "all", "selection_model": "ema", "semi_supervised": "fixmatch",
                                         "fixmatch_ratio": 0.5}},
    "all-data-ema-gmm": {"method": {"warmup_set": "all", "selection_model": "ema", "loss_filter": "gmm"}},
    "all-data-ema-lof105": {"method": {"warmup_set": "all", "selection_model": "ema", "lof_threshold": 1.05}},
    # GLC forward correction (aimed at asymmetric noise): an all-data warm-up, T read off the
    # verified seed, and the samples outside G learnt through T.
    "all-data-forward": {"method": {"warmup_set": "all", "semi_supervised": "forward", "fixmatch_ratio": 0.5}},
    "ce": CE,
    "seedless-paper": {"noise": {"init": "all"}},
    "seedless-v1": SEEDLESS_V1,
    # No verified seed, G restarted after the warm-up from the 100 most confident samples per label
    # (as many as the verified seed has), then grown by Eq. 2-3 with the paper's removal.
    "seedless-selfseed": {"noise": {"init": "all"}, "method": {"self_seed_per_class": 100, "selection_model": "ema"}},
    # The self-seed after a warm-up twice as long (seedless-selfseed's half-budget warm-up model,
    # 15.5 % validation top-1 against noisy labels, picked a seed G that then collapsed to one
    # class), removal only after 3 rounds of disagreement, and a class floor of 10 % of the
    # label's samples so no class empties.
    "seedless-v2": {"noise": {"init": "all"}, "optim": {"warmup_epochs": 20},
                    "method": {"self_seed_per_class": 100, "selection_model": "ema", "removal_patience": 3,
                               "min_class_keep": 0.1}},
    # What seedless-v2's trace pointed to (validation): Eq. 7 on a weak model's predictions
    # relabelled in a cascade (G precision 75 % -> 28 %), and a weak model's removal shrank G.
    # Here: no contrastive loss (plain mixup CE), no label correction,
    # and removal that keeps 70 % of every class, taken from the samples the EMA model has
    # disagreed with for 3 rounds, lowest label probability first.
    "seedless-cautious": {"noise": {"init": "all"}, "optim": {"warmup_epochs": 20},
                          "method": {"contrastive": False, "label_correction": False, "removal_patience": 3,
                                     "min_class_keep": 0.7, "selection_model": "ema"}},
    # seedless-cautious without mixup: cross-entropy's training, with only the removal added, to
    # see what the selection alone is worth when G starts as all of S.
    "seedless-removal-only": SEEDLESS_V2,
    # Its fine-tuning epochs (mixup on G at lr 0.001) lowered validation top-1 from 26.6 to 25.4:
    # the same set, fine-tuned without mixup.
    "seedless-ft-plain": SEEDLESS_V3,
    # Its removal at sym 10 % (test cell of the set it replaced): the first round took 1377 samples,
    # only 31 % of them noisy, from a model about 57 % accurate. Offline, on the warm-up models of
    # those cells, removal limited to labels the model gives under 5 % took 604 samples (52 %
    # noisy) at sym 10 % and 592 (91 % noisy) at sym 50 %; under 10 %: 1045 (38 %) and 1506 (85 %).
    "seedless-p05": SEEDLESS_P05,
    "seedless-p10": {**SEEDLESS_V3, "method": {**SEEDLESS_V3["method"], "removal_max_prob": 0.1}},
    # seedless-p05's final G at sym 50 % (test) sat on its 70 % class floor at 65 % precision: the
    # floor a do-no-harm rule needs at 10 % noise stops removal at 50 %. Here each class's floor
    # is the share a loss GMM calls clean after the warm-up (on the validation split's warm-up
    # models: 0.40-0.60 per class at sym 50 %, true 0.47-0.53; 0.63-0.85 at sym 10 %, true 0.9).
    "seedless-auto-keep": {**SEEDLESS_P05, "method": {**SEEDLESS_P05["method"], "min_class_keep": "auto"}},
    # The seeded best set (+15.8 at sym 50 % from 100 verified samples a class) on a seed the
    # warm-up model picks itself: its 100 most confident samples of each label. seedless-selfseed
    # tried that with the paper's switches, and Eq. 7 on a weak model relabelled in a cascade;
    # the best set has no Eq. 7 and admits only at p(label) >= 0.5. Warm-up twice the seeded one.
    "seedless-selfseed-best": {"noise": {"init": "all"}, "optim": {"warmup_epochs": 20},
                               "method": {**BEST_V3["method"], "self_seed_per_class": 100}},
    # Its G fell from the 1000-sample seed (85 % precise) to about 500 after one round and never
    # passed 900 (88 % precise): unlike a verified seed, nothing kept the seed. The same with the
    # self-seed kept in G all run, as the seeded best set keeps its verified seed.
    "seedless-selfseed-kept": {"noise": {"init": "all"}, "optim": {"warmup_epochs": 20},
                               "method": {**BEST_V3["method"], "self_seed_per_class": 100, "self_seed_keep": True}},
    # Neither picked a seed much cleaner than the warm-up model's accuracy allows: averaged over
    # the 20 warm-up epochs (the moving trace), p(label) picks 100 a class 85.4 % clean against
    # 84.8 % from the last epoch alone, with that model 35 % accurate on S (validation split's
    # warm-up, trace_probe). Late selection instead: cross-entropy on all of S for 38 of the 45
    # epochs (its model about 50 % accurate by then), then G = the samples it gives their label
    # at even odds or better, learnt through the lr drop and fine-tuning, where cross-entropy's
    # accuracy jumps most (45 -> 53 % on test at sym 50 %).
    "seedless-late": {"noise": {"init": "all"}, "optim": {"warmup_epochs": 38},
                      "method": {"contrastive": False, "mixup": False, "label_correction": False,
                                 "agreement_min_prob": 0.5},
                      "finetune": {"mixup_alpha": 0.0}},
    # Validation (whole budget, against cross-entropy's 27.9): 20.4, G cut to 239 at the first
    # round (a model still at lr 0.05 gives few labels even odds) and grown to 957 at 81 %.
    # Plain agreement instead (G 1333 at 82 %, 1418 at 84 % by the end): 22.7. Both fit their
    # small G (train accuracy 80-96 %) and lose the rest of S: at this scale the amount of data
    # outweighs its precision unless the clean part is verified.
    "seedless-late-plain": {"noise": {"init": "all"}, "optim": {"warmup_epochs": 38},
                            "method": {"contrastive": False, "mixup": False, "label_correction": False},
                            "finetune": {"mixup_alpha": 0.0}},
    # The seedless set with the regularisers the seeded sets keep: mixup (a mix of two noisy
    # labels weighs each by its share, Zhang et al. 2018), and mixup with Eq. 4 on G.
    "seedless-mixup": {**SEEDLESS_P05, "method": {**SEEDLESS_P05["method"], "mixup": True},
                       "finetune": {"mixup_alpha": 1.0}},
    "seedless-mixup-contrastive": {**SEEDLESS_P05, "method": {**SEEDLESS_P05["method"], "mixup": True, "contrastive": True},
                                   "finetune": {"mixup_alpha": 1.0}},
    # Validation (whole budget): 24.2 and 23.3 against seedless-p05's 26.0 and CE's 27.9: with half
    # the labels wrong, mixing them slows a model that is already under-fitted at this budget.
    # The generalized cross-entropy (method.classification_loss: gce, q 0.7) in place of CE: the
    # seedless runs' limit is a model trained on S's noisy labels (34.5 % accurate on S after
    # the warm-up, against the clean labels), and GCE lets a label the model finds unlikely pull
    # less. Cross-entropy's own cell with it, to show what the loss alone gives, and the seedless set.
    "ce-gce": {**CE, "method": {**CE["method"], "classification_loss": "gce"}},
    "seedless-gce": {**SEEDLESS_P05, "method": {**SEEDLESS_P05["method"], "classification_loss": "gce"}},
    # Validation, whole budget (codes 5ac0474 and 4b0d2a7): at sym 50 % ce-gce 28.1 and
    # seedless-gce 27.3 against CE's 27.9 (clean-label accuracy of the validation images, for
    # insight: 49.6 and 51.7 against 50.0); at sym 10 % 57.9 and 55.6 against 63.8 (65.1 and
    # 62.4 against 70.9). GCE slows the learning of the clean labels a model still gets wrong, and
    # at 2000 steps the model is still learning them. Not adopted. An offline probe before the
    # switch (CE's cell with GCE monkeypatched in, p ** q by a clamp instead of expm1) had scored
    # 31.0 (53.9 clean): the same configuration 3 points apart from floating-point differences alone.
    # The best set with agreement by the posterior that the label is right (method.agreement
    # "posterior", T from the confident joint each round) in place of agreement_min_prob's even
    # odds: at sym 50 % the same rule in theory; at asym 40 % a label no class flips into (truck,
    # bird, deer) enters G whatever the model predicts, where the best set's G holds half of them.
    "paper-no-lc-posterior-adjusted": {"method": {"label_correction": False, "agreement": "posterior",
                                                  "logit_adjustment": "uniform"}},
    # The same at posterior_min 0.8: offline, on the final round of paper-no-lc-sure-adjusted's
    # whole-budget asym 40 % trial (diagnosis with the training images' clean labels), the run's
    # G held 2719 at 97.0 % precision and 70.5 % recall; posterior >= 0.9 would have held 2675
    # (98.3 %, 70.3 %), posterior >= 0.8 3057 (96.9 %, 79.2 %); with the true T, 88 % recall.
    "paper-no-lc-posterior80-adjusted": BEST_V5,
    # The adopted set at posterior_min 0.7: at asym 40 % its G holds about half of the correctly
    # labelled cats and dogs, and the oracle-G cell (72.2 against 67.7) puts the miss in
    # selection. Offline, on the last round of its whole-budget asym 40 % trial (the training
    # images' clean labels), posterior >= 0.7 would keep 3325 (95.8 %, 85.2 %) against 0.8's
    # 3062 (97.0 %, 79.4 %); at sym 50 % (half budget) 1437 (94.2 %, 58.1 %) against 1203
    # (95.6 %, 49.4 %): recall for a point or so of precision in both.
    "paper-no-lc-posterior70-adjusted": BEST_V6,
    # Without a seed, the best set (BEST_V5's switches) on a smaller, cleaner self-picked seed kept
    # all run: 50 a class are 89.2 % clean on the validation split's warm-up model against 86.5 %
    # at 100 (knn_seed_probe, session 36), where the kept 100-a-class seed under BEST_V3's
    # switches tied cross-entropy (27.9 and 27.9). Validation, whole budget (codes fa3df90 and
    # 7ad6848): sym 50 % 29.1 against CE's 27.9 (+1.2; G 1209, 90.3 %, 46.9 %), sym 10 % 61.8
    # against 63.8 (-1.9; G 3254, 98.4 %, 76.4 %). Its worst gap, -1.94, equals SEEDLESS's
    # (seedless-p05: -1.94 at sym 10 %, half budget), and it leads SEEDLESS at sym 50 % by 3.1
    # (whole budget: 29.1 against 26.0). Written before any test cell of it: a tie on the worst gap
    # goes to the better sym 50 % validation score. But its validation G already held only 46.9 %
    # of the clean samples, under issue 17's >= 50 % of every class at sym 50 %, a target no label
    # of x_test bears on, which the tie-break should have been checked against first; its sym 50 %
    # test cell (mtadcs-seedless-v4, 52.3 against CE's 50.9) ended with G at 48.0 % recall and
    # 19.5 % for its weakest class. Not admissible: SEEDLESS is unchanged, and its other two
    # cells were not run.
    "seedless-selfseed50-kept-posterior": SEEDLESS_V4,
    # No hard cut at all: cross-entropy on all of S whose loss weighs each sample by the posterior
    # that its label is right (method.loss_weights "posterior", importance reweighting after Liu &
    # Tao, TPAMI 2016), recomputed after every epoch from the model's predictions over S, from the
    # end of CE's 10-epoch warm-up on. Every hard-cut seedless set so far traded away clean samples
    # with the noisy ones (seedless-v4's G kept 48 % of them); CE's own sym 50 % cell is not
    # memorising (33.7 % train accuracy against the noisy labels at its end), it learns a signal
    # halved by the noise. Offline, on the 20-epoch warm-up model of the validation split (38.6 %
    # accurate on S): the posterior weights average 0.33 on clean and 0.23 on noisy samples, an
    # effective noise of 40.6 % instead of 50 % over an effective 3964 of 4654 samples; later models
    # separate them better. At 10 % noise nearly every weight is high: close to CE (do no harm).
    "seedless-weighted": {"noise": {"init": "all"}, "finetune": {"mixup_alpha": 0.0},
                          "method": {**CE["method"], "loss_weights": "posterior"}},
    # Validation, whole budget (code 74cef27): 26.4 against CE's 27.9. Against the validation
    # images' clean labels (oracle_validation.py, a diagnosis) 48.8 %, with cat and deer never
    # predicted: a class the model does not predict gets low posteriors, so little weight, so it
    # is learnt still less. The same weights divided by their label's mean, so each class keeps
    # its share of the loss and the weights only rank samples within it.
    "seedless-weighted-per-class": SEEDLESS_V5,
    # The weighting that carried the seedless set, on the seeded best set (issue 12's asym 40 %
    # miss): a hard cut by agreement leaves the clean samples the model is not yet sure of out of
    # training for good (the best set's final asym 40 % G held 49 % of its weakest class's clean
    # samples; the oracle-G cell, 72.2 against 67.7, puts the shortfall there; cross-entropy on
    # all images has the better features, kNN 73.3 against 67.7). Here every epoch draws from all
    # of S, a member of G at weight 1 and a non-member at the posterior that its label is right
    # (method.outside_g_draws), at no cost in steps. Rule written before either trial (code
    # 2f65615): it replaces BEST if its asym 40 % whole-budget validation top-1 is at
    # least one point over BEST's 59.7 (v6 led by 0.6 there and trailed on x_test) and its sym
    # 50 % half-budget score at most one point under BEST's 29.5; its test cells then run as
    # mtadcs-best-v7 at the three settings, and it is admissible only if they meet the wall-time
    # target and the sym 50 % G target (precision >= 95 %, recall >= 70 %).
    # Asym 40 %, whole budget (code 2f65615): 60.85 against 59.69 (+1.16, six images of 516; G
    # 3209 at 97.9 % precision, 84.0 % recall, against 3235 at 97.2 %, 84.0 %): the first half of the rule holds.
    # Sym 50 %, half budget (same code): 27.52 against 29.46 (-1.94; G 1414 at 97.6 %, 59.3 %,
    # against 1580 at 97.3 %, 66.1 %): the second half fails, so it is not adopted and no test cell
    # ran. Its final draws came 40 % from outside G (3240 non-members at a mean weight of 0.29): under
    # symmetric noise the posterior of a label the model gives 10 % is still 0.5 at 50 % noise
    # (the noise spreads over nine classes), so the draws are about as noisy as the labels there;
    # at asym 40 % 18.5 % of the draws (1445 non-members at 0.51).
    "paper-no-lc-posterior80-adjusted-soft": BEST_V7,
    # The soft G with a non-member's weight the posterior's margin over even odds, max(0, 2 P - 1)
    # (method.outside_g_draws "lift"), so the posterior's floor under symmetric noise draws nothing.
    # Read off the soft trial's last round (training clean labels only, no x_test;
    # /work/bench/analysis/lift_weights.py): at sym 50 % the margin would have drawn 10 % from
    # outside G, 77 % of those right (the posterior: 40 %, 47 % right; all draws 95.5 % right
    # against hard G's 97.6 %), reaching 65 % of the clean samples against hard G's 59 %; at
    # asym 40 % 7 % from outside G, 67 % right, reaching 88 % against 84 %. The same rule as the
    # soft trial's, written before either trial of this one (code of this commit): it replaces BEST
    # if its asym 40 % whole-budget validation top-1 is at least one point over BEST's 59.7 and its
    # sym 50 % half-budget score at most one point under BEST's 29.5; its test cells then run as
    # mtadcs-best-v8 at the three settings, and it is admissible only if they meet the wall-time
    # target and the sym 50 % G target (precision >= 95 %, recall >= 70 %).
    # Asym 40 %, whole budget (code 2088a14): 61.05 against 59.69 (+1.36; G 3282 at 97.7 %
    # precision, 85.8 % recall, against 3235 at 97.2 %, 84.0 %). Sym 50 %, half budget (same code):
    # 31.59 against 29.46 (+2.13; G 1634 at 96.9 %, 68.1 %, against 1580 at 97.3 %, 66.1 %). Both halves of the rule hold: its test cells run as mtadcs-best-v8.
    "paper-no-lc-posterior80-adjusted-lift": BEST_V8,
    # The best set with its last five epochs given to the MTaDCS epochs instead of fine-tuning,
    # and the momentum (EMA) encoder as the result (finetune.start "ema" with no fine-tuning
    # epochs; Mean Teacher evaluates the EMA). Read off the lift trial's own asym 40 % validation
    # cell (session 40, /work/bench/analysis/ema_probe.py): the EMA at the end of the MTaDCS
    # epochs scored 62.0 against the student's 59.5 and the fine-tuned student's 61.0, while every
    # variant that fine-tuned the EMA or from it lost that (60.1, 60.3, 59.3): fine-tuning on G
    # at lr 0.001 with mixup undoes what the average gains. The lr drop stays at epoch 40, so up
    # to epoch 45 the trial is the best set's, step for step. Both trials and the best set's
    # reruns ran on one VM (this session's AMD EPYC: the Intel VM's figures are from other
    # numerics). Rule written before either trial ran: it replaces BEST if its asym 40 %
    # whole-budget validation top-1 is at least one point over the best set's rerun here and its
    # sym 50 % half-budget score at most one point under that rerun's; its test cells then run
    # as mtadcs-best-v9 at the three settings, and it is admissible only if they meet the
    # wall-time target and the sym 50 % G target (precision >= 95 %, recall >= 70 %).
    # Asym 40 %, whole budget (code b2682b3, the AMD VM): 59.69 against the best set's rerun there,
    # 60.47 (-0.78; the same steps as that rerun up to epoch 45, which the log lines confirm): the
    # rule fails and no test cell ran. The EMA read 59.69 at epoch 45 too (the lift rerun's train
    # checkpoint; /work/bench/analysis/ema_vs_student.py), below the student's 60.08 there: the
    # Intel VM's 62.0 against 59.5 was that run's draw. The student at the trial's end, with no
    # fine-tuning, scored 61.82 (epochs 46-50: 61.4, 61.4, 60.5, 60.5, 61.8): below.
    "paper-no-lc-posterior80-adjusted-lift-ema": BEST_V9,
    # The best set's five fine-tuning epochs spent as MTaDCS epochs, the student as the result (the
    # lr drop still at epoch 40). Its asym 40 % whole-budget score is the EMA trial's student at
    # epoch 50, 61.82 against 60.47, read before this trial was written down (the same steps: the
    # trials differ only in which network the fine-tuning stage hands on), so only its sym 50 %
    # half is an untouched test. Rule, written before its sym 50 % trial and the best set's
    # rerun there: it replaces BEST if that score is at most one point under the rerun's; with the
    # warm-up trial below also passing, the choice rule (the better sym 50 % score) picks.
    # Sym 50 %, half budget (code 410df3b, the AMD VM): 31.20 against the best set's rerun there, 30.81
    # (+0.39): the rule holds. The warm-up trial below fails its asym 40 % half, so this is the
    # next best set; its test cells run as mtadcs-best-v10. They (code eda97d7, the AMD VM) scored
    # asym 40 % 70.01 (+3.24 over CE), sym 50 % 66.57 (G 2143 at 95.8 %, 79.4 %), sym 80 % 65.88, and
    # meet the wall-time target (docs/benchmark-log.md): it is mtadcs-best.
    "paper-no-lc-posterior80-adjusted-lift-noft": BEST_V10,
    # The best set with a warm-up of 5 epochs, not 10, and 5 more MTaDCS epochs. In the lift trial's
    # rerun (AMD VM) the warm-up model's validation top-1 by epoch was 22.9, 27.5, 28.9, 25.8,
    # 34.5, 27.3, 37.6, 34.5, 39.3, 33.1: the 1000 verified samples are fitted by about epoch 5
    # (400 steps are 51 passes over them), and the last five epochs add nothing the first
    # selection round can use, while G's 3000-odd samples get 200 more steps. Rule, written before
    # either of its trials: it replaces BEST if its asym 40 % whole-budget score is at least one
    # point over the best set's rerun (60.47) and its sym 50 % half-budget score at most one point
    # under that rerun's.
    # Sym 50 %, half budget (code 410df3b, the AMD VM): 31.59 against 30.81 (+0.78). Asym 40 %, whole
    # budget (same code): 59.50 against 60.47 (-0.97): the rule fails; not adopted, no test cell.
    "paper-no-lc-posterior80-adjusted-lift-warmup5": BEST_V11,
    # Validation, whole budget (code bdccfc0): sym 50 % 31.0 against CE's 27.9 (+3.1), the best
    # seedless score at sym 50 % so far (seedless-selfseed50-kept-posterior 29.1, SEEDLESS 26.0);
    # against the validation images' clean labels 59.3 % (CE about 50), every class predicted.
    # G is all of S (recall 100 % in every class). Written before its sym 10 % trial: by the
    # seedless rule (the smallest worst gap to CE over sym 10 % and sym 50 %) it replaces SEEDLESS
    # if its sym 10 % gap is above -1.94 (SEEDLESS's and the self-seed set's worst); its test
    # cells then run as mtadcs-seedless-v5 at sym 10 %, sym 50 % and asym 40 %.
    # Sym 10 % (whole budget, code bdccfc0): 65.7 against CE's 63.8 (+1.9). Its worst gap, +1.9,
    # is above -1.94: it is the next seedless set.
}
