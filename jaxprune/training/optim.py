"""Optax optimizer and learning-rate schedule built from a config phase.

Weight decay is applied to kernels only (leaves with ``ndim >= 2``; biases and norm scales are
not decayed). Because the train step masks gradients before the optimizer and zeroes pruned
params after it, decay can never bring a pruned weight back: its value, gradient and decay
term are all exactly zero.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from jaxprune.training import config_check


def make_schedule(
    name: str, learning_rate: float, total_steps: int, warmup_steps: int = 0
) -> optax.Schedule:
    """Learning-rate schedule over one training phase.

    Args:
      name: 'constant', 'cosine' (decays to 0 at ``total_steps``) or 'step' (x0.1 after 50% and
        again after 75% of the phase).
      learning_rate: peak learning rate.
      total_steps: length of the phase in steps.
      warmup_steps: linear warm-up from 0 over this many steps (counted inside the phase).

    Returns:
      A function step -> learning rate, with step counted from the start of the phase.

    Raises:
      ValueError: for an unknown schedule name.
    """
    decay_steps = max(total_steps - warmup_steps, 1)
    if name == "constant":
        main = optax.constant_schedule(learning_rate)
    elif name == "cosine":
        main = optax.cosine_decay_schedule(learning_rate, decay_steps)
    elif name == "step":
        main = optax.piecewise_constant_schedule(
            learning_rate, {int(decay_steps * 0.5): 0.1, int(decay_steps * 0.75): 0.1}
        )
    else:
        raise ValueError(
            f"lr_schedule must be one of {list(config_check.LR_SCHEDULES)}, got {name!r}"
        )
    if warmup_steps <= 0:
        return main
    warmup = optax.linear_schedule(0.0, learning_rate, warmup_steps)
    return optax.join_schedules([warmup, main], [warmup_steps])


# Schedules whose numbers ``scale_by_phase_lr`` keeps in the optimizer state (without warm-up).
STATE_SCHEDULES = ("constant", "cosine")


class PhaseLrState(NamedTuple):
    """State of ``scale_by_phase_lr``: the phase's step count and its schedule's numbers.

    Attributes:
      count: steps taken in the phase (int32).
      numbers: float32 scalars of the schedule (``scale``, and for 'cosine' ``steps`` and
        ``rate``); they are operands of the compiled step, not constants in it.
    """

    count: jax.Array
    numbers: dict[str, jax.Array]


def scale_by_phase_lr(
    name: str, learning_rate: float, total_steps: int, warmup_steps: int = 0
) -> optax.GradientTransformation:
    """``optax.scale_by_learning_rate(make_schedule(...))`` with the numbers in the state.

    With the schedule's constants baked into the program (optax's form), every phase compiles
    its own train step although the steps of, say, the dense and the fine-tuning phase differ
    only in those numbers. Here a 'constant' or 'cosine' schedule without warm-up keeps them in
    its state, so phases with the same model and optimizer run the same program: it is compiled
    once (or found in the persistent compilation cache).

    The arithmetic is the one XLA runs for optax's form, bit for bit. XLA folds the constants
    of ``-lr * 0.5 * (1 + cos(pi * min(t, T) / T))``: the division becomes a multiplication by
    ``fl(1 / T)``, merged with pi into one factor ``fl(pi * fl(1 / T))``, and ``-1 * lr * 0.5``
    into ``-0.5 * lr``; the step size is then ``(cos(min(t, T) * rate) + 1) * scale``.
    ``tests/test_optim.py`` checks the step sizes against optax's over phase lengths, rates and
    steps. The 'step' schedule and warm-up fall back to optax's form (compiled per phase).

    Args:
      name: 'constant', 'cosine' or 'step' (see ``make_schedule``).
      learning_rate: peak learning rate.
      total_steps: length of the phase in steps.
      warmup_steps: linear warm-up steps.

    Returns:
      An optax transformation multiplying updates by ``-schedule(count)``.
    """
    if warmup_steps > 0 or name not in STATE_SCHEDULES:
        return optax.scale_by_learning_rate(
            make_schedule(name, learning_rate, total_steps, warmup_steps)
        )
    lr = np.float32(learning_rate)
    if name == "constant":
        numbers = {"scale": -lr}
    else:
        steps = np.float32(max(total_steps, 1))
        numbers = {
            "scale": np.float32(-0.5) * lr,
            "steps": steps,
            "rate": np.float32(np.pi) * (np.float32(1) / steps),
        }

    def init_fn(params):
        del params
        return PhaseLrState(
            count=jnp.zeros([], jnp.int32),
            numbers={k: jnp.asarray(v, jnp.float32) for k, v in numbers.items()},
        )

    def update_fn(updates, state, params=None):
        del params
        n = state.numbers
        if name == "constant":
            step_size = n["scale"]
        else:
            t = jnp.minimum(state.count.astype(jnp.float32), n["steps"])
            step_size = (jnp.cos(t * n["rate"]) + 1) * n["scale"]
        updates = jax.tree.map(lambda g: jnp.asarray(step_size, g.dtype) * g, updates)
        return updates, state._replace(count=optax.safe_increment(state.count))

    return optax.GradientTransformation(init_fn, update_fn)


def _kernel_mask(params):
    return jax.tree.map(lambda p: p.ndim >= 2, params)


def make_optimizer(
    training: ml_collections.ConfigDict,
    *,
    learning_rate: float,
    lr_schedule: str,
    total_steps: int,
) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """Optax optimizer for one phase, and its learning-rate schedule.

    Args:
      training: the ``config.training`` block (optimizer, momentum, weight_decay,
        warmup_steps).
      learning_rate: peak learning rate of this phase.
      lr_schedule: schedule name of this phase.
      total_steps: number of steps in this phase.

    Returns:
      ``(tx, schedule)``: the transformation and the schedule it uses (step counted from the
      start of the phase), the latter for logging.

    Raises:
      ValueError: for an unknown optimizer name.
    """
    schedule = make_schedule(lr_schedule, learning_rate, total_steps, training.warmup_steps)
    # The learning rate is the chain's last transformation, as in optax's aliases (which are
    # built here without one): its numbers are state, not constants (see scale_by_phase_lr).
    lr = scale_by_phase_lr(lr_schedule, learning_rate, total_steps, training.warmup_steps)
    wd = training.weight_decay
    decay = [optax.add_decayed_weights(wd, mask=_kernel_mask)] if wd else []
    if training.optimizer == "sgd":
        sgd = optax.sgd(None, momentum=training.momentum or None, nesterov=training.momentum > 0)
        return optax.chain(*decay, sgd, lr), schedule
    if training.optimizer == "adam":
        return optax.chain(*decay, optax.adam(None, b1=training.momentum), lr), schedule
    if training.optimizer == "adamw":
        adamw = optax.adamw(None, b1=training.momentum, weight_decay=wd, mask=_kernel_mask)
        return optax.chain(adamw, lr), schedule
    raise ValueError(
        f"training.optimizer must be one of {list(config_check.OPTIMIZERS)}, "
        f"got {training.optimizer!r}"
    )
