"""Sweeps (``jaxprune/sweep.py``): one dense net per seed, resumable points, table and plot."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import jaxprune as jp
from configs import lenet300_mnist_gmp
from jaxprune import sweep as sweep_lib
from jaxprune.training import runner

ROOT = Path(__file__).resolve().parent.parent
N_PRUNABLE = 784 * 300 + 300 * 100 + 100 * 10
GRID = {"pruning.sparsity": [0.9, 0.98]}


def _config():
    config = lenet300_mnist_gmp.get_config("smoke")
    config.training.steps, config.finetune.steps = 30, 10
    config.training.checkpoint_every = 0
    return config


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """The grid killed after 3 runs and rerun; a count of the runs each call trained."""
    workdir = tmp_path_factory.mktemp("sweep")
    calls = []
    original = runner.train_and_evaluate

    def counting(config, where, **kwargs):
        calls.append(Path(where))
        return original(config, where, **kwargs)

    runner.train_and_evaluate = counting
    try:
        first = sweep_lib.sweep(_config(), workdir, GRID, seeds=2, stop_after=3)
        trained_first = list(calls)
        second = sweep_lib.sweep(_config(), workdir, GRID, seeds=2)
    finally:
        runner.train_and_evaluate = original
    return workdir, first, trained_first, second, calls[len(trained_first) :]


def test_the_dense_net_is_trained_once_per_seed_and_shared(swept):
    workdir, _, _, second, _ = swept
    assert sorted(p.name for p in (workdir / "dense").iterdir()) == ["seed_0", "seed_1"]
    assert len(second.rows) == 2 * 2
    for row in second.rows:
        run_dir = Path(row["workdir"])
        config = json.loads((run_dir / "config.json").read_text())
        assert config["init_from"] == f"{workdir / 'dense' / ('seed_' + str(row['seed']))}:dense"
        assert config["seed"] == row["seed"]
        summary = json.loads((run_dir / "summary.json").read_text())
        assert summary["sparsity"]["kept"] == jp.n_keep_for(row["pruning.sparsity"], N_PRUNABLE)
        assert row["kept"] == summary["sparsity"]["kept"]
        assert summary["phases"]["dense"]["step"] == 30  # the shared dense phase's end


def test_a_killed_sweep_reruns_only_what_is_missing(swept):
    workdir, first, trained_first, second, trained_second = swept
    assert len(trained_first) == 3 and first.table == ""
    every = [workdir / "dense" / f"seed_{s}" for s in range(2)] + [
        Path(r["workdir"]) for r in second.rows
    ]
    assert sorted(map(str, trained_first + trained_second)) == sorted(map(str, every))
    assert second.ran == trained_second
    again = sweep_lib.sweep(_config(), workdir, GRID, seeds=2)  # nothing left to train
    assert again.ran == [] and again.rows == second.rows


def test_results_csv_table_and_plot(swept):
    workdir, _, _, second, _ = swept
    with (workdir / "results.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4
    assert set(rows[0]) >= {"pruning.sparsity", "seed", "test_accuracy", "effective_sparsity"}
    for row, result in zip(rows, second.rows, strict=True):
        assert float(row["test_accuracy"]) == result["test_accuracy"]
    table = (workdir / "results.md").read_text()
    assert table == second.table
    lines = table.splitlines()
    assert len(lines) == 2 + 2 and lines[0].startswith("| pruning.sparsity | seeds |")
    group = [r["test_accuracy"] for r in second.rows if r["pruning.sparsity"] == 0.9]
    mean, std = 100 * np.mean(group), 100 * np.std(group, ddof=1)
    assert f"| 0.9 | 2 | {mean:.2f} ± {std:.2f} |" in table
    png = workdir / "accuracy_vs_sparsity.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_changed_grid_or_config_is_refused(swept):
    workdir = swept[0]
    with pytest.raises(sweep_lib.SweepError, match="grid"):
        sweep_lib.sweep(_config(), workdir, {"pruning.sparsity": [0.5]}, seeds=2)
    other = _config()
    other.training.learning_rate = 0.5
    with pytest.raises(sweep_lib.SweepError, match="another config"):
        sweep_lib.sweep(other, workdir, GRID, seeds=2)


@pytest.mark.parametrize(
    "specs, message",
    [
        (["pruning.sparsity"], "--sweep must be FIELD=V1,V2,..., got 'pruning.sparsity'"),
        (["pruning.sparsty=0.9"], "--sweep pruning.sparsty: no such config field"),
        (["pruning.sparsity=0.9,high"], "--sweep pruning.sparsity: 'high' is not a float"),
        (["pruning.sparsity=0.9,0.9"], "repeated value"),
        (["seed=1", "seed=2"], "--sweep seed given twice"),
    ],
)
def test_bad_sweep_specs_name_the_field(specs, message):
    with pytest.raises(sweep_lib.SweepError) as info:
        sweep_lib.parse_sweeps(_config(), specs)
    assert message in str(info.value)


def test_an_invalid_point_is_refused_before_anything_trains(tmp_path):
    with pytest.raises(ValueError, match=r"pruning\.sparsity must be in \[0, 1\], got 1\.5"):
        sweep_lib.sweep(_config(), tmp_path / "s", {"pruning.sparsity": [0.9, 1.5]})
    assert not (tmp_path / "s").exists()


def test_an_infeasible_minimum_threshold_is_refused_before_anything_trains(tmp_path):
    with pytest.raises(ValueError, match=r"min_keep_fraction=0\.002 is infeasible .* 0\.995"):
        sweep_lib.sweep(_config(), tmp_path / "s", {"pruning.sparsity": [0.9, 0.995]})
    assert not (tmp_path / "s").exists()


def test_parse_sweeps_types_follow_the_fields():
    grid = sweep_lib.parse_sweeps(
        _config(), ["pruning.sparsity=0.9,0.99", "seed=1,2", "pruning.score=magnitude,snip"]
    )
    assert grid == {
        "pruning.sparsity": [0.9, 0.99],
        "seed": [1, 2],
        "pruning.score": ["magnitude", "snip"],
    }


def test_command_line_sweep_errors_exit_2(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "jaxprune.sweep",
            "--config=configs/lenet300_mnist_gmp.py:smoke",
            f"--workdir={tmp_path}",
            "--sweep=pruning.sparsity=0.9,x",
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "jaxprune.sweep: error: --sweep pruning.sparsity: 'x' is not a float"
    )


def _fake_rows():
    rows = []
    for score, base in (("magnitude", 0.97), ("snip", 0.95)):
        for sparsity in (0.9, 0.99):
            for seed in range(3):
                acc = base - 10 * (sparsity - 0.9) * (1 + (score == "snip")) + 0.001 * seed
                rows.append(
                    {
                        "pruning.sparsity": sparsity,
                        "pruning.score": score,
                        "seed": seed,
                        "test_accuracy": acc,
                        "pruned_accuracy": None,
                        "sparsity": sparsity,
                        "effective_sparsity": sparsity + 0.001,
                    }
                )
    return rows


def test_table_has_mean_and_std_per_point_and_dashes_for_missing():
    table = sweep_lib.markdown_table(_fake_rows(), ["pruning.sparsity", "pruning.score"])
    lines = table.splitlines()
    assert len(lines) == 2 + 4
    accs = [0.97 + 0.001 * s for s in range(3)]
    want = f"{100 * np.mean(accs):.2f} ± {100 * np.std(accs, ddof=1):.2f}"
    assert lines[2] == f"| 0.9 | magnitude | 3 | {want} | - | 90.00 ± 0.00 | 90.10 ± 0.00 |"


def test_plot_has_a_log_compression_axis_and_one_line_per_score(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    figures = []
    monkeypatch.setattr(plt, "close", figures.append)
    path = sweep_lib.plot_accuracy_vs_sparsity(
        _fake_rows(), ["pruning.sparsity", "pruning.score"], tmp_path / "a.png"
    )
    assert path.read_bytes()[:4] == b"\x89PNG"
    (ax,) = figures[0].axes
    assert ax.get_xscale() == "log"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["score=magnitude", "score=snip"]
    xs = sorted({round(x, 6) for line in ax.get_lines() for x in line.get_xdata()})
    assert xs == [10.0, 100.0]  # compression 1 / (1 - sparsity)
    assert (
        sweep_lib.plot_accuracy_vs_sparsity(_fake_rows(), ["pruning.score"], tmp_path / "b") is None
    )
