"""The radix select of ``topk`` in NumPy, for concrete scores that live on the host CPU.

``jax.jit`` compiles the radix select (two 65,536-bin histograms, a tie search) into an XLA
program that takes one to several seconds to build, once per tree shape: for a one-shot prune of
a small model on CPU that is most of the prune's cost. When the scores are concrete arrays held
whole by one CPU device, the same algorithm runs here in NumPy on the same buffers, with no
compilation: the same keys, the same histograms, the same threshold, the same (leaf, row-major)
tie order, so the same masks bit for bit (tested against ``topk``'s search and sort). Nothing
is concatenated: each pass reads one leaf at a time.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# The compiled select's digit split and key bounds: both paths must agree bit for bit.
from jaxprune.pruning.topk import (
    _BINS,
    _BITS,
    _KEY_MAX,
    _KEY_MIN,
    _LOW_MASK,
    MAX_FLOAT,
    MIN_NORMAL,
)

_SIGN = np.uint32(0x80000000)


def order_keys(scores: np.ndarray) -> np.ndarray:
    """Flat uint32 order keys of canonical float32 scores (``topk.canonicalize``/``order_key``)."""
    x = np.asarray(scores, np.float32).reshape(-1)
    x = np.clip(x, -MAX_FLOAT, MAX_FLOAT)
    x = np.where(np.abs(x) < MIN_NORMAL, np.float32(0), x)
    bits = x.view(np.uint32)
    return np.where(bits >= _SIGN, ~bits, bits | _SIGN)


def _locate(counts: np.ndarray, k: int) -> tuple[int, int]:
    """The largest bin ``b`` with ``count(digit >= b) >= k``, and ``count(digit > b)``."""
    at_least = np.cumsum(counts[::-1])[::-1]
    enough = np.flatnonzero(at_least >= k)
    top = int(enough[-1]) if enough.size else _BINS - 1
    return top, int(at_least[top] - counts[top])


def _valid(keys: np.ndarray) -> np.ndarray:
    return (keys >= _KEY_MIN) & (keys <= _KEY_MAX)


def _group_masks(keys: list[np.ndarray], k: int) -> list[np.ndarray]:
    """Keeps the ``k`` largest keys of one group (ties: earlier leaf, lower flat index)."""
    if k <= 0:
        return [np.zeros(key.shape, bool) for key in keys]
    high_counts = np.zeros(_BINS, np.int64)
    for key in keys:
        high_counts += np.bincount((key[_valid(key)] >> _BITS).astype(np.intp), minlength=_BINS)
    high, above_high = _locate(high_counts, k)
    low_counts = np.zeros(_BINS, np.int64)
    for key in keys:
        bucket = key[_valid(key) & ((key >> _BITS) == high)]
        low_counts += np.bincount((bucket & _LOW_MASK).astype(np.intp), minlength=_BINS)
    low, above_low = _locate(low_counts, k - above_high)
    t = np.uint32((high << _BITS) | low)
    need = k - above_high - above_low  # entries equal to t that are kept
    masks = []
    for key in keys:
        mask = (key > t) & _valid(key)
        if need > 0:
            ties = np.flatnonzero(key == t)[:need]
            mask[ties] = True
            need -= ties.size
        masks.append(mask)
    return masks


def top_k_masks(
    leaves: Sequence[np.ndarray], group_of: Sequence[int], ks: Sequence[int]
) -> tuple[list[np.ndarray], np.ndarray]:
    """NumPy twin of ``topk.top_k_masks`` (same arguments and results, as NumPy arrays).

    Args:
      leaves: score arrays (compared as canonical float32).
      group_of: for each leaf, the index of its group.
      ks: entries to keep per group, ``0 <= ks[g] <= group size``.

    Returns:
      ``(masks, nan)``: one bool array per leaf, shaped like the leaf, and bool ``[num_leaves]``
      flagging leaves with NaN scores (their masks are meaningless; callers must raise).
    """
    keys = [order_keys(leaf) for leaf in leaves]
    nan = np.array([not bool(_valid(key).all()) for key in keys], bool)
    masks: list[np.ndarray | None] = [None] * len(leaves)
    for g, k in enumerate(np.asarray(ks, np.int64).reshape(-1)):
        members = [i for i, gi in enumerate(group_of) if gi == g]
        for i, mask in zip(members, _group_masks([keys[i] for i in members], int(k)), strict=True):
            masks[i] = mask.reshape(np.shape(leaves[i]))
    return masks, nan


def global_select(
    leaves: Sequence[np.ndarray], n_keep: int, floors: Sequence[int], with_floors: bool
) -> tuple[list[np.ndarray], np.ndarray]:
    """NumPy twin of ``select._global_select``: global top ``n_keep``, each leaf its floor first."""
    if not with_floors:
        return top_k_masks(leaves, [0] * len(leaves), [n_keep])
    floor_masks, nan = top_k_masks(leaves, list(range(len(leaves))), floors)
    # Floor-kept entries leave the global ranking (they rank below every real score).
    rest = [
        np.where(m, -np.inf, np.asarray(s, np.float32)).astype(np.float32)
        for m, s in zip(floor_masks, leaves, strict=True)
    ]
    extra, _ = top_k_masks(rest, [0] * len(leaves), [n_keep - int(np.sum(floors))])
    return [f | r for f, r in zip(floor_masks, extra, strict=True)], nan
