"""The reproduction report: every seed paper's claim re-run at CPU scale, in one Markdown file.

    python experiments/report.py            # full: about 30-40 minutes on a 2-core CPU
    python experiments/report.py --quick    # smoke settings, a couple of minutes (tests)

Runs the experiment drivers of this folder one after the other (in this process, importing
their ``main``), each with the arguments of ``RUNS`` below, and writes ``<out>/report.md``: a
header with the versions, devices, git commit and total wall time (``jaxprune.training.
provenance``), then one section per paper (the paper and its claim, and per driver run the exact
command that reproduces it alone, its seeds, its wall time, its table and its figure). Sections:

1. Gupta et al.: Global MP with and without the minimum threshold (layer collapse);
2. Vysogorets & Kempe: effective vs direct sparsity of random pruning;
3. Su et al.: sanity checks of SNIP and GraSP, random tickets;
4. Liu et al.: fine-tuning vs Scratch-E / Scratch-B;
5. Zhu & Gupta: large-sparse vs small-dense at equal nonzeros;
6. Zhu & Gupta: gradual vs one-shot pruning at equal training steps.

Each driver run writes into ``<out>/runs/<name>/`` (its run directories, CSV, table and PNG);
its CSVs and PNGs are copied next to ``report.md`` (the files to commit; ``runs/`` is not).
Rerunning the same command resumes: finished runs are read back, an interrupted one continues
from its checkpoint. ``<out>/runs/timings.json`` adds up each driver run's wall time over
invocations, so a resumed report still shows what its numbers cost.

The full settings are shorter than the drivers' docstrings (fewer seeds, epochs and variants) so
that the whole report fits in about half an hour of a 2-core CPU; ``report.md`` says which.
``--quick`` runs every driver with its smoke settings (seconds each; the numbers mean nothing)
and, by default, writes into ``experiments/out/report_quick/``; ``tests/test_report.py`` runs it
once and checks every driver's outputs on it.

Compiled XLA programs are kept in JAX's persistent compilation cache while the report runs (the
folder of the command line's, ``JAXPRUNE_COMPILATION_CACHE`` or ``~/.cache/jaxprune/xla``; ``off``
disables it), so the many runs of one model compile once; the cache changes no result, and the
process's previous cache setting is restored at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import importlib
import json
import os
import platform
import shlex
import shutil
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = Path("experiments/report")
DEFAULT_QUICK_OUT = Path("experiments/out/report_quick")


@dataclasses.dataclass(frozen=True)
class Run:
    """One invocation of a driver.

    Attributes:
      name: its folder ``runs/<name>`` and the prefix of its copied CSVs and PNGs.
      module: the driver, ``experiments/<module>.py``.
      label: what distinguishes it within its section (a subheading).
      quick: its arguments in ``--quick`` mode (without ``--out``), or None to skip it there.
      full: its arguments in full mode (without ``--out``), or None to skip it there.
    """

    name: str
    module: str
    label: str
    quick: tuple[str, ...] | None
    full: tuple[str, ...] | None


@dataclasses.dataclass(frozen=True)
class Section:
    """One paper: its claim and the driver runs that test it."""

    key: str
    title: str
    paper: str
    claim: str
    runs: tuple[Run, ...]
    note: str = ""


# The quick arguments of effective_sparsity, sanity_checks, rethinking and
# large_sparse_small_dense are those their smoke tests used (tests/test_report.py checks them
# on this report's outputs instead of running the drivers again).
SECTIONS = (
    Section(
        key="layer_collapse",
        title="Layer collapse and the minimum threshold",
        paper='Gupta et al., "Is Complexity Required for Neural Network Pruning? A Case Study on '
        'Global Magnitude Pruning"',
        claim="Global MP alone can prune every weight of a layer at extreme sparsity, which "
        "disconnects the network (chance accuracy, effective sparsity 100%, nothing to fine-tune); "
        "the minimum threshold (MT: every layer keeps its top few weights) prevents it.",
        runs=(
            Run(
                "layer_collapse",
                "layer_collapse",
                "LeNet-300-100, dense net trained briefly",
                quick=("--smoke", "--seeds", "1"),
                full=("--epochs", "0.25", "--finetune-epochs", "2", "--seeds", "2"),
            ),
            Run(
                "layer_collapse_10ep",
                "layer_collapse",
                "LeNet-300-100, dense net trained to convergence (the README's 10 epochs)",
                quick=None,
                full=("--epochs", "10", "--finetune-epochs", "2", "--seeds", "1"),
            ),
        ),
        note="LeNet-300-100 on MNIST, one dense net per seed shared by every point (jp.run_sweep), "
        "trained for 0.25 epoch (2 seeds) or 10 epochs (1 seed), then 2 epochs of fine-tuning per "
        "point; MT = 0.03% of all prunable weights (80) per layer. Which layer Global MP starves, "
        "and how far, depends on how the trained magnitudes compare across layers, hence the two "
        "dense nets (the driver's defaults: 2 seeds, the config's 10 + 20 epochs).",
    ),
    Section(
        key="effective_sparsity",
        title="Effective vs direct sparsity",
        paper='Vysogorets & Kempe, "Connectivity Matters: Neural Network Pruning Through the Lens '
        'of Effective Sparsity"',
        claim="At high direct compression, randomly pruned networks lose most of their remaining "
        "connections to disconnection (effective compression far above direct, e.g. uniform "
        "quotas), and how much depends on the layerwise quotas (IGQ and ERK much less).",
        runs=(
            Run(
                "effective_sparsity",
                "effective_sparsity",
                "random pruning of LeNet-300-100 (shapes only, no training)",
                quick=("--seeds", "1", "--compressions", "10", "100", "--search-compression", "0"),
                full=("--seeds", "5"),
            ),
        ),
    ),
    Section(
        key="sanity_checks",
        title="Sanity checks of pruning at initialisation, random tickets",
        paper='Su et al., "Sanity-Checking Pruning Methods: Random Tickets can Win the Jackpot"',
        claim="SNIP's and GraSP's masks survive layerwise shuffling and scoring on corrupted data "
        "(so they contribute only layerwise sparsities), and data-free random tickets with "
        "smart-ratio quotas match them.",
        runs=(
            Run(
                "sanity_checks_snip",
                "sanity_checks",
                "SNIP",
                quick=(
                    "--smoke",
                    "--sparsities",
                    "0.9",
                    "--seeds",
                    "1",
                    "--variants",
                    "original",
                    "shuffle_layerwise",
                ),
                full=(
                    "--method",
                    "snip",
                    "--sparsities",
                    "0.98",
                    "--seeds",
                    "1",
                    "--epochs",
                    "0.5",
                    "--variants",
                    "original",
                    "shuffle_layerwise",
                    "random_labels",
                    "random_ticket",
                ),
            ),
            Run(
                "sanity_checks_grasp",
                "sanity_checks",
                "GraSP",
                quick=None,
                full=(
                    "--method",
                    "grasp",
                    "--sparsities",
                    "0.98",
                    "--seeds",
                    "1",
                    "--epochs",
                    "0.5",
                    "--variants",
                    "original",
                    "shuffle_layerwise",
                ),
            ),
        ),
        note="LeNet-5 on MNIST at 98% sparsity, half an epoch per run, 1 seed, four variants for "
        "SNIP and two for GraSP (the driver's docstring: 2 epochs, 2 seeds, more variants, about "
        "50 minutes).",
    ),
    Section(
        key="rethinking",
        title="Fine-tuning vs training from scratch",
        paper='Liu et al., "Rethinking the Value of Network Pruning"',
        claim="The pruned architecture trained from a fresh initialisation with the large "
        "model's compute budget (Scratch-B) matches or beats fine-tuning the pruned weights.",
        runs=(
            Run(
                "rethinking",
                "rethinking",
                "LeNet-5 on MNIST",
                quick=(
                    "--smoke",
                    "--pruning",
                    "l1_filter",
                    "--seeds",
                    "1",
                    "--flows",
                    "prune_finetune",
                    "scratch_b",
                ),
                full=("--pruning", "l1_filter", "--seeds", "1", "--epochs", "0.5"),
            ),
        ),
        note="L1-norm filter pruning to half width only; large model 0.5 epoch, fine-tuning "
        "0.125 epoch, Scratch-E 0.5, Scratch-B 1 epoch, 1 seed (the driver's docstring: also 90% "
        "magnitude pruning, 1 epoch, 2 seeds, about 30 minutes).",
    ),
    Section(
        key="large_sparse_small_dense",
        title="Large-sparse vs small-dense",
        paper='Zhu & Gupta, "To prune, or not to prune: exploring the efficacy of pruning for '
        'model compression"',
        claim="At the same number of nonzero weights, a large model pruned gradually beats a "
        "small dense model, more so the smaller the budget.",
        runs=(
            Run(
                "large_sparse_small_dense",
                "large_sparse_small_dense",
                "LeNet-300-100 on MNIST",
                quick=("--smoke", "--sparsities", "0.9"),
                full=("--epochs", "5", "--seeds", "1"),
            ),
        ),
    ),
    Section(
        key="gradual_vs_oneshot",
        title="Gradual vs one-shot pruning",
        paper='Zhu & Gupta, "To prune, or not to prune: exploring the efficacy of pruning for '
        'model compression"',
        claim="Pruning gradually during training on the cubic schedule reaches a given sparsity "
        "at least as accurately as pruning once and fine-tuning, for the same training steps.",
        runs=(
            Run(
                "gradual_vs_oneshot",
                "gradual_vs_oneshot",
                "LeNet-300-100 on MNIST, Global MP + MT",
                quick=("--smoke", "--seeds", "1"),
                full=("--epochs", "6", "--seeds", "2"),
            ),
        ),
        note="6 epochs (2,808 steps) per run, one-shot = 2 dense + 4 fine-tuning epochs (the "
        "driver's default: 30 epochs).",
    ),
)


def runs_of(quick: bool) -> list[tuple[Section, Run]]:
    """The (section, run) pairs of a mode, in report order."""
    return [
        (section, run)
        for section in SECTIONS
        for run in section.runs
        if (run.quick if quick else run.full) is not None
    ]


def run_argv(run: Run, quick: bool, out: Path) -> list[str]:
    """The driver arguments of ``run``, ``--out`` its folder under ``out/runs``."""
    args = run.quick if quick else run.full
    return [*args, "--out", str(out / "runs" / run.name)]


def command(run: Run, argv: Sequence[str]) -> str:
    """The shell command that reproduces ``run`` alone (paths relative to the current folder)."""
    shown = []
    for arg in argv:
        path = Path(arg)
        if path.is_absolute():
            with contextlib.suppress(ValueError):
                arg = str(path.relative_to(Path.cwd()))
        shown.append(arg)
    return shlex.join(["python", f"experiments/{run.module}.py", *shown])


def markdown_of(run: Run, result: dict[str, Any]) -> str:
    """The Markdown table of a driver's result."""
    module = importlib.import_module(f"experiments.{run.module}")
    rows = result["rows"]
    if run.module == "effective_sparsity":
        return module.markdown_table(rows, result["search_rows"])
    if run.module == "sanity_checks":
        return module.markdown_table(rows, list(dict.fromkeys(r["variant"] for r in rows)))
    if run.module == "rethinking":
        return result["table"]
    return module.markdown_table(rows)


@contextlib.contextmanager
def compilation_cache() -> Iterator[str | None]:
    """JAX's persistent compilation cache on while inside; the previous setting after.

    The folder is ``JAXPRUNE_COMPILATION_CACHE`` (``off`` to disable), else
    ``~/.cache/jaxprune/xla``, as for ``python -m jaxprune.main``.
    """
    import jax
    from jax.experimental.compilation_cache import compilation_cache as cc

    from jaxprune.compilation_cache import ENV, enable_compilation_cache

    if os.environ.get(ENV, "x").strip().lower() in ("", "0", "off", "none"):
        yield None
        return
    names = (
        "jax_compilation_cache_dir",
        "jax_persistent_cache_min_compile_time_secs",
        "jax_persistent_cache_min_entry_size_bytes",
    )
    before = {name: getattr(jax.config, name) for name in names}
    cc.reset_cache()  # JAX decides once per process whether to use the cache; decide again
    path = enable_compilation_cache()
    try:
        yield path
    finally:
        for name, value in before.items():
            jax.config.update(name, value)
        cc.reset_cache()


def _load_timings(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.exists() else {}


def _copy_outputs(run: Run, run_dir: Path, out: Path) -> tuple[list[str], list[str]]:
    """Copies the run's top-level CSVs and PNGs into ``out``; their new names (csvs, pngs)."""
    copied: dict[str, list[str]] = {".csv": [], ".png": []}
    for suffix, names in copied.items():
        for path in sorted(run_dir.glob(f"*{suffix}")):
            stem = path.stem if path.stem != run.module else ""
            name = f"{run.name}_{stem}{suffix}" if stem else f"{run.name}{suffix}"
            shutil.copyfile(path, out / name)
            names.append(name)
    return copied[".csv"], copied[".png"]


def _seeds(rows: list[dict[str, Any]]) -> str:
    seeds = sorted({int(r["seed"]) for r in rows})
    return ", ".join(map(str, seeds))


def _minutes(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds:.0f} s ({seconds / 60:.1f} min)"


def _header(
    quick: bool, argv: Sequence[str], info: dict[str, Any], wall: float, total: float
) -> str:
    versions = info.get("versions") or {}
    devices = info.get("devices") or {}
    git = info.get("git") or {}
    mode = (
        "quick (`--quick`: every driver's smoke settings, a few training steps per run; the "
        "numbers test the plumbing, not the papers)"
        if quick
        else "full (the CPU-scale reproduction; each section says where its settings are "
        "shorter than its driver's docstring)"
    )
    commit = git.get("commit")
    commit_text = f"`{commit}`" + (" (with uncommitted changes)" if git.get("dirty") else "")
    lines = [
        "# jaxprune: the seed papers' claims, reproduced at CPU scale",
        "",
        f"Generated by `{shlex.join(['python', 'experiments/report.py', *argv])}` on "
        f"{datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}. Mode: {mode}.",
        "",
        f"Total wall time: {_minutes(wall)} in this invocation; {_minutes(total)} over all "
        "invocations into this folder (a rerun resumes finished runs from `runs/`).",
        "",
        "| | |",
        "|---|---|",
        f"| jaxprune | {versions.get('jaxprune')} |",
        f"| git commit | {commit_text if commit else 'unknown'} |",
        f"| jax / jaxlib | {versions.get('jax')} / {versions.get('jaxlib')} |",
        f"| flax / optax / orbax-checkpoint | {versions.get('flax')} / {versions.get('optax')} / "
        f"{versions.get('orbax-checkpoint')} |",
        f"| numpy / python | {versions.get('numpy')} / {versions.get('python')} |",
        f"| devices | {devices.get('count')} x {devices.get('kind')} ({devices.get('platform')})"
        f", {os.cpu_count()} CPU cores, {platform.machine()} {platform.system()} |",
        "",
        "Every command below reproduces its table alone (it writes into the same run folders, so "
        "it reads finished runs back). Test accuracies are on the full 10,000-image MNIST test "
        "set, except in quick mode (the first 512 or 1,024 images).",
        "",
    ]
    lines += [f"{i}. [{s.title}](#{s.key})" for i, s in enumerate(SECTIONS, 1)]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Runs every driver and writes the report.

    Args:
      argv: ``[--quick] [--out DIR]``; ``None`` reads ``sys.argv``.

    Returns:
      ``{'path': report.md, 'out': DIR, 'runs': {name: {'argv', 'command', 'result', 'wall_s',
      'total_s', 'csvs', 'pngs', 'dir'}}, 'wall_s': float}``; ``result`` is what the driver's
      ``main`` returned.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke settings (seconds per run)")
    parser.add_argument("--out", type=Path, default=None, help="default: " + str(DEFAULT_OUT))
    args = parser.parse_args(argv)
    argv = list(sys.argv[1:] if argv is None else argv)
    out = args.out or (DEFAULT_QUICK_OUT if args.quick else DEFAULT_OUT)
    (out / "runs").mkdir(parents=True, exist_ok=True)
    timings_path = out / "runs" / "timings.json"
    timings = _load_timings(timings_path)

    from jaxprune.training.provenance import provenance

    start = time.perf_counter()
    done: dict[str, dict[str, Any]] = {}
    with compilation_cache():
        for _, run in runs_of(args.quick):
            driver_argv = run_argv(run, args.quick, out)
            module = importlib.import_module(f"experiments.{run.module}")
            print(f"== {run.name}: {command(run, driver_argv)}", flush=True)
            t0 = time.perf_counter()
            result = module.main(driver_argv)
            wall = time.perf_counter() - t0
            record = timings.get(run.name)
            if record is None or record["argv"] != driver_argv:
                record = {"argv": driver_argv, "invocations_s": []}
            record["invocations_s"].append(round(wall, 2))
            timings[run.name] = record
            timings_path.write_text(json.dumps(timings, indent=2) + "\n")
            csvs, pngs = _copy_outputs(run, out / "runs" / run.name, out)
            done[run.name] = {
                "argv": driver_argv,
                "command": command(run, driver_argv),
                "result": result,
                "wall_s": wall,
                "total_s": sum(record["invocations_s"]),
                "csvs": csvs,
                "pngs": pngs,
                "dir": out / "runs" / run.name,
            }
    wall = time.perf_counter() - start

    info = provenance()
    total = sum(r["total_s"] for r in done.values())
    text = [_header(args.quick, argv, info, wall, total)]
    for i, section in enumerate(SECTIONS, 1):
        text += [
            "",
            f'<a id="{section.key}"></a>',
            "",
            f"## {i}. {section.title}",
            "",
            f"**Paper:** {section.paper}.",
            "",
            f"**Claim:** {section.claim}",
        ]
        if section.note and not args.quick:
            text += ["", f"**Settings:** {section.note}"]
        for run in section.runs:
            if run.name not in done:
                continue
            entry = done[run.name]
            rows = entry["result"]["rows"]
            text += [
                "",
                f"### {run.label}",
                "",
                "```bash",
                entry["command"],
                "```",
                "",
                f"Seeds: {_seeds(rows)}. Wall time: {_minutes(entry['wall_s'])} in this "
                f"invocation, {_minutes(entry['total_s'])} over all invocations.",
                "",
                markdown_of(run, entry["result"]),
                "",
            ]
            text += [f"![{run.name}]({png})" for png in entry["pngs"]]
            text += ["", "Data: " + ", ".join(f"[{c}]({c})" for c in entry["csvs"]) + "."]
    path = out / "report.md"
    path.write_text("\n".join(text) + "\n")
    print(f"wrote {path} ({_minutes(wall)})")
    return {"path": path, "out": out, "runs": done, "wall_s": wall}


if __name__ == "__main__":
    main(sys.argv[1:])
