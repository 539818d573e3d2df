"""The `sep-bench` command line. Every command is a thin call into the modules; DVC stages call these too.

Errors a user can fix (protocol, data, checkpoint, skip budget) are printed as one line naming the fix, with
exit code 2, never as a traceback from deep inside torch.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Optional

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from sep_bench import paths

app = typer.Typer(
    help="sep-bench: train and evaluate AI-generated-image detectors (SEP and baselines) under one protocol.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Build, fetch and check datasets.", no_args_is_help=True)
app.add_typer(data_app, name="data")

console = Console(stderr=True)
log = logging.getLogger("sep_bench")

ParamsOpt = typer.Option(Path("params.yaml"), "--params", help="The protocol file.")
ProfileOpt = typer.Option(None, "--profile", help="Profile to use instead of params.yaml's `profile`.")
TrackingOpt = typer.Option(None, "--tracking-uri", help="MLflow tracking URI (default: sqlite DB at the repo root).")
NoTrackOpt = typer.Option(False, "--no-track", help="Do not log to MLflow.")


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


@contextmanager
def _user_errors() -> Iterator[None]:
    from sep_bench.data.layouts import LayoutError
    from sep_bench.detectors import UnknownDetectorError
    from sep_bench.engine.checkpoint import CheckpointError
    from sep_bench.engine.inference import SkipBudgetError
    from sep_bench.protocol import ProtocolError
    from sep_bench.weights import UnsafeCheckpointError

    try:
        yield
    except (ProtocolError, LayoutError, UnknownDetectorError, CheckpointError, SkipBudgetError,
            UnsafeCheckpointError, FileNotFoundError) as err:
        console.print(f"[bold red]error:[/] {err}", highlight=False)
        raise typer.Exit(2) from None


@contextmanager
def _progress() -> Iterator[Callable[[str, int, int], None]]:
    """A rich progress display; yields ``update(task, completed, total)``."""
    prog = Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), TimeRemainingColumn(), console=console,
    )
    tasks: dict[str, int] = {}

    def update(name: str, completed: int, total: int) -> None:
        if name not in tasks:
            tasks[name] = prog.add_task(name, total=total)
        prog.update(tasks[name], completed=completed, total=total)

    with prog:
        yield update


def _load(params: Path, profile: Optional[str]):
    from sep_bench.protocol import load_params

    p = load_params(params)
    return p, profile or p.profile


def _tracker(p, spec, kind: str, tracking_uri: Optional[str], no_track: bool, run_name: str, extra_tags=None):
    from contextlib import nullcontext

    if no_track:
        return nullcontext(None)
    from sep_bench.detectors import get_detector
    from sep_bench.tracking import TAG_PREFIX, Tracker, resolve_tracking_uri
    from sep_bench.weights import parse_pretrained

    det = get_detector(spec.detector)
    weights = parse_pretrained(spec.recipe.pretrained, det.default_weights) if kind == "train" else None
    tags = {
        f"{TAG_PREFIX}kind": kind,
        f"{TAG_PREFIX}profile": spec.profile_name,
        f"{TAG_PREFIX}detector": spec.detector,
        f"{TAG_PREFIX}protocol_hash": spec.protocol_hash(),
        f"{TAG_PREFIX}test_generators": ",".join(spec.profile.data.test_generators),
        f"{TAG_PREFIX}seed": str(spec.seed),
        **({f"{TAG_PREFIX}pretrained": str(weights.pretrained).lower(),
            f"{TAG_PREFIX}weights": weights.describe()} if weights else {}),
        **(extra_tags or {}),
    }
    return Tracker(
        uri=resolve_tracking_uri(tracking_uri or p.tracking.uri),
        experiment=f"{p.tracking.experiment}/{spec.profile_name}",
        run_name=run_name,
        tags=tags,
        params={"kind": kind, **spec.flat_params()},
    )


# ---- commands ---------------------------------------------------------------------------------------------


@app.command("list")
def list_cmd() -> None:
    """List registered detectors (including those of installed plugin packages)."""
    from sep_bench.detectors import get_detector, list_detectors

    table = Table(title="sep-bench detectors")
    for col in ("name", "summary", "paper", "official weights"):
        table.add_column(col)
    for name in list_detectors():
        try:
            s = get_detector(name)
            table.add_row(name, s.summary, s.paper, "yes" if s.load_official else "-")
        except Exception as err:  # one broken plugin must not hide the others
            table.add_row(name, f"[red]failed to load: {err}[/]", "", "")
    Console().print(table)


@data_app.command("build-mini")
def data_build_mini(
    out: Optional[Path] = typer.Option(None, help="Output folder (default: data/prepared/<profile>)."),
    params: Path = ParamsOpt,
    profile: Optional[str] = ProfileOpt,
    seed: Optional[int] = typer.Option(None, help="Override the profile's minigen seed."),
    force: bool = typer.Option(False, help="Rebuild even if a matching build exists."),
) -> None:
    """Build the embedded offline benchmark (minigen): real photo crops and locally trained generators' fakes."""
    with _user_errors():
        _build_mini(params, profile, out, seed, force)


def _build_mini(params: Path, profile: Optional[str], out: Optional[Path], seed: Optional[int], force: bool) -> dict:
    from sep_bench.data.minigen import MinigenConfig, build_minigen
    from sep_bench.protocol import ProtocolError

    p, prof_name = _load(params, profile)
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
    with _progress() as update:
        manifest = build_minigen(out, MinigenConfig(**kwargs), force=force, progress=update)
    console.print(f"minigen ready in {out}: " + ", ".join(
        f"{g} {sum(sum(c.values()) for c in s.values())}" for g, s in manifest["counts"].items()))
    return manifest


@data_app.command("prepare")
def data_prepare(params: Path = ParamsOpt, profile: Optional[str] = ProfileOpt) -> None:
    """The pipeline's data stage: build minigen, or check an external dataset's layout and write its summary."""
    from sep_bench.data.layouts import read_layout, summarize
    from sep_bench.io import write_json
    from sep_bench.tracking import ensure_store, resolve_tracking_uri

    with _user_errors():
        p, prof_name = _load(params, profile)
        ensure_store(resolve_tracking_uri(p.tracking.uri))  # created once here, before parallel stages
        data = p.profiles[prof_name].data
        if data.source == "minigen":
            _build_mini(params, prof_name, None, None, False)
            return
        root = paths.data_root(prof_name, data)
        summary = summarize(read_layout(root, data.layout))
        write_json(paths.prepared_dir(prof_name) / "summary.json", {"root": str(root), "counts": summary})
        console.print(f"{root}: {sum(len(v) for v in summary.values())} generator/split folders")


@app.command()
def train(
    detector: str = typer.Option(..., "--detector", "-d", help="Registered detector name (see `sep-bench list`)."),
    params: Path = ParamsOpt,
    profile: Optional[str] = ProfileOpt,
    out: Optional[Path] = typer.Option(None, help="Checkpoint folder (default: runs/<profile>/<detector>/train)."),
    tracking_uri: Optional[str] = TrackingOpt,
    no_track: bool = NoTrackOpt,
) -> None:
    """Train a detector under the active profile; resumes from the folder's last checkpoint if it matches."""
    from sep_bench.engine.train import train as run_train
    from sep_bench.protocol import resolve

    with _user_errors():
        p, prof_name = _load(params, profile)
        spec = resolve(p, detector, prof_name)
        out = out or paths.train_dir(prof_name, detector)
        with _tracker(p, spec, "train", tracking_uri, no_track, f"train/{detector}") as tracker, _progress() as update:
            result = run_train(spec, out, tracker=tracker, progress=update)
            if tracker is not None:
                tracker.set_tags({"sep_bench.checkpoint": str(result.best_checkpoint)})
                tracker.log_artifact(out / "train.json")
        val = ", ".join(f"{k} {v:.4f}" for k, v in result.best_val.items() if isinstance(v, float))
        console.print(f"[green]trained {detector}[/] in {result.seconds:.1f}s; best epoch {result.best_epoch + 1}"
                      f"/{result.epochs} (validation: {val or 'none'}); {result.best_checkpoint}", highlight=False)


@app.command()
def evaluate(
    detector: str = typer.Option(..., "--detector", "-d", help="Registered detector name."),
    checkpoint: Optional[Path] = typer.Option(None, help="Checkpoint (default: the training stage's best)."),
    params: Path = ParamsOpt,
    profile: Optional[str] = ProfileOpt,
    tracking_uri: Optional[str] = TrackingOpt,
    no_track: bool = NoTrackOpt,
) -> None:
    """Evaluate a checkpoint on every test generator; write predictions (parquet) and metrics (JSON)."""
    from sep_bench.engine.evaluate import evaluate as run_eval
    from sep_bench.protocol import resolve

    with _user_errors():
        p, prof_name = _load(params, profile)
        spec = resolve(p, detector, prof_name)
        ckpt = checkpoint or paths.train_dir(prof_name, detector) / "best.safetensors"
        with _tracker(p, spec, "evaluate", tracking_uri, no_track, f"evaluate/{detector}") as tracker, \
                _progress() as update:
            m = run_eval(spec, ckpt, paths.metrics_path(prof_name, detector), paths.predictions_path(prof_name, detector),
                         tracker=tracker, progress=update)
            if tracker is not None:
                tracker.set_tags({"sep_bench.pretrained": str(m["pretrained"]).lower(),
                                  "sep_bench.weights": m["weights"], "sep_bench.checkpoint": str(ckpt)})
        table = Table(title=f"{detector} on {prof_name}")
        for col in ("generator", "ACC", "real ACC", "fake ACC", "AP", "AUC"):
            table.add_column(col, justify="right" if col != "generator" else "left")
        fmt = lambda v: "-" if v is None else f"{100 * v:.2f}"  # noqa: E731
        for g, r in [*m["generators"].items(), ("Mean", m["mean"])]:
            table.add_row(g, *(fmt(r.get(k)) for k in ("acc", "real_acc", "fake_acc", "ap", "auc")))
        Console().print(table)


@app.command()
def report(params: Path = ParamsOpt, profile: Optional[str] = ProfileOpt) -> None:
    """Regenerate the tables (markdown, CSV) and plots of a profile from its metrics files."""
    from sep_bench.report.plots import heatmap
    from sep_bench.report.tables import load_metrics, write_table

    with _user_errors():
        p, prof_name = _load(params, profile)
        metrics = load_metrics(paths.metrics_dir(prof_name), p.run.detectors)
        df = write_table(metrics, paths.TABLES_DIR / f"{prof_name}_acc", "acc")
        heatmap(df, paths.PLOTS_DIR / f"{prof_name}_acc_heatmap.png", f"ACC (%) — profile {prof_name}")
        table = Table(title=f"ACC (%) — profile {prof_name}")
        table.add_column("detector")
        for c in df.columns:
            table.add_column(str(c), justify="right")
        for name, row in df.iterrows():
            table.add_row(str(name), *("-" if v != v else f"{v:.2f}" for v in row))
        Console().print(table)


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
    console.print(f"MLflow UI for {uri} at http://127.0.0.1:{port}")
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri, "--host", "127.0.0.1",
           "--port", str(port), "--default-artifact-root", (project_root() / "mlartifacts").as_uri()]
    raise typer.Exit(subprocess.call(cmd))


if __name__ == "__main__":  # pragma: no cover
    app()
