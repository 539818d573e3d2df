"""The `sep-bench` command line. Every command is a thin call into the modules; DVC stages call these too.

Errors a user can fix (protocol, data, checkpoint, skip budget) are printed as one line naming the fix, with
exit code 2, never as a traceback from deep inside torch.
"""

from __future__ import annotations

import logging
import os
import signal
import shutil
import subprocess
import sys
from contextlib import nullcontext
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table

from sep_bench import paths
from sep_bench.cli_support import (
    NoTrackOpt,
    ParamsOpt,
    ProfileOpt,
    SeedOpt,
    TrackingOpt,
    console,
    load,
    progress,
    run_tracker,
    user_errors,
)

app = typer.Typer(
    help="sep-bench: train and evaluate AI-generated-image detectors (SEP and baselines) under one protocol.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Build, fetch and check datasets.", no_args_is_help=True)
app.add_typer(data_app, name="data")
from sep_bench.cluster.cli import app as cluster_app  # noqa: E402  (SLURM: docs/cluster.md)
app.add_typer(cluster_app, name="cluster")

log = logging.getLogger("sep_bench")


class _Terminated(KeyboardInterrupt):
    """SIGTERM turned into an exception so open MLflow runs end as failed and temp files are removed."""


def _on_sigterm(signum, frame) -> None:  # pragma: no cover - exercised by the reliability tests
    raise _Terminated()


@app.callback()
def _main(verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging.")) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(message)s",
        handlers=[RichHandler(console=console, show_path=False, rich_tracebacks=False)],
        force=True,
    )
    for noisy in ("alembic", "mlflow", "urllib3", "PIL", "matplotlib", "timm", "open_clip", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    signal.signal(signal.SIGTERM, _on_sigterm)


# ---- commands ---------------------------------------------------------------------------------------------


@app.command("list")
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


@data_app.command("build-mini")
def data_build_mini(
    out: Optional[Path] = typer.Option(None, help="Output folder (default: data/prepared/<profile>)."),
    params: Path = ParamsOpt,
    profile: Optional[str] = ProfileOpt,
    seed: Optional[int] = typer.Option(None, help="Override the profile's minigen seed."),
    force: bool = typer.Option(False, help="Rebuild even if a matching build exists."),
) -> None:
    """Build the embedded offline benchmark (minigen): real photo crops and locally trained generators' fakes."""
    with user_errors():
        _build_mini(params, profile, out, seed, force)


def _build_mini(params: Path, profile: Optional[str], out: Optional[Path], seed: Optional[int], force: bool) -> dict:
    from sep_bench.data.minigen import BUILD_LOG_SUFFIX, MinigenConfig, build_minigen
    from sep_bench.protocol import ProtocolError

    p, prof_name = load(params, profile)
    data = p.profiles[prof_name].data
    if data.source != "minigen":
        raise ProtocolError(f"profile {prof_name!r} uses external data; build-mini needs a `source: minigen` profile")
    m = data.minigen
    kwargs = dict(
        seed=m.seed if seed is None else seed, image_size=m.image_size,
        train_generators=tuple(data.train_generators), generators=tuple(data.test_generators),
        n_train_real=m.n_train_real, n_val_real=m.n_val_real, n_test_real=m.n_test_real,
    )
    if m.ae_steps is not None:
        kwargs["ae_steps"] = m.ae_steps
    out = out or paths.prepared_dir(prof_name)
    with progress() as update:
        manifest = build_minigen(out, MinigenConfig(**kwargs), force=force, progress=update)
    console.print(f"minigen ready in {out}: " + ", ".join(
        f"{g} {sum(sum(c.values()) for c in s.values())}" for g, s in manifest["counts"].items()))
    if m.digest and seed is None and manifest["pixels_sha256"] != m.digest:
        unpinned = [g for g, info in manifest["generators"].items() if info.get("weights") != "pinned"]
        raise ProtocolError(
            f"the minigen build in {out} is not the pinned one: its pixels digest is {manifest['pixels_sha256']}, "
            f"params.yaml profiles.{prof_name}.data.minigen.digest expects {m.digest}. "
            + (f"Generators {unpinned} were trained on this machine (their training settings have no pinned "
               "weights), which is reproducible on this machine only. " if unpinned else
               "The build uses the pinned generator weights, so this should not happen: please report it with "
               f"{out}/minigen.json and {out}{BUILD_LOG_SUFFIX}. ")
            + "If you changed the benchmark on purpose, set the new digest (or null) in params.yaml.")
    console.print(f"minigen pixels digest {manifest['pixels_sha256']}"
                  + (" (matches params.yaml)" if m.digest == manifest["pixels_sha256"] else
                     " (no digest pinned in params.yaml)" if not m.digest else ""), highlight=False, soft_wrap=True)
    return manifest


@data_app.command("minigen-weights")
def data_minigen_weights(
    out: Optional[Path] = typer.Option(None, help="Weights file (default: the committed sep_bench/data/minigen_generators.npz)."),
) -> None:
    """Maintainers: retrain minigen's generators with the default training settings and write their quantised
    weights (commit the file, then update params.yaml's minigen digest: the benchmark's pixels change)."""
    from sep_bench.data.minigen import GENERATOR_WEIGHTS, MinigenConfig, train_generator_weights

    target = out or GENERATOR_WEIGHTS
    with progress() as update:
        train_generator_weights(MinigenConfig(), target, progress=update)
    console.print(f"wrote {target}; rebuild with `sep-bench data build-mini --force` and pin the new digest",
                  highlight=False)


@data_app.command("prepare")
def data_prepare(params: Path = ParamsOpt, profile: Optional[str] = ProfileOpt) -> None:
    """The pipeline's data stage: build minigen, or verify an external dataset (manifest, counts) and write its summary."""
    from sep_bench.data.acquire.commands import verify_external
    from sep_bench.io import write_json
    from sep_bench.tracking import ensure_store, resolve_tracking_uri

    with user_errors():
        p, prof_name = load(params, profile)
        ensure_store(resolve_tracking_uri(p.tracking.uri))  # created once here, before parallel stages
        data = p.profiles[prof_name].data
        if data.source == "minigen":
            _build_mini(params, prof_name, None, None, False)
            return
        root = paths.data_root(prof_name, data)
        with progress() as update:
            summary = verify_external(data, progress=update)  # sha256 manifest, counts, the profile's generators
        write_json(paths.prepared_dir(prof_name) / "summary.json", summary)
        console.print(f"{root}: verified against its manifest; "
                      f"{sum(len(v) for v in summary['counts'].values())} generator/split folders", highlight=False)


# `selection` (train with checkpoint selection on the test generators) lives in sep_bench/report/commands.py
from sep_bench.report.commands import selection_cmd  # noqa: E402

app.command("selection")(selection_cmd)

# `data get` lives in sep_bench/data/acquire/commands.py
from sep_bench.data.acquire.commands import get_cmd  # noqa: E402

data_app.command("get")(get_cmd)


@app.command()
def reconstruct(
    detector: Optional[list[str]] = typer.Option(
        None, "--detector", "-d", help="Detector whose diffusion reconstructions to build (repeatable; default: "
        "every detector of run.detectors, as the DVC stage runs it)."),
    params: Path = ParamsOpt,
    profile: Optional[str] = ProfileOpt,
    device: Optional[str] = typer.Option(None, help="torch device (default: cuda if available, else cpu)."),
    tracking_uri: Optional[str] = TrackingOpt,
    no_track: bool = NoTrackOpt,
) -> None:
    """The reconstruction stage (DIRE maps, DRCT reconstructions): once per image content, cached and resumable,
    in data/recon/<profile>/<detector>; detectors without `model.reconstruct` get a 'not needed' manifest."""
    from sep_bench.recon.command import reconstruct_detector

    with user_errors():
        p, prof_name = load(params, profile)
        names = detector or list(p.run.detectors)

        def tracker(spec):
            return run_tracker(p, spec, "reconstruct", tracking_uri, no_track)

        for name in names:
            with progress() as update:
                m = reconstruct_detector(p, prof_name, name, device=device, progress=update, tracker_factory=tracker)
            if not m.get("needed"):
                console.print(f"{name}: no reconstruction needed", highlight=False)
                continue
            r = m["this_run"]
            console.print(f"[green]reconstruct {name}[/]: {r['unique']} images, {r['computed']} computed, "
                          f"{r['cached']} cached ({r['seconds']:.1f}s; {m['pipeline']})", highlight=False)


@app.command()
def train(
    detector: str = typer.Option(..., "--detector", "-d", help="Registered detector name (see `sep-bench list`)."),
    params: Path = ParamsOpt,
    profile: Optional[str] = ProfileOpt,
    seed: Optional[int] = SeedOpt,
    out: Optional[Path] = typer.Option(None, help="Checkpoint folder (default: runs/<profile>/<detector>/seed<s>/train)."),
    tracking_uri: Optional[str] = TrackingOpt,
    no_track: bool = NoTrackOpt,
) -> None:
    """Train a detector under the active profile; resumes from the folder's last checkpoint if it matches."""
    from sep_bench.protocol import resolve

    with user_errors():
        p, prof_name = load(params, profile)  # first: may set environment variables torch reads when it loads
        from sep_bench.engine.determinism import apply_torch
        from sep_bench.engine.train import train as run_train
        spec = resolve(p, detector, prof_name, seed)
        apply_torch(spec.profile.deterministic, spec.profile.threads)
        out = out or paths.train_dir(prof_name, detector, spec.seed)
        with run_tracker(p, spec, "train", tracking_uri, no_track) as tracker, progress() as update:
            result = run_train(spec, out, tracker=tracker, progress=update)
            if tracker is not None:
                tracker.set_tags({"sep_bench.checkpoint": str(result.best_checkpoint)})
                tracker.log_artifact(out / "train.json")
        if os.environ.get("RANK", "0") != "0":
            return  # under torchrun, rank 0 reports
        val = ", ".join(f"{k} {v:.4f}" for k, v in result.best_val.items() if isinstance(v, float))
        console.print(f"[green]trained {detector}[/] in {result.seconds:.1f}s; best epoch {result.best_epoch + 1}"
                      f"/{result.epochs} (validation: {val or 'none'}); {result.best_checkpoint}", highlight=False)


@app.command()
def evaluate(
    detector: Optional[str] = typer.Option(None, "--detector", "-d", help="Registered detector name."),
    released: Optional[str] = typer.Option(None, "--released", help="Evaluate params.yaml's evaluation-only entry released.<NAME> (the authors' weights; no training)."),
    checkpoint: Optional[Path] = typer.Option(None, help="Checkpoint (default: the training stage's best)."),
    weights: Optional[Path] = typer.Option(None, "--weights", help="Evaluate the authors' released weights file (official format) with --detector, as an ad-hoc entry."),
    name: Optional[str] = typer.Option(None, "--name", help="Row name of an ad-hoc --weights evaluation (default: <detector>-released)."),
    params: Path = ParamsOpt,
    profile: Optional[str] = ProfileOpt,
    seed: Optional[int] = SeedOpt,
    tracking_uri: Optional[str] = TrackingOpt,
    no_track: bool = NoTrackOpt,
) -> None:
    """Evaluate a training run, or released weights, on every test generator, clean and under the profile's
    perturbations; write predictions and metrics (results/metrics/<profile>/<row>/seed<s>.json)."""
    from sep_bench.io import write_json
    from sep_bench.protocol import ProtocolError, ReleasedEntry, resolve, resolve_released

    with user_errors():
        if (detector is None) == (released is None):
            raise ProtocolError("give exactly one of --detector NAME (with --weights FILE for released weights) "
                                "or --released NAME (an entry of params.yaml's released:)")
        if weights is None and name is not None:
            raise ProtocolError("--name names an ad-hoc --weights evaluation; give --weights FILE too")
        p, prof_name = load(params, profile)  # first: may set environment variables torch reads when it loads
        from sep_bench.engine.determinism import apply_torch
        from sep_bench.engine.evaluate import evaluate as run_eval
        from sep_bench.engine.predict import load_model
        from sep_bench.released import resolve_weights
        from sep_bench.report.ablation import ablation_tags

        model, record = None, None
        if released is not None or weights is not None:
            if released is not None:
                spec = resolve_released(p, released, prof_name, seed)
                resolved = resolve_weights(released, p.released_entry(released))  # checks the sha256 pin too
            else:
                spec = resolve(p, detector, prof_name, seed)
                row = name or f"{detector}-released"
                if row in p.detectors:
                    raise ProtocolError(f"--name {row!r} is a detector's row; choose another name")
                resolved = resolve_weights(row, ReleasedEntry(detector=detector, weights=str(weights)))
            model = load_model(spec.detector, resolved.path, official=True, recipe=spec.recipe)
            record, ckpt = resolved.record(), resolved.path
        else:
            spec = resolve(p, detector, prof_name, seed)
            ckpt = checkpoint or paths.train_dir(prof_name, detector, spec.seed) / "best.safetensors"
        apply_torch(spec.profile.deterministic, spec.profile.threads)
        row = record["name"] if record else spec.detector
        tags = {**ablation_tags(spec), **({"sep_bench.released": record["sha256"]} if record else {})}
        with run_tracker(p, spec, "evaluate", tracking_uri, no_track, tags, row=row) as tracker:
            folder = paths.robustness_dir(prof_name, row, spec.seed)
            perts = list(spec.recipe.eval.perturbations)

            def child(pert: str):
                if tracker is None:
                    return nullcontext(None)
                return tracker.child(f"evaluate/{row}/seed{spec.seed}/{pert}", {"sep_bench.perturbation": pert},
                                     {"perturbation": pert, **spec.flat_params()})

            with progress() as update:
                m = run_eval(spec, ckpt, paths.metrics_path(prof_name, row, spec.seed),
                             paths.predictions_path(prof_name, row, spec.seed), tracker=tracker, progress=update,
                             perturbations=perts, robustness_dir=folder, child_tracker=child, model=model,
                             released=record)
            if tracker is not None:
                tracker.set_tags({"sep_bench.pretrained": str(m["pretrained"]).lower(),
                                  "sep_bench.weights": m["weights"], "sep_bench.checkpoint": str(ckpt),
                                  "sep_bench.perturbation": "none"})
            rows = [(g, r) for g, r in m["generators"].items()] + [("Mean", m["mean"])]
            rows += [(f"Mean [{pert}]", m["perturbed"][pert]["mean"]) for pert in perts]
            write_json(folder / "index.json", {"perturbations": perts})
        table = Table(title=f"{row} on {prof_name}")
        for col in ("generator", "ACC", "real ACC", "fake ACC", "AP", "AUC"):
            table.add_column(col, justify="right" if col != "generator" else "left")
        fmt = lambda v: "-" if v is None else f"{100 * v:.2f}"  # noqa: E731
        for g, r in rows:
            table.add_row(g, *(fmt(r.get(k)) for k in ("acc", "real_acc", "fake_acc", "ap", "auc")))
        Console().print(table)
        eff = m["efficiency"]
        gflops = "-" if eff["flops_per_image"] is None else f"{eff['flops_per_image'] / 1e9:.3g}"
        console.print(f"{row}: {eff['params_total'] / 1e6:.2f} M parameters ({eff['params_trainable'] / 1e6:.2f} M "
                      f"trainable), {gflops} GFLOPs/image, {eff['images_per_s']} images/s on {eff['device']}",
                      highlight=False)


released_app = typer.Typer(help="Evaluation-only entries (params.yaml released:): the authors' weights.",
                           no_args_is_help=True)
app.add_typer(released_app, name="released")


@released_app.command("resolve")
def released_resolve(
    name: str = typer.Argument(..., help="An entry of params.yaml's released:."),
    params: Path = ParamsOpt,
) -> None:
    """Find the entry's weights (downloading a hub reference when online), check its sha256 pin and write
    runs/released/<name>.json (the DVC stage released@<name>)."""
    from sep_bench.released import resolve_weights, write_record

    with user_errors():
        p, _ = load(params, None)
        resolved = resolve_weights(name, p.released_entry(name))
        out = write_record(resolved)
        console.print(f"{name}: {resolved.detector} weights {resolved.path} sha256 {resolved.sha256} -> {out}",
                      highlight=False)


# `report` and `compare` live in sep_bench/report/commands.py
from sep_bench.report.commands import ablation_cmd, compare_cmd, report_cmd  # noqa: E402

app.command("report")(report_cmd)
app.command("compare")(compare_cmd)
app.command("ablation")(ablation_cmd)


@app.command()
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


@app.command()
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
    from sep_bench.sep.explain import render_explanation

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


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def pipeline(
    ctx: typer.Context,
    params: Path = ParamsOpt,
    cold: bool = typer.Option(False, "--cold", help="Start every stage command normally, without the warm "
                                                    "server (sep_bench.warm) that imports torch & co. once."),
    plain_dvc: bool = typer.Option(False, "--plain-dvc", help="Run DVC as is, without the fast lockfile update "
                                                              "(sep_bench.dvc_lockfile; the same dvc.lock either way)."),
) -> None:
    """Run the DVC pipeline (`dvc repro`, extra arguments are passed on) with a progress line per stage (k of N,
    elapsed, estimated time left), then print the reproduced-vs-committed verdict. `make pipeline` runs this."""
    from sep_bench.report.reproduced import write_tables
    from sep_bench.runner import run_pipeline

    dvc = shutil.which("dvc") or str(Path(sys.executable).with_name("dvc"))
    with user_errors():
        _, prof_name = load(params, None)  # also the profile's deterministic environment, for dvc and the warm server
    result = run_pipeline(ctx.args, dvc=dvc, warm=not cold, fast_lockfile=not plain_dvc)
    if result.returncode != 0:
        raise typer.Exit(result.returncode)
    with user_errors():
        line, _ = write_tables(prof_name)
    console.print("tables: results/tables/  plots: results/plots/  runs: sep-bench ui", highlight=False)
    console.print(line, highlight=False, soft_wrap=True)  # the last line: the reproduced-vs-committed verdict


@app.command()
def reproduced(
    params: Path = ParamsOpt,
    profile: Optional[str] = ProfileOpt,
    update_reference: bool = typer.Option(False, "--update-reference",
                                          help="Make this run's results the committed reference (maintainers)."),
    spread: Optional[list[str]] = typer.Option(
        None, "--spread", help="With --update-reference: the stated cross-machine spread in ACC points, of every "
        "row (X) or of one row (ROW=X, repeatable); rows not named keep the reference's (0 = bit-identical)."),
    note: str = typer.Option("", "--note", help="With --update-reference: how the spread was measured."),
) -> None:
    """Compare this run's results with the committed reference of the profile (results/reference/<profile>.json):
    per row the reference and reproduced Mean, the difference, bit-identical / within / outside the stated spread
    and the likely cause; writes results/tables/<profile>_reproduced.{md,csv} and prints the one-line verdict."""
    from sep_bench.report.reproduced import snapshot, write_reference, write_tables

    with user_errors():
        _, prof_name = load(params, profile)
        if update_reference:
            spreads = _spreads(spread or [], list(snapshot(prof_name)["rows"]))
            console.print(f"reference written: {write_reference(prof_name, spreads, note)}", highlight=False)
        line, _ = write_tables(prof_name)
        console.print(line, highlight=False, soft_wrap=True)


def _spreads(values: list[str], rows: list[str]) -> dict[str, float] | None:
    """``--spread`` values: ``X`` for every row, ``ROW=X`` for one (later values win)."""
    out: dict[str, float] = {}
    for value in values:
        row, _, number = value.rpartition("=")
        try:
            x = float(number)
        except ValueError:
            raise typer.BadParameter(f"--spread {value!r}: expected X or ROW=X (ACC points)") from None
        if row and row not in rows:
            raise typer.BadParameter(f"--spread {value!r}: no row {row!r} in this run ({', '.join(rows)})")
        out.update({r: x for r in ([row] if row else rows)})
    return out or None


@app.command()
def ui(
    port: int = typer.Option(5000, help="Port on 127.0.0.1."),
    tracking_uri: Optional[str] = TrackingOpt,
    params: Path = ParamsOpt,
) -> None:
    """Start the MLflow UI on 127.0.0.1 for this project's runs."""
    from sep_bench.protocol import load_params
    from sep_bench.tracking import ensure_store, project_root, resolve_tracking_uri

    uri = tracking_uri
    if uri is None and params.is_file():
        uri = load_params(params).tracking.uri
    uri = resolve_tracking_uri(uri)
    ensure_store(uri)
    console.print(f"MLflow UI for {uri} at http://127.0.0.1:{port}/#/experiments?workflowType=machine_learning")
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri, "--host", "127.0.0.1",
           "--port", str(port), "--default-artifact-root", (project_root() / "mlartifacts").as_uri()]
    raise typer.Exit(subprocess.call(cmd))


if __name__ == "__main__":  # pragma: no cover
    app()
