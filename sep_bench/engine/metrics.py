"""Metrics from per-image predictions. Fake is the positive class; the threshold is fixed at 0.5 (logit 0).

Per generator: acc, real_acc, fake_acc, ap, auc (and counts); Mean = unweighted mean over test generators,
the paper's "Mean". No threshold is ever tuned on test data. AP/AUC are None when only one class is present.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, roc_auc_score

__all__ = ["binary_metrics", "summarize_predictions", "METRIC_KEYS"]

METRIC_KEYS = ("acc", "real_acc", "fake_acc", "ap", "auc")


def binary_metrics(labels: np.ndarray, logits: np.ndarray) -> dict[str, float | int | None]:
    labels = np.asarray(labels).astype(int)
    logits = np.asarray(logits, dtype=np.float64)
    if labels.shape != logits.shape or labels.size == 0:
        raise ValueError(f"need equal, non-empty label/logit arrays, got {labels.shape} and {logits.shape}")
    if not np.isfinite(logits).all():
        raise ValueError(f"{int((~np.isfinite(logits)).sum())} non-finite logits: refusing to compute metrics")
    pred = logits > 0.0
    real, fake = labels == 0, labels == 1
    both = bool(real.any() and fake.any())
    return {
        "acc": float((pred == fake).mean()),
        "real_acc": float((~pred[real]).mean()) if real.any() else None,
        "fake_acc": float(pred[fake].mean()) if fake.any() else None,
        "ap": float(average_precision_score(labels, logits)) if both else None,
        "auc": float(roc_auc_score(labels, logits)) if both else None,
        "n": int(labels.size),
        "n_real": int(real.sum()),
        "n_fake": int(fake.sum()),
    }


def summarize_predictions(preds: pd.DataFrame, generators: Sequence[str]) -> dict:
    """{"generators": {g: metrics}, "mean": {metric: unweighted mean over generators}} from a predictions frame
    with columns generator, label, fake_logit."""
    per = {}
    for g in generators:
        sub = preds[preds["generator"] == g]
        if sub.empty:
            raise ValueError(f"no predictions for test generator {g!r}")
        per[g] = binary_metrics(sub["label"].to_numpy(), sub["fake_logit"].to_numpy())
    mean = {}
    for k in METRIC_KEYS:
        vals = [m[k] for m in per.values() if m[k] is not None]
        mean[k] = float(np.mean(vals)) if len(vals) == len(per) else None
    return {"generators": per, "mean": mean}
