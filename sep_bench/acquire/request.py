"""What `sep-bench data get` asks for, checked and resolved (no command line here: `sep_bench.cli.data_get` is the
command), and the stamps the `data prepare` stage reads after an install."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from sep_bench.acquire.catalog import AcquireError, Benchmark, get_benchmark
from sep_bench.data.stamps import STAMPS_DIR, stamp_path, write_stamp

__all__ = ["plan_get", "resolve_source", "default_out", "write_stamps", "split_names", "STAMPS_DIR"]


_FALLBACK_OUT = {"genimage": "data/external/genimage", "aigcbench": "data/external/aigcbench",
                 "progan": "data/external/progan_train"}


def default_out(bench_name: str, params: Path) -> Path:
    """The folder `params.yaml` reads the benchmark from (profile `<benchmark>`'s root; progan: a train_root)."""
    try:
        from sep_bench.protocol import load_params

        p = load_params(params)
        for name, prof in p.profiles.items():
            d = prof.data
            if d.source != "external":
                continue
            if bench_name == "progan" and d.train_root:
                return Path(d.train_root)
            if name == bench_name and d.root:
                return Path(d.root)
    except Exception:  # no or another params.yaml: the conventional place
        pass
    return Path(_FALLBACK_OUT.get(bench_name, f"data/external/{bench_name}"))


def split_names(values: Optional[list[str]]) -> list[str]:
    """Comma-separated or repeated option values, as one list."""
    return [v.strip() for raw in values or [] for v in raw.split(",") if v.strip()]


def resolve_source(bench: Benchmark, source: Optional[str], root: Optional[Path], real_from: Optional[Path]) -> str:
    """The source a `data get` reads: the given one, `manual` for a --root folder, else the benchmark's default."""
    src = source or ("manual" if root is not None else bench.default_source)
    if root is not None and src == "dataverse":
        src = "manual"  # the Dataverse slices already on disk: read in place
    if root is not None and src != "manual":
        raise AcquireError("--root names a folder of manual downloads; it goes with --source manual")
    if real_from is not None and src != "hf":
        raise AcquireError("--real-from pairs a fake-only Hugging Face copy with real images; it goes with "
                           "--source hf")
    return src


def plan_get(benchmark: str, generators: list[str], source: Optional[str], root: Optional[Path],
             real_from: Optional[Path], splits: list[str], out: Optional[Path], params: Path):
    """What a `data get` will do: (benchmark, generators, source, split set or None, destination folder), or an
    AcquireError naming the option that is wrong."""
    bench = get_benchmark(benchmark)
    gens = bench.resolve(generators)
    src = resolve_source(bench, source, root, real_from)
    split_set = set(splits) or None
    if split_set and (bad := split_set - set(bench.splits)):
        raise AcquireError(f"{bench.name}: unknown split(s) {', '.join(sorted(bad))}; its splits: "
                           f"{', '.join(bench.splits)}")
    return bench, gens, src, split_set, out or default_out(bench.name, params)


def write_stamps(out: Path, params: Path, stamps_dir: Path = STAMPS_DIR) -> list[Path]:
    """Write ``data/stamps/<profile>.json`` (`sep_bench.data.stamps`) for each external profile of `params` that
    reads `out`, so the pipeline's data stage depends on the manifests, never on ``data/external`` itself."""
    try:
        from sep_bench.protocol import load_params

        p = load_params(params)
    except Exception:  # no params.yaml here: nothing to stamp
        return []
    written = []
    for name, prof in p.profiles.items():
        d = prof.data
        roots = [r for r in (d.root, d.train_root) if d.source == "external" and r]
        if any(Path(r).resolve() == Path(out).resolve() for r in roots):
            write_stamp(name, d, stamps_dir)
            written.append(stamp_path(name, stamps_dir))
    return written
