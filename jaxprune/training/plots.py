"""PNG plots of a run (matplotlib, Agg backend): learning curve, per-layer (effective) sparsity.

Each figure is rendered in memory and written with ``workdir.atomic_write_bytes`` (a temporary
file in the same folder, then ``os.replace``): a reader or a crash never sees half a PNG, and the
bytes are those ``fig.savefig(path)`` would write.
"""

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from jaxprune.training import workdir as workdir_lib  # noqa: E402


def _save(fig: plt.Figure, path: Path) -> Path:
    """Writes ``fig`` to ``path`` atomically (format from the suffix, PNG by default)."""
    buffer = io.BytesIO()
    try:
        fig.tight_layout()
        fig.savefig(buffer, dpi=100, format=path.suffix.lstrip(".").lower() or "png")
    finally:
        plt.close(fig)
    return workdir_lib.atomic_write_bytes(path, buffer.getvalue())


def plot_learning_curve(records: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """Train loss and accuracy (train and test) against the global step.

    Dashed vertical lines mark phase boundaries (e.g. the pruning step).

    Args:
      records: ``metrics.jsonl`` records (see ``metrics.py``).
      path: output PNG path (parent directories are created).

    Returns:
      The path written.
    """
    path = Path(path)
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
    train = [r for r in records if "train_loss" in r]
    test = [r for r in records if "test_accuracy" in r]
    ax_loss.plot([r["step"] for r in train], [float(r["train_loss"]) for r in train], lw=1)
    ax_loss.set(xlabel="step", ylabel="train loss", title="Training loss")
    ax_loss.set_yscale("log")
    ax_acc.plot(
        [r["step"] for r in train], [r["train_accuracy"] for r in train], lw=1, label="train"
    )
    ax_acc.plot(
        [r["step"] for r in test], [r["test_accuracy"] for r in test], "o-", ms=3, label="test"
    )
    ax_acc.set(xlabel="step", ylabel="accuracy", title="Accuracy")
    ax_acc.legend()
    # A phase boundary is the last logged step of a phase followed by another phase.
    boundaries = [
        a["step"] for a, b in zip(train, train[1:], strict=False) if a["phase"] != b["phase"]
    ]
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        for step in boundaries:
            ax.axvline(step, color="gray", ls="--", lw=1)
    return _save(fig, path)


def plot_layer_sparsity(layers: dict[str, dict[str, Any]], path: str | Path) -> Path:
    """Bar chart of the direct sparsity of each prunable layer (forward order as given).

    Args:
      layers: ``sparsity_report(...).as_dict()['layers']``: name -> {'kept', 'total',
        'sparsity'}.
      path: output PNG path.

    Returns:
      The path written.
    """
    path = Path(path)
    names = list(layers)
    values = [layers[n]["sparsity"] for n in names]
    fig, ax = plt.subplots(figsize=(max(6, 0.45 * len(names) + 2), 4))
    bars = ax.bar(range(len(names)), values, color="tab:blue")
    kept = [f"{layers[n]['kept']:,}/{layers[n]['total']:,}" for n in names]
    ax.bar_label(bars, labels=kept, fontsize=7, rotation=90 if len(names) > 12 else 0, padding=2)
    ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=8)
    ax.set(ylabel="sparsity (pruned fraction)", ylim=(0, 1.15), title="Per-layer sparsity")
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def plot_effective_sparsity(layers: dict[str, dict[str, Any]], path: str | Path) -> Path:
    """Grouped bars of the direct and the effective sparsity of each prunable layer.

    Args:
      layers: ``sparsity_report(..., effective_mask=...).as_dict()['layers']``: name ->
        {'kept', 'total', 'sparsity', 'effective_kept', 'effective_sparsity'}.
      path: output PNG path.

    Returns:
      The path written.

    Raises:
      KeyError: if a layer has no ``effective_sparsity`` (report made without an effective mask).
    """
    path = Path(path)
    names = list(layers)
    for name in names:
        if "effective_sparsity" not in layers[name]:
            raise KeyError(f"layer {name!r} has no 'effective_sparsity' (no effective mask)")
    x = np.arange(len(names))
    width = 0.4
    fig, ax = plt.subplots(figsize=(max(6, 0.6 * len(names) + 2), 4))
    ax.bar(x - width / 2, [layers[n]["sparsity"] for n in names], width, label="direct")
    ax.bar(
        x + width / 2,
        [layers[n]["effective_sparsity"] for n in names],
        width,
        label="effective",
        color="tab:red",
    )
    ax.set_xticks(x, names, rotation=60, ha="right", fontsize=8)
    ax.set(
        ylabel="sparsity (pruned fraction)",
        ylim=(0, 1.1),
        title="Per-layer direct vs effective sparsity",
    )
    ax.legend(loc="lower right")
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)
