"""Su et al.'s sanity checks wired into the run: corrupted mask data, shuffles, reinit, tickets.

Each test builds the first state of a 'prune_at_init' run (mask computation plus the sanity
edits, no training) and compares it with the unedited run of the same seed.
"""

import math

import jax
import ml_collections
import numpy as np
import pytest

from configs import lenet5_mnist_sanity
from jaxprune import training
from jaxprune.training import prune, runner

LAYERS = ("Dense_0", "Dense_1", "Dense_2")
SIZES = {"Dense_0": 784 * 300, "Dense_1": 300 * 100, "Dense_2": 100 * 10}


def _config(method="snip", **overrides) -> ml_collections.ConfigDict:
    config = lenet5_mnist_sanity.get_config(f"{method},smoke")
    config.model.name = "lenet300"  # small and quick to compile; same flow
    config.pruning.sparsity = 0.95
    config.update_from_flattened_dict(overrides)
    return config


_CACHE = {}


def _first_state(tmp_path_factory, method="snip", **overrides):
    """(masks, params) of the pruned initial state (cached per config)."""
    key = (method, tuple(sorted(overrides.items())))
    if key not in _CACHE:
        config = _config(method, **overrides)
        training.validate_config(config)
        run = runner.Runner(config, tmp_path_factory.mktemp("sanity"))
        try:
            state = jax.device_get(run.start_phase(0, None))
        finally:
            run.ctx.ckpt.close()
        masks = {n: np.asarray(state.masks[n]["kernel"]) for n in LAYERS}
        params = {n: np.asarray(state.params[n]["kernel"]) for n in LAYERS}
        biases = {n: np.asarray(state.masks[n]["bias"]) for n in LAYERS}
        _CACHE[key] = (masks, params, biases)
    return _CACHE[key]


def test_shuffle_layerwise_keeps_counts_and_moves_positions(tmp_path_factory):
    masks, _, _ = _first_state(tmp_path_factory)
    shuffled, params, biases = _first_state(tmp_path_factory, **{"sanity.shuffle_layerwise": True})
    assert sum(m.sum() for m in masks.values()) == round(0.05 * sum(SIZES.values()))
    for name in LAYERS:
        assert shuffled[name].sum() == masks[name].sum()  # same count per layer
        overlap = (shuffled[name] & masks[name]).sum()
        expected = masks[name].sum() ** 2 / masks[name].size  # chance overlap
        assert overlap < 0.5 * masks[name].sum() + 3 * math.sqrt(expected) + 2
        assert np.all(params[name][~shuffled[name]] == 0)
        assert biases[name].all()


def test_random_labels_change_the_snip_mask_not_its_size(tmp_path_factory):
    masks, _, _ = _first_state(tmp_path_factory)
    corrupted, _, _ = _first_state(tmp_path_factory, **{"sanity.mask_data": "random_labels"})
    total = sum(m.sum() for m in masks.values())
    assert sum(m.sum() for m in corrupted.values()) == total
    same = sum((m & corrupted[n]).sum() for n, m in masks.items())
    assert same < 0.9 * total  # different labels -> different gradients -> different mask


def test_reinit_keeps_mask_and_redraws_weights(tmp_path_factory):
    masks, params, _ = _first_state(tmp_path_factory)
    masks_r, params_r, _ = _first_state(tmp_path_factory, **{"sanity.reinit": True})
    for name in LAYERS:
        np.testing.assert_array_equal(masks_r[name], masks[name])
        kept = masks[name]
        assert np.all(params_r[name][~kept] == 0)
        assert np.mean(params_r[name][kept] != params[name][kept]) > 0.99
        # A fresh draw of Flax's LeCun-normal init, unselected: std 1 / sqrt(fan_in).
        fan_in = params[name].shape[0]
        assert np.std(params_r[name][kept]) == pytest.approx(fan_in**-0.5, rel=0.15)


def test_shuffle_weights_permutes_surviving_values(tmp_path_factory):
    masks, params, _ = _first_state(tmp_path_factory)
    masks_s, params_s, _ = _first_state(tmp_path_factory, **{"sanity.shuffle_weights": True})
    for name in LAYERS:
        np.testing.assert_array_equal(masks_s[name], masks[name])
        kept = masks[name]
        np.testing.assert_array_equal(np.sort(params_s[name][kept]), np.sort(params[name][kept]))
        assert np.mean(params_s[name][kept] != params[name][kept]) > 0.9
        assert np.all(params_s[name][~kept] == 0)


def _smart_ratio_counts(sparsity):
    """Per-layer kept counts of smart ratio on LeNet-300-100, solved by hand (L = 3)."""
    raw = {"Dense_0": (9 + 3) / 1, "Dense_1": (4 + 2) / 4}  # ((L-l+1)^2 + (L-l+1)) / l^2
    budget = (1 - sparsity) * sum(SIZES.values()) - 0.3 * SIZES["Dense_2"]
    scale = budget / sum(raw[n] * SIZES[n] for n in raw)
    keep = {n: min(1.0, scale * raw[n]) for n in raw}
    keep["Dense_2"] = 0.3
    return {n: round(keep[n] * SIZES[n]) for n in LAYERS}


def test_random_and_hybrid_tickets_use_smart_ratio_counts(tmp_path_factory):
    random_masks, _, _ = _first_state(tmp_path_factory, "random_ticket")
    hybrid_masks, hybrid_params, _ = _first_state(tmp_path_factory, "hybrid_ticket")
    expected = _smart_ratio_counts(0.95)
    for name in LAYERS:
        assert abs(int(random_masks[name].sum()) - expected[name]) <= 1
        assert hybrid_masks[name].sum() == random_masks[name].sum()
    assert random_masks["Dense_2"].sum() == 300
    # Hybrid: the largest initial magnitudes inside each layer; the initial weights are those
    # of the snip run's state where both masks keep them (same seed, same init).
    _, snip_params, _ = _first_state(tmp_path_factory)
    snip_masks, _, _ = _first_state(tmp_path_factory)
    for name in LAYERS:
        kept = hybrid_masks[name]
        smallest_kept = np.abs(hybrid_params[name][kept]).min()
        both = snip_masks[name] & ~kept
        assert np.all(np.abs(snip_params[name][both]) <= smallest_kept)


def test_smart_ratio_residual_defaults_to_the_model_family():
    config = _config("random_ticket")
    assert prune.quota_options(config.pruning, "lenet300")["residual"] is False
    assert prune.quota_options(config.pruning, "resnet32")["residual"] is True
    config.pruning.smart_ratio.residual = False
    assert prune.quota_options(config.pruning, "resnet32")["residual"] is False
    config.pruning.smart_ratio.ratio = "cubic"
    assert prune.quota_options(config.pruning, "lenet5")["ratio"] == "cubic"
    config.pruning.quota = "igq"
    assert prune.quota_options(config.pruning, "lenet5") == {}


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"sanity.mask_data": "noise"}, r"sanity\.mask_data must be one of .*got 'noise'"),
        ({"flow": "dense", "sanity.mask_data": "half_data"}, r"sanity\.mask_data='half_data' "),
        ({"flow": "gradual", "sanity.shuffle_layerwise": True}, r"sanity\.shuffle_layerwise "),
        ({"pruning.smart_ratio.ratio": "quartic"}, r"pruning\.smart_ratio\.ratio must be one"),
    ],
)
def test_sanity_config_errors(overrides, message):
    config = _config()
    config.update_from_flattened_dict(overrides)
    with pytest.raises(ValueError, match=message):
        training.validate_config(config)
