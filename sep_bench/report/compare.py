"""`sep-bench compare`: how does a detector do against a reference (default SEP) under exactly this protocol.

`compare` makes sure the reference and the detector have current results for every seed of ``run.seeds``,
running the pipeline's own jobs (`sep_bench.engine.jobs`: `train_job` / `evaluate_job`, same engine, paths and
tracking) where they do not, and reusing results whose metrics carry the current protocol hash (never recomputing
them). It then tests the detector against the reference per generator (paired, same images), beside the
baselines of ``run.detectors`` that have current results, and writes ``results/compare/<profile>/<NAME>_vs_<ref>
.{md,csv}`` (`sep_bench.paths.compare_stem`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import pandas as pd
from tabulate import tabulate

from sep_bench import paths
from sep_bench.detectors import get_detector
from sep_bench.engine.jobs.evaluate import eval_target, evaluate_job
from sep_bench.engine.jobs.train import train_job
from sep_bench.io import read_json, write_text
from sep_bench.protocol import Params, ProtocolError, resolve
from sep_bench.report.build import load_predictions
from sep_bench.report.stats import MEAN, paired_comparison, seed_correctness
from sep_bench.report.tables import fmt, fmt_p, load_metrics, metric_frames, row_name
from sep_bench.tracking import Tracking

__all__ = ["Comparison", "compare", "check_pair", "ensure_results", "write_comparison"]


def _current(p, prof_name: str, detector: str, seed: int) -> bool:
    """Whether (detector, seed) has metrics and predictions computed under the current protocol."""
    mpath = paths.metrics_path(prof_name, detector, seed)
    if not (mpath.is_file() and paths.predictions_path(prof_name, detector, seed).is_file()):
        return False
    try:
        return read_json(mpath).get("protocol_hash") == resolve(p, detector, prof_name, seed).protocol_hash()
    except ValueError:
        return False


def _trained(p, prof_name: str, detector: str, seed: int) -> bool:
    """Whether the training folder holds a finished training under the current protocol."""
    folder = paths.train_dir(prof_name, detector, seed)
    summary = folder / "train.json"
    if not ((folder / "best.safetensors").is_file() and summary.is_file()):
        return False
    try:
        return read_json(summary).get("protocol_hash") == resolve(p, detector, prof_name, seed).protocol_hash()
    except ValueError:
        return False


def ensure_results(p: Params, prof_name: str, detector: str, seed: int, tracking: Tracking | None,
                   progress: Callable | None = None) -> str:
    """Train and evaluate (detector, seed) where its results are not current; says what was done."""
    if _current(p, prof_name, detector, seed):
        return "reused"
    spec = resolve(p, detector, prof_name, seed)
    did = []
    if not _trained(p, prof_name, detector, seed):
        train_job(spec, paths.train_dir(prof_name, detector, seed), tracking, progress)
        did.append("trained")
    evaluate_job(eval_target(p, prof_name, detector=detector, seed=seed), tracking, progress)
    return " + ".join(did + ["evaluated"])


@dataclass
class Comparison:
    """NAME against the reference: ACC mean/std/seed counts per row and generator, paired tests, what ran."""

    detector: str
    against: str
    baselines: list[str]
    skipped: list[str]
    generators: list[str]
    mean: pd.DataFrame
    std: pd.DataFrame
    n: pd.DataFrame
    rows: dict[str, str]
    tests: dict
    seeds: list[int]
    done: dict = field(default_factory=dict)
    versus: dict = field(default_factory=dict)  # other row key -> PairedResult of NAME minus it on Mean


def check_pair(p: Params, prof_name: str, detector: str, against: str) -> None:
    """A clear error for two equal, unregistered or unconfigured detectors."""
    if detector == against:
        raise ProtocolError(f"--detector and --against are both {detector!r}: pick two detectors")
    for name in (against, detector):
        get_detector(name)  # a clear error for an unregistered name
        resolve(p, name, prof_name)  # ... and for a missing params.yaml block


def compare(p: Params, prof_name: str, detector: str, against: str, tracking: Tracking | None, n_boot: int,
            progress: Callable | None = None) -> Comparison:
    """Make the results current (see `ensure_results`) and test `detector` against `against`."""
    check_pair(p, prof_name, detector, against)
    seeds = list(p.run.seeds)
    done = {(d, s): ensure_results(p, prof_name, d, s, tracking, progress) for d in (against, detector) for s in seeds}
    baselines, skipped = [], []
    for d in p.run.detectors:
        if d in (detector, against):
            continue
        (baselines if all(_current(p, prof_name, d, s) for s in seeds) else skipped).append(d)
    shown = [detector, against, *baselines]
    metrics = load_metrics(paths.metrics_dir(prof_name), shown, seeds)
    mean, std, n = metric_frames(metrics, "acc")
    rows = {m["detector"]: row_name(m) for m in metrics}
    correct = {d: seed_correctness(load_predictions(prof_name, d, seeds)) for d in shown}
    gens = list(metrics[0]["test_generators"])
    tests = {d: paired_comparison(correct[d], correct[against], gens, n_boot=n_boot) for d in shown if d != against}
    # the console's one row per other detector: NAME minus it on the same images (Mean)
    versus = {d: paired_comparison(correct[detector], correct[d], gens, n_boot=n_boot)[MEAN]
              for d in shown if d != detector}
    return Comparison(detector, against, baselines, skipped, gens, mean, std, n, rows, tests, seeds, done, versus)


def write_comparison(c: Comparison, prof_name: str):
    """The comparison's markdown and csv files (stem: `paths.compare_stem`); returns the stem."""
    md, csv = _compare_outputs(c.detector, c.against, c.baselines, c.generators, c.mean, c.std, c.n, c.rows,
                               c.tests, c.seeds, prof_name)
    stem = paths.compare_stem(prof_name, c.detector, c.against)
    write_text(stem.with_suffix(".md"), md)
    write_text(stem.with_suffix(".csv"), csv.to_csv(index=False, float_format="%.6g"))
    return stem


def _compare_outputs(detector, against, baselines, gens, mean, std, n, rows, tests, seeds, prof_name):
    multi = bool((n > 1).any())
    body, long = [], []
    for g in [*gens, MEAN]:
        r = tests[detector][g]
        line = [g, fmt(mean.loc[rows[detector], g], std.loc[rows[detector], g] if multi else None),
                fmt(mean.loc[rows[against], g], std.loc[rows[against], g] if multi else None),
                f"{100 * r.diff.estimate:+.2f} [{100 * r.diff.low:+.2f}, {100 * r.diff.high:+.2f}]",
                fmt_p(r.p) + (" \\*" if r.p < 0.05 else "")]
        for b in baselines:
            rb = tests[b][g]
            line.append(fmt(mean.loc[rows[b], g]) + f" ({100 * rb.diff.estimate:+.2f}"
                        + (" \\*" if rb.p < 0.05 else "") + ")")
        body.append(line)
        for d in [detector, *baselines]:
            t = tests[d][g]
            long.append({"generator": g, "detector": d, "reference": against, "acc": mean.loc[rows[d], g],
                         "acc_reference": mean.loc[rows[against], g], "diff": 100 * t.diff.estimate,
                         "ci_low": 100 * t.diff.low, "ci_high": 100 * t.diff.high, "p": t.p,
                         "p_mcnemar_mid": t.p_mcnemar_mid, "p_bootstrap": t.p_bootstrap, "significant": t.p < 0.05})
    headers = ["generator", rows[detector], rows[against], "diff (95% CI)", "p", *(rows[b] for b in baselines)]
    md = tabulate(body, headers=headers, tablefmt="pipe", disable_numparse=True,
                  colalign=["left"] + ["right"] * (len(headers) - 1))
    seeds_txt = ", ".join(map(str, seeds))
    md += (f"\n\nACC (%) on profile `{prof_name}`, seed{'s' if len(seeds) > 1 else ''} {seeds_txt}; diff = "
           f"`{detector}` - `{against}` in percentage points on the same images, paired-bootstrap 95% CI; "
           "p: McNemar mid-p per generator, paired bootstrap for Mean; \\* p < 0.05. "
           + (f"Baselines: ACC (diff to `{against}`)." if baselines else "") + "\n")
    return md, pd.DataFrame(long)
