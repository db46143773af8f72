"""Effective masks (Vysogorets & Kempe, "Connectivity Matters") and the forward layer order.

A kept connection is *effective* iff it lies on at least one path from an input unit to an output
unit of the masked network, with biases ignored, activations as identity, pooling as averaging,
norms as identity and residual adds kept (``../shared/DESIGN.md``).

Method (two passes, no float overflow or underflow). The forward pass ``apply_fn(params, x)`` is
traced once to a jaxpr and re-evaluated with:

* every weight replaced by its mask as a 0/1 float (non-prunable leaves are all-True masks, so
  they count as dense), every leaf whose last name part is ``bias`` set to zero;
* an all-ones input;
* a *saturation* after every ``dot_general`` and ``conv_general_dilated``: the output becomes
  ``1.0`` where it is positive and ``0.0`` elsewhere, and on the way back the cotangent is
  saturated the same way.

All values are nonnegative, so nothing cancels: a unit is positive in the forward pass iff it is
reachable from the input, and its saturated cotangent is positive iff the output is reachable from
it. The gradient of ``sum(output)`` with respect to a weight is (input activation) x (output
sensitivity) summed over positions, which is positive iff the connection is on an input-output
path. Saturation keeps every value between ``1 / (pooling window)`` and the largest fan-in, at any
depth. The result is ``mask & (gradient > 0)``: it never adds a connection and is idempotent.

``apply_fn(params, x)`` must run the model in its structural *linear* mode (identity
activations, max-pool replaced by average-pool, norms skipped). For zoo models::

    linear = model.clone(linear=True)
    apply_fn = lambda p, x: linear.apply({"params": p}, x)

ReLU on nonnegative values is the identity and eval-mode BatchNorm at initialisation is close to
it, but max-pooling routes gradients to one input per window, so a non-linear ``apply_fn`` gives
wrong answers for models with max-pooling. Calls into sub-jaxprs (``jit``, ``custom_jvp_call``,
``custom_vjp_call``, ``remat``) are followed; matrix products inside control flow (``scan``,
``while``, ``cond``) are evaluated without saturation.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.extend.core as jex
import jax.numpy as jnp
import numpy as np

from jaxprune.pruning.tree import (
    Prunable,
    PyTree,
    check_same_structure,
    layer_names,
    prunable_names,
)

ApplyFn = Callable[[PyTree, jax.Array], Any]

_SATURATED = frozenset({"dot_general", "conv_general_dilated"})
_CALLS = frozenset(
    {
        "jit",
        "pjit",
        "closed_call",
        "core_call",
        "custom_jvp_call",
        "custom_vjp_call",
        "remat",
        "checkpoint",
    }
)
_SUB_JAXPR_KEYS = ("jaxpr", "call_jaxpr", "fun_jaxpr")


@jax.custom_vjp
def _saturate(y: jax.Array) -> jax.Array:
    return (y > 0).astype(y.dtype)


def _saturate_fwd(y: jax.Array):
    return _saturate(y), None


def _saturate_bwd(_, cotangent: jax.Array):
    return ((cotangent > 0).astype(cotangent.dtype),)


_saturate.defvjp(_saturate_fwd, _saturate_bwd)


def call_sub_jaxpr(eqn: Any) -> tuple[Any, list[Any]] | None:
    """Returns ``(open jaxpr, consts)`` of a call-like equation whose inputs align, else None."""
    if eqn.primitive.name not in _CALLS:
        return None
    for key in _SUB_JAXPR_KEYS:
        sub = eqn.params.get(key)
        if isinstance(sub, jex.ClosedJaxpr):
            sub_jaxpr, consts = sub.jaxpr, list(sub.consts)
        elif isinstance(sub, jex.Jaxpr):
            sub_jaxpr, consts = sub, []
        else:
            continue
        if len(sub_jaxpr.invars) == len(eqn.invars) and len(sub_jaxpr.constvars) == len(consts):
            return sub_jaxpr, consts
    return None


def _eval_saturating(jaxpr: Any, consts: list[Any], args: list[Any]) -> list[Any]:
    """Evaluates ``jaxpr`` with every matrix product / convolution output saturated to 0/1."""
    env: dict[Any, Any] = {}

    def read(var):
        return var.val if isinstance(var, jex.Literal) else env[var]

    for var, value in zip(jaxpr.constvars, consts, strict=True):
        env[var] = value
    for var, value in zip(jaxpr.invars, args, strict=True):
        env[var] = value
    for eqn in jaxpr.eqns:
        invals = [read(v) for v in eqn.invars]
        sub = call_sub_jaxpr(eqn)
        if sub is not None:
            outvals = _eval_saturating(sub[0], sub[1], invals)
        else:
            bind_params = eqn.primitive.get_bind_params(eqn.params)
            outvals = eqn.primitive.bind(*invals, **bind_params)
            if not eqn.primitive.multiple_results:
                outvals = [outvals]
            if eqn.primitive.name in _SATURATED:
                outvals = [_saturate(v) for v in outvals]
        for var, value in zip(eqn.outvars, outvals, strict=True):
            if not isinstance(var, jex.DropVar):
                env[var] = value
    return [read(v) for v in jaxpr.outvars]


def _is_bias(name: str) -> bool:
    return name.rsplit("/", 1)[-1] == "bias"


def effective_mask(
    apply_fn: ApplyFn,
    params: PyTree,
    mask: PyTree,
    sample_input: jax.Array,
    prunable: Prunable = None,
) -> PyTree:
    """Keeps only the kept connections that lie on an input-to-output path.

    Args:
      apply_fn: ``apply_fn(params, x) -> output`` running the model in its linear mode (see the
        module docstring; for zoo models ``model.clone(linear=True)``). The output may be any
        pytree of arrays.
      params: the params pytree (only structure, shapes and names are used).
      mask: bool pytree like ``params``.
      sample_input: an input batch (only its shape is used; one example suffices).
      prunable: which leaves are prunable; the others keep their mask unchanged.

    Returns:
      A bool pytree like ``mask``: ``mask & effective``. Non-prunable leaves keep their mask
      (all-True for masks from ``jp.global_mask`` and friends).

    Raises:
      ValueError: if ``mask`` does not match ``params``.
    """
    check_same_structure(mask, params, "mask", "params")
    names = layer_names(params)
    mask_leaves, treedef = jax.tree.flatten(mask)
    weights = [
        jnp.zeros(np.shape(m), jnp.float32) if _is_bias(name) else jnp.asarray(m, jnp.float32)
        for name, m in zip(names, mask_leaves, strict=True)
    ]
    ones = jnp.ones(np.shape(sample_input), jnp.float32)

    def flat_apply(flat_weights, x):
        return apply_fn(jax.tree.unflatten(treedef, flat_weights), x)

    closed = jax.make_jaxpr(flat_apply)(weights, ones)

    def total_output(flat_weights):
        args = [*jax.tree.leaves(flat_weights), ones]
        outs = _eval_saturating(closed.jaxpr, list(closed.consts), args)
        return sum(jnp.sum(_saturate(jnp.asarray(o, jnp.float32))) for o in outs)

    grads = jax.grad(total_output)(weights)
    prunable_set = set(prunable_names(params, prunable))
    out = []
    for name, m, g in zip(names, mask_leaves, grads, strict=True):
        m = jnp.asarray(m, bool)
        out.append(m & (g > 0) if name in prunable_set else m)
    return jax.tree.unflatten(treedef, out)
