"""Train state: everything that changes during training, as one pytree of arrays.

The state holds arrays only (no functions), so it can be donated to the jitted step, sharded,
and saved/restored by Orbax against an abstract copy of itself. The model's ``apply`` and the
optax transformation are closed over by the step functions instead (see ``steps.py``).

The masks live in the optimizer state: the run's optimizer is ``jp.masked(tx, masks)``, the same
optax transformation a user drops into their own loop, and ``state.masks`` reads them back
(``jp.masks_of``).
"""

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax

from jaxprune.masking import masked, masks_of

PyTree = Any


@flax.struct.dataclass
class TrainState:
    """Params, BatchNorm statistics, optimizer state, masks, step and RNG of a run.

    Attributes:
      step: global optimizer step (int32 scalar), counted across phases.
      params: model parameters; pruned entries are exactly zero.
      batch_stats: BatchNorm running averages (an empty dict for models without BatchNorm).
      opt_state: state of ``jp.masked(tx, masks)`` for the current phase's ``tx``.
      rng: base PRNG key (uint32[2]); per-step keys are ``fold_in(rng, step)``.
    """

    step: jax.Array
    params: PyTree
    batch_stats: PyTree
    opt_state: optax.OptState
    rng: jax.Array

    @property
    def masks(self) -> PyTree:
        """Bool pytree shaped like ``params`` (all True while dense), from the optimizer state."""
        return masks_of(self.opt_state)


def dense_masks(params: PyTree) -> PyTree:
    """All-True masks shaped like ``params``."""
    return jax.tree.map(lambda p: jnp.ones(p.shape, dtype=bool), params)


def create_train_state(
    variables: PyTree,
    tx: optax.GradientTransformation,
    rng: jax.Array,
    *,
    masks: PyTree | None = None,
    step: int = 0,
) -> TrainState:
    """Builds a state from model variables; params are masked and the optimizer initialised.

    Args:
      variables: Linen variables with 'params' and optionally 'batch_stats'.
      tx: optax transformation of the phase; the state's optimizer is ``jp.masked(tx, masks)``.
      rng: base PRNG key.
      masks: bool pytree like ``params``; None means dense.
      step: global step the state starts at.

    Returns:
      A ``TrainState`` with ``params * masks`` and a fresh optimizer state. Every leaf is a
      new array, so donating the state never deletes the caller's arrays.
    """
    params = variables["params"]
    if masks is None:
        masks = dense_masks(params)
    masks = jax.tree.map(lambda m: jnp.array(m, dtype=bool), masks)
    params = jax.tree.map(lambda p, m: jnp.where(m, p, jnp.zeros_like(p)), params, masks)
    return TrainState(
        step=jnp.asarray(step, dtype=jnp.int32),
        params=params,
        batch_stats=jax.tree.map(jnp.array, variables.get("batch_stats", {})),
        opt_state=masked(tx, masks).init(params),
        rng=jnp.array(rng),
    )
