"""Detector API and registry.

A detector is one module that builds a `DetectorSpec` and registers it, either in this package's entry-point
group ``sep_bench.detectors`` (``pyproject.toml``: ``npr = "sep_bench.baselines.npr:SPEC"``) or by calling `register`.
External packages add detectors the same way, with no edit to the harness.

Output contract (every detector): ``model(views) -> Tensor[B]``, one *fake* logit per image
(real = 0, fake = 1; ``sigmoid(logit)`` is the fake probability). Adapters convert official checkpoints
with other conventions.

Registry entries are loaded lazily, one entry point at a time, so a detector whose optional dependency is
missing breaks only itself. Registering a name twice is an error.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
import typing
from typing import Any, Callable, Literal, Mapping

import numpy as np
import torch
from pydantic import BaseModel
from torch import nn

from sep_bench.weights import WeightsSource

__all__ = [
    "Detector",
    "DetectorSpec",
    "View",
    "Provenance",
    "PROVENANCES",
    "register",
    "get_detector",
    "list_detectors",
    "UnknownDetectorError",
    "ENTRY_POINT_GROUP",
]

ENTRY_POINT_GROUP = "sep_bench.detectors"

Provenance = Literal["official", "official-inference", "paper"]
PROVENANCES: tuple[str, ...] = typing.get_args(Provenance)

View = Callable[[np.ndarray, np.random.Generator], dict[str, torch.Tensor]]
"""Turns one decoded RGB uint8 image (H, W, 3) into the tensors a detector needs, using only the given RNG for
random choices (crop position, flips, candidate patches) so that results are reproducible per sample."""


class Detector(nn.Module):
    """Base class of detector models.

    Subclasses implement `forward_features(views)` and `forward_head(features)`; `forward` returns fake logits
    of shape (B,). `loss` defaults to binary cross-entropy on the fake logit; override it for detectors whose
    official recipe uses another loss. A detector whose `forward_features` is frozen sets
    ``frozen_features = True``; the engine may then feed cached features (``views == {"features": f}``).

    Training goes through `train_forward` and `train_loss`: by default the fake logits and `loss` on them.
    A detector whose official objective needs more than the logit (a contrastive loss on embeddings, an
    auxiliary regulariser) overrides `train_forward` to return extra tensors beside ``"logits"`` and
    `train_loss` to combine them. The engine calls `train_forward` through the (DDP-wrapped) model, so
    gradients of everything it returns are synchronised across ranks.
    """

    frozen_features: bool = False

    #: What weights the model was built with (set by the builder; recorded in MLflow and the tables).
    weights: WeightsSource = WeightsSource.none()

    def forward_features(self, views: Mapping[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, views: Mapping[str, torch.Tensor]) -> torch.Tensor:
        if "features" in views:
            return self.forward_head(views["features"]).reshape(-1)
        return self.forward_head(self.forward_features(views)).reshape(-1)

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return nn.functional.binary_cross_entropy_with_logits(logits.float(), labels.float())

    def train_forward(self, views: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Training-time outputs: at least ``{"logits": Tensor[B]}`` (fake logits, used for the running metrics)."""
        return {"logits": self(views)}

    def train_loss(self, outputs: Mapping[str, torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
        """The training objective on `train_forward`'s outputs; default: `loss` on the logits."""
        return self.loss(outputs["logits"], labels)

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]


@dataclass(frozen=True)
class DetectorSpec:
    """A registry entry.

    Args:
        name: registry key, also the params.yaml block name (``detectors.<name>``).
        summary: one line for ``sep-bench list``.
        paper: citation (venue and year).
        repo: the official repository.
        config: pydantic model of ``detectors.<name>.model``; its defaults are the official values.
        build: ``build(config, weights) -> Detector``.
        views: ``views(config, train, hflip) -> View``; preprocessing travels with the detector.
        load_official: ``load_official(model, path)`` loads the authors' released detector weights, if any.
        default_weights: the hub reference of the *backbone* used when ``pretrained: true`` (e.g. a timm
            name), if any. ``pretrained`` only ever initialises a backbone; released detector weights go through
            `load_official`.
        official_needs_backbone: the released weights cover only part of the model (UnivFD: the linear head),
            so the model is built with its pretrained backbone before `load_official`.
        provenance: what the implementation is built from: ``official`` (the authors' model and training code
            ported), ``official-inference`` (the authors' model/inference code; the training recipe reconstructed,
            say from what in the module docstring), ``paper`` (no usable official code: re-implemented from the
            paper, every guessed hyperparameter listed in the module docstring). Shown by ``sep-bench list`` and
            marked in the tables.
        random_weights: ``random_weights(config) -> config``: the model config with every weights file it names
            beyond ``pretrained`` (LGrad's discriminator, DIRE's and DRCT's diffusion reconstructors) replaced by a
            random initialisation of the same architecture; applied by `config_for` under a profile with
            ``pretrained: false`` (offline runs of the full recipes). None: the config names no other weights.
    """

    name: str
    summary: str
    paper: str
    repo: str
    config: type[BaseModel]
    build: Callable[[Any, WeightsSource], Detector]
    views: Callable[[Any, bool, bool], View]
    load_official: Callable[[Detector, Path], None] | None = None
    default_weights: str | None = None
    official_needs_backbone: bool = False
    provenance: Provenance = "official"
    extra: dict[str, Any] = field(default_factory=dict)
    random_weights: Callable[[Any], Any] | None = None

    def __post_init__(self) -> None:
        if self.provenance not in PROVENANCES:
            raise ValueError(f"detector {self.name!r}: provenance {self.provenance!r} is not one of {PROVENANCES}")

    def make_config(self, values: Mapping[str, Any], prefix: str = "") -> BaseModel:
        from sep_bench.protocol import validate_model

        return validate_model(self.config, dict(values), prefix=prefix or f"detectors.{self.name}.model.")

    def config_for(self, run: Any) -> BaseModel:
        """The validated model config of a `sep_bench.protocol.RunSpec`'s recipe; under a profile with
        ``pretrained: false`` every weights file the config names is replaced by random init (`random_weights`)."""
        cfg = self.make_config(run.recipe.model)
        if run.profile.pretrained is False and self.random_weights is not None:
            cfg = self.random_weights(cfg)
        return cfg


class UnknownDetectorError(KeyError):
    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0])


_REGISTRY: dict[str, DetectorSpec] = {}


def register(spec: DetectorSpec) -> DetectorSpec:
    """Add `spec` to the registry; a second registration of the same name raises."""
    existing = _REGISTRY.get(spec.name)
    if existing is not None and existing is not spec:
        raise ValueError(f"detector {spec.name!r} is registered twice ({existing.build.__module__}, {spec.build.__module__})")
    _REGISTRY[spec.name] = spec
    return spec


def _entry_points() -> dict[str, Any]:
    eps: dict[str, Any] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in eps and eps[ep.name].value != ep.value:
            raise ValueError(f"detector {ep.name!r} is declared by two packages: {eps[ep.name].value}, {ep.value}")
        eps[ep.name] = ep
    return eps


def list_detectors() -> list[str]:
    """Names of every detector available: registered here plus declared by installed packages."""
    return sorted(set(_REGISTRY) | set(_entry_points()))


def get_detector(name: str) -> DetectorSpec:
    """The spec registered under `name`, loading its entry point on first use."""
    if name in _REGISTRY:
        return _REGISTRY[name]
    eps = _entry_points()
    if name not in eps:
        raise UnknownDetectorError(
            f"unknown detector {name!r}; available: {', '.join(list_detectors()) or '(none)'}. "
            f"A new detector registers under the entry-point group {ENTRY_POINT_GROUP!r}."
        )
    spec = eps[name].load()
    if not isinstance(spec, DetectorSpec):
        raise TypeError(f"entry point {eps[name].value} must be a DetectorSpec, got {type(spec).__name__}")
    if spec.name != name:
        raise ValueError(f"entry point {name!r} points to a spec named {spec.name!r}")
    return register(spec)
