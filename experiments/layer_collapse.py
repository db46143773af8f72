"""Layer collapse of Global MP and the minimum threshold (Gupta et al., "Is Complexity Required").

Global magnitude pruning (Global MP) ranks every prunable weight of the network by ``|w|`` and
keeps the largest. Nothing stops it from removing *every* weight of a layer whose weights happen
to be small; such a layer cuts every input-output path, and the pruned network answers with a
constant (chance accuracy) that no fine-tuning can repair, because the masked weights stay zero.
Gupta et al.'s minimum threshold (MT, ``pruning.min_keep_fraction``) makes every layer keep at
least a fixed fraction of all prunable weights (its top ones) before the rest of the budget is
ranked globally.

For each seed this trains ONE dense LeNet-300-100 on MNIST (``configs/lenet300_mnist_gmp.py``,
Adam, cosine, ``--epochs`` long) and, from it, prunes one-shot to every ``--sparsities`` value
with and without MT and fine-tunes (``jp.run_sweep`` over ``pruning.min_keep_fraction`` x
``pruning.sparsity``, which shares the dense net through ``init_from``). Per point it records the
accuracy right after pruning and after fine-tuning, the weights each layer kept, the layers that
kept none ("collapsed") and the effective sparsity (weights on no input-output path count as
pruned; 100% means the network is disconnected).

Which layer Global MP starves depends on how the trained magnitudes compare across layers. In
LeNet-300-100 it is the 784 x 300 input layer: it has the largest fan-in and so the smallest
initial weights, and Adam moves every weight by about the same step, so the shorter the dense
training the further its weights stay below the others'.

Writes into ``--out``: ``layer_collapse.csv`` (one row per MT setting, sparsity and seed),
``layer_collapse.md`` (the table), ``layer_collapse.png`` (accuracy and per-layer kept weights
against sparsity) and ``runs/`` (the sweep: ``runs/dense/seed_<s>`` and ``runs/points/...``;
rerunning the same command resumes and trains only what is missing).

    python experiments/layer_collapse.py --epochs 1 --sparsities 0.99 0.995 0.998 0.999
    python -m experiments.layer_collapse --smoke  # seconds, for tests

Measured: see ``experiments/report/report.md`` (``python experiments/report.py``).
"""

from __future__ import annotations

import argparse
import json
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
import jaxprune as jp  # noqa: E402
from configs import lenet300_mnist_gmp  # noqa: E402
from experiments._common import (  # noqa: E402
    check_seeds_and_epochs,
    mean_std,
    save_figure,
    write_results,
)

SPARSITIES = (0.99, 0.995, 0.998, 0.999)
# MT: every layer keeps its top 0.03% of all prunable weights (80 of LeNet-300-100's 266,200),
# feasible up to 99.9% sparsity (3 x 80 <= 266 kept).
MIN_KEEP_FRACTION = 0.0003
SMOKE_SPARSITIES = (0.99,)
SMOKE_FINETUNE_STEPS = 20
CSV_COLUMNS = (
    "min_keep_fraction",
    "sparsity",
    "seed",
    "kept",
    "total",
    "layer_kept",
    "min_layer_kept",
    "collapsed_layers",
    "effective_kept",
    "effective_sparsity",
    "dense_accuracy",
    "pruned_accuracy",
    "test_accuracy",
)


def base_config(
    smoke: bool, epochs: float | None, finetune_epochs: float | None
) -> ml_collections.ConfigDict:
    """``configs/lenet300_mnist_gmp.py`` (``smoke`` if asked) with the dense and fine-tune lengths.

    Args:
      smoke: start from the config's smoke variant (60 dense steps) and fine-tune for
        ``SMOKE_FINETUNE_STEPS`` steps.
      epochs: dense training epochs (None: the config's own).
      finetune_epochs: fine-tuning epochs after pruning (None: the config's own).

    Returns:
      A config of flow ``prune_finetune`` with Global MP and no MT (the sweep sets MT).
    """
    config = lenet300_mnist_gmp.get_config("smoke" if smoke else None)
    config.pruning.min_keep_fraction = 0.0
    if smoke:
        config.finetune.steps = SMOKE_FINETUNE_STEPS
        config.training.checkpoint_every = 0
    else:
        config.training.eval_every = 0
    if epochs is not None:
        config.training.epochs, config.training.steps = epochs, 0
    if finetune_epochs is not None:
        config.finetune.epochs, config.finetune.steps = finetune_epochs, 0
    return config


def collapse_row(
    min_keep_fraction: float, sparsity: float, seed: int, summary: dict[str, Any]
) -> dict[str, Any]:
    """One CSV row from a point's ``summary.json``.

    ``layer_kept`` is ``name=kept`` per layer in forward order, ``;``-joined; ``collapsed_layers``
    names the layers that kept no weight (empty when none did).
    """
    report = summary["sparsity"]
    kept = {
        name.removesuffix("/kernel"): int(row["kept"]) for name, row in report["layers"].items()
    }
    return {
        "min_keep_fraction": min_keep_fraction,
        "sparsity": sparsity,
        "seed": seed,
        "kept": int(report["kept"]),
        "total": int(report["total"]),
        "layer_kept": ";".join(f"{name}={n}" for name, n in kept.items()),
        "min_layer_kept": min(kept.values()),
        "collapsed_layers": ";".join(name for name, n in kept.items() if n == 0),
        "effective_kept": int(report["effective_kept"]),
        "effective_sparsity": float(report["effective_sparsity"]),
        "dense_accuracy": float(summary["phases"]["dense"]["test_accuracy"]),
        "pruned_accuracy": float(summary["phases"]["pruned"]["test_accuracy"]),
        "test_accuracy": float(summary["test_accuracy"]),
    }


def layer_kept(row: dict[str, Any]) -> dict[str, int]:
    """``{layer: kept}`` of a row's ``layer_kept`` column (a CSV string or the row's own)."""
    return {
        name: int(n) for name, n in (item.split("=") for item in str(row["layer_kept"]).split(";"))
    }


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """Markdown table: per MT setting and sparsity, the mean (± std over seeds) of each number.

    Kept weights per layer are means over seeds (rounded); "collapsed" counts the seeds in which
    at least one layer kept nothing and names those layers.
    """
    layers = list(layer_kept(rows[0]))
    header = (
        ["MT", "sparsity", "seeds", "kept"]
        + [f"{name} kept" for name in layers]
        + ["collapsed", "eff. sparsity (%)", "after pruning (%)", "fine-tuned (%)"]
    )
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    keys = sorted({(r["min_keep_fraction"], r["sparsity"]) for r in rows})
    for fraction, sparsity in keys:
        group = [r for r in rows if (r["min_keep_fraction"], r["sparsity"]) == (fraction, sparsity)]
        per_layer = [layer_kept(r) for r in group]
        collapsed = sorted(
            {name for r in group for name in r["collapsed_layers"].split(";") if name}
        )
        n_collapsed = sum(bool(r["collapsed_layers"]) for r in group)
        cells = [
            f"{100 * fraction:g}%" if fraction else "none",
            f"{sparsity:g}",
            str(len(group)),
            f"{round(np.mean([r['kept'] for r in group])):,}",
            *(f"{round(np.mean([k[name] for k in per_layer])):,}" for name in layers),
            f"{n_collapsed}/{len(group)}" + (f" ({', '.join(collapsed)})" if collapsed else ""),
            mean_std([r["effective_sparsity"] for r in group]),
            mean_std([r["pruned_accuracy"] for r in group]),
            mean_std([r["test_accuracy"] for r in group]),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _plot(rows: list[dict[str, Any]], path: Path) -> None:
    fig, (ax_acc, ax_kept) = plt.subplots(1, 2, figsize=(11, 4))
    sparsities = sorted({r["sparsity"] for r in rows})
    xs = np.arange(len(sparsities))
    layers = list(layer_kept(rows[0]))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for fraction, style in zip(
        sorted({r["min_keep_fraction"] for r in rows}), ("-", "--"), strict=True
    ):
        label = f"MT {100 * fraction:g}%" if fraction else "no MT"
        mine = [r for r in rows if r["min_keep_fraction"] == fraction]

        def mean(key, s, mine=mine):
            return float(np.mean([r[key] for r in mine if r["sparsity"] == s]))

        ax_acc.plot(
            xs, [100 * mean("test_accuracy", s) for s in sparsities], "o" + style, label=label
        )
        ax_acc.plot(
            xs,
            [100 * mean("pruned_accuracy", s) for s in sparsities],
            "x" + style,
            color=ax_acc.lines[-1].get_color(),
            alpha=0.5,
            label=f"{label}, before fine-tuning",
        )
        for i, name in enumerate(layers):
            kept = [
                np.mean([layer_kept(r)[name] for r in mine if r["sparsity"] == s])
                for s in sparsities
            ]
            ax_kept.plot(
                xs,
                np.maximum(kept, 0.5),  # a collapsed layer (0 kept) drawn at the 0.5 line
                "o" + style,
                color=colors[i % len(colors)],
                label=f"{name}, {label}",
            )
    ax_acc.axhline(10, color="k", lw=0.8, ls=":", label="chance")
    ax_acc.set(xlabel="sparsity", ylabel="test accuracy (%)", ylim=(0, 100))
    ax_acc.set_title("Global MP on LeNet-300-100, MNIST")
    ax_kept.axhline(0.5, color="k", lw=0.8, ls=":")
    ax_kept.set(xlabel="sparsity", ylabel="weights kept (log; 0 drawn at 0.5)", yscale="log")
    ax_kept.set_title("Kept weights per layer")
    for ax in (ax_acc, ax_kept):
        ax.set_xticks(xs, [f"{s:g}" for s in sparsities])
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize="x-small")
    save_figure(fig, path)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Runs the sweep; returns the rows and the table.

    Args:
      argv: command-line arguments (``--sparsities``, ``--min-keep-fraction``, ``--seeds``,
        ``--epochs``, ``--finetune-epochs``, ``--smoke``, ``--out``); ``None`` reads ``sys.argv``.

    Returns:
      ``{'rows': [...], 'table': str}``; each row has the ``CSV_COLUMNS`` keys.

    Raises:
      ValueError: for a sparsity outside (0, 1), an MT fraction outside (0, 1), ``--seeds < 1``,
        ``--epochs <= 0`` or ``--finetune-epochs <= 0``; ``jp.run_sweep`` raises when MT is
        infeasible at a sparsity (every layer's floor must fit in the kept budget).
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sparsities", type=float, nargs="+", default=None)
    parser.add_argument(
        "--min-keep-fraction",
        type=float,
        default=MIN_KEEP_FRACTION,
        help="MT: fraction of all prunable weights every layer keeps at least",
    )
    parser.add_argument("--seeds", type=int, default=2, help="number of seeds (0, 1, ...)")
    parser.add_argument("--epochs", type=float, default=None, help="dense epochs (config: 10)")
    parser.add_argument("--finetune-epochs", type=float, default=None, help="(config: 20)")
    parser.add_argument("--smoke", action="store_true", help="tiny runs of a few steps (tests)")
    parser.add_argument("--out", type=Path, default=Path("experiments/out/layer_collapse"))
    args = parser.parse_args(argv)
    sparsities = sorted(args.sparsities or (SMOKE_SPARSITIES if args.smoke else SPARSITIES))
    if any(not 0.0 < s < 1.0 for s in sparsities):
        raise ValueError(f"--sparsities must all be in (0, 1), got {sparsities}")
    if not 0.0 < args.min_keep_fraction < 1.0:
        raise ValueError(f"--min-keep-fraction must be in (0, 1), got {args.min_keep_fraction}")
    check_seeds_and_epochs(args.seeds, args.epochs)
    if args.finetune_epochs is not None and args.finetune_epochs <= 0:
        raise ValueError(f"--finetune-epochs must be > 0, got {args.finetune_epochs}")
    args.out.mkdir(parents=True, exist_ok=True)

    config = base_config(args.smoke, args.epochs, args.finetune_epochs)
    grid = {
        "pruning.min_keep_fraction": [0.0, args.min_keep_fraction],
        "pruning.sparsity": sparsities,
    }
    swept = jp.run_sweep(config, args.out / "runs", grid, seeds=args.seeds)
    rows = []
    for row in swept.rows:
        summary = json.loads((Path(row["workdir"]) / "summary.json").read_text())
        rows.append(
            collapse_row(
                row["pruning.min_keep_fraction"], row["pruning.sparsity"], row["seed"], summary
            )
        )
    rows.sort(key=lambda r: (r["min_keep_fraction"], r["sparsity"], r["seed"]))
    _plot(rows, args.out / "layer_collapse.png")
    table = markdown_table(rows)
    write_results(args.out, "layer_collapse", CSV_COLUMNS, rows, table)
    print(f"wrote {args.out}")
    return {"rows": rows, "table": table}


if __name__ == "__main__":
    main(sys.argv[1:])
