"""Wide residual networks WRN-depth-k for CIFAR (Zagoruyko & Komodakis 2016), e.g. WRN-28-10.

Stem 3x3 conv (16 channels), three stages of ``n = (depth - 4) / 6`` pre-activation
:class:`WideBasicBlock` with ``16k``, ``32k``, ``64k`` channels (strides 1, 2, 2), then
BatchNorm -> relu -> global average pool -> ``Dense(num_classes)``. Convs are bias-free with
padding 1 (as in the reference PyTorch code). A block is
``BN -> relu -> conv3x3(stride) -> BN -> relu -> dropout -> conv3x3``, added to the input; where the
shape changes the shortcut is a 1x1 conv (``shortcut_conv``) applied to the pre-activated input,
as in the reference code. Dropout between the convs is optional (``dropout_rate``, default 0; it
needs a ``'dropout'`` rng in train mode).

Names: stem ``Conv_0``; blocks ``WideBasicBlock_0..``, each with ``BatchNorm_0``, ``Conv_0``,
``BatchNorm_1``, ``Conv_1`` and possibly ``shortcut_conv``; final ``BatchNorm_0`` and ``Dense_0``.

``width`` scales every channel count including the stem (so WRN-28-10 at ``width=0.1`` has the
channel counts of WRN-28-1). ``linear=True``: identity activations, no BatchNorm, no dropout.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxprune.models import layers

STEM_WIDTH = 16
STAGE_WIDTHS = (16, 32, 64)


def blocks_per_stage(depth: int) -> int:
    """Returns ``n`` for a WRN of ``depth = 6n + 4``.

    Raises:
      ValueError: if ``depth`` is not of the form ``6n + 4`` with ``n >= 1``.
    """
    if depth < 10 or (depth - 4) % 6 != 0:
        raise ValueError(f"WRN depth must be 6n + 4 with n >= 1 (10, 16, 28, ...), got {depth}")
    return (depth - 4) // 6


class WideBasicBlock(nn.Module):
    """Pre-activation residual block with two 3x3 convs and optional dropout between them.

    Attributes:
      features: output channels.
      strides: stride of the first conv and of the shortcut.
      inner_features: output channels of the first conv (default ``features``; structured
        pruning narrows it).
      dropout_rate: dropout rate between the convs.
      linear: effective-sparsity mode.
      dtype: computation dtype.
    """

    features: int
    strides: int = 1
    inner_features: int | None = None
    dropout_rate: float = 0.0
    linear: bool = False
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """Returns the block output, NHWC with ``features`` channels."""
        conv = dict(kernel_size=(3, 3), padding=1, use_bias=False, dtype=self.dtype)
        out = layers.norm(x, train=train, linear=self.linear, dtype=self.dtype)
        out = layers.activation(out, self.linear)
        inner = self.features if self.inner_features is None else self.inner_features
        y = nn.Conv(inner, strides=self.strides, **conv)(out)
        y = layers.norm(y, train=train, linear=self.linear, dtype=self.dtype)
        y = layers.activation(y, self.linear)
        y = layers.dropout(y, self.dropout_rate, train=train, linear=self.linear)
        y = nn.Conv(self.features, **conv)(y)
        shortcut = x
        if self.strides != 1 or x.shape[-1] != self.features:
            shortcut = nn.Conv(
                self.features,
                (1, 1),
                strides=self.strides,
                use_bias=False,
                dtype=self.dtype,
                name="shortcut_conv",
            )(out)
        return y + shortcut


class WideResNet(nn.Module):
    """WRN-depth-k.

    Attributes:
      depth: ``6n + 4`` (10, 16, 22, 28, 40, ...).
      widen_factor: ``k``; stage widths are ``16k, 32k, 64k``.
      num_classes: output units.
      dropout_rate: dropout between the convs of each block (0 disables it).
      width: multiplier for all channel counts, stem included.
      widths: inner width of each block (its first conv) after structured pruning; block
        outputs stay (residual sums).
      linear: effective-sparsity mode (identity activations, no BatchNorm, no dropout).
      dtype: computation dtype.
    """

    depth: int = 28
    widen_factor: int = 10
    num_classes: int = 10
    dropout_rate: float = 0.0
    width: float = 1.0
    widths: tuple[int, ...] | None = None
    linear: bool = False
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """Returns logits ``(N, num_classes)`` for NHWC inputs."""
        n = blocks_per_stage(self.depth)
        if self.widen_factor < 1:
            raise ValueError(f"WRN widen_factor must be >= 1, got {self.widen_factor}")
        if not 0.0 <= self.dropout_rate < 1.0:
            raise ValueError(f"WRN dropout_rate must be in [0, 1), got {self.dropout_rate}")
        x = nn.Conv(
            layers.scaled(STEM_WIDTH, self.width),
            (3, 3),
            padding=1,
            use_bias=False,
            dtype=self.dtype,
        )(x)
        if self.widths is not None and len(self.widths) != 3 * n:
            raise ValueError(
                f"widths needs {3 * n} entries for WRN-{self.depth}, got {len(self.widths)}"
            )
        for stage, base in enumerate(STAGE_WIDTHS):
            features = layers.scaled(base * self.widen_factor, self.width)
            for i in range(n):
                x = WideBasicBlock(
                    features=features,
                    inner_features=None if self.widths is None else self.widths[stage * n + i],
                    strides=2 if stage > 0 and i == 0 else 1,
                    dropout_rate=self.dropout_rate,
                    linear=self.linear,
                    dtype=self.dtype,
                )(x, train=train)
        x = layers.norm(x, train=train, linear=self.linear, dtype=self.dtype)
        x = layers.activation(x, self.linear)
        x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(self.num_classes, dtype=self.dtype)(x)
