"""The order in which a forward pass consumes the prunable leaves (``jp.layer_order``).

Dict-key order is not forward order (``Conv_10`` sorts before ``Conv_2``; a ResNet stem may sort
after its blocks). ``layer_order`` traces ``apply_fn(params, x)`` to a jaxpr and lists the
prunable leaves by the first equation that reads them. Bodies are followed: calls (``jit``,
``remat`` / ``jax.checkpoint``, ``custom_jvp_call``, ``custom_vjp_call``), ``scan`` (``nn.scan``: a
stacked leaf passed as ``xs`` is read when the body first reads its slice, so the leaves of a
scanned block come in the block's order), ``while`` (condition, then body) and ``cond`` (branches
in order); a leaf passed to such an equation but never read inside counts as read by the
equation itself. Any model works, no special mode is needed. Leaves the forward pass never reads
come last, in natural-sort order.
"""

from __future__ import annotations

from typing import Any

import jax.extend.core as jex

from jaxprune.pruning.effective import ApplyFn, sub_jaxprs, trace_flat
from jaxprune.pruning.tree import Prunable, PyTree, layer_names, natural_key, prunable_names


def _record(index: int, order: list[int], seen: set[int]) -> None:
    if index not in seen:
        seen.add(index)
        order.append(index)


def _first_uses(jaxpr: Any, env: dict[Any, int], order: list[int], seen: set[int]) -> None:
    """Appends leaf indices to ``order`` as equations of ``jaxpr`` first read them."""

    def leaf(var):
        return None if isinstance(var, jex.Literal) else env.get(var)

    for eqn in jaxpr.eqns:
        operands = [leaf(v) for v in eqn.invars]
        for body, positions in sub_jaxprs(eqn):
            inner = {
                var: operands[p]
                for var, p in zip(body.invars, positions, strict=True)
                if operands[p] is not None
            }
            _first_uses(body, inner, order, seen)
        for index in operands:
            if index is not None:
                _record(index, order, seen)
    for var in jaxpr.outvars:  # a leaf returned as is counts as used at the end
        index = leaf(var)
        if index is not None:
            _record(index, order, seen)


def layer_order(
    apply_fn: ApplyFn, params: PyTree, sample_input: Any, prunable: Prunable = None
) -> list[str]:
    """Names of the prunable leaves in the order the forward pass first uses them.

    Args:
      apply_fn: ``apply_fn(params, x) -> output``, the model as it is (any Flax / JAX model).
      params: the params pytree (arrays or ``jax.ShapeDtypeStruct``).
      sample_input: an input batch or pytree (only shapes and dtypes are used).
      prunable: which leaves are prunable.

    Returns:
      Every prunable layer name exactly once, in forward order (unused ones last).
    """
    names = layer_names(params)
    closed, n_params, _ = trace_flat(apply_fn, params, sample_input)
    env = {var: i for i, var in enumerate(closed.jaxpr.invars[:n_params])}
    order: list[int] = []
    _first_uses(closed.jaxpr, env, order, set())
    wanted = set(prunable_names(params, prunable))
    used = [names[i] for i in order if names[i] in wanted]
    unused = sorted(wanted - set(used), key=natural_key)
    return used + unused
