"""Su et al. sanity checks: layerwise mask shuffle, reinit (+ fan-in scaling), weight shuffle, and
the data corruptions used to compute masks from corrupted data."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxprune.data import corrupt as corrupt_lib
from jaxprune.pruning import sanity
from jaxprune.pruning.select import apply_mask

KEY = jax.random.key(0, impl="rbg")


def hand_mask():
    rng = np.random.default_rng(0)
    return {
        "Dense_0": {"kernel": rng.random((6, 5)) < 0.4, "bias": np.ones(5, bool)},
        "Conv_0": {"kernel": rng.random((3, 3, 2, 4)) < 0.3, "bias": np.ones(4, bool)},
    }


def hand_params():
    rng = np.random.default_rng(1)
    shapes = {"Dense_0": (6, 5), "Conv_0": (3, 3, 2, 4)}
    return {
        name: {
            "kernel": rng.normal(size=shape).astype(np.float32),
            "bias": rng.normal(size=shape[-1]).astype(np.float32),
        }
        for name, shape in shapes.items()
    }


def leaves(tree):
    return [np.asarray(x) for x in jax.tree.leaves(tree)]


# ---------------------------------------------------------------- shuffle_layerwise


def test_shuffle_layerwise_keeps_counts_moves_positions_and_leaves_biases():
    mask = hand_mask()
    out = sanity.shuffle_layerwise(KEY, mask)
    assert jax.tree.structure(out) == jax.tree.structure(mask)
    for name in mask:
        got, ref = np.asarray(out[name]["kernel"]), mask[name]["kernel"]
        assert got.dtype == bool and got.shape == ref.shape
        assert got.sum() == ref.sum()
        assert (got != ref).any()
        np.testing.assert_array_equal(out[name]["bias"], mask[name]["bias"])
    other = sanity.shuffle_layerwise(jax.random.fold_in(KEY, 1), mask)
    assert any((a != b).any() for a, b in zip(leaves(out), leaves(other), strict=True))
    again = sanity.shuffle_layerwise(KEY, mask)
    for a, b in zip(leaves(out), leaves(again), strict=True):
        np.testing.assert_array_equal(a, b)


def test_shuffle_layerwise_respects_prunable_and_per_leaf_keys():
    mask = hand_mask()
    only_dense = sanity.shuffle_layerwise(KEY, mask, prunable="Dense")
    np.testing.assert_array_equal(only_dense["Conv_0"]["kernel"], mask["Conv_0"]["kernel"])
    both = sanity.shuffle_layerwise(KEY, mask)
    # fold_in(key, leaf_index): the Dense leaf draws the same permutation either way.
    np.testing.assert_array_equal(only_dense["Dense_0"]["kernel"], both["Dense_0"]["kernel"])


def test_shuffle_layerwise_is_a_uniform_flat_permutation():
    # One 4x5 layer with 5 kept entries in the first row: over many keys every position must be
    # kept with probability 5/20, including positions in other rows and columns.
    mask = {"kernel": np.zeros((4, 5), bool)}
    mask["kernel"][0] = True
    keys = jax.random.split(KEY, 4000)
    shuffled = jax.vmap(lambda k: sanity.shuffle_layerwise(k, mask)["kernel"])(keys)
    assert (np.asarray(shuffled).sum(axis=(1, 2)) == 5).all()
    freq = np.asarray(shuffled).mean(axis=0)
    # std of one frequency = sqrt(.25 * .75 / 4000) ~ 0.0068; 5 sigma.
    np.testing.assert_allclose(freq, 0.25, atol=0.035)


@st.composite
def masks(draw):
    n_leaves = draw(st.integers(1, 3))
    tree = {}
    for i in range(n_leaves):
        # Few distinct sizes: each new size costs one compilation.
        shape = tuple(draw(st.lists(st.sampled_from([1, 2, 5]), min_size=2, max_size=3)))
        seed = draw(st.integers(0, 2**31 - 1))
        density = draw(st.floats(0.0, 1.0))
        tree[f"layer_{i}"] = np.random.default_rng(seed).random(shape) < density
    tree["bias"] = np.ones(3, bool)
    return tree


@settings(max_examples=30, deadline=None, derandomize=True)
@given(masks(), st.integers(0, 2**31 - 1))
def test_shuffle_layerwise_property(mask, seed):
    # The leaves are not named 'kernel': name the prunable ones explicitly.
    out = sanity.shuffle_layerwise(jax.random.key(seed, impl="rbg"), mask, prunable=r"^layer_")
    np.testing.assert_array_equal(out["bias"], mask["bias"])
    for name, ref in mask.items():
        got = np.asarray(out[name])
        assert got.shape == ref.shape and got.dtype == bool
        assert got.sum() == ref.sum(), name
        n, k = ref.size, int(ref.sum())
        if math.comb(n, k) > 10**6:  # an unchanged arrangement has probability < 1e-6
            assert (got != ref).any(), name


# ---------------------------------------------------------------- reinit


def init_fn(key):
    k1, k2, k3 = jax.random.split(key, 3)
    return {
        "Dense_0": {
            "kernel": jax.random.normal(k1, (6, 5)),
            "bias": jax.random.normal(k2, (5,)),
        },
        "Conv_0": {"kernel": jax.random.normal(k3, (3, 3, 2, 4)), "bias": jnp.zeros(4)},
    }


def test_reinit_keeps_mask_and_draws_new_values():
    mask = hand_mask()
    original = init_fn(KEY)
    new = sanity.reinit(jax.random.fold_in(KEY, 7), init_fn, mask)
    for p, o, m in zip(leaves(new), leaves(original), leaves(mask), strict=True):
        assert (p[~m] == 0).all()
        if m.any() and np.abs(o).sum() > 0:
            assert (p[m] != o[m]).all()
    # Same key as the original init: exactly the masked original.
    same = sanity.reinit(KEY, init_fn, mask)
    for a, b in zip(leaves(same), leaves(apply_mask(original, mask)), strict=True):
        np.testing.assert_array_equal(a, b)


def test_reinit_scale_fan_in_matches_numpy():
    w = np.arange(1, 13, dtype=np.float32).reshape(4, 3)
    conv = np.linspace(-1, 1, 2 * 2 * 3 * 2, dtype=np.float32).reshape(2, 2, 3, 2)
    params = {"dense": w, "conv": conv, "bias": np.full(3, 5.0, np.float32)}
    mask = {
        # kept per column: 4, 1, 0
        "dense": np.array([[1, 1, 0], [1, 0, 0], [1, 0, 0], [1, 0, 0]], bool),
        "conv": np.random.default_rng(3).random(conv.shape) < 0.5,
        "bias": np.array([True, False, True]),
    }
    prunable = r"^(dense|conv)$"  # not named 'kernel'
    out = sanity.reinit(KEY, lambda key: params, mask, scale_fan_in=True, prunable=prunable)
    expected_dense = w * mask["dense"] * np.array([1.0, 2.0, 0.0], np.float32)
    np.testing.assert_allclose(out["dense"], expected_dense, rtol=1e-6)
    kept = mask["conv"].reshape(-1, 2).sum(axis=0)
    scale = np.where(kept > 0, np.sqrt(12 / np.maximum(kept, 1)), 0)
    np.testing.assert_allclose(out["conv"], conv * mask["conv"] * scale, rtol=1e-6)
    # A bias is masked but not rescaled; without scale_fan_in nothing is rescaled.
    np.testing.assert_array_equal(out["bias"], [5.0, 0.0, 5.0])
    plain = sanity.reinit(KEY, lambda key: params, mask, prunable=prunable)
    np.testing.assert_array_equal(plain["dense"], w * mask["dense"])


def test_reinit_scale_fan_in_restores_std_at_90_percent_sparsity():
    shape = (1000, 200)
    lecun = jax.nn.initializers.lecun_normal()

    def init(key):
        return {"kernel": lecun(key, shape, jnp.float32)}

    dense_std = float(jnp.std(init(KEY)["kernel"]))
    mask = {"kernel": np.random.default_rng(0).random(shape) < 0.1}
    out = sanity.reinit(jax.random.fold_in(KEY, 1), init, mask, scale_fan_in=True)["kernel"]
    out = np.asarray(out)
    kept_std = out[mask["kernel"]].std()
    np.testing.assert_allclose(kept_std / dense_std, math.sqrt(1 / 0.1), rtol=0.05)
    # Per unit the variance is 1 / surviving fan-in (LeCun on the sparse fan-in), so every unit's
    # squared norm is ~1 even when the units' densities differ (a global rescale would fail this).
    density = np.linspace(0.05, 0.5, shape[1])
    mask = {"kernel": np.random.default_rng(1).random(shape) < density}
    out = sanity.reinit(jax.random.fold_in(KEY, 2), init, mask, scale_fan_in=True)["kernel"]
    out = np.asarray(out)
    sq_norm = (out**2).sum(axis=0)
    np.testing.assert_allclose(sq_norm[:50].mean(), 1.0, rtol=0.1)  # ~50-160 inputs survive
    np.testing.assert_allclose(sq_norm[-50:].mean(), 1.0, rtol=0.1)  # ~390-500 inputs survive


def test_reinit_mismatched_mask_raises():
    mask = hand_mask()
    del mask["Conv_0"]
    with pytest.raises(ValueError, match="mask does not have the structure"):
        sanity.reinit(KEY, init_fn, mask)
    bad = hand_mask()
    bad["Dense_0"]["kernel"] = np.ones((5, 6), bool)
    with pytest.raises(ValueError, match="Dense_0/kernel"):
        sanity.reinit(KEY, init_fn, bad)


# ---------------------------------------------------------------- shuffle_weights


def test_shuffle_weights_permutes_surviving_values():
    params, mask = hand_params(), hand_mask()
    out = sanity.shuffle_weights(KEY, params, mask)
    for name in params:
        w, m = params[name]["kernel"], mask[name]["kernel"]
        got = np.asarray(out[name]["kernel"])
        assert got.dtype == w.dtype
        assert (got[~m] == 0).all()
        np.testing.assert_array_equal(np.sort(got[m]), np.sort(w[m]))
        assert (got[m] != w[m]).any()
        np.testing.assert_array_equal(out[name]["bias"], params[name]["bias"])
    other = sanity.shuffle_weights(jax.random.fold_in(KEY, 1), params, mask)
    assert any((a != b).any() for a, b in zip(leaves(out), leaves(other), strict=True))


def test_shuffle_weights_ignores_values_at_pruned_positions_and_is_uniform():
    w = np.arange(1.0, 7.0, dtype=np.float32).reshape(2, 3)
    m = np.array([[True, False, True], [False, True, False]])
    keys = jax.random.split(KEY, 3000)

    def shuffled(k):
        return sanity.shuffle_weights(k, {"kernel": w}, {"kernel": m})["kernel"]

    out = np.asarray(jax.vmap(shuffled)(keys))
    assert (out[:, ~m] == 0).all()
    kept = out[:, m]  # values 1, 3, 5 over the 3 kept positions
    assert (np.sort(kept, axis=1) == [1.0, 3.0, 5.0]).all()
    # All 3! arrangements appear, each about 1/6 of the time.
    _, counts = np.unique(kept, axis=0, return_counts=True)
    assert len(counts) == 6
    np.testing.assert_allclose(counts / len(keys), 1 / 6, atol=0.035)


def test_shuffle_weights_mismatched_mask_raises():
    params, mask = hand_params(), hand_mask()
    mask["Dense_0"]["extra"] = np.ones(2, bool)
    with pytest.raises(ValueError, match="extra"):
        sanity.shuffle_weights(KEY, params, mask)


# ---------------------------------------------------------------- corruptions


def make_batch(n=10_000, num_classes=10, shape=(4, 4, 3), seed=0):
    rng = np.random.default_rng(seed)
    return {
        "image": rng.normal(size=(n, *shape)).astype(np.float32),
        "label": rng.integers(0, num_classes, n).astype(np.int32),
    }


def test_random_labels_are_uniform_chance_and_deterministic():
    batch = make_batch()
    out = corrupt_lib.random_labels(batch, 0, 10)
    labels = out["label"]
    assert labels.dtype == np.int32 and labels.shape == (10_000,)
    assert out["image"] is batch["image"]
    assert abs((labels == batch["label"]).mean() - 0.1) < 0.015
    counts = np.bincount(labels, minlength=10)
    assert len(counts) == 10
    chi2 = ((counts - 1000) ** 2 / 1000).sum()
    assert chi2 < 30  # 9 degrees of freedom: P(chi2 > 30) ~ 4e-4
    np.testing.assert_array_equal(labels, corrupt_lib.random_labels(batch, 0, 10)["label"])
    assert (labels != corrupt_lib.random_labels(batch, 1, 10)["label"]).any()
    # Independent of the true labels: the same draw whatever the labels were.
    other = dict(batch, label=np.zeros(10_000, np.int32))
    np.testing.assert_array_equal(labels, corrupt_lib.random_labels(other, 0, 10)["label"])
    assert not (batch["label"] == 0).all()  # the input was not modified


def test_random_pixels_permutes_pixels_per_image():
    batch = make_batch(n=50)
    out = corrupt_lib.random_pixels(batch, 3, 10)
    np.testing.assert_array_equal(out["label"], corrupt_lib.random_labels(batch, 3, 10)["label"])
    images, shuffled = batch["image"], out["image"]
    assert shuffled.shape == images.shape and shuffled.dtype == images.dtype
    perms = []
    for before, after in zip(images, shuffled, strict=True):
        pixels, moved = before.reshape(16, 3), after.reshape(16, 3)
        assert (moved != pixels).any()
        # Channels move together: every new pixel is an old pixel (a channel vector).
        perm = [int(np.flatnonzero((pixels == p).all(axis=1))[0]) for p in moved]
        assert sorted(perm) == list(range(16))
        np.testing.assert_array_equal(np.sort(after.ravel()), np.sort(before.ravel()))
        perms.append(tuple(perm))
    assert len(set(perms)) == len(perms)  # every image has its own permutation
    again = corrupt_lib.random_pixels(batch, 3, 10)
    np.testing.assert_array_equal(again["image"], shuffled)
    assert (corrupt_lib.random_pixels(batch, 4, 10)["image"] != shuffled).any()


def test_half_data_and_dispatch():
    batch = make_batch(n=7)
    batch["weight"] = np.ones(7, np.float32)
    half = corrupt_lib.half_data(batch, 0)
    assert half["image"].shape[0] == half["label"].shape[0] == half["weight"].shape[0] == 3
    np.testing.assert_array_equal(half["image"], batch["image"][:3])
    assert corrupt_lib.half_data(make_batch(n=1), 0)["label"].shape == (1,)
    assert corrupt_lib.corrupt(batch, "half_data", 0, 10)["label"].shape == (3,)
    for kind in ("random_labels", "random_pixels"):
        via = corrupt_lib.corrupt(batch, kind, 5, 10)
        direct = getattr(corrupt_lib, kind)(batch, 5, 10)
        for key in batch:
            np.testing.assert_array_equal(via[key], direct[key])
    none = corrupt_lib.corrupt(batch, "none", 0, 10)
    assert none is not batch and all(none[k] is batch[k] for k in batch)
    assert corrupt_lib.CORRUPTIONS == ("none", "random_labels", "random_pixels", "half_data")


def test_corruption_errors():
    batch = make_batch(n=4)
    with pytest.raises(ValueError, match=r"sanity.mask_data.*random_pixels.*got 'shuffle'"):
        corrupt_lib.corrupt(batch, "shuffle", 0, 10)
    with pytest.raises(ValueError, match="num_classes must be a positive int, got 0"):
        corrupt_lib.random_labels(batch, 0, 0)
    with pytest.raises(ValueError, match="seed"):
        corrupt_lib.random_labels(batch, -1, 10)
    with pytest.raises(ValueError, match=r"\[N, H, W, C\]"):
        corrupt_lib.random_pixels({"image": np.zeros((4, 5)), "label": np.zeros(4)}, 0, 10)
    with pytest.raises(ValueError, match="'label'"):
        corrupt_lib.random_labels({"image": batch["image"]}, 0, 10)
