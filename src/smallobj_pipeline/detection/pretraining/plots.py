"""The pretraining curve: loss and accuracy per epoch (train and validation), for the report."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from matplotlib.figure import Figure


def plot_history(history: Sequence[Mapping[str, Any]], title: str = "Backbone pretraining"):
    """Loss and accuracy (train and validation) per epoch, as a matplotlib Figure."""
    fig = Figure(figsize=(9.6, 3.6))
    ax_loss, ax_acc = fig.subplots(1, 2)
    epochs = [row["epoch"] for row in history]
    for ax, key, label in (
        (ax_loss, "loss", "cross-entropy loss"),
        (ax_acc, "accuracy", "accuracy"),
    ):
        for split in ("train", "val"):
            values = [row.get(f"{split}_{key}") for row in history]
            points = [
                (e, v)
                for e, v in zip(epochs, values, strict=True)
                if v is not None and not _isnan(v)
            ]
            if points:
                ax.plot(*zip(*points, strict=True), marker="o", markersize=3, label=split)
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    ax_acc.set_ylim(0, 1.02)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def _isnan(v: Any) -> bool:
    try:
        return math.isnan(float(v))
    except (TypeError, ValueError):
        return True
