"""Effective-target pruning (Vysogorets & Kempe): reach a target *effective* sparsity.

Effective sparsity is at least the direct sparsity, so pruning directly to the target overshoots
it. ``effective_target_mask`` searches the direct sparsity instead: it binary-searches the number
of kept weights ``k`` (direct sparsity ``1 - k / N``) for the smallest ``k`` whose mask has
effective sparsity ``<= target``. The answer is exact to one weight: ``k`` is feasible and
``k - 1`` is not (``steps`` counts the effective-mask evaluations, about ``log2(N * target)``).

The search needs masks that are nested in the direct sparsity (so effective sparsity is monotone):

* global scores (magnitude, SNIP, SynFlow):
  ``mask_fn = lambda s: jp.global_mask(scores, s)``;
* quota methods: ``mask_fn = lambda s: jp.layerwise_mask(scores, jp.quotas.igq(params, s))``;
* random pruning: ``mask_fn = lambda s: jp.random_mask(key, params, jp.quotas.erk(params, s))``
  with one fixed ``key``: each layer ranks the same random draws at every sparsity, so masks
  are nested as long as the per-layer sparsities grow with ``s``.

If masks are not nested the result is still feasible (every returned mask was checked), only
possibly not the closest one.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import numpy as np

from jaxprune.pruning.effective import ApplyFn, effective_mask
from jaxprune.pruning.select import check_sparsity
from jaxprune.pruning.stats import sparsity_report
from jaxprune.pruning.tree import Prunable, PyTree, prunable_flags


class EffectiveTargetResult(NamedTuple):
    """Outcome of :func:`effective_target_mask`.

    Attributes:
      mask: the direct mask found (what training applies).
      effective_mask: its effective part.
      direct_sparsity: the direct sparsity passed to ``mask_fn`` for ``mask``.
      effective_sparsity: the achieved effective sparsity (``<= target``).
      steps: number of masks evaluated.
    """

    mask: PyTree
    effective_mask: PyTree
    direct_sparsity: float
    effective_sparsity: float
    steps: int


def effective_target_mask(
    mask_fn: Callable[[float], PyTree],
    target: float,
    *,
    apply_fn: ApplyFn,
    params: PyTree,
    sample_input: jax.Array,
    prunable: Prunable = None,
) -> EffectiveTargetResult:
    """Finds the highest direct sparsity whose effective sparsity is still ``<= target``.

    Args:
      mask_fn: ``mask_fn(direct_sparsity) -> mask`` (see the module docstring for the three usual
        forms); masks should be nested in the sparsity.
      target: the effective sparsity to reach, in ``[0, 1]``.
      apply_fn: ``apply_fn(params, x)``, the model as it is (see ``jp.effective_mask``).
      params: the params pytree.
      sample_input: an input batch for ``apply_fn``.
      prunable: which leaves are prunable.

    Returns:
      An :class:`EffectiveTargetResult`.

    Raises:
      ValueError: if ``target`` is not in ``[0, 1]``, or even the dense mask has effective
        sparsity above ``target`` (some prunable layer is not on any input-output path).
    """
    check_sparsity(target, "target")
    sizes = [
        int(np.size(leaf))
        for leaf, flag in zip(
            jax.tree.leaves(params), prunable_flags(params, prunable), strict=True
        )
        if flag
    ]
    total = sum(sizes)
    evaluated: dict[int, tuple[PyTree, PyTree, float]] = {}

    def evaluate(kept: int) -> tuple[PyTree, PyTree, float]:
        if kept not in evaluated:
            direct = 1.0 - kept / total if total else 0.0
            mask = mask_fn(direct)
            emask = effective_mask(apply_fn, params, mask, sample_input, prunable)
            report = sparsity_report(params, mask, effective_mask=emask, prunable=prunable)
            evaluated[kept] = (mask, emask, report.effective_sparsity)
        return evaluated[kept]

    def result(kept: int) -> EffectiveTargetResult:
        mask, emask, achieved = evaluate(kept)
        direct = 1.0 - kept / total if total else 0.0
        return EffectiveTargetResult(mask, emask, direct, achieved, len(evaluated))

    if evaluate(total)[2] > target:
        raise ValueError(
            f"the dense mask already has effective sparsity {evaluate(total)[2]} > target {target}"
        )
    feasible = total
    # Fewer than (1 - target) * N kept weights means direct (hence effective) sparsity > target.
    infeasible = max(-1, math.floor((1.0 - target) * total) - 1)
    while feasible - infeasible > 1:
        middle = (feasible + infeasible) // 2
        if evaluate(middle)[2] <= target:
            feasible = middle
        else:
            infeasible = middle
    return result(feasible)
