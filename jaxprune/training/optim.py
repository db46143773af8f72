"""Optax optimizer and learning-rate schedule built from a config phase.

Weight decay is applied to kernels only (leaves with ``ndim >= 2``; biases and norm scales are
not decayed). Because the train step masks gradients before the optimizer and zeroes pruned
params after it, decay can never bring a pruned weight back: its value, gradient and decay
term are all exactly zero.
"""

import jax
import ml_collections
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
    wd = training.weight_decay
    if training.optimizer == "sgd":
        sgd = optax.sgd(
            schedule, momentum=training.momentum or None, nesterov=training.momentum > 0
        )
        if wd == 0:
            return sgd, schedule
        return optax.chain(optax.add_decayed_weights(wd, mask=_kernel_mask), sgd), schedule
    if training.optimizer == "adam":
        adam = optax.adam(schedule, b1=training.momentum)
        if wd == 0:
            return adam, schedule
        return optax.chain(optax.add_decayed_weights(wd, mask=_kernel_mask), adam), schedule
    if training.optimizer == "adamw":
        tx = optax.adamw(schedule, b1=training.momentum, weight_decay=wd, mask=_kernel_mask)
        return tx, schedule
    raise ValueError(
        f"training.optimizer must be one of {list(config_check.OPTIMIZERS)}, "
        f"got {training.optimizer!r}"
    )
