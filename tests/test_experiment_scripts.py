"""Argument and config checks of experiments/sanity_checks.py and experiments/rethinking.py.

Their smoke runs are checked in ``test_report.py``, on the quick report's outputs.
"""

import pytest

from experiments import rethinking, sanity_checks


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
