"""Small building blocks shared by the model zoo: width scaling and the "linear" switch.

Every zoo model has a ``linear: bool`` field used by effective-sparsity code (DESIGN.md): in
linear mode the network becomes a linear map of its input (up to biases), so that path counting
through the masked network can be done with a forward/backward pass. The switch is implemented
once, here, by four helpers that the models call instead of the Flax primitives:

* :func:`activation` -- the nonlinearity, or identity in linear mode.
* :func:`pool` -- max pooling, or average pooling over the same windows in linear mode.
* :func:`norm` -- BatchNorm, or identity in linear mode.
* :func:`dropout` -- dropout, or identity in linear mode.

The helpers must be called from inside a ``@nn.compact`` method: :func:`norm` and :func:`dropout`
create their Flax submodule there, so the variable names are the usual Linen ones
(``BatchNorm_0``, ``Dropout_0``, ...). In linear mode the norm layers are not created at all, so a
linear model has no ``batch_stats`` collection and no norm parameters; its Conv/Dense parameters
have exactly the same names as in the normal model (Linen numbers each layer type separately), so
the normal model's ``params`` can be passed to the linear model as they are (Linen ignores the
unused norm entries).

BatchNorm follows the usual CIFAR/ImageNet recipe: momentum 0.9 (running average decay), epsilon
1e-5, batch statistics in train mode (``use_running_average=False``) and running averages in eval.
"""

from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax

BATCH_NORM_MOMENTUM = 0.9
BATCH_NORM_EPSILON = 1e-5


def scaled(channels: int, width: float) -> int:
    """Returns ``channels * width`` rounded half up, and at least 1.

    Args:
      channels: the channel / unit count at width 1.
      width: the width multiplier; must be positive.

    Returns:
      The scaled count, an ``int >= 1``.

    Raises:
      ValueError: if ``width`` is not positive.
    """
    if not width > 0:
        raise ValueError(f"width must be > 0, got {width!r}")
    return max(1, int(channels * width + 0.5))


def resolve_widths(
    defaults: Sequence[int], width: float, widths: Sequence[int] | None, field: str = "widths"
) -> tuple[int, ...]:
    """Returns per-layer channel counts: explicit ``widths`` if given, else scaled ``defaults``.

    Args:
      defaults: the per-layer counts of the model at width 1.
      width: width multiplier applied to ``defaults`` when ``widths`` is None.
      widths: optional explicit per-layer counts (e.g. after structured pruning); must have the
        same length as ``defaults`` and positive entries. ``width`` is then ignored.
      field: the field name used in error messages.

    Returns:
      A tuple of positive ints, one per layer.

    Raises:
      ValueError: if ``widths`` has the wrong length or a non-positive entry, or ``width <= 0``.
    """
    if widths is None:
        return tuple(scaled(c, width) for c in defaults)
    widths = tuple(int(w) for w in widths)
    if len(widths) != len(defaults):
        raise ValueError(
            f"{field} must have {len(defaults)} entries (one per layer), got {len(widths)}: "
            f"{widths}"
        )
    if any(w < 1 for w in widths):
        raise ValueError(f"{field} entries must be >= 1, got {widths}")
    return widths


def activation(
    x: jax.Array, linear: bool, fn: Callable[[jax.Array], jax.Array] = nn.relu
) -> jax.Array:
    """Applies ``fn`` (ReLU by default), or nothing in linear mode."""
    return x if linear else fn(x)


def pool(
    x: jax.Array,
    window: int,
    strides: int | None = None,
    *,
    linear: bool,
    padding: str = "VALID",
) -> jax.Array:
    """Max pooling over ``window x window`` patches; average pooling over them in linear mode.

    Args:
      x: NHWC input.
      window: pooling window side.
      strides: stride (defaults to ``window``).
      linear: if True, average instead of max.
      padding: Flax padding spec.

    Returns:
      The pooled NHWC array.
    """
    strides = window if strides is None else strides
    pool_fn = nn.avg_pool if linear else nn.max_pool
    return pool_fn(x, (window, window), strides=(strides, strides), padding=padding)


def norm(
    x: jax.Array,
    *,
    train: bool,
    linear: bool,
    dtype: Any = None,
    name: str | None = None,
) -> jax.Array:
    """BatchNorm (momentum 0.9, eps 1e-5) or identity in linear mode; call inside ``compact``.

    Args:
      x: input whose last axis holds the features.
      train: if True, normalise with batch statistics and update ``batch_stats`` (the caller makes
        it mutable); else use the running averages.
      linear: if True, return ``x`` unchanged and create no variables.
      dtype: computation dtype of the norm.
      name: optional explicit module name (Linen default ``BatchNorm_<i>`` otherwise).

    Returns:
      The normalised (or unchanged) array.
    """
    if linear:
        return x
    return nn.BatchNorm(
        use_running_average=not train,
        momentum=BATCH_NORM_MOMENTUM,
        epsilon=BATCH_NORM_EPSILON,
        dtype=dtype,
        name=name,
    )(x)


def dropout(x: jax.Array, rate: float, *, train: bool, linear: bool) -> jax.Array:
    """Dropout at ``rate`` in train mode (needs a ``'dropout'`` rng); identity if linear or 0."""
    if linear or rate == 0.0:
        return x
    return nn.Dropout(rate=rate, deterministic=not train)(x)
