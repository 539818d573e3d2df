"""The protocol: `params.yaml` parsed into typed, validated objects.

`params.yaml` is the single source of every choice that affects a number in a table. It has a shared block per
*profile* (data, splits, budget, evaluation) and a *recipe* per detector (only what the official recipe fixes),
with optional per-profile overrides. `resolve(params, detector)` merges them into one `RunSpec`, the only
object the engine sees: config builds objects, objects never read config.

Validation errors name the key and the allowed keys/values, e.g.
``params.yaml: profiles.mini.train.epohcs: unknown key; allowed: epochs, batch_size, ...``.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
import typing
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from sep_bench.protocol.cluster import ClusterSettings
from sep_bench.protocol.syntax import check_alignment, check_preprocess, perturbation_steps

__all__ = [
    "ProtocolError",
    "Params",
    "Profile",
    "FullSize",
    "profile_pretrained",
    "LearningCheck",
    "DataSpec",
    "TrainSpec",
    "EvalSpec",
    "LoaderSpec",
    "Recipe",
    "RunSpec",
    "load_params",
    "resolve",
    "resolve_released",
    "ReleasedEntry",
    "deep_merge",
    "BudgetSpec",
    "apply_budget",
    "FULL_BUDGET",
]



class ProtocolError(ValueError):
    """A params.yaml problem, with a message that names the key and what is allowed."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ValSplit(_Strict):
    """How the model-selection slice is held out of the TRAIN split (never the test generators).

    Samples are grouped (by `group_pattern`'s `group` match on the file name, else one group per file) so that
    e.g. crops of one photograph never land on both sides. `groups` names the held-out groups explicitly;
    otherwise a deterministic hash of the group name puts `fraction` of the groups in validation.
    """

    fraction: float = Field(0.1, ge=0.0, lt=1.0)
    group_pattern: str | None = None
    groups: list[str] | None = None

    @field_validator("group_pattern")
    @classmethod
    def _has_group(cls, v: str | None) -> str | None:
        if v is not None and "(?P<group>" not in v:
            raise ValueError("group_pattern must contain a named group '(?P<group>...)'")
        return v


class MinigenSpec(_Strict):
    """Build options of the embedded benchmark (only for `source: minigen`)."""

    seed: int = 0
    image_size: int = Field(128, ge=32)
    n_train_real: int = Field(280, ge=4)
    n_val_real: int = Field(40, ge=2)
    n_test_real: int = Field(100, ge=2)
    ae_steps: int | None = Field(None, ge=1)
    # sha256 of the build's pixels (minigen.json `pixels_sha256`): the data stage refuses a build that differs
    digest: str | None = Field(None, pattern=r"^[0-9a-f]{64}$")


class DataSpec(_Strict):
    source: Literal["minigen", "external"]
    layout: Literal["genimage", "aigcbench", "folder"] = "genimage"
    root: str | None = None  # external data folder; minigen lives in data/prepared/<profile>
    # Where the training images are when they are not in `root` (AIGCBenchmark trains on the ProGAN set).
    train_root: str | None = None
    train_layout: Literal["genimage", "aigcbench", "folder"] | None = None
    train_generators: list[str]
    test_generators: list[str]
    val: ValSplit = ValSplit()
    # Names as the layout reader reports them -> display names in tables (e.g. imagenet_ai_0419_sdv4 -> SDv1.4).
    generator_aliases: dict[str, str] = {}
    max_train_images: int | None = Field(None, ge=1)
    max_test_images_per_generator: int | None = Field(None, ge=1)
    max_val_images: int | None = Field(None, ge=1)  # a class-balanced cap on the validation slice (e.g. budgets)
    max_skip_fraction: float = Field(0.01, ge=0.0, le=1.0)
    max_image_pixels: int = Field(89_478_485, ge=1)  # PIL's own default bomb limit
    minigen: MinigenSpec | None = None

    @model_validator(mode="after")
    def _minigen_block(self) -> "DataSpec":
        if self.source == "minigen" and self.minigen is None:
            object.__setattr__(self, "minigen", MinigenSpec())
        if self.source == "external" and not self.root:
            raise ValueError("source: external needs root: the dataset folder")
        if not self.test_generators:
            raise ValueError("test_generators must list at least one generator")
        return self


def _refuse_moved_workers(data: Any, block: str) -> Any:
    """`num_workers` moved to the loader block (speed only: outside the protocol hash and the DVC parameters)."""
    if isinstance(data, dict) and "num_workers" in data:
        raise ValueError(f"{block}.num_workers is now loader.{block}_workers (a speed setting: no stage reruns when "
                         "it changes); move it there")
    return data


class TrainSpec(_Strict):
    epochs: int = Field(1, ge=1)
    batch_size: int = Field(32, ge=1)
    max_steps_per_epoch: int | None = Field(None, ge=1)
    hflip: bool = True
    select_metric: Literal["acc", "ap", "loss"] = "acc"
    checkpoint_every_steps: int | None = Field(None, ge=1)
    grad_clip: float | None = Field(None, gt=0)
    # Frozen-backbone detectors only: compute backbone features once (see engine.feature_cache for the deviation).
    feature_cache: bool = False
    # Checkpoint selection: `val` (the held-out slice of the training generators) or `test` (best Mean test ACC
    # over epochs, as the SEP authors' code did; every epoch's test metrics are kept). See engine.selection.
    select_on: Literal["val", "test"] = "val"
    # Global batch (see engine.batching): `accumulate` forward/backward passes of `batch_size` images per
    # optimiser step; with `global_batch` (an official multi-GPU recipe, e.g. AIDE 32 x 8 = 256) `batch_size` is
    # per process and accumulate = global_batch / (batch_size x processes), derived at run time.
    accumulate: int = Field(1, ge=1)
    global_batch: int | None = Field(None, ge=1)
    # Re-encode every training (and validation) image identically before the views: none, jpeg<quality>, or jpeg
    # (the median quality of the real training JPEGs, read from their quantisation tables). See engine.align.
    align: str = "none"

    @field_validator("align")
    @classmethod
    def _align_syntax(cls, v: str) -> str:
        return check_alignment(v)

    @model_validator(mode="before")
    @classmethod
    def _workers_moved(cls, data: Any) -> Any:
        return _refuse_moved_workers(data, "train")

    @model_validator(mode="after")
    def _one_batch_rule(self) -> "TrainSpec":
        if self.global_batch is not None and self.accumulate != 1:
            raise ValueError("give train.global_batch (accumulation derived from it) or train.accumulate, not both")
        return self


class EvalSpec(_Strict):
    batch_size: int = Field(64, ge=1)

    @model_validator(mode="before")
    @classmethod
    def _workers_moved(cls, data: Any) -> Any:
        return _refuse_moved_workers(data, "eval")
    # Extra evaluations of the same checkpoint under deterministic post-processing (see data.perturb), e.g.
    # jpeg95 for format-aligned evaluation, or the robustness suite: jpeg75, blur2, down0.5, blur1+jpeg75.
    perturbations: list[str] = []
    # Batches of images of one size (read from the headers), for views that keep the image size (e.g. NPR on the
    # full image); logits are the same as with batch size 1. false: batches in sample order.
    bucket_by_size: bool = True
    # Protocol axes (engine.protocol_axes): `align` re-encodes both classes identically (none, jpeg = the real
    # test images' quality, jpeg<q>) as an extra `aligned` evaluation; `preprocess` adds one evaluation per rule
    # (official, center_crop, resize, native) of how a test image is brought to the detector's input size.
    align: str = "none"
    preprocess: list[str] = []
    # The extra evaluations (perturbations, align, preprocess) on a fixed subset of the test images: this many per
    # (generator, class), the first by sha1 of "<generator>/<class>/<file name>", the same on every machine;
    # the clean evaluation always sees every image. null: every image (the genimage and aigcbench profiles).
    variant_subset: int | None = Field(None, ge=1)
    # The extra evaluations on the first this many of `test_generators` only (their `variant_subset`); the clean
    # evaluation still sees every generator. null: every generator. A run budget's cap (params.yaml budgets.ci).
    variant_generators: int | None = Field(None, ge=1)

    @field_validator("align")
    @classmethod
    def _align_syntax(cls, v: str) -> str:
        return check_alignment(v)

    @field_validator("preprocess")
    @classmethod
    def _rules(cls, v: list[str]) -> list[str]:
        return check_preprocess(v)

    @field_validator("perturbations")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        for name in v:
            perturbation_steps(name)
        if len(set(v)) != len(v) or "none" in v:
            raise ValueError("perturbations must be distinct and not 'none' (the clean evaluation always runs)")
        return v


class OptimSpec(_Strict):
    name: Literal["adam", "adamw", "sgd"] = "adam"
    lr: float = Field(1e-4, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    betas: tuple[float, float] = (0.9, 0.999)
    momentum: float = 0.9
    # Recipes that scale the lr with the batch (AIDE, SAFE: lr = blr x batch / 256): `lr` is then the base lr and
    # the optimiser gets lr x (effective batch / lr_base_batch) (linear) or its square root (sqrt).
    lr_scale: Literal["none", "linear", "sqrt"] = "none"
    lr_base_batch: int = Field(256, ge=1)


class ScheduleSpec(_Strict):
    """Learning-rate schedule, applied per step after a linear warm-up.

    - constant; step (x `gamma` every `step_epochs`); cosine (to 0 at the last epoch);
    - poly: (1 - epoch/epochs) ** `power`, per epoch (SSP; the official code counts epochs from 1, so its last
      epoch runs at lr 0; here the first epoch runs at the full lr and the last one above 0);
    - plateau: lr x `gamma` when the validation metric has not improved for `patience` epochs, and training
      stops once the lr falls below `min_lr` (UnivFD's and CNNSpot's early stopping).
    """

    name: Literal["constant", "step", "cosine", "poly", "plateau"] = "constant"
    warmup_epochs: float = Field(0.0, ge=0)
    step_epochs: int = Field(10, ge=1)
    gamma: float = Field(0.1, gt=0, le=1)
    power: float = Field(0.9, gt=0)
    patience: int = Field(5, ge=1)
    min_lr: float = Field(1e-6, ge=0)


class Recipe(_Strict):
    """A detector's recipe after profile overrides: everything that is the detector's own choice."""

    model: dict[str, Any] = {}
    pretrained: bool | str = False
    optim: OptimSpec = OptimSpec()
    schedule: ScheduleSpec = ScheduleSpec()
    train: TrainSpec
    eval: EvalSpec


class LoaderSpec(_Strict):
    """DataLoader settings of training and evaluation (speed only: no number in a table depends on them, so they are
    outside the protocol hash and no DVC stage lists them as a parameter).

    `train_workers` / `eval_workers`: loader processes (every random choice derives from (seed, epoch, sample), so
    results are bit-identical for any count).

    `pin_memory`: auto pins when the device is CUDA. `persistent_workers` keeps the workers of a loader alive
    between its passes (training epochs, the validation after each epoch), so their start-up is paid once.
    `prefetch_factor`: batches each worker prepares ahead (with workers only).
    """

    train_workers: int = Field(0, ge=0)
    eval_workers: int = Field(0, ge=0)
    pin_memory: Literal["auto", True, False] = "auto"
    persistent_workers: bool = True
    prefetch_factor: int = Field(4, ge=1)

    def pin(self, device_type: str) -> bool:
        return device_type == "cuda" if self.pin_memory == "auto" else self.pin_memory


class LoweredBar(_Strict):
    """A detector's own, lower bar in the learning check, with the measured reason (``why``). It stays above chance,
    so a broken training path (about 50%) still fails."""

    min_acc: float = Field(gt=0.5, le=1.0)
    why: str = Field(min_length=1)


class LearningCheck(_Strict):
    """The smoke benchmark's check that training works (report: ``<profile>_learning.md``): every detector reaches
    `min_acc` on its own training generators, unless `exempt` names it with the reason it cannot, or `lowered`
    gives it a lower bar with the reason it plateaus below `min_acc`."""

    min_acc: float = Field(0.85, gt=0.0, le=1.0)
    exempt: dict[str, str] = {}
    lowered: dict[str, LoweredBar] = {}

    @model_validator(mode="after")
    def _lowered_is_lower(self) -> "LearningCheck":
        if both := sorted(set(self.exempt) & set(self.lowered)):
            raise ValueError(f"{both} are both exempt and lowered; a detector is one or the other")
        if high := sorted(k for k, bar in self.lowered.items() if bar.min_acc >= self.min_acc):
            raise ValueError(f"lowered bars of {high} are not below min_acc {self.min_acc}")
        return self

    def bar(self, detector: str) -> float | None:
        """The ACC `detector` must reach; None when it is exempt."""
        if detector in self.exempt:
            return None
        return self.lowered[detector].min_acc if detector in self.lowered else self.min_acc


class FullSize(_Strict):
    """Image counts of the complete data set per generator (reals and fakes together), with where they come from.

    No number in a table depends on them; `benchmarks/gpu_acceptance.py` predicts the cost of a profile's table
    from them (training images = the training generators' ``train`` counts less the validation fraction)."""

    train: dict[str, int] = Field(description="generator -> images of its training split (real + fake)")
    test: dict[str, int] = Field(description="generator -> images of its test split (real + fake)")
    source: str = Field(min_length=1, description="where the counts come from")


class Profile(_Strict):
    description: str = ""
    data: DataSpec
    train: TrainSpec = TrainSpec()
    eval: EvalSpec = EvalSpec()
    loader: LoaderSpec = LoaderSpec()
    device: str = "auto"
    amp: Literal["off", "bf16", "fp16"] = "bf16"  # CUDA only; CPU runs stay fp32 (bit-reproducible)
    channels_last: bool = True                    # CUDA only
    compile: bool = False                         # torch.compile the model for training
    # CPU reproducibility across machines (see sep_bench.engine.determinism): oneDNN off, MKL's conditional
    # numerical reproducibility, ATen's AVX2 kernels on x86; `threads` fixes torch's intra-op thread count,
    # which changes float reductions (null: torch's default, i.e. the machine's core count)
    deterministic: bool = False
    threads: int | None = Field(None, ge=1)
    # a report setting (changes no number, so it is left out of the protocol hash)
    learning_check: LearningCheck | None = None
    # false: no pretrained weights anywhere in this profile (offline runs of the full recipes): every detector's
    # `pretrained` becomes false and the weights its model names beyond it (LGrad's discriminator, DIRE's and
    # DRCT's diffusion models) a random initialisation of the same architecture; recorded, marked in the tables.
    # null: each recipe's own `pretrained` (`profile_pretrained`)
    pretrained: Literal[False] | None = None
    # the full data set's image counts (a fact about the data, outside the protocol hash): cost predictions read it
    full_size: FullSize | None = None


class DetectorBlock(_Strict):
    model: dict[str, Any] = {}
    pretrained: bool | str = False
    optim: OptimSpec = OptimSpec()
    schedule: ScheduleSpec = ScheduleSpec()
    # profile name -> partial {model, pretrained, optim, schedule, train, eval} merged over the above
    overrides: dict[str, dict[str, Any]] = {}


class RunSelection(_Strict):
    detectors: list[str] = Field(min_length=1)
    # Every detector is trained and evaluated once per seed; tables report mean +- std over seeds.
    seeds: list[int] = Field([0], min_length=1)
    # Detectors the pipeline also trains with the checkpoint chosen on the test generators (train.select_on: test;
    # DVC stage selection@<detector>-<seed>) for the selection table: how much test selection inflates the Mean.
    selection: list[str] = []


class TrackingSpec(_Strict):
    uri: str | None = None
    experiment: str = "sep-bench"


class BudgetSpec(_Strict):
    """Caps a named run budget (top-level ``budget: <name>``, e.g. ``dvc exp run -S budget=smoke``) puts on every
    detector of the active profile, over the profile's and the detectors' own values (a detector's epochs or
    batch size never lifts them). Only how much is trained and evaluated changes, never an architecture or a
    preprocessing step; the result is another protocol (its own hash), named in the tables' captions."""

    epochs: int | None = Field(None, ge=1)
    max_steps_per_epoch: int | None = Field(None, ge=1)
    max_train_images: int | None = Field(None, ge=1)
    max_val_images: int | None = Field(None, ge=1)
    max_test_images_per_generator: int | None = Field(None, ge=1)
    variant_subset: int | None = Field(None, ge=1)
    variant_generators: int | None = Field(None, ge=1)

    def describe(self) -> str:
        """``epochs <= 1, max_steps_per_epoch <= 2, ...`` (the caps that are set)."""
        return ", ".join(f"{k} <= {v}" for k, v in self.model_dump().items() if v is not None)


FULL_BUDGET = "full"


def _cap(value: int | None, cap: int | None) -> int | None:
    """`value` limited to `cap` (None: no limit on that side)."""
    if cap is None:
        return value
    return cap if value is None else min(value, cap)


def apply_budget(profile: Profile, recipe: Recipe, budget: BudgetSpec) -> tuple[Profile, Recipe]:
    """The profile and recipe with `budget`'s caps on steps, images and evaluation variants."""
    data = profile.data.model_copy(update={
        "max_train_images": _cap(profile.data.max_train_images, budget.max_train_images),
        "max_val_images": _cap(profile.data.max_val_images, budget.max_val_images),
        "max_test_images_per_generator": _cap(profile.data.max_test_images_per_generator,
                                              budget.max_test_images_per_generator)})
    train = recipe.train.model_copy(update={
        "epochs": _cap(recipe.train.epochs, budget.epochs),
        "max_steps_per_epoch": _cap(recipe.train.max_steps_per_epoch, budget.max_steps_per_epoch)})
    evals = recipe.eval.model_copy(update={
        "variant_subset": _cap(recipe.eval.variant_subset, budget.variant_subset),
        "variant_generators": _cap(recipe.eval.variant_generators, budget.variant_generators)})
    return (profile.model_copy(update={"data": data}),
            recipe.model_copy(update={"train": train, "eval": evals}))


_ENTRY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class ReleasedEntry(_Strict):
    """An evaluation-only entry: the authors' released weights, evaluated under the active profile without training.

    The model is built from ``detectors.<detector>``'s recipe for the active profile (so the released row sees the
    same views as the trained row), with `model` merged over it (e.g. the official architecture where a profile
    scales it down) and `pretrained` (the backbone, only used by detectors whose released file covers part of the
    model, e.g. UnivFD's linear head) replacing the recipe's when given.
    """

    detector: str
    # a local file (relative to the project root, or absolute), or hf-hub:<org>/<repo>/<file in the repo>
    weights: str = Field(min_length=1)
    sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$")  # pin: a different file is an error
    model: dict[str, Any] = {}
    pretrained: bool | str | None = None
    note: str = ""  # where the file comes from (shown in the table caption)


class Params(_Strict):
    profile: str
    # Prefix of the training command in dvc.yaml, e.g. "torchrun --nproc_per_node=8 --no-python" for DDP.
    launcher: str = ""
    run: RunSelection
    tracking: TrackingSpec = TrackingSpec()
    profiles: dict[str, Profile]
    detectors: dict[str, DetectorBlock]
    # Evaluation-only entries (name -> ReleasedEntry); every entry is evaluated for each seed by the DVC stage
    # evaluate_released@<name>-<seed> and gets its own row in the tables.
    released: dict[str, ReleasedEntry] = {}
    # Where each stage runs as a SLURM job (`sep-bench cluster submit`); no number depends on it (outside the hash)
    cluster: ClusterSettings = ClusterSettings()
    # The run budget: `full` (the protocol) or a name of `budgets` whose caps apply to every detector (BudgetSpec)
    budget: str = FULL_BUDGET
    budgets: dict[str, BudgetSpec] = {}

    @model_validator(mode="after")
    def _references(self) -> "Params":
        for name, entry in self.released.items():
            if not _ENTRY_NAME.match(name) or name in self.detectors:
                raise ValueError(
                    f"released.{name}: an entry name must be a plain file name ([A-Za-z0-9._-]) that is not also a "
                    f"detector name (defined detectors: {', '.join(self.detectors)})"
                )
            if entry.detector not in self.detectors:
                raise ValueError(
                    f"released.{name}.detector {entry.detector!r} has no block under detectors:; "
                    f"defined: {', '.join(self.detectors)}"
                )
        if self.profile not in self.profiles:
            raise ValueError(f"profile {self.profile!r} is not defined; defined: {', '.join(self.profiles)}")
        for key, names in (("run.detectors", self.run.detectors), ("run.selection", self.run.selection)):
            missing = [d for d in names if d not in self.detectors]
            if missing:
                raise ValueError(
                    f"{key} names {missing} without a block under detectors:; defined: {', '.join(self.detectors)}"
                )
        for prof_name, prof in self.profiles.items():
            check = prof.learning_check
            for field in ("exempt", "lowered"):
                stray = sorted(set(getattr(check, field)) - set(self.detectors)) if check else []
                if stray:
                    raise ValueError(f"profiles.{prof_name}.learning_check.{field} names {stray}, which have no "
                                     f"block under detectors:; defined: {', '.join(self.detectors)}")
        for name, block in self.detectors.items():
            unknown = set(block.overrides) - set(self.profiles)
            if unknown:
                raise ValueError(
                    f"detectors.{name}.overrides names unknown profile(s) {sorted(unknown)}; "
                    f"defined: {', '.join(self.profiles)}"
                )
        return self

    @model_validator(mode="after")
    def _known_budget(self) -> "Params":
        if self.budget != FULL_BUDGET and self.budget not in self.budgets:
            named = [b for b in self.budgets if b != FULL_BUDGET]
            raise ValueError(f"budget {self.budget!r} is not defined; use {FULL_BUDGET!r} or one of budgets: "
                             f"{', '.join(named) or '(none defined)'}")
        full = self.budgets.get(FULL_BUDGET)
        if full is not None and full.describe():  # listed so that DVC stages can read budgets.<budget>: no caps
            raise ValueError(f"budgets.{FULL_BUDGET}: the name {FULL_BUDGET!r} is the protocol itself and takes no caps "
                             f"(got {full.describe()}); define another budget name for them")
        return self

    def run_budget(self) -> BudgetSpec | None:
        """The caps of the active budget (None for `full`)."""
        return None if self.budget == FULL_BUDGET else self.budgets[self.budget]

    def selection_detectors(self) -> list[str]:
        """The detectors of run.selection that are also in run.detectors: a narrowed run.detectors (e.g.
        ``dvc exp run -S 'run.detectors=[npr,sep]'``) leaves the others out of the selection table, and their
        selection stages record that they were skipped (`skipped_selection`), without editing run.selection."""
        return [d for d in self.run.selection if d in self.run.detectors]

    def skipped_selection(self, detector: str) -> str | None:
        """Why the selection run of `detector` is skipped (it is not in run.detectors), else None."""
        if detector in self.run.detectors:
            return None
        return (f"{detector} is in run.selection but not in run.detectors ({', '.join(self.run.detectors)}): its "
                "selection run is skipped; add it to run.detectors to get its row of the selection table")

    def active_profile(self) -> Profile:
        return self.profiles[self.profile]

    def released_entry(self, name: str) -> "ReleasedEntry":
        """The evaluation-only entry `name` (a ProtocolError naming the defined ones when there is none)."""
        if name not in self.released:
            raise ProtocolError(
                f"params.yaml has no entry released.{name}; defined: {', '.join(self.released) or 'none'}"
            )
        return self.released[name]


def _format_validation_error(err: ValidationError, model: type[BaseModel], prefix: str, source: str) -> str:
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"])
        where = f"{prefix}{loc}" if loc else (prefix.rstrip(".") or "(top level)")
        if e["type"] == "extra_forbidden":
            allowed = _model_at(model, e["loc"][:-1])
            hint = f"; allowed: {', '.join(allowed.model_fields)}" if allowed else ""
            lines.append(f"{source}: {where}: unknown key{hint}")
        else:
            got = e.get("input")
            got_s = "" if isinstance(got, dict) else f" (got {got!r})"
            lines.append(f"{source}: {where}: {e['msg']}{got_s}")
    return "\n".join(lines)


def _model_at(model: type[BaseModel], loc: tuple) -> type[BaseModel] | None:
    """The schema class found by walking `loc` from `model` (dict[str, Model] levels skip their key)."""
    node: Any = model
    for part in loc:
        if isinstance(node, tuple):  # ("dict", value type): `part` is a free-form key
            node = node[1]
            continue
        if not (isinstance(node, type) and issubclass(node, BaseModel)) or str(part) not in node.model_fields:
            return None
        node = _unwrap(node.model_fields[str(part)].annotation)
    return node if isinstance(node, type) and issubclass(node, BaseModel) else None


def _unwrap(annotation: Any) -> Any:
    """dict[str, M] -> ("dict", M); Optional[M] -> M; anything else unchanged."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is dict and len(args) == 2:
        return ("dict", _unwrap(args[1]))
    for a in args:
        if isinstance(a, type) and issubclass(a, BaseModel):
            return a
    return annotation


def validate_model(model: type[BaseModel], data: Any, *, prefix: str = "", source: str = "params.yaml") -> Any:
    """Validate `data` against `model`, turning pydantic's error into a ProtocolError naming the keys."""
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise ProtocolError(_format_validation_error(err, model, prefix, source)) from None


def load_params(path: str | Path = "params.yaml", overrides: dict[str, Any] | None = None) -> Params:
    """Read and validate params.yaml. `overrides` maps dotted keys to values (like `dvc exp run -S`)."""
    path = Path(path)
    if not path.is_file():
        raise ProtocolError(f"{path}: not found (run from the repository root or pass --params)")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ProtocolError(f"{path}: not valid YAML: {err}") from None
    for dotted, value in (overrides or {}).items():
        _set_dotted(raw, dotted, value)
    return validate_model(Params, raw, source=path.name)


def _set_dotted(tree: dict, dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = tree
    for k in keys[:-1]:
        node = node.setdefault(k, {})
    node[keys[-1]] = value


def deep_merge(base: dict, update: dict) -> dict:
    """Recursive dict merge; `update` wins; neither input is modified."""
    out = copy.deepcopy(base)
    for k, v in update.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


class RunSpec(_Strict):
    """Everything one train or evaluation run needs: the active profile and one detector's resolved recipe."""

    profile_name: str
    profile: Profile
    detector: str
    recipe: Recipe
    seed: int
    budget: str = FULL_BUDGET  # the run budget's name (its caps are already in profile and recipe)

    def protocol_hash(self) -> str:
        """A short hash of every protocol value that changes a trained model or a metric (the data-loader settings,
        which change only speed, excluded)."""
        d = _drop_later_defaults(self.model_dump(mode="json"))
        d["profile"].pop("loader", None)
        d["profile"].pop("learning_check", None)
        d["profile"].pop("full_size", None)
        return _hash(d)

    def training_hash(self) -> str:
        """A short hash of what changes the trained model (evaluation and loader settings excluded): resume checks
        it."""
        d = _drop_later_defaults(self.model_dump(mode="json"))
        d["recipe"].pop("eval")
        d["profile"].pop("eval")
        d["profile"].pop("loader", None)
        d["profile"].pop("learning_check", None)
        d["profile"].pop("full_size", None)
        return _hash(d)

    def flat_params(self) -> dict[str, str]:
        """Dotted key -> value for MLflow (every protocol value, so a run can be compared in the UI)."""
        flat: dict[str, str] = {}

        def walk(prefix: str, node: Any) -> None:
            if isinstance(node, dict):
                for k, v in node.items():
                    walk(f"{prefix}.{k}" if prefix else str(k), v)
            else:
                flat[prefix] = json.dumps(node) if isinstance(node, (list, tuple)) else str(node)

        walk("", self.model_dump(mode="json"))
        return flat


# Keys added after results were published, with the default that reproduces the earlier behaviour: left out of the
# hashes while at that default, so results computed before a key existed stay current (and resumable).
_LATER_DEFAULTS: dict[tuple[str, str], dict[str, Any]] = {
    ("train", "select_on"): {"default": "val"},
    ("train", "accumulate"): {"default": 1},
    ("train", "global_batch"): {"default": None},
    ("train", "align"): {"default": "none"},
    ("eval", "align"): {"default": "none"},
    ("eval", "preprocess"): {"default": []},
    ("eval", "variant_subset"): {"default": None},
    ("eval", "variant_generators"): {"default": None},
    ("data", "max_val_images"): {"default": None},
    ("optim", "lr_scale"): {"default": "none"},
    ("optim", "lr_base_batch"): {"default": 256, "unless": ("lr_scale", "none")},
    ("", "deterministic"): {"default": False},  # block "": a key of the profile itself
    ("", "threads"): {"default": None},
    ("", "pretrained"): {"default": None},
}


def _drop_later_defaults(d: dict) -> dict:
    if d.get("budget") == FULL_BUDGET:  # the full budget (no caps) hashes as before budgets existed
        d.pop("budget")
    drop = []
    for part in ("profile", "recipe"):
        for (block, key), rule in _LATER_DEFAULTS.items():
            node = d.get(part, {}).get(block) if block else d.get(part)
            if not isinstance(node, dict) or key not in node:
                continue
            other = rule.get("unless")  # (key, value): also dropped while that key has that value
            if node[key] == rule["default"] or (other is not None and node.get(other[0]) == other[1]):
                drop.append((node, key))
    for node, key in drop:
        node.pop(key)
    return d


def _hash(obj: Any) -> str:
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def resolve(params: Params, detector: str, profile: str | None = None, seed: int | None = None) -> RunSpec:
    """Merge profile and detector recipe (with the profile's overrides) into the RunSpec the engine uses."""
    profile_name = profile or params.profile
    if profile_name not in params.profiles:
        raise ProtocolError(f"unknown profile {profile_name!r}; defined: {', '.join(params.profiles)}")
    if detector not in params.detectors:
        raise ProtocolError(
            f"params.yaml has no block detectors.{detector}; defined: {', '.join(params.detectors)}"
        )
    prof = params.profiles[profile_name]
    block = params.detectors[detector]
    base = {
        "model": block.model,
        "pretrained": block.pretrained,
        "optim": block.optim.model_dump(),
        "schedule": block.schedule.model_dump(),
        "train": prof.train.model_dump(),
        "eval": prof.eval.model_dump(),
    }
    merged = profile_pretrained(prof, deep_merge(base, block.overrides.get(profile_name, {})))
    recipe = validate_model(Recipe, merged, prefix=f"detectors.{detector}.overrides.{profile_name}.")
    seed = params.run.seeds[0] if seed is None else seed
    if (budget := params.run_budget()) is not None:
        prof, recipe = apply_budget(prof, recipe, budget)
    return RunSpec(profile_name=profile_name, profile=prof, detector=detector, recipe=recipe, seed=seed,
                   budget=params.budget)


def profile_pretrained(profile: Profile, recipe: dict[str, Any]) -> dict[str, Any]:
    """`recipe` (a merged recipe dict) under the profile's ``pretrained`` switch: ``false`` makes the recipe's
    ``pretrained`` false (the detector's own model-level weights are randomised by
    `sep_bench.detectors.DetectorSpec.random_weights`); null leaves the recipe as it is."""
    if profile.pretrained is False:
        return {**recipe, "pretrained": False}
    return recipe


def resolve_released(params: Params, name: str, profile: str | None = None, seed: int | None = None) -> RunSpec:
    """The RunSpec of evaluation-only entry `name`: its detector's recipe for the profile, with the entry's
    `model` merged over it and its `pretrained` (when given) replacing the recipe's."""
    entry = params.released_entry(name)
    spec = resolve(params, entry.detector, profile, seed)
    merged = deep_merge(spec.recipe.model_dump(mode="json"), {"model": entry.model})
    if entry.pretrained is not None:
        merged["pretrained"] = entry.pretrained
    merged = profile_pretrained(spec.profile, merged)
    recipe = validate_model(Recipe, merged, prefix=f"released.{name}.")
    return spec.model_copy(update={"recipe": recipe})


_GROUP_CACHE: dict[str, re.Pattern] = {}


def group_of(name: str, pattern: str | None) -> str:
    """The split group of a file name (see ValSplit); the name itself when there is no pattern or no match."""
    if pattern is None:
        return name
    rx = _GROUP_CACHE.setdefault(pattern, re.compile(pattern))
    m = rx.search(name)
    return m.group("group") if m else name
