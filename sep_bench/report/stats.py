"""Statistics over per-image predictions: bootstrap confidence intervals and paired tests between detectors.

Everything here works on *correctness*: an image is classified correctly when ``(fake_logit > 0) == label``
(threshold 0.5 on the fake probability, as in every table). With several seeds, an image's value is the fraction
of seeds that classify it correctly, so the mean over images is the seed-averaged ACC the tables show.

- `acc_intervals`: percentile bootstrap CI of each generator's ACC and of the Mean (the unweighted mean over
  generators). Images are resampled with replacement *within each generator*; the Mean's replicate averages
  one independent replicate per generator.
- `paired_comparison`: detector A against a reference B on the same images (matched by generator and path):
  the ACC difference with a paired-bootstrap CI and p-value, and McNemar's exact test with its mid-p on the
  discordant pairs (per seed; with several seeds the largest, i.e. least significant, p is reported).

Resampling is exact and cheap: drawing n images with replacement from values that take k distinct levels is a
multinomial draw of the k level counts, so a replicate costs O(k) instead of O(n). Every replicate stream is
seeded from ``(seed, crc32(generator))``: results are deterministic and a generator's interval does not depend
on which other generators are present.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy.stats import binom

__all__ = [
    "Interval",
    "PairedResult",
    "correctness",
    "seed_correctness",
    "bootstrap_means",
    "acc_intervals",
    "mcnemar",
    "paired_comparison",
    "MEAN",
]

MEAN = "Mean"
KEY = ["generator", "path"]


@dataclass(frozen=True)
class Interval:
    """A point estimate with a two-sided confidence interval (same units as the estimate)."""

    estimate: float
    low: float
    high: float
    n: int = 0  # images behind the estimate

    def scaled(self, factor: float) -> "Interval":
        return Interval(self.estimate * factor, self.low * factor, self.high * factor, self.n)


@dataclass(frozen=True)
class PairedResult:
    """A against B on one generator (or the Mean): ACC difference A - B (fractions), its CI and tests."""

    diff: Interval
    p_bootstrap: float
    n_a_only: int  # images A classifies correctly and B does not (McNemar's b; per seed, summed over seeds)
    n_b_only: int  # images B classifies correctly and A does not (McNemar's c)
    p_mcnemar: float | None  # exact two-sided p (largest over seeds); None for the Mean
    p_mcnemar_mid: float | None  # mid-p (largest over seeds); None for the Mean

    @property
    def p(self) -> float:
        """The p-value used for the significance mark: McNemar's mid-p per generator, the bootstrap's for Mean."""
        return self.p_bootstrap if self.p_mcnemar_mid is None else self.p_mcnemar_mid


def correctness(preds: pd.DataFrame) -> np.ndarray:
    """Per-image correctness (bool) at threshold 0.5 of a predictions frame (label, fake_logit)."""
    return (preds["fake_logit"].to_numpy() > 0.0) == (preds["label"].to_numpy().astype(int) == 1)


def seed_correctness(per_seed: Mapping[int, pd.DataFrame]) -> pd.DataFrame:
    """One row per image (generator, path, label), one bool column per seed: is the image classified correctly.

    Images are matched by (generator, path); an image missing from some seed (e.g. skipped) is dropped, so every
    column describes the same images.
    """
    if not per_seed:
        raise ValueError("no predictions")
    out: pd.DataFrame | None = None
    for seed, preds in per_seed.items():
        if preds.duplicated(KEY).any():
            raise ValueError(f"predictions of seed {seed} list an image twice")
        col = preds[KEY + ["label"]].copy()
        col[f"seed{seed}"] = correctness(preds)
        out = col if out is None else out.merge(col.drop(columns="label"), on=KEY, how="inner")
    return out.reset_index(drop=True)


def _seed_columns(frame: pd.DataFrame) -> list[str]:
    return [c for c in frame.columns if c.startswith("seed")]


def _rng(seed: int, name: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(name.encode())])


def bootstrap_means(values: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """`n_boot` bootstrap replicates of ``values.mean()`` (resampling the values with replacement)."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        raise ValueError("cannot bootstrap an empty sample")
    levels, counts = np.unique(values, return_counts=True)
    draws = rng.multinomial(values.size, counts / values.size, size=n_boot)
    return draws @ levels / values.size


def _percentile(reps: np.ndarray, level: float) -> tuple[float, float]:
    alpha = 1.0 - level
    lo, hi = np.quantile(reps, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def acc_intervals(
    frame: pd.DataFrame, generators: Sequence[str], *, n_boot: int = 10_000, level: float = 0.95, seed: int = 0
) -> dict[str, Interval]:
    """Bootstrap CIs of the seed-averaged ACC per generator and of the Mean, from `seed_correctness` output."""
    cols = _seed_columns(frame)
    reps, out = [], {}
    for g in generators:
        vals = frame.loc[frame["generator"] == g, cols].to_numpy(dtype=np.float64).mean(axis=1)
        if vals.size == 0:
            raise ValueError(f"no predictions for test generator {g!r}")
        r = bootstrap_means(vals, n_boot, _rng(seed, g))
        reps.append(r)
        out[g] = Interval(float(vals.mean()), *_percentile(r, level), n=int(vals.size))
    mean_reps = np.mean(reps, axis=0)
    out[MEAN] = Interval(float(np.mean([out[g].estimate for g in generators])), *_percentile(mean_reps, level),
                         n=int(sum(out[g].n for g in generators)))
    return out


def mcnemar(b: int, c: int) -> tuple[float, float]:
    """McNemar's exact test on the discordant counts b and c: (two-sided exact p, mid-p).

    Under H0 the b + c discordant pairs split as Binomial(b + c, 1/2). Exact p = 2 P(X <= min(b, c)) (at most 1);
    mid-p = 2 [P(X <= min(b, c)) - P(X = min(b, c)) / 2] (Fagerland et al. 2013), less conservative.
    """
    b, c = int(b), int(c)
    n, k = b + c, min(b, c)
    if n == 0:
        return 1.0, 1.0
    cdf = float(binom.cdf(k, n, 0.5))
    pmf = float(binom.pmf(k, n, 0.5))
    return min(1.0, 2.0 * cdf), min(1.0, 2.0 * cdf - pmf)


def paired_comparison(
    a: pd.DataFrame,
    b: pd.DataFrame,
    generators: Sequence[str],
    *,
    n_boot: int = 10_000,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, PairedResult]:
    """Detector A against reference B (both `seed_correctness` frames) per generator and for the Mean.

    Images are matched by (generator, path) and must agree on the label. The difference is in ACC fractions
    (A - B). McNemar compares A's seed s with B's seed s over the seeds both have (all of A's seeds against
    B's first when they share none), reporting the largest p.
    """
    cols_a, cols_b = _seed_columns(a), _seed_columns(b)
    a = a.rename(columns={c: f"a:{c}" for c in cols_a} | {"label": "label_a"})
    b = b.rename(columns={c: f"b:{c}" for c in cols_b} | {"label": "label_b"})
    both = a.merge(b, on=KEY, how="inner")
    if (both["label_a"] != both["label_b"]).any():
        raise ValueError("the two prediction sets disagree on some images' labels")
    common = [c for c in cols_a if c in cols_b]
    pairs = [(c, c) for c in common] or [(c, cols_b[0]) for c in cols_a]
    ca, cb = [f"a:{c}" for c in cols_a], [f"b:{c}" for c in cols_b]
    out, reps = {}, []
    for g in generators:
        sub = both[both["generator"] == g]
        if sub.empty:
            raise ValueError(f"no common images for test generator {g!r}")
        d = sub[ca].to_numpy(dtype=np.float64).mean(axis=1) - sub[cb].to_numpy(dtype=np.float64).mean(axis=1)
        r = bootstrap_means(d, n_boot, _rng(seed, g))
        reps.append(r)
        p_exact, p_mid, n_a, n_b = 0.0, 0.0, 0, 0
        for sa, sb in pairs:
            xa, xb = sub[f"a:{sa}"].to_numpy(bool), sub[f"b:{sb}"].to_numpy(bool)
            bb, cc = int((xa & ~xb).sum()), int((~xa & xb).sum())
            pe, pm = mcnemar(bb, cc)
            p_exact, p_mid, n_a, n_b = max(p_exact, pe), max(p_mid, pm), n_a + bb, n_b + cc
        out[g] = PairedResult(
            Interval(float(d.mean()), *_percentile(r, level), n=int(d.size)), _boot_p(r), n_a, n_b, p_exact, p_mid
        )
    mean_reps = np.mean(reps, axis=0)
    est = float(np.mean([out[g].diff.estimate for g in generators]))
    out[MEAN] = PairedResult(
        Interval(est, *_percentile(mean_reps, level), n=int(sum(out[g].diff.n for g in generators))),
        _boot_p(mean_reps), sum(out[g].n_a_only for g in generators), sum(out[g].n_b_only for g in generators),
        None, None,
    )
    return out


def _boot_p(reps: np.ndarray) -> float:
    """Two-sided bootstrap p-value of H0: difference = 0 (twice the smaller tail mass at 0, at most 1)."""
    return float(min(1.0, 2.0 * min((reps <= 0).mean(), (reps >= 0).mean())))
