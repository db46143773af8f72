r"""Sweeps: one config over a grid of field values and seeds, from one trained dense net per seed.

    python -m jaxprune.sweep --config configs/lenet300_mnist_gmp.py --workdir runs/sweep \\
        --sweep pruning.sparsity=0.9,0.95,0.99 --sweep pruning.score=magnitude,snip --seeds 3

or from Python ``jp.run_sweep(config, "runs/sweep", {"pruning.sparsity": [0.9, 0.95]}, seeds=3)``
(this module's ``sweep``).

Every point (one value per swept field) and seed is an ordinary run in its own directory
``WORKDIR/points/<field-value_...>/seed_<s>``. When the config's flow trains a dense net first
(``prune_finetune``, ``scratch_e``, ``scratch_b``) and every swept field acts only after that
(``pruning.*``, ``finetune.*``, ``sanity.*``, ``scratch.*``), the dense net is trained once per
seed in ``WORKDIR/dense/seed_<s>`` and every point starts from it (``config.init_from``);
otherwise each point trains its own. Seed ``s`` runs with ``config.seed + s``.

Rerunning the same command after a kill (or with more seeds) runs only what is missing: finished
runs are read back, an interrupted one resumes from its checkpoint. ``WORKDIR/sweep.json`` keeps
the grid; a rerun with another config or grid is refused.

Outputs in ``WORKDIR``: ``results.csv`` (one row per point and seed), ``results.md`` (mean ±
std over seeds per point), ``accuracy_vs_sparsity.png`` (final test accuracy against the
compression ``1 / (1 - sparsity)`` on a log axis, one line per combination of the other swept
fields, error bars over seeds; when ``pruning.sparsity`` is swept).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import itertools
import json
import statistics
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import ml_collections

# Fields that act only once the dense net is trained: points differing in them share it.
AFTER_DENSE = ("pruning.", "finetune.", "sanity.", "scratch.")
# Flows whose first phase trains the dense net (init_from stands in for it).
SHARES_DENSE = ("prune_finetune", "scratch_e", "scratch_b")
# Per-run numbers in results.csv (from summary.json), in column order.
METRICS = (
    "test_accuracy",
    "pruned_accuracy",
    "sparsity",
    "effective_sparsity",
    "kept",
    "flops_reduction",
    "wall_time_s",
)


class SweepError(ValueError):
    """A sweep that cannot run as given (bad field, value or a changed grid)."""


@dataclasses.dataclass(frozen=True)
class SweepResult:
    """What a sweep produced.

    Attributes:
      workdir: the sweep directory.
      rows: one dict per point and seed (the swept fields, ``seed``, ``workdir`` and ``METRICS``).
      table: the Markdown table of ``results.md``.
      ran: the run directories trained (or resumed) by this call; the others were read back.
    """

    workdir: Path
    rows: list[dict[str, Any]]
    table: str
    ran: list[Path]


def _get(config: ml_collections.ConfigDict, dotted: str) -> Any:
    node = config
    for part in dotted.split("."):
        if not isinstance(node, ml_collections.ConfigDict) or part not in node:
            raise SweepError(f"--sweep {dotted}: no such config field")
        node = node[part]
    return node


def _set(config: ml_collections.ConfigDict, dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    node = config
    for part in parents:
        node = node[part]
    try:
        node[last] = value
    except TypeError as e:
        raise SweepError(f"--sweep {dotted}: {value!r} does not fit the field ({e})") from None


class _Stopped(Exception):
    """``stop_after`` runs were trained; the sweep stops as if killed."""


def parse_value(config: ml_collections.ConfigDict, dotted: str, text: str) -> Any:
    """``text`` as a value of the field ``dotted`` (its current type decides: int, float, ...)."""
    current = _get(config, dotted)
    try:
        if isinstance(current, bool):
            if text.lower() not in ("true", "false", "1", "0"):
                raise ValueError(text)
            return text.lower() in ("true", "1")
        if isinstance(current, int):
            return int(text)
        if isinstance(current, float):
            return float(text)
    except ValueError:
        raise SweepError(f"--sweep {dotted}: {text!r} is not a {type(current).__name__}") from None
    return text


def parse_sweeps(config: ml_collections.ConfigDict, specs: Sequence[str]) -> dict[str, list]:
    """``['pruning.sparsity=0.9,0.99', ...]`` -> ``{'pruning.sparsity': [0.9, 0.99], ...}``."""
    grid: dict[str, list] = {}
    for spec in specs:
        field, sep, values = spec.partition("=")
        field = field.strip()
        if not sep or not values.strip():
            raise SweepError(f"--sweep must be FIELD=V1,V2,..., got {spec!r}")
        if field in grid:
            raise SweepError(f"--sweep {field} given twice")
        parsed = [parse_value(config, field, v.strip()) for v in values.split(",")]
        if len(set(map(repr, parsed))) != len(parsed):
            raise SweepError(f"--sweep {field}: repeated value in {values!r}")
        grid[field] = parsed
    return grid


def _slug(point: Mapping[str, Any]) -> str:
    parts = []
    for field, value in point.items():
        text = str(value).replace("/", "-").replace(":", "-")
        parts.append(f"{field.split('.')[-1]}-{text}")
    return "_".join(parts) or "base"


def _row(point: Mapping[str, Any], seed: int, workdir: Path, summary: dict) -> dict[str, Any]:
    sparsity = summary.get("sparsity", {})
    pruned = summary.get("phases", {}).get("pruned", {})
    return {
        **point,
        "seed": seed,
        "workdir": str(workdir),
        "test_accuracy": summary["test_accuracy"],
        "pruned_accuracy": pruned.get("test_accuracy"),
        "sparsity": sparsity.get("sparsity"),
        "effective_sparsity": sparsity.get("effective_sparsity"),
        "kept": sparsity.get("kept"),
        "flops_reduction": summary.get("flops", {}).get("flops_reduction"),
        "wall_time_s": summary.get("wall_time_s"),
    }


def _mean_std(values: Iterable[float | None]) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    mean = statistics.fmean(values)
    if len(values) == 1:
        return f"{100 * mean:.2f}"
    return f"{100 * mean:.2f} ± {100 * statistics.stdev(values):.2f}"


def markdown_table(rows: Sequence[Mapping[str, Any]], fields: Sequence[str]) -> str:
    """Mean ± std over seeds (in %) of accuracy, accuracy after pruning and sparsities."""
    header = [*fields, "seeds", "test acc (%)", "after pruning (%)", "sparsity (%)", "eff. (%)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    groups: dict[tuple, list] = {}
    for row in rows:
        groups.setdefault(tuple(row[f] for f in fields), []).append(row)
    for key, group in groups.items():
        cells = [str(v) for v in key] + [str(len(group))]
        for metric in ("test_accuracy", "pruned_accuracy", "sparsity", "effective_sparsity"):
            cells.append(_mean_std(r[metric] for r in group))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_accuracy_vs_sparsity(
    rows: Sequence[Mapping[str, Any]], fields: Sequence[str], path: Path
) -> Path | None:
    """Test accuracy against compression (log axis), one line per other-field combination."""
    if "pruning.sparsity" not in fields:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    from jaxprune.training import workdir as workdir_lib

    others = [f for f in fields if f != "pruning.sparsity"]
    lines: dict[tuple, dict[float, list]] = {}
    for row in rows:
        key = tuple(row[f] for f in others)
        lines.setdefault(key, {}).setdefault(row["pruning.sparsity"], []).append(row)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for key, by_target in lines.items():
        xs, ys, errs = [], [], []
        for target in sorted(by_target):
            group = by_target[target]
            achieved = statistics.fmean(r["sparsity"] for r in group)
            accs = [100 * r["test_accuracy"] for r in group]
            xs.append(1 / max(1 - achieved, 1e-12))
            ys.append(statistics.fmean(accs))
            errs.append(statistics.stdev(accs) if len(accs) > 1 else 0.0)
        names = [f"{f.split('.')[-1]}={v}" for f, v in zip(others, key, strict=True)]
        label = ", ".join(names) or "accuracy"
        ax.errorbar(xs, ys, yerr=errs, marker="o", capsize=3, label=label)
    ticks = sorted({x for line in ax.get_lines() for x in line.get_xdata()})
    if len(ticks) == 1:  # one sparsity: a range around it (a log axis cannot span one point)
        ax.set_xlim(ticks[0] / 1.5, ticks[0] * 1.5)
    ax.set_xscale("log")
    ax.set_xticks(ticks)
    ax.xaxis.set_minor_formatter(FuncFormatter(lambda x, _: ""))
    ax.xaxis.set_major_formatter(
        FuncFormatter(lambda x, _: f"{x:.3g}x\n{100 * (1 - 1 / x):.4g}%" if x >= 1 else "")
    )
    ax.set(xlabel="compression = 1 / (1 - sparsity), log scale (sparsity)")
    ax.set_ylabel("final test accuracy (%), mean ± std over seeds")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    ax.set_title("Accuracy vs sparsity")
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, dpi=100)
    plt.close(fig)
    return workdir_lib.atomic_write_bytes(path, buffer.getvalue())


def _spec(config: ml_collections.ConfigDict, grid: Mapping[str, list], seeds: int) -> dict:
    from jaxprune.training import run_config

    return {
        "config_hash": run_config.config_hash(run_config.config_to_dict(config)),
        "grid": {k: list(v) for k, v in grid.items()},
        "seeds": seeds,
    }


def _check_spec(workdir: Path, spec: dict) -> None:
    from jaxprune.training import workdir as workdir_lib

    path = workdir / "sweep.json"
    if path.exists():
        stored = json.loads(path.read_text())
        if stored["config_hash"] != spec["config_hash"]:
            raise SweepError(f"{path}: this sweep ran another config; use another --workdir")
        if stored["grid"] != spec["grid"]:
            raise SweepError(
                f"{path}: this sweep's grid is {stored['grid']}, not {spec['grid']}; use another "
                "--workdir"
            )
    workdir.mkdir(parents=True, exist_ok=True)
    workdir_lib.atomic_write_text(path, json.dumps(spec, indent=2) + "\n")


def _precheck(config: ml_collections.ConfigDict) -> None:
    """The checks a run makes with its model before training (e.g. MT feasibility)."""
    import tempfile

    from jaxprune.training import flows, prechecks
    from jaxprune.training.context import RunContext

    flow = flows.get(config.flow)
    with tempfile.TemporaryDirectory() as scratch:
        ctx = RunContext(config, Path(scratch), flow)
        try:
            prechecks.run_all(ctx, flow)
        finally:
            ctx.ckpt.close()


def sweep(
    config: ml_collections.ConfigDict,
    workdir: str | Path,
    grid: Mapping[str, Sequence[Any]],
    *,
    seeds: int = 1,
    stop_after: int | None = None,
) -> SweepResult:
    """Runs ``config`` at every point of ``grid`` for ``seeds`` seeds (see the module docstring).

    Args:
      config: a run config (``configs/*.py``).
      workdir: the sweep directory.
      grid: ``{dotted field: [values]}``; the points are the product of the lists.
      seeds: seeds per point (``config.seed + s`` for ``s < seeds``).
      stop_after: train at most this many runs in this call, then stop (tests of resuming).

    Returns:
      A ``SweepResult``.

    Raises:
      SweepError: for an unknown field, a value of the wrong type, or a changed grid.
    """
    from jaxprune.training import config_check, result, runner
    from jaxprune.training import workdir as workdir_lib

    workdir = Path(workdir)
    if seeds < 1:
        raise SweepError(f"--seeds must be >= 1, got {seeds}")
    grid = {field: list(values) for field, values in grid.items()}
    for field, values in grid.items():
        _get(config, field)
        if not values:
            raise SweepError(f"--sweep {field}: no values")
    fields = list(grid)
    points = [dict(zip(fields, combo, strict=True)) for combo in itertools.product(*grid.values())]
    for point in points:  # every point's config is valid before anything trains
        trial = ml_collections.ConfigDict(config.to_dict())
        for field, value in point.items():
            _set(trial, field, value)
        config_check.validate_config(trial)
        _precheck(trial)
    _check_spec(workdir, _spec(config, grid, seeds))
    share = config.flow in SHARES_DENSE and all(f.startswith(AFTER_DENSE) for f in fields)

    ran: list[Path] = []

    def run(run_config_: ml_collections.ConfigDict, where: Path) -> dict:
        done = result.load_run(where) if (where / "summary.json").exists() else None
        if done is not None and done.finished:
            return done.summary
        if stop_after is not None and len(ran) >= stop_after:
            raise _Stopped
        ran.append(where)
        return runner.train_and_evaluate(run_config_, where).summary

    rows = []
    try:
        for seed in range(seeds):
            dense_dir = None
            if share:
                dense_dir = workdir / "dense" / f"seed_{seed}"
                dense = ml_collections.ConfigDict(config.to_dict())
                dense.seed = config.seed + seed
                dense.flow = "dense"
                run(dense, dense_dir)
            for point in points:
                point_config = ml_collections.ConfigDict(config.to_dict())
                point_config.seed = config.seed + seed
                for field, value in point.items():
                    _set(point_config, field, value)
                if dense_dir is not None:
                    point_config.init_from = f"{dense_dir}:dense"
                where = workdir / "points" / _slug(point) / f"seed_{seed}"
                rows.append(_row(point, seed, where, run(point_config, where)))
    except _Stopped:
        return SweepResult(workdir, rows, "", ran)
    _write_csv(workdir / "results.csv", rows, fields)
    table = markdown_table(rows, fields)
    workdir_lib.atomic_write_text(workdir / "results.md", table)
    plot_accuracy_vs_sparsity(rows, fields, workdir / "accuracy_vs_sparsity.png")
    return SweepResult(workdir, rows, table, ran)


def _write_csv(path: Path, rows: Sequence[Mapping[str, Any]], fields: Sequence[str]) -> None:
    from jaxprune.training import workdir as workdir_lib

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=[*fields, "seed", *METRICS, "workdir"])
    writer.writeheader()
    for row in rows:
        writer.writerow(
            {
                k: ("" if v is None else repr(v) if isinstance(v, float) else v)
                for k, v in row.items()
            }
        )
    workdir_lib.atomic_write_text(path, buffer.getvalue())


def _main(argv: Sequence[str]) -> None:
    import sys

    from absl import flags

    from jaxprune.training import runner

    if len(argv) > 1:
        raise SystemExit(f"jaxprune.sweep: error: unexpected arguments {argv[1:]}")
    config = flags.FLAGS.config
    try:
        grid = parse_sweeps(config, flags.FLAGS.sweep or [])
        out = sweep(config, flags.FLAGS.workdir, grid, seeds=flags.FLAGS.seeds)
    except (SweepError, ValueError) as e:
        print(f"jaxprune.sweep: error: {' '.join(str(e).split())}", file=sys.stderr)
        sys.exit(2)
    except runner.RunInterrupted as stopped:
        print(f"jaxprune.sweep: {stopped}; rerun the same command to go on", file=sys.stderr)
        sys.exit(stopped.exit_code)
    print(out.table, end="")
    print(f"results: {out.workdir / 'results.csv'}, {out.workdir / 'results.md'}")


if __name__ == "__main__":
    from absl import app, flags
    from ml_collections import config_flags

    flags.DEFINE_string("workdir", None, "The sweep directory.")
    flags.DEFINE_multi_string("sweep", [], "FIELD=V1,V2,...: a swept config field (repeatable).")
    flags.DEFINE_integer("seeds", 1, "Seeds per point (config.seed + 0, 1, ...).")
    config_flags.DEFINE_config_file("config", None, "Experiment config file.", lock_config=True)
    flags.mark_flags_as_required(["config", "workdir"])
    app.run(_main)
