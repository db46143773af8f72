"""Exact top-k masks in NumPy for concrete scores on the host CPU: a sampled select.

``jax.jit`` compiles the radix select of ``topk`` into an XLA program that takes one to several
seconds to build, once per tree shape, and then runs its histograms as scatters (a few ns per
entry on a CPU). When the scores are concrete arrays held whole by one CPU device, this module
selects on the same buffers in NumPy instead, with Floyd and Rivest's idea (sample, bracket,
select in the bracket):

1. **Sample.** Every ``p``-th entry of the group, ``p`` prime (so the sample visits every residue
   of any power-of-two axis: a stride of 64 on a kernel with 64 output channels would see one
   channel only). About ``SAMPLE_SIZE`` entries; ``np.partition`` of their canonical values gives
   two values ``lo <= hi`` that bracket the ``k``-th largest score with high probability.
2. **Band.** One pass per leaf, in cache-sized chunks, writes the mask of the entries above ``hi``
   (it becomes the leaf's mask), counts them, and copies out the positions and values of the
   entries in ``[lo, hi]`` (and NaNs, to flag them): a fraction of a percent of the scores.
3. **Select in the band.** The ``k``-th largest score ``t`` is the ``(k - above)``-th largest of the
   band: ``np.partition`` of a small array.
4. **Masks.** The band's entries above ``t`` are set by position, and those equal to ``t``: all of
   them, or where ``t`` is shared by more entries than the budget allows, the first ``need`` in
   (leaf, row-major index) order.

If the bracket misses (an unlucky sample, or NaNs), step 2 runs again with a bracket four times
as wide, and then with the whole group as the band: the result is exact whatever the sample;
only the time (and, for the whole group, the memory) depends on it. Groups of at most
``2 * SAMPLE_SIZE`` entries skip the sample. Nothing large is concatenated: each pass reads one leaf
at a time and only the band (and the sample) is copied.

Scores compare as canonical float32, like ``topk`` (``-0 == 0``, subnormals ``== 0``,
``+-inf == +-float32.max``): the band is canonicalised, and each threshold on the raw scores is
moved to the raw value with the same canonical comparison (``_above_bound``, ``_at_least_bound``),
so the large arrays are compared as they are. The masks equal ``topk``'s search and sort bit for
bit (property-tested).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from jaxprune.pruning.topk import MAX_FLOAT, MIN_NORMAL

# Entries sampled per group (about); groups up to twice this size are selected whole.
SAMPLE_SIZE = 1 << 17
# The bracket spans this many standard deviations of the sample quantile on each side. The first
# misses the k-th score in about 0.3% of calls; then the wider one, then the whole group.
_BRACKET_SIGMAS = (3.0, 12.0)
_PRIMES = (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59, 61, 67, 71, 73, 79)
_LARGEST_SUBNORMAL = np.nextafter(MIN_NORMAL, np.float32(0))


def canonicalize(x: np.ndarray) -> np.ndarray:
    """Canonical float32 copy: ``-0 -> 0``, subnormal ``-> 0``, ``+-inf -> +-max`` (NaN stays)."""
    x = np.clip(np.asarray(x, np.float32), -MAX_FLOAT, MAX_FLOAT)
    x[np.abs(x) < MIN_NORMAL] = 0
    return x


def _above_bound(c: np.float32) -> np.float32:
    """The largest raw float32 whose canonical value is ``<= c`` (``c`` canonical).

    So ``canonical(x) > c`` is ``x > bound`` and ``canonical(x) <= c`` is ``x <= bound``; NaN is
    neither.
    """
    if c == MAX_FLOAT:
        return np.float32(np.inf)
    if c == 0:
        return _LARGEST_SUBNORMAL
    return np.float32(c)


def _at_least_bound(t: np.float32) -> np.float32:
    """The smallest raw float32 whose canonical value is ``>= t`` (``t`` canonical).

    So ``canonical(x) >= t`` is ``x >= bound`` and ``canonical(x) < t`` is ``x < bound``.
    """
    if t == -MAX_FLOAT:
        return np.float32(-np.inf)
    if t == 0:
        return -_LARGEST_SUBNORMAL
    return np.float32(t)


def _new_mask(shape: tuple[int, ...]) -> np.ndarray:
    """An uninitialised bool array on a 64-byte boundary.

    ``jax.device_put`` of such an array on the CPU keeps its buffer (no copy): the masks of a
    ResNet-50 reach the caller as JAX arrays about 7 ms sooner.
    """
    size = math.prod(shape)
    buffer = np.empty(size + 64, np.uint8)
    offset = -buffer.ctypes.data % 64
    return buffer[offset : offset + size].view(bool).reshape(shape)


def _none_kept(x: np.ndarray) -> np.ndarray:
    mask = _new_mask(x.shape)
    mask[...] = False
    return mask


def _stride(n: int) -> int:
    """A prime stride that samples about ``SAMPLE_SIZE`` of ``n`` entries."""
    want = n / SAMPLE_SIZE
    return next((p for p in _PRIMES if p >= want), None) or _next_prime(math.ceil(want))


def _next_prime(n: int) -> int:
    while any(n % d == 0 for d in range(2, math.isqrt(n) + 1)):
        n += 1
    return n


def _bracket(
    leaves: list[np.ndarray], k: int, sigmas: float
) -> tuple[np.float32 | None, np.float32 | None]:
    """Canonical ``(lo, hi)`` around the ``k``-th largest score; ``None`` means unbounded."""
    n = sum(x.size for x in leaves)
    if n <= 2 * SAMPLE_SIZE:
        return None, None
    stride, start, parts = _stride(n), 0, []
    for x in leaves:  # every stride-th entry of the (virtual) concatenation of the group
        parts.append(x[(-start) % stride :: stride])
        start += x.size
    sample = canonicalize(np.concatenate(parts))
    sample = sample[~np.isnan(sample)]
    size = sample.size
    if size == 0:
        return None, None
    rank = k * size / n  # where the k-th largest score should sit in the sample, from the top
    spread = sigmas * math.sqrt(rank * max(0.0, 1 - rank / size)) + 2
    hi_rank, lo_rank = math.floor(rank - spread), math.ceil(rank + spread)
    positions = [size - r for r in (hi_rank, lo_rank) if 1 <= r <= size]
    if positions:
        sample = np.partition(sample, positions)
    hi = sample[size - hi_rank] if hi_rank >= 1 else None
    lo = sample[size - lo_rank] if lo_rank <= size else None
    return lo, hi


# Leaves are read in chunks of this many entries, so that the pass's temporaries stay in cache.
_CHUNK = 1 << 18


class _Band:
    """One leaf's entries in the band: flat positions (ascending), canonical values, NaN flag."""

    def __init__(self, positions: np.ndarray, values: np.ndarray, has_nan: bool):
        self.positions, self.values, self.has_nan = positions, values, has_nan


def _split(x: np.ndarray, lo, hi) -> tuple[np.ndarray, int, _Band]:
    """One pass over flat ``x``: the scores above ``hi`` (mask and count) and the band ``[lo, hi]``.

    ``None`` leaves the band unbounded on that side. NaNs join the band, to be flagged there.
    """
    above = _new_mask(x.shape)
    high = np.float32(np.inf) if hi is None else _above_bound(hi)
    low = None if lo is None else _at_least_bound(lo)
    chunk = min(_CHUNK, x.size)
    below_lo, chosen = np.empty(chunk, bool), np.empty(chunk, bool)
    positions, values, count = [], [], 0
    for start in range(0, x.size, _CHUNK):
        part = x[start : start + _CHUNK]
        n = part.size
        part_above = np.greater(part, high, out=above[start : start + n])
        count += int(np.count_nonzero(part_above))
        if low is None:
            np.logical_not(part_above, out=chosen[:n])
        else:
            np.less(part, low, out=below_lo[:n])
            # Both False: in the band, or NaN (never both True: lo <= hi).
            np.equal(below_lo[:n], part_above, out=chosen[:n])
        index = np.flatnonzero(chosen[:n])
        positions.append(index + start)
        values.append(part[index])
    positions, values = np.concatenate(positions), np.concatenate(values)
    nan = np.isnan(values)
    has_nan = bool(nan.any())
    if has_nan:
        positions, values = positions[~nan], values[~nan]
    return above, count, _Band(positions, canonicalize(values), has_nan)


def _kth(values: np.ndarray, rank: int) -> tuple[np.float32, int]:
    """The ``rank``-th largest of ``values`` (``rank >= 1``) and how many of its copies are kept."""
    t = np.partition(values, values.size - rank)[values.size - rank]
    return t, rank - int(np.count_nonzero(values > t))


def _whole_group(leaves: list[np.ndarray], k: int) -> tuple[list[np.ndarray], list[bool]]:
    """Selects with the whole group as the band: small groups, or when the sample missed."""
    nan = [bool(np.isnan(x).any()) for x in leaves]
    values = canonicalize(np.concatenate(leaves))
    values = values[~np.isnan(values)]
    rank = min(k, values.size)  # < k only with NaNs (meaningless masks)
    if rank <= 0:
        return [_none_kept(x) for x in leaves], nan
    t, need = _kth(values, rank)
    above, at_least = _above_bound(t), _at_least_bound(t)
    masks = []
    for x in leaves:
        mask = np.greater(x, above, out=_new_mask(x.shape))
        if need > 0:
            tie = np.flatnonzero((x >= at_least) & (x <= above))
            mask[tie[:need]] = True
            need -= tie.size
        masks.append(mask)
    return masks, nan


def _group_masks(leaves: list[np.ndarray], k: int) -> tuple[list[np.ndarray], list[bool]]:
    """Keeps the ``k`` largest canonical scores of one group of flat leaves.

    Ties go to the earlier leaf, then the lower flat index. Returns the masks and, per leaf,
    whether it holds a NaN (its mask is then meaningless; callers raise).
    """
    if k <= 0:
        return [_none_kept(x) for x in leaves], [bool(np.isnan(x).any()) for x in leaves]
    for sigmas in _BRACKET_SIGMAS:
        lo, hi = _bracket(leaves, k, sigmas)
        if lo is None and hi is None:  # a small group (or sample): select it whole
            break
        split = [_split(x, lo, hi) for x in leaves]
        above = sum(count for _, count, _ in split)
        values = np.concatenate([band.values for _, _, band in split])
        if above < k <= above + values.size:  # else the sample missed (or NaNs): widen
            return _band_masks(split, values, k - above)
    return _whole_group(leaves, k)


def _band_masks(split, values: np.ndarray, rank: int) -> tuple[list[np.ndarray], list[bool]]:
    """Completes each leaf's mask (the entries above the band) with the band's kept entries."""
    t, need = _kth(values, rank)
    masks = []
    for mask, _, band in split:
        kept = band.values > t
        if need > 0:
            tie = np.flatnonzero(band.values == t)[:need]
            kept[tie] = True
            need -= tie.size
        mask[band.positions[kept]] = True
        masks.append(mask)
    return masks, [band.has_nan for _, _, band in split]


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
    flat = [np.ravel(np.asarray(leaf, np.float32)) for leaf in leaves]  # row-major views
    masks: list[np.ndarray | None] = [None] * len(leaves)
    nan = np.zeros(len(leaves), bool)
    for g, k in enumerate(np.asarray(ks, np.int64).reshape(-1)):
        members = [i for i, gi in enumerate(group_of) if gi == g]
        chosen, flags = _group_masks([flat[i] for i in members], int(k))
        for i, mask, flag in zip(members, chosen, flags, strict=True):
            masks[i] = mask.reshape(np.shape(leaves[i]))
            nan[i] = flag
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
