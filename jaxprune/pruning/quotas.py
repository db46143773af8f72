"""Layerwise sparsity quotas: how a global target sparsity is split across prunable layers.

Every quota is called as ``fn(params, sparsity, prunable=None, order=None, **options)`` and
returns ``{layer_name: sparsity}`` for the prunable layers, in flatten order, with values in
``[0, 1]`` whose size-weighted mean equals ``sparsity`` within ``1 / N`` (``N`` prunable weights).
Feed the result to ``jp.layerwise_mask`` or ``jp.random_mask``.

* ``uniform``: every layer at ``sparsity``.
* ``uniform_plus`` (Gale et al.): first layer dense, last layer at most 0.8, the rest shared.
* ``erk`` (Evci et al., RigL): density proportional to ``sum(shape) / prod(shape)``; a layer that
  would exceed density 1 is made dense and the scale re-solved.
* ``igq`` (Vysogorets & Kempe, Ideal Gas Quotas): ``s_l = F n_l / (1 + F n_l)`` with ``F`` found
  by bisection; large layers take more pressure.
* ``smart_ratio`` (Su et al.): keep ratio of the ``l``-th of ``L`` layers proportional to
  ``(L-l+1)^2 + (L-l+1)`` (``ratio="quadratic"``; ablations ``"linear"``, ``"cubic"``,
  ``"uniform"``), divided by ``l^2`` unless ``residual=True``; the last layer keeps ``last_keep``
  (0.3). One scale is solved for the budget; a keep ratio above 1 is clipped to 1 and its
  excess weights are **carried forward** to the next layers with room, filling each up to dense
  in order (Su et al.'s released code); an excess still left after the last layer fills the
  earliest layers with room.
* ``custom``: a ``{layer_name: sparsity}`` dict, checked.

``uniform_plus`` and ``smart_ratio`` depend on which layer is first and last, so they **need**
``order=``: the forward order from ``jp.layer_order(apply_fn, params, x)``. Called without it they
raise ``ValueError`` rather than guess: neither dict-key order nor a natural sort of the names is
forward order (a ResNet's stem ``Conv_0/kernel`` sorts after ``BasicBlock_*``, next to last).
``order="natural"`` opts in to the natural sort of the names (``Conv_2`` before ``Conv_10``), for
trees whose names are numbered in forward order (``Dense_0``, ``Dense_1``, ...). The other quotas
do not depend on the order and ignore it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from jaxprune.pruning.select import check_sparsity
from jaxprune.pruning.tree import Prunable, PyTree, named_leaves, ordered_names, prunable_flags

QuotaFn = Callable[..., dict[str, float]]
Order = Sequence[str] | str | None
_REGISTRY: dict[str, QuotaFn] = {}


def register(name: str) -> Callable[[QuotaFn], QuotaFn]:
    """Decorator that registers a quota function under ``name``."""

    def decorator(fn: QuotaFn) -> QuotaFn:
        _REGISTRY[name] = fn
        return fn

    return decorator


def get(name: str) -> QuotaFn:
    """Returns the quota ``name``; ``KeyError`` listing the known ones if unknown."""
    if name not in _REGISTRY:
        raise KeyError(f"unknown quota {name!r}; known quotas: {names()}")
    return _REGISTRY[name]


def names() -> list[str]:
    """Registered quota names, sorted."""
    return sorted(_REGISTRY)


def _layers(params: PyTree, prunable: Prunable) -> tuple[list[str], dict[str, tuple[int, ...]]]:
    flags = prunable_flags(params, prunable)
    shapes = {
        name: tuple(np.shape(leaf))
        for (name, leaf), flag in zip(named_leaves(params), flags, strict=True)
        if flag
    }
    if not shapes:
        raise ValueError("params has no prunable leaves; nothing to allocate")
    return list(shapes), shapes


def _forward_order(quota: str, layer_names: list[str], order: Order) -> list[str]:
    """``layer_names`` first to last by ``order`` (a list of names, or ``"natural"``).

    Raises:
      ValueError: if ``order`` is None (saying how to get one), an unknown string, or misses
        some of the layers.
    """
    if order is None:
        raise ValueError(
            f"quota {quota!r} treats the first and last layers specially and needs their forward "
            "order: pass order=jp.layer_order(apply_fn, params, x) (apply_fn(params, x) runs "
            "the model on a sample input x), or order='natural' to sort the layer names "
            "naturally (Conv_2 before Conv_10) when they are numbered in forward order"
        )
    if isinstance(order, str):
        if order != "natural":
            raise ValueError(
                f"quota {quota!r}: order must be a list of layer names or 'natural', got {order!r}"
            )
        return ordered_names(layer_names)
    return ordered_names(layer_names, order)


def _result(names_in_flatten_order: list[str], values: Mapping[str, float]) -> dict[str, float]:
    return {name: float(min(1.0, max(0.0, values[name]))) for name in names_in_flatten_order}


def _solve_capped(weights: dict[str, float], sizes: dict[str, int], budget: float) -> dict:
    """Keep fractions ``min(1, c * w_l)`` with ``sum(keep_l * n_l) == budget`` (float64).

    Layers whose fraction would exceed 1 are made dense one at a time (largest first) and ``c``
    re-solved, as in RigL's ERK.
    """
    dense: set[str] = set()
    while True:
        free = [n for n in weights if n not in dense]
        remaining = budget - sum(sizes[n] for n in dense)
        denominator = sum(weights[n] * sizes[n] for n in free)
        if not free or denominator <= 0:
            return {n: 1.0 if n in dense else 0.0 for n in weights}
        scale = max(remaining, 0.0) / denominator
        over = [n for n in free if scale * weights[n] > 1.0]
        if not over:
            return {n: 1.0 if n in dense else scale * weights[n] for n in weights}
        dense.add(max(over, key=lambda n: weights[n]))


@register("uniform")
def uniform(params: PyTree, sparsity: float, prunable: Prunable = None, order=None, **_):
    """Every prunable layer at ``sparsity``."""
    check_sparsity(sparsity)
    layer_names, _ = _layers(params, prunable)
    return _result(layer_names, dict.fromkeys(layer_names, float(sparsity)))


@register("uniform_plus")
def uniform_plus(
    params: PyTree,
    sparsity: float,
    prunable: Prunable = None,
    order: Order = None,
    max_last_sparsity: float = 0.8,
    **_,
):
    """First layer dense, last layer at most ``max_last_sparsity``, the rest share the budget.

    Args:
      params: params pytree.
      sparsity: global target.
      prunable: which leaves are prunable.
      order: forward order of the layers, ``jp.layer_order(apply_fn, params, x)``, or
        ``"natural"`` for a natural sort of the names; required.
      max_last_sparsity: the most the last layer is pruned.

    Raises:
      ValueError: if ``order`` is missing or the target cannot be met under those constraints.
    """
    check_sparsity(sparsity)
    layer_names, shapes = _layers(params, prunable)
    sizes = {n: math.prod(s) for n, s in shapes.items()}
    ordered = _forward_order("uniform_plus", layer_names, order)
    total = sum(sizes.values())
    pruned = float(sparsity) * total
    if len(ordered) == 1:
        return _result(layer_names, {ordered[0]: float(sparsity)})
    first, last, middle = ordered[0], ordered[-1], ordered[1:-1]
    n_mid, n_last = sum(sizes[n] for n in middle), sizes[last]
    shared = pruned / (n_mid + n_last)
    last_value = shared
    if shared > max_last_sparsity:
        last_value = max_last_sparsity
        shared = (pruned - max_last_sparsity * n_last) / n_mid if n_mid else math.inf
    if shared > 1.0 + 1e-12:
        reachable = (n_mid + max_last_sparsity * n_last) / total
        raise ValueError(
            f"uniform_plus cannot reach sparsity {sparsity}: with the first layer dense and the "
            f"last at most {max_last_sparsity}, the most is {reachable:.6f}"
        )
    values = dict.fromkeys(middle, shared)
    values[first], values[last] = 0.0, last_value
    return _result(layer_names, values)


@register("erk")
def erk(params: PyTree, sparsity: float, prunable: Prunable = None, order=None, **_):
    """Erdős–Rényi-Kernel densities ``∝ sum(shape) / prod(shape)``, capped at dense."""
    check_sparsity(sparsity)
    layer_names, shapes = _layers(params, prunable)
    sizes = {n: math.prod(s) for n, s in shapes.items()}
    weights = {n: sum(s) / math.prod(s) for n, s in shapes.items()}
    budget = (1.0 - float(sparsity)) * sum(sizes.values())
    keep = _solve_capped(weights, sizes, budget)
    return _result(layer_names, {n: 1.0 - keep[n] for n in layer_names})


@register("igq")
def igq(params: PyTree, sparsity: float, prunable: Prunable = None, order=None, **_):
    """Ideal Gas Quotas: ``s_l = F n_l / (1 + F n_l)``, ``F`` by bisection (float64)."""
    check_sparsity(sparsity)
    layer_names, shapes = _layers(params, prunable)
    sizes = np.array([math.prod(shapes[n]) for n in layer_names], np.float64)
    total, target = sizes.sum(), float(sparsity) * sizes.sum()
    if sparsity <= 0.0:
        return _result(layer_names, dict.fromkeys(layer_names, 0.0))
    if sparsity >= 1.0:
        return _result(layer_names, dict.fromkeys(layer_names, 1.0))

    def pruned(log_f: float) -> float:
        f = math.exp(log_f)
        return float(np.sum(sizes * (f * sizes) / (1.0 + f * sizes)))

    lo, hi = -200.0, 200.0  # pruned() is increasing in log F
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if pruned(mid) < target:
            lo = mid
        else:
            hi = mid
        if abs(pruned(mid) - target) < 1e-6 * max(1.0, total / 1e6):
            break
    f = math.exp(0.5 * (lo + hi))
    values = {n: f * s / (1.0 + f * s) for n, s in zip(layer_names, sizes, strict=True)}
    return _result(layer_names, values)


_RATIOS = {
    "quadratic": lambda j: j * j + j,
    "linear": lambda j: j,
    "cubic": lambda j: j**3,
    "uniform": lambda j: 1.0,
}


def _carry_overflow(
    weights: dict[str, float], sizes: dict[str, int], budget: float, ordered: Sequence[str]
) -> dict[str, float]:
    """Keep fractions ``c * w_l`` summing to ``budget`` weights, overflow carried forward.

    ``c`` makes ``sum(c * w_l * n_l) == budget``. Walking the layers in ``ordered``, a fraction
    above 1 is clipped and its excess ``(keep - 1) * n_l`` weights join a carry that the
    following layers absorb up to density 1 each; what is still carried after the last layer
    goes to the earliest layers with room (possible only when a late layer overflows).
    """
    denominator = sum(weights[n] * sizes[n] for n in ordered)
    if denominator <= 0 or budget <= 0:
        return {n: 0.0 for n in ordered}
    scale = budget / denominator
    keep = {n: scale * weights[n] for n in ordered}
    carry = 0.0
    for _ in range(2):  # forward pass, then the earliest layers take what is left
        for name in ordered:
            if keep[name] > 1.0:
                carry += (keep[name] - 1.0) * sizes[name]
                keep[name] = 1.0
            elif carry > 0.0:
                take = min(carry, (1.0 - keep[name]) * sizes[name])
                keep[name] += take / sizes[name]
                carry -= take
    return keep


@register("smart_ratio")
def smart_ratio(
    params: PyTree,
    sparsity: float,
    prunable: Prunable = None,
    order: Order = None,
    ratio: str = "quadratic",
    residual: bool = False,
    last_keep: float = 0.3,
    **_,
):
    """Su et al.'s smart ratio (random tickets); see the module docstring.

    Args:
      params: params pytree.
      sparsity: global target.
      prunable: which leaves are prunable.
      order: forward order of the layers (first to last), ``jp.layer_order(apply_fn, params,
        x)``, or ``"natural"`` for a natural sort of the names; required.
      ratio: ``"quadratic"`` (paper), or the ablations ``"linear"``, ``"cubic"``, ``"uniform"``.
      residual: skip the ``1 / l^2`` factor (ResNets), as in the paper.
      last_keep: keep ratio of the last layer (0.3 in the paper).

    Raises:
      ValueError: missing ``order``, unknown ratio, or a target the fixed last layer makes
        unreachable.
    """
    check_sparsity(sparsity)
    if ratio not in _RATIOS:
        raise ValueError(f"smart_ratio ratio must be one of {sorted(_RATIOS)}, got {ratio!r}")
    layer_names, shapes = _layers(params, prunable)
    sizes = {n: math.prod(s) for n, s in shapes.items()}
    ordered = _forward_order("smart_ratio", layer_names, order)
    total = sum(sizes.values())
    budget = (1.0 - float(sparsity)) * total
    if len(ordered) == 1:
        return _result(layer_names, {ordered[0]: float(sparsity)})
    last = ordered[-1]
    big_l = len(ordered)
    weights = {}
    for l_index, name in enumerate(ordered[:-1], start=1):
        j = big_l - l_index + 1
        weights[name] = _RATIOS[ratio](j) / (1.0 if residual else l_index**2)
    rest = budget - last_keep * sizes[last]
    capacity = total - sizes[last]
    if rest < -1e-9 or rest > capacity + 1e-9:
        lo = last_keep * sizes[last] / total
        hi = (capacity + last_keep * sizes[last]) / total
        raise ValueError(
            f"smart_ratio cannot reach sparsity {sparsity} with the last layer {last!r} at "
            f"keep {last_keep}: reachable sparsities are [{1 - hi:.6f}, {1 - lo:.6f}]"
        )
    keep = _carry_overflow(weights, {n: sizes[n] for n in weights}, rest, ordered[:-1])
    keep[last] = last_keep
    return _result(layer_names, {n: 1.0 - keep[n] for n in layer_names})


@register("custom")
def custom(
    params: PyTree,
    sparsity: float | None = None,
    prunable: Prunable = None,
    order=None,
    sparsities: Mapping[str, float] | None = None,
    **_,
):
    """A user-given ``{layer_name: sparsity}`` dict, checked against the prunable layers.

    ``sparsity`` is ignored (the dict decides); pass ``sparsities=``.

    Raises:
      ValueError: missing or unknown layers, values outside ``[0, 1]``.
    """
    if sparsities is None:
        raise ValueError("quota 'custom' needs sparsities={layer_name: sparsity}")
    layer_names, _ = _layers(params, prunable)
    unknown = sorted(set(sparsities) - set(layer_names))
    missing = [n for n in layer_names if n not in sparsities]
    if unknown or missing:
        raise ValueError(
            f"custom sparsities: unknown layers {unknown}, missing layers {missing}; "
            f"prunable layers: {layer_names}"
        )
    for name, value in sparsities.items():
        check_sparsity(value, f"sparsities[{name!r}]")
    return _result(layer_names, dict(sparsities))
