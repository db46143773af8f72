"""MobileNet-V1 (Howard et al. 2017, Table 1) with the width multiplier ``alpha`` (``width``).

Stem: 3x3 conv, stride 2, 32 channels -> BatchNorm -> relu. Then 13 depthwise-separable blocks
(:class:`DepthwiseSeparable`): a 3x3 depthwise conv (``feature_group_count`` = channels, stride 1
or 2) -> BatchNorm -> relu, then a 1x1 pointwise conv -> BatchNorm -> relu. Output channels and
strides of the blocks: 64, 128/2, 128, 256/2, 256, 512/2, 5 x 512, 1024/2, 1024. Global average
pool, optional dropout (``dropout_rate``, default 0; Keras uses 1e-3), ``Dense(num_classes)``.
Convs are bias-free (each is followed by BatchNorm) with padding 1 (PyTorch style; Keras pads
stride-2 convs asymmetrically, which changes no parameter count). The paper uses ReLU; Keras uses
ReLU6. We use ReLU.

Parameter count: 4,231,976 at width 1.0 with 1000 classes. That is the commonly cited number and
is the *trainable* count of ``tf.keras.applications.MobileNet(alpha=1.0)``: conv kernels, the
BatchNorm scale and offset (2 per channel) and the classifier (a 1x1 conv with bias, identical to
our ``Dense``). Keras' total of 4,253,864 adds the 21,888 BatchNorm running means/variances, which
here live in ``batch_stats`` and are not parameters. Derivation (``c`` = block input channels,
``d`` = output channels): stem ``3 * 3 * 3 * 32 + 2 * 32`` = 928; each block ``9c + 2c + c d + 2d``
(13 blocks: 3,206,048); classifier ``1024 * 1000 + 1000`` = 1,025,000; total 4,231,976. At width
0.5 the same formula gives 1,331,592 (Keras' 1.34M adds 10,944 running means and variances).

Width: every channel count (stem and blocks) is ``max(1, int(c * width))``, truncation as in
Keras' ``MobileNet(alpha=...)`` and the reference TF-slim code (``depth = int(d * alpha)`` with a
minimum depth of 8 in slim; we use a minimum of 1). For the published multipliers 0.25, 0.5, 0.75
and 1.0 every product is an integer, so truncation and the zoo's round-half-up (``layers.scaled``)
agree; they only differ for other multipliers. The number of classes is not scaled.

Names: stem ``Conv_0`` / ``BatchNorm_0``; blocks ``DepthwiseSeparable_0..12``, each with
``depthwise`` / ``depthwise_norm`` and ``pointwise`` / ``pointwise_norm``; head ``Dense_0``.
All conv kernels (depthwise kernels have shape ``(3, 3, 1, c)``) are named ``kernel`` and so are
prunable by default. ``linear=True``: identity activations, no BatchNorm, no dropout.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxprune.models import layers

STEM_WIDTH = 32
# (output channels, stride) of the 13 depthwise-separable blocks (paper Table 1).
BLOCKS: tuple[tuple[int, int], ...] = (
    (64, 1),
    (128, 2),
    (128, 1),
    (256, 2),
    (256, 1),
    (512, 2),
    *((512, 1),) * 5,
    (1024, 2),
    (1024, 1),
)


def alpha_channels(channels: int, width: float) -> int:
    """Returns ``max(1, int(channels * width))``: MobileNet's (Keras') truncating width rule.

    Raises:
      ValueError: if ``width`` is not positive.
    """
    if not width > 0:
        raise ValueError(f"width must be > 0, got {width!r}")
    return max(1, int(channels * width))


class DepthwiseSeparable(nn.Module):
    """3x3 depthwise conv -> BN -> relu -> 1x1 pointwise conv -> BN -> relu.

    Attributes:
      features: output channels of the pointwise conv.
      strides: stride of the depthwise conv.
      linear: effective-sparsity mode.
      dtype: computation dtype.
    """

    features: int
    strides: int = 1
    linear: bool = False
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """Returns the block output, NHWC with ``features`` channels."""
        channels = x.shape[-1]
        norm = dict(train=train, linear=self.linear, dtype=self.dtype)
        y = nn.Conv(
            channels,
            (3, 3),
            strides=self.strides,
            padding=1,
            feature_group_count=channels,
            use_bias=False,
            dtype=self.dtype,
            name="depthwise",
        )(x)
        y = layers.activation(layers.norm(y, name="depthwise_norm", **norm), self.linear)
        y = nn.Conv(self.features, (1, 1), use_bias=False, dtype=self.dtype, name="pointwise")(y)
        return layers.activation(layers.norm(y, name="pointwise_norm", **norm), self.linear)


class MobileNetV1(nn.Module):
    """MobileNet-V1 for 224x224 ImageNet inputs (other sizes work; 5 stride-2 stages + stem).

    Attributes:
      num_classes: output units (1000 for ImageNet).
      width: the width multiplier ``alpha`` (channels ``int(c * alpha)``).
      dropout_rate: dropout before the classifier (0 disables it; needs a ``'dropout'`` rng).
      widths: channel counts after structured pruning: the stem, then each block's pointwise
        output (14 entries); a depthwise conv keeps the channels it is given.
      linear: effective-sparsity mode (identity activations, no BatchNorm, no dropout).
      dtype: computation dtype.
    """

    num_classes: int = 1000
    width: float = 1.0
    dropout_rate: float = 0.0
    widths: tuple[int, ...] | None = None
    linear: bool = False
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """Returns logits ``(N, num_classes)`` for NHWC inputs."""
        if not 0.0 <= self.dropout_rate < 1.0:
            raise ValueError(f"MobileNet dropout_rate must be in [0, 1), got {self.dropout_rate}")
        if self.widths is not None and len(self.widths) != 1 + len(BLOCKS):
            raise ValueError(
                f"widths needs {1 + len(BLOCKS)} entries (stem + {len(BLOCKS)} blocks), got "
                f"{len(self.widths)}"
            )
        widths = self.widths or (
            alpha_channels(STEM_WIDTH, self.width),
            *(alpha_channels(features, self.width) for features, _ in BLOCKS),
        )
        x = nn.Conv(
            widths[0],
            (3, 3),
            strides=2,
            padding=1,
            use_bias=False,
            dtype=self.dtype,
        )(x)
        x = layers.norm(x, train=train, linear=self.linear, dtype=self.dtype)
        x = layers.activation(x, self.linear)
        for (_, strides), features in zip(BLOCKS, widths[1:], strict=True):
            x = DepthwiseSeparable(
                features=features,
                strides=strides,
                linear=self.linear,
                dtype=self.dtype,
            )(x, train=train)
        x = jnp.mean(x, axis=(1, 2))
        x = layers.dropout(x, self.dropout_rate, train=train, linear=self.linear)
        return nn.Dense(self.num_classes, dtype=self.dtype)(x)
