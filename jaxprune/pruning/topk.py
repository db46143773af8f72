"""Exact top-k selection over groups of pytree leaves, without concatenating them.

This module is the engine behind ``global_mask``, ``layerwise_mask`` and ``random_mask``. A *group*
is a set of leaves ranked together (all prunable leaves for Global MP; one leaf per group for
layerwise selection). For each group it keeps exactly ``k`` entries: the ``k`` largest scores,
ties broken by earlier leaf (flatten order) and then lower flat (row-major) index, which is what a
stable descending sort of the concatenated scores gives.

Score semantics (shared by both methods, so that they agree bit for bit): scores are compared as
float32 after *canonicalisation*: ``-0.0`` equals ``0.0``, subnormals equal ``0.0`` (as on
accelerators that flush them), ``+-inf`` equal ``+-float32.max``. NaN scores are flagged (callers
raise).

Methods:
* ``"sort"``: the reference. Concatenates the canonical scores of a group, ranks them with a stable
  ``jnp.argsort`` on a monotone uint32 key, keeps the first ``k``. Simple and obviously right, but
  sorting 25M floats takes seconds on a CPU, and it gathers every leaf.
* ``"search"`` (default): a two-pass **radix select** on the uint32 key of each canonical score.
  Pass one scatter-adds every entry into a 2**16-bin histogram of its key's high 16 bits (one
  histogram per group, each leaf adding its own); a cumulative sum from the top finds the bucket
  that holds the ``k``-th largest key and how many entries lie above it. Pass two histograms the
  low 16 bits of the entries in that bucket, which pins the ``k``-th key ``t`` exactly, with the
  number of entries above it and equal to it. The mask is ``key > t``, plus the entries equal to
  ``t``: all of them when the budget allows, else the first ``need`` in (leaf, row-major index)
  order, found by per-leaf tie counts and, inside the one leaf that holds the cut, a per-axis
  search of the cut position.

Exactness on every device layout: everything the search decides is an integer (histogram counts,
keys, positions). Integer sums do not depend on the order in which devices add them, so a result
is the same bit for bit on one device, replicated, or with leaves sharded along any axis, eager or
under ``jax.jit``. No leaf is reshaped, concatenated or gathered: the histograms are small
replicated arrays that each device fills from its own shard (XLA adds the partial histograms),
and masks are elementwise in each leaf, so they keep the leaf's sharding. (An earlier version
counted with a floating-point division trick, ``floor(min(v, u) / u)``; XLA may compile a division
by a scalar as a multiplication by its reciprocal, which changed the counts on multi-device CPU
programs. Nothing here depends on floating-point rounding.)

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
_BITS = 16
_BINS = 1 << _BITS
_LOW_MASK = np.uint32(_BINS - 1)
# Keys of canonical scores lie in [order_key(-max), order_key(max)]; any other key is a NaN.
_KEY_MIN = np.uint32(0x00800000)
_KEY_MAX = np.uint32(0xFF7FFFFF)


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


def has_nan(leaves: Sequence[jax.Array]) -> jax.Array:
    """True iff any leaf has a NaN."""
    flags = [jnp.any(jnp.isnan(leaf)) for leaf in leaves if leaf.size]
    return jnp.any(jnp.stack(flags)) if flags else jnp.array(False)


def _check_inputs(leaves, group_of, num_groups):
    if len(leaves) != len(group_of):
        raise ValueError(f"got {len(leaves)} leaves but {len(group_of)} group ids")
    sizes = np.zeros(num_groups, np.int64)
    for leaf, g in zip(leaves, group_of, strict=True):
        sizes[g] += int(np.prod(np.shape(leaf), dtype=np.int64))
    if sizes.max(initial=0) >= 2**31:
        raise ValueError(f"a group has {int(sizes.max())} entries; at most 2**31 - 1 supported")
    return sizes


# ----------------------------------------------------------------------------------------------
# Reference: stable argsort of the concatenated keys.


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


# ----------------------------------------------------------------------------------------------
# Radix select.


def _histogram(keys, group_of, num_groups, bin_of) -> tuple[jax.Array, jax.Array]:
    """Histograms of ``_BINS`` bins, one per group, filled by scatter-adding every entry.

    ``bin_of(i, key)`` gives, per entry of leaf ``i``, its bin in ``[0, _BINS)``, or any value
    outside it to leave the entry out. The leaves of a group fill one shared histogram (pass one
    needs only group totals); with one group per leaf it gives per-leaf rows (pass two's tie
    counts). Each group is its own array, so a sharded leaf adds up across devices only its
    group's counters. Each leaf has its own NaN counter, after the group's ``_BINS`` bins.

    Returns:
      ``(counts, nan)``: int32 ``[num_groups, _BINS]`` and bool ``[num_leaves]`` (leaf has NaN).
    """
    members = [[i for i, g in enumerate(group_of) if g == group] for group in range(num_groups)]
    rows, nan_of, previous = [], {}, jnp.int32(0)
    for group_members in members:
        size = _BINS + len(group_members)
        hist = jnp.zeros((size,), jnp.int32)
        for j, i in enumerate(group_members):
            key = keys[i]
            # A zero that depends on the histogram filled last: XLA then builds one leaf's
            # indices at a time instead of all of them at once (extra memory: one leaf).
            b = bin_of(i, key) + jnp.minimum(previous, 0)
            nan = (key < _KEY_MIN) | (key > _KEY_MAX)
            inside = (b >= 0) & (b < _BINS)
            index = jnp.where(nan, _BINS + j, jnp.where(inside, b, size))
            hist = hist.at[index].add(1, mode="drop")
            previous = hist[0]
        rows.append(hist[:_BINS])
        for j, i in enumerate(group_members):
            nan_of[i] = hist[_BINS + j] > 0
    return jnp.stack(rows), jnp.stack([nan_of[i] for i in range(len(keys))])


def _group_sum(per_leaf: jax.Array, group_of: list[int], num_groups: int) -> jax.Array:
    """Sums per-leaf rows into per-group rows (static grouping)."""
    rows = []
    for g in range(num_groups):
        members = [i for i, gi in enumerate(group_of) if gi == g]
        rows.append(per_leaf[np.asarray(members)].sum(0, dtype=jnp.int32))
    return jnp.stack(rows)


def _locate(counts: jax.Array, ks: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Per group, the bin holding the ``k``-th largest entry and the count above that bin.

    Args:
      counts: int32 ``[groups, _BINS]``, bin ``b`` counting entries whose digit is ``b``.
      ks: int32 ``[groups]``, ``1 <= k <= counts.sum(1)`` where it matters.

    Returns:
      ``(bin, above)``: the largest ``b`` with ``count(digit >= b) >= k``, and
      ``count(digit > b)``.
    """
    # at_least[b] = count(digit >= b); top = the largest b with at_least[b] >= k.
    at_least = jnp.cumsum(counts[:, ::-1], axis=1, dtype=jnp.int32)[:, ::-1]
    enough = at_least >= ks[:, None]
    top = _BINS - 1 - jnp.argmax(enough[:, ::-1], axis=1).astype(jnp.int32)
    above = (
        jnp.take_along_axis(at_least, top[:, None], axis=1)[:, 0]
        - jnp.take_along_axis(counts, top[:, None], axis=1)[:, 0]
    )
    return top.astype(jnp.uint32), above


def _nth_position(tie: jax.Array, n: jax.Array) -> list[jax.Array]:
    """Per-axis indices of the ``n``-th True of ``tie`` in row-major order (``n >= 1``).

    Works axis by axis, without reshaping the leaf: the counts along axis ``j`` of the Trues whose
    earlier indices equal the ones already fixed give the index on that axis.
    """
    position: list[jax.Array] = []
    prefix = jnp.ones(tie.shape, bool)
    for axis in range(tie.ndim):
        selected = tie & prefix
        other = tuple(a for a in range(tie.ndim) if a != axis)
        per_index = jnp.sum(selected, axis=other, dtype=jnp.int32)
        running = jnp.cumsum(per_index, dtype=jnp.int32)
        index = jnp.argmax(running >= n).astype(jnp.int32)
        n = n - (running[index] - per_index[index])
        position.append(index)
        prefix = prefix & (lax.broadcasted_iota(jnp.int32, tie.shape, axis) == index)
    return position


def _row_major_at_most(shape: tuple[int, ...], position: list[jax.Array]) -> jax.Array:
    """Bool array: entry's row-major index <= the index of ``position``."""
    result = jnp.ones(shape, bool)
    for axis in reversed(range(len(shape))):
        iota = lax.broadcasted_iota(jnp.int32, shape, axis)
        result = (iota < position[axis]) | ((iota == position[axis]) & result)
    return result


def _tie_masks(keys, group_of, t, need, ties_per_leaf, partial):
    """Masks where the ``k``-th key ``t`` of a group is shared by more entries than it may keep.

    Per group with ``partial``, keeps every entry above ``t`` and the first ``need`` entries equal
    to ``t`` in (leaf, row-major index) order; other groups keep every entry ``>= t``. The number
    of ties in each leaf comes from the histograms; only the one leaf that holds the cut is
    searched for its position.
    """
    masks, before = [], {}
    for i, (key, g) in enumerate(zip(keys, group_of, strict=True)):
        tie = key == t[g]
        ties_here = ties_per_leaf[i]
        prior = before.get(g, jnp.int32(0))
        keep = jnp.where(partial[g], jnp.clip(need[g] - prior, 0, ties_here), ties_here)
        before[g] = prior + ties_here
        cut = (keep > 0) & (keep < ties_here)
        some = lax.cond(
            cut,
            lambda tie=tie, keep=keep: (
                tie & _row_major_at_most(tie.shape, _nth_position(tie, keep))
            ),
            lambda tie=tie, keep=keep: tie & (keep > 0),
        )
        masks.append((key > t[g]) | some)
    return masks


def _keys(leaves, after: jax.Array | None = None) -> list[jax.Array]:
    """uint32 order keys of the canonical scores, one array per leaf (0-d leaves get one axis).

    Each pass recomputes the keys from the scores instead of keeping them (which would cost as
    much memory as the scores): ``after`` is a value from the previous pass, folded in as a zero
    the compiler cannot see through, so that it does not merge the passes' key computations.
    """
    zero = jnp.float32(0) if after is None else jnp.minimum(after, 0).astype(jnp.float32)
    return [order_key(canonicalize((x if x.ndim else x[None]) + zero)) for x in leaves]


def _search_masks(leaves, group_of, ks, num_groups):
    group_of = [int(g) for g in group_of]
    live = ks > 0  # groups that keep nothing are masked out at the end
    k_eff = jnp.maximum(ks, 1)

    def high_bin(i, key):
        del i
        return (key >> _BITS).astype(jnp.int32)

    high_counts, nan = _histogram(_keys(leaves), group_of, num_groups, high_bin)
    high, above_high = _locate(high_counts, k_eff)

    def low_bin(i, key):
        in_bucket = (key >> _BITS) == high[group_of[i]]
        return jnp.where(in_bucket, (key & _LOW_MASK).astype(jnp.int32), -1)

    num_leaves = len(leaves)
    per_leaf, _ = _histogram(_keys(leaves, high[0]), list(range(num_leaves)), num_leaves, low_bin)
    low_counts = _group_sum(per_leaf, group_of, num_groups)
    low, above_low = _locate(low_counts, k_eff - above_high)
    t = (high << _BITS) | low  # the k-th largest key of each group
    above = above_high + above_low
    n_equal = jnp.take_along_axis(low_counts, low.astype(jnp.int32)[:, None], axis=1)[:, 0]
    need = k_eff - above  # entries equal to t that are kept, 1 <= need <= n_equal
    partial = (need < n_equal) & live
    low_of_leaf = low.astype(jnp.int32)[jnp.asarray(group_of)]
    ties_per_leaf = jnp.take_along_axis(per_leaf, low_of_leaf[:, None], axis=1)[:, 0]
    # The branches compute the keys themselves: keys passed in as operands would be kept whole.
    masks = lax.cond(
        jnp.any(partial),
        lambda: _tie_masks(_keys(leaves, low[0]), group_of, t, need, ties_per_leaf, partial),
        lambda: [key >= t[g] for key, g in zip(_keys(leaves, low[0]), group_of, strict=True)],
    )
    masks = [
        (m & live[g]).reshape(np.shape(leaf))
        for m, g, leaf in zip(masks, group_of, leaves, strict=True)
    ]
    return masks, nan


def _explicit_axes(leaves: list[jax.Array]) -> tuple[str, ...]:
    """Names of the Explicit mesh axes the leaves' shardings (in their types) use."""
    names: list[str] = []
    for leaf in leaves:
        sharding = getattr(jax.typeof(leaf), "sharding", None)
        mesh = getattr(sharding, "mesh", None)
        for name, kind in zip(
            getattr(mesh, "axis_names", ()), getattr(mesh, "axis_types", ()), strict=False
        ):
            if kind == jax.sharding.AxisType.Explicit and name not in names:
                names.append(name)
    return tuple(names)


def top_k_masks(
    leaves: Sequence[jax.Array],
    group_of: Sequence[int],
    ks: jax.Array,
    method: str = "search",
    *,
    single_device: bool = False,
) -> tuple[list[jax.Array], jax.Array]:
    """Keeps exactly ``ks[g]`` entries of each group of leaves (largest scores, stable ties).

    Args:
      leaves: score arrays (any float dtype; compared as canonical float32).
      group_of: for each leaf, the index of its group (static).
      ks: int32 array ``[num_groups]``, entries to keep per group, ``0 <= ks[g] <= group size``
        (may be traced).
      method: ``"search"`` (default, radix select) or ``"sort"`` (reference).
      single_device: the caller knows every leaf lives whole on one device: the radix select
        then works on flat views of the leaves (the same row-major order, so the same ties; its
        tie search is one axis deep and compiles in about a third of the time).

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
        select = lambda ls, k: (  # noqa: E731
            _sort_masks(ls, group_of, k, num_groups),
            jnp.stack([has_nan([leaf]) for leaf in ls]),
        )
    elif single_device:

        def select(ls, k):
            flat = [x.reshape(-1) for x in ls]
            masks, nan = _search_masks(flat, group_of, k, num_groups)
            return [m.reshape(x.shape) for m, x in zip(masks, ls, strict=True)], nan
    else:
        select = lambda ls, k: _search_masks(ls, group_of, k, num_groups)  # noqa: E731
    explicit = _explicit_axes(leaves)
    if not explicit:
        return select(leaves, ks)
    # Arrays sharded over Explicit mesh axes (``jax.make_mesh``'s default) carry their sharding
    # in their type, and a scatter into a replicated histogram has no sharding rule there: run
    # the selection with those axes in Auto mode and give each mask its leaf's sharding back.
    shardings = ([jax.typeof(leaf).sharding for leaf in leaves], jax.typeof(ks).sharding)
    masks_sharding = [s.update(spec=s.spec) for s in shardings[0]]
    nan_sharding = jax.sharding.NamedSharding(shardings[0][0].mesh, jax.sharding.PartitionSpec())
    return jax.sharding.auto_axes(
        select, axes=explicit, out_sharding=(masks_sharding, nan_sharding)
    )(leaves, ks)
