"""Figures written beside a run's record. Matplotlib without a display (Agg)."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def learning_curve(history: list[dict], path: Path, title: str = "") -> Path:
    """Training loss and every evaluation metric per epoch, on two panels."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
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
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
