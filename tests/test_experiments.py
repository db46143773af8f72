"""Fast checks of the experiment scripts in experiments/ (tiny settings)."""

import csv

import matplotlib.image
import numpy as np
import pytest

from experiments import effective_sparsity

N_PRUNABLE = 784 * 300 + 300 * 100 + 100 * 10  # LeNet-300-100 kernels: 266,200


def test_effective_sparsity_experiment_writes_csv_and_plot(tmp_path):
    result = effective_sparsity.main(
        ["--seeds", "1", "--compressions", "10", "100", "--search-compression", "0"]
        + ["--out", str(tmp_path)]
    )
    with (tmp_path / "effective_sparsity.csv").open() as f:
        reader = csv.DictReader(f)
        rows = list(reader)
    assert tuple(reader.fieldnames) == effective_sparsity.CSV_COLUMNS
    assert [(r["quota"], r["seed"], float(r["target_compression"])) for r in rows] == [
        (quota, "0", c) for quota in ("uniform", "erk", "igq") for c in (10.0, 100.0)
    ]
    for row in rows:
        kept, eff_kept = int(row["kept"]), int(row["effective_kept"])
        assert int(row["total"]) == N_PRUNABLE
        # Exact counts: every layer keeps round((1 - s) * n), so the total is within 3 of k.
        assert abs(kept - N_PRUNABLE / float(row["target_compression"])) <= 3
        assert 0 < eff_kept <= kept and row["disconnected"] == "False"
        assert float(row["direct_compression"]) == pytest.approx(N_PRUNABLE / kept)
        assert float(row["effective_compression"]) == pytest.approx(N_PRUNABLE / eff_kept)
        assert float(row["effective_compression"]) >= float(row["direct_compression"])
    # Uniform random pruning at 100x leaves few input-output paths (the paper's ~1000x).
    uniform_100 = [
        r for r in rows if r["quota"] == "uniform" and r["target_compression"] == "100.0"
    ]
    assert float(uniform_100[0]["effective_compression"]) > 300
    assert result["mean_effective_compression"]["uniform"] == pytest.approx(
        float(uniform_100[0]["effective_compression"])
    )
    assert not (tmp_path / "effective_target.csv").exists()
    image = matplotlib.image.imread(tmp_path / "effective_sparsity.png")
    assert image.shape[:2] == (400, 1100) and np.ptp(image[..., :3]) > 0
