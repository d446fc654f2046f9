"""Figures written beside a run's record. Matplotlib without a display (Agg).

A figure is rendered in memory and written by temp file + rename (beft.files): a symlink planted at its name in a
shared out_dir is replaced, never written through.
"""
from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from beft.files import write_bytes  # noqa: E402


def _save(fig, path: Path, dpi: int) -> Path:
    image = io.BytesIO()
    fig.savefig(image, format="png", dpi=dpi)
    plt.close(fig)
    return write_bytes(path, image.getvalue())


def learning_curve(history: list[dict], path: Path, title: str = "") -> Path:
    """Training loss and every evaluation metric per epoch, on two panels."""
    epochs = [e["epoch"] + 1 for e in history]
    metric_keys = sorted({k for e in history for k in e if "/" in k and not k.endswith("/loss")})
    fig, (ax_loss, ax_metric) = plt.subplots(1, 2, figsize=(9, 3.4), constrained_layout=True)
    ax_loss.plot(epochs, [e["train_loss"] for e in history], marker="o", ms=3, label="train (running)")
    for key in sorted({k for e in history for k in e if k.endswith("/loss")}):
        points = [(e["epoch"] + 1, e[key]) for e in history if key in e]
        ax_loss.plot(*zip(*points), marker="o", ms=3, label=key.split("/")[0])
    ax_loss.set(xlabel="epoch", ylabel="loss", title="loss")
    ax_loss.legend(fontsize=8)
    for key in metric_keys:
        points = [(e["epoch"] + 1, e[key]) for e in history if key in e]
        ax_metric.plot(*zip(*points), marker="o", ms=3, label=key)
    ax_metric.set(xlabel="epoch", ylabel="metric", title="evaluation")
    if metric_keys:
        ax_metric.legend(fontsize=8)
    fig.suptitle(title, fontsize=9)
    return _save(fig, Path(path), dpi=120)


def score_heatmap(scores: dict[str, list], type_scores: dict[str, float], path: Path, title: str = "") -> Path:
    """Layers x bias types, rows sorted by score, with an Avg column (like the paper's Fig. 1)."""
    import numpy as np

    from beft.bias_map import TEX_LABELS

    types = sorted(scores, key=lambda t: -type_scores[t])
    n_layers = max(len(v) for v in scores.values())
    grid = np.array([[np.nan if s is None else s for s in scores[t]] + [type_scores[t]] for t in types], float)
    fig, ax = plt.subplots(figsize=(max(4.0, 0.62 * (n_layers + 1) + 2.2), 0.42 * len(types) + 1.3),
                           constrained_layout=True)
    image = ax.imshow(grid, cmap="Blues", aspect="auto")
    ax.set_xticks(range(n_layers + 1), [f"layer {i + 1}" for i in range(n_layers)] + ["Avg."], rotation=45,
                  ha="right", fontsize=8)
    ax.set_yticks(range(len(types)), [TEX_LABELS[t] for t in types], fontsize=9)
    ax.axvline(n_layers - 0.5, color="white", lw=2)
    for row, t in enumerate(types):
        value = type_scores[t]
        ax.text(n_layers, row, f"{value:.3g}", ha="center", va="center", fontsize=7,
                color="white" if value > np.nanmax(grid) * 0.6 else "black")
    fig.colorbar(image, ax=ax, fraction=0.03, pad=0.02)
    ax.set_title(title, fontsize=10)
    return _save(fig, Path(path), dpi=150)
