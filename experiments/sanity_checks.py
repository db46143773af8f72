"""Sanity checks of pruning at initialisation (Su et al., "Random Tickets can Win the Jackpot").

For one method (SNIP, GraSP, SynFlow, magnitude at init, random tickets, hybrid tickets), each
sparsity and each seed this trains the sparse net of ``flow='prune_at_init'`` for every variant:

* ``original``: the method's mask on the initial weights;
* ``shuffle_layerwise``: that mask permuted at random within each layer (same layerwise counts);
* ``reinit``: the mask kept, the weights re-drawn before training;
* ``shuffle_weights``: the mask kept, the surviving weights permuted within each layer;
* ``random_labels`` / ``random_pixels`` / ``half_data``: the mask scored on corrupted data
  (training uses the true data) -- only for the data-dependent scores (SNIP, GraSP);
* ``random_ticket``: smart-ratio layerwise quotas with random positions, the data-free baseline.

If a method's masks are no better than their layerwise-shuffled or random-label versions, the
method only learns layerwise sparsities, which is Su et al.'s finding for SNIP and GraSP.

Writes into ``--out``: ``sanity_checks.csv`` (one row per run), ``sanity_checks.md`` (the table
printed at the end), ``sanity_checks.png`` (grouped bars: mean test accuracy per variant and
sparsity, error bars = std over seeds) and ``runs/``
(every run's directory; rerunning the same command resumes and reuses finished runs).

    python experiments/sanity_checks.py --method snip --sparsities 0.9 0.98 --seeds 2
    python experiments/sanity_checks.py --setting vgg19 --method grasp \
        --data-dir ~/tensorflow_datasets   # CIFAR-10, GPU
    python -m experiments.sanity_checks --smoke  # seconds, for tests

Measured (LeNet-5 on MNIST, SNIP on one batch of 256, Adam 1e-3 cosine for 2 epochs, seeds 0-1,
``--method snip --sparsities 0.9 0.98 --seeds 2 --epochs 2 --variants original
shuffle_layerwise random_labels random_ticket``, 2-core CPU, about 35 minutes; test accuracy %,
mean ± std over the two seeds):

    variant                        s=0.9            s=0.98
    original             97.89 ± 0.01 (2)   94.62 ± 0.03 (2)
    shuffle_layerwise    97.99 ± 0.05 (2)   95.36 ± 0.16 (2)
    random_labels        97.80 ± 0.05 (2)   94.77 ± 0.10 (2)
    random_ticket        98.19 ± 0.10 (2)   95.34 ± 0.20 (2)

As in Su et al., SNIP's masks survive both sanity checks: shuffling them within each layer or
scoring them on random labels costs nothing (the shuffled masks even do slightly better at 98%),
so what SNIP contributes is its layerwise sparsities, and data-free random tickets with smart-ratio
quotas match or beat it.

GraSP at 98% in the same setting (``--method grasp --sparsities 0.98 --seeds 2 --epochs 2
--variants original shuffle_layerwise random_labels random_pixels reinit``, about 15 minutes):

    variant                       s=0.98
    original             91.47 ± 0.60 (2)
    shuffle_layerwise    95.62 ± 0.05 (2)
    random_labels        88.49 ± 0.55 (2)
    random_pixels        91.22 ± 0.13 (2)
    reinit               95.63 ± 0.01 (2)

GraSP's mask does *better* when shuffled within layers or trained from re-drawn weights, so
neither its positions nor its pairing with the initial weights carry information here; the
weights it keeps at 98% are a poor initialisation (a fresh draw under the same mask trains
4 points higher).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib
import ml_collections
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from configs import lenet5_mnist_sanity, resnet32x2_cifar10_sanity, vgg19_cifar10_sanity  # noqa: E402
from experiments._common import check_seeds_and_epochs, save_figure, write_results  # noqa: E402
from jaxprune.training import train_and_evaluate  # noqa: E402

SETTINGS = {
    "lenet5": lenet5_mnist_sanity,
    "vgg19": vgg19_cifar10_sanity,
    "resnet32x2": resnet32x2_cifar10_sanity,
}
METHODS = tuple(lenet5_mnist_sanity.METHODS)
DATA_METHODS = ("snip", "grasp")  # scores that read the data (the others ignore it)
VARIANTS = (
    "original",
    "shuffle_layerwise",
    "reinit",
    "shuffle_weights",
    "random_labels",
    "random_pixels",
    "half_data",
    "random_ticket",
)
DATA_VARIANTS = ("random_labels", "random_pixels", "half_data")
DEFAULT_VARIANTS = VARIANTS
CSV_COLUMNS = ("setting", "method", "variant", "sparsity", "seed", "kept", "test_accuracy")


def variant_config(
    base: ml_collections.ConfigDict, method: str, variant: str, sparsity: float, seed: int
) -> ml_collections.ConfigDict:
    """The run config of one (variant, sparsity, seed) of ``method``.

    Raises:
      ValueError: for an unknown variant.
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; known: {list(VARIANTS)}")
    config = ml_collections.ConfigDict(base.to_dict())
    config.seed = seed
    config.pruning.sparsity = sparsity
    lenet5_mnist_sanity.apply_method(
        config, "random_ticket" if variant == "random_ticket" else method
    )
    if variant in ("shuffle_layerwise", "reinit", "shuffle_weights"):
        config.sanity[variant] = True
    elif variant in DATA_VARIANTS:
        config.sanity.mask_data = variant
    return config


def variants_for(method: str, variants: Sequence[str]) -> list[str]:
    """``variants`` minus those that cannot differ from ``original`` for ``method``."""
    out = [v for v in variants if method in DATA_METHODS or v not in DATA_VARIANTS]
    if method == "random_ticket":
        out = [v for v in out if v != "random_ticket"]  # it is the original
    return out


def aggregate(rows: list[dict[str, Any]]) -> dict[tuple[str, float], tuple[float, float, int]]:
    """(variant, sparsity) -> (mean accuracy, std over seeds, number of seeds)."""
    groups: dict[tuple[str, float], list[float]] = {}
    for row in rows:
        groups.setdefault((row["variant"], row["sparsity"]), []).append(row["test_accuracy"])
    return {k: (float(np.mean(v)), float(np.std(v)), len(v)) for k, v in groups.items()}


def format_table(rows: list[dict[str, Any]], variants: Sequence[str]) -> str:
    """Mean ± std test accuracy (%) per variant (rows) and sparsity (columns)."""
    stats = aggregate(rows)
    sparsities = sorted({r["sparsity"] for r in rows})
    header = f"{'variant':<18}" + "".join(f"{f's={s:g}':>18}" for s in sparsities)
    lines = [header]
    for variant in variants:
        cells = []
        for s in sparsities:
            if (variant, s) in stats:
                mean, std, n = stats[(variant, s)]
                cells.append(f"{100 * mean:>8.2f} ± {100 * std:4.2f} ({n})")
            else:
                cells.append(f"{'-':>18}")
        lines.append(f"{variant:<18}" + "".join(f"{c:>18}" for c in cells))
    return "\n".join(lines)


def markdown_table(rows: list[dict[str, Any]], variants: Sequence[str]) -> str:
    """``format_table`` as Markdown: mean ± std test accuracy (%) and the number of seeds."""
    stats = aggregate(rows)
    sparsities = sorted({r["sparsity"] for r in rows})
    header = ["variant", *(f"s = {s:g}" for s in sparsities)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for variant in variants:
        cells = []
        for s in sparsities:
            if (variant, s) in stats:
                mean, std, n = stats[(variant, s)]
                cells.append(f"{100 * mean:.2f} ± {100 * std:.2f} ({n})")
            else:
                cells.append("-")
        lines.append("| " + " | ".join([variant, *cells]) + " |")
    return "\n".join(lines)


def _plot(rows: list[dict[str, Any]], variants: Sequence[str], title: str, path: Path) -> None:
    stats = aggregate(rows)
    sparsities = sorted({r["sparsity"] for r in rows})
    width = 0.8 / max(1, len(variants))
    fig, ax = plt.subplots(figsize=(1.8 + 1.6 * len(sparsities) * max(1, len(variants)) / 4, 4))
    for i, variant in enumerate(variants):
        xs, means, stds = [], [], []
        for j, s in enumerate(sparsities):
            if (variant, s) in stats:
                mean, std, _ = stats[(variant, s)]
                xs.append(j - 0.4 + (i + 0.5) * width)
                means.append(100 * mean)
                stds.append(100 * std)
        ax.bar(xs, means, width, yerr=stds, capsize=2, label=variant.replace("_", " "))
    accs = [100 * r["test_accuracy"] for r in rows]
    low = max(0.0, min(accs) - 5)
    ax.set(
        xticks=range(len(sparsities)),
        xticklabels=[f"{s:g}" for s in sparsities],
        xlabel="sparsity",
        ylabel="test accuracy (%)",
        ylim=(low, min(100.0, max(accs) + 2)),
        title=title,
    )
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize="small", ncol=2)
    save_figure(fig, path)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Runs the sanity checks; returns the rows and the table.

    Args:
      argv: command-line arguments; ``None`` reads ``sys.argv``.

    Returns:
      ``{'rows': [...], 'table': str}``; each row has the ``CSV_COLUMNS`` keys.

    Raises:
      ValueError: for an unknown setting, method or variant, a sparsity outside (0, 1),
        ``--seeds < 1`` or ``--epochs <= 0``.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--setting", default="lenet5", help=f"one of {sorted(SETTINGS)}")
    parser.add_argument("--method", default="snip", help=f"one of {METHODS}")
    parser.add_argument("--variants", nargs="+", default=list(DEFAULT_VARIANTS))
    parser.add_argument("--sparsities", type=float, nargs="+", default=[0.9, 0.98])
    parser.add_argument("--seeds", type=int, default=2, help="number of seeds (0, 1, ...)")
    parser.add_argument("--epochs", type=float, default=None, help="epochs per run")
    parser.add_argument("--data-dir", default=None, help="TFDS data_dir (CIFAR-10 settings)")
    parser.add_argument("--smoke", action="store_true", help="tiny runs of a few steps (tests)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.setting not in SETTINGS:
        raise ValueError(f"--setting must be one of {sorted(SETTINGS)}, got {args.setting!r}")
    if args.method not in METHODS:
        raise ValueError(f"--method must be one of {list(METHODS)}, got {args.method!r}")
    for variant in args.variants:
        if variant not in VARIANTS:
            raise ValueError(f"--variants: unknown {variant!r}; known: {list(VARIANTS)}")
    if any(not 0.0 < s < 1.0 for s in args.sparsities):
        raise ValueError(f"--sparsities must all be in (0, 1), got {args.sparsities}")
    check_seeds_and_epochs(args.seeds, args.epochs)
    out = args.out or Path("experiments/out/sanity_checks") / f"{args.setting}_{args.method}"
    out.mkdir(parents=True, exist_ok=True)

    base = SETTINGS[args.setting].get_config("smoke" if args.smoke else None)
    if args.epochs is not None:
        base.training.epochs = args.epochs
        base.training.steps = 0
    if args.data_dir:
        base.dataset.data_dir = args.data_dir
    variants = variants_for(args.method, args.variants)
    rows = []
    for sparsity in sorted(args.sparsities):
        for seed in range(args.seeds):
            for variant in variants:
                config = variant_config(base, args.method, variant, sparsity, seed)
                tag = f"{args.method}_{variant}_s{sparsity:g}_seed{seed}"
                summary = train_and_evaluate(config, out / "runs" / tag).summary
                rows.append(
                    {
                        "setting": args.setting,
                        "method": args.method,
                        "variant": variant,
                        "sparsity": sparsity,
                        "seed": seed,
                        "kept": int(summary["sparsity"]["kept"]),
                        "test_accuracy": float(summary["test_accuracy"]),
                    }
                )
    title = f"{args.method} on {args.setting}: sanity checks"
    table = format_table(rows, variants)
    heading = f"{title} (test accuracy %, mean ± std over seeds (n))"
    write_results(out, "sanity_checks", CSV_COLUMNS, rows, f"{heading}\n\n{table}")
    _plot(rows, variants, title, out / "sanity_checks.png")
    print(f"wrote {out}")
    return {"rows": rows, "table": table}


if __name__ == "__main__":
    main(sys.argv[1:])
