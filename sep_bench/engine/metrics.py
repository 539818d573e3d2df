"""Metrics from per-image predictions. Fake is the positive class; the threshold is fixed at 0.5 (logit 0).

Per generator (the metrics of the official SEP evaluation):

- ``acc``, ``real_acc``, ``fake_acc``: accuracy at 0.5, overall and per class; ``tpr`` and ``tnr`` are the same
  two class accuracies under their detection names (TPR = fake ACC, TNR = real ACC at 0.5);
- ``ap``, ``auc``: average precision and ROC AUC;
- ``eer``: the equal error rate, where the ROC's false-positive rate equals its false-negative rate (1 - TPR),
  linearly interpolated between the two ROC points that bracket the crossing;
- ``fpr_at_tpr95``: the lowest FPR of any threshold that reaches TPR >= 95%;
- ``tpr_at_fpr1``, ``tpr_at_fpr5``: the highest TPR of any threshold with FPR <= 1% / 5%
  (ROC operating points, not interpolated: a threshold one could actually pick).

Counts ``n``, ``n_real``, ``n_fake``, and ``one_class``: ``"fake"`` or ``"real"`` when a generator has images of
one class only (e.g. a generator evaluated without real images). Such a subset has no ranking metric: AP, AUC,
EER and the ROC operating points are ``None`` (undefined, never 0), and so is the class accuracy of the absent
class; ACC is then the present class's accuracy.

Mean = unweighted mean over test generators (the paper's "Mean"), ``None`` for a metric that is undefined on
some generator (a Mean over fewer generators would not be the same quantity); ``mean_defined`` then gives the
mean over the generators where it is defined and their number. No threshold is ever tuned on test data.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

__all__ = ["binary_metrics", "summarize_predictions", "equal_error_rate", "roc_points", "METRIC_KEYS",
           "RANKING_KEYS"]

METRIC_KEYS = ("acc", "real_acc", "fake_acc", "ap", "auc", "eer", "tpr", "tnr", "fpr_at_tpr95", "tpr_at_fpr1",
               "tpr_at_fpr5")
#: metrics that need both classes (undefined on a one-class subset)
RANKING_KEYS = ("ap", "auc", "eer", "fpr_at_tpr95", "tpr_at_fpr1", "tpr_at_fpr5")


def equal_error_rate(fpr: np.ndarray, tpr: np.ndarray) -> float:
    """EER of a ROC curve (points in increasing FPR/TPR order, as sklearn's roc_curve returns them).

    FNR = 1 - TPR falls as FPR rises; the EER is where they are equal, linearly interpolated on the segment
    between the last point with FNR >= FPR and the next one.
    """
    fpr, fnr = np.asarray(fpr, dtype=np.float64), 1.0 - np.asarray(tpr, dtype=np.float64)
    diff = fnr - fpr  # non-increasing along the curve: from 1 (at FPR 0, TPR 0) to -1 (at FPR 1, TPR 1)
    i = int(np.flatnonzero(diff >= 0)[-1])
    if i == len(diff) - 1 or diff[i] == 0:
        return float(fpr[i])
    t = diff[i] / (diff[i] - diff[i + 1])
    return float(fpr[i] + t * (fpr[i + 1] - fpr[i]))


def roc_points(labels: np.ndarray, logits: np.ndarray) -> dict[str, float]:
    """EER and the ROC operating points (see the module docstring) of a two-class set."""
    fpr, tpr, _ = roc_curve(labels, logits, drop_intermediate=False)
    reach = tpr >= 0.95
    return {
        "eer": equal_error_rate(fpr, tpr),
        "fpr_at_tpr95": float(fpr[reach].min()),
        "tpr_at_fpr1": float(tpr[fpr <= 0.01].max()),
        "tpr_at_fpr5": float(tpr[fpr <= 0.05].max()),
    }


def binary_metrics(labels: np.ndarray, logits: np.ndarray) -> dict[str, float | int | str | None]:
    labels = np.asarray(labels).astype(int)
    logits = np.asarray(logits, dtype=np.float64)
    if labels.shape != logits.shape or labels.size == 0:
        raise ValueError(f"need equal, non-empty label/logit arrays, got {labels.shape} and {logits.shape}")
    if not np.isfinite(logits).all():
        raise ValueError(f"{int((~np.isfinite(logits)).sum())} non-finite logits: refusing to compute metrics")
    pred = logits > 0.0
    real, fake = labels == 0, labels == 1
    both = bool(real.any() and fake.any())
    real_acc = float((~pred[real]).mean()) if real.any() else None
    fake_acc = float(pred[fake].mean()) if fake.any() else None
    ranking = roc_points(labels, logits) if both else dict.fromkeys(("eer", "fpr_at_tpr95", "tpr_at_fpr1",
                                                                     "tpr_at_fpr5"))
    return {
        "acc": float((pred == fake).mean()),
        "real_acc": real_acc,
        "fake_acc": fake_acc,
        "ap": float(average_precision_score(labels, logits)) if both else None,
        "auc": float(roc_auc_score(labels, logits)) if both else None,
        **ranking,
        "tpr": fake_acc,
        "tnr": real_acc,
        "n": int(labels.size),
        "n_real": int(real.sum()),
        "n_fake": int(fake.sum()),
        "one_class": None if both else ("fake" if fake.any() else "real"),
    }


def summarize_predictions(preds: pd.DataFrame, generators: Sequence[str]) -> dict:
    """{"generators": {g: metrics}, "mean": {metric: unweighted mean over generators}} from a predictions frame
    with columns generator, label, fake_logit; with one-class generators also ``one_class`` ({g: class}) and
    ``mean_defined`` ({metric: {"value", "n"}} over the generators where the metric is defined)."""
    per = {}
    for g in generators:
        sub = preds[preds["generator"] == g]
        if sub.empty:
            raise ValueError(f"no predictions for test generator {g!r}")
        per[g] = binary_metrics(sub["label"].to_numpy(), sub["fake_logit"].to_numpy())
    mean, partial = {}, {}
    for k in METRIC_KEYS:
        vals = [m[k] for m in per.values() if m[k] is not None]
        mean[k] = float(np.mean(vals)) if len(vals) == len(per) else None
        if 0 < len(vals) < len(per):
            partial[k] = {"value": float(np.mean(vals)), "n": len(vals)}
    out = {"generators": per, "mean": mean}
    one = {g: m["one_class"] for g, m in per.items() if m["one_class"]}
    if one:
        out["one_class"] = one
        out["mean_defined"] = partial
    return out
