"""One PNG per image showing what SEP looked at: the exposed patch in the image, the texture map the selector
minimises, the patch enlarged, and (when given) the fake probability.

The patch is chosen exactly as the evaluation view chooses it (`sep_bench.baselines.sep.choose_patch`), so with the
sample's evaluation generator the figure shows the patch the model classified.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from sep_bench.io import atomic_path
from sep_bench.layers.eps import score_map, texture_score
from sep_bench.baselines.sep import SEPConfig, choose_patch

__all__ = ["render_explanation"]

_MAX_MAP_PIXELS = 4_000_000  # above this, the texture map is computed on a stride grid


def render_explanation(
    img: np.ndarray, cfg: SEPConfig, rng: np.random.Generator, prob: float | None, out_path: Path
) -> dict[str, Any]:
    """Render the explanation figure of one decoded image (H, W, 3) uint8 to `out_path` (PNG).

    Args:
        img: the decoded RGB image.
        cfg: the SEP model config (patch size, candidates, EPS mode, ablations).
        rng: the generator the selector draws its candidates from (the sample's evaluation generator).
        prob: the fake probability to print in the title, or None.
        out_path: where the PNG goes (parent folders are created).

    Returns:
        ``{"y", "x", "size", "score", "mode", "resized", "prob", "path"}``: the patch's top-left corner (in the image
        the selector saw, which is the 256x256 resize when ``resized``), its texture score, the EPS mode used.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    src, y, x = choose_patch(cfg, img, rng, train=False)
    ps = cfg.patch_size
    patch = src[y : y + ps, x : x + ps]
    score = texture_score(patch)
    mode = cfg.eps_mode if cfg.eps else "random"
    h, w = src.shape[:2]
    stride = max(1, int(np.ceil(np.sqrt(h * w / _MAX_MAP_PIXELS))))
    tex = score_map(src, ps, stride).astype(np.float64)
    # score of the patch at (i*stride, j*stride) drawn over the patch centre
    lo = (ps - 1) / 2 - stride / 2
    extent = (lo, lo + tex.shape[1] * stride, lo + tex.shape[0] * stride, lo)  # left, right, bottom, top

    fig = Figure(figsize=(13, 4.6))  # Agg canvas, no pyplot state: safe in workers and threads
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 3, gridspec_kw={"width_ratios": [1, 1, 0.8]})
    ax = axes[0]
    ax.imshow(src)
    ax.add_patch(Rectangle((x - 0.5, y - 0.5), ps, ps, fill=False, edgecolor="red", linewidth=2))
    resized = f"\nimage resized to {w}x{h} (short side < {ps})" if src is not img else ""
    ax.set_title(f"exposed patch at (y={y}, x={x}){resized}")
    ax.axis("off")

    ax = axes[1]
    ax.imshow(src, alpha=0.6)
    heat = ax.imshow(np.log1p(tex), cmap="magma", alpha=0.65, extent=extent, interpolation="nearest")
    ax.add_patch(Rectangle((x - 0.5, y - 0.5), ps, ps, fill=False, edgecolor="cyan", linewidth=2))
    ax.set_xlim(-0.5, w - 0.5)
    ax.set_ylim(h - 0.5, -0.5)
    ax.set_title(f"texture score of each {ps}x{ps} patch (log, at its centre)")
    ax.axis("off")
    fig.colorbar(heat, ax=ax, fraction=0.046, pad=0.02, label="log(1 + score)")

    ax = axes[2]
    ax.imshow(patch, interpolation="nearest")
    ax.set_title(f"patch, score {score}")
    ax.axis("off")

    title = f"SEP  |  EPS mode: {mode}"
    if mode == "official":
        title += f" ({cfg.eval_candidates} candidates)"
    if prob is not None:
        title += f"  |  P(fake) = {prob:.3f}"
    fig.suptitle(title)
    fig.tight_layout()
    out_path = Path(out_path)
    with atomic_path(out_path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    return {
        "y": int(y),
        "x": int(x),
        "size": ps,
        "score": int(score),
        "mode": mode,
        "resized": src is not img,
        "prob": None if prob is None else float(prob),
        "path": str(out_path),
    }
