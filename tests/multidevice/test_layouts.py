"""Masks do not depend on device layout (8 fake CPU devices; see tests/test_multidevice.py).

Every mask function is checked against the single-device numpy oracle (a stable descending
argsort of the canonical scores), on params placed replicated or sharded along any axis (also
two mesh axes at once, and unevenly under ``jax.jit`` through sharding constraints), eager and
jitted. Masks keep the input's sharding, and no compiled program gathers a leaf.
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

import jaxprune as jp

F32 = np.finfo(np.float32)
ALL = "."  # property-test trees include 1-D leaves: rank every leaf
SETTINGS = settings(
    max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def canonical(x):
    x = np.clip(np.asarray(x, np.float32), -F32.max, F32.max)
    return np.where(np.abs(x) < F32.tiny, np.float32(0), x).astype(np.float32)


def n_keep(s, n):
    return jp.n_keep_for(s, n)


def oracle_top(values, k):
    """Keep the k largest of a flat array, ties to the lower index (stable argsort)."""
    keep = np.zeros(values.size, bool)
    keep[np.argsort(-values, kind="stable")[:k]] = True
    return keep


def oracle_global(leaves, sparsity, floor=0):
    flats = [canonical(x).ravel() for x in leaves]
    sizes = [f.size for f in flats]
    k = n_keep(sparsity, sum(sizes))
    floor_masks = [oracle_top(f, min(floor, f.size)) for f in flats]
    rest = np.concatenate(
        [np.where(m, -np.inf, f) for m, f in zip(floor_masks, flats, strict=True)]
    )
    extra = oracle_top(rest, k - sum(int(m.sum()) for m in floor_masks))
    out, start = [], 0
    for m, f, x in zip(floor_masks, flats, leaves, strict=True):
        out.append((m | extra[start : start + f.size]).reshape(np.shape(x)))
        start += f.size
    return out


def tree_of(leaves):
    return {f"layer_{i}": {"kernel": x} for i, x in enumerate(leaves)}


def leaves_of(tree):
    return [np.asarray(m) for m in jax.tree.leaves(tree)]


def spec_for(shape, axis, name="x", size=8):
    """Shard ``axis`` over mesh axis ``name`` when it divides evenly, else replicate."""
    if axis is None or shape[axis] % size:
        return P()
    return P(*([None] * axis + [name]))


def assert_same(masks, expected):
    for got, want in zip(masks, expected, strict=True):
        np.testing.assert_array_equal(got, want)


# -- the reproduction from the issue ------------------------------------------------------------


@pytest.mark.parametrize("sharded", [False, True])
def test_issue_shapes_global_mp_is_exact_sharded_and_replicated(mesh_1d, sharded):
    shapes = [(784, 304), (304, 96), (96, 10), (3, 3, 16, 32)]
    key = jax.random.key(0)
    host = [
        np.asarray(jax.random.normal(jax.random.fold_in(key, i), s)) for i, s in enumerate(shapes)
    ]
    placed = [
        jax.device_put(x, NamedSharding(mesh_1d, spec_for(x.shape, 0 if sharded else None)))
        for x in host
    ]
    params = tree_of(placed)
    expected = oracle_global([np.abs(x) for x in host], 0.9)
    eager = jp.global_mask(jp.scores.magnitude(params), 0.9)
    jitted = jax.jit(lambda p: jp.global_mask(jp.scores.magnitude(p), 0.9))(params)
    for masks in (eager, jitted):
        assert sum(int(m.sum()) for m in leaves_of(masks)) == n_keep(0.9, sum(x.size for x in host))
        assert_same(leaves_of(masks), expected)
        for m, x in zip(jax.tree.leaves(masks), placed, strict=True):
            assert m.sharding.is_equivalent_to(x.sharding, x.ndim)


@pytest.mark.parametrize("method", ["search", "sort"])
def test_explicit_axes_mesh_from_make_mesh_gives_the_same_masks(method):
    """``jax.make_mesh`` meshes have Explicit axes: shardings live in the array types."""
    mesh = jax.make_mesh((2, 4), ("x", "y"))
    assert jax.sharding.AxisType.Explicit in mesh.axis_types
    rng = np.random.default_rng(3)
    host = [rng.standard_normal(s).astype(np.float32) for s in [(64, 32), (16, 8), (8,)]]
    specs = [P("x", "y"), P(), P("y")]
    placed = [jax.device_put(x, NamedSharding(mesh, s)) for x, s in zip(host, specs, strict=True)]
    params = {f"l{i}": {"kernel": x} for i, x in enumerate(placed)}
    prunable = lambda name, x: np.ndim(x) >= 1  # noqa: E731 - every leaf, the 1-D one included
    expected = oracle_global([np.abs(x) for x in host], 0.9, floor=6)
    min_keep = 6

    def select(p):
        return jp.global_mask(
            jp.scores.magnitude(p), 0.9, min_keep, prunable=prunable, method=method
        )

    for masks in (select(params), jax.jit(select)(params)):
        assert_same([masks[f"l{i}"]["kernel"] for i in range(3)], expected)
        for i, x in enumerate(placed):
            assert masks[f"l{i}"]["kernel"].sharding.is_equivalent_to(x.sharding, x.ndim)
    layerwise = jp.layerwise_mask(
        jp.scores.magnitude(params),
        {"l0/kernel": 0.5, "l1/kernel": 0.75, "l2/kernel": 0.25},
        prunable=prunable,
    )
    for i, (s, x) in enumerate(zip([0.5, 0.75, 0.25], host, strict=True)):
        assert_same(
            [layerwise[f"l{i}"]["kernel"]],
            [oracle_top(np.abs(x).ravel(), n_keep(s, x.size)).reshape(x.shape)],
        )


def test_lenet300_min_threshold_keeps_5324_on_8_devices(mesh_1d):
    shapes = [(784, 300), (300, 100), (100, 10)]
    rng = np.random.default_rng(0)
    host = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    placed = [jax.device_put(x, NamedSharding(mesh_1d, spec_for(x.shape, 0))) for x in host]
    min_keep = {"fraction_of_total": 0.002}
    floor = round(0.002 * sum(x.size for x in host))
    expected = oracle_global([np.abs(x) for x in host], 0.98, floor)
    jitted = jax.jit(lambda p: jp.global_mask(p, 0.98, min_keep))
    for fn in (lambda p: jp.global_mask(p, 0.98, min_keep), jitted):
        masks = leaves_of(fn(jp.scores.magnitude(tree_of(placed))))
        assert sum(int(m.sum()) for m in masks) == 5324
        assert_same(masks, expected)


# -- property tests over trees x layouts x sparsities x MT ---------------------------------------


@st.composite
def trees(draw):
    count = draw(st.integers(1, 3))
    leaves, axes = [], []
    for _ in range(count):
        ndim = draw(st.integers(1, 4))
        shape = tuple(draw(st.sampled_from([1, 2, 3, 5, 8, 16])) for _ in range(ndim))
        if draw(st.booleans()):  # many ties
            values = draw(st.sampled_from([0.0, 1.0, -1.0, 2.0]))
            x = np.random.default_rng(draw(st.integers(0, 10**6))).choice(
                [0.0, 1.0, -1.0, values, -0.0], size=shape
            )
        else:
            x = np.random.default_rng(draw(st.integers(0, 10**6))).standard_normal(shape)
        leaves.append(x.astype(np.float32))
        axes.append(draw(st.sampled_from([None, *range(ndim)])))
    return leaves, axes


@SETTINGS
@given(case=trees(), sparsity=st.floats(0.0, 1.0), floor=st.sampled_from([0, 0, 1, 3]))
def test_global_mask_matches_oracle_on_every_layout(mesh_1d, mesh_2d, case, sparsity, floor):
    leaves, axes = case
    total = sum(x.size for x in leaves)
    if floor * len(leaves) > n_keep(sparsity, total):
        floor = 0
    expected = oracle_global(leaves, sparsity, floor)
    min_keep = floor or None
    # Eager, on device_put placements (1-D mesh, even shardings only).
    placed = [
        jax.device_put(x, NamedSharding(mesh_1d, spec_for(x.shape, a)))
        for x, a in zip(leaves, axes, strict=True)
    ]
    eager = jp.global_mask(tree_of(placed), sparsity, min_keep, prunable=ALL)
    assert_same(leaves_of(eager), expected)
    for m, x in zip(jax.tree.leaves(eager), placed, strict=True):
        assert m.sharding.is_equivalent_to(x.sharding, x.ndim)

    # Jitted, with uneven shardings imposed inside the program on the 2-D mesh.
    def constrained(tree):
        out = []
        for x, a in zip(jax.tree.leaves(tree), axes, strict=True):
            spec = P() if a is None else P(*([None] * a + [("a", "b")]))
            out.append(jax.lax.with_sharding_constraint(x, NamedSharding(mesh_2d, spec)))
        return tree_of(out)

    jitted = jax.jit(lambda t, s: jp.global_mask(constrained(t), s, min_keep, prunable=ALL))(
        tree_of(leaves), jnp.float32(sparsity)
    )
    # A traced sparsity rounds n_keep in float32: compare counts with that rounding.
    k32 = int(np.floor((1 - np.float32(sparsity)) * np.float32(total) + np.float32(0.5)))
    if k32 == n_keep(sparsity, total):
        assert_same(leaves_of(jitted), expected)


@SETTINGS
@given(case=trees(), data=st.data())
def test_layerwise_and_random_masks_match_on_every_layout(mesh_1d, case, data):
    leaves, axes = case
    sparsities = {f"layer_{i}/kernel": data.draw(st.floats(0.0, 1.0)) for i in range(len(leaves))}
    expected = [
        oracle_top(canonical(x).ravel(), n_keep(s, x.size)).reshape(x.shape)
        for x, s in zip(leaves, sparsities.values(), strict=True)
    ]
    placed = tree_of(
        [
            jax.device_put(x, NamedSharding(mesh_1d, spec_for(x.shape, a)))
            for x, a in zip(leaves, axes, strict=True)
        ]
    )
    assert_same(leaves_of(jp.layerwise_mask(placed, sparsities, prunable=ALL)), expected)
    assert_same(
        leaves_of(jax.jit(lambda t, q: jp.layerwise_mask(t, q, prunable=ALL))(placed, sparsities)),
        expected,
    )
    key = jax.random.key(data.draw(st.integers(0, 100)))
    single = leaves_of(jp.random_mask(key, tree_of(leaves), sparsities, prunable=ALL))
    sharded = jp.random_mask(key, placed, sparsities, prunable=ALL)
    assert_same(leaves_of(sharded), single)
    for m, x in zip(jax.tree.leaves(sharded), jax.tree.leaves(placed), strict=True):
        assert m.sharding.is_equivalent_to(x.sharding, x.ndim)


# -- no leaf is gathered -------------------------------------------------------------------------


def test_compiled_selection_gathers_no_leaf(mesh_1d):
    shapes = [(64, 32), (3, 3, 16, 32), (128, 8)]
    rng = np.random.default_rng(1)
    tree = tree_of(
        [
            jax.device_put(
                rng.standard_normal(s).astype(np.float32),
                NamedSharding(mesh_1d, spec_for(s, len(s) - 1)),
            )
            for s in shapes
        ]
    )
    fn = jax.jit(lambda p: jp.global_mask(jp.scores.magnitude(p), 0.5, min_keep=2))
    text = fn.lower(tree).compile().as_text()
    gathered = [
        int(np.prod([int(d) for d in re.findall(r"\d+", dims)] or [1]))
        for dims in re.findall(r"= \w+\[([\d,]*)\][^=]*? all-gather\(", text)
    ]
    longest_axis = max(max(s) for s in shapes)
    # Only per-axis count vectors (tie positions) may be gathered, never a leaf or a leaf's keys.
    assert all(size <= longest_axis for size in gathered), gathered
    assert "all-to-all" not in text


# -- the rest of the core on sharded trees -------------------------------------------------------


def test_effective_mask_quotas_and_shuffles_do_not_depend_on_layout(mesh_1d):
    from jaxprune.models import get_model
    from jaxprune.pruning import sanity

    model = get_model("lenet300", num_classes=10)
    x = jnp.ones((1, 28, 28, 1))
    params = model.init(jax.random.key(0), x)["params"]
    sharded = jax.tree.map(
        lambda p: jax.device_put(p, NamedSharding(mesh_1d, spec_for(p.shape, 0))), params
    )
    quotas = jp.quotas.igq(params, 0.95)
    assert jp.quotas.igq(sharded, 0.95) == quotas
    key = jax.random.key(3)
    single = jp.random_mask(key, params, quotas)
    placed = jp.random_mask(key, sharded, quotas)
    assert_same(leaves_of(placed), leaves_of(single))

    def apply_fn(p, inputs):
        return model.apply({"params": p}, inputs)

    assert_same(
        leaves_of(jp.effective_mask(apply_fn, sharded, placed, x)),
        leaves_of(jp.effective_mask(apply_fn, params, single, x)),
    )
    assert_same(
        leaves_of(sanity.shuffle_layerwise(key, placed)),
        leaves_of(sanity.shuffle_layerwise(key, single)),
    )
