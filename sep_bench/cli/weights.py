"""`sep-bench weights list|prefetch`: the weights a profile's recipes need, present or missing in the local caches,
and downloading them (for cluster nodes without internet: prefetch on a login node, share HF_HOME)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from sep_bench.cli.common import ParamsOpt, ProfileOpt, console, load, user_errors

__all__ = ["register"]

_COLOURS = {"present": "green", "random": "dim", "missing": "red", "error": "red", "fetched": "green"}
DetectorOpt = typer.Option(None, "--detector", "-d", help="Only this detector (repeatable; default: run.detectors).")


def register(app: typer.Typer, argv=None) -> None:
    group = typer.Typer(help="Pretrained weights a profile needs: list them (present/missing), prefetch them.",
                        no_args_is_help=True)
    group.command("list")(list_weights)
    group.command("prefetch")(prefetch)
    app.add_typer(group, name="weights")


def _needs(params: Path, profile: Optional[str], detector: Optional[list[str]]):
    from sep_bench.detectors.weights_needed import weights_needed
    from sep_bench.protocol import resolve

    p, prof = load(params, profile)
    names = detector or list(p.run.detectors)
    return prof, [n for name in names for n in weights_needed(resolve(p, name, prof))]


def _line(need, state: str, detail: str) -> None:
    colour = _COLOURS.get(state, "white")
    console.print(f"{need.detector:11s} {need.role:13s} [{colour}]{state:8s}[/] {need.describe()}"
                  + (f"  ({detail})" if detail and state != "present" else ""), highlight=False, soft_wrap=True)


def list_weights(params: Path = ParamsOpt, profile: Optional[str] = ProfileOpt,
                 detector: Optional[list[str]] = DetectorOpt) -> None:
    """What each detector of the profile needs (backbone, LGrad's discriminator, DIRE/DRCT's diffusion model) and
    whether it is in the local caches (no network). Exit code 1 when something is missing."""
    with user_errors():
        from sep_bench.detectors.weights_needed import status

        prof, needs = _needs(params, profile, detector)
        console.print(f"weights for profile {prof} (HF cache: HF_HOME / HF_HUB_CACHE)", highlight=False)
        missing = 0
        for need in needs:
            state, detail = status(need)
            missing += state in ("missing", "error")
            _line(need, state, detail)
        console.print(f"{missing} missing of {sum(n.kind != 'random' for n in needs)} needed", highlight=False)
        if missing:
            raise typer.Exit(1)


def prefetch(params: Path = ParamsOpt, profile: Optional[str] = ProfileOpt,
             detector: Optional[list[str]] = DetectorOpt) -> None:
    """Download every hub weight the profile's recipes need into the Hugging Face cache (offline or an unreachable
    hub: one line per missing weight, at once). Local files (LGrad's discriminator, ADM's checkpoint) cannot be
    downloaded: they are listed with their path. Exit code 1 when anything is still missing."""
    with user_errors():
        from sep_bench.detectors.weights_needed import status
        from sep_bench.hub import fetch_ref

        prof, needs = _needs(params, profile, detector)
        failed, fetched = 0, {}  # hub reference -> (state, detail), each fetched once
        for need in needs:
            if need.kind == "hub":
                if need.ref not in fetched:
                    try:
                        fetched[need.ref] = ("fetched", str(fetch_ref(need.ref)[-1]))
                    except Exception as err:  # one weight failing does not stop the others
                        fetched[need.ref] = ("missing", str(err))
                state, detail = fetched[need.ref]
            else:
                state, detail = status(need)
                if state == "missing":
                    detail += " (a local file: put it there by hand; see the detector's module docstring)"
            failed += state in ("missing", "error")
            _line(need, state, detail)
        console.print(f"profile {prof}: {failed} weight(s) still missing", highlight=False)
        if failed:
            raise typer.Exit(1)
