"""ResNet for CIFAR (He et al. 2016, Sec. 4.2): depth ``6n + 2``, e.g. ResNet-20/32/56.

Stem 3x3 conv (16 channels) -> BatchNorm -> relu, then three stages of ``n`` :class:`BasicBlock`
with 16, 32 and 64 channels (the first block of stages 2 and 3 has stride 2), global average pool,
``Dense(num_classes)``. All convs are bias-free (each is followed by BatchNorm) and use padding 1,
as in the PyTorch reference implementations.

Shortcuts: identity when the shape is unchanged; when it changes (stride 2 and/or more channels)
a 1x1 conv + BatchNorm **projection** (He et al. option B) instead of the paper's parameter-free
zero-padding (option A). We chose option B because the projection must be a real layer with
weights: effective-sparsity code has to see (and may prune) the connections that the shortcut
carries, and structured pruning needs to know which convs feed each residual sum. Option B adds
2,560 weights to ResNet-20 (272,474 parameters instead of the paper's 0.27M with option A).

Names: stem ``Conv_0`` / ``BatchNorm_0``; blocks ``BasicBlock_0..BasicBlock_{3n-1}``, each with
``Conv_0``, ``BatchNorm_0``, ``Conv_1``, ``BatchNorm_1`` and, where the shape changes,
``shortcut_conv`` / ``shortcut_norm``; head ``Dense_0``.

``width`` scales every channel count (``width=2``: 32/64/128); ``widths`` gives the inner width
(output of the first conv) of each block explicitly, one entry per block, which is what filter
pruning of ResNets changes (the block outputs are tied together by the residual sums).
``linear=True``: identity activations and no BatchNorm (see ``layers``); residual adds are kept.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxprune.models import layers

STAGE_WIDTHS = (16, 32, 64)
STEM_WIDTH = 16


def blocks_per_stage(depth: int) -> int:
    """Returns ``n`` for a CIFAR ResNet of ``depth = 6n + 2``.

    Raises:
      ValueError: if ``depth`` is not of the form ``6n + 2`` with ``n >= 1``.
    """
    if depth < 8 or (depth - 2) % 6 != 0:
        raise ValueError(f"ResNet depth must be 6n + 2 with n >= 1 (20, 32, 56, ...), got {depth}")
    return (depth - 2) // 6


def projection_shortcut(x, features, strides, *, train, linear, dtype):
    """Projection shortcut: 1x1 conv + BatchNorm (``shortcut_conv`` / ``shortcut_norm``).

    Called inside a ``compact`` block's ``__call__``.
    """
    y = nn.Conv(
        features, (1, 1), strides=strides, use_bias=False, dtype=dtype, name="shortcut_conv"
    )(x)
    return layers.norm(y, train=train, linear=linear, dtype=dtype, name="shortcut_norm")


class BasicBlock(nn.Module):
    """Two 3x3 convs with BatchNorm and a residual connection (post-activation).

    Attributes:
      features: output channels.
      inner_features: channels of the first conv (defaults to ``features``).
      strides: stride of the first conv and of the projection.
      linear: effective-sparsity mode.
      dtype: computation dtype.
    """

    features: int
    inner_features: int | None = None
    strides: int = 1
    linear: bool = False
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """Returns the block output, NHWC with ``features`` channels."""
        inner = self.features if self.inner_features is None else self.inner_features
        conv = dict(kernel_size=(3, 3), padding=1, use_bias=False, dtype=self.dtype)
        y = nn.Conv(inner, strides=self.strides, **conv)(x)
        y = layers.norm(y, train=train, linear=self.linear, dtype=self.dtype)
        y = layers.activation(y, self.linear)
        y = nn.Conv(self.features, **conv)(y)
        y = layers.norm(y, train=train, linear=self.linear, dtype=self.dtype)
        shortcut = x
        if self.strides != 1 or x.shape[-1] != self.features:
            shortcut = projection_shortcut(
                x, self.features, self.strides, train=train, linear=self.linear, dtype=self.dtype
            )
        return layers.activation(y + shortcut, self.linear)


class ResNet(nn.Module):
    """CIFAR ResNet of depth ``6n + 2`` with projection shortcuts.

    Attributes:
      depth: 20, 32, 44, 56, 110, ... (``6n + 2``).
      num_classes: output units.
      width: multiplier for all channel counts (16/32/64 at 1).
      widths: explicit inner width of each of the ``3n`` blocks; overrides ``width`` for them.
      linear: effective-sparsity mode (identity activations, no BatchNorm).
      dtype: computation dtype.
    """

    depth: int = 20
    num_classes: int = 10
    width: float = 1.0
    widths: tuple[int, ...] | None = None
    linear: bool = False
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """Returns logits ``(N, num_classes)`` for NHWC inputs."""
        n = blocks_per_stage(self.depth)
        stage_widths = [layers.scaled(c, self.width) for c in STAGE_WIDTHS]
        block_widths = [c for c in STAGE_WIDTHS for _ in range(n)]
        inner = layers.resolve_widths(block_widths, self.width, self.widths)
        x = nn.Conv(
            layers.scaled(STEM_WIDTH, self.width),
            (3, 3),
            padding=1,
            use_bias=False,
            dtype=self.dtype,
        )(x)
        x = layers.norm(x, train=train, linear=self.linear, dtype=self.dtype)
        x = layers.activation(x, self.linear)
        for stage, features in enumerate(stage_widths):
            for i in range(n):
                x = BasicBlock(
                    features=features,
                    inner_features=inner[stage * n + i],
                    strides=2 if stage > 0 and i == 0 else 1,
                    linear=self.linear,
                    dtype=self.dtype,
                )(x, train=train)
        x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(self.num_classes, dtype=self.dtype)(x)
