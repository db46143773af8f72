"""PNG plots of a run (matplotlib, Agg backend): learning curve, per-layer (effective) sparsity.

Reading aids, fixed here so that every run's figures read the same way:

* **Learning curve**: train and test loss (log scale) and accuracy against the global step. Events
  are vertical lines named on a top axis, outside the data: ``prune`` (a 'pruned' record: one-shot
  pruning or a lottery round, with the sparsity it reached), a phase change without pruning (the
  new phase's name), and the mask updates of gradual pruning (records with
  ``achieved_sparsity``; labelled with the sparsity after the update, thinned so labels do not
  collide). The pruned net's test metrics (in the 'pruned' record) are a separate marker, so the
  drop caused by pruning is visible at the prune step. Legends sit below the axes.
* **Sparsity bars**: the height is the compression ``1 / (1 - sparsity)`` on a log axis, labelled
  with the sparsity it stands for (0%, 90%, 99%, 99.9%, ...) on the left and the compression
  (1x, 10x, ...) on the right: a linear 0-1 axis makes 92% and 99% look alike, though the second
  keeps 8 times fewer weights. A layer with nothing kept has infinite compression: its bar runs to
  the top of the axis and is labelled ``100%``. Direct bars are solid blue, effective bars orange
  and hatched, with the legend outside the axes.

Each figure is rendered in memory and written with ``workdir.atomic_write_bytes`` (a temporary
file in the same folder, then ``os.replace``): a reader or a crash never sees half a PNG, and the
bytes are those ``fig.savefig(path)`` would write.
"""

import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib import ticker  # noqa: E402

from jaxprune.training import workdir as workdir_lib  # noqa: E402

TRAIN_COLOR = "tab:blue"
TEST_COLOR = "tab:orange"
PRUNED_COLOR = "tab:red"
EVENT_COLOR = "tab:purple"
DIRECT_COLOR = "tab:blue"
EFFECTIVE_COLOR = "tab:orange"
EFFECTIVE_HATCH = "///"


def _save(fig: plt.Figure, path: Path) -> Path:
    """Writes ``fig`` to ``path`` atomically (format from the suffix, PNG by default)."""
    buffer = io.BytesIO()
    try:
        fig.tight_layout()
        fig.savefig(buffer, dpi=100, format=path.suffix.lstrip(".").lower() or "png")
    finally:
        plt.close(fig)
    return workdir_lib.atomic_write_bytes(path, buffer.getvalue())


# ---- learning curve -------------------------------------------------------------------------


def _percent(fraction: float) -> str:
    """A fraction as a percentage: ``0.98 -> '98%'``, ``0.468 -> '46.8%'``, ``0.99768 -> '99.77%'``.

    One digit more after each leading 9, so sparsities near 1 stay apart.
    """
    if fraction >= 1:
        return "100%"
    digits = max(1, math.ceil(-math.log10(1 - fraction)) - 1)
    text = f"{100 * fraction:.{digits}f}".rstrip("0").rstrip(".")
    return f"{text}%"


def _events(records: Sequence[dict[str, Any]]) -> list[tuple[float, str, str]]:
    """``(step, label, kind)`` of the prune steps, other phase changes and mask updates."""
    events = []
    for r in records:
        if r.get("phase") == "pruned":
            sparsity = r.get("sparsity")
            label = "prune" if sparsity is None else f"prune {_percent(float(sparsity))}"
            events.append((r["step"], label, "prune"))
    pruned_steps = [e[0] for e in events]
    train = [r for r in records if "train_loss" in r]
    for a, b in zip(train, train[1:], strict=False):
        if a["phase"] != b["phase"] and not any(a["step"] <= p <= b["step"] for p in pruned_steps):
            events.append((a["step"], b["phase"], "phase"))
    updates = [r for r in records if "achieved_sparsity" in r and r.get("phase") != "pruned"]
    events.extend((r["step"], _percent(float(r["achieved_sparsity"])), "update") for r in updates)
    return sorted(events, key=lambda e: e[0])


# Above this many mask updates, a shaded span replaces one line per update.
MANY_UPDATES = 20


def _label_events(ax: plt.Axes, events: list[tuple[float, str, str]]) -> None:
    """Vertical lines at the events, named on a top axis (no text over the data).

    Mask-update labels are thinned so that neighbours are at least 1/10 of the x-range apart
    (the last update is always named); prune and phase labels are always shown. More than
    ``MANY_UPDATES`` updates get a shaded span from the first to the last and lines only at the
    named ones.
    """
    if not events:
        return
    lo, hi = ax.get_xlim()
    min_gap = (hi - lo) / 10
    styles = {"prune": ("-", 1.5, 0.9), "phase": ("--", 1.0, 0.7), "update": (":", 1.0, 0.8)}
    updates = [e for e in events if e[2] == "update"]
    named: list[tuple[float, str, str]] = []
    for event in events:
        step, _, kind = event
        if kind == "update" and named and step - named[-1][0] < min_gap:
            if event is updates[-1] and named[-1][2] == "update":
                named[-1] = event  # the final sparsity beats an intermediate one
            continue
        named.append(event)
    many = len(updates) > MANY_UPDATES
    for step, _, kind in events if not many else named:
        ls, lw, alpha = styles[kind]
        ax.axvline(step, color=EVENT_COLOR, ls=ls, lw=lw, alpha=alpha, zorder=1)
    if many:
        ax.axvspan(updates[0][0], updates[-1][0], color=EVENT_COLOR, alpha=0.08, lw=0, zorder=0)
    top = ax.secondary_xaxis("top")
    top.set_xticks([e[0] for e in named], [e[1] for e in named], fontsize=7, rotation=30)
    for label in top.get_xticklabels():
        label.set_horizontalalignment("left")
    top.tick_params(axis="x", colors=EVENT_COLOR, length=3, pad=1)
    if updates:
        text = f"{len(updates)} mask updates" + (" (shaded)" if many else "")
        top.set_xlabel(f"{text}: sparsity after the update", fontsize=8, color=EVENT_COLOR)


def _plain_log_labels(ax: plt.Axes) -> None:
    """Labels a log y-axis ``0.5, 1, 2`` rather than ``5x10^-1``.

    On an axis spanning at most 3 decades minor ticks are labelled too, fewer the longer the axis.
    """
    low, high = ax.get_ylim()
    span = math.log10(high / low)
    if span <= 0.5:
        mantissas = range(2, 10)
    elif span <= 1:
        mantissas = (2, 3, 4, 5, 6, 8)
    else:
        mantissas = (2, 3, 5) if span <= 2 else (2, 5) if span <= 3 else ()

    def minor(value, _):
        mantissa = value / 10.0 ** math.floor(math.log10(value) + 1e-9)
        return f"{value:g}" if round(mantissa) in mantissas else ""

    ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(ticker.FuncFormatter(minor))


def plot_learning_curve(records: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """Loss and accuracy (train and test) against the global step, with labelled events.

    Left: train loss (line) and test loss (markers) on a log axis; right: train and test
    accuracy. The 'pruned' record's test metrics (the net right after pruning) are red crosses.
    Prune steps, phase changes and gradual mask updates are vertical lines named on a top axis
    (see the module docstring). Legends sit below the axes, where they cover no data.

    Args:
      records: ``metrics.jsonl`` records (see ``metrics.py``).
      path: output PNG path (parent directories are created).

    Returns:
      The path written.
    """
    path = Path(path)
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
    train = [r for r in records if "train_loss" in r]
    evals = [r for r in records if "test_accuracy" in r or "test_loss" in r]
    pruned = [r for r in evals if r.get("phase") == "pruned"]

    for ax, key, title in ((ax_loss, "loss", "Loss"), (ax_acc, "accuracy", "Accuracy")):
        points = [r for r in train if f"train_{key}" in r]
        ax.plot(
            [r["step"] for r in points],
            [float(r[f"train_{key}"]) for r in points],
            lw=1.2,
            color=TRAIN_COLOR,
            label=f"train {key}",
        )
        tests = [r for r in evals if f"test_{key}" in r]
        if tests:
            ax.plot(
                [r["step"] for r in tests],
                [float(r[f"test_{key}"]) for r in tests],
                "o-",
                ms=4,
                lw=1.2,
                color=TEST_COLOR,
                label=f"test {key}",
            )
        after = [r for r in pruned if f"test_{key}" in r]
        if after:
            ax.plot(
                [r["step"] for r in after],
                [float(r[f"test_{key}"]) for r in after],
                "X",
                ms=9,
                color=PRUNED_COLOR,
                ls="none",
                label=f"test {key} right after pruning",
                zorder=3,
            )
        ax.set(xlabel="step", ylabel=key, title=title)
        ax.grid(alpha=0.3)
    if any(float(r["train_loss"]) > 0 for r in train):
        ax_loss.set_yscale("log")
        ax_loss.set_ylabel("loss (log scale)")
        _plain_log_labels(ax_loss)
    events = _events(records)
    for ax in (ax_loss, ax_acc):
        _label_events(ax, events)
        handles, _ = ax.get_legend_handles_labels()
        if not handles:
            continue
        ax.legend(
            loc="upper center",
            bbox_to_anchor=(0.5, -0.14),
            ncol=len(handles),
            fontsize=8,
            frameon=False,
        )
    return _save(fig, path)


# ---- sparsity bars --------------------------------------------------------------------------


def _compression(sparsity: float) -> float:
    """``1 / (1 - s)``; inf for a layer with nothing kept."""
    return math.inf if sparsity >= 1 else 1.0 / (1.0 - sparsity)


def _sparsity_axis(ax: plt.Axes, heights: list[float], label_room: float) -> float:
    """Log compression y-axis labelled with sparsities.

    Ticks run up to the decade above the largest finite compression (at least 10x, i.e. 90%).
    When a layer has nothing kept (infinite compression), half a decade above that stands for it,
    with a ``100%`` / ``inf`` tick. ``label_room`` is the fraction of the axis kept free above
    the highest bar for the bar labels.

    Returns:
      The height that stands for an infinite compression.
    """
    finite = [h for h in heights if math.isfinite(h)]
    decades = max(1, math.ceil(math.log10(max([10.0, *finite])) + 0.1))
    majors = [10.0**k for k in range(decades + 1)]
    inf_level = 10.0 ** (decades + 0.5)
    if len(finite) < len(heights):
        majors.append(inf_level)
    ax.set_yscale("log")
    ax.set_ylim(1, majors[-1] ** (1 + label_room))
    minors = [m * 10.0**k for k in range(decades) for m in (2, 5)]

    def as_sparsity(c, _):
        return "100%" if c >= inf_level else _percent(1 - 1 / c)

    def as_compression(c, _):
        return "inf" if c >= inf_level else f"{c:,.0f}x"

    ax.yaxis.set_major_locator(ticker.FixedLocator(majors))
    ax.yaxis.set_minor_locator(ticker.FixedLocator(minors))
    ax.yaxis.set_major_formatter(ticker.FuncFormatter(as_sparsity))
    ax.yaxis.set_minor_formatter(ticker.FuncFormatter(as_sparsity))
    ax.tick_params(axis="y", which="minor", labelsize=7)
    ax.set_ylabel("sparsity (log scale of compression)")
    right = ax.secondary_yaxis("right")
    right.set_yscale("log")
    right.yaxis.set_major_locator(ticker.FixedLocator(majors))
    right.yaxis.set_minor_locator(ticker.NullLocator())
    right.yaxis.set_major_formatter(ticker.FuncFormatter(as_compression))
    right.set_ylabel("compression (total / kept)")
    ax.grid(axis="y", which="both", alpha=0.3)
    return inf_level


def _bars(ax, x, sparsities, width, inf_level, **kwargs):
    """Bars from 0% (compression 1) up to each layer's compression (``inf_level`` when inf)."""
    heights = [min(_compression(s), inf_level) for s in sparsities]
    return ax.bar(x, [h - 1 for h in heights], width, bottom=1, **kwargs)


def plot_layer_sparsity(layers: dict[str, dict[str, Any]], path: str | Path) -> Path:
    """Bar chart of the direct sparsity of each prunable layer (forward order as given).

    The bar height is the compression ``1 / (1 - sparsity)`` on a log axis whose ticks are
    labelled as sparsities (module docstring); each bar is labelled ``kept/total``.

    Args:
      layers: ``sparsity_report(...).as_dict()['layers']``: name -> {'kept', 'total',
        'sparsity'}.
      path: output PNG path.

    Returns:
      The path written.
    """
    path = Path(path)
    names = list(layers)
    values = [float(layers[n]["sparsity"]) for n in names]
    fig, ax = plt.subplots(figsize=(max(6, 0.45 * len(names) + 2), 4))
    rotated = len(names) > 8
    inf_level = _sparsity_axis(ax, [_compression(s) for s in values], 0.45 if rotated else 0.12)
    bars = _bars(ax, range(len(names)), values, 0.8, inf_level, color=DIRECT_COLOR)
    kept = [f"{layers[n]['kept']:,}/{layers[n]['total']:,}" for n in names]
    ax.bar_label(bars, labels=kept, fontsize=7, rotation=90 if rotated else 0, padding=2)
    ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=8)
    ax.set_title("Per-layer sparsity (bar label: kept / total)")
    return _save(fig, path)


def plot_effective_sparsity(layers: dict[str, dict[str, Any]], path: str | Path) -> Path:
    """Grouped bars of the direct and the effective sparsity of each prunable layer.

    Direct bars are solid blue, effective bars orange and hatched; heights are compressions on a
    log axis labelled as sparsities (module docstring), each bar labelled with its sparsity. The
    legend sits outside the axes.

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
    direct = [float(layers[n]["sparsity"]) for n in names]
    effective = [float(layers[n]["effective_sparsity"]) for n in names]
    x = np.arange(len(names))
    width = 0.4
    fig, ax = plt.subplots(figsize=(max(6, 0.6 * len(names) + 2), 4))
    rotated = len(names) > 4
    inf_level = _sparsity_axis(
        ax, [_compression(s) for s in direct + effective], 0.3 if rotated else 0.12
    )
    for offset, values, label, style in (
        (-width / 2, direct, "direct", {"color": DIRECT_COLOR, "edgecolor": DIRECT_COLOR}),
        (
            width / 2,
            effective,
            "effective",
            {"color": "white", "edgecolor": EFFECTIVE_COLOR, "hatch": EFFECTIVE_HATCH},
        ),
    ):
        bars = _bars(ax, x + offset, values, width, inf_level, label=label, lw=1.2, **style)
        ax.bar_label(
            bars,
            labels=[_percent(v) for v in values],
            fontsize=7,
            rotation=90 if rotated else 0,
            padding=2,
        )
    ax.set_xticks(x, names, rotation=60, ha="right", fontsize=8)
    ax.set_title("Per-layer direct vs effective sparsity", pad=22)
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2, fontsize=8, frameon=False)
    return _save(fig, path)
