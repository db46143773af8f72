"""Pruning masks as an optax transformation: ``tx = jp.masked(inner, masks)``.

One mechanism keeps pruned weights at exactly zero in any training loop (flax ``TrainState``,
a hand-written loop, ``optax.chain``/``inject_hyperparams``/``MultiSteps``)::

    tx = jp.masked(optax.adam(1e-3), masks)     # masks: bool pytree shaped like params
    opt_state = tx.init(params)                 # MaskedState(inner_state, masks)
    updates, opt_state = tx.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)   # pruned entries are exactly +0.0
    opt_state = jp.set_masks(opt_state, new_masks)  # e.g. inside the jitted step; no recompile
    jp.masks_of(opt_state)                          # the current masks

Semantics:

* ``tx.init(params)`` returns ``MaskedState(inner.init(masked params), masks)``, with every
  param-shaped subtree of the inner state zeroed at pruned entries (``mask_moments``). The masks
  are stored as bool arrays in the state: they are traced values, so ``set_masks`` never forces
  a recompilation of a jitted step that takes the optimizer state as an argument. A mask that
  is already a ``jax.Array`` keeps its sharding; a NumPy mask is placed with the sharding of its
  (concrete) param. Nothing is gathered.
* ``tx.update(grads, state, params)``: the gradients are set to exactly ``+0.0`` at pruned
  entries and the params given to ``inner.update`` are masked the same way (so weight decay of
  a pruned weight is 0). Let ``u`` be the inner update. The returned update is
  ``where(mask, u, -params)``: at a kept entry ``params + update`` is ``params + u`` bit for bit;
  at a pruned entry it is ``p + (-p) == +0.0`` exactly (for finite ``p``), even if the caller
  never zeroed the params or ``set_masks`` just pruned more. The update dtype is
  ``result_type(u, params)``. ``params=None`` raises ``ValueError``.
* The inner moments of pruned weights stay exactly zero: with masked gradients and params, the
  state of Adam, AdamW, SGD with momentum, RMSProp, ... never leaves zero at pruned entries.
  ``set_masks(opt_state, new)`` zeroes every param-shaped subtree of the inner state (``trace``,
  ``mu``, ``nu``, ...: subtrees with the masks' structure, leaf shapes and a floating dtype;
  counters and other leaves untouched) at the entries pruned by ``new``. Regrowth is allowed: a
  re-enabled entry starts from zero weight and zero moments.
* ``set_masks`` changes the optimizer state only. Params at newly pruned entries become zero at
  the next ``apply_updates``; if the next forward pass (or an evaluation) must already see them
  pruned, also call ``jp.apply_mask(params, new)``.
* ``set_masks`` / ``masks_of`` find the ``MaskedState`` anywhere inside the given pytree (an
  ``optax.chain`` state, ``inject_hyperparams``, ``MultiSteps``, a flax ``TrainState``). Zero or
  several of them raise ``ValueError``.

Rules the caller must keep:

* ``jp.masked`` must see the final update: nothing after it may rescale the update (in
  ``optax.chain(a, jp.masked(b, m))`` it is last). Wrappers around it that pass the update
  through (``inject_hyperparams``) are fine. Inside ``optax.MultiSteps`` the pruned params are
  zeroed at the steps that apply an update, not at the accumulation mini-steps.
* Apply updates as ``params + updates`` (``optax.apply_updates``).
* ``MaskedState`` here is not ``optax.MaskedState`` (the state of ``optax.masked``, which
  selects whole leaves by a static mask and passes the others through untransformed).

Bit-identity with a hand-written masked step ``where(m, p + where(m, u, 0), 0)`` with
``u = inner.update(where(m, g, 0), s, where(m, p, 0))``: op by op (eagerly) ``apply_updates``
of this transformation's update gives the same bits (for finite params). Under ``jax.jit`` the
two programs are different expressions, and XLA's backend may fuse a multiply-add of the old one
into an FMA where it does not fuse the new one (seen on CPU: 1 ulp on a few entries). A jitted
step that must stay bit-identical to such an old step keeps its final line on these updates:
``m = masks_of(opt_state)`` before the update, then ``where(m, p + where(m, updates, 0), 0)``
(XLA folds ``where(m, where(m, u, -p), 0)`` to ``where(m, u, 0)``, the old expression).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxprune.pruning.select import check_bool_mask
from jaxprune.pruning.tree import PyTree, check_same_structure

__all__ = ["MaskedState", "mask_moments", "masked", "masks_of", "set_masks"]


class MaskedState(NamedTuple):
    """Optax state of :func:`masked`.

    Attributes:
      inner_state: the state of the wrapped transformation.
      masks: bool arrays shaped like the params (True = kept).
    """

    inner_state: optax.OptState
    masks: PyTree


def _check_bool(masks: PyTree, what: str) -> None:
    """``TypeError`` naming the leaf unless every leaf of ``masks`` is a bool array."""
    if not jax.tree.leaves(masks):
        raise ValueError(f"{what} has no array leaves (got {masks!r})")
    try:
        check_bool_mask(masks, what)
    except ValueError as error:
        raise TypeError(str(error)) from None


def _zero_where_pruned(x: jax.Array, m: jax.Array) -> jax.Array:
    return jnp.where(m, x, jnp.zeros((), jnp.result_type(x)))


def _mask_tree(tree: PyTree, masks: PyTree) -> PyTree:
    return jax.tree.map(_zero_where_pruned, tree, masks)


def _place(mask: Any, param: Any) -> jax.Array:
    """A mask as a jax bool array that keeps its sharding (NumPy masks take their param's).

    Under ``jax.jit`` (traced params) a concrete mask is a constant of the program; one with a
    ``NamedSharding`` is constrained to it so that the state's mask keeps its layout.
    """
    if isinstance(mask, jax.core.Tracer):
        return mask
    if isinstance(mask, jax.Array):
        if isinstance(param, jax.core.Tracer) and isinstance(
            mask.sharding, jax.sharding.NamedSharding
        ):
            return jax.lax.with_sharding_constraint(mask, mask.sharding)
        return mask
    sharding = getattr(param, "sharding", None)
    if isinstance(param, jax.Array) and not isinstance(param, jax.core.Tracer) and sharding:
        return jax.device_put(np.asarray(mask), sharding)
    return jnp.asarray(mask)


def _is_params_placeholder(params: Any) -> bool:
    """Whether ``init`` is called by ``optax.tree_utils.tree_map_params`` (a placeholder)."""
    return type(params).__name__ == "_ParamsPlaceholder"


def mask_moments(inner_state: optax.OptState, masks: PyTree) -> optax.OptState:
    """Zeroes, at pruned entries, every param-shaped subtree of an optimizer state.

    A subtree is param-shaped when it has the tree structure of ``masks``, the same leaf shapes
    and floating-point leaves (momentum ``trace``, Adam's ``mu`` and ``nu``, ...). Counters and
    other leaves are returned unchanged. Jittable; elementwise, so shardings are kept.

    Args:
      inner_state: an optax state of a transformation initialised on params shaped like
        ``masks``.
      masks: bool pytree like the params (True = kept).

    Returns:
      ``inner_state`` with pruned entries of its param-shaped subtrees exactly ``+0.0``.
    """
    mask_leaves, mask_def = jax.tree.flatten(masks)
    shapes = [np.shape(m) for m in mask_leaves]

    def like_params(node: Any) -> bool:
        leaves, treedef = jax.tree.flatten(node)
        return (
            bool(leaves)
            and treedef == mask_def
            and all(hasattr(x, "shape") and hasattr(x, "dtype") for x in leaves)
            and [np.shape(x) for x in leaves] == shapes
            and all(jnp.issubdtype(x.dtype, jnp.inexact) for x in leaves)
        )

    def mask_node(node: Any) -> Any:
        return _mask_tree(node, masks) if like_params(node) else node

    return jax.tree.map(mask_node, inner_state, is_leaf=like_params)


def masked(inner: optax.GradientTransformation, masks: PyTree) -> optax.GradientTransformation:
    """Wraps ``inner`` so that pruned weights get exactly zero update, moments and value.

    See the module docstring for the full semantics.

    Args:
      inner: the optax transformation to wrap (e.g. ``optax.adam(1e-3)``).
      masks: bool pytree shaped like the params (True = kept), e.g. from ``jp.global_mask``.
        Used by ``init``; afterwards the masks live in the state (``set_masks``).

    Returns:
      An ``optax.GradientTransformationExtraArgs`` whose state is a :class:`MaskedState`;
      extra keyword arguments of ``update`` are passed to ``inner``.

    Raises:
      TypeError: a mask leaf is not a bool array.
      ValueError: ``masks`` has no leaves.

    Example:
      >>> params = {"w": jnp.array([1.0, -2.0])}
      >>> tx = masked(optax.sgd(0.5), {"w": jnp.array([True, False])})
      >>> state = tx.init(params)
      >>> updates, state = tx.update({"w": jnp.array([1.0, 1.0])}, state, params)
      >>> optax.apply_updates(params, updates)["w"].tolist()
      [0.5, 0.0]
    """
    _check_bool(masks, "masks")
    inner = optax.with_extra_args_support(inner)

    def init_fn(params: optax.Params) -> MaskedState:
        if _is_params_placeholder(params):  # optax.tree_utils.tree_map_params
            return MaskedState(inner.init(params), masks)
        check_same_structure(params, masks, "params", "masks")
        state_masks = jax.tree.map(_place, masks, params)
        inner_state = inner.init(_mask_tree(params, state_masks))
        return MaskedState(mask_moments(inner_state, state_masks), state_masks)

    def update_fn(
        updates: optax.Updates,
        state: MaskedState,
        params: optax.Params | None = None,
        **extra_args: Any,
    ) -> tuple[optax.Updates, MaskedState]:
        if params is None:
            raise ValueError(
                "jp.masked needs params: call tx.update(grads, opt_state, params) (the update "
                "of a pruned weight is -param, so that apply_updates makes it exactly zero)"
            )
        if not isinstance(state, MaskedState):
            raise TypeError(
                f"jp.masked got a state of type {type(state).__name__}, expected the "
                "MaskedState returned by its init"
            )
        masks = state.masks
        check_same_structure(updates, masks, "grads", "masks")
        check_same_structure(params, masks, "params", "masks")
        grads = _mask_tree(updates, masks)
        kept_params = _mask_tree(params, masks)
        inner_updates, inner_state = inner.update(
            grads, state.inner_state, kept_params, **extra_args
        )
        new_updates = jax.tree.map(
            lambda u, p, m: jnp.where(m, u, -p), inner_updates, params, masks
        )
        return new_updates, MaskedState(inner_state, masks)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def _is_masked_state(node: Any) -> bool:
    return isinstance(node, MaskedState)


def _masked_states(tree: PyTree, prefix: str = "") -> list[tuple[str, MaskedState]]:
    """Every ``MaskedState`` in ``tree`` with its path, nested ones (``masked(masked(.))``) too."""
    found = []
    leaves = jax.tree_util.tree_flatten_with_path(tree, is_leaf=_is_masked_state)[0]
    for path, node in leaves:
        if _is_masked_state(node):
            where = prefix + jax.tree_util.keystr(path)
            found.append((where, node))
            found.extend(_masked_states(node.inner_state, where + ".inner_state"))
    return found


def _find(opt_state: PyTree, caller: str) -> MaskedState:
    """The single ``MaskedState`` inside ``opt_state``; ``ValueError`` for none or several."""
    found = _masked_states(opt_state)
    if len(found) == 1:
        return found[0][1]
    if not found:
        raise ValueError(
            f"{caller}: no jp.masked state (MaskedState) found in opt_state of type "
            f"{type(opt_state).__name__}; build the optimizer with jp.masked(inner, masks)"
        )
    paths = [path or "(the root)" for path, _ in found]
    raise ValueError(
        f"{caller}: found {len(found)} jp.masked states (MaskedState) in opt_state, at {paths}; "
        "exactly one is needed (wrap the optimizer in jp.masked once)"
    )


def masks_of(opt_state: PyTree) -> PyTree:
    """The masks stored in the single :class:`MaskedState` inside ``opt_state``.

    Args:
      opt_state: any pytree holding exactly one ``MaskedState`` (an optax state, a flax
        ``TrainState``).

    Raises:
      ValueError: ``opt_state`` holds no ``MaskedState`` or more than one.
    """
    return _find(opt_state, "masks_of").masks


def set_masks(opt_state: PyTree, masks: PyTree) -> PyTree:
    """Replaces the masks inside ``opt_state`` and zeroes the moments of pruned weights.

    Jittable with traced ``masks``: the masks are part of the state, so a jitted step that calls
    this (e.g. under ``lax.cond``) compiles once. Params are not touched (see the module
    docstring).

    Args:
      opt_state: any pytree holding exactly one :class:`MaskedState` (an optax state, a flax
        ``TrainState``).
      masks: bool pytree with the structure and shapes of the current masks.

    Returns:
      ``opt_state`` with the new masks and ``mask_moments`` applied to the inner state.

    Raises:
      ValueError: no or several ``MaskedState``; ``masks`` differs in structure or shape from
        the current masks (the message names the first differing leaf).
      TypeError: a leaf of ``masks`` is not a bool array.
    """
    current = _find(opt_state, "set_masks")
    check_same_structure(masks, current.masks, "masks", "the current masks")
    _check_bool(masks, "masks")
    masks = jax.tree.map(_place, masks, current.masks)  # NumPy masks take the old placement

    def replace(node: Any) -> Any:
        if _is_masked_state(node):
            return MaskedState(mask_moments(node.inner_state, masks), masks)
        return node

    return jax.tree.map(replace, opt_state, is_leaf=_is_masked_state)
