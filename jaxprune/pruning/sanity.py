"""Sanity checks for pruning at init (Su et al. 2020, "Random Tickets can Win the Jackpot").

Su et al. test whether a pruning-at-init method found anything beyond per-layer sparsities by
destroying everything else and checking that accuracy does not drop:

* :func:`shuffle_layerwise`: shuffle the kept positions of each layer's mask (the per-layer counts
  survive, the connectivity pattern does not);
* :func:`reinit`: train the mask from a fresh initialisation, optionally rescaled to the sparse
  fan-in (Liu et al. 2019, "Rethinking the Value of Network Pruning");
* :func:`shuffle_weights`: permute the surviving weight values within each layer.

(Corrupting the data the mask is computed from lives in ``jaxprune.data.corrupt``.)

Decisions:

* Everything is pure and keyed. Layer ``i`` (the ``i``-th leaf in ``jax.tree.flatten`` order,
  counting every leaf, prunable or not) draws from ``jax.random.fold_in(key, i)``, so changing the
  prunable set or adding a layer does not reshuffle the other layers.
* Leaves may be numpy or jax arrays; **every returned leaf is a ``jax.Array``** (leaves that are
  left alone go through ``jnp.asarray``: same values and, up to JAX's dtype canonicalisation
  without x64, same dtype). Masks come back as ``bool``.
* The functions only use shapes in Python control flow, so they run under ``jax.jit`` and
  ``jax.vmap`` (over keys, for example).
* A shuffle permutes the whole flattened leaf (one flat permutation per layer), so a kept entry
  can move to any position of its layer, across rows and channels.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxprune.pruning.tree import Prunable, PyTree, check_same_structure, prunable_flags


@jax.jit
def _permute_flat(key: jax.Array, flat: jax.Array) -> jax.Array:
    return jax.random.permutation(key, flat)


def _permute_leaf(key: jax.Array, mask: jax.Array) -> jax.Array:
    """One flat permutation of the leaf (compiled once per size, not per shape)."""
    return _permute_flat(key, jnp.ravel(mask).astype(bool)).reshape(jnp.shape(mask))


@jax.jit
def _shuffle_flat(key: jax.Array, w: jax.Array, m: jax.Array) -> jax.Array:
    """Permutes the kept values of a flat leaf among its kept positions; pruned entries -> 0."""
    # Kept positions in a uniformly random order, then the pruned ones.
    perm = jax.random.permutation(key, w.size)
    source = perm[jnp.argsort(~m[perm], stable=True)]
    # Kept positions in index order, then the pruned ones. The first k entries of both pair
    # every kept position with a distinct kept source (k = number kept).
    target = jnp.argsort(~m, stable=True)
    moved = jnp.zeros_like(w).at[target].set(w[source])
    return jnp.where(m, moved, jnp.zeros((), w.dtype))


def _shuffle_leaf(key: jax.Array, weights: jax.Array, mask: jax.Array) -> jax.Array:
    flat = _shuffle_flat(key, jnp.ravel(weights), jnp.ravel(mask).astype(bool))
    return flat.reshape(jnp.shape(weights))


def shuffle_layerwise(key: jax.Array, mask: PyTree, prunable: Prunable = None) -> PyTree:
    """Shuffles each prunable layer's mask independently ("random shuffling" of Su et al.).

    Every prunable leaf gets a uniformly random flat permutation of its entries, drawn from
    ``fold_in(key, leaf_index)``, so it keeps exactly as many True entries as before but at random
    positions. Non-prunable leaves (all True by the mask convention) are returned unchanged.

    Args:
      key: a PRNG key.
      mask: a bool mask pytree (numpy or jax leaves).
      prunable: which leaves are prunable (see ``jaxprune.pruning.tree``); decided on the mask's
        names and shapes, which are those of the params.

    Returns:
      A bool mask pytree of ``jax.Array`` leaves with the structure of ``mask``.

    Example:
      >>> m = {"w": jnp.array([[True, True], [False, False]])}
      >>> int(shuffle_layerwise(jax.random.key(0), m)["w"].sum())
      2
    """
    leaves, treedef = jax.tree.flatten(mask)
    flags = prunable_flags(mask, prunable)
    out = []
    for i, (leaf, flag) in enumerate(zip(leaves, flags, strict=True)):
        if flag and np.size(leaf) > 1:
            out.append(_permute_leaf(jax.random.fold_in(key, i), jnp.asarray(leaf)))
        else:
            out.append(jnp.asarray(leaf, bool))
    return jax.tree.unflatten(treedef, out)


def _fan_in_scale(mask: jax.Array) -> jax.Array:
    """``sqrt(fan_in / surviving_fan_in)`` per output unit (last axis), 0 for dead units.

    ``fan_in = prod(shape[:-1])``: the inputs feeding one output unit of a Dense kernel
    ``[in, out]`` or a Conv kernel ``[*window, in, out]``.
    """
    fan_in = math.prod(mask.shape[:-1])
    surviving = jnp.sum(mask, axis=tuple(range(mask.ndim - 1)), dtype=jnp.int32)
    ratio = fan_in / jnp.maximum(surviving, 1).astype(jnp.float32)
    return jnp.where(surviving > 0, jnp.sqrt(ratio), 0.0)


def reinit(
    key: jax.Array,
    init_fn: Callable[[jax.Array], PyTree],
    mask: PyTree,
    *,
    scale_fan_in: bool = False,
    prunable: Prunable = None,
) -> PyTree:
    """A fresh, masked initialisation: ``apply_mask(init_fn(key), mask)``, optionally rescaled.

    With ``scale_fan_in=True`` (sparse training from scratch as in Liu et al. 2019) every kept
    weight of a prunable kernel is multiplied by ``sqrt(fan_in / surviving_fan_in)`` of its output
    unit ``j``, where ``fan_in = prod(kernel.shape[:-1])`` and ``surviving_fan_in`` is the number of
    kept entries of ``kernel[..., j]``. A fan-in-scaled init (He, LeCun: variance ``c / fan_in``)
    then has variance ``c / surviving_fan_in`` on the kept weights, i.e. the init the sparse
    network would get if its fan-in were counted over the surviving connections. Units with no
    surviving input stay all zero. Leaves with fewer than one axis, and non-prunable leaves, are
    never rescaled (a bias is masked but not scaled).

    Args:
      key: a PRNG key, passed to ``init_fn`` as is.
      init_fn: ``init_fn(key) -> params``, a fresh draw of the params (e.g.
        ``lambda k: model.init(k, x)["params"]``).
      mask: a bool mask pytree with the structure and shapes of the params.
      scale_fan_in: rescale kept weights to the surviving fan-in (see above).
      prunable: which leaves count as prunable kernels for the rescaling.

    Returns:
      The new params (``jax.Array`` leaves, dtypes of ``init_fn``'s output), exactly 0 where
      ``mask`` is False.

    Raises:
      ValueError: if ``mask`` does not have the structure and shapes of ``init_fn(key)``.
    """
    params = init_fn(key)
    check_same_structure(mask, params, "mask", "init_fn(key)")
    leaves, treedef = jax.tree.flatten(params)
    flags = prunable_flags(params, prunable)
    out = []
    for leaf, m, flag in zip(leaves, jax.tree.leaves(mask), flags, strict=True):
        w = jnp.asarray(leaf)
        m = jnp.asarray(m, bool)
        if scale_fan_in and flag and w.ndim >= 1:
            w = w * _fan_in_scale(m).astype(w.dtype)
        out.append(jnp.where(m, w, jnp.zeros((), w.dtype)))
    return jax.tree.unflatten(treedef, out)


def shuffle_weights(
    key: jax.Array, params: PyTree, mask: PyTree, prunable: Prunable = None
) -> PyTree:
    """Permutes the surviving weight values within each prunable layer ("weight shuffling").

    In every prunable leaf the values at the kept positions (``mask`` True) are randomly permuted
    among those same positions (key ``fold_in(key, leaf_index)``): the mask and the multiset of
    kept values of each layer are preserved, which weight meets which connection is not. Pruned
    positions come back exactly 0 (whatever ``params`` held there). Non-prunable leaves are
    returned unchanged.

    Args:
      key: a PRNG key.
      params: the params pytree (numpy or jax leaves).
      mask: a bool mask pytree with the structure and shapes of ``params``.
      prunable: which leaves are prunable.

    Returns:
      Params with ``jax.Array`` leaves, same structure and dtypes.

    Raises:
      ValueError: if ``mask`` does not have the structure and shapes of ``params``.
    """
    check_same_structure(mask, params, "mask", "params")
    leaves, treedef = jax.tree.flatten(params)
    flags = prunable_flags(params, prunable)
    out = []
    for i, (leaf, m, flag) in enumerate(zip(leaves, jax.tree.leaves(mask), flags, strict=True)):
        if flag and np.size(leaf) > 0:
            out.append(_shuffle_leaf(jax.random.fold_in(key, i), jnp.asarray(leaf), jnp.asarray(m)))
        else:
            out.append(jnp.asarray(leaf))
    return jax.tree.unflatten(treedef, out)
