"""`sep-bench data get`: the command line of the download code (`sep_bench.acquire`): options, progress and errors
on the terminal; `sep_bench.acquire.request` checks what is asked, `sep_bench.acquire.assemble` does it."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from sep_bench.acquire.catalog import BENCHMARKS, AcquireError
from sep_bench.acquire.verify import MANIFEST_NAME
from sep_bench.cli.common import ParamsOpt, console, progress, user_errors

__all__ = ["get_cmd"]


def get_cmd(
    benchmark: str = typer.Argument(..., help=f"Benchmark: {' | '.join(BENCHMARKS)}."),
    generators: Optional[List[str]] = typer.Option(
        None, "--generators", "-g", help="Generators to fetch (any name: SDv1.4, sdv4, imagenet_ai_0419_sdv4); "
        "comma-separated or repeated. Default: all."),
    source: Optional[str] = typer.Option(
        None, "--source", "-s", help="hf | dataverse | modelscope | manual. Default: manual when --root is given, "
        "else the benchmark's default (genimage: dataverse, aigcbench: modelscope)."),
    root: Optional[Path] = typer.Option(
        None, "--root", help="manual: the folder holding the archives you downloaded (Google Drive / Baidu, or the "
        "Dataverse slices GenImage.z000...)."),
    splits: Optional[List[str]] = typer.Option(
        None, "--splits", help="genimage: train and/or val (default: both); members of other splits are not "
        "fetched or extracted."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Proceed with a download larger than the confirmation "
                             "threshold (50 GB; env SEP_BENCH_CONFIRM_ABOVE_GB)."),
    real_from: Optional[Path] = typer.Option(
        None, "--real-from", help="hf fake-only copies (bitmind/GenImage_ADM, _glide): a folder with the real images "
        "to pair them with, e.g. a GenImage tree holding <subset>/{train,val}/nature."),
    trust_sha256: Optional[Path] = typer.Option(
        None, "--trust-sha256", help="manual: a sha256 manifest of archives you vouch for (written next to the "
        "downloads after an md5 mismatch); listed archives are checked against it instead of the md5 list."),
    out: Optional[Path] = typer.Option(
        None, "--out", help="Where the canonical tree goes (default: the profile's data root in params.yaml, "
        "e.g. data/external/genimage)."),
    repo: Optional[str] = typer.Option(
        None, "--repo", help="Override the catalog's id: HF dataset repo (owner/name), Dataverse DOI (doi:...), "
        "ModelScope dataset (namespace/name)."),
    revision: Optional[str] = typer.Option(None, "--revision", help="hf / modelscope: branch, tag or commit."),
    endpoint: Optional[str] = typer.Option(
        None, "--endpoint", help="Base URL of the source (default: its public site; env HF_ENDPOINT, "
        "SEP_BENCH_DATAVERSE_URL, SEP_BENCH_MODELSCOPE_URL)."),
    cache: Optional[Path] = typer.Option(
        None, "--cache", help="Download folder, kept for resuming (default: <out's parent>/.downloads/<benchmark>)."),
    checksums: Optional[Path] = typer.Option(
        None, "--checksums", help="manual: an md5 CSV (default for GenImage: the bundled community list, from "
        "GenImage pull request #2, hashes of the Google Drive copy)."),
    keep_downloads: bool = typer.Option(False, "--keep-downloads", help="Keep downloaded archives/shards afterwards."),
    force: bool = typer.Option(False, "--force", help="Fetch and replace generators that are already installed."),
    retries: int = typer.Option(5, "--retries", min=0, help="Attempts per file after an interrupted transfer."),
    min_rate: Optional[float] = typer.Option(
        None, "--min-rate", min=0, help="Minimum transfer rate in KB/s over --rate-window seconds; a slower "
        "transfer is cut and resumed (default 1; env SEP_BENCH_MIN_RATE in bytes/s)."),
    rate_window: Optional[float] = typer.Option(
        None, "--rate-window", min=0, help="Seconds over which --min-rate is measured (default 60; 0: no check)."),
    deadline: Optional[float] = typer.Option(
        None, "--deadline", min=0, help="Stop downloading with an error once this many minutes have passed "
        "(default: none; downloads resume on the next run)."),
    params: Path = ParamsOpt,
) -> None:
    """Download (or take from --root), verify, extract and normalise a benchmark into the canonical tree.

    The result is read by `sep-bench data prepare` / the DVC pipeline (profiles genimage, aigcbench). Examples:

      sep-bench data get genimage --root ~/Downloads/GenImage          # official archives, downloaded by hand

      sep-bench data get genimage -g SDv1.4 --splits val               # Dataverse: only those members' bytes

      sep-bench data get genimage --source hf                          # Tiny-GenImage parquet subset

      sep-bench data get aigcbench                                     # ModelScope test_set.zip
    """
    from sep_bench.acquire.assemble import acquire
    from sep_bench.acquire.request import plan_get, split_names, write_stamps
    from sep_bench.acquire.sources import FetchContext
    from sep_bench.acquire.transfer import Policy

    with user_errors():
        try:
            bench, gens, src, split_set, dest = plan_get(benchmark, split_names(generators), source, root, real_from,
                                                         split_names(splits), out, params)
            policy = Policy.from_env(min_rate=None if min_rate is None else min_rate * 1000,
                                     rate_window=rate_window, deadline=None if deadline is None else deadline * 60)
            ctx = FetchContext(bench=bench, generators=gens, cache=cache or dest.parent / ".downloads" / bench.name,
                               endpoint=endpoint, repo=repo, revision=revision, root=root, checksums=checksums,
                               retries=retries, splits=split_set, yes=yes, real_from=real_from,
                               trust_sha256=trust_sha256, policy=policy,
                               notify=lambda m: console.print(m, highlight=False, markup=False))
            console.print(f"{bench.name}: {', '.join(g.display for g in gens)} from {src} -> {dest}", highlight=False)
            with progress() as update:
                ctx.progress = update
                res = acquire(bench, gens, src, dest, ctx, force=force, keep_downloads=keep_downloads)
        except AcquireError as err:  # names from a service may hold [brackets]: never read as markup
            console.print("[bold red]error:[/] ", end="", highlight=False)
            console.print(str(err), highlight=False, markup=False, soft_wrap=True)
            raise typer.Exit(2) from None
    for stamp in write_stamps(res.out, params):
        console.print(f"updated {stamp}", highlight=False)
    _print_counts(res.counts)
    if res.present:
        console.print(f"already installed (use --force to fetch again): {', '.join(res.present)}", highlight=False)
    console.print(f"[green]ready[/] {res.out} (manifest {res.out / MANIFEST_NAME}); licence: {bench.licence}. "
                  f"Next: dvc exp run -S profile={'aigcbench' if bench.name == 'progan' else bench.name}",
                  highlight=False)


def _print_counts(counts: dict) -> None:
    from rich.table import Table

    table = Table(title="images per generator / split")
    for col in ("generator", "split", "real", "fake"):
        table.add_column(col, justify="left" if col in ("generator", "split") else "right")
    for g, splits in counts.items():
        for sp, c in splits.items():
            table.add_row(g, sp, str(c.get("real", 0)), str(c.get("fake", 0)))
    console.print(table)


