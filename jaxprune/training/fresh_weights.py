"""What a run does between computing masks and training them: sanity edits, scratch init.

* ``sanity_edits`` (Su et al., ``config.sanity``): shuffle each layer's mask, re-draw the weights
  under it, permute the surviving weights within each layer (in that order).
* ``scratch_variables`` (Liu et al., flows ``scratch_e`` / ``scratch_b``): a fresh draw of the
  model's variables under the mask, kept weights scaled by ``sqrt(fan_in / surviving fan_in)``
  per unit when ``scratch.scale_fan_in``.

Re-drawn weights always come with freshly initialised BatchNorm statistics: running averages
trained for other weights would not describe them.
"""

from collections.abc import Callable
from typing import Any

import jax
import ml_collections
import numpy as np

from jaxprune.pruning import sanity

PyTree = Any
InitFn = Callable[[jax.Array], PyTree]  # key -> {'params': ..., 'batch_stats': ...}


def sanity_edits(
    block: ml_collections.ConfigDict,
    variables: PyTree,
    masks: PyTree,
    *,
    key: jax.Array,
    init_fn: InitFn,
    fresh_key: jax.Array,
    prunable: Any = None,
) -> tuple[PyTree, PyTree]:
    """Applies the switches of ``block`` (``config.sanity``) to fresh masks and their weights.

    Args:
      block: the ``config.sanity`` block.
      variables: the variables the masks were computed on.
      masks: bool pytree like ``variables['params']``.
      key: PRNG key of the shuffles.
      init_fn: the model's initialiser (for ``reinit``).
      fresh_key: the key of the re-drawn weights.
      prunable: the core's ``prunable=`` spec.

    Returns:
      ``(variables, masks)`` after the edits (numpy bool masks).
    """
    if block.shuffle_layerwise or block.shuffle_weights:  # (an eager split compiles programs)
        key_masks, key_weights = jax.random.split(key)
    params = variables["params"]
    if block.shuffle_layerwise:
        masks = sanity.shuffle_layerwise(key_masks, masks, prunable=prunable)
    if block.reinit:
        fresh = scratch_variables(init_fn, fresh_key, masks, scale_fan_in=False)
        params = fresh["params"]
        variables = {**variables, "batch_stats": fresh.get("batch_stats", {})}
    if block.shuffle_weights:
        params = sanity.shuffle_weights(key_weights, params, masks, prunable=prunable)
    masks = jax.tree.map(lambda m: np.asarray(m, dtype=bool), masks)
    return {**variables, "params": params}, masks


def scratch_variables(
    init_fn: InitFn, key: jax.Array, masks: PyTree, *, scale_fan_in: bool
) -> PyTree:
    """A fresh initialisation under ``masks`` (unstructured training from scratch).

    The model is initialised once; ``sanity.reinit`` masks (and rescales) that draw's params.
    """
    fresh = jax.device_get(init_fn(key))
    params = sanity.reinit(key, lambda _: fresh["params"], masks, scale_fan_in=scale_fan_in)
    return {**fresh, "params": params}
