"""params.yaml → typed, validated config objects: the one source of truth for every knob.

The file has one section per concern (data, noise, model, method, optim, train, finetune,
evaluate, runtime, tracking, report) holding the defaults, and `runs:`, a dict of named
grid cells. A cell overrides any section partially (`runs.c10-sym20.noise.rate: 0.2`);
`resolve_cell` merges the cell onto the defaults and validates the result.

Every section forbids unknown keys and checks types and ranges, so a typo or an
out-of-range value stops `load_params` with one line naming the key, the value and
what is allowed — before any work starts. Every cell is resolved at load time for the
same reason: a typo in the last cell must not surface hours into a `dvc repro`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pipeline.errors import UserError

SECTIONS = (
    "data", "noise", "model", "method", "optim", "train",
    "finetune", "evaluate", "runtime", "tracking", "report",
)
CELL_NAME = re.compile(r"^[A-Za-z0-9_-]+$")  # DVC param tracking breaks on dotted keys

DatasetKind = Literal["cifar10", "cifar100", "digits", "npz", "folder", "webvision50"]
DATASET_KINDS: tuple[str, ...] = get_args(DatasetKind)
# Datasets delivered with clean labels (noise is injected); folder and WebVision labels are
# of unknown correctness, so they have no precision/recall and kNN votes with current labels.
CLEAN_LABELLED = ("cifar10", "cifar100", "digits", "npz")
# The asymmetric map a dataset brings; any other dataset flips c -> c+1 ("next").
OWN_ASYM_MAP = {"cifar10": "cifar10", "cifar100": "cifar100"}

# The method switches of the paper's Table 3, in its order, with the names it prints.
SWITCHES = {"lof": "LOF", "confidence_set": "CS", "removal": "SR", "contrastive": "CL",
            "mixup": "Mixup", "label_correction": "LC"}
FULL, CROSS_ENTROPY, MIXUP = "MTaDCS (full)", "Cross-Entropy", "Mixup"


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataConfig(Section):
    dataset: DatasetKind = "digits"
    root: str = "data/raw"  # where downloads and archives live
    path: str | None = None  # npz file, folder/CSV, or WebVision root
    ilsvrc_root: str | None = None  # ILSVRC12 val in class folders (webvision50 only)
    download: bool = True
    image_size: int | None = Field(None, gt=0)
    num_classes: int | None = Field(None, ge=2)

    @model_validator(mode="after")
    def _path_needed(self) -> DataConfig:
        if self.dataset in ("npz", "folder") and not self.path:
            raise ValueError(f"data.path is required for dataset '{self.dataset}'")
        return self

    @property
    def skip_reason(self) -> str | None:
        """Why a cell on this data cannot run here (WebVision without its data), or None."""
        if self.dataset == "webvision50" and not self.path:
            return "data.path not set (WebVision 1.0 root)"
        return None


class NoiseConfig(Section):
    kind: Literal["none", "sym", "asym", "file"] = "sym"
    rate: float = Field(0.5, ge=0.0, le=1.0)
    sym_convention: Literal["any", "other"] = "any"
    asym_map: Literal["cifar10", "cifar100", "next"] | None = None  # None: from the dataset
    file: str | None = None  # CIFAR-N .pt, or CSV/Parquet of index,label
    file_key: str | None = None  # e.g. worse_label
    seed: int = Field(0, ge=0)
    init_per_class: int = Field(20, ge=1)
    # Simulated noise: G starts from a verified seed (init_per_class clean samples a class) or,
    # as for real noise and a user's own labels, from all of S (no seed, nothing protected).
    init: Literal["verified", "all"] = "verified"

    @model_validator(mode="after")
    def _file_needed(self) -> NoiseConfig:
        if self.kind == "file" and not self.file:
            raise ValueError("noise.file is required when noise.kind is 'file'")
        return self

    @property
    def real_noise(self) -> bool:
        """Real noise (delivered labels or a label file): G starts as the whole set."""
        return self.kind in ("none", "file")

    @property
    def seeded(self) -> bool:
        """G starts from a verified seed: simulated noise with init 'verified'."""
        return not self.real_noise and self.init == "verified"

    def asym_map_for(self, dataset: str) -> str:
        """noise.asym_map, or the dataset's own map (CIFAR-10/100); other datasets flip c -> c+1."""
        return self.asym_map or OWN_ASYM_MAP.get(dataset, "next")


class ModelConfig(Section):
    arch: Literal["preact_resnet18", "resnet18"] = "preact_resnet18"
    width: int = Field(64, gt=0)
    proj_dim: int = Field(128, gt=0)

    @model_validator(mode="after")
    def _torchvision_width(self) -> ModelConfig:
        if self.arch == "resnet18" and self.width != 64:
            raise ValueError(f"model.width must be 64 for arch resnet18 (torchvision's), got {self.width}")
        return self


class MethodConfig(Section):
    # Table 3 ablation switches; all off = cross-entropy on every sample.
    # (keeps_all and uses_predictions, below the fields, say what the switches imply)
    lof: bool = True
    confidence_set: bool = True
    removal: bool = True
    contrastive: bool = True
    mixup: bool = True
    label_correction: bool = True
    # Selection (Eq. 2-3)
    lof_neighbors: int = Field(10, ge=1)
    lof_threshold: float = Field(1.5, gt=0.0)
    lof_space: Literal["feature", "projection"] = "feature"
    lof_backend: Literal["auto", "sklearn", "torch"] = "auto"
    # Variants beyond the paper (each off by default; README "Method variants" gives the sources):
    # LOF fitted on the class's candidates (the paper) or on its members of G, scoring candidates.
    lof_reference: Literal["candidates", "G"] = "candidates"
    # A per-class two-component GMM on per-sample loss must also call a candidate clean.
    loss_filter: Literal["none", "gmm"] = "none"
    # Selection, removal and correction on the model's predictions or its momentum (EMA) copy's.
    selection_model: Literal["student", "ema"] = "student"
    # Warm-up on the verified seed (the paper) or on all of S, G reset to the seed afterwards.
    warmup_set: Literal["verified", "all"] = "verified"
    # Use of the samples outside G: FixMatch pseudo-labels (weak view, from the model
    # `selection_model` names) learnt on a strong view where confident enough; or their given
    # labels learnt through a noise transition matrix estimated on the verified seed after an
    # all-data warm-up (forward correction, GLC).
    semi_supervised: Literal["none", "fixmatch", "forward"] = "none"
    fixmatch_threshold: float = Field(0.95, gt=0.0, le=1.0)
    fixmatch_lambda: float = Field(1.0, ge=0.0)  # weight of the loss on samples outside G (either variant)
    fixmatch_ratio: float = Field(1.0, gt=0.0)  # unlabelled batch = ratio x batch_size (FixMatch's mu)
    # Removal for runs without a verified seed. removal_patience: a member of G leaves only after
    # its prediction disagreed with its label this many selection rounds in a row (1: the paper's
    # single prediction); min_class_keep: removal never takes a class's G below this share of
    # the samples carrying its label; removal_max_prob: removal takes only members whose predicted
    # probability for their label is below this (1: no limit, the paper), so a weak model's
    # uncertain disagreements, which are mostly its own errors at low noise, do not empty G (a
    # ceiling above 0.5 changes nothing: a disagreeing member gives its label at most 0.5).
    # min_class_keep "auto": each class's share is the share of its samples a per-class loss GMM
    # calls clean at the first selection round (the warm-up model, which has seen all of S alike),
    # held for the run: about 0.5 at 50 % noise, 0.75 at 10 % (a fixed share must guess the rate).
    removal_patience: int = Field(1, ge=1)
    min_class_keep: float | Literal["auto"] = 0.0
    # selection_patience: a sample outside G is selected only after its prediction agreed with
    # its label this many rounds in a row (1: the paper's single agreement). Wrong labels that
    # the model predicts on some rounds and not on others (the moving trace again) stay out.
    selection_patience: int = Field(1, ge=1)
    # A prediction agrees with its label (Eq. 2's entry, Eq. 3's stay) only when the model gives
    # the label at least this probability (0: any agreement, the paper). At sym 50 % a quarter of
    # the samples entering the best set's G were mislabelled; an even-odds cut of its final G
    # raised its precision from 93 % to 96 %.
    agreement_min_prob: float = Field(0.0, ge=0.0, lt=1.0)
    # What "agrees" means for Eq. 2's candidates and Eq. 3's removal: "prediction", the paper's
    # (the model's argmax is the label, at agreement_min_prob or more), or "posterior": the
    # probability that the label is right given the image and the label, under the noise's
    # transition matrix T = p(given | true), is at least posterior_min. T is estimated each
    # round by the confident joint (Northcutt et al., JAIR 2021) of the selecting model's
    # probabilities over S; the posterior is p(y|x) T[y,y] / sum_j p(j|x) T[j,y]. Under
    # symmetric noise it is a per-rate threshold on p(y|x) (at 50 % and posterior_min 0.9:
    # p(y|x) >= 0.5, agreement_min_prob's even odds); under asymmetric noise a label no other
    # class is flipped into is right whatever the model predicts, and one that many are flipped
    # into needs a sure prediction.
    agreement: Literal["prediction", "posterior"] = "prediction"
    posterior_min: float = Field(0.9, gt=0.0, lt=1.0)
    # After each selection round, every class of G smaller than this share of the median class's
    # size in G is topped up with the non-members of its label the model finds most likely to
    # carry it (0: off, the paper). For confusions between classes (asymmetric noise), where
    # prediction agreement admits few samples of the class the model mistakes for another.
    min_class_share: float = Field(0.0, ge=0.0, le=1.0)
    # Logit-adjusted loss (Menon et al., ICLR 2021) on G: the classification loss adds log of
    # each class's share of the epoch's training draws over its share under a target prior, so
    # the model predicts as if G were drawn with the target's class shares ("uniform", or
    # "given": those of the delivered labels). "none": the paper. Aimed at asymmetric noise,
    # where a G short of the flipped classes' images makes the model predict them less and
    # selection by agreement then admits fewer of them, round after round. "given" is for classes
    # truly imbalanced in the data: under asymmetric noise the delivered shares carry the flips
    # (asym 40 %: deer 0.6x, horse 1.4x), so it would teach the flipped classes less; use "uniform".
    logit_adjustment: Literal["none", "uniform", "given"] = "none"
    # The classification loss on G (L_CE of Eq. 5, with mixup's soft targets): "ce", the paper's
    # cross-entropy, or "gce", the generalized cross-entropy (Zhang & Sabuncu, NeurIPS 2018) with
    # exponent gce_q (0.7, its paper's CIFAR value): CE's gradient scaled by p(label) ** q, so
    # the samples the model finds unlikely pull less; for runs where G stays noisy (no verified seed).
    classification_loss: Literal["ce", "gce"] = "ce"
    # Importance reweighting of the classification loss (Liu & Tao, TPAMI 2016): after each
    # selection round every sample weighs by the probability that its label is right given the
    # image and the label, P(y right | x, y), the posterior agreement "posterior" thresholds (T by
    # the confident joint of that round's predictions); a batch's loss is the weighted mean, so a
    # likely-wrong label pulls less without the step shrinking. Until the first round every
    # weight is 1; a label known right (the verified seed under keep_verified, a kept self-seed)
    # weighs 1; fine-tuning keeps the last round's weights. "posterior_per_class": the same weights
    # divided by their mean over the samples sharing the label, so they rank samples within a
    # class and every class keeps its share of the loss (with "posterior", a class the model
    # does not predict yet gets low posteriors, so less weight, so it is learnt still less: on
    # the validation split at sym 50 % two classes were never predicted). "none": the paper.
    # For runs whose G stays noisy (no verified seed), where a hard cut by a weak model throws
    # clean samples away with the noisy ones.
    loss_weights: Literal["none", "posterior", "posterior_per_class"] = "none"
    # Soft membership of G for the samples outside it: "posterior" makes every epoch that draws
    # its steps (optim / finetune iters_per_epoch "S" or a number) draw from all of S, a member of
    # G with weight 1 and a non-member with P(label right | x, label), the posterior above, from
    # the last selection round (0 until the first). A hard cut leaves the correctly labelled
    # samples the model is not yet sure of out of training for good; here they count in
    # proportion to how likely their label is right (importance sampling of the reweighted loss,
    # Liu & Tao 2016, with G's members taken as right). Only members of G are queries or keys of
    # Eq. 4. "lift": a non-member's weight is the posterior's margin over even odds,
    # max(0, 2 P - 1): a label no more likely right than wrong is not drawn. Under symmetric noise
    # the posterior has a floor (about 0.5 at 50 % noise for a label the model gives 10 %, the
    # wrong labels spreading over K - 1 classes), so "posterior" draws those near-coin-flip labels
    # in bulk (40 % of the draws at sym 50 % on validation, 47 % of them right); the margin keeps
    # the draws of doubtful, likely right labels (77 % right there). "none": the paper (draws from G alone).
    outside_g_draws: Literal["none", "posterior", "lift"] = "none"
    gce_q: float = Field(0.7, gt=0.0, le=1.0)
    removal_max_prob: float = Field(1.0, gt=0.0, le=1.0)
    # Without a verified seed: after the warm-up on S, G restarts from the k samples of each label
    # that the warm-up model gives the highest probability for that label (a seed the model picks
    # itself), and grows by Eq. 2-3 as from a verified one. 0: the paper's real-noise rule (G = S,
    # pruned by removal).
    self_seed_per_class: int = Field(0, ge=0)
    # Keep that self-picked seed in G all run, as a verified seed is kept (keep_verified): removal
    # and Eq. 7 leave it alone. False: it is G's first members like any other, and only the round
    # that picked it leaves it alone.
    self_seed_keep: bool = False
    keep_verified: bool = True  # the verified initial subset (simulated noise) is never removed or relabelled
    # Algorithm 1 ends with Eq. 7, so labels corrected in the last round would leave G for good;
    # true runs Eq. 2-3 once more after it so they can reach fine-tuning (false: the paper's order).
    final_selection: bool = True
    # Local contrastive learning (Eq. 4). "auto": 0.999 per step at the paper's 390 steps an
    # epoch (CIFAR, batch 128), scaled so the key encoder trails by as many epochs on any run.
    moco_momentum: float | Literal["auto"] = "auto"
    queue_size: int = Field(10_000, ge=1)
    temperature: float = Field(0.1, gt=0.0)
    lambda_lcl: float = Field(1.0, ge=0.0)
    # Mixup CE (Eq. 5)
    mixup_alpha: float = Field(1.0, ge=0.0)
    # Label correction (Eq. 7); alpha is rescaled to the schedule when reference epochs are set
    lc_alpha: float = Field(0.01, gt=0.0, le=1.0)
    lc_gamma: float = Field(0.8, gt=0.0, lt=1.0)
    # Label-correction rounds of the schedule alpha was set for (paper: 250 - 10 warm-up = 240); when
    # set, alpha is rescaled so this run's T_max - T_P rounds decay the given label as those did.
    lc_alpha_reference_rounds: int | None = Field(None, ge=1)
    # Training augmentation (RandAugment, two views)
    randaugment_ops: int = Field(2, ge=0)
    randaugment_magnitude: int = Field(9, ge=0, le=30)

    @field_validator("moco_momentum", "min_class_keep")
    @classmethod
    def _share_or_auto(cls, value: float | str) -> float | str:
        if value != "auto" and not 0.0 <= value <= 1.0:
            raise ValueError("must be 'auto' or lie in [0, 1]")
        return value

    @property
    def switches(self) -> dict[str, bool]:
        """The Table 3 switches of this method, in the paper's order."""
        return {name: getattr(self, name) for name in SWITCHES}

    @model_validator(mode="after")
    def _variant_needs(self) -> MethodConfig:
        if self.lof_reference == "G" and not (self.lof and self.confidence_set):
            raise ValueError("method.lof_reference 'G' needs lof and confidence_set on (LOF fitted on G)")
        if self.semi_supervised != "none" and self.keeps_all:
            raise ValueError(f"method.semi_supervised {self.semi_supervised!r} needs lof or confidence_set on "
                             "(G = S leaves nothing outside G)")
        if self.self_seed_keep and not self.self_seed_per_class:
            raise ValueError("method.self_seed_keep keeps the seed self_seed_per_class picks: set self_seed_per_class "
                             "(or drop self_seed_keep)")
        if self.self_seed_per_class and not self.confidence_set:
            raise ValueError("method.self_seed_per_class needs confidence_set on: without it G is all of S or "
                             "rebuilt every epoch, so a seed would be the whole training set or thrown away")
        if self.classification_loss == "gce" and self.logit_adjustment != "none":
            raise ValueError("method.logit_adjustment needs classification_loss 'ce': its shift gives the target prior "
                             "only where the loss is minimised at softmax = p(y | x), which GCE is not "
                             "(at q = 0.7 about 30 % of the shift would act)")
        if self.agreement == "posterior" and self.agreement_min_prob > 0:
            raise ValueError("method.agreement 'posterior' replaces agreement_min_prob's rule: set one of them "
                             "(posterior_min is the posterior's threshold)")
        if self.outside_g_draws != "none" and self.loss_weights != "none":
            raise ValueError("method.outside_g_draws already draws each non-member in proportion to the posterior that "
                             "loss_weights would weigh it by (it would count twice): set one of them")
        if self.outside_g_draws != "none" and self.keeps_all:
            raise ValueError(f"method.outside_g_draws {self.outside_g_draws!r} needs lof or confidence_set on "
                             "(G = S leaves nothing outside G)")
        if self.semi_supervised == "forward" and self.warmup_set != "all":
            raise ValueError("method.semi_supervised 'forward' needs warmup_set 'all': the transition matrix is "
                             "read off a model trained on the noisy labels")
        return self

    @property
    def needs_key_encoder(self) -> bool:
        """The momentum encoder serves Eq. 4's keys, and the EMA-selection variant."""
        return self.contrastive or self.selection_model == "ema"

    @property
    def keeps_all(self) -> bool:
        """G = S every epoch (the CE / Mixup rows): with neither LOF nor the confidence set,
        selection keeps everything and removal has nothing to refine."""
        return not (self.lof or self.confidence_set)

    @property
    def uses_predictions(self) -> bool:
        """Whether an epoch needs the model's predictions over S: for selection, label
        correction or loss weights. Without them the per-epoch extraction is skipped."""
        return not self.keeps_all or self.label_correction or self.loss_weights != "none"


def _steps_setting(value: str | int) -> str | int:
    if isinstance(value, int) and value < 1:
        raise ValueError("must be 'G', 'S' or a number of steps >= 1")
    return value


class OptimConfig(Section):
    """The schedule shared by warm-up and the MTaDCS epochs (one lr schedule over both)."""

    epochs: int = Field(250, ge=1)  # T_max, warm-up included
    warmup_epochs: int = Field(10, ge=0)  # T_P
    lr: float = Field(0.1, gt=0.0)
    lr_milestones: list[int] = Field(default_factory=lambda: [125, 200])
    lr_gamma: float = Field(0.1, gt=0.0, le=1.0)
    momentum: float = Field(0.9, ge=0.0, lt=1.0)
    weight_decay: float = Field(1e-4, ge=0.0)
    batch_size: int = Field(128, ge=1)
    # What one epoch is: "G", one pass over the confidence set (the paper); "S", |S|/batch steps
    # drawn from G (each method then spends a CE epoch's steps); or a fixed number of steps.
    iters_per_epoch: Literal["G", "S"] | int = "G"
    # With iters_per_epoch S or a number: draw every class of G equally often.
    class_balanced: bool = False

    @field_validator("iters_per_epoch")
    @classmethod
    def _positive_steps(cls, value: str | int) -> str | int:
        return _steps_setting(value)

    @model_validator(mode="after")
    def _schedule(self) -> OptimConfig:
        if self.class_balanced and self.iters_per_epoch == "G":
            raise ValueError("optim.class_balanced needs iters_per_epoch 'S' or a number (a pass over G has no draws)")
        if self.warmup_epochs > self.epochs:
            raise ValueError(f"optim.warmup_epochs ({self.warmup_epochs}) exceeds optim.epochs ({self.epochs})")
        bad = [m for m in self.lr_milestones if not 0 < m <= self.epochs]
        if bad:
            raise ValueError(f"optim.lr_milestones {bad} must lie in 1..{self.epochs}")
        return self


class TrainConfig(Section):
    feature_every: int = Field(10, ge=1)  # store float16 features every k epochs (and the last)


class FinetuneConfig(Section):
    epochs: int = Field(70, ge=0)
    lr: float = Field(0.001, gt=0.0)
    momentum: float = Field(0.9, ge=0.0, lt=1.0)
    weight_decay: float = Field(1e-4, ge=0.0)
    batch_size: int = Field(128, ge=1)
    mixup_alpha: float = Field(1.0, ge=0.0)  # 0 turns mixup off
    iters_per_epoch: Literal["G", "S"] | int = "G"  # as optim.iters_per_epoch, for the fine-tuning epochs
    # The network of the MTaDCS epochs that fine-tuning starts from, so with epochs 0 the run's
    # result: the student (the paper) or its momentum (EMA) copy, Eq. 4's key encoder, whose
    # weights average the student's over its last steps (Mean Teacher evaluates that average:
    # Tarvainen & Valpola, NeurIPS 2017). Needs the key encoder (method.contrastive or
    # selection_model ema).
    start: Literal["student", "ema"] = "student"

    @field_validator("iters_per_epoch")
    @classmethod
    def _positive_steps(cls, value: str | int) -> str | int:
        return _steps_setting(value)


class EvaluateConfig(Section):
    knn_k: int = Field(200, ge=1)
    knn_temperature: float = Field(0.1, gt=0.0)
    knn_labels: Literal["auto", "clean", "current"] = "auto"  # auto: clean where known


class RuntimeConfig(Section):
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int = Field(0, ge=0)  # 0: leave torch's default
    workers: int = Field(0, ge=0)  # DataLoader worker processes
    # loader: per-image views in DataLoader workers; resident: the images as one uint8 tensor on
    # the device, augmented a batch at a time (needs in-memory images under 64 px); auto:
    # resident on CUDA, loader on CPU
    data_path: Literal["auto", "loader", "resident"] = "auto"
    # data-parallel processes of a training stage (torchrun): on CUDA one GPU each
    processes: int = Field(1, ge=1)
    # feature extraction and evaluation (no gradients); auto: 512 on CUDA, 64 on CPU, where a
    # large batch spills the caches (an extraction pass over CIFAR-10-5k takes 4.6 s at 512, 1.8 s at 64)
    eval_batch_size: int | Literal["auto"] = "auto"
    amp: bool = True  # autocast on CUDA only
    channels_last: bool = True  # NHWC model and batches, on CUDA and CPU alike (faster on both)
    seed: int = Field(0, ge=0)
    progress: Literal["auto", "bar", "log"] = "auto"

    @field_validator("eval_batch_size")
    @classmethod
    def _batch_or_auto(cls, value: int | str) -> int | str:
        if value != "auto" and value < 1:
            raise ValueError("must be 'auto' or a batch of 1 or more images")
        return value


class TrackingConfig(Section):
    enabled: bool = True
    experiment: str = "mtadcs-paper"
    log_model: bool = True


class ReportConfig(Section):
    figure_cell: str | None = None  # the cell whose traces feed Figures 4 and 5; None: the first


class CellConfig(Section):
    """One grid cell with every section resolved (defaults merged with the cell's overrides)."""

    name: str
    data: DataConfig
    noise: NoiseConfig
    model: ModelConfig
    method: MethodConfig
    optim: OptimConfig
    train: TrainConfig
    finetune: FinetuneConfig
    evaluate: EvaluateConfig
    runtime: RuntimeConfig
    tracking: TrackingConfig

    @model_validator(mode="after")
    def _one_seed(self) -> CellConfig:
        if self.method.self_seed_per_class and self.noise.seeded:
            raise ValueError("method.self_seed_per_class picks a seed for runs without one, and noise.init "
                             "'verified' gives one; set it to 0, or noise.init to all")
        if self.method.outside_g_draws != "none" and self.optim.iters_per_epoch == "G":
            raise ValueError("method.outside_g_draws draws each epoch's steps from all of S: set optim.iters_per_epoch "
                             "to 'S' or a number of steps (a pass over G has no draws)")
        if self.method.outside_g_draws != "none" and self.optim.class_balanced:
            raise ValueError("method.outside_g_draws and optim.class_balanced each set the draw weights: set one of them")
        if self.finetune.start == "ema" and not self.method.needs_key_encoder:
            raise ValueError("finetune.start 'ema' starts from the momentum encoder, which only runs with "
                             "method.contrastive true or selection_model 'ema': turn one on, or start from 'student'")
        return self


@dataclass(frozen=True)
class CellIdentity:
    """What a cell is, for tables and tags: where it lands in the paper's tables and its row."""

    dataset: str
    noise: str
    rate: float | None  # None for real noise (delivered labels, a label file): no rate was injected
    convention: str
    switches: dict[str, bool]
    seeded: bool = True  # G started from a verified seed (the paper's CIFAR setting)

    @property
    def row(self) -> str:
        return row_name(self.switches)

    def as_dict(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "noise": self.noise, "rate": self.rate,
                "sym_convention": self.convention, "switches": dict(self.switches), "row": self.row,
                "seeded": self.seeded}


def cell_identity(cell: CellConfig) -> CellIdentity:
    rate = None if cell.noise.real_noise else cell.noise.rate
    return CellIdentity(dataset=cell.data.dataset, noise=cell.noise.kind, rate=rate,
                        convention=cell.noise.sym_convention, switches=cell.method.switches,
                        seeded=cell.noise.seeded)


def row_name(switches: Mapping[str, bool]) -> str:
    """The paper's row for a set of method switches (a missing switch counts as off).

    All on: the full method; all off: Cross-Entropy (Table 1, and Table 3's "none"); mixup
    alone: Table 1's Mixup; otherwise the switches that are on, in Table 3's order, joined by "+".
    """
    on = [k for k in SWITCHES if bool(switches.get(k, False))]
    if len(on) == len(SWITCHES):
        return FULL
    if not on:
        return CROSS_ENTROPY
    if on == ["mixup"]:
        return MIXUP
    return "+".join(SWITCHES[k] for k in on)


class Params(Section):
    data: DataConfig = DataConfig()
    noise: NoiseConfig = NoiseConfig()
    model: ModelConfig = ModelConfig()
    method: MethodConfig = MethodConfig()
    optim: OptimConfig = OptimConfig()
    train: TrainConfig = TrainConfig()
    finetune: FinetuneConfig = FinetuneConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    runtime: RuntimeConfig = RuntimeConfig()
    tracking: TrackingConfig = TrackingConfig()
    report: ReportConfig = ReportConfig()
    runs: dict[str, dict[str, dict[str, Any]]] = Field(default_factory=dict)


def _describe_error(err: ValidationError, prefix: str = "") -> str:
    """The first validation error as 'key = value: what is allowed'."""
    first = err.errors()[0]
    key = ".".join(str(p) for p in (prefix, *first["loc"]) if p != "")
    if first["type"] == "extra_forbidden":
        return f"{key}: unknown key (check the spelling against params.yaml's defaults)"
    if first["type"] == "missing":
        return f"{key}: required key is missing"
    message = first["msg"].removeprefix("Value error, ")
    if not first["loc"] or (first["type"] == "value_error" and isinstance(first["input"], dict)):
        return f"{prefix + ': ' if prefix else ''}{message}"  # a section's own check names its keys
    return f"{key} = {first['input']!r}: {message}"


def resolve_cell(params: Params, name: str) -> CellConfig:
    """Merge cell `name`'s overrides onto the section defaults and validate the result."""
    if name not in params.runs:
        raise UserError(f"unknown run cell '{name}': params.yaml runs has {', '.join(params.runs) or 'no cells'}")
    overrides = params.runs[name]
    unknown = set(overrides) - set(SECTIONS) - {"report"}
    if unknown:
        raise UserError(f"runs.{name}.{sorted(unknown)[0]}: unknown section (allowed: {', '.join(SECTIONS)})")
    merged: dict[str, Any] = {"name": name}
    for section in CellConfig.model_fields:
        if section == "name":
            continue
        base = getattr(params, section).model_dump()
        try:
            merged[section] = type(getattr(params, section)).model_validate({**base, **overrides.get(section, {})})
        except ValidationError as err:
            raise UserError(f"{_describe_error(err, f'runs.{name}.{section}')}") from None
        except TypeError:
            raise UserError(f"runs.{name}.{section}: expected a mapping of keys") from None
    try:
        return CellConfig(**merged)
    except ValidationError as err:  # a check across sections
        raise UserError(_describe_error(err, f"runs.{name}")) from None


def parse_params(raw: Any, source: str = "params.yaml") -> Params:
    """Validate an already-loaded params mapping; errors name `source`."""
    if not isinstance(raw, dict):
        raise UserError(f"{source}: expected a mapping of sections at the top level")
    try:
        params = Params.model_validate(raw)
    except ValidationError as err:
        raise UserError(f"{source}: {_describe_error(err)}") from None
    for name in params.runs:
        if not CELL_NAME.match(name):
            raise UserError(f"{source}: runs.{name}: cell names may hold letters, digits, '-' and '_' only (DVC breaks on dots)")
        try:
            resolve_cell(params, name)
        except UserError as err:
            raise UserError(f"{source}: {err}") from None
    return params


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate a params file, stopping with one line on the first problem."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: file not found (run from the project root or pass --params)") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise UserError(f"{path}:{where} is not valid YAML ({getattr(err, 'problem', err)})") from None
    return parse_params(raw, str(path))
