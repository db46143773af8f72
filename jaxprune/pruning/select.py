"""Exact mask selection: global (Global MP, with Minimum Threshold), layerwise and random.

Semantics (``docs/DESIGN.md``):

* Sparsity ``s`` is the pruned fraction over the prunable leaves; exactly
  ``n_keep = round((1 - s) * N)`` entries are kept (half rounds up). For a Python/numpy ``s``
  the rounding is exact (decimal arithmetic on ``repr(s)``); for a traced ``s`` (inside
  ``jax.jit``) it is done in float32, which can differ only when ``(1 - s) * N`` lies within
  float32 rounding error of a half-integer.
* Ties are broken deterministically: earlier leaf in ``jax.tree.flatten`` order first, then lower
  flat index (what a stable descending sort of the concatenated scores gives). Scores compare as
  canonical float32 (``-0 == 0``, subnormals == 0, ``+-inf`` == ``+-float32.max``).
* **Minimum Threshold** (Gupta et al.): ``min_keep`` gives each prunable layer a floor. Every
  layer first keeps its top ``min(floor, n_l)`` entries; the rest of the budget goes by the global
  ranking over the remaining entries; the total is still exactly ``n_keep``. Forms:
  an ``int`` (the same count for every layer), ``{"fraction_of_total": f}`` (``round(f * N)``
  per layer, as in the paper), or ``{layer_name: count}`` (missing layers get no floor).
* Masks are bool pytrees shaped like the scores, all-True on leaves that are not prunable.

Validation: with concrete inputs, a sparsity outside ``[0, 1]`` or NaN, NaN scores and infeasible
floors raise ``ValueError`` before anything is computed. Under ``jax.jit`` the same checks run on
the device and raise through ``jax.debug.callback`` when they fail.
"""

from __future__ import annotations

import functools
import math
import numbers
from collections.abc import Mapping
from fractions import Fraction
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxprune.pruning import host_select, topk
from jaxprune.pruning.tree import (
    Prunable,
    PyTree,
    check_same_structure,
    layer_names,
    prunable_flags,
)

MinKeep = None | int | Mapping[str, Any]


def _is_traced(x: Any) -> bool:
    return isinstance(x, jax.core.Tracer)


def n_keep_for(sparsity: float, total: int) -> int:
    """Number of entries kept at ``sparsity`` over ``total``: ``round((1 - s) * N)``, half up.

    Args:
      sparsity: pruned fraction, in ``[0, 1]``.
      total: number of prunable entries.

    Raises:
      ValueError: if ``sparsity`` is NaN or outside ``[0, 1]``.
    """
    check_sparsity(sparsity)
    exact = (1 - Fraction(repr(float(sparsity)))) * total
    return math.floor(exact + Fraction(1, 2))


def _is_real_dtype(dtype: Any) -> bool:
    return np.issubdtype(dtype, np.floating) or np.issubdtype(dtype, np.integer)


def check_sparsity_type(sparsity: Any, field: str = "sparsity") -> None:
    """Raises ``TypeError`` naming ``field`` unless ``sparsity`` is a real scalar or traced value.

    Accepted: Python ``int``/``float``, NumPy real scalars and 0-d real arrays, and 0-d real JAX
    arrays (concrete or traced). Rejected: ``bool`` (``True`` is not a sparsity), strings, complex
    numbers, arrays with more than one element.
    """
    if isinstance(sparsity, bool | np.bool_) or isinstance(sparsity, str | bytes):
        raise TypeError(
            f"{field} must be a real number in [0, 1], got {sparsity!r} ({type(sparsity).__name__})"
        )
    if isinstance(sparsity, numbers.Real):
        return
    if isinstance(sparsity, np.ndarray | np.generic | jax.Array):
        dtype = np.dtype(sparsity.dtype)
        if np.ndim(sparsity) == 0 and _is_real_dtype(dtype):
            return
        raise TypeError(
            f"{field} must be a real scalar in [0, 1], got an array of shape "
            f"{np.shape(sparsity)} and dtype {dtype}"
        )
    raise TypeError(
        f"{field} must be a real number in [0, 1], got {sparsity!r} ({type(sparsity).__name__})"
    )


def check_sparsity(sparsity: Any, field: str = "sparsity") -> None:
    """Raises naming ``field`` unless ``sparsity`` is a real number in ``[0, 1]``.

    A traced value is checked on the device and raises when the jitted program runs (see
    ``check_traced_sparsity``).

    Raises:
      TypeError: ``sparsity`` is a bool, a string, or not a real scalar.
      ValueError: ``sparsity`` is NaN or outside ``[0, 1]``.
    """
    check_sparsity_type(sparsity, field)
    if _is_traced(sparsity):
        check_traced_sparsity(sparsity, field)
        return
    value = float(sparsity)
    if math.isnan(value) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{field} must be in [0, 1], got {sparsity!r}")


def check_traced_sparsity(sparsity: Any, field: str = "sparsity") -> None:
    """Checks a (possibly traced) sparsity on the device: NaN or outside [0, 1] raises."""
    s = jnp.asarray(sparsity, jnp.float32)
    _fail_if(
        jnp.isnan(s) | (s < 0) | (s > 1),
        f"{field} must be in [0, 1] (traced value was NaN or out of range)",
    )


def _traced_n_keep(sparsity: jax.Array, total: int) -> jax.Array:
    s = jnp.asarray(sparsity, jnp.float32)
    return jnp.floor((1 - s) * jnp.float32(total) + 0.5).astype(jnp.int32)


def _host_check(check, value: Any) -> None:
    """Runs ``check(value)`` now, or on the host while the jitted program runs if traced.

    With a traced ``value`` the check goes through ``jax.debug.callback``, so bad input raises
    under ``jax.jit`` too.
    """
    if _is_traced(value):
        jax.debug.callback(check, value)
    else:
        check(value)


def _fail_if(flag: Any, message: str) -> None:
    """Raises ``ValueError(message)`` when ``flag`` is true (concrete or traced)."""

    def check(value):
        if bool(value):
            raise ValueError(message)

    _host_check(check, flag)


def _prunable_leaves(scores: PyTree, prunable: Prunable, what: str = "scores"):
    """Names, leaves, treedef and prunable flags of ``scores``; refuses trees with nothing to prune.

    Raises:
      ValueError: ``scores`` has no array leaves (``None``, ``{}``), a leaf is not an array of
        real numbers, or no leaf is prunable (the message says what the rule was).
    """
    names = layer_names(scores)
    leaves, treedef = jax.tree.flatten(scores)
    if not leaves:
        raise ValueError(f"{what} has no array leaves (got {scores!r})")
    for name, leaf in zip(names, leaves, strict=True):
        try:
            dtype = np.dtype(getattr(leaf, "dtype", None) or np.result_type(leaf))
        except TypeError:
            dtype = None
        if dtype is None or not _is_real_dtype(dtype):
            raise ValueError(
                f"{what}[{name!r}] must be an array of real numbers, got "
                f"{type(leaf).__name__} with dtype {dtype}"
            )
    flags = prunable_flags(scores, prunable)
    if not any(flags):
        rule = "leaves named 'kernel' with ndim >= 2" if prunable is None else repr(prunable)
        raise ValueError(
            f"no leaf of {what} is prunable (prunable={rule}); leaves: {names}. Pass prunable= "
            "(a predicate or regexes) or see jp.describe(params)"
        )
    return names, leaves, treedef, flags


def _raise_on_nan(names: list[str], nan: jax.Array) -> None:
    """Raises ``ValueError`` naming the layers whose scores contain NaN (jit-safe)."""

    def check(flags):
        bad = [n for n, f in zip(names, np.asarray(flags), strict=True) if f]
        if bad:
            raise ValueError(
                f"scores[{bad[0]!r}] contains NaN (layers with NaN: {bad}); scores must be numbers"
            )

    _host_check(check, nan)


# Concrete CPU scores are selected in NumPy (``host_select``): no program to compile (a one-shot
# prune of a small model takes milliseconds instead of seconds of compiling), and its sampled
# select beats the compiled radix select's scatter histograms on large trees too (ResNet-50:
# about 35 ms against 140 ms). Traced scores, other devices, sharded leaves and trees over this
# many entries (topk's group limit) use the compiled select.
HOST_SELECT_MAX = 2**31 - 1


def _on_host(leaves, method: str) -> bool:
    """Whether to select in NumPy: ``method='search'``, concrete scores held by one CPU device."""
    if method != "search" or sum(int(np.size(x)) for x in leaves) > HOST_SELECT_MAX:
        return False
    for leaf in leaves:
        if isinstance(leaf, np.ndarray | np.generic):
            continue
        if not isinstance(leaf, jax.Array) or isinstance(leaf, jax.core.Tracer):
            return False
        devices = leaf.sharding.device_set
        if len(devices) != 1 or next(iter(devices)).platform != "cpu":
            return False
        if not leaf.is_fully_addressable:
            return False
    return True


def _only_one_device() -> bool:
    """Whether this process sees a single device in all (one process, one device, one CPU).

    Then a traced leaf cannot be sharded either: there is no second device to hold a shard.
    """
    try:
        cpus = len(jax.devices("cpu"))
    except RuntimeError:  # no CPU backend
        cpus = 0
    return jax.process_count() == 1 and jax.device_count() == 1 and cpus <= 1


def _on_one_device(leaves) -> bool:
    """Whether every leaf is held whole by one device.

    Concrete leaves say so by their sharding; traced leaves (under ``jax.jit``) only when the
    process has a single device at all (``_only_one_device``).
    """
    concrete = [leaf for leaf in leaves if not isinstance(leaf, jax.core.Tracer)]
    if len(concrete) < len(leaves) and not _only_one_device():
        return False
    return all(isinstance(x, jax.Array) and len(x.sharding.device_set) == 1 for x in concrete)


@functools.partial(jax.jit, static_argnames=("with_floors", "method", "single_device"))
def _global_select(
    leaves, n_keep, floors, with_floors: bool, method: str, single_device: bool = False
):
    """Jitted core of ``global_mask`` (cached per shapes; inlined under an outer jit)."""
    groups = list(range(len(leaves)))
    one = {"single_device": single_device}
    if not with_floors:
        return topk.top_k_masks(leaves, [0] * len(leaves), n_keep[None], method, **one)
    floor_masks, nan = topk.top_k_masks(leaves, groups, floors, method, **one)
    # Floor-kept entries leave the global ranking (they rank below every real score).
    rest = [jnp.where(m, -jnp.inf, s) for m, s in zip(floor_masks, leaves, strict=True)]
    extra, _ = topk.top_k_masks(
        rest, [0] * len(leaves), (n_keep - jnp.sum(floors))[None], method, **one
    )
    return [f | r for f, r in zip(floor_masks, extra, strict=True)], nan


@functools.partial(jax.jit, static_argnames=("method", "single_device"))
def _layer_select(leaves, ks, method: str, single_device: bool = False):
    """Jitted core of ``layerwise_mask``: leaf ``i`` keeps its top ``ks[i]``."""
    return topk.top_k_masks(
        leaves, list(range(len(leaves))), ks, method, single_device=single_device
    )


_SENTINEL_ERROR = "scores equal to -inf or -float32.max cannot be combined with min_keep"


def _check_no_sentinel(leaves: list[jax.Array]) -> None:
    """MT parks floor-kept entries at -inf (below every score); real -inf/-max scores would tie."""
    lowest = jnp.min(jnp.stack([jnp.min(x) for x in leaves]))
    _fail_if(lowest <= -topk.MAX_FLOAT, _SENTINEL_ERROR)


def _place_like(masks: list[Any], leaves: list[Any]) -> list[Any]:
    """Places each concrete mask with the sharding of its (concrete) leaf; traced values pass.

    The transfers go in two batched ``jax.device_put`` calls (one per kind of placement): one call
    per leaf costs about 0.1 ms of dispatch each, which a 54-leaf ResNet-50 mask would feel.
    """
    placed = list(masks)
    default, committed, shardings = [], [], []
    for i, (mask, leaf) in enumerate(zip(masks, leaves, strict=True)):
        sharding = getattr(leaf, "sharding", None)
        if _is_traced(leaf) or _is_traced(mask):
            continue
        if sharding is None or not getattr(leaf, "committed", True):
            # An uncommitted leaf (placed by default) gets an uncommitted mask: a jitted step then
            # sees the same argument kinds on every call, and compiles once. (device_put copies,
            # or keeps an aligned host buffer; jnp.asarray of a NumPy array would compile a
            # program per shape.)
            default.append(i)
        elif getattr(mask, "sharding", None) != sharding:
            committed.append(i)
            shardings.append(sharding)
    if default:
        for i, mask in zip(default, jax.device_put([masks[i] for i in default]), strict=True):
            placed[i] = mask
    if committed:
        moved = jax.device_put([masks[i] for i in committed], shardings)
        for i, mask in zip(committed, moved, strict=True):
            placed[i] = mask
    return placed


def _assemble(leaves, flags, treedef, kept: dict[int, jax.Array]) -> PyTree:
    """Builds the mask tree; each mask keeps the sharding of its leaf."""
    masks = []
    for i, (leaf, flag) in enumerate(zip(leaves, flags, strict=True)):
        shape = np.shape(leaf)
        if flag and i in kept:
            mask = kept[i]
        elif _is_traced(leaf):  # not prunable, or an empty prunable leaf
            mask = jnp.ones(shape, bool)
        else:  # concrete: built on the host and placed like the leaf (nothing to compile)
            mask = np.ones(shape, bool)
        masks.append(mask)
    return jax.tree.unflatten(treedef, _place_like(masks, leaves))


def floors_for(min_keep: MinKeep, names: list[str], sizes: list[int], total: int) -> list[int]:
    """Per-layer floors ``min(floor, n_l)`` for the prunable layers ``names``.

    Raises:
      ValueError: on negative floors, a bad fraction, or unknown layer names.
    """
    if min_keep is None:
        return [0] * len(names)
    if isinstance(min_keep, bool) or not isinstance(min_keep, int | Mapping):
        raise ValueError(
            "min_keep must be None, an int, {'fraction_of_total': f} or {layer: count}, "
            f"got {min_keep!r}"
        )
    if isinstance(min_keep, int):
        per_layer = dict.fromkeys(names, min_keep)
    elif set(min_keep) == {"fraction_of_total"}:
        fraction = float(min_keep["fraction_of_total"])
        if math.isnan(fraction) or not 0.0 <= fraction <= 1.0:
            raise ValueError(f"min_keep['fraction_of_total'] must be in [0, 1], got {fraction}")
        count = math.floor(Fraction(repr(fraction)) * total + Fraction(1, 2))
        per_layer = dict.fromkeys(names, count)
    else:
        unknown = sorted(set(min_keep) - set(names))
        if unknown:
            raise ValueError(f"min_keep names unknown layers {unknown}; prunable layers: {names}")
        per_layer = {name: min_keep.get(name, 0) for name in names}
    floors = []
    for name, size in zip(names, sizes, strict=True):
        value = per_layer[name]
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
            raise ValueError(f"min_keep[{name!r}] must be a non-negative int, got {value!r}")
        floors.append(min(int(value), size))
    return floors


def global_mask(
    scores: PyTree,
    sparsity: float | jax.Array,
    min_keep: MinKeep = None,
    prunable: Prunable = None,
    method: str = "search",
) -> PyTree:
    """Global ranking mask (Global MP when ``scores`` are magnitudes), with optional MT floors.

    Args:
      scores: pytree of score arrays (higher = more important), e.g. ``jp.scores.magnitude(p)``.
      sparsity: target pruned fraction over prunable leaves; may be traced.
      min_keep: Minimum Threshold floors (see module docstring); ``None`` for plain Global MP.
      prunable: which leaves are prunable (see ``jaxprune.pruning.tree``).
      method: ``"search"`` (fast exact, default) or ``"sort"`` (``jnp.argsort`` reference).

    Returns:
      A bool pytree like ``scores`` with exactly ``n_keep`` True entries over prunable leaves.

    Raises:
      ValueError: bad sparsity, NaN scores, infeasible floors (sum of floors > n_keep).

    Example:
      >>> mask = global_mask({"w": jnp.array([[3.0, 1.0], [2.0, 0.5]])}, 0.5)
      >>> mask["w"].tolist()
      [[True, False], [True, False]]
    """
    names, leaves, treedef, flags = _prunable_leaves(scores, prunable)
    index = [i for i, f in enumerate(flags) if f and np.size(leaves[i]) > 0]
    sizes = [int(np.size(leaves[i])) for i in index]
    total = sum(sizes)
    floors = floors_for(min_keep, [names[i] for i in index], sizes, total)
    floor_sum = sum(floors)

    check_sparsity(sparsity)
    if _is_traced(sparsity):
        s = jnp.asarray(sparsity, jnp.float32)
        n_keep = _traced_n_keep(jnp.clip(s, 0, 1), total)
        _fail_if(
            n_keep < floor_sum,
            f"minimum threshold is infeasible: the floors keep {floor_sum} weights, more than the "
            "n_keep allowed by the traced sparsity",
        )
    else:
        n_keep = n_keep_for(sparsity, total)
        if floor_sum > n_keep:
            raise ValueError(
                f"minimum threshold is infeasible: floors sum to {floor_sum} kept weights "
                f"(min_keep={min_keep!r} over {len(index)} layers) but sparsity {sparsity} keeps "
                f"only n_keep={n_keep} of {total}"
            )
        n_keep = np.int32(n_keep)  # a jnp scalar would compile a conversion program
    if not index:
        return _assemble(leaves, flags, treedef, {})

    if not _is_traced(n_keep) and _on_host([leaves[i] for i in index], method):
        selected = [np.asarray(leaves[i], np.float32) for i in index]
        if floor_sum > 0:
            _fail_if(min(float(x.min()) for x in selected) <= -topk.MAX_FLOAT, _SENTINEL_ERROR)
        chosen, nan = host_select.global_select(selected, int(n_keep), floors, floor_sum > 0)
        _raise_on_nan([names[i] for i in index], nan)
        return _assemble(leaves, flags, treedef, dict(zip(index, chosen, strict=True)))
    selected = [jnp.asarray(leaves[i], jnp.float32) for i in index]
    if floor_sum > 0:
        _check_no_sentinel(selected)
    chosen, nan = _global_select(
        selected,
        n_keep,  # int32: traced from the sparsity, or np.int32
        np.asarray(floors, np.int32),
        floor_sum > 0,
        method,
        _on_one_device(selected),
    )
    _raise_on_nan([names[i] for i in index], nan)
    return _assemble(leaves, flags, treedef, dict(zip(index, chosen, strict=True)))


def _sparsity_list(sparsities: Any, scores: PyTree, names, flags) -> list[Any]:
    """Per-leaf sparsities (one per prunable leaf) from a pytree like scores or a name dict."""
    prunable = [n for n, f in zip(names, flags, strict=True) if f]
    if _same_structure(sparsities, scores):
        by_name = dict(zip(names, jax.tree.leaves(sparsities), strict=True))
    elif isinstance(sparsities, Mapping):
        unknown = sorted(set(sparsities) - set(prunable))
        if unknown:
            raise ValueError(
                f"sparsities names layers that are not prunable or do not exist: {unknown}; "
                f"prunable layers: {prunable}"
            )
        missing = [n for n in prunable if n not in sparsities]
        if missing:
            raise ValueError(f"sparsities is missing prunable layers {missing}")
        by_name = sparsities
    else:
        raise ValueError(
            "sparsities must be a {layer_name: sparsity} dict or a pytree like the scores, "
            f"got {type(sparsities).__name__}"
        )
    out = []
    for name in prunable:
        value = by_name[name]
        check_sparsity(value, f"sparsities[{name!r}]")
        out.append(value)
    return out


def _same_structure(a: Any, b: PyTree) -> bool:
    try:
        return jax.tree.structure(a) == jax.tree.structure(b)
    except Exception:  # noqa: BLE001 - anything jax cannot flatten is not a matching tree
        return False


def _layer_ks(values: list[Any], sizes: list[int]) -> jax.Array:
    if any(_is_traced(v) for v in values):
        return jnp.stack(
            [
                _traced_n_keep(jnp.clip(jnp.asarray(v, jnp.float32), 0, 1), n)
                for v, n in zip(values, sizes, strict=True)
            ]
        )
    return np.asarray([n_keep_for(v, n) for v, n in zip(values, sizes, strict=True)], np.int32)


def layerwise_mask(
    scores: PyTree,
    sparsities: Any,
    prunable: Prunable = None,
    method: str = "search",
) -> PyTree:
    """Per-layer top-k mask: layer ``l`` keeps exactly ``round((1 - s_l) * n_l)`` entries.

    Args:
      scores: pytree of score arrays.
      sparsities: ``{layer_name: sparsity}`` for every prunable layer (e.g. from ``jp.quotas``),
        or a pytree like ``scores`` with one number per leaf (non-prunable leaves ignored).
      prunable: which leaves are prunable.
      method: ``"search"`` or ``"sort"``.

    Returns:
      A bool pytree like ``scores``.

    Raises:
      ValueError: unknown or missing layer names, sparsities outside [0, 1], NaN scores.
    """
    names, leaves, treedef, flags = _prunable_leaves(scores, prunable)
    values = _sparsity_list(sparsities, scores, names, flags)
    prunable_index = [i for i, f in enumerate(flags) if f]
    pairs = [(i, v) for i, v in zip(prunable_index, values, strict=True) if np.size(leaves[i])]
    if not pairs:
        return _assemble(leaves, flags, treedef, {})
    index = [i for i, _ in pairs]
    ks = _layer_ks([v for _, v in pairs], [int(np.size(leaves[i])) for i in index])
    if _on_host([leaves[i] for i in index], method) and not _is_traced(ks):
        selected = [np.asarray(leaves[i], np.float32) for i in index]
        chosen, nan = host_select.top_k_masks(selected, list(range(len(index))), np.asarray(ks))
        _raise_on_nan([names[i] for i in index], nan)
        return _assemble(leaves, flags, treedef, dict(zip(index, chosen, strict=True)))
    selected = [jnp.asarray(leaves[i], jnp.float32) for i in index]
    chosen, nan = _layer_select(selected, ks, method, _on_one_device(selected))
    _raise_on_nan([names[i] for i in index], nan)
    return _assemble(leaves, flags, treedef, dict(zip(index, chosen, strict=True)))


def random_mask(
    key: jax.Array, params: PyTree, sparsities: Any, prunable: Prunable = None
) -> PyTree:
    """Random mask with exact per-layer counts; each prunable layer draws from its own key.

    Layer ``l`` (the ``l``-th prunable leaf in flatten order) uses
    ``jax.random.fold_in(key, l)``, so adding a layer does not reshuffle the others.

    Args:
      key: a PRNG key.
      params: the params pytree (only shapes are used).
      sparsities: as in ``layerwise_mask``; use ``jp.quotas.uniform(params, s)`` for uniform.
      prunable: which leaves are prunable.

    Returns:
      A bool pytree like ``params``.
    """
    names, leaves, treedef, flags = _prunable_leaves(params, prunable, "params")
    scores, position = [], 0
    for leaf, flag in zip(leaves, flags, strict=True):
        if flag:
            scores.append(jax.random.uniform(jax.random.fold_in(key, position), np.shape(leaf)))
            position += 1
        else:
            scores.append(jnp.zeros(np.shape(leaf), jnp.float32))
    mask = layerwise_mask(
        jax.tree.unflatten(treedef, scores), sparsities, prunable=_flags_predicate(names, flags)
    )
    return jax.tree.unflatten(treedef, _place_like(jax.tree.leaves(mask), leaves))


def _flags_predicate(names: list[str], flags: list[bool]):
    allowed = {n for n, f in zip(names, flags, strict=True) if f}
    return lambda name, leaf: name in allowed


def check_bool_mask(mask: PyTree, what: str = "mask") -> None:
    """Raises ``ValueError`` naming the leaf unless every leaf of ``mask`` has dtype bool.

    A float mask is refused rather than read as "nonzero means kept": ``0.5`` is not a decision.
    """
    for name, leaf in zip(layer_names(mask), jax.tree.leaves(mask), strict=True):
        dtype = getattr(leaf, "dtype", type(leaf))
        if dtype != np.dtype(bool):
            raise ValueError(
                f"{what}[{name!r}] must be a bool array, got dtype {dtype}; masks are bool "
                "(use mask.astype(bool) only if nonzero really means kept)"
            )


def apply_mask(params: PyTree, mask: PyTree) -> PyTree:
    """Zeroes the pruned entries: ``params * mask`` leaf by leaf (dtype kept).

    Raises:
      ValueError: if ``mask`` does not have the structure and shapes of ``params``.
    """
    check_same_structure(mask, params, "mask", "params")
    check_bool_mask(mask)
    return jax.tree.map(
        lambda p, m: jnp.where(m, p, jnp.zeros((), jnp.asarray(p).dtype)), params, mask
    )
