"""PNG figures of a training run: loss curves, predicted vs ground-truth actions, imagined frames."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def read_metrics(path: str | Path) -> list[dict]:
    """Records of a ``metrics.jsonl`` (a torn last line from a killed run is ignored)."""
    out = []
    for line in Path(path).read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def plot_loss_curves(metrics: str | Path | Sequence[dict], out: str | Path,
                     keys: Sequence[str] = ("loss", "action_loss", "video_loss"), title: str = "training loss",
                     smooth: int = 0) -> Path:
    """Loss terms per step (log scale) from metrics.jsonl records; ``smooth`` = moving-average window."""
    records = read_metrics(metrics) if isinstance(metrics, str | Path) else list(metrics)
    records = [r for r in records if r.get("kind", "train") == "train"]
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    for key in keys:
        pts = [(r["step"], r[key]) for r in records if key in r and r[key] is not None and np.isfinite(r[key])]
        if not pts:
            continue
        steps, vals = np.asarray(pts, dtype=np.float64).T
        ax.plot(steps, vals, alpha=0.35 if smooth > 1 else 1.0, label=key)
        if smooth > 1 and len(vals) >= smooth:
            kernel = np.ones(smooth) / smooth
            ax.plot(steps[smooth - 1:], np.convolve(vals, kernel, mode="valid"), label=f"{key} (avg {smooth})")
    ax.set_xlabel("step")
    ax.set_yscale("log")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, plt, out)


def plot_action_trajectories(pred: np.ndarray, true: np.ndarray, out: str | Path, *, dim_names: Sequence[str] | None = None,
                             title: str = "") -> Path:
    """Predicted vs ground-truth action chunk, one panel per action dim. pred/true [t, a] (normalized)."""
    plt = _pyplot()
    a = true.shape[1]
    cols = min(4, a)
    rows = -(-a // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 2.2 * rows), squeeze=False)
    for j in range(rows * cols):
        ax = axes[j // cols][j % cols]
        if j >= a:
            ax.axis("off")
            continue
        ax.plot(true[:, j], "k-", label="ground truth")
        ax.plot(pred[:, j], "r--", label="predicted")
        ax.set_title(dim_names[j] if dim_names is not None and j < len(dim_names) else f"dim {j}", fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    return _save(fig, plt, out)


def to_uint8(frames: np.ndarray) -> np.ndarray:
    """[..., 3, h, w] in [-1, 1] -> [..., h, w, 3] uint8."""
    x = np.clip((np.asarray(frames, dtype=np.float32) + 1.0) * 127.5, 0, 255).round().astype(np.uint8)
    return np.moveaxis(x, -3, -1)


def plot_frame_strip(real: np.ndarray, imagined: np.ndarray, out: str | Path, title: str = "") -> Path:
    """Top row: real current + future frames; bottom row: current + imagined future. [f, 3, h, w] in [-1, 1]."""
    plt = _pyplot()
    n = max(len(real), len(imagined))
    fig, axes = plt.subplots(2, n, figsize=(1.8 * n, 4), squeeze=False)
    for row, (frames, label) in enumerate(((real, "real"), (imagined, "imagined"))):
        imgs = to_uint8(frames)
        for j in range(n):
            ax = axes[row][j]
            ax.axis("off")
            if j < len(imgs):
                ax.imshow(imgs[j])
                ax.set_title(f"{label} {'t' if j == 0 else f't+{j}'}", fontsize=7)
    fig.suptitle(title, fontsize=9)
    return _save(fig, plt, out)


def _save(fig, plt, out: str | Path) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out
