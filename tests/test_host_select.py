"""The NumPy select (``host_select``) against the compiled one, the sort reference and an argsort.

``jp.global_mask`` / ``jp.layerwise_mask`` take the NumPy path for concrete scores held by one CPU
device; it must give the compiled select's masks bit for bit, on small groups (selected whole)
and on large ones (a sampled bracket, or the whole group when the sample misses).
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
def tied_leaves(draw, shapes=tuple(SHAPES)):
    grid = draw(st.sampled_from([0.5, 0.1, 1e-3]))
    rng = np.random.default_rng(draw(st.integers(0, 2**31)))
    leaves = []
    for shape in shapes:
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


# ----------------------------------------------------------------------------------------------
# The sampled path: groups over 2 * SAMPLE_SIZE entries select in a bracket found from a sample.


def oracle_top_k(leaves, group_of, ks):
    """Stable descending argsort of the canonical scores of each group (no sampling at all)."""
    masks = [None] * len(leaves)
    for g, k in enumerate(ks):
        members = [i for i, gi in enumerate(group_of) if gi == g]
        values = np.concatenate([host_select.canonicalize(leaves[i]).ravel() for i in members])
        keep = np.zeros(values.size, bool)
        keep[np.argsort(-values, kind="stable")[:k]] = True
        start = 0
        for i in members:
            masks[i] = keep[start : start + leaves[i].size].reshape(leaves[i].shape)
            start += leaves[i].size
    return masks


# Large enough that samples of 8-64 entries bracket a small part of a group (the band path),
# small enough to sort: about 2/3 of the examples select in the band, 1/3 fall back whole.
SAMPLED_SHAPES = ((20, 30), (50,), (4, 5, 6))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    tied_leaves(SAMPLED_SHAPES), st.sampled_from(GROUPINGS), st.sampled_from([8, 16, 64]), st.data()
)
def test_sampled_select_equals_stable_argsort(leaves, group_of, sample_size, data):
    sizes = np.zeros(max(group_of) + 1, int)
    for leaf, g in zip(leaves, group_of, strict=True):
        sizes[g] += leaf.size
    ks = [data.draw(st.integers(0, int(n))) for n in sizes]
    original = host_select.SAMPLE_SIZE
    host_select.SAMPLE_SIZE = sample_size  # tiny samples: brackets that miss, ties at the edges
    try:
        got, nan = host_select.top_k_masks(leaves, group_of, ks)
    finally:
        host_select.SAMPLE_SIZE = original
    assert not nan.any()
    for g, w in zip(got, oracle_top_k(leaves, group_of, ks), strict=True):
        assert g.dtype == bool and g.shape == w.shape
        np.testing.assert_array_equal(g, w)


def test_sampled_select_on_a_large_group_brackets_once_and_matches_the_compiled_select(
    monkeypatch,
):
    rng = np.random.default_rng(0)
    leaves = [
        rng.standard_normal(shape).astype(np.float32) * scale
        for shape, scale in [((3, 3, 16, 64), 1.0), ((64, 10), 3.0), ((300, 100), 0.1)]
    ]
    leaves[1][:, 0] = np.inf  # canonical max; and a block of ties at the cut below
    leaves[2][:50] = leaves[0].flat[7]
    monkeypatch.setattr(host_select, "SAMPLE_SIZE", 1 << 10)
    fallbacks = []
    real = host_select._whole_group
    monkeypatch.setattr(host_select, "_whole_group", lambda *a: fallbacks.append(1) or real(*a))
    total = sum(x.size for x in leaves)
    rank_of_tie = int(
        np.sum(
            host_select.canonicalize(np.concatenate([x.ravel() for x in leaves]))
            > leaves[0].flat[7]
        )
    )
    compiled = compiled_top_k((0, 0, 0), "search")
    for k in [1, 10, 1000, rank_of_tie + 1, rank_of_tie + 3000, total // 2, total - 5, total]:
        got, nan = host_select.top_k_masks(leaves, [0, 0, 0], [k])
        want, _ = compiled([jnp.asarray(x) for x in leaves], jnp.asarray([k], jnp.int32))
        for g, w in zip(got, want, strict=True):
            np.testing.assert_array_equal(g, np.asarray(w))
        assert sum(int(m.sum()) for m in got) == k and not nan.any()
    assert fallbacks == []  # every bracket held the k-th score


def test_sampled_select_recovers_when_the_sample_misses(monkeypatch):
    # The prime stride sees only the entries set to 5.0: the sample says "all scores are 5", but
    # most are below 1. The bracket misses, and the whole group is selected instead: still exact.
    monkeypatch.setattr(host_select, "SAMPLE_SIZE", 64)
    x = np.random.default_rng(1).random(4096).astype(np.float32)
    stride = host_select._stride(x.size)
    x[::stride] = 5.0
    fallbacks = []
    real = host_select._whole_group
    monkeypatch.setattr(host_select, "_whole_group", lambda *a: fallbacks.append(1) or real(*a))
    k = x.size // 2
    got, _ = host_select.top_k_masks([x], [0], [k])
    np.testing.assert_array_equal(got[0], oracle_top_k([x], [0], [k])[0])
    assert fallbacks == [1]


def test_sampled_select_flags_nan_in_and_out_of_the_band(monkeypatch):
    monkeypatch.setattr(host_select, "SAMPLE_SIZE", 64)
    rng = np.random.default_rng(2)
    leaves = [rng.random(1000).astype(np.float32) for _ in range(3)]
    leaves[1][17] = np.nan
    for k in [1, 500, 2999]:
        _, nan = host_select.top_k_masks(leaves, [0, 0, 0], [k])
        assert nan.tolist() == [False, True, False]


RAW = np.array(
    SPECIAL + [F32.tiny, -F32.tiny, np.nextafter(F32.tiny, 0), 1.5, -2.25, 1e-30, -1e-30],
    np.float32,
)


@pytest.mark.parametrize("c", host_select.canonicalize(RAW))
def test_thresholds_on_raw_scores_compare_like_canonical_scores(c):
    with np.errstate(over="ignore"):  # nextafter(max, inf) is inf: wanted
        raw = np.concatenate([RAW, np.nextafter(RAW, np.inf), np.nextafter(RAW, -np.inf)])
    canonical = host_select.canonicalize(raw)
    np.testing.assert_array_equal(raw > host_select._above_bound(c), canonical > c)
    np.testing.assert_array_equal(raw <= host_select._above_bound(c), canonical <= c)
    np.testing.assert_array_equal(raw >= host_select._at_least_bound(c), canonical >= c)
    np.testing.assert_array_equal(raw < host_select._at_least_bound(c), canonical < c)


def test_host_masks_reach_jax_without_a_copy():
    # 64-byte aligned host masks: jax.device_put on the CPU keeps their buffer.
    x = np.random.default_rng(3).random((64, 300)).astype(np.float32)
    (mask,), _ = host_select.top_k_masks([x], [0], [100])
    assert mask.ctypes.data % 64 == 0
    assert np.shares_memory(np.asarray(jax.device_put(mask)), mask)


def test_a_missed_bracket_is_widened_before_the_whole_group_is_read(monkeypatch):
    # A first bracket of zero standard deviations (+-2 sample ranks) misses for most k; the wider
    # retry holds, so the whole group is never copied. The masks stay exact either way.
    monkeypatch.setattr(host_select, "SAMPLE_SIZE", 256)
    monkeypatch.setattr(host_select, "_BRACKET_SIGMAS", (0.0, 12.0))
    leaves = [
        np.random.default_rng(4).standard_normal(s).astype(np.float32) for s in [(40, 50), (3000,)]
    ]
    brackets, fallbacks = [], []
    real_bracket, real_whole = host_select._bracket, host_select._whole_group
    monkeypatch.setattr(
        host_select, "_bracket", lambda *a: brackets.append(a[2]) or real_bracket(*a)
    )
    monkeypatch.setattr(
        host_select, "_whole_group", lambda *a: fallbacks.append(1) or real_whole(*a)
    )
    for k in [3, 700, 2500, 4999]:
        got, _ = host_select.top_k_masks(leaves, [0, 0], [k])
        for g, w in zip(got, oracle_top_k(leaves, [0, 0], [k]), strict=True):
            np.testing.assert_array_equal(g, w)
    assert 12.0 in brackets and fallbacks == []
