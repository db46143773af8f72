"""The order in which a forward pass consumes the prunable leaves (``jp.layer_order``).

Dict-key order is not forward order (``Conv_10`` sorts before ``Conv_2``; a ResNet stem may sort
after its blocks). ``layer_order`` traces ``apply_fn(params, x)`` to a jaxpr and lists the
prunable leaves by the first equation that reads them, following calls into sub-jaxprs (``jit``,
``custom_jvp_call``, ...). Leaves the forward pass never reads come last, in natural-sort order.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.extend.core as jex
import numpy as np

from jaxprune.pruning.effective import ApplyFn, call_sub_jaxpr
from jaxprune.pruning.tree import Prunable, PyTree, layer_names, natural_key, prunable_names


def _first_uses(jaxpr: Any, env: dict[Any, int], order: list[int], seen: set[int]) -> None:
    """Appends leaf indices to ``order`` as equations of ``jaxpr`` first read them."""
    for eqn in jaxpr.eqns:
        sub = call_sub_jaxpr(eqn)
        if sub is not None:
            inner = {
                inner_var: env[outer_var]
                for inner_var, outer_var in zip(sub[0].invars, eqn.invars, strict=True)
                if not isinstance(outer_var, jex.Literal) and outer_var in env
            }
            _first_uses(sub[0], inner, order, seen)
            continue
        for var in eqn.invars:
            if isinstance(var, jex.Literal) or var not in env:
                continue
            index = env[var]
            if index not in seen:
                seen.add(index)
                order.append(index)
    for var in jaxpr.outvars:  # a leaf returned as is counts as used at the end
        if not isinstance(var, jex.Literal) and var in env and env[var] not in seen:
            seen.add(env[var])
            order.append(env[var])


def layer_order(
    apply_fn: ApplyFn, params: PyTree, sample_input: jax.Array, prunable: Prunable = None
) -> list[str]:
    """Names of the prunable leaves in the order the forward pass first uses them.

    Args:
      apply_fn: ``apply_fn(params, x) -> output``.
      params: the params pytree.
      sample_input: an input batch (only its shape and dtype are used).
      prunable: which leaves are prunable.

    Returns:
      Every prunable layer name exactly once, in forward order (unused ones last).
    """
    names = layer_names(params)
    leaves, treedef = jax.tree.flatten(params)
    shapes = [jax.ShapeDtypeStruct(np.shape(x), jax.numpy.result_type(x)) for x in leaves]
    x = jax.ShapeDtypeStruct(np.shape(sample_input), jax.numpy.result_type(sample_input))

    def flat_apply(flat_leaves, inputs):
        return apply_fn(jax.tree.unflatten(treedef, flat_leaves), inputs)

    closed = jax.make_jaxpr(flat_apply)(shapes, x)
    env = {var: i for i, var in enumerate(closed.jaxpr.invars[: len(leaves)])}
    order: list[int] = []
    _first_uses(closed.jaxpr, env, order, set())
    wanted = set(prunable_names(params, prunable))
    used = [names[i] for i in order if names[i] in wanted]
    unused = sorted(wanted - set(used), key=natural_key)
    return used + unused
