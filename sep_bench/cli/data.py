"""`sep-bench data ...`: build, fetch and check datasets (the pipeline's data stage is `data prepare`)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from sep_bench import paths
from sep_bench.cli.common import (
    ParamsOpt,
    ProfileOpt,
    SetOpt,
    console,
    load,
    progress,
    user_errors,
)

__all__ = ["register", "build_mini"]


def register(app: typer.Typer, argv=None) -> None:
    data_app = typer.Typer(help="Build, fetch and check datasets.", no_args_is_help=True)
    data_app.command("build-mini")(data_build_mini)
    data_app.command("minigen-weights")(data_minigen_weights)
    data_app.command("prepare")(data_prepare)
    data_app.command("synth")(data_synth)
    sub = argv[0] if argv else None
    if sub in (None, "get", "--help"):  # the download code loads only for `data get` (and the group's help)
        from sep_bench.cli.data_get import get_cmd

        data_app.command("get")(get_cmd)
    app.add_typer(data_app, name="data")


def data_build_mini(
    out: Optional[Path] = typer.Option(None, help="Output folder (default: data/prepared/<profile>)."),
    params: Path = ParamsOpt,
    profile: Optional[str] = ProfileOpt,
    seed: Optional[int] = typer.Option(None, help="Override the profile's minigen seed."),
    force: bool = typer.Option(False, help="Rebuild even if a matching build exists."),
) -> None:
    """Build the embedded offline benchmark (minigen): real photo crops and locally trained generators' fakes."""
    with user_errors():
        build_mini(params, profile, out, seed, force)


def build_mini(params: Path, profile: Optional[str], out: Optional[Path], seed: Optional[int], force: bool,
               sets: Optional[list[str]] = None) -> dict:
    from sep_bench.data.minigen import BUILD_LOG_SUFFIX, MinigenConfig, build_minigen
    from sep_bench.protocol import ProtocolError

    p, prof_name = load(params, profile, sets)
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


def data_prepare(params: Path = ParamsOpt, profile: Optional[str] = ProfileOpt,
                 sets: Optional[list[str]] = SetOpt) -> None:
    """The pipeline's data stage: build minigen, or verify an external dataset (manifest, counts) and write its summary."""
    from sep_bench.io import write_json
    from sep_bench.tracking import ensure_store, resolve_tracking_uri

    with user_errors():
        p, prof_name = load(params, profile, sets)
        ensure_store(resolve_tracking_uri(p.tracking.uri))  # created once here, before parallel stages
        # the report stage depends on this folder; with an empty run.selection no selection stage makes it
        paths.selection_dir(prof_name).mkdir(parents=True, exist_ok=True)
        data = p.profiles[prof_name].data
        if data.source == "minigen":
            build_mini(params, prof_name, None, None, False, sets)
            return
        from sep_bench.data.verify import verify_external  # external data: the installed tree against its manifest

        from sep_bench.data.stamps import write_stamp

        root = paths.data_root(prof_name, data)
        with progress() as update:
            summary = verify_external(data, progress=update)  # sha256 manifest, counts, the profile's generators
        write_json(paths.prepared_dir(prof_name) / "summary.json", summary)
        console.print(f"{root}: verified against its manifest; "
                      f"{sum(len(v) for v in summary['counts'].values())} generator/split folders", highlight=False)
        if stamp := write_stamp(prof_name, data):  # a tree placed by hand: its first check stamps it
            console.print(f"wrote {stamp} (the data stage's dependency); next: dvc exp run -S profile={prof_name}",
                          highlight=False)




def data_synth(
    like: str = typer.Option(..., "--like", help="The dataset whose shape to copy: genimage | aigcbench."),
    out: Optional[Path] = typer.Option(None, help="Where the tree goes (default: the profile's data root in "
                                       "params.yaml, e.g. data/external/genimage); must be absent or empty."),
    train_out: Optional[Path] = typer.Option(None, help="aigcbench: where the ProGAN training set goes (default: the "
                                             "profile's train_root)."),
    n_train: int = typer.Option(8, help="Training images per class (GenImage: SD v1.4's train split)."),
    n_test: int = typer.Option(4, help="Test images per generator (and class folder) and class."),
    scale: float = typer.Option(1.0, help="Multiply every image size (0.25: Midjourney's 1024 px fakes become 256 px)."),
    seed: int = typer.Option(0, help="Same seed and options, same bytes."),
    defects: bool = typer.Option(True, help="Include the real set's known bad files (GenImage: zero-byte PNGs in "
                                 "ADM and GLIDE, unreadable SD v1.5 nature JPEGs)."),
    params: Path = ParamsOpt,
) -> None:
    """Write a stand-in dataset with a real one's shape (folder names, layout, sizes, formats, grayscale/CMYK reals,
    known bad files) and random pixels: for trying the real-data path without the download. Never a result."""
    from sep_bench.acquire.request import default_out
    from sep_bench.acquire.synth import SynthError, expected_images, synth_tree

    with user_errors():
        dest = out or default_out(like, params)
        train_dest = train_out or (default_out("progan", params) if like == "aigcbench" else None)
        try:
            total, done = expected_images(like, n_train, n_test), [0]
            with progress() as update:
                def advance(k: int) -> None:
                    done[0] += k
                    update(f"synth {like}", done[0], total)

                summary = synth_tree(like, dest, n_train=n_train, n_test=n_test, scale=scale, seed=seed,
                                     defects=defects, train_out=train_dest, progress=advance)
        except SynthError as err:
            console.print(f"[bold red]error:[/] {err}", highlight=False)
            raise typer.Exit(2) from None
    console.print(f"wrote {summary.images} images under {', '.join(map(str, summary.roots))} "
                  f"({len(summary.defects)} bad files on purpose). Random pixels with {like}'s shape: never a result. "
                  f"Next: sep-bench data prepare --profile {like}", highlight=False, soft_wrap=True)
