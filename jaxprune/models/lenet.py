"""LeNet-300-100 (MLP) and LeNet-5 (Caffe variant), the classic MNIST pruning benchmarks.

Both take NHWC float inputs (MNIST: ``(N, 28, 28, 1)``) and return logits.

* :class:`LeNet300`: flatten -> Dense 300 -> relu -> Dense 100 -> relu -> Dense classes
  (LeCun et al. 1998; Han et al. 2015). 266,200 kernel weights on MNIST.
* :class:`LeNet5`: the Caffe ``lenet_train_test.prototxt`` variant used by Han et al. 2015 and the
  pruning literature: Conv 20 5x5 VALID -> maxpool 2 -> Conv 50 5x5 VALID -> maxpool 2 -> flatten
  -> Dense 500 -> relu -> Dense classes. As in Caffe there is no nonlinearity after the convs.
  430,500 kernel weights (431,080 parameters) on MNIST.

``width`` scales the hidden widths (the output layer keeps ``num_classes`` units); ``widths``
gives them explicitly (LeNet300: 2 entries, LeNet5: 3 entries: conv1, conv2, dense1).
``linear=True`` replaces relu by identity and max pooling by average pooling (see ``layers``).
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxprune.models import layers

LENET300_WIDTHS = (300, 100)
LENET5_WIDTHS = (20, 50, 500)


class LeNet300(nn.Module):
    """LeNet-300-100 MLP.

    Attributes:
      num_classes: output units.
      width: multiplier for the hidden widths (300, 100).
      widths: explicit hidden widths ``(h1, h2)``; overrides ``width``.
      linear: identity activations (effective-sparsity mode).
      dtype: computation dtype.
    """

    num_classes: int = 10
    width: float = 1.0
    widths: tuple[int, ...] | None = None
    linear: bool = False
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """Returns logits ``(N, num_classes)`` for inputs ``(N, ...)``."""
        del train  # No train-dependent layers.
        hidden = layers.resolve_widths(LENET300_WIDTHS, self.width, self.widths)
        x = x.reshape((x.shape[0], -1))
        for units in hidden:
            x = nn.Dense(units, dtype=self.dtype)(x)
            x = layers.activation(x, self.linear)
        return nn.Dense(self.num_classes, dtype=self.dtype)(x)


class LeNet5(nn.Module):
    """LeNet-5, Caffe variant (no nonlinearity after the convolutions).

    Attributes:
      num_classes: output units.
      width: multiplier for the hidden widths (20, 50, 500).
      widths: explicit hidden widths ``(conv1, conv2, dense1)``; overrides ``width``.
      linear: identity activation and average pooling (effective-sparsity mode).
      dtype: computation dtype.
    """

    num_classes: int = 10
    width: float = 1.0
    widths: tuple[int, ...] | None = None
    linear: bool = False
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """Returns logits ``(N, num_classes)`` for NHWC inputs."""
        del train  # No train-dependent layers.
        conv1, conv2, dense1 = layers.resolve_widths(LENET5_WIDTHS, self.width, self.widths)
        for channels in (conv1, conv2):
            x = nn.Conv(channels, (5, 5), padding="VALID", dtype=self.dtype)(x)
            x = layers.pool(x, 2, linear=self.linear)
        x = x.reshape((x.shape[0], -1))
        x = nn.Dense(dense1, dtype=self.dtype)(x)
        x = layers.activation(x, self.linear)
        return nn.Dense(self.num_classes, dtype=self.dtype)(x)
