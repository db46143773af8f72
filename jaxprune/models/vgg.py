"""VGG for CIFAR-sized inputs, as used by the pruning literature.

Architecture (cfg letters of Simonyan & Zisserman: A = VGG-11, B = VGG-13, D = VGG-16,
E = VGG-19): each number in the cfg is a 3x3 SAME conv (no bias) -> BatchNorm -> relu, each ``"M"``
a 2x2 max pool. The head is the CIFAR head of Liu et al. "Rethinking the Value of Network Pruning"
(network-slimming VGG) and of GraSP / Su et al. "Sanity-Checking Pruning Methods": the cfg has
**no fifth max pool**; after the last conv the 2x2x512 map (on 32x32 inputs) is average pooled to
1x1x512 and fed to a single ``Dense(512 -> num_classes)``. We implement that average pool as a
global average pool, which is identical on 32x32 inputs and also accepts other sizes. We chose this
head over the ImageNet 4096-4096 classifier because it is what those CIFAR pruning results
(and their parameter counts, ~20M for VGG-19) use; it also keeps the last layer small so that
global magnitude pruning is dominated by the conv stack, as in the papers.

Names: convs ``Conv_0..Conv_{L-1}``, norms ``BatchNorm_0..``, head ``Dense_0``.
``width`` scales every conv width; ``widths`` gives them explicitly (one entry per conv, e.g. after
filter pruning). ``linear=True``: identity activations, average instead of max pooling, no
BatchNorm (see ``layers``).
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxprune.models import layers

VGG_CFGS: dict[str, tuple[int | str, ...]] = {
    "A": (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512),
    "B": (64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512),
    "D": (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512),
    "E": (
        *(64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M"),
        *(512, 512, 512, 512, "M", 512, 512, 512, 512),
    ),
}


def conv_widths(cfg: str) -> tuple[int, ...]:
    """Returns the conv channel counts of VGG ``cfg`` (e.g. 13 entries for ``"D"``).

    Raises:
      KeyError: if ``cfg`` is not one of ``VGG_CFGS``.
    """
    if cfg not in VGG_CFGS:
        raise KeyError(f"VGG cfg must be one of {sorted(VGG_CFGS)}, got {cfg!r}")
    return tuple(v for v in VGG_CFGS[cfg] if v != "M")


class VGG(nn.Module):
    """VGG with BatchNorm and the one-Dense CIFAR head.

    Attributes:
      cfg: ``"A"``, ``"B"``, ``"D"`` (VGG-16) or ``"E"`` (VGG-19).
      num_classes: output units.
      width: multiplier for every conv width.
      widths: explicit conv widths, one per conv layer; overrides ``width``.
      linear: effective-sparsity mode (identity activations, average pooling, no BatchNorm).
      dtype: computation dtype.
    """

    cfg: str = "D"
    num_classes: int = 10
    width: float = 1.0
    widths: tuple[int, ...] | None = None
    linear: bool = False
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """Returns logits ``(N, num_classes)`` for NHWC inputs."""
        channels = iter(layers.resolve_widths(conv_widths(self.cfg), self.width, self.widths))
        for item in VGG_CFGS[self.cfg]:
            if item == "M":
                x = layers.pool(x, 2, linear=self.linear)
                continue
            x = nn.Conv(next(channels), (3, 3), padding="SAME", use_bias=False, dtype=self.dtype)(x)
            x = layers.norm(x, train=train, linear=self.linear, dtype=self.dtype)
            x = layers.activation(x, self.linear)
        x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(self.num_classes, dtype=self.dtype)(x)
