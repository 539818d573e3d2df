"""``sep-bench reconstruct [--detector <name>]`` (the DVC stage ``reconstruct``): a thin, pure entry point.

For a detector whose model config has a ``reconstruct`` field (DIRE, DRCT) it reconstructs the images the
detector needs (`images_needed`) into ``data/recon/<profile>/<detector>`` (see `sep_bench.recon.stage`) and writes
the manifest; every other detector (or one not in params.yaml) gets a one-line manifest ``{"needed": false}``, so
each train@/evaluate@ stage has its folder. The manifest is rewritten only when something was computed or the
settings changed, so a run that computes nothing leaves the stage output byte-identical.
"""

from __future__ import annotations

import json
import logging
from typing import Callable

from sep_bench import paths
from sep_bench.recon.config import ReconConfig

__all__ = ["reconstruct_detector", "detector_recon_config"]

log = logging.getLogger(__name__)


def detector_recon_config(p, profile: str, detector: str) -> tuple[object | None, ReconConfig | None]:
    """(RunSpec, ReconConfig) of `detector` under `profile`; (None, None) if params.yaml has no block for it."""
    from sep_bench.protocol import resolve

    if detector not in p.detectors:
        return None, None
    spec = resolve(p, detector, profile)
    # from the detector's config, not params alone: a recipe may leave `reconstruct` at its class default (DRCT's
    # genimage block does), and `reconstruct: null` turns it off
    from sep_bench.detectors import get_detector
    from sep_bench.recon.samples import recon_config

    return spec, recon_config(get_detector(detector).config_for(spec))


def reconstruct_detector(p, profile: str, detector: str, *, device=None,
                         progress: Callable[[str, int, int], None] | None = None, tracker_factory=None) -> dict:
    """Run the stage for one detector; returns the manifest plus this run's statistics (``this_run``, not written
    into the folder: it is a dependency of training)."""
    out = paths.recon_dir(profile, detector)
    spec, cfg = detector_recon_config(p, profile, detector)
    if cfg is None:
        stub = {"detector": detector, "needed": False}
        old = out / "manifest.json"
        if not (old.exists() and json.loads(old.read_text()) == stub):
            out.mkdir(parents=True, exist_ok=True)
            old.write_text(json.dumps(stub, indent=2, sort_keys=True) + "\n")
        return stub
    from sep_bench.data.splits import evaluation_samples, training_samples
    from sep_bench.recon.samples import images_needed
    from sep_bench.recon.stage import run_reconstruction, write_manifest

    data = spec.profile.data
    root = paths.data_root(profile, data)
    train, val = training_samples(root, data)
    test = evaluation_samples(root, data) if cfg.use == "replace" else []
    images = images_needed(cfg, train, val, test)
    log.info("reconstruct %s: %d images (%s, %s, %d steps)", detector, len(images), cfg.method, cfg.arch, cfg.steps)
    from contextlib import nullcontext

    with (tracker_factory(spec) if tracker_factory else nullcontext(None)) as tracker:
        stats = run_reconstruction(cfg, images, out, device=device, progress=progress)
        old_file = out / "manifest.json"
        old = json.loads(old_file.read_text()) if old_file.exists() else {}
        if stats["computed"] == 0 and old.get("config_key") == cfg.key():
            manifest = old
        else:
            from sep_bench.recon.models import describe

            manifest = write_manifest(out, cfg, detector, describe(cfg))
        if tracker is not None:
            tracker.log_params({f"reconstruct.{k}": v for k, v in cfg.record().items()})
            tracker.set_tags({"sep_bench.reconstruct.pipeline": manifest.get("pipeline", cfg.arch),
                              "sep_bench.reconstruct.tiny_random_weights": str(cfg.tiny).lower(),
                              "sep_bench.reconstruct.random_weights": str(cfg.random_weights).lower(),
                              "sep_bench.reconstruct.config_key": cfg.key()})
            tracker.log_metrics({k: stats[k] for k in ("images", "unique", "cached", "computed", "seconds")
                                 if stats.get(k) is not None} | (
                {"seconds_per_image": stats["seconds_per_image"]} if stats.get("seconds_per_image") else {}))
            tracker.log_artifact(out / "manifest.json")
    return {**manifest, "this_run": stats}
