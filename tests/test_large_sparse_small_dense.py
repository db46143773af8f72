"""Config and argument checks of experiments/large_sparse_small_dense.py.

Its smoke run is checked in ``test_report.py``, on the quick report's outputs.
"""

import pytest

from experiments import large_sparse_small_dense as lsd


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
