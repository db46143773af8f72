"""Exact masks: hand-made trees, numpy stable-argsort oracle, MT floors, jit, bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import jaxprune as jp
from jaxprune.pruning import select, topk

F32 = np.finfo(np.float32)
# These hand-made trees name their leaves freely ("a", "w", ...); rank every leaf with ndim >= 2,
# as the tests were written (the library default only prunes leaves named "kernel").
NDIM2 = lambda name, leaf: np.ndim(leaf) >= 2  # noqa: E731


def as_int(tree):
    return jax.tree.map(lambda m: np.asarray(m).astype(int).tolist(), tree)


def oracle_global(leaves, k):
    """Stable descending argsort of the concatenated canonical scores (numpy)."""
    flat = np.concatenate([canonical(np.asarray(x)).ravel() for x in leaves])
    order = np.argsort(-flat, kind="stable")
    keep = np.zeros(flat.size, bool)
    keep[order[:k]] = True
    out, start = [], 0
    for x in leaves:
        out.append(keep[start : start + x.size].reshape(x.shape))
        start += x.size
    return out


def canonical(x):
    x = np.clip(np.asarray(x, np.float32), -F32.max, F32.max)
    return np.where(np.abs(x) < F32.tiny, np.float32(0), x).astype(np.float32)


def test_hand_made_global_mask():
    scores = {
        "a": {"kernel": jnp.array([[3.0, 1.0], [2.0, 0.5]]), "bias": jnp.array([9.0, 9.0])},
        "b": {"kernel": jnp.array([[0.1], [4.0]])},
    }
    mask = jp.global_mask(scores, 0.5, prunable=NDIM2)  # 6 prunable -> keep 3: 4.0, 3.0, 2.0
    assert as_int(mask) == {
        "a": {"kernel": [[1, 0], [1, 0]], "bias": [1, 1]},
        "b": {"kernel": [[0], [1]]},
    }


def test_all_equal_scores_keep_earliest_leaf_then_lowest_index():
    scores = {"a": jnp.ones((2, 3)), "b": jnp.ones((3, 1))}
    mask = jp.global_mask(
        scores, 0.5, prunable=NDIM2
    )  # 9 entries, keep round(4.5) = 5 (half rounds up)
    assert as_int(mask) == {"a": [[1, 1, 1], [1, 1, 0]], "b": [[0], [0], [0]]}
    mask = jp.global_mask(scores, 0.5, method="sort", prunable=NDIM2)
    assert as_int(mask) == {"a": [[1, 1, 1], [1, 1, 0]], "b": [[0], [0], [0]]}


def test_ties_straddling_leaves_partial_leaf():
    scores = {"a": jnp.array([[5.0, 1.0, 1.0]]), "b": jnp.array([[1.0, 1.0], [7.0, 1.0]])}
    mask = jp.global_mask(
        scores, 3 / 7 + 1e-9, prunable=NDIM2
    )  # keep round(4/7*7) = 4: 7, 5, then two 1.0s
    assert as_int(mask) == {"a": [[1, 1, 1]], "b": [[0, 0], [1, 0]]}


@pytest.mark.parametrize("method", ["search", "sort"])
def test_sparsity_zero_and_one(method):
    scores = {"w": jnp.arange(6.0).reshape(2, 3), "b": jnp.arange(3.0)}
    assert as_int(jp.global_mask(scores, 0.0, method=method, prunable=NDIM2))["w"] == [
        [1, 1, 1],
        [1, 1, 1],
    ]
    mask = jp.global_mask(scores, 1.0, method=method, prunable=NDIM2)
    assert as_int(mask) == {"w": [[0, 0, 0], [0, 0, 0]], "b": [1, 1, 1]}


def test_one_leaf_tree_and_scalar_leaves_are_not_prunable():
    scores = {"w": jnp.array([[0.3, -2.0, 1.0, 0.0]]), "scale": jnp.array(5.0)}
    mask = jp.global_mask(
        scores, 0.75, prunable=NDIM2
    )  # raw scores are ranked: 1.0 wins, not |-2.0|
    assert as_int(mask) == {"w": [[0, 0, 1, 0]], "scale": 1}
    mask = jp.global_mask(jp.scores.magnitude(scores), 0.75, prunable=NDIM2)
    assert as_int(mask) == {"w": [[0, 1, 0, 0]], "scale": 1}


def test_prunable_override_by_regex_and_predicate():
    scores = {"conv": {"kernel": jnp.array([[1.0, 2.0]])}, "dense": {"kernel": jnp.array([[3.0]])}}
    mask = jp.global_mask(scores, 0.5, prunable=r"^conv/")
    assert as_int(mask) == {"conv": {"kernel": [[0, 1]]}, "dense": {"kernel": [[1]]}}
    mask = jp.global_mask(scores, 0.5, prunable=lambda name, leaf: name.startswith("dense"))
    assert as_int(mask) == {"conv": {"kernel": [[1, 1]]}, "dense": {"kernel": [[1]]}}


def test_mask_exact_count_on_resnet_like_floats_with_duplicates():
    rng = np.random.default_rng(0)
    # float16-rounded weights make many exact duplicates, so ties straddle the threshold.
    leaves = [
        rng.standard_normal(s).astype(np.float16).astype(np.float32)
        for s in [(3, 3, 16, 32), (3, 3, 32, 32), (512, 10)]
    ]
    scores = {f"l{i}": jnp.abs(jnp.asarray(x)) for i, x in enumerate(leaves)}
    for s in [0.1, 0.5, 0.9, 0.99, 0.999]:
        mask = jp.global_mask(scores, s, prunable=NDIM2)
        expected = oracle_global([np.abs(x) for x in leaves], jp.n_keep_for(s, 18944))
        for i, e in enumerate(expected):
            np.testing.assert_array_equal(np.asarray(mask[f"l{i}"]), e)


float_values = st.one_of(
    st.floats(allow_nan=False, width=32),
    st.sampled_from([0.0, -0.0, 1.0, 1.0, 2.0, np.inf, -np.inf, 1e-40, float(F32.tiny)]),
)


# A few fixed tree shapes (values vary freely) so that jit caches are reused across examples.
TREE_SHAPES = [
    [(2, 3)],
    [(4, 4)],
    [(2, 3), (3, 1)],
    [(1, 5), (2, 2, 2), (3, 3)],
    [(5, 5), (1, 1)],
    [(2, 2, 3), (4, 1), (1, 4), (2, 2)],
]


@st.composite
def score_trees(draw):
    shapes = draw(st.sampled_from(TREE_SHAPES))
    leaves = []
    for shape in shapes:
        size = int(np.prod(shape))
        values = draw(st.lists(float_values, min_size=size, max_size=size))
        leaves.append(np.asarray(values, np.float32).reshape(shape))
    return leaves


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(leaves=score_trees(), sparsity=st.floats(0, 1))
def test_global_mask_matches_numpy_stable_argsort(leaves, sparsity):
    tree = [jnp.asarray(x) for x in leaves]
    total = sum(x.size for x in leaves)
    k = jp.n_keep_for(sparsity, total)
    mask = jp.global_mask(tree, sparsity, prunable=NDIM2)
    for m, e in zip(mask, oracle_global(leaves, k), strict=True):
        np.testing.assert_array_equal(np.asarray(m), e)
    assert sum(int(np.sum(m)) for m in mask) == k
    reference = jp.global_mask(tree, sparsity, method="sort", prunable=NDIM2)
    for m, r in zip(mask, reference, strict=True):
        np.testing.assert_array_equal(np.asarray(m), np.asarray(r))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(leaves=score_trees(), sparsity=st.floats(0, 1), floor=st.integers(0, 6))
def test_min_threshold_floors_and_best_kept_set(leaves, sparsity, floor):
    tree = [jnp.asarray(x) for x in leaves]
    sizes = [x.size for x in leaves]
    total = sum(sizes)
    k = jp.n_keep_for(sparsity, total)
    floors = [min(floor, n) for n in sizes]
    if sum(floors) > 0 and min(canonical(x).min() for x in leaves) <= -F32.max:
        with pytest.raises(ValueError, match="cannot be combined with min_keep|infeasible"):
            jp.global_mask(tree, sparsity, min_keep=floor, prunable=NDIM2)
        return
    if sum(floors) > k:
        with pytest.raises(ValueError, match="infeasible"):
            jp.global_mask(tree, sparsity, min_keep=floor, prunable=NDIM2)
        return
    mask = [np.asarray(m) for m in jp.global_mask(tree, sparsity, min_keep=floor, prunable=NDIM2)]
    assert sum(int(m.sum()) for m in mask) == k
    # Oracle: each layer's floor by its own stable ranking, then the global ranking of the rest.
    expected = []
    for x, f in zip(leaves, floors, strict=True):
        expected.append(oracle_global([x], f)[0])
    rest = [np.where(e, -np.inf, canonical(x)) for e, x in zip(expected, leaves, strict=True)]
    extra = oracle_global(rest, k - sum(floors))
    for m, e, x, f in zip(mask, expected, extra, floors, strict=True):
        np.testing.assert_array_equal(m, e | x)
        assert m.sum() >= f


def test_min_keep_fraction_of_total_and_per_layer_dict():
    scores = {"big": jnp.arange(1.0, 101.0).reshape(10, 10), "small": jnp.full((2, 2), 0.5)}
    plain = jp.global_mask(scores, 0.9, prunable=NDIM2)  # 104 weights, keep 10: all from "big"
    assert int(plain["small"].sum()) == 0
    mt = jp.global_mask(
        scores, 0.9, min_keep={"fraction_of_total": 0.02}, prunable=NDIM2
    )  # floor round(2.08)=2
    assert int(mt["small"].sum()) == 2 and int(mt["big"].sum()) == 8
    assert as_int(mt)["small"] == [[1, 1], [0, 0]]
    assert np.asarray(mt["big"]).ravel()[-8:].all()
    by_name = jp.global_mask(scores, 0.9, min_keep={"small": 3}, prunable=NDIM2)
    assert int(by_name["small"].sum()) == 3 and int(by_name["big"].sum()) == 7


def test_infeasible_min_threshold_names_the_numbers():
    scores = {"a": jnp.ones((4, 4)), "b": jnp.ones((4, 4))}
    with pytest.raises(ValueError, match=r"floors sum to 10 .* n_keep=3 of 32"):
        jp.global_mask(scores, 0.9, min_keep=5, prunable=NDIM2)


def test_jit_traced_sparsity_does_not_recompile():
    rng = np.random.default_rng(1)
    scores = {"a": jnp.asarray(rng.random((8, 8))), "b": jnp.asarray(rng.random((4, 16)))}
    traces = []

    @jax.jit
    def masked_count(tree, s):
        traces.append(1)
        mask = jp.global_mask(tree, s, min_keep=2, prunable=NDIM2)
        return sum(jnp.sum(m) for m in jax.tree.leaves(mask))

    for s in [0.1, 0.5, 0.75, 0.9, 0.95]:
        assert int(masked_count(scores, jnp.float32(s))) == jp.n_keep_for(s, 128)
    assert len(traces) == 1


def test_layerwise_mask_exact_counts_and_values():
    scores = {"a": jnp.array([[1.0, 4.0, 3.0, 2.0]]), "b": jnp.array([[5.0, 5.0], [1.0, 5.0]])}
    mask = jp.layerwise_mask(scores, {"a": 0.5, "b": 0.5}, prunable=NDIM2)
    assert as_int(mask) == {"a": [[0, 1, 1, 0]], "b": [[1, 1], [0, 0]]}
    mask = jp.layerwise_mask(scores, {"a": 0.25, "b": 1.0}, prunable=NDIM2)  # round(3) and 0 kept
    assert as_int(mask) == {"a": [[0, 1, 1, 1]], "b": [[0, 0], [0, 0]]}
    tree_form = jp.layerwise_mask(scores, {"a": 0.5, "b": 0.5}, prunable=NDIM2)
    assert as_int(tree_form) == as_int(
        jp.layerwise_mask(scores, jax.tree.map(lambda _: 0.5, scores), prunable=NDIM2)
    )


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(leaves=score_trees(), data=st.data())
def test_layerwise_matches_per_layer_oracle(leaves, data):
    tree = [jnp.asarray(x) for x in leaves]
    sparsities = [data.draw(st.floats(0, 1)) for _ in leaves]
    mask = jp.layerwise_mask(tree, sparsities, prunable=NDIM2)
    for m, x, s in zip(mask, leaves, sparsities, strict=True):
        np.testing.assert_array_equal(
            np.asarray(m), oracle_global([x], jp.n_keep_for(s, x.size))[0]
        )


def test_random_mask_exact_counts_own_key_per_layer():
    params = {"a": jnp.zeros((30, 20)), "b": jnp.zeros((10, 10)), "bias": jnp.zeros(5)}
    key = jax.random.key(0)
    mask = jp.random_mask(key, params, {"a": 0.9, "b": 0.5}, prunable=NDIM2)
    assert int(mask["a"].sum()) == 60 and int(mask["b"].sum()) == 50
    assert bool(mask["bias"].all())
    other = jp.random_mask(jax.random.key(1), params, {"a": 0.9, "b": 0.5}, prunable=NDIM2)
    assert not np.array_equal(np.asarray(mask["a"]), np.asarray(other["a"]))
    # Each layer has its own stream: changing b's sparsity leaves a's positions unchanged.
    again = jp.random_mask(key, params, {"a": 0.9, "b": 0.1}, prunable=NDIM2)
    np.testing.assert_array_equal(np.asarray(mask["a"]), np.asarray(again["a"]))


def test_apply_mask_zeroes_and_keeps_dtype():
    params = {"w": jnp.array([[1.0, -2.0]], jnp.bfloat16), "b": jnp.array([3.0])}
    mask = {"w": jnp.array([[False, True]]), "b": jnp.array([True])}
    out = jp.apply_mask(params, mask)
    assert out["w"].dtype == jnp.bfloat16
    assert out["w"].tolist() == [[0.0, -2.0]] and out["b"].tolist() == [3.0]


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan")])
def test_bad_sparsity(bad):
    with pytest.raises(ValueError, match=r"sparsity must be in \[0, 1\], got"):
        jp.global_mask({"w": jnp.ones((2, 2))}, bad, prunable=NDIM2)


def test_nan_scores_name_the_layer():
    scores = {"ok": jnp.ones((2, 2)), "bad": jnp.array([[1.0, jnp.nan]])}
    with pytest.raises(ValueError, match=r"scores\['bad'\] contains NaN"):
        jp.global_mask(scores, 0.5, prunable=NDIM2)
    with pytest.raises(ValueError, match="contains NaN"):
        jp.layerwise_mask(scores, {"ok": 0.5, "bad": 0.5}, prunable=NDIM2)


def test_nan_scores_under_jit_raise():
    scores = {"bad": jnp.array([[1.0, jnp.nan]])}
    with pytest.raises(Exception, match="contains NaN"):
        jax.block_until_ready(jax.jit(lambda t: jp.global_mask(t, 0.5, prunable=NDIM2))(scores))


def test_mismatched_mask_tree():
    params = {"a": jnp.ones((2, 2)), "b": jnp.ones((2, 2))}
    with pytest.raises(ValueError, match=r"missing leaves \['b'\]"):
        jp.apply_mask(params, {"a": jnp.ones((2, 2), bool)})
    with pytest.raises(ValueError, match=r"mask\['b'\] has shape \(3,\)"):
        jp.apply_mask(params, {"a": jnp.ones((2, 2), bool), "b": jnp.ones(3, bool)})


def test_layerwise_bad_names():
    scores = {"a": jnp.ones((2, 2)), "b": jnp.ones((2, 2))}
    with pytest.raises(ValueError, match=r"missing prunable layers \['b'\]"):
        jp.layerwise_mask(scores, {"a": 0.5}, prunable=NDIM2)
    with pytest.raises(ValueError, match=r"not prunable or do not exist: \['c'\]"):
        jp.layerwise_mask(scores, {"a": 0.5, "b": 0.5, "c": 0.5}, prunable=NDIM2)
    with pytest.raises(ValueError, match=r"sparsities\['a'\] must be in \[0, 1\]"):
        jp.layerwise_mask(scores, {"a": 2.0, "b": 0.5}, prunable=NDIM2)


def test_order_key_roundtrip_and_monotone():
    values = np.array([-F32.max, -1.0, -F32.tiny, 0.0, F32.tiny, 1e-30, 1.0, F32.max], np.float32)
    keys = np.asarray(topk.order_key(jnp.asarray(values)))
    assert (np.diff(keys.astype(np.int64)) > 0).all()
    np.testing.assert_array_equal(np.asarray(topk.key_to_float(jnp.asarray(keys))), values)


# -- sparsity arguments and masks are checked everywhere (traced values too) -------------------

KERNELS = {
    "Dense_0": {"kernel": jnp.arange(12.0).reshape(3, 4)},
    "Dense_1": {"kernel": jnp.ones((4, 2))},
}


@pytest.mark.parametrize("bad", [float("nan"), 1.5, -0.5])
@pytest.mark.parametrize("fn", ["layerwise", "random"])
def test_traced_bad_sparsity_raises_in_layerwise_and_random(fn, bad):
    def masks(s):
        sparsities = {"Dense_0/kernel": s, "Dense_1/kernel": 0.5}
        if fn == "layerwise":
            return jp.layerwise_mask(KERNELS, sparsities)
        return jp.random_mask(jax.random.key(0), KERNELS, sparsities)

    good = jax.jit(masks)(jnp.float32(0.5))  # the same program with a valid value runs
    assert int(good["Dense_0"]["kernel"].sum()) == 6
    with pytest.raises(Exception, match=r"sparsities\['Dense_0/kernel'\] must be in \[0, 1\]"):
        jax.block_until_ready(jax.jit(masks)(jnp.float32(bad)))


@pytest.mark.parametrize("bad", ["0.5", True, np.bool_(False), 0.5j, np.array([0.5, 0.5])])
def test_sparsity_must_be_a_real_scalar(bad):
    with pytest.raises(TypeError, match="sparsity must be a real"):
        jp.global_mask(KERNELS, bad)
    with pytest.raises(TypeError, match=r"sparsities\['Dense_0/kernel'\] must be a real"):
        jp.layerwise_mask(KERNELS, {"Dense_0/kernel": bad, "Dense_1/kernel": 0.5})
    with pytest.raises(TypeError, match="sparsity must be a real"):
        jp.n_keep_for(bad, 10)
    with pytest.raises(TypeError, match="must be a real"):
        jp.quotas.igq(KERNELS, bad)


def test_numpy_and_jax_scalars_are_accepted_as_sparsity():
    for s in (0.5, 1, 0, np.float32(0.5), np.float64(0.5), np.array(0.5), jnp.float32(0.5)):
        mask = jp.global_mask(KERNELS, s)
        assert sum(int(m.sum()) for m in jax.tree.leaves(mask)) == jp.n_keep_for(float(s), 20)


def test_float_masks_are_refused():
    float_mask = jax.tree.map(lambda x: jnp.full(x.shape, 0.5), KERNELS)
    with pytest.raises(ValueError, match=r"mask\['Dense_0/kernel'\] must be a bool array"):
        jp.apply_mask(KERNELS, float_mask)


@pytest.mark.parametrize("empty", [None, {}, {"a": None}])
def test_trees_without_leaves_are_refused(empty):
    with pytest.raises(ValueError, match="has no array leaves"):
        jp.global_mask(empty, 0.9)


def test_a_tree_with_nothing_prunable_is_refused_with_the_rule():
    with pytest.raises(ValueError, match="no leaf of scores is prunable.*kernel"):
        jp.global_mask({"w": jnp.ones((3, 3))}, 0.5)
    with pytest.raises(ValueError, match=r"no leaf of scores is prunable \(prunable='nothing'\)"):
        jp.global_mask(KERNELS, 0.5, prunable="nothing")


def test_global_mask_under_x64_is_exact():
    with jax.enable_x64(True):
        scores = {"a": {"kernel": jnp.array([[1.0, 1.0, 1.0], [1.0, 2.0, 3.0]])}}
        mask = jax.jit(lambda t: jp.global_mask(t, 0.5, min_keep=1))(scores)
        assert as_int(mask) == {"a": {"kernel": [[1, 0, 0], [0, 1, 1]]}}


@pytest.mark.parametrize("path", ["numpy", "xla"])
@pytest.mark.parametrize("min_keep", [None, {"fraction_of_total": 0.01}])
def test_leaves_on_one_device_searched_flat_agree_with_sort(min_keep, path, monkeypatch):
    # Eager calls on one device search flat views of the leaves: in NumPy (host_select) up to
    # HOST_SELECT_MAX entries on CPU, else with the compiled select (topk's single_device). Heavy
    # ties (values on a coarse grid) make the cut fall inside a run of equal scores of a 2-D
    # leaf, so the row-major order of the flat tie search decides which ties are kept.
    if path == "xla":
        monkeypatch.setattr(select, "HOST_SELECT_MAX", 0)
    rng = np.random.default_rng(5)
    params = {
        "a": {"kernel": np.round(rng.normal(size=(1100, 1000)), 2).astype(np.float32)},
        "b": {"kernel": np.round(rng.normal(size=(300, 70)), 1).astype(np.float32)},
    }
    scores = jp.scores.magnitude(params)
    for sparsity in (0.5, 0.9731):
        got = jp.global_mask(scores, sparsity, min_keep=min_keep)
        want = jp.global_mask(scores, sparsity, min_keep=min_keep, method="sort")
        for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
            np.testing.assert_array_equal(np.asarray(g), np.asarray(w))
        assert sum(int(np.sum(m)) for m in jax.tree.leaves(got)) == jp.n_keep_for(
            sparsity, 1100 * 1000 + 300 * 70
        )
