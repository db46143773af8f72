"""Parameter counts and width matching (large-sparse vs small-dense comparisons).

``count_params`` counts weights without allocating them (``jax.eval_shape``), so it is cheap even
for WRN-28-10. ``matching_width`` finds the width multiplier whose *dense* model has a number of
prunable weights closest to a target, e.g. the number of weights a sparse model keeps::

    kept = round(0.1 * count_params(get_model("lenet300", 10), (1, 28, 28, 1)))
    w = matching_width("lenet300", 10, (1, 28, 28, 1), kept)   # ~0.13: a 10x smaller dense net

Prunable weights follow the project default (``jaxprune.pruning.tree.is_kernel``): the ``params``
leaves named ``kernel`` with ``ndim >= 2`` (Dense and Conv kernels); biases, embeddings and norm
scales/offsets are not prunable.
"""

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxprune.models.registry import get_model
from jaxprune.pruning import tree


def count_params(model: nn.Module, input_shape: Sequence[int], prunable_only: bool = True) -> int:
    """Returns the number of (prunable) parameters of ``model`` for inputs of ``input_shape``.

    Args:
      model: an unbound Flax Linen module taking ``(x, train=False)``.
      input_shape: full input shape including the batch dimension, e.g. ``(1, 28, 28, 1)``.
      prunable_only: count only the prunable ``params`` leaves (kernels); if False count
        every leaf of the ``params`` collection (batch statistics are never counted).

    Returns:
      The parameter count.
    """
    shapes = jax.eval_shape(
        lambda: model.init(jax.random.key(0), jnp.zeros(tuple(input_shape), jnp.float32))
    )
    named = tree.named_leaves(shapes.get("params", {}))
    return sum(
        int(np.prod(leaf.shape))
        for name, leaf in named
        if not prunable_only or tree.is_kernel(name, leaf)
    )


def matching_width(
    name: str,
    num_classes: int,
    input_shape: Sequence[int],
    target_nonzeros: int,
    *,
    prunable_only: bool = True,
    max_width: float = 1024.0,
    tolerance: float = 1e-5,
    **model_kwargs,
) -> float:
    """Returns the width whose dense model's parameter count is closest to ``target_nonzeros``.

    The count is a nondecreasing step function of the width (every layer width is
    ``max(1, round(c * width))``), so bisection brackets the step where it crosses the target; of
    the two widths around the crossing the one with the smaller absolute error is returned (the
    smaller width on a tie). Widths below the point where every layer has one unit all give the
    same count; the smallest width searched is ``1/4096``.

    Args:
      name: registry model name (see ``get_model``).
      num_classes: output units.
      input_shape: full input shape including the batch dimension, e.g. ``(1, 32, 32, 3)``.
      target_nonzeros: the parameter count to match (e.g. the kept weights of a sparse model).
      prunable_only: match the count of prunable weights (default) or of all ``params``.
      max_width: the largest width tried before giving up.
      tolerance: bisection stops when the bracket is narrower than this.
      **model_kwargs: other model fields (not ``width``), e.g. ``dtype``.

    Returns:
      The width multiplier, a positive float.

    Raises:
      ValueError: if ``target_nonzeros < 1``, ``width`` is in ``model_kwargs``, or the target
        needs a width above ``max_width``.
    """
    if target_nonzeros < 1:
        raise ValueError(f"target_nonzeros must be >= 1, got {target_nonzeros}")
    if "width" in model_kwargs:
        raise ValueError("matching_width searches the width; do not pass width=")

    def count(width: float) -> int:
        model = get_model(name, num_classes, width=width, **model_kwargs)
        return count_params(model, input_shape, prunable_only=prunable_only)

    low, high = 1.0 / 4096, 1.0
    low_count, high_count = count(low), count(high)
    if low_count >= target_nonzeros:
        return low
    while high_count < target_nonzeros:
        low, low_count = high, high_count
        high *= 2.0
        if high > max_width:
            raise ValueError(
                f"target_nonzeros={target_nonzeros} needs width > max_width={max_width} "
                f"for {name!r} (count at width {low}: {low_count})"
            )
        high_count = count(high)
    # Invariant: low_count < target_nonzeros <= high_count.
    while high - low > tolerance * high and high_count != target_nonzeros:
        middle = 0.5 * (low + high)
        middle_count = count(middle)
        if middle_count < target_nonzeros:
            low, low_count = middle, middle_count
        else:
            high, high_count = middle, middle_count
    if target_nonzeros - low_count <= high_count - target_nonzeros:
        return low
    return high
