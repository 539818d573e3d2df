"""The figures of README.md and docs/*.md, each rendered from the files under results/ (and params.yaml, the
registry) into the marked block ``<!-- NAME:start -->`` ... ``<!-- NAME:end -->`` of the same name.

Every function takes the `Sources` to read and returns the block's markdown; `BLOCKS` maps a block name to its
function. `scripts/render_docs.py` writes the blocks; `tests/test_docs.py` checks that they are current.
"""

from __future__ import annotations

import csv
import importlib.util
import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Callable

import yaml

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Sources:
    """Where the figures come from: the repository (params.yaml, benchmarks/) and its results folder."""

    repo: Path = ROOT
    results: Path = ROOT / "results"

    def json(self, name: str) -> dict | list:
        return json.loads((self.results / "benchmarks" / f"{name}.json").read_text())

    def table(self, name: str) -> str:
        """The markdown table of results/tables/<name>.md (its first paragraph, without the caption)."""
        return (self.results / "tables" / f"{name}.md").read_text().split("\n\n")[0].strip()

    def caption(self, name: str) -> str:
        return (self.results / "tables" / f"{name}.md").read_text().split("\n\n", 1)[1].strip()

    def rows(self, name: str) -> list[dict]:
        with open(self.results / "tables" / f"{name}.csv", newline="") as f:
            return list(csv.DictReader(f))

    def params(self) -> dict:
        return yaml.safe_load((self.repo / "params.yaml").read_text())


@cache
def _benchmark_module(name: str):
    """A script of benchmarks/ (not a package) by path, for the text generators it owns."""
    spec = importlib.util.spec_from_file_location(f"_sep_bench_benchmarks_{name}", ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _mark(row: str) -> str:
    """A table row's detector name without its footnote marks (†, °, ¶, ‡, §)."""
    return row.rstrip("†°¶‡§")


# -- README ------------------------------------------------------------------------------------------------------

def mini_acc_table(src: Sources) -> str:
    return src.table("mini_acc")


def pipeline_timing(src: Sources) -> str:
    return _benchmark_module("pipeline").readme_sentence(src.json("pipeline"))


def pipeline_noop(src: Sources) -> str:
    return _benchmark_module("pipeline").noop_sentence(src.json("pipeline_noop"))


def dvc_overhead(src: Sources) -> str:
    return _benchmark_module("dvc_overhead").doc_sentence(src.json("dvc_overhead"))


def pipeline_incremental(src: Sources) -> str:
    return _benchmark_module("pipeline").incremental_sentence(src.json("pipeline_incremental"))


def default_run(src: Sources) -> str:
    """What the default profile trains: detectors, images, generators, epochs (from params.yaml)."""
    params = src.params()
    mini = params["profiles"]["mini"]
    data, gen = mini["data"], mini["data"]["minigen"]
    n_train = gen["n_train_real"] * (1 + len(data["train_generators"]))
    epochs = sorted({_mini_epochs(params, d) for d in params["run"]["detectors"]})
    span = f"{epochs[0]}" if len(epochs) == 1 else f"{epochs[0]} to {epochs[-1]}"
    return (f"{len(params['run']['detectors'])} detectors, each trained on {n_train} images "
            f"({gen['n_train_real']} real crops and their `{'`, `'.join(data['train_generators'])}` reconstructions,"
            f" {gen['image_size']} px) for {span} CPU epochs (profile default {mini['train']['epochs']}), "
            f"tested on {len(data['test_generators'])} generators with {gen['n_test_real']} real and "
            f"{gen['n_test_real']} fake images each.")


def _mini_epochs(params: dict, detector: str) -> int:
    override = params["detectors"][detector].get("overrides", {}).get("mini", {})
    return override.get("train", {}).get("epochs", params["profiles"]["mini"]["train"]["epochs"])


def learning_check(src: Sources) -> str:
    rows = src.rows("mini_learning")
    by = {v: [_mark(r["detector"]) for r in rows if r["verdict"] == v] for v in ("pass", "FAIL", "exempt")}
    exempt = [float(r["acc"]) * 100 for r in rows if r["verdict"] == "exempt"]
    lowered = [f"`{_mark(r['detector'])}` at its own {float(r['bar']) * 100:.0f}%" for r in rows
               if r["bar"] and r["reason"] and r["verdict"] != "exempt"]
    bar = src.params()["profiles"]["mini"]["learning_check"]["min_acc"] * 100
    text = (f"Learning check (`results/tables/mini_learning.md`, ACC on the training generator, bar {bar:.0f}%): "
            f"{len(by['pass'])} of {len(rows)} detectors pass" + (f" ({', '.join(lowered)})" if lowered else ""))
    if by["FAIL"]:
        text += f"; FAIL: {', '.join(f'`{d}`' for d in by['FAIL'])}"
    if exempt:
        text += (f"; {len(exempt)} are exempt because they cannot learn offline (their ACC on the training "
                 f"generator: {min(exempt):.1f} to {max(exempt):.1f})")
    return text + "."


def format_leak(src: Sources) -> str:
    mean = {_mark(r["detector"]): float(r["Mean"]) for r in src.rows("mini_acc")}
    return (f"`formatonly`, which reads JPEG quantisation traces only, reaches a Mean ACC of "
            f"{mean['formatonly']:.1f}: minigen leaks format (some of its source photographs were JPEGs).")


# -- docs/performance.md ----------------------------------------------------------------------------------------

def eps_speedups(src: Sources) -> str:
    """Exposed-patch selection against the official per-patch loop, measured in the same run."""
    eps = src.json("eps")
    by = {r["image_size"]: r for r in eps["results"]}
    small, large = by[min(by)], by[max(by)]

    def pair(key: str) -> str:
        return f"{small['speedup_vs_reference'][key]:.1f}x / {large['speedup_vs_reference'][key]:.1f}x"

    met = " and ".join(f"{k} {v:.0f}x {'met' if eps['goals_met'][k] else 'NOT met'}" for k, v in eps["goals"].items())
    return (f"Exposed-patch selection (`python benchmarks/eps.py`, {eps['machine']['cpus']} CPU cores, one thread, "
            f"{eps['n_candidates']} candidates of {eps['patch_size']} px, the official per-patch loop measured in "
            f"the same run, {eps['date'][:10]}), at {min(by)}x{min(by)} / {max(by)}x{max(by)} px: with the "
            f"{eps['backend']} backend (the default), official mode {pair('official')} the loop "
            f"({small['ms_per_image']['official']:.3f} / {large['ms_per_image']['official']:.3f} ms per image), "
            f"exhaustive mode (every position) {pair('exhaustive')}; goals: {met}. The NumPy fallback: official "
            f"{pair('numpy/official')}, exhaustive {pair('numpy/exhaustive')}. A process pays "
            f"{eps['start_up']['import_ms']:.0f} ms to import the compiled kernels and "
            f"{eps['start_up']['first_official_ms']:.0f} ms for its first selection.")


def gpu_throughput(src: Sources) -> str:
    """Evaluation and training throughput per detector on a GPU (benchmarks/evaluate.py, benchmarks/train.py)."""
    ev, tr = src.json("evaluate"), src.json("train")
    m = ev["machine"]
    head = (f"{m['gpu']['name']}, {m['cpu_cores']} CPU cores ({m['cpu_model']}), torch {m['versions']['torch']}, "
            f"the `{ev['profile']}` recipes at full size, random-init weights, {ev['args']['amp']} autocast, "
            f"{ev['args']['workers']} loader workers, {ev['args']['size']} px synthetic images "
            f"({ev['date'][:10]}). Images per second:\n\n")
    lines = ["| detector | eval: forward only | eval: `sep-bench evaluate` path | eval: official loop structure "
             "| ours / official | train step, pre-built batches | train, real loader |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for name, e in ev["results"].items():
        t = tr["results"][name]
        lines.append(f"| {name} | {e['forward_images_per_s']:.0f} | {e['ours_images_per_s']:.0f} | "
                     f"{e['official_images_per_s']:.0f} | {e['speedup_vs_official']:.1f}x | "
                     f"{t['prebuilt_images_per_s']:.0f} | {t['loader_images_per_s']:.0f} |")
    cached = {n: t["features_images_per_s"] for n, t in tr["results"].items() if "features_images_per_s" in t}
    foot = "".join(f"\n\n`{n}` trains its head on cached features at {v:,.0f} images per second."
                   for n, v in cached.items())
    return head + "\n".join(lines) + foot


def data_pipeline(src: Sources) -> str:
    """Decode + views against PIL decoding alone, per detector view (benchmarks/data_pipeline.py)."""
    dp = src.json("data_pipeline")
    views = [r for r in dp["results"] if ":" in r["method"]]
    cells = ", ".join(f"`{r['method']}` +{r['overhead_vs_pil'] * 100:.0f}%{'' if r['goal_met'] else ' (over)'}"
                      for r in views)
    over = sum(not r["goal_met"] for r in views)
    return (f"Decode + views (`python benchmarks/data_pipeline.py`, one thread, {dp['images']['count']} images of "
            f"{dp['images']['sizes_sample'][0]} px, PIL decoding alone measured in the same run, "
            f"{dp['date'][:10]}), time over decoding alone against the goal of "
            f"{dp['goal_overhead_vs_pil'] * 100:.0f}%: {cells}; {len(views) - over} of {len(views)} views within it.")


def buckets(src: Sources) -> str:
    b = src.json("buckets")
    inf, runs = b["inference"], b["loader_workers"]["runs"]
    later = lambda k: sum(r["seconds"] for r in runs[k][1:]) / (len(runs[k]) - 1)  # noqa: E731
    return (f"Size-bucketed evaluation (`python benchmarks/buckets.py`, {b['machine']['cpu_cores']} CPU cores, "
            f"{b['date'][:10]}): NPR on full images of {len(b['sizes'])} sizes gives the same logits at any batch "
            f"size (largest difference {inf['bucketed']['max_abs_logit_diff_vs_batch1']:.0e}); against batch 1, "
            f"bucketed batch {inf['bucketed']['batch_size']} runs at {inf['bucketed']['vs_batch1']:.2f}x and batch "
            f"{inf['bucketed_small']['batch_size']} at {inf['bucketed_small']['vs_batch1']:.2f}x on this CPU. "
            f"Persistent loader workers ({b['loader_workers']['workers']} workers) make later passes "
            f"{later('non_persistent') / later('persistent'):.2f}x as fast.")


# -- docs/reproducibility.md ------------------------------------------------------------------------------------

def cross_isa(src: Sources) -> str:
    """NPR's mini recipe trained with the math libraries capped to emulate other CPUs (benchmarks/cross_isa.py)."""
    c = src.json("cross_isa")
    npr, summary = c["cases"]["npr"], c["summary"]["npr"]
    names = {"native": "native", "avx2": "capped at AVX2", "sse41": "capped at SSE4.1"}
    lines = ["| kernels | deterministic off: Mean ACC (weights) | deterministic on: Mean ACC (weights) |",
             "| --- | --- | --- |"]
    for cap, label in names.items():
        cells = [f"{npr[m][cap]['mean_acc'] * 100:.1f} (`{npr[m][cap]['weights_sha256'][:8]}`)" for m in ("off", "on")]
        lines.append(f"| {label} | {cells[0]} | {cells[1]} |")
    ratio = summary["on"]["train_seconds_ratio_vs_off"]["native"]
    spread = summary["off"]["mean_acc_spread_points"]
    return ("\n".join(lines) + f"\n\nSpread of the Mean ACC across the three: {spread}"
            f" points with it off, {summary['on']['mean_acc_spread_points']} with it on; it makes training "
            f"{ratio:.1f}x as long ({c['date'][:10]}, {c['machine']['cpu']}, {c['machine']['cpus']} cores).")


def seed_spread(src: Sources) -> str:
    """Every mini row trained and evaluated with seeds 0-2 (benchmarks/seed_spread.py): the spread of its Mean ACC,
    and the rows the table's rule leaves unranked (sep_bench.report.spread)."""
    import math
    import statistics

    import pandas as pd

    from sep_bench.report.spread import not_ranked

    s = src.json("seed_spread")
    seeds = [str(x) for x in s["seeds"]]
    dets = {d: e for d, e in s["detectors"].items() if e["std"] is not None}
    order = sorted(dets, key=lambda d: -dets[d]["mean"])
    lines = ["| detector | " + " | ".join(f"seed {x}" for x in seeds) + " | mean | std | min..max | seed 0 = table |",
             "|---" * (len(seeds) + 5) + "|"]
    for d in order:
        e = dets[d]
        cells = [f"{e['mean_acc_per_seed'][x]:.2f}" if x in e["mean_acc_per_seed"] else "failed" for x in seeds]
        same = {True: "yes", False: "NO", None: "-"}[e["seed0_equals_committed"]]
        lines.append(f"| {d} | " + " | ".join(cells) + f" | {e['mean']:.2f} | {e['std']:.2f} | "
                     f"{e['min']:.2f}..{e['max']:.2f} | {same} |")
    table = {_mark(r["detector"]): float(r["Mean"]) for r in src.rows("mini_acc")}  # the committed rows
    unranked = not_ranked(pd.Series(table), pd.Series({d: dets[d]["std"] if d in dets else math.nan for d in table}))
    names = ", ".join(f"`{d}`" for d in sorted(table, key=lambda d: -table[d]) if unranked[d])
    stds = [e["std"] for e in dets.values()]
    failed = [d for d, e in s["detectors"].items() if e["failed"]]
    missing = [d for d in s.get("order", []) if d not in dets]
    m = s["machine"]
    return ("\n".join(lines) + f"\n\nMean ACC (%) per seed; std = sample standard deviation over the seeds. Median "
            f"std {statistics.median(stds):.2f} points, largest {max(stds):.2f}. By the table's rule (a row's std "
            f"larger than its Mean lead over the next row of `results/tables/mini_acc.md`), {int(unranked.sum())} of "
            f"{len(table)} rows are not ranked" + (f": {names}" if names else "") + ". "
            + (f"Runs that failed: {', '.join(failed)}. " if failed else "")
            + (f"Not measured (the measurement was stopped before them): {', '.join(missing)}. " if missing else "")
            + f"Measured {s['date'][:10]} at commit `{s['commit'][:7]}` on {m['cpu_model']} x{m['cpu_cores']} "
            f"(load average {m['loadavg'][0]:.1f} at the end, other work sharing the cores), "
            f"{s['wall_seconds'] / 60:.0f} min of commands in all.")


def minigen_weights(src: Sources) -> str:
    size = (src.repo / "sep_bench/data/minigen_generators.npz").stat().st_size
    return f"`sep_bench/data/minigen_generators.npz` ({size / 1000:.0f} KB)"


# -- docs/protocol.md -------------------------------------------------------------------------------------------

def sep_ablation(src: Sources) -> str:
    """The committed SEP ablation table, with a warning when its full row is not the pipeline's SEP row."""
    full = next(float(r["Mean"]) for r in src.rows("mini_sep_ablation") if r["variant"].endswith("(full)"))
    current = next(float(r["Mean"]) for r in src.rows("mini_acc") if _mark(r["detector"]) == "sep")
    note = ("" if abs(full - current) < 0.05 else
            f"\n\n**This table is older than SEP's current mini recipe**: its full model reaches {full:.2f}, the "
            f"pipeline's SEP row {current:.2f}; run the loop above again to refresh it.")
    return src.table("mini_sep_ablation") + note


# -- docs/cluster.md, docs/mlflow-dvc.md ------------------------------------------------------------------------

def cluster_timing(src: Sources) -> str:
    return _benchmark_module("cluster").doc_block(src.json("cluster"))


def stage_count(src: Sources) -> str:
    p = src.json("pipeline")["pipeline"]
    if p.get("pipeline_stages"):  # every stage of the pipeline (dvc.lock after the run), run or up to date
        kinds = p["pipeline_stages"]
    else:  # older files: the stages that ran
        kinds = {k: sum(s.split("@")[0] == k for s in p["stages"]) for k in p["by_kind"]}
    return f"{sum(kinds.values())} stages ({', '.join(f'{k} {n}' for k, n in sorted(kinds.items()))})"


def mini_recipe_notes(src: Sources) -> str:
    """The measured notes behind the mini recipes (results/benchmarks/mini_recipe_notes.json), one item each."""
    notes = src.json("mini_recipe_notes")
    items = [f"- `{n['key']}`: {n['note']}" for n in notes["notes"]]
    return f"{notes['what']}\n\n" + "\n".join(items)


def _detectors_table(src: Sources) -> str:
    from docs_detectors import detectors_table

    return detectors_table(src.params())


BLOCKS: dict[str, Callable[[Sources], str]] = {
    "mini-acc-table": mini_acc_table,
    "pipeline-timing": pipeline_timing,
    "pipeline-incremental": pipeline_incremental,
    "dvc-overhead": dvc_overhead,
    "pipeline-noop": pipeline_noop,
    "default-run": default_run,
    "learning-check": learning_check,
    "format-leak": format_leak,
    "eps-speedups": eps_speedups,
    "gpu-throughput": gpu_throughput,
    "data-pipeline": data_pipeline,
    "buckets": buckets,
    "cross-isa": cross_isa,
    "minigen-weights": minigen_weights,
    "sep-ablation": sep_ablation,
    "cluster-timing": cluster_timing,
    "stage-count": stage_count,
    "detectors-table": _detectors_table,
    "mini-recipe-notes": mini_recipe_notes,
    "seed-spread": seed_spread,
}


# -- docs/protocols.md ------------------------------------------------------------------------------------------

def format_alignment(src: Sources) -> str:
    """The format control under each alignment rule, trained on stored or aligned images (format_alignment.py)."""
    fa = src.json("format_alignment")
    cells: dict[str, dict[str, str]] = {}
    clean = None
    for rec in fa["records"]:
        if not rec.get("applicable", True):
            cells.setdefault(rec["rule"], {})["skip"] = rec["reason"]
            continue
        run = rec["runs"][0] if len(rec["runs"]) == 1 else None
        a = run["aligned"] if run else None
        text = (f"{a['acc']:.1f} ({a['real_acc']:.1f} / {a['fake_acc']:.1f})" if a
                else f"{rec['aligned_acc_mean']:.1f} (mean of {len(rec['runs'])} seeds)")
        cells.setdefault(rec["rule"], {})[rec["setting"]] = text
        if rec["setting"] == "eval_only" and run:
            clean = run["clean"]["acc"]
    lines = ["| `eval.align` | trained on stored images | trained and evaluated aligned |", "|---|---|---|"]
    for rule, c in cells.items():
        row = (f"n/a: {c['skip']} |" if "skip" in c else f"{c.get('eval_only', '')} | {c.get('train_and_eval', '')}")
        lines.append(f"| `{rule}` | {row} |")
    seeds = ", ".join(map(str, fa["seeds"]))
    return (f"Mean ACC % (real ACC / fake ACC) of `{fa['detector']}` on `{fa['profile']}`, seed {seeds}, every test "
            f"image; the clean control scores {clean:.1f} ({fa['date'][:10]}):\n\n" + "\n".join(lines))


def format_probe(src: Sources) -> str:
    """Cross-validated ACC of a logistic regression on the control's features, per photograph and rule."""
    fp = src.json("format_probe")
    rules = list(dict.fromkeys(r["rule"] for r in fp["records"]))
    photos = list(dict.fromkeys((r["photo"], r["history"]) for r in fp["records"]))
    acc = {(r["photo"], r["rule"]): r["cv_acc"] for r in fp["records"]}
    folds = len(fp["records"][0]["cv_acc_folds"])
    lines = ["| photograph | " + " | ".join(f"`{r}`" for r in rules) + " |", "|---" * (len(rules) + 1) + "|"]
    for photo, history in photos:
        lines.append(f"| {photo} ({history}) | " + " | ".join(f"{acc[(photo, r)]:.1f}" for r in rules) + " |")
    first = fp["records"][0]
    return (f"Probe ACC % ({folds}-fold cross-validation on {first['n_real']} real and {first['n_fake']} fake test "
            f"crops per photograph; `none` = as stored; {fp['date'][:10]}):\n\n" + "\n".join(lines))


BLOCKS["format-alignment"] = format_alignment
BLOCKS["format-probe"] = format_probe


# -- docs/weights-and-gpu.md --------------------------------------------------------------------------------------

def gpu_acceptance(src: Sources) -> str:
    """The GenImage table's predicted (or measured) GPU-hours per detector (benchmarks/gpu_acceptance.py)."""
    return _benchmark_module("gpu_acceptance").doc_block(src.json("gpu_acceptance"))


def offline_hub(src: Sources) -> str:
    """Seconds until a missing hub weight fails without network (benchmarks/offline_hub.py)."""
    return _benchmark_module("offline_hub").doc_block(src.json("offline_hub"))


BLOCKS["gpu-acceptance"] = gpu_acceptance
BLOCKS["offline-hub"] = offline_hub


# -- docs/real-data.md --------------------------------------------------------------------------------------------

def full_recipes(src: Sources) -> str:
    """Every full recipe's stage commands on a synthetic tree: CPU seconds and peak memory (full_recipes.py)."""
    return _benchmark_module("full_recipes").doc_block(src.json("full_recipes"))


BLOCKS["full-recipes"] = full_recipes


# -- whole pages ------------------------------------------------------------------------------------------------

def preprocessing_page(src: Sources) -> str:
    return _benchmark_module("_preprocessing_facts").render(src.json("preprocessing_audit"))


#: pages generated whole (relative to the repository), beside the marked blocks of the others
PAGES: dict[str, Callable[[Sources], str]] = {
    "docs/preprocessing.md": preprocessing_page,
}
