"""Fast checks of experiments/sanity_checks.py and experiments/rethinking.py (smoke runs)."""

import csv

import matplotlib.image
import pytest

from experiments import rethinking, sanity_checks

LENET5_MACS = 24 * 24 * 25 * 20 + 8 * 8 * 25 * 20 * 50 + 800 * 500 + 500 * 10  # 2,293,000
LENET5_HALF_MACS = 24 * 24 * 25 * 10 + 8 * 8 * 25 * 10 * 25 + 400 * 250 + 250 * 10  # widths / 2


def _read_csv(path):
    with path.open() as f:
        reader = csv.DictReader(f)
        return tuple(reader.fieldnames), list(reader)


def test_sanity_checks_smoke_writes_csv_plot_and_table(tmp_path):
    result = sanity_checks.main(
        ["--smoke", "--sparsities", "0.9", "--seeds", "1", "--out", str(tmp_path)]
        + ["--variants", "original", "shuffle_layerwise"]
    )
    fields, rows = _read_csv(tmp_path / "sanity_checks.csv")
    assert fields == sanity_checks.CSV_COLUMNS
    assert [(r["variant"], float(r["sparsity"])) for r in rows] == [
        ("original", 0.9),
        ("shuffle_layerwise", 0.9),
    ]
    # LeNet-5 has 430,500 prunable weights; both variants keep exactly round(0.1 * N).
    assert [int(r["kept"]) for r in rows] == [43_050, 43_050]
    for row, returned in zip(rows, result["rows"], strict=True):
        assert float(row["test_accuracy"]) == pytest.approx(returned["test_accuracy"])
    assert "shuffle_layerwise" in result["table"] and "s=0.9" in result["table"]
    image = matplotlib.image.imread(tmp_path / "sanity_checks.png")
    assert image.shape[0] > 100 and image.shape[1] > 100


def test_sanity_variants_and_configs():
    # Data corruptions only vary data-dependent scores; random tickets are their own baseline.
    assert sanity_checks.variants_for("synflow", sanity_checks.VARIANTS) == [
        "original",
        "shuffle_layerwise",
        "reinit",
        "shuffle_weights",
        "random_ticket",
    ]
    assert "random_ticket" not in sanity_checks.variants_for("random_ticket", ["random_ticket"])
    base = sanity_checks.SETTINGS["lenet5"].get_config("smoke")
    config = sanity_checks.variant_config(base, "grasp", "random_pixels", 0.95, seed=3)
    assert (config.pruning.score, config.sanity.mask_data, config.seed) == (
        "grasp",
        "random_pixels",
        3,
    )
    assert config.pruning.sparsity == 0.95 and base.pruning.sparsity != 0.95  # base untouched
    ticket = sanity_checks.variant_config(base, "grasp", "random_ticket", 0.9, seed=0)
    assert (ticket.pruning.score, ticket.pruning.selection, ticket.pruning.quota) == (
        "random",
        "layerwise",
        "smart_ratio",
    )
    with pytest.raises(ValueError, match="unknown variant 'shuffle'"):
        sanity_checks.variant_config(base, "snip", "shuffle", 0.9, seed=0)
    with pytest.raises(ValueError, match="--method must be one of"):
        sanity_checks.main(["--method", "obd"])


def test_rethinking_smoke_table_with_flops(tmp_path):
    result = rethinking.main(
        ["--smoke", "--pruning", "l1_filter", "--seeds", "1", "--out", str(tmp_path)]
        + ["--flows", "prune_finetune", "scratch_b"]
    )
    fields, rows = _read_csv(tmp_path / "rethinking.csv")
    assert fields == rethinking.CSV_COLUMNS
    assert [r["flow"] for r in rows] == ["prune_finetune", "scratch_b"]
    for row in rows:
        assert int(row["flops_dense"]) == LENET5_MACS
        assert int(row["flops"]) == LENET5_HALF_MACS
    # Same seed, same deterministic large-model training in both runs.
    assert rows[0]["large_accuracy"] == rows[1]["large_accuracy"]
    # Smoke: 30 dense steps; fine-tune 10; Scratch-B 30 * min(2, 2,293,000 / 646,500) = 60.
    assert [int(r["steps"]) for r in rows] == [40, 90]
    assert "-71.8%" in result["table"]  # FLOPs reduction of half the LeNet-5 widths
    assert (tmp_path / "rethinking.md").read_text().strip() == result["table"]


def test_rethinking_config_errors():
    config = rethinking.run_config("resnet56_b", "l1_filter", "scratch_e", 2, True, None)
    assert (config.flow, config.seed, config.structured.method) == ("scratch_e", 2, "l1_filter")
    assert config.structured.ratios[0] == (r"^BasicBlock_[0-8]/", 0.6)
    long = rethinking.run_config("lenet5", "magnitude", "prune_finetune", 0, False, 4.0)
    assert (long.training.epochs, long.finetune.epochs) == (4.0, 1.0)
    with pytest.raises(ValueError, match="unknown setting 'vgg'"):
        rethinking.run_config("vgg", "l1_filter", "scratch_e", 0, True, None)
    with pytest.raises(ValueError, match="has pruning"):
        rethinking.run_config("vgg16_a", "slimming", "scratch_e", 0, True, None)
