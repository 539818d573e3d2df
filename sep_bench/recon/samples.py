"""Feeding reconstructions to detectors: the one hook the engine calls on its sample lists.

`apply(detector, model_cfg, samples, role, profile)` returns the samples the detector actually reads:

- no ``reconstruct`` field in the detector's model config: `samples` unchanged (every detector but DIRE/DRCT);
- ``use: replace`` (DIRE): each sample becomes a `ReconSample` whose ``path`` is its DIRE map (``<sha>.dire.png``,
  what the loader decodes) and whose ``source`` is the original image (what predictions should be keyed by, so
  paired tests match DIRE's rows with other detectors'), label/generator/split kept, for every role;
- ``use: augment`` (DRCT): for role ``train`` the reconstruction of every training image is appended with the
  label of DRCT's rule, ``drct_label(is_fake, is_reconstruction=True)`` from ``sep_bench.baselines.drct`` (real -> real,
  fake, real-rec and fake-rec -> fake); the generator is suffixed ``+rec``. Other roles: unchanged (DRCT does no
  reconstruction at test time).

A missing result raises `ReconstructionMissingError` naming the command that makes it, never silently falls back
to the raw image.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from sep_bench.data.layouts import Sample
from sep_bench.recon.config import ReconConfig
from sep_bench.recon.stage import file_sha256, out_dir, result_paths

__all__ = ["apply", "recon_config", "ReconstructionMissingError", "images_needed", "ReconSample", "source_path"]

Role = Literal["train", "val", "test"]


class ReconstructionMissingError(FileNotFoundError):
    pass


@dataclass(frozen=True, slots=True)
class ReconSample(Sample):
    """A sample read from a reconstruction file (``path``) that stands for the original image ``source``."""

    source: str = ""


def source_path(s: Sample) -> str:
    """The original image a (possibly reconstructed) sample stands for: key predictions by this."""
    return getattr(s, "source", "") or s.path


def recon_config(model_cfg: Any) -> ReconConfig | None:
    cfg = getattr(model_cfg, "reconstruct", None)
    return cfg if isinstance(cfg, ReconConfig) else None


def images_needed(cfg: ReconConfig, train: list[Sample], val: list[Sample], test: list[Sample]) -> list[str]:
    """Paths the stage must reconstruct: DIRE (replace) every split, DRCT (augment) the training images."""
    chosen = train + val + test if cfg.use == "replace" else train
    return list(dict.fromkeys(s.path for s in chosen))


def _drct_label(is_fake: bool) -> int:
    from sep_bench.baselines.drct import drct_label

    return int(drct_label(is_fake, True))


def apply(detector: str, model_cfg: Any, samples: list[Sample], role: Role, profile: str,
          root: Path | None = None) -> list[Sample]:
    """The samples `detector` reads for `role` (see the module docstring)."""
    cfg = recon_config(model_cfg)
    if cfg is None or (cfg.use == "augment" and role != "train"):
        return samples
    out = root or out_dir(profile, detector)
    idx_file = out / "index.json"
    index = json.loads(idx_file.read_text())["files"] if idx_file.exists() else {}

    def result(s: Sample, kind: str) -> str:
        sha = index[s.path]["sha256"] if s.path in index else file_sha256(s.path)
        p = result_paths(out, cfg, sha)[kind]
        if not p.exists():
            raise ReconstructionMissingError(
                f"{detector}: no reconstruction of {s.path} in {out} (config {cfg.key()}); run "
                f"`sep-bench reconstruct --detector {detector}` (the DVC stage reconstruct) first")
        return str(p)

    if cfg.use == "replace":
        return [ReconSample(result(s, "dire"), s.label, s.generator, s.split, source=s.path) for s in samples]
    recs = [ReconSample(result(s, "rec"), _drct_label(bool(s.label)), f"{s.generator}+rec", s.split, source=s.path)
            for s in samples]
    return samples + recs
