"""ImageNet ResNets as in torchvision (He et al. 2016): ResNet-18/34/50/101/152.

Stem: 7x7 conv, stride 2, padding 3, 64 channels -> BatchNorm -> relu -> 3x3 max pool, stride 2,
padding 1. Then four stages with 64, 128, 256, 512 base channels (the first block of stages 2-4
has stride 2), global average pool, ``Dense(num_classes)``. All convs are bias-free (each is
followed by BatchNorm); BatchNorm as in ``layers`` (momentum 0.9, eps 1e-5).

* ResNet-18/34: the CIFAR ResNet's ``BasicBlock`` (two 3x3 convs), 2-2-2-2 / 3-4-6-3 blocks
  per stage.
* ResNet-50/101/152: :class:`Bottleneck` (1x1 -> 3x3 -> 1x1 with expansion 4), 3-4-6-3 /
  3-4-23-3 / 3-8-36-3 blocks. The stride sits on the 3x3 conv ("ResNet v1.5", torchvision),
  not on the first 1x1 conv as in the original paper; the parameter count is the same.

Shortcuts: identity, or (where the stride or channel count changes) a 1x1 conv + BatchNorm
projection, exactly torchvision's ``downsample``. With 1000 classes the ``params`` counts (conv
kernels, BatchNorm scale/bias, Dense kernel/bias; running statistics live in ``batch_stats`` and
are not counted) equal torchvision's: 11,689,512 (18), 21,797,672 (34), 25,557,032 (50),
44,549,160 (101), 60,192,808 (152).

Names: stem ``Conv_0`` / ``BatchNorm_0``; blocks ``BasicBlock_<i>`` or ``Bottleneck_<i>`` numbered
over the whole network, each with ``Conv_0``, ``BatchNorm_0``, ``Conv_1``, ``BatchNorm_1``
(``Conv_2`` / ``BatchNorm_2`` for bottlenecks) and, where the shape changes, ``shortcut_conv`` /
``shortcut_norm`` (as in the CIFAR ``resnet_cifar``); head ``Dense_0``.

Initialisation uses the Flax defaults (as the rest of the zoo), not torchvision's Kaiming fan-out.
``width`` scales every channel count (rounded half up, ``layers.scaled``); the number of classes
is not scaled. ``linear=True``: identity activations, no BatchNorm, average instead of max pooling
in the stem (see ``layers``); the residual adds are kept.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxprune.models import layers
from jaxprune.models.resnet_cifar import BasicBlock, projection_shortcut

STEM_WIDTH = 64
STAGE_WIDTHS = (64, 128, 256, 512)
BOTTLENECK_EXPANSION = 4

# depth -> (block type, blocks per stage), as in torchvision.models.resnet.
CONFIGS: dict[int, tuple[str, tuple[int, int, int, int]]] = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
}


class Bottleneck(nn.Module):
    """1x1 -> 3x3 (stride) -> 1x1 convs with BatchNorm and a residual connection (ResNet-50+).

    Attributes:
      features: inner width (the 1x1 and 3x3 convs); the output has ``4 * features`` channels.
      strides: stride of the 3x3 conv and of the projection (torchvision / ResNet v1.5).
      inner: output channels of the 1x1 and the 3x3 conv when structured pruning narrowed them
        (default: ``features`` both).
      linear: effective-sparsity mode.
      dtype: computation dtype.
    """

    features: int
    strides: int = 1
    inner: tuple[int, int] | None = None
    linear: bool = False
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """Returns the block output, NHWC with ``4 * features`` channels."""
        out_features = self.features * BOTTLENECK_EXPANSION
        first, second = (self.features, self.features) if self.inner is None else self.inner
        norm = dict(train=train, linear=self.linear, dtype=self.dtype)
        y = nn.Conv(first, (1, 1), use_bias=False, dtype=self.dtype)(x)
        y = layers.activation(layers.norm(y, **norm), self.linear)
        y = nn.Conv(
            second,
            (3, 3),
            strides=self.strides,
            padding=1,
            use_bias=False,
            dtype=self.dtype,
        )(y)
        y = layers.activation(layers.norm(y, **norm), self.linear)
        y = nn.Conv(out_features, (1, 1), use_bias=False, dtype=self.dtype)(y)
        y = layers.norm(y, **norm)
        shortcut = x
        if self.strides != 1 or x.shape[-1] != out_features:
            shortcut = projection_shortcut(x, out_features, self.strides, **norm)
        return layers.activation(y + shortcut, self.linear)


def check_depth(depth: int) -> None:
    """Raises ``ValueError`` unless ``depth`` is one of the ImageNet ResNet depths (``CONFIGS``)."""
    if depth not in CONFIGS:
        raise ValueError(f"ImageNet ResNet depth must be one of {sorted(CONFIGS)}, got {depth}")


class ResNetImageNet(nn.Module):
    """torchvision-style ImageNet ResNet (18, 34, 50, 101 or 152 layers).

    Attributes:
      depth: 18, 34, 50, 101 or 152.
      num_classes: output units (1000 for ImageNet).
      width: multiplier for all channel counts (64/128/256/512 base widths at 1).
      widths: inner widths after structured pruning, in block order: one per basic block (its
        first conv), two per bottleneck (its 1x1 and 3x3 convs); block outputs stay (residuals).
      linear: effective-sparsity mode (identity activations, average pool, no BatchNorm).
      dtype: computation dtype.
    """

    depth: int = 50
    num_classes: int = 1000
    width: float = 1.0
    widths: tuple[int, ...] | None = None
    linear: bool = False
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """Returns logits ``(N, num_classes)`` for NHWC inputs (224x224 for ImageNet)."""
        check_depth(self.depth)
        kind, blocks = CONFIGS[self.depth]
        block_cls = BasicBlock if kind == "basic" else Bottleneck
        x = nn.Conv(
            layers.scaled(STEM_WIDTH, self.width),
            (7, 7),
            strides=2,
            padding=3,
            use_bias=False,
            dtype=self.dtype,
        )(x)
        x = layers.norm(x, train=train, linear=self.linear, dtype=self.dtype)
        x = layers.activation(x, self.linear)
        x = layers.pool(x, 3, 2, linear=self.linear, padding=((1, 1), (1, 1)))
        per_block = 1 if kind == "basic" else 2
        if self.widths is not None and len(self.widths) != per_block * sum(blocks):
            raise ValueError(
                f"widths needs {per_block * sum(blocks)} entries for ResNet-{self.depth}, got "
                f"{len(self.widths)}"
            )
        index = 0
        for stage, (base, n) in enumerate(zip(STAGE_WIDTHS, blocks, strict=True)):
            for i in range(n):
                extra = {}
                if self.widths is not None:
                    own = tuple(self.widths[index : index + per_block])
                    extra = {"inner_features": own[0]} if kind == "basic" else {"inner": own}
                index += per_block
                x = block_cls(
                    features=layers.scaled(base, self.width),
                    strides=2 if stage > 0 and i == 0 else 1,
                    linear=self.linear,
                    dtype=self.dtype,
                    **extra,
                )(x, train=train)
        x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(self.num_classes, dtype=self.dtype)(x)
