"""`sep-bench list`, `predict` and `explain`: look at detectors and images (no pipeline stage)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from sep_bench.cli.common import (
    ParamsOpt,
    ProfileOpt,
    console,
    load,
    progress,
    user_errors,
)

__all__ = ["register"]


def register(app: typer.Typer, argv=None) -> None:
    app.command("list")(list_cmd)
    app.command("predict")(predict)
    app.command("explain")(explain)


def list_cmd() -> None:
    """List registered detectors (including those of installed plugin packages)."""
    from sep_bench.detectors import get_detector, list_detectors

    table = Table(title="sep-bench detectors")
    for col in ("name", "provenance", "summary", "paper", "official weights"):
        table.add_column(col)
    for name in list_detectors():
        try:
            s = get_detector(name)
            table.add_row(name, s.provenance, s.summary, s.paper, "yes" if s.load_official else "-")
        except Exception as err:  # one broken plugin must not hide the others
            table.add_row(name, "", f"[red]failed to load: {err}[/]", "", "")
    Console().print(table)
    console.print("provenance: official = the authors' model and training code ported; official-inference = their "
                  "model/inference code, training recipe reconstructed; paper = no usable official code, "
                  "re-implemented from the paper (guesses listed in the module docstring).", highlight=False)


def predict(
    paths_: list[Path] = typer.Argument(..., metavar="PATH...", help="Image files and/or folders (searched recursively)."),
    detector: str = typer.Option(..., "--detector", "-d", help="Registered detector name."),
    checkpoint: Path = typer.Option(..., "--checkpoint", "-c", help="A sep-bench checkpoint (.safetensors) or, with --official, the authors' weights."),
    official: bool = typer.Option(False, "--official", help="The checkpoint is the authors' released file (official format)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Also write the table as CSV."),
    batch_size: int = typer.Option(32, help="Images per forward pass."),
    device: str = typer.Option("auto", help="auto, cpu or cuda[:N]."),
    params: Path = ParamsOpt,
    profile: Optional[str] = ProfileOpt,
) -> None:
    """Fake probability of each image (files or folders), with any registered detector."""
    from sep_bench.data.images import DEFAULT_MAX_PIXELS
    from sep_bench.engine.checkpoint import load_checkpoint
    from sep_bench.engine.predict import collect_images, load_model
    from sep_bench.engine.predict import predict as run_predict
    from sep_bench.engine.runtime import pick_device
    from sep_bench.io import atomic_path
    from sep_bench.protocol import resolve

    with user_errors():
        if official:
            p, prof_name = load(params, profile)
            recipe = resolve(p, detector, prof_name).recipe
            model_config = recipe.model
        else:
            recipe, model_config = None, load_checkpoint(checkpoint)[1].get("model_config", {})
        model = load_model(detector, checkpoint, official=official, recipe=recipe)
        files = collect_images(paths_)
        if not files:
            raise FileNotFoundError(f"no image files under {', '.join(map(str, paths_))}")
        with progress() as update:
            done = 0

            def on_batch(n: int) -> None:
                nonlocal done
                done += n
                update(f"predict {detector}", done, len(files))

            df = run_predict(model, detector, model_config, files, batch_size=batch_size, device=pick_device(device),
                             max_pixels=DEFAULT_MAX_PIXELS, on_batch=on_batch)
        table = Table(title=f"{detector}: fake probability ({model.weights.describe()})")
        for col, just in (("path", "left"), ("fake prob", "right"), ("status", "left")):
            table.add_column(col, justify=just, overflow="fold")
        for r in df.itertuples():
            table.add_row(r.path, "-" if r.status != "ok" else f"{r.fake_prob:.4f}", r.status)
        Console().print(table)
        if out is not None:
            with atomic_path(out) as tmp:
                df.to_csv(tmp, index=False)
            console.print(f"wrote {out}")


def explain(
    images: list[Path] = typer.Argument(..., metavar="IMAGE...", help="Image files and/or folders."),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", "-c", help="SEP checkpoint: adds the fake probability."),
    official: bool = typer.Option(False, "--official", help="The checkpoint is the authors' released SEP file."),
    out: Path = typer.Option(Path("explain"), "--out", help="Folder for the PNGs."),
    params: Path = ParamsOpt,
    profile: Optional[str] = ProfileOpt,
) -> None:
    """Show which patch SEP looks at: the image with the exposed patch outlined, the texture map, the patch enlarged."""
    import pandas as pd

    from sep_bench.data.images import DEFAULT_MAX_PIXELS, DecodeError, decode_image
    from sep_bench.data.transforms import sample_rng
    from sep_bench.detectors import get_detector
    from sep_bench.engine.checkpoint import load_checkpoint
    from sep_bench.engine.predict import collect_images, load_model
    from sep_bench.engine.predict import predict as run_predict
    from sep_bench.io import atomic_path
    from sep_bench.protocol import resolve
    from sep_bench.engine.explain import render_explanation

    with user_errors():
        if checkpoint is not None and not official:
            model_config = load_checkpoint(checkpoint)[1].get("model_config", {})
            recipe = None
        else:
            p, prof_name = load(params, profile)
            recipe = resolve(p, "sep", prof_name).recipe
            model_config = recipe.model
        cfg = get_detector("sep").make_config(model_config)
        files = collect_images(images)
        probs = [None] * len(files)
        if checkpoint is not None:
            model = load_model("sep", checkpoint, official=official, recipe=recipe)
            df = run_predict(model, "sep", model_config, files, max_pixels=DEFAULT_MAX_PIXELS)
            probs = [None if st != "ok" else float(pr) for pr, st in zip(df.fake_prob, df.status)]
        table = Table(title="SEP exposed patches")
        for col in ("image", "patch (y, x)", "texture score", "fake prob", "figure"):
            table.add_column(col, overflow="fold")
        rows = []
        for i, f in enumerate(files):
            try:
                img = decode_image(f, DEFAULT_MAX_PIXELS)
            except DecodeError as err:
                rows.append({"image": str(f), "status": err.reason})
                table.add_row(str(f), "-", "-", "-", f"skipped: {err.reason}")
                continue
            # the same per-sample generator as `predict` (seed 0, sample i, epoch 0): the patch the model saw
            info = render_explanation(img, cfg, sample_rng(0, i, 0), probs[i], out / f"{i:04d}_{f.stem}.png")
            rows.append({"image": str(f), "status": "ok", "y": info["y"], "x": info["x"], "score": info["score"],
                         "fake_prob": probs[i], "figure": str(info["path"])})
            prob = "-" if probs[i] is None else f"{probs[i]:.4f}"
            table.add_row(str(f), f"({info['y']}, {info['x']})", f"{info['score']}", prob, str(info["path"]))
        Console().print(table)
        with atomic_path(out / "explain.csv") as tmp:
            pd.DataFrame(rows).to_csv(tmp, index=False)


