"""Fast check of experiments/large_sparse_small_dense.py (smoke runs, one sparsity)."""

import csv

import matplotlib.image
import pytest

from experiments import large_sparse_small_dense as lsd

N_PRUNABLE = 784 * 300 + 300 * 100 + 100 * 10  # LeNet-300-100 kernels: 266,200


def _lenet300_kernels(width: float) -> int:
    """LeNet-300-100 kernel count at ``width``, computed by hand (layers round(c * width))."""
    hidden = [max(1, round(300 * width)), max(1, round(100 * width))]
    return 784 * hidden[0] + hidden[0] * hidden[1] + hidden[1] * 10


def test_smoke_run_writes_matched_rows_and_plot(tmp_path):
    result = lsd.main(["--smoke", "--sparsities", "0.9", "--out", str(tmp_path)])
    with (tmp_path / "large_sparse_small_dense.csv").open() as f:
        reader = csv.DictReader(f)
        rows = list(reader)
    assert tuple(reader.fieldnames) == lsd.CSV_COLUMNS
    assert [(r["model"], r["kind"], float(r["sparsity"]), r["seed"]) for r in rows] == [
        ("lenet300", "large_sparse", 0.9, "0"),
        ("lenet300", "small_dense", 0.9, "0"),
    ]
    sparse, dense = rows
    # Global MP + MT keeps exactly round(0.1 * 266,200) kernel weights.
    assert float(sparse["width"]) == 1.0
    assert int(sparse["nonzero_params"]) == round(0.1 * N_PRUNABLE) == 26_620
    # The small dense net's kernel count matches the sparse net's nonzeros within 3%.
    width = float(dense["width"])
    assert 0.08 < width < 0.15
    assert int(dense["nonzero_params"]) == _lenet300_kernels(width)
    assert abs(int(dense["nonzero_params"]) - 26_620) <= 0.03 * 26_620
    for row in rows:
        assert 0.0 <= float(row["test_accuracy"]) <= 1.0
    # Each run's summary agrees with the CSV (accuracy evaluated on the 1,024-example limit).
    assert [r["test_accuracy"] for r in result["rows"]] == pytest.approx(
        [float(r["test_accuracy"]) for r in rows]
    )
    for row in result["rows"]:
        assert row["test_accuracy"] * 1024 == pytest.approx(round(row["test_accuracy"] * 1024))
    image = matplotlib.image.imread(tmp_path / "large_sparse_small_dense.png")
    assert image.shape[0] > 100 and image.shape[1] > 100
    assert "0.90" in result["table"] and "26,620" in result["table"]


def test_small_dense_config_is_dense_at_width_with_same_steps():
    base = lsd.base_config("lenet5", smoke=False)
    steps = lsd.total_steps(base, epochs=2.0)
    assert steps == 2 * (60_000 // 128) == 936
    sparse = lsd.large_sparse_config(base, 0.75, steps, seed=3, smoke=False)
    dense = lsd.small_dense_config(base, 0.5, steps, seed=3, smoke=False)
    assert (sparse.flow, dense.flow) == ("gradual", "dense")
    assert (sparse.model.name, dense.model.name) == ("lenet5", "lenet5")
    assert (sparse.model.width, dense.model.width) == (1.0, 0.5)
    assert sparse.training.steps == dense.training.steps == 936
    assert sparse.seed == dense.seed == 3
    schedule = sparse.pruning.schedule
    assert schedule.final_sparsity == 0.75
    # The base window 1000..6000 of 9,360 steps, scaled to 936 steps; 20 updates.
    assert (schedule.begin_step, schedule.end_step, schedule.frequency) == (100, 600, 25)


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["--model", "vgg16"], "--model must be one of"),
        (["--sparsities", "1.0"], "--sparsities must all be in"),
        (["--seeds", "0"], "--seeds must be >= 1"),
        (["--epochs", "0"], "--epochs must be > 0"),
    ],
)
def test_bad_arguments_raise(argv, match, tmp_path):
    with pytest.raises(ValueError, match=match):
        lsd.main([*argv, "--out", str(tmp_path)])
