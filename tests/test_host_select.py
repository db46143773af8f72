"""The NumPy radix select (``host_select``) against the compiled one and the sort reference.

``jp.global_mask`` / ``jp.layerwise_mask`` take the NumPy path for concrete CPU scores of at most
``select.HOST_SELECT_MAX`` entries; it must give the compiled select's masks bit for bit.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import jaxprune as jp
from jaxprune.pruning import host_select, select, topk

F32 = np.finfo(np.float32)
# Few distinct values (heavy ties) plus the canonicalisation corner cases.
SPECIAL = [0.0, -0.0, F32.tiny / 4, -F32.tiny / 4, F32.max, -F32.max, np.inf, -np.inf]


# Fixed shapes and a few groupings keep the compiled side to a handful of compilations.
SHAPES = [(5, 4), (7,), (2, 3, 2)]
GROUPINGS = [(0, 0, 0), (0, 1, 2), (0, 1, 0), (1, 0, 0)]
PRUNE_ALL = lambda name, leaf: True  # noqa: E731


@st.composite
def tied_leaves(draw):
    grid = draw(st.sampled_from([0.5, 0.1, 1e-3]))
    rng = np.random.default_rng(draw(st.integers(0, 2**31)))
    leaves = []
    for shape in SHAPES:
        x = np.round(rng.normal(size=shape) / grid) * grid
        special = rng.random(shape) < 0.15
        x[special] = rng.choice(SPECIAL, size=int(special.sum()))
        leaves.append(x.astype(np.float32))
    return leaves


@functools.cache
def compiled_top_k(group_of, method):
    return jax.jit(lambda ls, k: topk.top_k_masks(ls, list(group_of), k, method))


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tied_leaves(), st.sampled_from(GROUPINGS), st.data())
def test_numpy_select_equals_compiled_search_and_sort(leaves, group_of, data):
    sizes = np.zeros(max(group_of) + 1, int)
    for leaf, g in zip(leaves, group_of, strict=True):
        sizes[g] += leaf.size
    ks = [data.draw(st.integers(0, int(n))) for n in sizes]
    got, nan = host_select.top_k_masks(leaves, group_of, ks)
    assert not nan.any()
    for method in ("search", "sort"):
        want, _ = compiled_top_k(group_of, method)(
            [jnp.asarray(x) for x in leaves], jnp.asarray(ks, jnp.int32)
        )
        for g, w in zip(got, want, strict=True):
            assert g.dtype == bool and g.shape == w.shape
            np.testing.assert_array_equal(g, np.asarray(w))
    kept = np.zeros(len(ks), int)
    for g, m in zip(group_of, got, strict=True):
        kept[g] += int(m.sum())
    assert kept.tolist() == ks


@functools.cache
def compiled_global_mask(floor):
    return jax.jit(lambda t, s: jp.global_mask(t, s, min_keep=floor or None, prunable=PRUNE_ALL))


TOTAL = sum(int(np.prod(s)) for s in SHAPES)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tied_leaves(), st.integers(0, TOTAL), st.sampled_from([0, 2]))
def test_global_mask_numpy_path_equals_compiled_path(leaves, n_keep, floor):
    scores = {f"l{i}": {"kernel": x} for i, x in enumerate(leaves)}
    if any(np.min(x) <= -F32.max for x in leaves):
        floor = 0  # MT parks floor-kept entries at -inf: such scores are refused with min_keep
    if sum(min(floor, x.size) for x in leaves) > n_keep:
        return
    sparsity = 1 - n_keep / TOTAL
    assert jp.n_keep_for(sparsity, TOTAL) == n_keep
    host = jp.global_mask(scores, sparsity, min_keep=floor or None, prunable=PRUNE_ALL)
    compiled = compiled_global_mask(floor)(scores, jnp.float32(sparsity))
    for h, c in zip(jax.tree.leaves(host), jax.tree.leaves(compiled), strict=True):
        assert isinstance(h, jax.Array) and h.dtype == bool
        np.testing.assert_array_equal(np.asarray(h), np.asarray(c))
    assert sum(int(np.sum(h)) for h in jax.tree.leaves(host)) == n_keep


def test_eager_small_cpu_trees_select_in_numpy_large_ones_compile(monkeypatch):
    calls = []
    real = select._global_select
    monkeypatch.setattr(select, "_global_select", lambda *a, **k: calls.append(1) or real(*a, **k))
    scores = {"a": {"kernel": jnp.arange(12.0).reshape(3, 4)}}
    mask = jp.global_mask(scores, 0.5)
    assert calls == [] and np.asarray(mask["a"]["kernel"]).sum() == 6
    assert not mask["a"]["kernel"].committed  # like its (default-placed) leaf: no recompiles
    assert mask["a"]["kernel"].sharding == scores["a"]["kernel"].sharding
    monkeypatch.setattr(select, "HOST_SELECT_MAX", 11)  # 12 entries: over the limit
    again = jp.global_mask(scores, 0.5)
    assert calls == [1]
    np.testing.assert_array_equal(np.asarray(again["a"]["kernel"]), mask["a"]["kernel"])
    # The sort reference and traced scores always compile.
    jp.global_mask(scores, 0.5, method="sort")
    assert calls == [1, 1]


def test_numpy_path_errors_match_compiled_path():
    nan = {"a": {"kernel": jnp.array([[1.0, jnp.nan], [2.0, 3.0]])}}
    with pytest.raises(ValueError, match=r"scores\['a/kernel'\] contains NaN"):
        jp.global_mask(nan, 0.5)
    with pytest.raises(ValueError, match=r"scores\['a/kernel'\] contains NaN"):
        jp.layerwise_mask(nan, {"a/kernel": 0.5})
    low = {"a": {"kernel": jnp.array([[-jnp.inf, 1.0], [2.0, 3.0]])}}
    with pytest.raises(ValueError, match="cannot be combined with min_keep"):
        jp.global_mask(low, 0.5, min_keep=1)
