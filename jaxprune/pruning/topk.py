"""Exact top-k selection over groups of pytree leaves, without concatenating them.

This module is the engine behind ``global_mask``, ``layerwise_mask`` and ``random_mask``. A *group*
is a set of leaves ranked together (all prunable leaves for Global MP; one leaf per group for
layerwise selection). For each group it keeps exactly ``k`` entries: the ``k`` largest scores,
ties broken by earlier leaf (flatten order) and then lower flat index, which is what a stable
descending sort of the concatenated scores gives.

Score semantics (shared by both methods, so that they agree bit for bit): scores are compared as
float32 after *canonicalisation*: ``-0.0`` equals ``0.0``, subnormals equal ``0.0`` (as on
accelerators that flush them), ``+-inf`` equal ``+-float32.max``. NaN scores are rejected.

Methods:
* ``"sort"``: the reference. Concatenates the canonical scores of a group, ranks them with a stable
  ``jnp.argsort`` on a monotone uint32 key, keeps the first ``k``. Simple and obviously right, but
  sorting 25M floats takes seconds on a CPU.
* ``"search"`` (default): finds each group's k-th largest value by a search over the uint32 key
  space: two probes placed from a sorted strided sample, then Illinois-style interpolation
  steps, then bisection (at most 57 steps; about 10 on real weights). Each step counts, per
  leaf, the entries at least a threshold with a pure-arithmetic pass
  ``floor(min(max(s*v, 0), u) / u)``, which XLA vectorises (compare/select reductions are an
  order of magnitude slower on CPU). Counts are per-leaf scalars, so they add up across devices for
  sharded leaves, and extra memory is a few scalars per leaf. When the ``k``-th value is shared
  by more entries than the budget allows, the cutoff among the ties is found in the one leaf that
  holds it, from its per-row tie counts.

Both methods are pure, jit-compatible, and take ``k`` as a traced value.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

METHODS = ("search", "sort")

_F32 = np.finfo(np.float32)
MIN_NORMAL = np.float32(_F32.tiny)
MAX_FLOAT = np.float32(_F32.max)
_PARTIAL_SUM_LIMIT = 1 << 24  # float32 counts stay exact up to this many terms
# Search: Illinois-style interpolation on the count-vs-key curve for the first steps (about ten
# suffice on real weights), then bisection, which halves a 32-bit key interval in at most 33.
_ILLINOIS_STEPS = 24
_MAX_STEPS = _ILLINOIS_STEPS + 33
_SAMPLE = 1 << 16  # entries per group sampled to place the first two probes


def canonicalize(x: jax.Array) -> jax.Array:
    """Maps scores to canonical float32: -0 -> 0, subnormal -> 0, +-inf -> +-max."""
    x = jnp.clip(jnp.asarray(x, jnp.float32), -MAX_FLOAT, MAX_FLOAT)
    return jnp.where(jnp.abs(x) < MIN_NORMAL, jnp.float32(0), x)


def order_key(x: jax.Array) -> jax.Array:
    """Monotone map from canonical float32 to uint32 (larger float -> larger key)."""
    bits = lax.bitcast_convert_type(x, jnp.uint32)
    negative = (bits >> 31) != 0
    return jnp.where(negative, ~bits, bits | jnp.uint32(0x80000000))


def key_to_float(key: jax.Array) -> jax.Array:
    """Inverse of ``order_key``."""
    high = (key >> 31) != 0
    bits = jnp.where(high, key & jnp.uint32(0x7FFFFFFF), ~key)
    return lax.bitcast_convert_type(bits, jnp.float32)


def _as_columns(v: jax.Array) -> jax.Array:
    """Views a leaf as 2-D with at most 2**24 rows so float32 column sums are exact counts."""
    v = jnp.asarray(v, jnp.float32)
    if v.ndim >= 2 and v.size // v.shape[-1] <= _PARTIAL_SUM_LIMIT:
        return v.reshape(-1, v.shape[-1])
    flat = v.reshape(-1)
    cols = 1024
    pad = (-flat.size) % cols
    # Zero padding is neutral for both branches of ``_count_at_least``.
    return jnp.pad(flat, (0, pad)).reshape(-1, cols)


def _round_up_to_canonical(x: jax.Array) -> jax.Array:
    """Rounds thresholds up to the next canonical value.

    A subnormal ``x > 0`` becomes MIN_NORMAL and a subnormal ``x < 0`` becomes 0, decided on the
    bits so that flush-to-zero hardware agrees.
    """
    bits = lax.bitcast_convert_type(x, jnp.uint32)
    subnormal = ((bits & jnp.uint32(0x7F800000)) == 0) & ((bits & jnp.uint32(0x007FFFFF)) != 0)
    negative = (bits >> 31) != 0
    rounded = jnp.where(negative, jnp.float32(0), MIN_NORMAL)
    return jnp.where(subnormal, rounded, x)


def _indicator_scalars(x: jax.Array) -> tuple[jax.Array, ...]:
    """Per-threshold scalars ``(sign, u, flip, live)`` for ``_at_least``.

    ``[v >= x] = flip + (1 - 2 flip) * live * h`` with ``h = floor(min(max(sign*v, 0), u) / u)``:
    for ``x > 0``, ``h = [v >= u]`` with ``u = max(x, MIN_NORMAL)`` (for normal ``w < u`` the
    quotient rounds to at most ``1 - 2**-24``; subnormal ``w`` give 0 as their canonical value
    does); for ``x <= 0`` it takes the complement, ``[v < x] = [-v >= nextafter(-x, inf)]``;
    ``live = 0`` when ``x <= -max`` (everything is ``>= x``).
    """
    x = _round_up_to_canonical(x)
    positive = x > 0
    sign = jnp.where(positive, jnp.float32(1), jnp.float32(-1))
    u_pos = jnp.clip(x, MIN_NORMAL, MAX_FLOAT)
    u_neg = jnp.clip(jnp.nextafter(-x, jnp.float32(jnp.inf)), MIN_NORMAL, MAX_FLOAT)
    u = jnp.where(positive, u_pos, u_neg)
    flip = jnp.where(positive, jnp.float32(0), jnp.float32(1))
    live = jnp.where(x <= -MAX_FLOAT, jnp.float32(0), jnp.float32(1))
    # Materialise the scalars so XLA does not recompute them for every element.
    return lax.optimization_barrier((sign, u, flip, live))


def _hits(v: jax.Array, sign, u, nonneg: bool) -> jax.Array:
    if nonneg:
        return jnp.floor(jnp.minimum(v, u) / u)
    return jnp.floor(jnp.minimum(jnp.maximum(v * sign, 0), u) / u)


def _at_least(v: jax.Array, scalars, nonneg: bool) -> jax.Array:
    """Elementwise float 0/1 indicator of ``canonical(v) >= x`` (pure arithmetic)."""
    sign, u, flip, live = scalars
    h = _hits(v, sign, u, nonneg)
    return h if nonneg else flip + (1 - 2 * flip) * live * h


def _count_at_least(columns: jax.Array, size: int, scalars, nonneg: bool) -> jax.Array:
    """Exact int32 number of canonical entries ``>= x`` in one leaf (see ``_indicator_scalars``).

    ``nonneg=True`` (all entries >= 0 and ``x > 0``) drops the sign and the clamp at 0, which
    makes the pass about twice as fast.
    """
    sign, u, flip, live = scalars
    h = _hits(columns, sign, u, nonneg)
    count = jnp.sum(jnp.sum(h, axis=-1).astype(jnp.int32))
    if nonneg:
        return count
    flip_i, live_i = flip.astype(jnp.int32), live.astype(jnp.int32)
    return flip_i * size + (1 - 2 * flip_i) * live_i * count


def _group_sum(values: jax.Array, group_of: np.ndarray, num_groups: int) -> jax.Array:
    return jnp.zeros((num_groups,), values.dtype).at[group_of].add(values)


def _check_inputs(leaves, group_of, num_groups):
    if len(leaves) != len(group_of):
        raise ValueError(f"got {len(leaves)} leaves but {len(group_of)} group ids")
    sizes = np.zeros(num_groups, np.int64)
    for leaf, g in zip(leaves, group_of, strict=True):
        sizes[g] += int(np.prod(np.shape(leaf), dtype=np.int64))
    if sizes.max(initial=0) >= 2**31:
        raise ValueError(f"a group has {int(sizes.max())} entries; at most 2**31 - 1 supported")
    return sizes


def has_nan(leaves: Sequence[jax.Array]) -> jax.Array:
    """True iff any leaf has a NaN (max/min reductions propagate NaN)."""
    flags = [jnp.isnan(jnp.max(leaf)) | jnp.isnan(jnp.min(leaf)) for leaf in leaves if leaf.size]
    return jnp.any(jnp.stack(flags)) if flags else jnp.array(False)


def _sort_masks(leaves, group_of, ks, num_groups):
    masks = [None] * len(leaves)
    for g in range(num_groups):
        members = [i for i, gi in enumerate(group_of) if gi == g]
        keys = jnp.concatenate([order_key(canonicalize(leaves[i])).reshape(-1) for i in members])
        order = jnp.argsort(~keys, stable=True)
        rank = (
            jnp.zeros(keys.shape, jnp.int32).at[order].set(jnp.arange(keys.size, dtype=jnp.int32))
        )
        keep = rank < ks[g]
        start = 0
        for i in members:
            size = leaves[i].size
            masks[i] = keep[start : start + size].reshape(leaves[i].shape)
            start += size
    return masks


def _count_leaves(columns, sizes, t_per_leaf, all_nonneg) -> jax.Array:
    """int32 ``[num_leaves]``: entries of leaf ``i`` that are ``>= t_per_leaf[i]``."""
    scalars = _indicator_scalars(t_per_leaf)

    def per_leaf(nonneg):
        return jnp.stack(
            [
                _count_at_least(c, n, tuple(s[i] for s in scalars), nonneg)
                for i, (c, n) in enumerate(zip(columns, sizes, strict=True))
            ]
        )

    fast = all_nonneg & jnp.all(t_per_leaf > 0)
    return lax.cond(fast, lambda: per_leaf(True), lambda: per_leaf(False))


def _sample_probes(columns, group_of, ks, sizes, num_groups):
    """Two keys per group that bracket the k-th largest value with high probability.

    A strided sample of about ``_SAMPLE`` entries per group is sorted; the probes sit a few
    binomial standard deviations either side of the sample's ``k/n`` quantile. Correctness never
    depends on them: they only shorten the search.
    """
    probes_lo, probes_hi = [], []
    for g in range(num_groups):
        members = [i for i, gi in enumerate(group_of) if gi == g]
        n = sum(sizes[i] for i in members)
        stride = max(1, n // _SAMPLE)
        sample = jnp.concatenate([columns[i].reshape(-1)[: sizes[i]][::stride] for i in members])
        keys = jnp.sort(order_key(canonicalize(sample)))  # ascending
        m = keys.size
        q = 1.0 - ks[g].astype(jnp.float32) / n  # ascending position of the k-th largest
        spread = 3.5 * jnp.sqrt(m * q * (1.0 - q)) + 2.0
        centre = q * m
        lo_index = jnp.clip(jnp.floor(centre - spread), 0, m - 1).astype(jnp.int32)
        hi_index = jnp.clip(jnp.ceil(centre + spread), 0, m - 1).astype(jnp.int32)
        probes_lo.append(keys[lo_index])
        probes_hi.append(keys[hi_index])
    return jnp.stack(probes_lo), jnp.stack(probes_hi)


def _search_thresholds(columns, sizes_per_leaf, group_of, ks, num_groups):
    """Per group, a threshold key ``t`` with ``count(>= t) >= k``, and the per-leaf counts.

    Returns ``(t_key, ge_leaf, gt_leaf, exact, nan)``: ``ge_leaf`` counts entries ``>= t`` per
    leaf; when ``exact`` (``count(>= t) == k``) those entries are the answer; otherwise ``t`` is
    the k-th largest value itself and ``gt_leaf`` counts entries strictly above it. ``nan`` flags
    leaves with NaN scores (from the same min pass that decides the non-negative fast path).
    """
    leaf_min = jnp.stack([jnp.min(c) for c in columns])  # NaN propagates: also the NaN check
    all_nonneg = jnp.all(leaf_min >= 0)
    sizes_leaf = jnp.asarray(sizes_per_leaf, jnp.int32)

    def count_leaves(keys):
        t = _round_up_to_canonical(key_to_float(keys))
        return _count_leaves(columns, sizes_per_leaf, t[group_of], all_nonneg)

    def group(per_leaf):
        return _group_sum(per_leaf, group_of, num_groups)

    def bracket(state, keys, leaf_counts, active):
        """Moves lo or hi to ``keys`` where active, keeping the invariant."""
        lo, hi, lo_leaf, hi_leaf = state
        counts = group(leaf_counts)
        up = active & (counts >= ks) & (keys > lo)
        down = active & (counts < ks) & (keys < hi)
        up_leaf, down_leaf = up[group_of], down[group_of]
        return (
            (
                jnp.where(up, keys, lo),
                jnp.where(down, keys, hi),
                jnp.where(up_leaf, leaf_counts, lo_leaf),
                jnp.where(down_leaf, leaf_counts, hi_leaf),
            ),
            up,
            down,
        )

    # Invariant: count(>= lo) >= k > count(>= hi).
    lo = jnp.full((num_groups,), order_key(-MAX_FLOAT))  # every canonical entry is >= -max
    hi = jnp.full((num_groups,), order_key(MAX_FLOAT) + jnp.uint32(1))
    state = (lo, hi, sizes_leaf, jnp.zeros_like(sizes_leaf))
    probe_lo, probe_hi = _sample_probes(columns, group_of, ks, sizes_per_leaf, num_groups)
    live = ks > 0
    state, _, _ = bracket(state, probe_lo, count_leaves(probe_lo), live)
    state, _, _ = bracket(state, probe_hi, count_leaves(probe_hi), live)

    def done(lo, hi, lo_leaf):
        return (hi - lo <= 1) | (group(lo_leaf) == ks) | (ks <= 0)

    def cond(carry):
        (lo, hi, lo_leaf, _), _, _, _, step = carry
        return jnp.any(~done(lo, hi, lo_leaf)) & (step < _MAX_STEPS)

    def body(carry):
        state, f_lo, f_hi, last, step = carry
        lo, hi, lo_leaf, _ = state
        width = hi - lo
        frac = f_lo / jnp.maximum(f_lo - f_hi, jnp.float32(1e-30))
        guess = jnp.minimum(frac * width.astype(jnp.float32), jnp.float32(4294967040.0))
        offset = jnp.where(step < _ILLINOIS_STEPS, guess.astype(jnp.uint32), width // 2)
        offset = jnp.clip(offset, jnp.uint32(1), jnp.maximum(width, 2) - jnp.uint32(1))
        mid = lo + offset
        mid_leaf = count_leaves(mid)
        f_mid = (group(mid_leaf) - ks).astype(jnp.float32)
        state, up, down = bracket(state, mid, mid_leaf, ~done(lo, hi, lo_leaf))
        # Illinois rule: an endpoint kept twice in a row has its weight halved.
        f_lo = jnp.where(up, f_mid, jnp.where(down & (last == -1), f_lo / 2, f_lo))
        f_hi = jnp.where(down, f_mid, jnp.where(up & (last == 1), f_hi / 2, f_hi))
        last = jnp.where(up, 1, jnp.where(down, -1, last)).astype(jnp.int32)
        return state, f_lo, f_hi, last, step + 1

    f_lo = (group(state[2]) - ks).astype(jnp.float32)
    f_hi = (group(state[3]) - ks).astype(jnp.float32)
    last = jnp.zeros((num_groups,), jnp.int32)
    carry = (state, f_lo, f_hi, last, jnp.int32(0))
    (lo, hi, lo_leaf, hi_leaf), *_ = lax.while_loop(cond, body, carry)
    exact = (group(lo_leaf) == ks) | (ks <= 0)
    return lo, lo_leaf, hi_leaf, exact, jnp.isnan(leaf_min)


def _tie_cutoff(columns: jax.Array, t: jax.Array, keep: jax.Array) -> jax.Array:
    """Smallest flat index ``p`` such that ``keep`` entries equal to ``t`` lie before ``p``.

    One pass counts ties per row of the 2-D view; a cumulative sum over rows finds the row that
    holds the cutoff, and one over that row finds the column. Requires ``0 < keep <= ties``.
    """
    cols = columns.shape[-1]
    tie = _at_least(columns, _indicator_scalars(t), False) - jnp.where(
        t >= MAX_FLOAT, 0.0, _at_least(columns, _indicator_scalars(_next_value(t)), False)
    )
    per_row = jnp.sum(tie, axis=-1).astype(jnp.int32)
    running = jnp.cumsum(per_row)
    row = jnp.argmax(running >= keep)
    before = running[row] - per_row[row]
    in_row = jnp.cumsum(lax.dynamic_index_in_dim(tie, row, keepdims=False).astype(jnp.int32))
    col = jnp.argmax(before + in_row >= keep)
    return (row * cols + col + 1).astype(jnp.int32)


def _next_value(t: jax.Array) -> jax.Array:
    """The next canonical float32 above ``t`` (``t`` itself at the top, never used there)."""
    return _round_up_to_canonical(
        key_to_float(order_key(t) + jnp.where(t >= MAX_FLOAT, 0, 1).astype(jnp.uint32))
    )


def _search_masks(leaves, group_of, ks, num_groups):
    sizes = [int(leaf.size) for leaf in leaves]
    columns = [_as_columns(leaf) for leaf in leaves]
    t_key, ge_leaf, gt_leaf, exact, nan = _search_thresholds(
        columns, sizes, group_of, ks, num_groups
    )
    # A threshold strictly between canonical values counts like the next value up; make it that
    # value so that the comparisons below agree with the counts on flush-to-zero hardware.
    t = _round_up_to_canonical(key_to_float(t_key))

    # Where the k-th value t is shared by more entries than the budget allows, keep all entries
    # above t and the first `need` entries equal to t in (leaf, flat index) order. In exact
    # groups every entry >= t is kept. (One code path: a lax.cond over all leaves costs copies.)
    n_tied = ge_leaf - gt_leaf
    need = ks - _group_sum(gt_leaf, group_of, num_groups)
    masks, before = [], [jnp.int32(0)] * num_groups
    for i, (leaf, g) in enumerate(zip(leaves, group_of, strict=True)):
        all_ties = jnp.int32(leaf.size)  # cutoff that keeps every entry equal to t
        keep = jnp.clip(need[g] - before[g], 0, n_tied[i])
        before[g] = before[g] + n_tied[i]
        partial = ~exact[g] & (keep > 0) & (keep < n_tied[i])
        cutoff = lax.cond(
            partial,
            lambda i=i, g=g, keep=keep: _tie_cutoff(columns[i], t[g], keep),
            lambda keep=keep, g=g, full=all_ties: jnp.where(
                exact[g] | (keep > 0), full, jnp.int32(0)
            ),
        )
        canon = canonicalize(leaf)
        index = jnp.arange(leaf.size, dtype=jnp.int32).reshape(leaf.shape)
        masks.append(((canon > t[g]) | ((canon == t[g]) & (index < cutoff))) & (ks[g] > 0))
    return masks, nan


def top_k_masks(
    leaves: Sequence[jax.Array],
    group_of: Sequence[int],
    ks: jax.Array,
    method: str = "search",
) -> tuple[list[jax.Array], jax.Array]:
    """Keeps exactly ``ks[g]`` entries of each group of leaves (largest scores, stable ties).

    Args:
      leaves: score arrays (any float dtype; compared as canonical float32).
      group_of: for each leaf, the index of its group (static).
      ks: int32 array ``[num_groups]``, entries to keep per group, ``0 <= ks[g] <= group size``
        (may be traced).
      method: ``"search"`` (default, fast) or ``"sort"`` (reference).

    Returns:
      ``(masks, nan)``: one bool array per leaf, shaped like the leaf, and a bool ``[num_leaves]``
      flagging leaves with NaN scores (their masks are meaningless; callers must raise).
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    group_of = np.asarray(group_of, np.int32)
    num_groups = int(group_of.max()) + 1 if group_of.size else 0
    if num_groups == 0:
        return [], jnp.zeros((0,), bool)
    _check_inputs(leaves, group_of, num_groups)
    ks = jnp.asarray(ks, jnp.int32).reshape(num_groups)
    leaves = [jnp.asarray(leaf, jnp.float32) for leaf in leaves]
    if method == "sort":
        masks = _sort_masks(leaves, group_of, ks, num_groups)
        return masks, jnp.stack([has_nan([leaf]) for leaf in leaves])
    return _search_masks(leaves, group_of, ks, num_groups)
