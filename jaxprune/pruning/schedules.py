"""Sparsity schedules for gradual pruning (Zhu & Gupta, "To prune, or not to prune").

A schedule says, for a global step ``t``, which sparsity is the target (``sparsity_at``) and
whether the masks are recomputed at that step (``should_update``). The TF-MOT convention
(``docs/DESIGN.md``)::

    s(t) = s_f + (s_i - s_f) * (1 - p) ** power,   p = clip((t - begin) / (end - begin), 0, 1)
    update(t) = begin <= t <= end and (t - begin) % frequency == 0

Both methods work on Python ints (returning Python values) and on (traced) ``jax.Array`` steps
(returning arrays), so they can be called inside a jitted train step.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

NO_END = 2**31 - 1  # ``end_step`` of a schedule that never stops updating (int32 max)


class Schedule(NamedTuple):
    """A polynomial sparsity schedule; ``one_shot`` and ``constant`` are special cases.

    Attributes:
      initial_sparsity: sparsity at (and before) ``begin_step``.
      final_sparsity: sparsity at (and after) ``end_step``.
      begin_step: first step at which the masks are updated.
      end_step: last step at which the masks may be updated.
      frequency: masks are updated every ``frequency`` steps from ``begin_step``.
      power: exponent of the polynomial decay (3 in the paper).
    """

    initial_sparsity: float
    final_sparsity: float
    begin_step: int
    end_step: int
    frequency: int
    power: float

    def sparsity_at(self, step: int | jax.Array) -> float | jax.Array:
        """Target sparsity at global ``step`` (float32 array for an array step)."""
        s_i, s_f = self.initial_sparsity, self.final_sparsity
        span = self.end_step - self.begin_step
        if isinstance(step, int | np.integer):
            if span == 0:
                progress = 1.0 if step >= self.end_step else 0.0
            else:
                progress = min(max((int(step) - self.begin_step) / span, 0.0), 1.0)
            return s_f + (s_i - s_f) * (1.0 - progress) ** self.power
        t = jnp.asarray(step).astype(jnp.float32)
        if span == 0:
            progress = (t >= self.end_step).astype(jnp.float32)
        else:
            progress = jnp.clip((t - self.begin_step) / jnp.float32(span), 0.0, 1.0)
        return jnp.float32(s_f) + jnp.float32(s_i - s_f) * (1.0 - progress) ** self.power

    def should_update(self, step: int | jax.Array) -> bool | jax.Array:
        """Whether the masks are recomputed at global ``step`` (bool array for an array step)."""
        if isinstance(step, int | np.integer):
            step = int(step)
            return (
                self.begin_step <= step <= self.end_step
                and (step - self.begin_step) % self.frequency == 0
            )
        t = jnp.asarray(step)
        return (
            (t >= self.begin_step)
            & (t <= self.end_step)
            & ((t - self.begin_step) % self.frequency == 0)
        )

    def update_steps(self, until: int) -> list[int]:
        """The update steps in ``[0, until)`` in increasing order."""
        last = min(self.end_step, until - 1)
        return list(range(self.begin_step, last + 1, self.frequency))


def _check_fraction(field: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float | np.floating):
        raise ValueError(f"{field} must be a number in [0, 1], got {value!r}")
    if math.isnan(value) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{field} must be in [0, 1], got {value!r}")


def _check_int(field: str, value: Any, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ValueError(f"{field} must be an integer, got {value!r}")
    if value < low:
        raise ValueError(f"{field} must be >= {low}, got {value!r}")


def polynomial(
    initial_sparsity: float,
    final_sparsity: float,
    begin_step: int,
    end_step: int,
    frequency: int,
    power: float = 3,
) -> Schedule:
    """Zhu & Gupta's polynomial schedule from ``initial_sparsity`` to ``final_sparsity``.

    Args:
      initial_sparsity: sparsity at ``begin_step``, in ``[0, 1]``.
      final_sparsity: sparsity at ``end_step`` and after, in ``[0, 1]``.
      begin_step: first update step (>= 0).
      end_step: last step of the pruning window (>= ``begin_step``).
      frequency: steps between mask updates (>= 1).
      power: exponent of the decay (> 0); 3 in the paper, 1 is linear.

    Returns:
      A ``Schedule``.

    Raises:
      ValueError: naming the bad argument and its value.

    Example:
      >>> s = polynomial(0.0, 0.9, begin_step=0, end_step=1000, frequency=100)
      >>> round(s.sparsity_at(100), 4), s.should_update(100), s.should_update(150)
      (0.2439, True, False)
    """
    _check_fraction("initial_sparsity", initial_sparsity)
    _check_fraction("final_sparsity", final_sparsity)
    _check_int("begin_step", begin_step, 0)
    _check_int("end_step", end_step, 0)
    _check_int("frequency", frequency, 1)
    if end_step < begin_step:
        raise ValueError(f"end_step must be >= begin_step ({begin_step}), got {end_step!r}")
    if end_step > NO_END:
        raise ValueError(f"end_step must be <= {NO_END}, got {end_step!r}")
    if isinstance(power, bool) or not isinstance(power, int | float) or not power > 0:
        raise ValueError(f"power must be a number > 0, got {power!r}")
    return Schedule(
        float(initial_sparsity),
        float(final_sparsity),
        int(begin_step),
        int(end_step),
        int(frequency),
        float(power),
    )


def one_shot(step: int, sparsity: float) -> Schedule:
    """Prunes to ``sparsity`` once, at ``step``; the target is ``sparsity`` at every step."""
    return polynomial(sparsity, sparsity, step, step, 1, power=1)


def constant(
    sparsity: float, begin_step: int = 0, end_step: int | None = None, frequency: int = 100
) -> Schedule:
    """Constant target ``sparsity``, masks recomputed every ``frequency`` steps in the window.

    Args:
      sparsity: target sparsity at every step, in ``[0, 1]``.
      begin_step: first update step.
      end_step: last update step; None = never stop updating.
      frequency: steps between mask updates.
    """
    return polynomial(
        sparsity, sparsity, begin_step, NO_END if end_step is None else end_step, frequency, 1
    )
