"""Effective vs direct compression of randomly pruned LeNet-300-100 (Vysogorets & Kempe).

Random masks with uniform, ERK and IGQ per-layer quotas at direct compressions 10x..1000x, over
several seeds (parameters from a fresh init; only their shapes matter, so no training). For each
mask the effective mask (connections on an input-output path) is computed with
``jp.effective_mask`` on the model's linear mode. Writes into ``--out``:

* ``effective_sparsity.csv``: one row per (quota, seed, direct compression);
* ``effective_target.csv``: per quota and seed, the direct compression that the effective-target
  search (nested random masks) needs for ``--search-compression`` effective compression;
* ``effective_sparsity.png``: effective vs direct compression (log-log, mean over seeds of the
  connected networks) and the fraction of fully disconnected networks.

Run (about a minute on a CPU)::

    python experiments/effective_sparsity.py --seeds 5
    python -m experiments.effective_sparsity --seeds 5  # the same
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import jaxprune as jp  # noqa: E402
from experiments._common import check_seeds_and_epochs, save_figure, write_csv  # noqa: E402
from jaxprune import models  # noqa: E402

QUOTAS = ("uniform", "erk", "igq")
COMPRESSIONS = (10, 30, 100, 300, 1000)
CSV_COLUMNS = (
    "quota",
    "seed",
    "target_compression",
    "kept",
    "total",
    "direct_compression",
    "effective_kept",
    "effective_compression",
    "disconnected",
)
SEARCH_COLUMNS = (
    "quota",
    "seed",
    "target_effective_compression",
    "direct_compression",
    "effective_compression",
    "steps",
)


def lenet300_setup() -> tuple[Any, Any, jax.Array]:
    """LeNet-300-100 params (fresh init), its linear-mode ``apply_fn`` and a sample input."""
    model = models.get_model("lenet300", 10)
    sample = jnp.zeros((1, 28, 28, 1), jnp.float32)
    params = model.init({"params": jax.random.key(0)}, sample)["params"]
    linear = model.clone(linear=True)
    return params, (lambda p, x: linear.apply({"params": p}, x)), sample


def _compression(total: int, kept: int) -> float:
    return total / kept if kept else math.inf


def random_pruning_rows(
    params: Any,
    apply_fn: Any,
    sample: jax.Array,
    seeds: Sequence[int],
    compressions: Sequence[float],
) -> list[dict[str, Any]]:
    """One CSV row per (quota, seed, direct compression) of random pruning."""
    rows = []
    for quota in QUOTAS:
        quota_fn = jp.quotas.get(quota)
        for seed in seeds:
            key = jax.random.key(seed)
            for target in compressions:
                mask = jp.random_mask(key, params, quota_fn(params, 1.0 - 1.0 / target))
                emask = jp.effective_mask(apply_fn, params, mask, sample)
                report = jp.sparsity_report(params, mask, effective_mask=emask)
                rows.append(
                    {
                        "quota": quota,
                        "seed": seed,
                        "target_compression": target,
                        "kept": report.kept,
                        "total": report.total,
                        "direct_compression": _compression(report.total, report.kept),
                        "effective_kept": report.effective_kept,
                        "effective_compression": _compression(report.total, report.effective_kept),
                        "disconnected": report.effective_kept == 0,
                    }
                )
    return rows


def search_rows(
    params: Any,
    apply_fn: Any,
    sample: jax.Array,
    seeds: Sequence[int],
    target_compression: float,
    quotas: Sequence[str] = ("uniform", "igq"),
) -> list[dict[str, Any]]:
    """Effective-target search with nested random masks: the direct compression it needs."""
    rows = []
    for quota in quotas:
        quota_fn = jp.quotas.get(quota)
        for seed in seeds:
            key = jax.random.key(seed)

            def mask_fn(sparsity, key=key, quota_fn=quota_fn):
                return jp.random_mask(key, params, quota_fn(params, sparsity))

            found = jp.effective_target_mask(
                mask_fn,
                1.0 - 1.0 / target_compression,
                apply_fn=apply_fn,
                params=params,
                sample_input=sample,
            )
            rows.append(
                {
                    "quota": quota,
                    "seed": seed,
                    "target_effective_compression": target_compression,
                    "direct_compression": 1.0 / (1.0 - found.direct_sparsity),
                    "effective_compression": 1.0 / (1.0 - found.effective_sparsity),
                    "steps": found.steps,
                }
            )
    return rows


def markdown_table(rows: list[dict[str, Any]], searched: list[dict[str, Any]] = ()) -> str:
    """Markdown table: per quota and target direct compression, means over seeds.

    Effective compression is averaged over the networks that stay connected ("-" when none
    does); "disconnected" counts the seeds whose network has no input-output path. With
    ``searched`` rows, a second table gives the direct compression the effective-target search
    needed per quota (mean, min and max over seeds).
    """
    header = ["quota", "direct (target)", "seeds", "direct", "effective", "disconnected"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for quota in dict.fromkeys(r["quota"] for r in rows):
        for target in sorted({r["target_compression"] for r in rows if r["quota"] == quota}):
            group = [r for r in rows if r["quota"] == quota and r["target_compression"] == target]
            connected = [r["effective_compression"] for r in group if not r["disconnected"]]
            direct = float(np.mean([r["direct_compression"] for r in group]))
            effective = f"{np.mean(connected):.1f}x" if connected else "-"
            n_disc = sum(bool(r["disconnected"]) for r in group)
            lines.append(
                f"| {quota} | {target:g}x | {len(group)} | {direct:.1f}x | {effective} | "
                f"{n_disc}/{len(group)} |"
            )
    if searched:
        lines += [
            "",
            "| quota | effective (target) | seeds | direct needed (mean) | min | max |",
            "|---|---|---|---|---|---|",
        ]
        for quota in dict.fromkeys(r["quota"] for r in searched):
            group = [r for r in searched if r["quota"] == quota]
            values = [r["direct_compression"] for r in group]
            lines.append(
                f"| {quota} | {group[0]['target_effective_compression']:g}x | {len(group)} | "
                f"{np.mean(values):.2f}x | {min(values):.2f}x | {max(values):.2f}x |"
            )
    return "\n".join(lines)


def _plot(rows: list[dict[str, Any]], compressions: Sequence[float], path: Path) -> None:
    fig, (ax_eff, ax_disc) = plt.subplots(1, 2, figsize=(11, 4))
    for quota in QUOTAS:
        means, fractions = [], []
        for target in compressions:
            group = [r for r in rows if r["quota"] == quota and r["target_compression"] == target]
            finite = [r["effective_compression"] for r in group if not r["disconnected"]]
            means.append(float(np.mean(finite)) if finite else np.nan)
            fractions.append(float(np.mean([r["disconnected"] for r in group])))
        ax_eff.plot(compressions, means, "o-", label=quota)
        ax_disc.plot(compressions, fractions, "o-", label=quota)
    ax_eff.plot(compressions, compressions, "k--", lw=1, label="effective = direct")
    ax_eff.set(
        xscale="log",
        yscale="log",
        xlabel="direct compression",
        ylabel="effective compression",
        title="Random pruning of LeNet-300-100 (connected nets, mean)",
    )
    ax_disc.set(
        xscale="log",
        xlabel="direct compression",
        ylabel="fraction disconnected",
        ylim=(-0.05, 1.05),
        title="Fully disconnected networks",
    )
    for ax in (ax_eff, ax_disc):
        ax.grid(alpha=0.3, which="both")
        ax.legend()
    save_figure(fig, path)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Runs the experiment; returns the rows and the printed numbers.

    Args:
      argv: command-line arguments (``--seeds``, ``--compressions``, ``--search-compression``,
        ``--out``); ``None`` reads ``sys.argv``.

    Returns:
      ``{'rows', 'search_rows', 'mean_effective_compression', 'mean_search_direct_compression'}``;
      the means are keyed by quota, at 100x direct compression (when it is in the list) and at
      the search target.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5, help="number of seeds (0, 1, ...)")
    parser.add_argument(
        "--compressions", type=float, nargs="+", default=list(COMPRESSIONS), help="direct"
    )
    parser.add_argument(
        "--search-compression",
        type=float,
        default=100.0,
        help="effective compression the effective-target search aims at (0 = skip the search)",
    )
    parser.add_argument("--out", type=Path, default=Path("experiments/out/effective_sparsity"))
    args = parser.parse_args(argv)
    check_seeds_and_epochs(args.seeds)
    if any(c < 1 for c in args.compressions):
        raise ValueError(f"--compressions must all be >= 1, got {args.compressions}")
    args.out.mkdir(parents=True, exist_ok=True)
    compressions = sorted(args.compressions)
    seeds = list(range(args.seeds))

    params, apply_fn, sample = lenet300_setup()
    rows = random_pruning_rows(params, apply_fn, sample, seeds, compressions)
    write_csv(args.out / "effective_sparsity.csv", CSV_COLUMNS, rows)
    _plot(rows, compressions, args.out / "effective_sparsity.png")

    means = {}
    if 100 in compressions:
        for quota in QUOTAS:
            group = [r for r in rows if r["quota"] == quota and r["target_compression"] == 100]
            means[quota] = float(np.mean([r["effective_compression"] for r in group]))
            print(f"{quota} random at 100x direct: mean effective compression {means[quota]:.1f}x")
    searched, search_means = [], {}
    if args.search_compression > 0:
        searched = search_rows(params, apply_fn, sample, seeds, args.search_compression)
        write_csv(args.out / "effective_target.csv", SEARCH_COLUMNS, searched)
        for quota in sorted({r["quota"] for r in searched}):
            values = [r["direct_compression"] for r in searched if r["quota"] == quota]
            search_means[quota] = float(np.mean(values))
            print(
                f"{quota} random, effective target {args.search_compression:g}x: direct "
                f"compression {search_means[quota]:.2f}x (mean; range {min(values):.2f}x-"
                f"{max(values):.2f}x)"
            )
    print(f"wrote {args.out}")
    return {
        "rows": rows,
        "search_rows": searched,
        "mean_effective_compression": means,
        "mean_search_direct_compression": search_means,
    }


if __name__ == "__main__":
    main(sys.argv[1:])
