"""Gradual vs one-shot magnitude pruning at equal training steps (Zhu & Gupta, "To prune, or not").

Zhu & Gupta prune gradually during training: the sparsity follows the cubic schedule
``s(t) = s_f (1 - (1 - p)^3)`` over a window of the run (``p`` the fraction of the window
elapsed), the masks recomputed from the current magnitudes every few steps, so the network adapts
while it loses weights. The alternative is to train dense, prune once to the target and
fine-tune. For each target sparsity and seed this runs, on LeNet-300-100 / MNIST with Global MP +
MT (every layer keeps at least 0.2% of all prunable weights), both for the SAME number of training
steps ``T``:

* ``gradual``: ``configs/lenet300_mnist_gradual.py`` (flow 'gradual', Adam 1e-3 cosine over the
  whole run) with its pruning window scaled to ``T`` (dense until 1000/9360 of the steps, the
  cubic ramp up to 6000/9360, 20 mask updates, then recovery at the target);
* ``one_shot``: ``configs/lenet300_mnist_gmp.py`` (flow 'prune_finetune'): dense for a third of
  ``T`` (Adam 1e-3 cosine), one-shot pruning, fine-tuning for the other two thirds (Adam 2e-3
  cosine, a fresh optimizer), the config's own 10 + 20 epoch split. The dense net is trained once
  per seed and shared by every sparsity (``jp.run_sweep``).

Writes into ``--out``: ``gradual_vs_oneshot.csv`` (one row per method, sparsity and seed),
``gradual_vs_oneshot.md`` (the table), ``gradual_vs_oneshot.png`` (final test accuracy against
sparsity) and ``runs/`` (``gradual/...`` and the one-shot sweep in ``one_shot/``; rerunning the
same command resumes and trains only what is missing).

    python experiments/gradual_vs_oneshot.py --epochs 6 --sparsities 0.9 0.98 0.99
    python -m experiments.gradual_vs_oneshot --smoke  # seconds, for tests

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
from configs import lenet300_mnist_gmp, lenet300_mnist_gradual  # noqa: E402
from experiments._common import (  # noqa: E402
    check_seeds_and_epochs,
    mean_std,
    save_figure,
    write_results,
)
from jaxprune.training import train_and_evaluate  # noqa: E402

METHODS = ("gradual", "one_shot")
SPARSITIES = (0.9, 0.98, 0.99)
MNIST_TRAIN_EXAMPLES = 60_000
DEFAULT_EPOCHS = 30.0  # lenet300_mnist_gmp.py: 10 dense + 20 fine-tuning epochs
DENSE_FRACTION = 1 / 3  # of the steps, one-shot's dense phase (the config's 10 of 30 epochs)
# Pruning window of configs/lenet300_mnist_gradual.py as fractions of its 9,360 steps.
BASE_STEPS, BASE_BEGIN, BASE_END, MASK_UPDATES = 9360, 1000, 6000, 20
SMOKE_STEPS = 30
CSV_COLUMNS = (
    "method",
    "sparsity",
    "seed",
    "steps",
    "kept",
    "effective_sparsity",
    "pruned_accuracy",
    "test_accuracy",
)


def total_steps(epochs: float, batch_size: int = 128) -> int:
    """Training steps of ``epochs`` epochs of MNIST's 60,000 examples (at least 3)."""
    return max(3, round(epochs * (MNIST_TRAIN_EXAMPLES // batch_size)))


def gradual_config(
    sparsity: float, steps: int, seed: int, smoke: bool
) -> ml_collections.ConfigDict:
    """Gradual (cubic) pruning to ``sparsity`` within a run of ``steps`` steps.

    The window is the base config's, scaled from its 9,360 steps to ``steps``, with
    ``MASK_UPDATES`` mask updates (fewer when the window is shorter).
    """
    config = lenet300_mnist_gradual.get_config("smoke" if smoke else None)
    config.seed = seed
    config.training.steps = steps
    config.pruning.sparsity = sparsity
    schedule = config.pruning.schedule
    schedule.final_sparsity = sparsity
    schedule.begin_step = max(0, round(steps * BASE_BEGIN / BASE_STEPS))
    schedule.end_step = max(schedule.begin_step + 1, round(steps * BASE_END / BASE_STEPS))
    schedule.frequency = max(1, (schedule.end_step - schedule.begin_step) // MASK_UPDATES)
    if smoke:
        config.training.checkpoint_every = 0
    else:
        config.training.eval_every = 0
        config.training.checkpoint_every = max(1, steps // 4)
    return config


def one_shot_config(steps: int, smoke: bool) -> ml_collections.ConfigDict:
    """Dense for ``DENSE_FRACTION`` of ``steps``, prune once, fine-tune for the rest."""
    config = lenet300_mnist_gmp.get_config("smoke" if smoke else None)
    dense = max(1, round(steps * DENSE_FRACTION))
    config.training.epochs, config.training.steps = 0.0, dense
    config.finetune.epochs, config.finetune.steps = 0.0, steps - dense
    if smoke:
        config.training.checkpoint_every = 0
    else:
        config.training.eval_every = 0
        config.training.checkpoint_every = max(1, dense // 2)
    return config


def _row(method: str, sparsity: float, seed: int, summary: dict[str, Any]) -> dict[str, Any]:
    pruned = summary["phases"].get("pruned")
    return {
        "method": method,
        "sparsity": sparsity,
        "seed": seed,
        "steps": int(summary["steps"]),
        "kept": int(summary["sparsity"]["kept"]),
        "effective_sparsity": float(summary["sparsity"]["effective_sparsity"]),
        "pruned_accuracy": float(pruned["test_accuracy"]) if pruned else float("nan"),
        "test_accuracy": float(summary["test_accuracy"]),
    }


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """Markdown table: per sparsity, both methods' final accuracy (mean ± std over seeds)."""
    header = [
        "sparsity",
        "kept",
        "steps",
        "seeds",
        "gradual (%)",
        "one-shot, after pruning (%)",
        "one-shot, fine-tuned (%)",
        "gradual - one-shot",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for sparsity in sorted({r["sparsity"] for r in rows}):
        mine = {
            m: [r for r in rows if r["sparsity"] == sparsity and r["method"] == m] for m in METHODS
        }
        gradual = [r["test_accuracy"] for r in mine["gradual"]]
        one_shot = [r["test_accuracy"] for r in mine["one_shot"]]
        lines.append(
            "| "
            + " | ".join(
                [
                    f"{sparsity:g}",
                    f"{mine['gradual'][0]['kept']:,}",
                    str(mine["gradual"][0]["steps"]),
                    str(len(gradual)),
                    mean_std(gradual),
                    mean_std([r["pruned_accuracy"] for r in mine["one_shot"]]),
                    mean_std(one_shot),
                    f"{100 * (np.mean(gradual) - np.mean(one_shot)):+.2f}",
                ]
            )
            + " |"
        )
    return "\n".join(lines)


def _plot(rows: list[dict[str, Any]], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6, 4))
    sparsities = sorted({r["sparsity"] for r in rows})
    xs = np.arange(len(sparsities))
    for method, style in zip(METHODS, ("o-", "s--"), strict=True):
        accs = [
            [100 * r["test_accuracy"] for r in rows if r["method"] == method and r["sparsity"] == s]
            for s in sparsities
        ]
        ax.errorbar(
            xs,
            [np.mean(a) for a in accs],
            yerr=[np.std(a) for a in accs],
            fmt=style,
            capsize=3,
            label=method.replace("_", "-"),
        )
    ax.set_xticks(xs, [f"{s:g}" for s in sparsities])
    ax.set(
        xlabel="sparsity",
        ylabel="test accuracy (%)",
        title="LeNet-300-100 on MNIST, equal training steps",
    )
    ax.grid(alpha=0.3)
    ax.legend()
    save_figure(fig, path)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Runs both methods; returns the rows and the table.

    Args:
      argv: command-line arguments (``--sparsities``, ``--seeds``, ``--epochs``, ``--smoke``,
        ``--out``); ``None`` reads ``sys.argv``.

    Returns:
      ``{'rows': [...], 'table': str, 'steps': int}``; each row has the ``CSV_COLUMNS`` keys.

    Raises:
      ValueError: for a sparsity outside (0, 1), ``--seeds < 1`` or ``--epochs <= 0``.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sparsities", type=float, nargs="+", default=None)
    parser.add_argument("--seeds", type=int, default=2, help="number of seeds (0, 1, ...)")
    parser.add_argument(
        "--epochs", type=float, default=None, help="training epochs per run, both methods (30)"
    )
    parser.add_argument("--smoke", action="store_true", help="tiny runs of a few steps (tests)")
    parser.add_argument("--out", type=Path, default=Path("experiments/out/gradual_vs_oneshot"))
    args = parser.parse_args(argv)
    sparsities = sorted(args.sparsities or ((0.9,) if args.smoke else SPARSITIES))
    if any(not 0.0 < s < 1.0 for s in sparsities):
        raise ValueError(f"--sparsities must all be in (0, 1), got {sparsities}")
    check_seeds_and_epochs(args.seeds, args.epochs)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.epochs is not None:
        steps = total_steps(args.epochs)
    else:
        steps = SMOKE_STEPS if args.smoke else total_steps(DEFAULT_EPOCHS)

    rows = []
    for sparsity in sparsities:
        for seed in range(args.seeds):
            config = gradual_config(sparsity, steps, seed, args.smoke)
            where = args.out / "runs" / "gradual" / f"s{sparsity:g}_steps{steps}_seed{seed}"
            rows.append(_row("gradual", sparsity, seed, train_and_evaluate(config, where).summary))
    swept = jp.run_sweep(
        one_shot_config(steps, args.smoke),
        args.out / "runs" / "one_shot" / f"steps{steps}",
        {"pruning.sparsity": sparsities},
        seeds=args.seeds,
    )
    for row in swept.rows:
        summary = json.loads((Path(row["workdir"]) / "summary.json").read_text())
        rows.append(_row("one_shot", row["pruning.sparsity"], row["seed"], summary))
    rows.sort(key=lambda r: (r["sparsity"], METHODS.index(r["method"]), r["seed"]))
    _plot(rows, args.out / "gradual_vs_oneshot.png")
    table = markdown_table(rows)
    write_results(args.out, "gradual_vs_oneshot", CSV_COLUMNS, rows, table)
    print(f"wrote {args.out}")
    return {"rows": rows, "table": table, "steps": steps}


if __name__ == "__main__":
    main(sys.argv[1:])
