"""Jitted masked train step and eval step.

``train_step(state, batch) -> (state, metrics)``:
  1. forward in train mode (BatchNorm uses batch statistics and updates running averages),
  2. the update of ``jp.masked(tx, masks)`` (the masks are in ``state.opt_state``): gradients
     and updates are masked, pruned weights get exactly zero and carry no momentum,
  3. ``optax.apply_updates``.
The masks are part of the (traced) state, so changing them (``jp.set_masks``) never triggers a
recompilation. The state argument is donated.

``eval_step(state, batch) -> metrics`` uses the BatchNorm running averages and returns sums
weighted by ``batch['weight']`` (0 marks padding), so partial final batches are exact.
"""

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from jaxprune.masking import mask_moments, masked, masks_of, set_masks
from jaxprune.training.state import TrainState

PyTree = Any
Metrics = dict[str, jax.Array]


def _masked(tree: PyTree, masks: PyTree) -> PyTree:
    return jax.tree.map(lambda x, m: jnp.where(m, x, jnp.zeros_like(x)), tree, masks)


def _loss_and_accuracy(
    logits: jax.Array, labels: jax.Array, weights: jax.Array
) -> tuple[jax.Array, jax.Array]:
    losses = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels)
    correct = (jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32)
    return jnp.sum(losses * weights), jnp.sum(correct * weights)


def train_step_fn(
    apply_fn: Callable[..., Any],
    tx: optax.GradientTransformation,
    regularizer: Callable[[PyTree], jax.Array] | None = None,
) -> Callable[[TrainState, dict[str, jax.Array]], tuple[TrainState, Metrics]]:
    """Returns the (unjitted) masked train step for a model and optimizer.

    Args:
      apply_fn: the Linen module's ``apply``; called as
        ``apply_fn(variables, images, train=True, mutable=[...], rngs=...)``.
      tx: the phase's optax transformation (the one ``create_train_state`` wrapped in
        ``jp.masked``).
      regularizer: optional ``penalty(params) -> scalar`` added to the objective (e.g. network
        slimming's L1 on BatchNorm scales). The reported ``loss`` stays the data loss; the
        penalty is reported as ``penalty``.

    Returns:
      ``step(state, batch) -> (new_state, {'loss', 'accuracy'})`` where the batch holds
      ``image`` float32[B, H, W, C] and ``label`` int32[B].
    """

    def step(state: TrainState, batch: dict[str, jax.Array]) -> tuple[TrainState, Metrics]:
        dropout_rng = jax.random.fold_in(state.rng, state.step)
        has_batch_stats = bool(jax.tree.leaves(state.batch_stats))

        def loss_fn(params):
            variables = {"params": params}
            if has_batch_stats:
                variables["batch_stats"] = state.batch_stats
                logits, updates = apply_fn(
                    variables,
                    batch["image"],
                    train=True,
                    mutable=["batch_stats"],
                    rngs={"dropout": dropout_rng},
                )
                new_stats = updates["batch_stats"]
            else:
                logits = apply_fn(
                    variables, batch["image"], train=True, rngs={"dropout": dropout_rng}
                )
                new_stats = state.batch_stats
            ones = jnp.ones(batch["label"].shape, jnp.float32)
            loss_sum, correct = _loss_and_accuracy(logits, batch["label"], ones)
            n = batch["label"].shape[0]
            loss = loss_sum / n
            penalty = regularizer(params) if regularizer is not None else jnp.zeros(())
            return loss + penalty, (loss, penalty, correct / n, new_stats)

        (_, (loss, penalty, accuracy, new_stats)), grads = jax.value_and_grad(
            loss_fn, has_aux=True
        )(state.params)
        masks = masks_of(state.opt_state)
        updates, opt_state = masked(tx, masks).update(grads, state.opt_state, state.params)
        # `optax.apply_updates(params, updates)` gives the same kept values up to the last ulp;
        # this form (pruned entries +0.0 either way) keeps every earlier run's params bit for bit
        # (XLA CPU fuses its multiply-add into an FMA at a few entries).
        params = _masked(jax.tree.map(jnp.add, state.params, _masked(updates, masks)), masks)
        new_state = state.replace(
            step=state.step + 1, params=params, batch_stats=new_stats, opt_state=opt_state
        )
        metrics = {"loss": loss, "accuracy": accuracy}
        if regularizer is not None:
            metrics["penalty"] = penalty
        return new_state, metrics

    return step


def mask_opt_state(opt_state: optax.OptState, masks: PyTree) -> optax.OptState:
    """Zeroes the entries of ``opt_state`` that belong to pruned weights (``jp.masked``'s rule).

    Every subtree of the optimizer state with the structure and leaf shapes of ``masks``
    (momentum ``trace``, Adam's ``mu`` and ``nu``, ...) is masked; counters and other leaves are
    left alone.
    """
    return mask_moments(opt_state, masks)


def gradual_train_step_fn(
    apply_fn: Callable[..., Any],
    tx: optax.GradientTransformation,
    schedule: Any,
    mask_fn: Callable[..., PyTree],
) -> Callable[[TrainState, dict[str, jax.Array]], tuple[TrainState, Metrics]]:
    """The masked train step with gradual pruning (Zhu & Gupta) inside it.

    At a step ``t`` with ``schedule.should_update(t)`` the masks are first recomputed from the
    current params by ``mask_fn`` (inside ``lax.cond``: no recompilation, no host round-trip),
    params and the param-shaped optimizer state are re-masked, then the usual masked step of
    ``train_step_fn`` runs.

    Args:
      apply_fn: the Linen module's ``apply``.
      tx: optax transformation.
      schedule: a ``jaxprune.pruning.schedules.Schedule`` (``sparsity_at``, ``should_update``).
      mask_fn: ``mask_fn(params, step, *, key, batch, apply_fn) -> masks``, jit-compatible
        (``jaxprune.training.prune.traced_mask_fn``); ``apply_fn(params, images) -> logits``.

    Returns:
      ``step(state, batch) -> (new_state, metrics)`` with ``loss``, ``accuracy``,
      ``mask_updated`` (1.0 at update steps), ``target_sparsity`` and ``kept`` (the number of
      unmasked entries over all mask leaves after this step's update).
    """
    base_step = train_step_fn(apply_fn, tx)

    def update_masks(state: TrainState, batch: dict[str, jax.Array]) -> TrainState:
        def eval_apply(params, images):
            variables = {"params": params}
            if jax.tree.leaves(state.batch_stats):
                variables["batch_stats"] = state.batch_stats
            return apply_fn(variables, images, train=False)

        key = jax.random.fold_in(jax.random.fold_in(state.rng, 0x5EED), state.step)
        masks = mask_fn(state.params, state.step, key=key, batch=batch, apply_fn=eval_apply)
        masks = jax.tree.map(lambda m, old: m.astype(bool).reshape(old.shape), masks, state.masks)
        return state.replace(
            params=_masked(state.params, masks), opt_state=set_masks(state.opt_state, masks)
        )

    def step(state: TrainState, batch: dict[str, jax.Array]) -> tuple[TrainState, Metrics]:
        update = schedule.should_update(state.step)
        target = schedule.sparsity_at(state.step)
        state = jax.lax.cond(update, update_masks, lambda s, _: s, state, batch)
        kept = sum(jnp.sum(m, dtype=jnp.int32) for m in jax.tree.leaves(state.masks))
        new_state, metrics = base_step(state, batch)
        metrics = dict(
            metrics,
            mask_updated=update.astype(jnp.float32),
            target_sparsity=jnp.asarray(target, jnp.float32),
            kept=kept,
        )
        return new_state, metrics

    return step


def eval_step_fn(
    apply_fn: Callable[..., Any],
) -> Callable[[TrainState, dict[str, jax.Array]], Metrics]:
    """Returns the (unjitted) eval step: weighted sums of loss and correct predictions.

    Args:
      apply_fn: the Linen module's ``apply``; called with ``train=False``.

    Returns:
      ``step(state, batch) -> {'loss_sum', 'correct', 'count'}``; the batch holds ``image``,
      ``label`` and ``weight`` (1 for real examples, 0 for padding).
    """

    def step(state: TrainState, batch: dict[str, jax.Array]) -> Metrics:
        variables = {"params": state.params}
        if jax.tree.leaves(state.batch_stats):
            variables["batch_stats"] = state.batch_stats
        logits = apply_fn(variables, batch["image"], train=False)
        weights = batch["weight"].astype(jnp.float32)
        loss_sum, correct = _loss_and_accuracy(logits, batch["label"], weights)
        return {"loss_sum": loss_sum, "correct": correct, "count": jnp.sum(weights)}

    return step
